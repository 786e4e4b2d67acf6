"""Stochastic matrix inversion (randomized block BFGS) and its accelerated version (S2), batched over runs.

Gower, Hanzely, Richtárik & Stich (2018), "Accelerated stochastic matrix inversion: general theory and
speeding up BFGS rules for faster second-order optimization", NeurIPS 2018 (arXiv 1802.04079), which
specializes its accelerated sketch-and-project to inverting a symmetric positive definite A; the plain
method is Gower & Richtárik (2017), "Randomized quasi-Newton updates are linearly convergent matrix
inversion algorithms", SIAM J. Matrix Anal. Appl. 38(4) (arXiv 1602.01768). With a random sketch S
(d x q) drawn i.i.d. each iteration, M = S^T A S and Pi = S M^-1 S^T A (an A-self-adjoint projection):

    symmetric (randomized block BFGS; X_k stays symmetric positive definite when X_0 is):
        X_{k+1} = S M^-1 S^T + (I - Pi) X_k (I - Pi)^T
                = argmin ||X - X_k||_F(A)  s.t.  S^T A X = S^T,  X = X^T,
    column-wise (S1 with B = A on every column of A X = I, one sketch for all columns):
        X_{k+1} = X_k - S M^-1 S^T (A X_k - I).

With E_k = X_k - A^-1 these are E_{k+1} = (I - Pi) E_k (I - Pi)^T and E_{k+1} = (I - Pi) E_k (derived:
A^-1 = S M^-1 S^T + (I - Pi) A^-1 (I - Pi)^T). Both maps are linear in E_k with a random operator
independent of the past, so the expected iterate is exact (derived):

    symmetric:   vec E[E_k] = K^k vec E_0,  K = E[(I - Pi) (x) (I - Pi)]  (the operator of S1's second
                 moment, :meth:`SketchAndProject._second_moment_operator` with B = A),
    column-wise: E[E_k] = (I - E[Pi])^k E_0  (S1's exact mean, :meth:`SketchAndProject.iteration_matrix`).

In the scaled error F = L^T E L (A = L L^T; ||E||_F(A) = ||F||_F) the symmetric step is
F -> F - P(F), P(F) = F - (I - P) F (I - P), P = L^T S M^-1 S^T L, an orthogonal projection on the space
of symmetric matrices. So E||E_{k+1}||_F(A)^2 = ||E_k||^2 - <F_k, E[P] F_k> <= (1 - mu) ||E_k||^2 with
mu = lambda_min(E[P]) on symmetric matrices (derived; mu >= lambda_min(E[P]), the vector system's mu),
and the slowest direction of the mean contracts by exactly 1 - mu per step. The accelerated method is
the ACC loop of :mod:`.accelerated` on matrices (Y = alpha V + (1 - alpha) X, X+ = step(Y),
V+ = beta V + (1 - beta) Y - gamma (Y - X+), V_0 = X_0), the loop of the authors' ``descent_BFGS_accel.jl``
(gowerrobert/StochOpt.jl) with a random sketch instead of the secant pair; (mu, nu) are computed
exactly for finite sketches on the symmetric-matrix space by :func:`~.accelerated.mu_nu` (the paper's
definitions as recalled in :mod:`.accelerated`, NOT confirmed against its body, which could not be
read). That the accelerated iterates stay positive definite is the paper's abstract's claim; here it
is measured (``min_eig`` in the results), not assumed. Sketches: :class:`~.sketch_project.IndexSketch`
(coordinates, blocks, S = I with one block of every index) and :class:`~.sketch_project.GaussianSketch`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...problems.linear_system import LinearSystem, MatrixInversionTarget
from ._threads import threads_for
from .accelerated import (
    accelerated_iteration_matrix,
    acceleration_coefficients,
    mu_nu,
    scaled_projections,
)
from .sketch_project import GaussianSketch, IndexSketch, SketchAndProject

__all__ = ["AcceleratedMatrixInversion", "InversionRuns", "MatrixInversion"]


@dataclass
class InversionRuns:
    """What a run recorded at iterations ``steps`` (K,): ``sq_error`` (K, R) the error of each run (the
    F(A) norm squared, or Tr(E^T A E) column-wise), ``mean_error`` (K, d, d) and ``sem_error`` (K, d, d)
    the mean over runs of X_k - A^-1 and its standard error, ``min_eig`` (K, R) the smallest eigenvalue
    of each run's symmetric part of X_k, ``X`` the final iterates (R, d, d)."""

    steps: torch.Tensor
    sq_error: torch.Tensor
    mean_error: torch.Tensor
    sem_error: torch.Tensor
    min_eig: torch.Tensor
    X: torch.Tensor


def _sym_basis(d: int) -> torch.Tensor:
    """An orthonormal basis (D, d, d) of the symmetric d x d matrices (Frobenius), D = d (d + 1) / 2."""
    i, j = torch.triu_indices(d, d)
    B = torch.zeros(i.shape[0], d, d, dtype=torch.float64)
    k = torch.arange(i.shape[0])
    off = (i != j).to(torch.float64)
    val = torch.where(off > 0, torch.full_like(off, 1 / math.sqrt(2)), torch.ones_like(off))
    B[k, i, j] = val
    B[k, j, i] = val
    return B


class MatrixInversion:
    """Stochastic matrix inversion of ``target`` (a :class:`MatrixInversionTarget` or an SPD matrix) with
    ``sketch`` (:class:`IndexSketch` over the d indices, or :class:`GaussianSketch`); ``symmetric``
    chooses the randomized block BFGS update (default) or the column-wise one (see the module docstring)."""

    def __init__(self, target, sketch, symmetric: bool = True):
        if not isinstance(target, MatrixInversionTarget):
            target = MatrixInversionTarget(target)
        if not isinstance(sketch, (IndexSketch, GaussianSketch)):
            raise ValueError("matrix inversion: the sketch must be an IndexSketch (coordinates / blocks) or a "
                             "GaussianSketch")
        self.target, self.sketch, self.symmetric = target, sketch, bool(symmetric)
        self.A, self.d = target.A, target.d
        # the vector system A x = 0 with geometry B = A binds the sketch and carries S1's theory
        self.sp = SketchAndProject(LinearSystem(self.A, x_star=torch.zeros(self.d, dtype=torch.float64)), sketch, "A")
        self._eye = torch.eye(self.d, dtype=torch.float64)

    # -- theory ----------------------------------------------------------------------------------------------
    def mean_operator(self) -> torch.Tensor:
        """The exact map of the mean error, (d^2, d^2) on vec(E) (finite sketches): K (symmetric) or
        I (x) (I - E[Pi]) acting on columns (column-wise)."""
        if not self.sketch.finite:
            raise ValueError("the exact expected iterate needs a finite sketch (IndexSketch)")
        if self.symmetric:
            return self.sp._second_moment_operator()
        T = self.sp.iteration_matrix()  # I - E[Pi]
        return torch.kron(T, self._eye)  # vec row-major: (T E)_{ac} = sum_b T_ab E_bc

    def expected_error(self, X0: torch.Tensor, steps) -> torch.Tensor:
        """Exact E[X_k - A^-1] for k in ``steps`` (increasing), (K, d, d), float64 (finite sketches)."""
        K = self.mean_operator()
        e = (X0.to(torch.float64) - self.target.inverse).reshape(-1)
        out, k = [], 0
        for s in [int(s) for s in steps]:
            while k < s:
                e, k = K @ e, k + 1
            out.append(e.reshape(self.d, self.d))
        return torch.stack(out)

    def projections(self) -> torch.Tensor:
        """The options' projections (r, D, D) in the scaled coordinates F = L^T E L: on the symmetric
        matrices (D = d (d + 1) / 2, P_i(F) = F - (I - P_i) F (I - P_i)) for the symmetric update, on the
        columns' space (D = d, P_i) for the column-wise one."""
        P = scaled_projections(self.sp)  # (r, d, d): L^T S_i M_i^-1 S_i^T L
        if not self.symmetric:
            return P
        Bs = _sym_basis(self.d)  # (D, d, d)
        Q = self._eye - P
        QBQ = torch.einsum("rab,kbc,rcd->rkad", Q, Bs, Q)  # (r, D, d, d)
        keep = torch.einsum("rkad,lad->rkl", QBQ, Bs)
        ops = torch.eye(Bs.shape[0], dtype=torch.float64) - keep
        return 0.5 * (ops + ops.transpose(1, 2))

    def parameters(self) -> tuple[float, float]:
        """(mu, nu) of the inversion's projections (finite sketches; see the module docstring)."""
        if not self.sketch.finite:
            raise ValueError("mu and nu are computed exactly for finite sketches (IndexSketch) only")
        return mu_nu(self.projections(), self.sketch.probs)

    def rate(self) -> float:
        """1 - mu: E||X_k - A^-1||^2 <= (1 - mu)^k ||X_0 - A^-1||^2, and the slowest mean direction's factor."""
        return 1.0 - self.parameters()[0]

    def slowest_direction(self) -> torch.Tensor:
        """E_0 (d, d) with E[E_k] = (1 - mu)^k E_0 exactly and ||E_0||_F(A) = 1 (symmetric update)."""
        if not self.symmetric:
            raise ValueError("slowest_direction is for the symmetric update")
        EP = torch.einsum("r,rde->de", self.sketch.probs, self.projections())
        _, V = torch.linalg.eigh(EP)
        F = torch.einsum("k,kab->ab", V[:, 0], _sym_basis(self.d))
        Linv = torch.linalg.inv(self.target.chol)
        return Linv.T @ F @ Linv  # E = L^-T F L^-1

    # -- iterations --------------------------------------------------------------------------------------------
    def _draw(self, runs: int, gen: torch.Generator) -> torch.Tensor:
        """S^T for every run, (R, q, d)."""
        sk = self.sketch
        if sk.finite:
            return self._eye[sk.blocks[sk.draw(runs, gen)]]
        return torch.randn(runs, sk.q, self.d, generator=gen, dtype=torch.float64)

    def _step(self, X: torch.Tensor, St: torch.Tensor) -> torch.Tensor:
        """One step of every run: X (R, d, d), St (R, q, d) the runs' S^T."""
        StA = St @ self.A  # S^T A (R, q, d)
        M = StA @ St.transpose(1, 2)  # S^T A S (R, q, q)
        M = 0.5 * (M + M.transpose(1, 2))
        W = torch.linalg.solve(M, St).transpose(1, 2)  # S M^-1 (R, d, q)
        G = StA @ X  # S^T A X (R, q, d)
        if not self.symmetric:
            return X - W @ (G - St)
        WG = W @ G
        C = G @ StA.transpose(1, 2)  # S^T A X A S
        C = 0.5 * (C + C.transpose(1, 2))
        X = W @ St + X - WG - WG.transpose(1, 2) + W @ C @ W.transpose(1, 2)
        return 0.5 * (X + X.transpose(1, 2))

    def _recorder(self, runs: int):
        steps, sq, mean, sem, eig = [], [], [], [], []
        tgt = self.target

        def record(k, X):
            E = X - tgt.inverse
            steps.append(k)
            sq.append(tgt.error(X) if self.symmetric else tgt.column_error(X))
            mean.append(E.mean(0))
            sem.append(E.std(0) / math.sqrt(runs) if runs > 1 else torch.full_like(E[0], math.nan))
            eig.append(torch.linalg.eigvalsh(0.5 * (X + X.transpose(1, 2)))[:, 0])

        def result(X):
            return InversionRuns(torch.tensor(steps), torch.stack(sq), torch.stack(mean), torch.stack(sem),
                                 torch.stack(eig), X)
        return record, result

    def _start(self, X0, runs: int, iters: int, every: int) -> torch.Tensor:
        if iters < 0 or runs < 1 or every < 1:
            raise ValueError("run: need iters >= 0, runs >= 1, every >= 1")
        X0 = self._eye if X0 is None else torch.as_tensor(X0).to(torch.float64)
        if X0.shape != (self.d, self.d):
            raise ValueError(f"run: X0 must have shape ({self.d}, {self.d}), got {tuple(X0.shape)}")
        if self.symmetric and not torch.allclose(X0, X0.T, rtol=0, atol=1e-14 * max(float(X0.abs().max()), 1.0)):
            raise ValueError("run: the symmetric update needs a symmetric X0 (use symmetric=False otherwise)")
        return X0.expand(runs, self.d, self.d).clone()

    def run(self, X0: torch.Tensor | None = None, iters: int = 100, runs: int = 1, seed: int = 0,
            every: int = 1) -> InversionRuns:
        """``runs`` independent runs from ``X0`` (default I) batched as one (R, d, d) computation."""
        X = self._start(X0, runs, iters, every)
        gen = torch.Generator().manual_seed(int(seed))
        record, result = self._recorder(runs)
        record(0, X)
        with threads_for(runs * self.sketch.q * self.d * self.d * 8):
            for k in range(1, iters + 1):
                X = self._step(X, self._draw(runs, gen))
                if k % every == 0 or k == iters:
                    record(k, X)
        return result(X)


class AcceleratedMatrixInversion:
    """The accelerated loop on :class:`MatrixInversion` (see the module docstring); ``mu`` / ``nu``
    default to :meth:`MatrixInversion.parameters`."""

    def __init__(self, inv: MatrixInversion, mu: float | None = None, nu: float | None = None):
        self.inv = inv
        if mu is None or nu is None:
            m, n = inv.parameters()
            mu = m if mu is None else mu
            nu = n if nu is None else nu
        if not (mu > 0 and nu > 0):
            raise ValueError(f"accelerated matrix inversion needs mu, nu > 0, got mu={mu}, nu={nu}")
        self.mu, self.nu = float(mu), float(nu)
        self.alpha, self.beta, self.gamma = acceleration_coefficients(self.mu, self.nu)

    def rate(self) -> float:
        """1 - sqrt(mu / nu): the accelerated rate claimed by the paper (not confirmed)."""
        return 1 - math.sqrt(self.mu / self.nu)

    def expected_error(self, X0: torch.Tensor, steps) -> torch.Tensor:
        """Exact E[X_k - A^-1] for k in ``steps`` (finite sketches), (K, d, d), float64."""
        d = self.inv.d
        K = self.inv.mean_operator()
        T = accelerated_iteration_matrix(torch.eye(d * d, dtype=torch.float64) - K, self.alpha, self.beta, self.gamma)
        e = (X0.to(torch.float64) - self.inv.target.inverse).reshape(-1)
        z, k, out = torch.cat([e, e]), 0, []
        for s in [int(s) for s in steps]:
            while k < s:
                z, k = T @ z, k + 1
            out.append(z[:d * d].reshape(d, d))
        return torch.stack(out)

    def run(self, X0: torch.Tensor | None = None, iters: int = 100, runs: int = 1, seed: int = 0,
            every: int = 1) -> InversionRuns:
        """``runs`` independent runs batched as one (R, d, d) computation (records as :meth:`MatrixInversion.run`)."""
        inv = self.inv
        X = inv._start(X0, runs, iters, every)
        V = X.clone()
        gen = torch.Generator().manual_seed(int(seed))
        record, result = inv._recorder(runs)
        record(0, X)
        a, b, g = self.alpha, self.beta, self.gamma
        with threads_for(runs * inv.sketch.q * inv.d * inv.d * 12):
            for k in range(1, iters + 1):
                Y = a * V + (1 - a) * X
                Xn = inv._step(Y, inv._draw(runs, gen))
                V = b * V + (1 - b) * Y - g * (Y - Xn)
                X = Xn
                if k % every == 0 or k == iters:
                    record(k, X)
        return result(X)
