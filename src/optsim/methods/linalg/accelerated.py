"""Accelerated sketch-and-project (S2, part 1), batched over independent runs, with mu and nu computed.

Gower, Hanzely, Richtárik & Stich (2018), "Accelerated stochastic matrix inversion: general theory and
speeding up BFGS rules for faster second-order optimization", NeurIPS 2018 (arXiv 1802.04079). With
the S1 step g(y) = B^-1 A^T S (S^T A B^-1 A^T S)^+ S^T (A y - b) of a :class:`SketchAndProject` and
parameters mu, nu > 0 (beta = 1 - sqrt(mu / nu), gamma = sqrt(1 / (mu nu)), alpha = 1 / (1 + gamma nu)),
from v_0 = x_0:

    y_k = alpha v_k + (1 - alpha) x_k,   x_{k+1} = y_k - g(y_k),
    v_{k+1} = beta v_k + (1 - beta) y_k - gamma g(y_k).

These formulas are those of the authors' code (gowerrobert/StochOpt.jl, ``boot_BFGS_accel.jl`` /
``descent_BFGS_accel.jl``, whose comments cite the paper). The parameters are computed, not typed:
with P = B^-1/2 Z B^-1/2, mu = lambda_min(E[P]) (so 1 - mu is S1's rate rho) and nu the smallest
constant with E[P E[P]^-1 P] <= nu E[P] (1 <= nu <= 1 / mu), computed exactly for finite sketches.
That definition of nu and the claimed rate (1 - sqrt(mu / nu))^k of a Lyapunov function mixing
||v_k - x*|| and ||x_k - x*||_B are recalled from the paper, NOT confirmed (its body could not be read);
for coordinate sketches with B = A and p_i = A_ii / Tr A our computation gives nu = Tr A / min_i A_ii,
as the notes derive. What is exact here: the iteration is linear in (x_k - x*, v_k - x*) with a random
matrix independent of the past, so E[(x_k, v_k) - x*] = T^k (x_0 - x*, x_0 - x*) with T built from
E[Z] (:meth:`expected_error`), checked against many batched runs in tests/test_linear_systems.py.
Stochastic matrix inversion and its accelerated version are in :mod:`.matrix_inversion`, BFGS and
accelerated BFGS inside a full-batch optimizer in :mod:`.bfgs`; they reuse :func:`mu_nu`,
:func:`acceleration_coefficients` and :func:`accelerated_iteration_matrix`.
"""
from __future__ import annotations

import math

import torch

from ._threads import threads_for
from .sketch_project import Runs, SketchAndProject

__all__ = ["AcceleratedSketchAndProject", "accelerated_iteration_matrix", "acceleration_coefficients",
           "acceleration_parameters", "mu_nu", "scaled_projections"]


def mu_nu(ops: torch.Tensor, probs: torch.Tensor) -> tuple[float, float]:
    """(mu, nu) of a finite distribution of symmetric positive semidefinite operators ``ops`` (r, D, D)
    drawn with ``probs`` (r,), in float64: mu = lambda_min(E[P]) and nu the smallest constant with
    E[P E[P]^-1 P] <= nu E[P] (see the module docstring). Vector systems pass P_i = L^-1 Z_i L^-T;
    stochastic matrix inversion passes its projections on the space of symmetric matrices."""
    EP = torch.einsum("r,rde->de", probs, ops)
    w, V = torch.linalg.eigh(EP)
    mu = float(w[0])
    if mu <= 1e-14 * max(float(w[-1]), 1e-300):
        raise ValueError("E[Z] is singular (mu = 0): acceleration needs a system of full column rank")
    EPinv = (V / w) @ V.T
    S = torch.einsum("r,rab,bc,rcd->ad", probs, ops, EPinv, ops)
    isq = (V / w.sqrt()) @ V.T
    nu = float(torch.linalg.eigvalsh(isq @ S @ isq)[-1])
    return mu, nu


def scaled_projections(sp: SketchAndProject) -> torch.Tensor:
    """L^-1 Z_i L^-T (r, d, d) for every option of a finite sketch (B = L L^T), float64, symmetrized:
    orthogonal projections, orthogonally similar to B^-1/2 Z_i B^-1/2."""
    sk = sp.sketch
    if not sk.finite:
        raise ValueError("mu and nu are computed exactly for finite sketches (IndexSketch or ColumnSketch) only")
    P, D = sp._option_products(sk)
    L = sp._chol
    Z = torch.einsum("rqd,rqs,rse->rde", P, torch.linalg.pinv(P @ D, hermitian=True), P)  # (r, d, d)
    Pl = torch.linalg.solve_triangular(L, Z, upper=False)
    Pl = torch.linalg.solve_triangular(L, Pl.transpose(1, 2), upper=False)  # L^-1 Z_i L^-T, symmetric
    return 0.5 * (Pl + Pl.transpose(1, 2))


def acceleration_parameters(sp: SketchAndProject) -> tuple[float, float]:
    """(mu, nu) of a finite sketch (see the module docstring), in float64."""
    return mu_nu(scaled_projections(sp), sp.sketch.probs)


def acceleration_coefficients(mu: float, nu: float) -> tuple[float, float, float]:
    """(alpha, beta, gamma) of the accelerated loop: beta = 1 - sqrt(mu / nu), gamma = sqrt(1 / (mu nu)),
    alpha = 1 / (1 + gamma nu) (the authors' code, ``boot_BFGS_accel.jl``)."""
    if not (mu > 0 and nu > 0):
        raise ValueError(f"acceleration needs mu, nu > 0, got mu={mu}, nu={nu}")
    beta = 1 - math.sqrt(mu / nu)
    gamma = math.sqrt(1 / (mu * nu))
    return 1 / (1 + gamma * nu), beta, gamma


def accelerated_iteration_matrix(W: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """T (2D, 2D) with E[(x_{k+1} - x*, v_{k+1} - x*)] = T E[(x_k - x*, v_k - x*)] when the plain method's
    mean error map is e -> (I - W) e (W = B^-1 E[Z] for vectors; the mean projection for matrices)."""
    D = W.shape[0]
    I = torch.eye(D, dtype=W.dtype)
    a, b, g = alpha, beta, gamma
    Yx, Yv = (1 - a) * I, a * I  # y = (1 - a) x + a v
    X_row = torch.cat([(I - W) @ Yx, (I - W) @ Yv], 1)
    V_row = torch.cat([(1 - b) * Yx - g * W @ Yx, b * I + (1 - b) * Yv - g * W @ Yv], 1)
    return torch.cat([X_row, V_row], 0)


class AcceleratedSketchAndProject:
    """Accelerated sketch-and-project on top of ``sp`` (see the module docstring); ``mu`` / ``nu``
    default to the computed values."""

    def __init__(self, sp: SketchAndProject, mu: float | None = None, nu: float | None = None):
        self.sp = sp
        if mu is None or nu is None:
            m, n = acceleration_parameters(sp)
            mu = m if mu is None else mu
            nu = n if nu is None else nu
        if not (mu > 0 and nu > 0):
            raise ValueError(f"accelerated sketch-and-project needs mu, nu > 0, got mu={mu}, nu={nu}")
        self.mu, self.nu = float(mu), float(nu)
        self.alpha, self.beta, self.gamma = acceleration_coefficients(self.mu, self.nu)

    def rate(self) -> float:
        """1 - sqrt(mu / nu): the accelerated rate claimed by the paper (not confirmed)."""
        return 1 - math.sqrt(self.mu / self.nu)

    def expected_iteration_matrix(self) -> torch.Tensor:
        """T (2d, 2d) with E[(x_{k+1} - x*, v_{k+1} - x*)] = T E[(x_k - x*, v_k - x*)] (exact)."""
        W = torch.cholesky_solve(self.sp.expected_Z(), self.sp._chol)  # B^-1 E[Z]
        return accelerated_iteration_matrix(W, self.alpha, self.beta, self.gamma)

    def expected_error(self, x0: torch.Tensor, steps) -> torch.Tensor:
        """Exact E[x_k - x*] for k in ``steps`` (increasing), (K, d), float64."""
        T = self.expected_iteration_matrix()
        e = x0.to(torch.float64) - self.sp.system.x_true.to(torch.float64)
        z, k, out = torch.cat([e, e]), 0, []
        for s in [int(s) for s in steps]:
            while k < s:
                z, k = T @ z, k + 1
            out.append(z[:self.sp.d])
        return torch.stack(out)

    def run(self, x0: torch.Tensor, iters: int, runs: int = 1, seed: int = 0, every: int = 1) -> Runs:
        """``runs`` independent runs batched as one (R, d) computation; records as :meth:`SketchAndProject.run`."""
        sp, sys_ = self.sp, self.sp.system
        if iters < 0 or runs < 1 or every < 1:
            raise ValueError("run: need iters >= 0, runs >= 1, every >= 1")
        gen = torch.Generator().manual_seed(int(seed))
        X = torch.as_tensor(x0).to(sp.A.dtype).expand(runs, sp.d).clone()
        V = X.clone()
        steps, sq, mean, sem = [], [], [], []

        def record(k):
            E = (X - sys_.x_true).to(torch.float64)
            steps.append(k)
            sq.append(sys_.error(X, None if sp.kind == "I" else sp.B).to(torch.float64))
            mean.append(E.mean(0))
            sem.append(E.std(0) / math.sqrt(runs) if runs > 1 else torch.full((sp.d,), math.nan, dtype=torch.float64))

        record(0)
        a, b, g = self.alpha, self.beta, self.gamma
        with threads_for(runs * sp.d * (8 + sp.sketch.q * sp.d)):
            for k in range(1, iters + 1):
                Y = a * V + (1 - a) * X
                opts = sp.sketch.draw(runs, gen) if sp.sketch.finite else None
                Xn = sp._step(Y, opts, gen)
                V = b * V + (1 - b) * Y - g * (Y - Xn)
                X = Xn
                if k % every == 0 or k == iters:
                    record(k)
        return Runs(torch.tensor(steps), torch.stack(sq), torch.stack(mean), torch.stack(sem), X)
