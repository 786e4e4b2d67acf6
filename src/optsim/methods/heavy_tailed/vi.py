"""clipped-SEG and clipped-SGDA for variational inequalities with heavy-tailed noise (batched over runs).

Sadiev, Danilova, Gorbunov, Horváth, Gidel, Dvurechensky, Gasnikov, Richtárik (2023), "High-probability
bounds for stochastic optimization and variational inequalities: the case of unbounded variance", ICML
2023, the VI part (monotone, star-cocoercive and quasi-strongly monotone operators). The paper's text
could not be read here: the updates below are those named in the research notes (theorem numbers and
the stepsize / clipping-level constants are **not confirmed**, so both are explicit arguments):

* clipped-SEG:  z~ = z - gamma clip(F_xi1(z), lam),  z+ = z - gamma clip(F_xi2(z~), lam), with
  independent samples xi1, xi2 (two operator calls per iteration);
* clipped-SGDA: z+ = z - gamma clip(F_xi(z), lam) (one call).

With lam = inf and exact operators they are the extragradient method and gradient descent-ascent.
``op(Z, generator)`` is a stochastic operator acting on the rows of (R, D) (e.g.
:meth:`optsim.problems.minmax.QuadraticMinMax.stochastic_operator`): R runs advance as one computation.
These are step functions, not registered methods: the round runner serves minimization problems
(losses, f - f*), which a VI has not.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..linalg._threads import threads_for
from .clipped import clip_rows

__all__ = ["clipped_seg_step", "clipped_sgda_step", "run_vi"]

Operator = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def clipped_seg_step(op: Operator, Z: torch.Tensor, gamma: float, lam, generator: torch.Generator) -> torch.Tensor:
    """One clipped stochastic extragradient step for every row of Z."""
    Zt = Z - gamma * clip_rows(op(Z, generator), lam)
    return Z - gamma * clip_rows(op(Zt, generator), lam)


def clipped_sgda_step(op: Operator, Z: torch.Tensor, gamma: float, lam, generator: torch.Generator) -> torch.Tensor:
    """One clipped stochastic gradient descent-ascent step for every row of Z."""
    return Z - gamma * clip_rows(op(Z, generator), lam)


def run_vi(op: Operator, method: str, Z0: torch.Tensor, K: int, gamma: float, lam: float = math.inf,
           seed: int = 0) -> torch.Tensor:
    """K steps of ``seg`` or ``sgda`` from the rows of Z0; returns the final (R, D) iterates."""
    if method not in ("seg", "sgda"):
        raise ValueError(f"run_vi: method must be 'seg' or 'sgda', got '{method}'")
    step = clipped_seg_step if method == "seg" else clipped_sgda_step
    gen = torch.Generator().manual_seed(seed)
    Z = Z0.clone()
    with threads_for(4.0 * Z.shape[0] * Z.shape[-1] ** 2):  # small batched products: one thread
        for _ in range(K):
            Z = step(op, Z, gamma, lam, gen)
    return Z
