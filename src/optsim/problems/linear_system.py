"""Consistent linear systems A x = b with an exact solution x*, as a problem.

A :class:`LinearSystem` holds a dense A (rows x d, float64 by default) and b = A x* for a known
x*, so every metric is exact (no solve): the error in a geometry B, ||x - x*||_B^2 = (x - x*)^T B
(x - x*), and the residual ||A x - b||. Every metric takes a batch of iterates ``X`` of shape
(R, d), one row per independent run (the randomized solvers of :mod:`optsim.methods.linalg` run
many runs as one tensor computation).

As a :class:`~optsim.problems.base.Problem` the system is one client holding the least-squares
objective f(x) = ||A x - b||^2 / 2 (f* = 0 at x*, since the system is consistent; L and mu are the
extreme squared singular values of A), so gradient methods run on it through the runner like on
any problem. The randomized iterative solvers of the system itself (sketch-and-project and its
relatives) are not round-based methods of the runner: they read rows or columns of A rather than
gradients, communicate nothing, and the theory checks need many independent runs with independent
sketches; they are functional, batched solvers in :mod:`optsim.methods.linalg` that take a
``LinearSystem``.

:meth:`LinearSystem.generate` builds seeded systems with a chosen spectrum: A = U diag(s) V^T with
Haar-random orthonormal U, V and singular values s geometric between ``smin`` and ``smax`` (or given
exactly); ``positive_definite=True`` gives a symmetric A = Q diag(s) Q^T whose eigenvalues are s.
:class:`SparseLinearSystem` holds a sparse A (SciPy CSR, never densified; e.g. the features of a LibSVM
file) with b = A z for a seeded z and x* the least-norm solution (LSQR to high accuracy): the point
randomized Kaczmarz converges to from x_0 = 0 when A is rank deficient.

:class:`MatrixInversionTarget` is the matrix inversion problem A X = I for a symmetric positive definite
A, with the exact inverse and the error of the randomized inversion methods (stochastic matrix
inversion, S2) in the weighted Frobenius norm ||E||_F(A)^2 = Tr(A E A E^T) of quasi-Newton updates.
"""
from __future__ import annotations

import math

import torch

from ..rng import generator
from .base import Problem

__all__ = ["LinearSystem", "MatrixInversionTarget", "RidgeSystem", "SparseLinearSystem"]


class LinearSystem(Problem):
    """A consistent system A x = b (A: rows x d) with known solution ``x_star`` (see the module docstring).

    ``x_star`` defaults to the least-squares solution of A x = b, which must then solve the system
    (residual at float64 precision) and be unique (A of full column rank); give it explicitly for a
    rank-deficient A.
    """

    name = "linear_system"

    def __init__(self, A: torch.Tensor, b: torch.Tensor | None = None, x_star: torch.Tensor | None = None, *,
                 dtype=torch.float64, device="cpu"):
        super().__init__(dtype, device)
        A = torch.as_tensor(A)
        if A.ndim != 2 or A.shape[0] < 1 or A.shape[1] < 1:
            raise ValueError(f"linear_system: A must be a nonempty matrix (rows x d), got shape {tuple(A.shape)}")
        self.A = A.to(self.device, dtype).contiguous()
        self.rows, self.d = self.A.shape
        self.n = 1
        self.m = torch.tensor([self.rows], dtype=torch.long, device=self.device)
        if b is None and x_star is None:
            raise ValueError("linear_system: give b, x_star or both (b = A x_star when only x_star is given)")
        if x_star is not None:
            x_star = torch.as_tensor(x_star).to(self.device, dtype)
            if x_star.shape != (self.d,):
                raise ValueError(f"linear_system: x_star must have shape ({self.d},), got {tuple(x_star.shape)}")
        if b is None:
            b = self.A @ x_star
        b = torch.as_tensor(b).to(self.device, dtype)
        if b.shape != (self.rows,):
            raise ValueError(f"linear_system: b must have shape ({self.rows},), got {tuple(b.shape)}")
        self.b = b
        A64, b64 = self.A.to(torch.float64), self.b.to(torch.float64)
        if x_star is None:
            if int(torch.linalg.matrix_rank(A64)) < self.d:
                raise ValueError("linear_system: A has dependent columns, so x* is not unique: pass x_star explicitly")
            x_star = torch.linalg.lstsq(A64, b64[:, None]).solution[:, 0].to(self.device, dtype)
        scale = float(A64.norm()) * float(x_star.to(torch.float64).norm()) + float(b64.norm())
        res = float((A64 @ x_star.to(torch.float64) - b64).norm())
        if res > 1e-8 * max(scale, 1e-300):
            raise ValueError(f"linear_system: the system is inconsistent (||A x* - b|| = {res:.3g}): "
                             "give b = A x* for some x*")
        self.x_true = x_star

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def generate(cls, rows: int, d: int, smin: float = 0.1, smax: float = 1.0, *, singular_values=None,
                 positive_definite: bool = False, seed: int = 0, dtype=torch.float64,
                 device="cpu") -> LinearSystem:
        """A seeded system with a chosen spectrum (see the module docstring); x* ~ N(0, I_d)."""
        if positive_definite and rows != d:
            raise ValueError(f"linear_system: a positive definite system is square: set rows = d (got {rows} x {d})")
        if rows < d:
            raise ValueError(f"linear_system: generate() makes full-column-rank systems, so rows >= d (got {rows} < {d})")
        if singular_values is None:
            if not 0 < smin <= smax:
                raise ValueError(f"linear_system: need 0 < smin <= smax, got smin={smin}, smax={smax}")
            s = torch.logspace(math.log10(smin), math.log10(smax), d, dtype=torch.float64)
            s[0], s[-1] = smin, smax
        else:
            s = torch.as_tensor(singular_values, dtype=torch.float64).flatten()
            if s.shape != (d,) or not bool((s > 0).all()):
                raise ValueError(f"linear_system: singular_values must be {d} positive numbers")
        g = generator(seed, "data")
        V, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        if positive_definite:
            A = (V * s) @ V.T
            A = 0.5 * (A + A.T)
        else:
            U, _ = torch.linalg.qr(torch.randn(rows, d, generator=g, dtype=torch.float64))
            A = (U * s) @ V.T
        x = torch.randn(d, generator=g, dtype=torch.float64)
        return cls(A, A @ x, x, dtype=dtype, device=device)

    # ---- exact metrics (batched over runs) ---------------------------------------------------------
    @property
    def symmetric(self) -> bool:
        return self.rows == self.d and bool(torch.equal(self.A, self.A.T))

    def geometry(self, B) -> torch.Tensor:
        """The matrix of a geometry: ``None`` / ``"I"`` (identity), ``"A"`` (A itself, symmetric positive
        definite), ``"AtA"`` (A^T A) or a (d, d) tensor."""
        A64 = self.A.to(torch.float64)
        if B is None or (isinstance(B, str) and B == "I"):
            return torch.eye(self.d, dtype=torch.float64, device=self.device)
        if isinstance(B, str) and B == "A":
            if not self.symmetric:
                raise ValueError("geometry 'A' needs a symmetric positive definite A: use 'I' or 'AtA'")
            return A64
        if isinstance(B, str) and B == "AtA":
            return A64.T @ A64
        if isinstance(B, str):
            raise ValueError(f"unknown geometry '{B}': use 'I', 'A', 'AtA' or a (d, d) tensor")
        B = torch.as_tensor(B).to(self.device, torch.float64)
        if B.shape != (self.d, self.d):
            raise ValueError(f"geometry B must be ({self.d}, {self.d}), got {tuple(B.shape)}")
        return B

    def error(self, X: torch.Tensor, B=None) -> torch.Tensor:
        """||x - x*||_B^2 for each row of ``X`` (R, d) (or a single (d,) iterate)."""
        E = X - self.x_true
        if B is None or (isinstance(B, str) and B == "I"):
            return (E * E).sum(-1)
        return (E * (E @ self.geometry(B).to(E.dtype))).sum(-1)

    def residual(self, X: torch.Tensor) -> torch.Tensor:
        """||A x - b|| for each row of ``X`` (R, d) (or a single (d,) iterate)."""
        return (X @ self.A.T - self.b).norm(dim=-1)

    # ---- the Problem interface: f(x) = ||A x - b||^2 / 2, one client -------------------------------
    def _grads(self, X, rows):
        return (X @ self.A.T - self.b) @ self.A

    def _losses(self, X, rows):
        return 0.5 * (X @ self.A.T - self.b).pow(2).sum(-1)

    def _hessians(self, X, rows):
        return (self.A.T @ self.A).expand(X.shape[0], self.d, self.d).clone()

    def _singular_values(self) -> torch.Tensor:
        return torch.linalg.svdvals(self.A.to(torch.float64))

    def _smoothness(self):
        return self._singular_values()[:1].pow(2)

    def _global_smoothness(self):
        return float(self._singular_values()[0] ** 2)

    def _mu(self):
        s = self._singular_values()
        return float(s[-1] ** 2) if self.rows >= self.d and float(s[-1]) > 0 else None

    def _fingerprint_parts(self):
        return [self.A, self.b]

    def solve(self, tol=1e-12, max_iter=0):
        return self.x_true.to(torch.float64)

    @property
    def gradient_flops(self):
        return 4.0 * self.rows * self.d


class MatrixInversionTarget:
    """Inverting a symmetric positive definite A (d x d): the exact inverse ``inverse`` (float64, by
    Cholesky) and batched metrics of iterates X (R, d, d) (or one (d, d) matrix).

    ``error(X)`` = ||X - A^-1||_F(A)^2 = Tr(A E A E^T) = ||L^T E L||_F^2 (A = L L^T, E = X - A^-1): the
    norm in which the BFGS update is the projection onto {X = X^T, A S-constraints} (Gower & Richtárik
    2017, "Randomized quasi-Newton updates are linearly convergent matrix inversion algorithms");
    ``column_error(X)`` = Tr(E^T A E) = sum_j ||E e_j||_A^2, the norm of the column-wise method (S1 with
    B = A on each column of A X = I); ``residual(X)`` = ||A X - I||_F.
    """

    def __init__(self, A: torch.Tensor):
        A = torch.as_tensor(A).to(torch.float64)
        if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] < 1:
            raise ValueError(f"matrix inversion: A must be a square matrix, got shape {tuple(A.shape)}")
        if not torch.allclose(A, A.T, rtol=0, atol=1e-12 * float(A.abs().max())):
            raise ValueError("matrix inversion: A must be symmetric (use 0.5 (A + A^T) or A^T A)")
        self.A = 0.5 * (A + A.T)
        self.d = int(A.shape[0])
        try:
            self.chol = torch.linalg.cholesky(self.A)
        except RuntimeError:
            raise ValueError("matrix inversion: A must be positive definite") from None
        inv = torch.cholesky_inverse(self.chol)
        self.inverse = 0.5 * (inv + inv.T)

    @classmethod
    def generate(cls, d: int, smin: float = 0.1, smax: float = 1.0, *, eigenvalues=None,
                 seed: int = 0) -> MatrixInversionTarget:
        """A seeded A = Q diag(s) Q^T with eigenvalues s geometric in [smin, smax] (or given)."""
        sys_ = LinearSystem.generate(d, d, smin, smax, singular_values=eigenvalues, positive_definite=True,
                                     seed=seed)
        return cls(sys_.A)

    def scaled(self, X: torch.Tensor) -> torch.Tensor:
        """L^T (X - A^-1) L, batched: the error in coordinates where ||.||_F(A) is the Frobenius norm."""
        E = X.to(torch.float64) - self.inverse
        return self.chol.T @ E @ self.chol

    def error(self, X: torch.Tensor) -> torch.Tensor:
        """||X - A^-1||_F(A)^2 = Tr(A E A E^T) per matrix of ``X`` (R, d, d) (or one (d, d) matrix)."""
        return self.scaled(X).pow(2).sum((-2, -1))

    def column_error(self, X: torch.Tensor) -> torch.Tensor:
        """Tr(E^T A E) = sum_j ||E e_j||_A^2 per matrix of ``X``."""
        E = X.to(torch.float64) - self.inverse
        return (self.chol.T @ E).pow(2).sum((-2, -1))

    def residual(self, X: torch.Tensor) -> torch.Tensor:
        """||A X - I||_F per matrix of ``X``."""
        return (self.A @ X.to(torch.float64) - torch.eye(self.d, dtype=torch.float64)).pow(2).sum((-2, -1)).sqrt()


class SparseLinearSystem:
    """A consistent sparse system A x = b (A: SciPy sparse, rows x d, kept in CSR and CSC) with x* the
    least-norm solution, computed by ``scipy.sparse.linalg.lsqr`` from 0 (its iterates lie in the row
    space of A, so it converges to the least-norm solution) to ||A x* - b|| <= ``tol`` ||b||, then
    checked. Give ``b`` or ``z`` (b = A z); :meth:`from_libsvm` reads the data layer's sparse features.
    Metrics are batched over iterates X (R, d) as for :class:`LinearSystem`."""

    def __init__(self, A, b=None, *, z=None, tol: float = 1e-13):
        import numpy as np
        import scipy.sparse as sp

        if not sp.issparse(A) or A.ndim != 2 or min(A.shape) < 1:
            raise ValueError("sparse linear system: A must be a nonempty SciPy sparse matrix (use LinearSystem "
                             "for dense A)")
        A = sp.csr_matrix(A, dtype=np.float64)
        A.sum_duplicates()
        A.eliminate_zeros()
        A.sort_indices()
        self.A, self.At = A, A.T.tocsr()  # rows of A, and rows of A^T = columns of A
        self.rows, self.d = A.shape
        if (b is None) == (z is None):
            raise ValueError("sparse linear system: give exactly one of b or z (b = A z)")
        b = A @ np.asarray(z, dtype=np.float64) if b is None else np.asarray(b, dtype=np.float64).ravel()
        if b.shape != (self.rows,):
            raise ValueError(f"sparse linear system: b must have shape ({self.rows},), got {b.shape}")
        self.b = b
        x = self._least_norm(tol)
        res, nb = float(np.linalg.norm(A @ x - b)), float(np.linalg.norm(b))
        if res > max(1e-8 * nb, 1e-300):
            raise ValueError(f"sparse linear system: inconsistent (||A x* - b|| = {res:.3g} for ||b|| = {nb:.3g}): "
                             "give b = A z for some z")
        self.x_true = torch.from_numpy(x)
        self.b_t = torch.from_numpy(b)

    def _least_norm(self, tol):
        import numpy as np
        from scipy.sparse.linalg import lsqr

        x = np.zeros(self.d)
        r = self.b.copy()
        for _ in range(3):  # LSQR, restarted on the residual (the correction stays in the row space)
            dx = lsqr(self.A, r, atol=tol, btol=tol, conlim=1e16, iter_lim=20 * (self.rows + self.d))[0]
            x += dx
            r = self.b - self.A @ x
            if np.linalg.norm(r) <= tol * max(np.linalg.norm(self.b), 1e-300):
                break
        return x

    @classmethod
    def from_libsvm(cls, source: str, seed: int = 0, tol: float = 1e-13) -> SparseLinearSystem:
        """The features of a LibSVM file (``libsvm:NAME`` or a path) as A, b = A z with z ~ N(0, I_d) seeded."""

        from ..data.datasets import load_sparse
        from ..rng import numpy_rng

        A, _ = load_sparse(source)
        z = numpy_rng(seed, "data").standard_normal(A.shape[1])
        return cls(A, z=z, tol=tol)

    def _matvec(self, X: torch.Tensor) -> torch.Tensor:
        """A x for each row of X (R, d) -> (R, rows), by the sparse matrix (never densified)."""
        X2 = X.to(torch.float64).reshape(-1, self.d).numpy()
        return torch.from_numpy(self.A @ X2.T).T.reshape(*X.shape[:-1], self.rows)

    def error(self, X: torch.Tensor, B="I") -> torch.Tensor:
        """||x - x*||_B^2 for each row of X, B = "I" or "AtA" (||A (x - x*)||^2)."""
        E = X.to(torch.float64) - self.x_true
        if B == "I" or B is None:
            return (E * E).sum(-1)
        if B == "AtA":
            return self._matvec(E).pow(2).sum(-1)
        raise ValueError(f"sparse linear system: geometry must be 'I' or 'AtA', got {B!r}")

    def residual(self, X: torch.Tensor) -> torch.Tensor:
        """||A x - b|| for each row of X."""
        return (self._matvec(X) - self.b_t).norm(dim=-1)


class RidgeSystem:
    """Ridge regression as primal-dual linear optimality conditions (S3, Ribeiro & Richtárik 2018).

    Data A = [A_1, ..., A_n] (d x N, one column per observation when m = 1, N = n m) and responses
    y (N,); primal P(w) = ||A^T w - y||^2 / (2 n) + lam ||w||^2 / 2, dual
    D(alpha) = (alpha^T y - ||alpha||^2 / 2) / n - ||A alpha||^2 / (2 lam n^2). The optimal pair solves
    w = A alpha / (lam n), alpha = y - A^T w (exact, float64: ``w_star``, ``alpha_star``).
    ``a_max`` / ``a_min`` are the extreme eigenvalues of A^T A / (lam n) (the same nonzero ones as A A^T / (lam n)).
    """

    def __init__(self, A: torch.Tensor, y: torch.Tensor, lam: float, n: int | None = None):
        A = torch.as_tensor(A, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64)
        if A.ndim != 2 or y.shape != (A.shape[1],):
            raise ValueError(f"ridge: expected A (d, N) and y (N,), got {tuple(A.shape)} and {tuple(y.shape)}")
        if not lam > 0:
            raise ValueError(f"ridge: the regularization lam must be > 0, got {lam}")
        self.A, self.y, self.lam = A, y, float(lam)
        self.d, self.N = A.shape
        self.n = int(n) if n is not None else self.N
        if self.N % self.n:
            raise ValueError(f"ridge: N = {self.N} columns must split into n = {self.n} equal blocks")
        H = A @ A.T / self.n + self.lam * torch.eye(self.d, dtype=torch.float64)
        self.w_star = torch.linalg.solve(H, A @ y / self.n)
        self.alpha_star = y - A.T @ self.w_star
        s = torch.linalg.svdvals(A)
        self.a_max = float(s[0] ** 2) / (self.lam * self.n)
        self.a_min = float(s[-1] ** 2) / (self.lam * self.n) if self.N <= self.d else 0.0  # A^T A singular if N > d
        self.a_min_primal = float(s[-1] ** 2) / (self.lam * self.n) if self.d <= self.N else 0.0

    @classmethod
    def generate(cls, d: int, n: int, lam: float, smin: float = 0.1, smax: float = 1.0, noise: float = 0.1,
                 seed: int = 0) -> RidgeSystem:
        """Seeded data with singular values of A geometric in [smin, smax] times sqrt(n) and y = A^T w + noise."""
        g = generator(seed, "data")
        k = min(d, n)
        s = torch.logspace(math.log10(smin), math.log10(smax), k, dtype=torch.float64) * math.sqrt(n)
        U, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
        V, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
        A = (U * s) @ V.T
        w = torch.randn(d, generator=g, dtype=torch.float64)
        y = A.T @ w + noise * torch.randn(n, generator=g, dtype=torch.float64)
        return cls(A, y, lam, n)

    def primal(self, w: torch.Tensor) -> torch.Tensor:
        return (self.A.T @ w - self.y).pow(2).sum(0) / (2 * self.n) + self.lam / 2 * w.pow(2).sum(0)

    def dual(self, alpha: torch.Tensor) -> torch.Tensor:
        return ((alpha * self.y[:, None] if alpha.ndim == 2 else alpha * self.y).sum(0) - alpha.pow(2).sum(0) / 2) \
            / self.n - (self.A @ alpha).pow(2).sum(0) / (2 * self.lam * self.n ** 2)
