"""What the Riemannian methods share: the problem's manifold and the default stepsize of the
SVRG-type methods."""
from __future__ import annotations

import math
from functools import cached_property

from ...manifolds import Euclidean, Manifold
from ..baselines.gd import sgd_expected_smoothness

__all__ = ["OnManifold", "default_loop_length", "manifold_of", "svrg_stepsize"]


def manifold_of(problem) -> Manifold:
    """The problem's manifold (R^d when it has none)."""
    return problem.manifold if problem.manifold is not None else Euclidean(problem.d)


def svrg_stepsize(problem, batch_size: int) -> float:
    """gamma = 1 / (6 zeta L_exp): the loopless SVRG stepsize of Kovalev, Horváth, Richtárik (2020),
    Theorem 5 (1 / (6 L) with L the expected-smoothness constant of the minibatch estimator,
    :func:`optsim.methods.baselines.gd.sgd_expected_smoothness`), divided by the curvature constant
    zeta as in the Riemannian SVRG theorems (Zhang, Reddi, Sra 2016, Theorem 1: eta of order
    1 / (zeta L)). The numeric constant of the Riemannian theorem could not be checked against the
    paper's text (not confirmed)."""
    return 1.0 / (6.0 * problem.zeta * sgd_expected_smoothness(problem, batch_size))


def default_loop_length(problem, batch_size: int) -> int:
    """ceil(m / b): one pass over the smallest client's samples."""
    return max(1, math.ceil(int(problem.m.min()) / int(batch_size)))


class OnManifold:
    """Mixin of the Riemannian methods: ``M``, the problem's manifold (derived, not state)."""

    handles = ("manifold",)

    @cached_property
    def M(self) -> Manifold:
        return manifold_of(self.problem)
