"""Gradient descent variants for convex (L0, L1)-smooth f, after Gorbunov, Tupitsa, Choudhury, Aliev,
Richtárik, Horváth, Takáč (2024), "Methods for convex (L0, L1)-smooth optimization: clipping,
acceleration, and adaptivity" (arXiv 2409.14989). Only the paper's first page could be read here:
the methods below are the ones it names (GD with smoothed clipping, GD with Polyak stepsizes, AdGD),
written from their standard definitions; the paper's constants and theorem numbers are **not
confirmed**. Its accelerated method could not be read; :mod:`.stm` implements an accelerated scheme with a
guarantee derived here instead (``l0l1_stm``).

Each round every client sends its full local gradient (d floats; Polyak also its loss, one float) and
the server broadcasts the new model, as for :class:`~optsim.methods.baselines.GD`.

Why the default eta = 1/2 of ``l0l1_gd`` is safe (derived here): for (L0, L1)-smooth f and
||y - x|| <= r, f(y) <= f(x) + <grad f(x), y - x> + (L0 + L1 ||grad f(x)||) e^{L1 r} ||y - x||^2 / 2
(Zhang, He, Sra, Jadbabaie 2020, Lemma A.2, in the form used across this literature). The step
x+ = x - t g with t = eta / (L0 + L1 ||g||) has length t ||g|| <= eta / L1, so

    f(x+) <= f(x) - t ||g||^2 (1 - eta e^eta / 2),

a decrease for every eta with eta e^eta < 2 (eta = 1/2: factor 0.59). While L1 ||g|| >> L0 the step
is a normalized step of length about eta / L1; near x* it is GD with stepsize about eta / L0. The
hard-clipped step t = min(eta / L0, eta / (L1 ||g||)) (``clipping: hard``) also has length at most
eta / L1, and t (L0 + L1 ||g||) <= 2 eta, so f(x+) <= f(x) - t ||g||^2 (1 - eta e^eta): a decrease for
eta e^eta < 1 (eta = 1/2: factor 0.18).
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import Literal

import torch
from pydantic import Field, PositiveFloat

from ..base import Method, MethodParams, register_method

__all__ = ["L0L1GD", "AdGD", "PolyakGD", "l0l1_constants"]


def l0l1_constants(problem, L0: float | None = None, L1: float | None = None) -> tuple[float, float]:
    """(L0, L1) of f: the given values, else the problem's (``Problem.L0_L1``), else (L, 0) (L-smooth)."""
    c = problem.L0_L1
    if L0 is None:
        L0 = float(c["L0"]) if c is not None else float(problem.L)
    if L1 is None:
        L1 = float(c["L1"]) if c is not None else 0.0
    return float(L0), float(L1)


class _FullGD(Method):
    def init(self, x0):
        self.x = x0

    def _grad(self) -> torch.Tensor:
        return self.channel.uplink(self.problem.grads(self.at_clients(self.x)))


class L0L1Params(MethodParams):
    #: L0 of (L0, L1)-smoothness (default: the problem's; (L, 0) for an L-smooth problem)
    L0: PositiveFloat | None = None
    #: L1 of (L0, L1)-smoothness (default: the problem's)
    L1: float | None = Field(None, ge=0)


class L0L1GDParams(L0L1Params):
    #: smoothed: t = eta / (L0 + L1 ||g||); hard: t = min(eta / L0, eta / (L1 ||g||))
    clipping: Literal["smoothed", "hard"] = "smoothed"


@register_method
class L0L1GD(_FullGD):
    """Gradient descent with smoothed clipping ("(L0, L1)-GD"; Gorbunov et al. 2024, arXiv 2409.14989,
    the clipped-GD method of its Sec. on gradient clipping -- our reading):

        x+ = x - eta / (L0 + L1 ||grad f(x)||) * grad f(x),

    ``stepsize`` = eta; default eta = 1/2 (a guaranteed decrease, derived in the module docstring;
    the paper's own constant is not confirmed). Equals GD with stepsize eta / L0 when L1 = 0. Within a
    factor 2 of the hard-clipped step min(eta / L0, eta / (L1 ||g||)) g, which ``clipping: hard`` takes
    (GD with stepsize eta / L0 on the gradient clipped to norm L0 / L1: the unsmoothed variant; the same
    default eta, its decrease derived in the module docstring)."""

    name = "l0l1_gd"
    stepsize_source = "derived"
    paper = ("Gorbunov, Tupitsa, Choudhury, Aliev, Richtárik, Horváth, Takáč (2024), Methods for convex (L0,L1)-smooth "
             "optimization (arXiv 2409.14989), (L0,L1)-GD / smoothed clipping -- our reading")
    Params = L0L1GDParams

    def theory_stepsize(self):
        return 0.5

    @cached_property
    def L0_L1(self) -> tuple[float, float]:
        """(L0, L1) used by the stepsize (:func:`l0l1_constants`)."""
        return l0l1_constants(self.problem, self.params.L0, self.params.L1)

    def step(self):
        g = self._grad()
        L0, L1 = self.L0_L1
        gn = float(g.norm())
        if self.params.clipping == "smoothed":
            t = self.gamma / (L0 + L1 * gn)
        else:
            t = self.gamma / L0 if L1 * gn <= L0 else self.gamma / (L1 * gn)
        self.x = self.channel.broadcast(self.x - t * g)


@register_method
class PolyakGD(_FullGD):
    """Gradient descent with Polyak stepsizes (Polyak 1987, "Introduction to optimization"; analysed for
    convex (L0, L1)-smooth f by Gorbunov et al. 2024, arXiv 2409.14989):

        x+ = x - (f(x) - f*) / ||grad f(x)||^2 * grad f(x),

    with f* the problem's optimal value (solved and cached); ``stepsize`` multiplies the Polyak step
    (default 1: the method has no free stepsize). On f = (L/2)||x - x*||^2 it halves x - x* each step."""

    name = "polyak_gd"
    stepsize_source = "theorem"
    paper = "Polyak (1987), Introduction to optimization (Polyak stepsize); Gorbunov et al. (2024), arXiv 2409.14989"

    def check(self):
        if not self.problem.convex or self.problem.f_star is None:
            raise ValueError("polyak_gd needs the optimal value f*: use a convex problem whose minimum is known")

    def theory_stepsize(self):
        return 1.0

    def step(self):
        X = self.at_clients(self.x)
        g = self._grad()
        fx = float(self.channel.uplink(self.problem.losses(X)[:, None]))  # one float per client
        gn2 = float(g @ g)
        if gn2 > 0:
            self.x = self.channel.broadcast(self.x - self.gamma * (fx - self.problem.f_star) / gn2 * g)
        else:
            self.x = self.channel.broadcast(self.x)


class AdGDParams(MethodParams):
    #: the first step lambda_0 (x_1 = x_0 - lambda_0 grad f(x_0)); default 1e-10 (any small value)
    initial_stepsize: PositiveFloat = 1e-10


@register_method
class AdGD(_FullGD):
    """Adaptive gradient descent (Malitsky, Mishchenko 2020, "Adaptive gradient descent without
    descent", ICML, Algorithm 1; analysed for convex (L0, L1)-smooth f by Gorbunov et al. 2024):

        lambda_k = min{ sqrt(1 + theta_{k-1}) lambda_{k-1}, ||x_k - x_{k-1}|| / (2 ||grad f(x_k) - grad f(x_{k-1})||) },
        theta_k = lambda_k / lambda_{k-1},   x_{k+1} = x_k - lambda_k grad f(x_k),

    with theta_0 = +inf and x_1 = x_0 - lambda_0 grad f(x_0) (``initial_stepsize``). No stepsize to set
    (``stepsize`` scales lambda_k's curvature estimate; default 1). One gradient per round."""

    name = "adgd"
    stepsize_source = "theorem"
    paper = "Malitsky, Mishchenko (2020), Adaptive gradient descent without descent, Alg. 1"
    Params = AdGDParams
    state = ("x", "x_prev", "g_prev", "lam", "theta")

    def theory_stepsize(self):
        return 1.0

    def init(self, x0):
        self.x, self.x_prev, self.g_prev = x0, None, None
        self.lam, self.theta = float(self.params.initial_stepsize), math.inf

    def step(self):
        g = self._grad()
        if self.x_prev is not None:
            dg = float((g - self.g_prev).norm())
            local = math.inf if dg == 0 else self.gamma * float((self.x - self.x_prev).norm()) / (2 * dg)
            lam = min(math.sqrt(1 + self.theta) * self.lam, local)
            if not math.isfinite(lam):  # no curvature seen and theta_0 = inf: keep the step
                lam = self.lam
            self.theta, self.lam = lam / self.lam, lam
        self.x_prev, self.g_prev = self.x, g
        self.x = self.channel.broadcast(self.x - self.lam * g)
