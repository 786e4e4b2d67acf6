"""Randomized Kaczmarz and least-squares coordinate descent on a sparse system, reading rows (CSR) or
columns (CSC) of A and never densifying it; batched over independent runs.

The updates are S1's (Gower & Richtárik 2015, "Randomized iterative methods for linear systems"; see
:mod:`.sketch_project`): Kaczmarz (B = I, S = e_i): x <- x - (a_i^T x - b_i) / ||a_i||^2 a_i, reading row i
of the CSR matrix; coordinate descent for least squares (B = A^T A, S = A e_j): x_j <- x_j - A_{:j}^T r /
||A_{:j}||^2 with the residual r = A x - b kept and updated along column j. Probabilities: "convenient"
(p_i proportional to the squared row / column norm, the default), "uniform" or given.

From x_0 = 0 Kaczmarz converges to the least-norm solution x* of :class:`SparseLinearSystem` (its
iterates stay in the row space of A); the rate of E||x_k - x*||^2 is 1 - lambda_min^+(A^T D A) with
D = diag(p_i / ||a_i||^2) (the smallest nonzero eigenvalue; derived from S1's theorem restricted to the row
space), 1 - sigma_min^+(A)^2 / ||A||_F^2 for convenient probabilities. Coordinate descent needs A of full
column rank for its x* to be unique.

R independent runs are one vectorized step: the R rows (or columns) drawn are gathered from the CSR
arrays as one flat index array, the R inner products are one ``bincount`` and the R sparse updates one
scattered subtraction (within a row the column indices are distinct, so no two updates collide). A
single run takes a NumPy loop over the row slices.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ...problems.linear_system import SparseLinearSystem
from .sketch_project import Runs

__all__ = ["SparseSketchAndProject", "sparse_cd_least_squares", "sparse_kaczmarz"]

KINDS = ("kaczmarz", "cd_least_squares")


class SparseSketchAndProject:
    """Kaczmarz (``kind="kaczmarz"``) or least-squares coordinate descent (``"cd_least_squares"``) on a
    :class:`SparseLinearSystem` (see the module docstring)."""

    def __init__(self, system: SparseLinearSystem, kind: str = "kaczmarz", probs="convenient"):
        if not isinstance(system, SparseLinearSystem):
            raise ValueError("SparseSketchAndProject needs an optsim.problems.linear_system.SparseLinearSystem")
        if kind not in KINDS:
            raise ValueError(f"unknown kind '{kind}': use 'kaczmarz' or 'cd_least_squares'")
        self.system, self.kind = system, kind
        M = system.A if kind == "kaczmarz" else system.At  # rows of M are the options
        self.M = M
        self.indptr, self.indices, self.data = M.indptr, M.indices, M.data
        self.nrm = np.asarray(M.multiply(M).sum(1)).ravel()
        self.r = M.shape[0]
        if isinstance(probs, str) and probs == "convenient":
            p = self.nrm.copy()
        elif isinstance(probs, str) and probs == "uniform":
            p = np.ones(self.r)
        elif isinstance(probs, str):
            raise ValueError(f"unknown probabilities '{probs}': use 'uniform', 'convenient' or an array")
        else:
            p = np.asarray(probs, dtype=np.float64).ravel()
            if p.shape != (self.r,) or (p < 0).any():
                raise ValueError(f"probabilities must be {self.r} nonnegative numbers")
        if p.sum() <= 0:
            raise ValueError("probabilities sum to zero")
        self.probs = p / p.sum()
        self._safe = np.where(self.nrm > 0, self.nrm, 1.0)  # a zero row / column never moves the iterate
        self.B = "I" if kind == "kaczmarz" else "AtA"

    def rate(self) -> float:
        """1 - the smallest nonzero eigenvalue of E[Z] in the run's geometry (dense d x d eigenproblem)."""
        A = self.system.A
        if self.kind == "kaczmarz":
            w = self.probs / self._safe
            EZ = (A.T @ A.multiply(w[:, None]).tocsr()).toarray()
            lam = np.linalg.eigvalsh(EZ)
        else:  # B^-1/2 E[Z] B^-1/2 for B = A^T A is similar to diag(p_j / ||A_j||^2) A^T A
            G = (A.T @ A).toarray()
            s = np.sqrt(self.probs / self._safe)
            lam = np.linalg.eigvalsh(s[:, None] * G * s[None, :])
        pos = lam[lam > 1e-12 * lam.max()]
        return float(1 - pos.min())

    def draw(self, count: int, gen: torch.Generator) -> np.ndarray:
        return torch.multinomial(torch.from_numpy(self.probs), count, replacement=True, generator=gen).numpy()

    # -- steps ---------------------------------------------------------------------------------------------
    def _gather(self, opts: np.ndarray):
        """Flat (run, position) arrays of the options' nonzeros."""
        s, e = self.indptr[opts], self.indptr[opts + 1]
        ln = e - s
        run = np.repeat(np.arange(opts.shape[0]), ln)
        pos = np.arange(int(ln.sum())) - np.repeat(np.cumsum(ln) - ln, ln) + np.repeat(s, ln)
        return run, self.indices[pos], self.data[pos]

    def _step_batched(self, X: np.ndarray, Rm: np.ndarray | None, opts: np.ndarray) -> None:
        """One step of every run in place: X (R, d); Rm (R, rows) the residuals (coordinate descent)."""
        R = X.shape[0]
        run, idx, val = self._gather(opts)
        if self.kind == "kaczmarz":
            dots = np.bincount(run, weights=val * X[run, idx], minlength=R)
            coef = (dots - self.system.b[opts]) / self._safe[opts]
            X[run, idx] -= coef[run] * val
        else:
            dots = np.bincount(run, weights=val * Rm[run, idx], minlength=R)
            coef = dots / self._safe[opts]
            X[np.arange(R), opts] -= coef
            Rm[run, idx] -= coef[run] * val

    def _loop(self, x: np.ndarray, r: np.ndarray | None, opts: np.ndarray) -> None:
        """One run, in place, one row / column slice per iteration."""
        ip, ix, dv, b, nrm = self.indptr, self.indices, self.data, self.system.b, self._safe
        if self.kind == "kaczmarz":
            for i in opts:
                s, e = ip[i], ip[i + 1]
                cols, vals = ix[s:e], dv[s:e]
                x[cols] -= ((vals @ x[cols] - b[i]) / nrm[i]) * vals
        else:
            for j in opts:
                s, e = ip[j], ip[j + 1]
                rows, vals = ix[s:e], dv[s:e]
                c = (vals @ r[rows]) / nrm[j]
                x[j] -= c
                r[rows] -= c * vals

    def run(self, x0=None, iters: int = 100, runs: int = 1, seed: int = 0, every: int = 1,
            options=None, batched: bool | None = None) -> Runs:
        """``runs`` independent runs from ``x0`` (default 0) for ``iters`` iterations, recording every ``every``
        steps (as :meth:`SketchAndProject.run`); ``options`` (iters, runs) fixes the rows / columns drawn.
        ``batched`` forces the vectorized step for a single run (default: the loop for one run)."""
        if iters < 0 or runs < 1 or every < 1:
            raise ValueError("run: need iters >= 0, runs >= 1, every >= 1")
        sys_ = self.system
        x0 = np.zeros(sys_.d) if x0 is None else np.asarray(torch.as_tensor(x0, dtype=torch.float64))
        if x0.shape != (sys_.d,):
            raise ValueError(f"run: x0 must have shape ({sys_.d},), got {x0.shape}")
        if options is not None:
            options = np.asarray(torch.as_tensor(options), dtype=np.int64).reshape(iters, runs)
        gen = torch.Generator().manual_seed(int(seed))
        X = np.tile(x0, (runs, 1))
        Rm = None if self.kind == "kaczmarz" else np.ascontiguousarray((sys_.A @ X.T).T - sys_.b)
        use_loop = runs == 1 and not batched
        steps, sq, mean, sem = [], [], [], []

        def record(k):
            Xt = torch.from_numpy(X.copy())
            E = Xt - sys_.x_true
            steps.append(k)
            sq.append(sys_.error(Xt, self.B))
            mean.append(E.mean(0))
            sem.append(E.std(0) / math.sqrt(runs) if runs > 1 else torch.full((sys_.d,), math.nan, dtype=torch.float64))

        record(0)
        k = 0
        while k < iters:
            n = min(every - k % every, iters - k)
            chunk = options[k:k + n] if options is not None else self.draw(n * runs, gen).reshape(n, runs)
            if use_loop:
                self._loop(X[0], None if Rm is None else Rm[0], chunk[:, 0])
            else:
                for j in range(n):
                    self._step_batched(X, Rm, chunk[j])
            k += n
            if k % every == 0 or k == iters:
                record(k)
        return Runs(torch.tensor(steps), torch.stack(sq), torch.stack(mean), torch.stack(sem), torch.from_numpy(X))


def sparse_kaczmarz(system: SparseLinearSystem, probs="convenient") -> SparseSketchAndProject:
    """Randomized Kaczmarz reading CSR rows (p_i proportional to ||a_i||^2 by default)."""
    return SparseSketchAndProject(system, "kaczmarz", probs)


def sparse_cd_least_squares(system: SparseLinearSystem, probs="convenient") -> SparseSketchAndProject:
    """Least-squares coordinate descent reading CSC columns (p_j proportional to ||A_{:j}||^2 by default)."""
    return SparseSketchAndProject(system, "cd_least_squares", probs)
