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

Distributed / composite VIs with shifts (S6: Gorbunov et al. 2023/24, arXiv 2310.01860, which names
shifted clipped SGDA and SEG variants for VIs; their exact updates are **not confirmed**, so the rules
below are our rendering of the shift mechanism of :mod:`.shifted` applied to each operator call). F =
(1/n) sum_i F_i, client i keeps a shift h_i (h: their mean), ``prox`` the regularizer's (identity by
default):

* shifted clipped-SGDA: Delta_i = clip(F_i(z) - h_i, lam), z+ = prox(z - gamma (h + mean_i Delta_i)),
  h_i += nu Delta_i;
* shifted clipped-SEG: Delta~_i = clip(F_i(z) - h_i, lam), z~ = prox(z - gamma (h + mean_i Delta~_i)),
  Delta_i = clip(F_i(z~) - h_i, lam), z+ = prox(z - gamma (h + mean_i Delta_i)), h_i += nu Delta_i
  (the shifts move once per iteration, by the update step's differences).

At the solution the shifts learn F_i(z*) and the differences vanish; nu = 0 with h = 0 is the naive
method that clips each F_i, whose fixed point is not z* when F_i(z*) != 0. ``op(Z, generator)`` here
returns the clients' stochastic operators (R, n, D) at the rows of Z (R, D) (e.g.
:meth:`optsim.problems.minmax.QuadraticMinMax.client_operator`).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ...problems.regularizer import Regularizer
from ..linalg._threads import threads_for
from .clipped import clip_rows
from .shifted import shifted_clip_step

__all__ = ["clipped_seg_step", "clipped_sgda_step", "run_vi", "run_vi_shifted", "shifted_seg_step", "shifted_sgda_step"]

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


def shifted_sgda_step(op: Operator, Z: torch.Tensor, H: torch.Tensor, h: torch.Tensor, gamma: float, lam: float,
                      nu: float, generator: torch.Generator, reg: Regularizer | None = None):
    """One shifted clipped-SGDA step (module docstring) for every row of Z (R, D), shifts H (R, n, D),
    their mean h (R, D); returns (Z+, H+, h+)."""
    return shifted_clip_step(Z, H, h, op(Z, generator), gamma, lam, nu, reg)


def shifted_seg_step(op: Operator, Z: torch.Tensor, H: torch.Tensor, h: torch.Tensor, gamma: float, lam: float,
                     nu: float, generator: torch.Generator, reg: Regularizer | None = None):
    """One shifted clipped-SEG step (module docstring); returns (Z+, H+, h+)."""
    Zt, _, _ = shifted_clip_step(Z, H, h, op(Z, generator), gamma, lam, 0.0, reg)
    D = clip_rows(op(Zt, generator) - H, lam)
    delta = D.mean(-2)
    V = Z - gamma * (h + delta)
    if nu != 0.0:
        H, h = H + nu * D, h + nu * delta
    return (V if reg is None else reg.prox(V, gamma)), H, h


def run_vi_shifted(op: Operator, method: str, Z0: torch.Tensor, n: int, K: int, gamma: float, lam: float = math.inf,
                   nu: float = 1.0, seed: int = 0, reg: Regularizer | None = None) -> torch.Tensor:
    """K shifted steps of ``seg`` or ``sgda`` over n clients from the rows of Z0 (shifts start at 0; nu = 0:
    the naive method clipping each client's operator); returns the final (R, D) iterates."""
    if method not in ("seg", "sgda"):
        raise ValueError(f"run_vi_shifted: method must be 'seg' or 'sgda', got '{method}'")
    if not 0 <= nu <= 1:
        raise ValueError(f"run_vi_shifted: the shift stepsize nu must be in [0, 1], got {nu}")
    step = shifted_seg_step if method == "seg" else shifted_sgda_step
    gen = torch.Generator().manual_seed(seed)
    Z = Z0.clone()
    H = Z.new_zeros(Z.shape[0], n, Z.shape[-1])
    h = Z.new_zeros(Z.shape)
    with threads_for(4.0 * Z.shape[0] * n * Z.shape[-1] ** 2):
        for _ in range(K):
            Z, H, h = step(op, Z, H, h, gamma, lam, nu, gen, reg)
    return Z
