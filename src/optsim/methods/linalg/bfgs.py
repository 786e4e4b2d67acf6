"""BFGS and accelerated BFGS inside a full-batch optimizer (S2), batched over stepsizes.

Gower, Hanzely, Richtárik & Stich (2018), "Accelerated stochastic matrix inversion: general theory and
speeding up BFGS rules for faster second-order optimization", NeurIPS 2018 (arXiv 1802.04079), the
empirical risk minimization experiments (L2-regularized logistic regression, full batch). The loop is
the authors' code (gowerrobert/StochOpt.jl: ``descent_BFGS.jl``, ``descent_BFGS_accel.jl``,
``BFGS_update!.jl``, ``minimizeFunc.jl``); the paper's algorithm and theorem numbers could not be read
(only its abstract), so they are not cited here. From x_0 with H_0 = I (V_0 = H_0 for the accelerated
rule), at iteration k:

    g_k = grad f(x_k);  k = 0: d_0 = -g_0;  k >= 1: with s = x_k - x_{k-1}, y = g_k - g_{k-1},
        BFGS:        H_k = U(H_{k-1})
        accelerated: Y = alpha V + (1 - alpha) H_{k-1},  H_k = U(Y),  V = beta V + (1 - beta) Y - gamma (Y - H_k)
        d_k = -H_k g_k
    x_{k+1} = x_k + stepsize d_k      (a fixed stepsize: the authors grid-search it, no line search)

with the BFGS inverse-Hessian update U(H) = s s^T / (s^T y) + (I - s y^T / (s^T y)) H (I - y s^T / (s^T y))
(written as H + (s^T y + y^T H y) / (s^T y)^2 s s^T - (H y s^T + s y^T H) / (s^T y), as the authors do),
which satisfies the secant equation U(H) y = s exactly and is the symmetric sketch-and-project
inversion step of :mod:`.matrix_inversion` with the sketch S = s for the matrix whose action on s is y
(the "deterministic" sketch of quasi-Newton methods). alpha, beta, gamma come from (mu, nu) by
:func:`~.accelerated.acceleration_coefficients`. For the optimizer (mu, nu) are **tuned knobs**, not
computed: the Hessian changes along the path and the sketch is the secant pair, so the theory's mu and
nu do not apply; the authors' experiments use per-dataset values outside the theory's range
(mu > nu, so beta = 1 - sqrt(mu / nu) < 0), e.g. (30, 0.5) for splice and australian, (1.05, 1.8) for
phishing, (N, 1/d) for mushrooms and covtype, (800, 0.1) for madelon, (N, 0.01) for a9a, (N/2, 2/d)
for w8a (N samples, d features; ``test/demo_BFGS_accel_paper_results.jl``; a later
``repeat_BFGS_accel_paper_results.jl`` changes some of them) -- :data:`PAPER_KNOBS`.

Reduction (derived): mu = nu = 1 gives beta = 0, gamma = 1 (alpha = 1/2), so V_{k+1} = Y - (Y - H_k)
= H_k for every k; with V_0 = H_0 this gives Y = H_{k-1} at every step and the accelerated rule is
BFGS iterate for iterate (to rounding). A pair with s^T y <= 0 (impossible for a strongly convex f
unless s = 0) leaves H unchanged. The stepsize grid runs as one batch: R stepsizes are R independent
runs on (R, d) iterates and (R, d, d) matrices, one batched gradient of the problem per iteration.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...problems.base import Problem
from ._threads import threads_for
from .accelerated import acceleration_coefficients

__all__ = ["BFGS", "PAPER_KNOBS", "BFGSRuns", "bfgs_update", "grid_stepsizes"]

#: (mu, nu) of the authors' accelerated-BFGS experiments as functions of (N samples, d features)
PAPER_KNOBS = {
    "splice": lambda N, d: (30.0, 0.5),
    "australian": lambda N, d: (30.0, 0.5),
    "phishing": lambda N, d: (1.05, 1.8),
    "mushrooms": lambda N, d: (float(N), 1.0 / d),
    "madelon": lambda N, d: (800.0, 0.1),
    "a9a": lambda N, d: (float(N), 0.01),
    "w8a": lambda N, d: (N / 2.0, 2.0 / d),
    "covtype": lambda N, d: (float(N), 1.0 / d),
}


def grid_stepsizes(L_mean: float) -> torch.Tensor:
    """The authors' grid: multipliers 2^21, 2^17, 2^15, ..., 2^-11 of 1 / L_mean (their full-batch
    default stepsize; ``minimizeFunc_grid_stepsize.jl``, ``boot_method.jl``)."""
    mult = [2.0 ** 21] + [2.0 ** e for e in range(17, -12, -2)]
    return torch.tensor(mult, dtype=torch.float64) / L_mean


def bfgs_update(H: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The BFGS inverse-Hessian update of every row: H (R, d, d), s, y (R, d); rows with s^T y <= 0 keep H."""
    sy = (s * y).sum(-1)
    ok = sy > 0
    sy_safe = torch.where(ok, sy, torch.ones_like(sy))
    Hy = (H @ y[..., None])[..., 0]
    c1 = (sy_safe + (y * Hy).sum(-1)) / sy_safe ** 2
    ss = s[:, :, None] * s[:, None, :]
    cross = Hy[:, :, None] * s[:, None, :]
    new = H + c1[:, None, None] * ss - (cross + cross.transpose(1, 2)) / sy_safe[:, None, None]
    return torch.where(ok[:, None, None], new, H)


@dataclass
class BFGSRuns:
    """Records at iterations ``steps`` (K,): ``loss`` (K, R) f(x_k) per stepsize, ``grad_norm_sq`` (K, R),
    ``x`` (R, d) and ``H`` (R, d, d) final iterates, ``s`` and ``y`` (R, d) the pair of H's last update,
    ``stepsizes`` (R,)."""

    steps: torch.Tensor
    loss: torch.Tensor
    grad_norm_sq: torch.Tensor
    x: torch.Tensor
    H: torch.Tensor
    s: torch.Tensor | None
    y: torch.Tensor | None
    stepsizes: torch.Tensor

    def reach(self, f_star: float, tol: float) -> torch.Tensor:
        """(R,) the first recorded iteration with f(x_k) - f* <= tol (f(x_0) - f*) per stepsize (inf: never)."""
        gap = self.loss - f_star
        ok = torch.isfinite(gap) & (gap <= tol * gap[0])
        first = torch.where(ok.any(0), ok.to(torch.int64).argmax(0), -1)
        return torch.where(first >= 0, self.steps[first.clamp_min(0)].to(torch.float64), math.inf)

    def best(self, f_star: float | None = None, tol: float | None = None) -> int:
        """Index of the grid's choice: the lowest finite final loss (the authors' rule); with ``f_star`` and
        ``tol``, the stepsize reaching f - f* <= tol (f_0 - f*) first (ties: lower final loss)."""
        last = self.loss[-1].clone()
        last[~torch.isfinite(last)] = math.inf
        if f_star is None or tol is None:
            return int(torch.argmin(last))
        r = self.reach(f_star, tol)
        if not bool(torch.isfinite(r).any()):
            return int(torch.argmin(last))
        cand = torch.nonzero(r == r.min())[:, 0]
        return int(cand[torch.argmin(last[cand])])


class BFGS:
    """Full-batch BFGS (``mu``, ``nu`` None) or accelerated BFGS (both given) on ``problem`` (f the mean of
    the clients' f_i), batched over ``stepsizes`` (see the module docstring)."""

    def __init__(self, problem: Problem, stepsizes, mu: float | None = None, nu: float | None = None):
        if (mu is None) != (nu is None):
            raise ValueError("accelerated BFGS needs both mu and nu (or neither, for BFGS)")
        self.problem = problem
        st = torch.as_tensor(stepsizes, dtype=torch.float64).flatten()
        if st.numel() < 1 or not bool((st > 0).all()):
            raise ValueError("BFGS: stepsizes must be positive numbers (one run per stepsize)")
        self.stepsizes = st
        self.accelerated = mu is not None
        if self.accelerated:
            self.mu, self.nu = float(mu), float(nu)
            self.alpha, self.beta, self.gamma = acceleration_coefficients(self.mu, self.nu)

    def _grads(self, X: torch.Tensor) -> torch.Tensor:
        p = self.problem
        return p._grads_many(X[:, None, :].expand(X.shape[0], p.n, p.d)).mean(1)

    def _losses(self, X: torch.Tensor) -> torch.Tensor:
        p = self.problem
        return p._losses_many(X[:, None, :].expand(X.shape[0], p.n, p.d)).mean(1)

    def run(self, iters: int, x0: torch.Tensor | None = None, every: int = 1) -> BFGSRuns:
        """``iters`` iterations from ``x0`` (default 0, as the authors), every stepsize at once."""
        if iters < 0 or every < 1:
            raise ValueError("run: need iters >= 0 and every >= 1")
        p = self.problem
        R, d = self.stepsizes.numel(), p.d
        dt = p.dtype
        x0 = torch.zeros(d, dtype=dt) if x0 is None else torch.as_tensor(x0).to(dt)
        if x0.shape != (d,):
            raise ValueError(f"run: x0 must have shape ({d},), got {tuple(x0.shape)}")
        X = x0.expand(R, d).clone()
        gam = self.stepsizes.to(dt)[:, None]
        H = torch.eye(d, dtype=dt).expand(R, d, d).clone()
        V = H.clone() if self.accelerated else None
        steps, losses, gns = [], [], []
        G = self._grads(X)

        def record(k):
            steps.append(k)
            losses.append(self._losses(X).to(torch.float64))
            gns.append(G.pow(2).sum(-1).to(torch.float64))

        record(0)
        Xp = Gp = s = y = None
        with threads_for(R * (6 * d * d + p.gradient_flops)):
            for k in range(iters):
                if k > 0:
                    s, y = X - Xp, G - Gp
                    if self.accelerated:
                        Y = self.alpha * V + (1 - self.alpha) * H
                        H = bfgs_update(Y, s, y)
                        V = self.beta * V + (1 - self.beta) * Y - self.gamma * (Y - H)
                    else:
                        H = bfgs_update(H, s, y)
                D = -(H @ G[..., None])[..., 0]
                Xp, Gp = X, G
                X = X + gam * D
                G = self._grads(X)
                if (k + 1) % every == 0 or k + 1 == iters:
                    record(k + 1)
        return BFGSRuns(torch.tensor(steps), torch.stack(losses), torch.stack(gns), X, H, s, y, self.stepsizes)
