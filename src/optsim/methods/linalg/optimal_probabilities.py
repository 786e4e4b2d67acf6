"""Optimal sampling probabilities of sketch-and-project (S1): the semidefinite program for the best rate.

Gower & Richtárik (2015), "Randomized iterative methods for linear systems": for a finite sketch
distribution (options S_1..S_r drawn with probabilities p), rho(p) = 1 - lambda_min(sum_i p_i P_i) with
P_i = B^-1/2 Z_i B^-1/2 (Z_i does not depend on p; here the similar L^-1 Z_i L^-T, B = L L^T). The best
probabilities solve

    maximize t  subject to  sum_i p_i P_i - t I  positive semidefinite,  p >= 0,  sum_i p_i = 1,

a semidefinite program (the paper's optimization of the rate over the probabilities; its section number
is not confirmed: the program here is derived from rho(p) above, and for one-row sketches with B = I it is
the program of the MATLAB ``opt_rates.m`` quoted in the project's research notes, max t s.t.
sum_i p_i w_i w_i^T >= t I with w_i = a_i / ||a_i||). Solved with CVXPY (optional: ``pip install
'optsim[sdp]'``), Clarabel by default.
"""
from __future__ import annotations

import numpy as np
import torch

from .accelerated import scaled_projections
from .sketch_project import SketchAndProject

__all__ = ["optimal_probabilities", "rate_for"]


def rate_for(sp: SketchAndProject, probs) -> float:
    """rho(p) = 1 - lambda_min(sum_i p_i P_i) for the options of ``sp``'s finite sketch and probabilities ``probs``."""
    P = scaled_projections(sp)
    p = torch.as_tensor(probs, dtype=torch.float64).flatten()
    if p.shape != (P.shape[0],) or bool((p < 0).any()) or float(p.sum()) <= 0:
        raise ValueError(f"rate_for: probabilities must be {P.shape[0]} nonnegative numbers with a positive sum")
    p = p / p.sum()
    return 1.0 - float(torch.linalg.eigvalsh(torch.einsum("r,rde->de", p, P))[0])


def optimal_probabilities(sp: SketchAndProject, solver: str | None = None) -> tuple[torch.Tensor, float]:
    """(p*, rho(p*)): the probabilities over ``sp``'s finite sketch options maximizing lambda_min of the
    expected projection (see the module docstring), and the rate they give."""
    try:
        import cvxpy as cp
    except ImportError:
        raise ImportError("optimal sketch probabilities need cvxpy: pip install 'optsim[sdp]'") from None
    if not sp.sketch.finite:
        raise ValueError("optimal probabilities are for finite sketches (IndexSketch or ColumnSketch)")
    P = scaled_projections(sp).numpy()
    r, d = P.shape[0], P.shape[1]
    p, t = cp.Variable(r, nonneg=True), cp.Variable()
    M = cp.reshape(P.reshape(r, d * d).T @ p, (d, d), order="C")
    cons = [cp.sum(p) == 1, 0.5 * (M + M.T) - t * np.eye(d) >> 0]
    problem = cp.Problem(cp.Maximize(t), cons)
    problem.solve(solver=solver or cp.CLARABEL)
    if p.value is None or problem.status not in ("optimal", "optimal_inaccurate"):
        raise ValueError(f"the probability SDP was not solved (status {problem.status})")
    probs = torch.tensor(np.clip(p.value, 0.0, None), dtype=torch.float64)
    probs = probs / probs.sum()
    return probs, rate_for(sp, probs)
