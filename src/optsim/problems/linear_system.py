"""Consistent linear systems A x = b with an exact solution x*, as a problem.

A :class:`LinearSystem` holds a dense A (rows x d, float64 by default) and b = A x* for a known
x*, so every metric is exact (no solve): the error in a geometry B, ||x - x*||_B^2 = (x - x*)^T B
(x - x*), and the residual ||A x - b||. Every metric takes a batch of iterates ``X`` of shape
(R, d), one row per independent run (the randomized solvers of :mod:`optsim.methods.linalg` run
many runs as one tensor computation).

As a :class:`~optsim.problems.base.Problem` the system is one client holding the least-squares
objective f(x) = ||A x - b||^2 / 2 (f* = 0 at x*, since the system is consistent; L and mu are the
extreme squared singular values of A), so gradient methods run on it through the runner like on
any problem. Its m = rows samples are the equations: f = (1/rows) sum_j f_j with
f_j(x) = rows (a_j^T x - b_j)^2 / 2, grad f_j(x) = rows (a_j^T x - b_j) a_j and L_j = rows ||a_j||^2, so
SGD-type methods run too (randomized Kaczmarz is SGD on these f_j with probabilities proportional to
||a_j||^2 and stepsize 1 / L_j). ``extra_metrics`` adds ``residual_sq`` = ||A x - b||^2 to the trace.
The randomized iterative solvers of the system itself (sketch-and-project and its relatives) are not
round-based methods of the runner: they read rows or columns of A rather than gradients, communicate nothing, and the theory checks need many independent runs with independent
sketches; they are functional, batched solvers in :mod:`optsim.methods.linalg` that take a
``LinearSystem``.

:meth:`LinearSystem.generate` builds seeded systems with a chosen spectrum: A = U diag(s) V^T with
Haar-random orthonormal U, V and singular values s geometric between ``smin`` and ``smax`` (or given
exactly); ``positive_definite=True`` gives a symmetric A = Q diag(s) Q^T whose eigenvalues are s.
:class:`SparseLinearSystem` holds a sparse A (SciPy CSR, never densified; e.g. the features of a LibSVM
file) with b = A z for a seeded z and x* the least-norm solution (LSQR to high accuracy, cached like every
problem's solution): the point randomized Kaczmarz and every gradient method converge to from x_0 = 0
when A is rank deficient. It is the same ``Problem`` as :class:`LinearSystem` (the same f, samples and
constants), with sparse oracles.

:class:`MatrixInversionTarget` is the matrix inversion problem A X = I for a symmetric positive definite
A, with the exact inverse and the error of the randomized inversion methods (stochastic matrix
inversion, S2) in the weighted Frobenius norm ||E||_F(A)^2 = Tr(A E A E^T) of quasi-Newton updates.
"""
from __future__ import annotations

import math
from functools import cached_property

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

    def _weighted_sample_grads(self, X, rows, idx, weights):
        """sum_s weights[., s] grad f_{idx_s}(x), grad f_j(x) = rows (a_j^T x - b_j) a_j (the equations
        idx (k, bs) gathered once, one batched product each way)."""
        As = self.A[idx]  # (k, bs, d)
        res = torch.bmm(As, X.unsqueeze(-1)).squeeze(-1) - self.b[idx]
        return torch.bmm((self.rows * res * weights).unsqueeze(1), As).squeeze(1)

    def _sample_grads(self, X, rows, idx):
        return self._weighted_sample_grads(X, rows, idx, torch.full(idx.shape, 1.0 / idx.shape[1], dtype=X.dtype,
                                                                     device=X.device))

    @property
    def L_samples(self) -> torch.Tensor:
        """(1, rows) smoothness constants rows ||a_j||^2 of the equations' f_j (float64, CPU)."""
        return (self.rows * self.A.to(torch.float64).pow(2).sum(1)).cpu()[None, :]

    @property
    def L_sample_max(self) -> float:
        return float(self.L_samples.max())

    def sample_gradient_variance(self, x: torch.Tensor) -> float:
        """(1/rows) sum_j ||grad f_j(x) - grad f(x)||^2 = rows sum_j r_j^2 ||a_j||^2 - ||A^T r||^2, r = A x - b."""
        A64 = self.A.to(torch.float64)
        r = A64 @ x.to(A64) - self.b.to(torch.float64)
        return float(self.rows * (r.pow(2) * A64.pow(2).sum(1)).sum() - (r @ A64).pow(2).sum())

    def extra_metrics(self, x: torch.Tensor) -> dict[str, float]:
        """``residual_sq`` = ||A x - b||^2 (the residual researchers plot besides dist_sq = ||x - x*||^2)."""
        r = self.A.to(torch.float64) @ x.to(torch.float64) - self.b.to(torch.float64)
        return {"residual_sq": float(r @ r)}

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


class SparseLinearSystem(Problem):
    """A consistent sparse system A x = b (A: SciPy sparse, rows x d, kept in CSR and CSC, never densified) as
    the same problem as :class:`LinearSystem`: one client with f(x) = ||A x - b||^2 / 2, its ``rows``
    equations the samples f_j(x) = rows (a_j^T x - b_j)^2 / 2 (so that f is their mean), and
    ``residual_sq`` = ||A x - b||^2 as an extra metric. Give ``b`` or ``z`` (b = A z);
    :meth:`from_libsvm` reads the data layer's sparse features. Metrics are batched over iterates X (R, d)
    as for :class:`LinearSystem`.

    x* (``x_true`` in float64, ``x_star`` in the problem's dtype) is the least-norm solution, computed by
    ``scipy.sparse.linalg.lsqr`` from 0 (its iterates lie in the row space of A, so it converges to the
    least-norm solution) to ||A x* - b|| <= ``tol`` ||b|| and cached on disk by a hash of (A, b, tol) like
    every problem's solution; the system is checked consistent at construction. Gradients A^T (A x - b)
    lie in the row space too, so every gradient method started at 0 (the runner's default) converges to
    this x*.

    Oracles are SciPy CSR products on float64 copies of the iterates (CPU only): gradients A^T (A X^T - b)
    for all rows of X at once, per-equation gradients by gathering the sampled rows' entries from the CSR
    arrays. Constants: L = sigma_max(A)^2 and mu = sigma_min^+(A)^2, the smallest *nonzero* squared singular
    value (the strong convexity of f on the row space, where the iterates from 0 stay; the usual mu when A
    has full column rank), both from the eigenvalues of the smaller Gram matrix (A^T A or A A^T, at most
    ``DENSE_GRAM_MAX`` on a side, formed from the sparse product); beyond that L is computed by Lanczos
    (``scipy.sparse.linalg.eigsh`` on x -> A^T A x) and mu is None. Eigenvalues of the Gram matrix below
    1e-12 L count as zero (float64 resolves them to about 1e-16 L), so a sigma_min^+ under 1e-6 sigma_max
    is not seen."""

    name = "linear_system"

    #: largest side of the Gram matrix whose eigenvalues are computed densely (L and mu exactly)
    DENSE_GRAM_MAX = 2000

    def __init__(self, A, b=None, *, z=None, tol: float = 1e-13, dtype=torch.float64, device="cpu"):
        import numpy as np
        import scipy.sparse as sp

        super().__init__(dtype, device)
        if self.device.type != "cpu":
            raise ValueError("sparse linear system: the oracles are SciPy CSR products on the CPU: set device: cpu")
        if not sp.issparse(A) or A.ndim != 2 or min(A.shape) < 1:
            raise ValueError("sparse linear system: A must be a nonempty SciPy sparse matrix (use LinearSystem "
                             "for dense A)")
        A = sp.csr_matrix(A, dtype=np.float64)
        A.sum_duplicates()
        A.eliminate_zeros()
        A.sort_indices()
        self.A, self.At = A, A.T.tocsr()  # rows of A, and rows of A^T = columns of A
        self.rows, self.d = A.shape
        self.n = 1
        self.m = torch.tensor([self.rows], dtype=torch.long)
        if (b is None) == (z is None):
            raise ValueError("sparse linear system: give exactly one of b or z (b = A z)")
        b = A @ np.asarray(z, dtype=np.float64) if b is None else np.asarray(b, dtype=np.float64).ravel()
        if b.shape != (self.rows,):
            raise ValueError(f"sparse linear system: b must have shape ({self.rows},), got {b.shape}")
        self.b, self.tol = b, float(tol)
        self.b_t = torch.from_numpy(b)
        x = self._cached_x()
        if x is None:
            x = self._least_norm(self.tol)
        res, nb = float(np.linalg.norm(A @ x - b)), float(np.linalg.norm(b))
        if res > max(1e-8 * nb, 1e-300):
            raise ValueError(f"sparse linear system: inconsistent (||A x* - b|| = {res:.3g} for ||b|| = {nb:.3g}): "
                             "give b = A z for some z")
        self.x_true = torch.from_numpy(x)
        self._solution  # noqa: B018  (writes the cache entry when it is missing; solve() returns x_true)

    def _cached_x(self):
        """The float64 x* of an earlier construction from the solution cache, else None."""
        import numpy as np

        from .base import cache_dir

        path = cache_dir() / f"{self.fingerprint}.npz"
        try:
            with np.load(path) as f:
                x = np.array(f["x"], dtype=np.float64)
        except (OSError, KeyError, ValueError):
            return None
        return x if x.shape == (self.d,) else None

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
    def from_libsvm(cls, source: str, seed: int = 0, tol: float = 1e-13, *, dtype=torch.float64,
                    device="cpu") -> SparseLinearSystem:
        """The features of a LibSVM file (``libsvm:NAME`` or a path) as A, b = A z with z ~ N(0, I_d) seeded."""

        from ..data.datasets import load_sparse
        from ..rng import numpy_rng

        A, _ = load_sparse(source)
        z = numpy_rng(seed, "data").standard_normal(A.shape[1])
        return cls(A, z=z, tol=tol, dtype=dtype, device=device)

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

    # ---- the Problem interface: f(x) = ||A x - b||^2 / 2, one client, the equations as samples ----------
    def _np(self, X: torch.Tensor):
        return X.detach().to(torch.float64).reshape(-1, self.d).numpy()

    def _out(self, a) -> torch.Tensor:
        import numpy as np

        return torch.from_numpy(np.ascontiguousarray(a)).to(self.dtype)

    def _residuals(self, X: torch.Tensor):
        """A x - b for each row of X (k, d): (rows, k), float64 NumPy."""
        return self.A @ self._np(X).T - self.b[:, None]

    def _grads(self, X, rows):
        return self._out((self.At @ self._residuals(X)).T)

    def _losses(self, X, rows):
        return self._out(0.5 * (self._residuals(X) ** 2).sum(0))

    def _grads_many(self, Xs):
        return self._grads(Xs.reshape(-1, self.d), None).reshape(Xs.shape)

    def _losses_many(self, Xs):
        return self._losses(Xs.reshape(-1, self.d), None).reshape(Xs.shape[:-1])

    def _weighted_sample_grads(self, X, rows, idx, weights):
        """sum_s weights[i, s] rows (a_j^T x_i - b_j) a_j over the equations j = idx[i, s]: the sampled rows'
        entries gathered from the CSR arrays as one flat array, the inner products one ``bincount``, the
        scatter into (k, d) another."""
        import numpy as np

        Xn = self._np(X)
        k, bs = idx.shape
        flat = idx.reshape(-1).cpu().numpy()
        owner = np.repeat(np.arange(k), bs)
        ip, ix, dv = self.A.indptr, self.A.indices, self.A.data
        starts, lens = ip[flat], ip[flat + 1] - ip[flat]
        seg = np.repeat(np.arange(flat.size), lens)  # which sample each gathered entry belongs to
        offs = np.cumsum(lens) - lens
        pos = starts[seg] + np.arange(seg.size) - offs[seg]
        cols, vals, who = ix[pos], dv[pos], owner[seg]
        dots = np.bincount(seg, vals * Xn[who, cols], minlength=flat.size)
        coef = self.rows * (dots - self.b[flat]) * weights.detach().to(torch.float64).reshape(-1).cpu().numpy()
        G = np.bincount(who * self.d + cols, coef[seg] * vals, minlength=k * self.d)
        return self._out(G.reshape(k, self.d))

    def _sample_grads(self, X, rows, idx):
        return self._weighted_sample_grads(X, rows, idx, torch.full(idx.shape, 1.0 / idx.shape[1],
                                                                     dtype=torch.float64))

    @cached_property
    def _gram(self):
        """A^T A as a dense (d, d) float64 array (the Hessian; formed from the sparse product)."""
        return (self.At @ self.A).toarray()

    def _hessians(self, X, rows):
        return self._out(self._gram).expand(X.shape[0], self.d, self.d).clone()

    @property
    def L_samples(self) -> torch.Tensor:
        """(1, rows) smoothness constants rows ||a_j||^2 of the equations' f_j (float64, CPU)."""
        import numpy as np

        return torch.from_numpy(self.rows * np.asarray(self.A.multiply(self.A).sum(1)).ravel())[None, :]

    @property
    def L_sample_max(self) -> float:
        return float(self.L_samples.max())

    def sample_gradient_variance(self, x: torch.Tensor) -> float:
        """(1/rows) sum_j ||grad f_j(x) - grad f(x)||^2 = rows sum_j r_j^2 ||a_j||^2 - ||A^T r||^2, r = A x - b."""
        import numpy as np

        r = self._residuals(x.reshape(1, self.d))[:, 0]
        sq = np.asarray(self.A.multiply(self.A).sum(1)).ravel()
        return float(self.rows * (r * r * sq).sum() - np.sum((self.At @ r) ** 2))

    def extra_metrics(self, x: torch.Tensor) -> dict[str, float]:
        """``residual_sq`` = ||A x - b||^2."""
        r = self._residuals(x.reshape(1, self.d))[:, 0]
        return {"residual_sq": float(r @ r)}

    @cached_property
    def _extreme_squared_singular_values(self) -> tuple[float, float | None]:
        """(sigma_max(A)^2, sigma_min^+(A)^2 or None), see the class docstring."""
        import numpy as np
        import scipy.sparse.linalg as sla

        side = min(self.rows, self.d)
        if side <= self.DENSE_GRAM_MAX:
            G = (self.At @ self.A if self.d <= self.rows else self.A @ self.At).toarray()
            ev = np.linalg.eigvalsh(0.5 * (G + G.T))
            L = float(ev[-1])
            pos = ev[ev > 1e-12 * L]
            return L, (float(pos[0]) if pos.size and L > 0 else None)
        op = sla.LinearOperator((self.d, self.d), matvec=lambda v: self.At @ (self.A @ v), dtype=np.float64)
        L = float(sla.eigsh(op, k=1, which="LA", tol=1e-12, return_eigenvectors=False)[0])
        return L, None

    def _smoothness(self):
        return torch.tensor([self._extreme_squared_singular_values[0]], dtype=torch.float64)

    def _global_smoothness(self):
        return self._extreme_squared_singular_values[0]

    def _mu(self):
        return self._extreme_squared_singular_values[1]

    def _fingerprint_parts(self):
        return [self.A.indptr, self.A.indices, self.A.data, self.b, self.tol]

    def solve(self, tol=1e-12, max_iter=0):
        return self.x_true.to(self.device, torch.float64)

    @property
    def gradient_flops(self):
        return 4.0 * self.A.nnz

    def _float64_copy(self):
        """The same system in float64 (the data is float64 already; x* and f* are computed on it)."""
        import copy

        p = copy.copy(self)
        p.dtype, p.meter = torch.float64, None
        return p


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
