"""Finite sums on Riemannian manifolds, clients and samples as batch dimensions.

The test-beds of Riemannian variance reduction (Zhang, Reddi, Sra 2016, "Riemannian SVRG: fast
stochastic optimization on Riemannian manifolds", Sec. 5; Sato, Kasai, Mishra 2019, "Riemannian
stochastic variance reduced gradient algorithm with retraction and vector transport", Sec. 6):

* :class:`SpherePCA` -- the leading eigenvector: f_ij(x) = -(z_ij^T x)^2 on the unit sphere;
* :class:`StiefelPCA` -- the leading p eigenvectors: f_ij(X) = -||X^T z_ij||^2 on the Stiefel manifold
  St(d, p) (its exp / log / transport are a retraction, its inverse and a vector transport);
* :class:`KarcherSPD` -- the Karcher (Riemannian) mean of SPD matrices: f_ij(X) = d^2(X, A_ij) / 2
  under the affine-invariant metric.

Client i holds m samples; f_i = (1/m) sum_j f_ij, f = (1/n) sum_i f_i. The oracles return
**Riemannian** gradients (tangent at x, in the ambient coordinates: the flat (d,) vector the runner
sees; SPD matrices are flattened to k^2 entries), and ``manifold`` tells the Riemannian methods where
x lives. Constants: ``L`` (geodesic smoothness: a bound of the Riemannian Hessian's norm), ``L_i``,
``L_samples`` (per sample), ``mu`` (geodesic strong convexity; None for PCA, which is not geodesically
convex on the sphere -- its local constant at x* is :attr:`SpherePCA.mu_at_solution`) and ``zeta`` (the
curvature constant of Zhang & Sra 2016 for the problem's domain).
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from ..manifolds import SPD, Sphere, Stiefel
from ..manifolds.spd import sym_function
from ..rng import generator
from .base import Problem

__all__ = ["KarcherSPD", "SpherePCA", "StiefelPCA"]


def _gather(Z: torch.Tensor, rows: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
    """Samples Z[c_i, idx[i, s]] of the clients c = rows (None: all) for local indices idx (r, b):
    (r, b, ...), gathered directly (the clients' data are not copied first)."""
    c = torch.arange(Z.shape[0], device=Z.device) if rows is None else rows
    return Z[c[:, None], idx]


class _SampleCovariance(Problem):
    """The PCA problems' shared oracle plumbing and constants, from the samples z_ij (``self.Z``, (n, m, d)): the spectrum of
    C = (1/(n m)) sum_ij z_ij z_ij^T, L = 2 lambda_max(C), each client's L_i = 2 lambda_max(C_i) and each
    sample's L_ij = 2 ||z_ij||^2 (the Euclidean Hessian of -||X^T z||^2 is -2 z z^T on each column)."""

    def _rgrad(self, X: torch.Tensor, Zr: torch.Tensor) -> torch.Tensor:
        """The Riemannian gradients at the models X of the clients' samples Zr (r, b, d)."""
        raise NotImplementedError

    def _grads(self, X, rows):
        return self._rgrad(X, self.Z if rows is None else self.Z[rows])

    def _sample_grads(self, X, rows, idx):
        return self._rgrad(X, _gather(self.Z, rows, idx))

    @cached_property
    def _spectrum(self):
        Z = self.Z.to(torch.float64).cpu().numpy()
        C = np.einsum("nmi,nmj->ij", Z, Z) / (self.n * Z.shape[1])
        return np.linalg.eigh(C)

    def _smoothness(self):
        Z = self.Z.to(torch.float64)
        C = torch.einsum("nmi,nmj->nij", Z, Z) / Z.shape[1]
        return 2.0 * torch.linalg.eigvalsh(C)[:, -1]

    def _global_smoothness(self):
        return 2.0 * float(self._spectrum[0][-1])

    @property
    def L_samples(self) -> torch.Tensor:
        return 2.0 * self.Z.to(torch.float64).pow(2).sum(-1).cpu()

    @property
    def L_sample_max(self) -> float:
        return float(self.L_samples.max())


class SpherePCA(_SampleCovariance):
    """The leading eigenvector of C = (1/(n m)) sum_ij z_ij z_ij^T: minimize f(x) = -x^T C x over the
    unit sphere, f_ij(x) = -(z_ij^T x)^2.

    Riemannian gradient: grad f_ij(x) = P_x(-2 z_ij z_ij^T x), P_x = I - x x^T. Riemannian Hessian on
    the tangent space: Hess f(x)[u] = -2 P_x(C u) + 2 (x^T C x) u, whose eigenvalues lie in
    [-2 lambda_1(C), 2 lambda_1(C)] (C positive semidefinite), so f is geodesically L-smooth with
    L = 2 lambda_1(C) (L_i: the client's C_i; per sample: 2 ||z_ij||^2). At x* = +-v_1 the Hessian's
    eigenvalues are 2 (lambda_1 - lambda_j), j >= 2: f is locally geodesically strongly convex with
    ``mu_at_solution`` = 2 (lambda_1 - lambda_2), not globally (mu = None). The sphere's curvature is 1, so
    zeta = 1. x* = the top eigenvector of C from ``numpy.linalg.eigh`` (its sign chosen so that
    <x_0, x*> > 0), f* = -lambda_1(C). Metrics besides f - f*: ``eig_error`` = 1 - <x, x*>^2 (no
    sign ambiguity) and ``sphere_error`` = | ||x|| - 1 |.
    """

    name = "sphere_pca"
    convex = False

    def __init__(self, Z: torch.Tensor, x0: torch.Tensor | None = None, dtype=torch.float64, device="cpu"):
        super().__init__(dtype, device)
        Z = torch.as_tensor(Z)
        if Z.ndim != 3 or Z.shape[1] < 1 or Z.shape[2] < 2:
            raise ValueError(f"sphere_pca: expected samples Z of shape (n, m, d) with d >= 2, got {tuple(Z.shape)}")
        self.Z = Z.to(self.device, dtype)
        self.n, M, self.d = self.Z.shape
        self.m = torch.full((self.n,), M, dtype=torch.long, device=self.device)
        self.manifold = Sphere(self.d)
        if x0 is None:
            x0 = self.manifold.random_point(generator=generator(0, "data"))
        x0 = torch.as_tensor(x0, dtype=torch.float64)
        if x0.shape != (self.d,) or abs(float(x0.norm()) - 1) > 1e-12:
            raise ValueError(f"sphere_pca: the initial point must be a unit vector of length {self.d}")
        self._x0 = x0.to(self.device, dtype)

    @classmethod
    def generate(cls, n: int = 1, m: int = 200, d: int = 10, gap: float = 0.3, seed: int = 0,
                 dtype=torch.float64, device="cpu") -> SpherePCA:
        """Gaussian samples z ~ N(0, Q diag(lambda) Q^T) (Q random orthogonal), lambda_1 = 1 and
        lambda_j = (1 - gap) 10^{-(j - 2)/(d - 2)} for j >= 2: a population eigengap ``gap``."""
        if not 0 < gap < 1:
            raise ValueError(f"sphere_pca: gap must be in (0, 1), got {gap}")
        if min(n, m) < 1 or d < 2:
            raise ValueError(f"sphere_pca needs n, m >= 1 and d >= 2, got n={n}, m={m}, d={d}")
        g = generator(seed, "data")
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        lam = torch.ones(d, dtype=torch.float64)
        lam[1:] = (1 - gap) * torch.logspace(0, -1, d - 1, dtype=torch.float64)
        Z = torch.randn(n, m, d, generator=g, dtype=torch.float64) * lam.sqrt() @ Q.T
        x0 = Sphere(d).random_point(generator=g)
        return cls(Z, x0, dtype=dtype, device=device)

    # ---- oracles (Riemannian gradients) ----------------------------------------------------------
    def _rgrad(self, X: torch.Tensor, Zr: torch.Tensor) -> torch.Tensor:
        proj = torch.bmm(Zr, X.unsqueeze(-1))                              # (r, b, 1)
        eg = torch.bmm(Zr.transpose(1, 2), proj).squeeze(-1) * (-2.0 / Zr.shape[1])
        return eg - (X * eg).sum(-1, keepdim=True) * X

    def _losses(self, X, rows):
        Zr = self.Z if rows is None else self.Z[rows]
        return -torch.bmm(Zr, X.unsqueeze(-1)).squeeze(-1).pow(2).mean(1)

    # ---- constants -------------------------------------------------------------------------------
    @property
    def eigengap(self) -> float:
        w = self._spectrum[0]
        return float(w[-1] - w[-2])

    @property
    def mu_at_solution(self) -> float:
        """2 (lambda_1 - lambda_2): the Riemannian Hessian's smallest eigenvalue at x*."""
        return 2.0 * self.eigengap

    #: the sphere's sectional curvature is 1 >= 0
    zeta = 1.0

    @cached_property
    def _solution(self):
        w, V = self._spectrum
        v = torch.as_tensor(V[:, -1].copy(), dtype=torch.float64)
        if float(v @ self._x0.to(torch.float64).cpu()) < 0:
            v = -v
        return v.to(self.device, self.dtype), -float(w[-1])

    def _fingerprint_parts(self):
        return [self.Z]

    def initial_point(self):
        return self._x0.clone()

    def dist_sq(self, X):
        """min(||x - v||^2, ||x + v||^2): the distance to the minimizers +-v (the leading eigenvector
        up to its sign)."""
        v = self.x_star
        return X.pow(2).sum(-1) + v.pow(2).sum() - 2 * (X @ v).abs()

    def extra_metrics(self, x):
        c = float(x.to(torch.float64) @ self.x_star.to(torch.float64))
        return {"eig_error": 1.0 - c * c, "sphere_error": abs(float(x.to(torch.float64).norm()) - 1.0)}


class StiefelPCA(_SampleCovariance):
    """The leading p-dimensional eigenspace of C = (1/(n m)) sum_ij z_ij z_ij^T: minimize
    f(X) = -tr(X^T C X) over the Stiefel manifold St(d, p) (orthonormal d x p frames X, flattened row
    by row to d p entries), f_ij(X) = -||X^T z_ij||^2 -- :class:`SpherePCA`'s objective and data
    layout, which it is for p = 1 (losses and gradients agree, tested). The manifold's ``exp`` /
    ``log`` / ``transport`` are the polar retraction, its inverse and the projection vector transport
    (:class:`optsim.manifolds.Stiefel`): the Riemannian methods run on first-order approximations of
    the maps their theorems are stated with.

    Riemannian gradient (embedded metric): grad f_ij(X) = P_X(-2 z_ij z_ij^T X), P_X(V) =
    V - X sym(X^T V). Riemannian Hessian on the tangent space (the projected derivative of the
    Riemannian gradient of a Riemannian submanifold; Absil, Mahony, Trumpf 2013, "An extrinsic look at
    the Riemannian Hessian"): Hess f(X)[U] = P_X(-2 C U + 2 U X^T C X) (checked against second
    differences along the second-order polar retraction in tests/test_stiefel.py), so
    <U, Hess f(X)[U]> = -2 tr(U^T C U) + 2 tr(U^T U X^T C X); both traces
    lie in [0, lambda_1(C) ||U||^2] (C and X^T C X are positive semidefinite with eigenvalues at most
    lambda_1(C)), so the quadratic form lies in [-2 lambda_1, 2 lambda_1] ||U||^2: L = 2 lambda_1(C)
    (L_i: the client's C_i; per sample: 2 ||z_ij||^2), SpherePCA's constants. The polar retraction is
    second order, so L also bounds |d^2/dt^2 f(R_X(t U))| at t = 0 for unit U (tested).

    f is invariant under X -> X Q (Q orthogonal): every orthonormal basis of the top-p eigenspace is a
    minimizer, and at one the Hessian vanishes on the directions X Omega (Omega skew) and has
    eigenvalues 2 (lambda_i - lambda_j), i <= p < j, on the others: ``mu_at_solution`` =
    2 (lambda_p - lambda_{p+1}) on the complement of that orbit; mu = None. zeta: the curvature
    constant of Zhang & Sra (2016) on the whole manifold, ``Stiefel.zeta(Stiefel.diameter)``
    (kappa_min = -1/2 and diameter pi sqrt(p) for 2 <= p < d: zeta = c / tanh(c), c = pi sqrt(p / 2);
    1 for p = 1, as the sphere's). x* = the top p eigenvectors of C from ``numpy.linalg.eigh``,
    rotated to the basis closest to X_0 (V Q, Q the orthogonal polar factor of V^T X_0; for p = 1 the
    sign with <x_0, x*> > 0), f* = -(lambda_1 + ... + lambda_p). The runner's ``dist_sq`` = ||X - x*||^2
    depends on the basis (an iterate may converge to another basis of the same subspace); the
    basis-invariant metrics are ``subspace_error`` = ||X X^T - X* X*^T||_F^2 / 2 (for p = 1 SpherePCA's
    ``eig_error``) and ``stiefel_error`` = ||X^T X - I||_F.
    """

    name = "stiefel_pca"
    convex = False

    def __init__(self, Z: torch.Tensor, p: int, x0: torch.Tensor | None = None, dtype=torch.float64,
                 device="cpu"):
        super().__init__(dtype, device)
        Z = torch.as_tensor(Z)
        if Z.ndim != 3 or Z.shape[1] < 1 or Z.shape[2] < 2:
            raise ValueError(f"stiefel_pca: expected samples Z of shape (n, m, d) with d >= 2, got {tuple(Z.shape)}")
        dim = Z.shape[2]
        if not 1 <= int(p) < dim:
            raise ValueError(f"stiefel_pca: the subspace dimension p must be in [1, {dim - 1}] for samples of "
                             f"dimension {dim}, got p={p}")
        self.Z = Z.to(self.device, dtype)
        self.n, M, self.dim = self.Z.shape
        self.p = int(p)
        self.d = self.dim * self.p
        self.m = torch.full((self.n,), M, dtype=torch.long, device=self.device)
        self.manifold = Stiefel(self.dim, self.p)
        if x0 is None:
            x0 = self.manifold.random_point(generator=generator(0, "data"))
        x0 = torch.as_tensor(x0, dtype=torch.float64).reshape(-1)
        if x0.shape != (self.d,) or not self.manifold.contains(x0, 1e-12):
            raise ValueError(f"stiefel_pca: the initial point must be a {self.dim} x {self.p} matrix with "
                             "orthonormal columns (X^T X = I)")
        self._x0 = x0.to(self.device, dtype)

    @classmethod
    def generate(cls, n: int = 1, m: int = 200, d: int = 10, p: int = 2, gap: float = 0.3, seed: int = 0,
                 dtype=torch.float64, device="cpu") -> StiefelPCA:
        """Gaussian samples z ~ N(0, Q diag(lambda) Q^T) (Q random orthogonal) with
        lambda_j = 1 + (p - j) / p for j <= p (from 2 - 1 / p down to 1) and
        lambda_j = (1 - gap) 10^{-(j - p - 1)/(d - p - 1)} for j > p: a population eigengap
        1 - lambda_{p+1} / lambda_p = ``gap``. For p = 1 the samples and the initial point are those of
        ``SpherePCA.generate`` with the same arguments (the same random draws)."""
        if not 0 < gap < 1:
            raise ValueError(f"stiefel_pca: gap must be in (0, 1), got {gap}")
        if min(n, m) < 1 or d < 2 or not 1 <= p < d:
            raise ValueError(f"stiefel_pca needs n, m >= 1, d >= 2 and 1 <= p < d, got n={n}, m={m}, d={d}, p={p}")
        g = generator(seed, "data")
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        lam = torch.empty(d, dtype=torch.float64)
        lam[:p] = 1.0 + (p - 1 - torch.arange(p, dtype=torch.float64)) / p
        lam[p:] = (1 - gap) * torch.logspace(0, -1, d - p, dtype=torch.float64)
        Z = torch.randn(n, m, d, generator=g, dtype=torch.float64) * lam.sqrt() @ Q.T
        x0 = Stiefel(d, p).random_point(generator=g)
        return cls(Z, p, x0, dtype=dtype, device=device)

    # ---- oracles (Riemannian gradients) ----------------------------------------------------------
    def _frames(self, X: torch.Tensor) -> torch.Tensor:
        return X.reshape(X.shape[0], self.dim, self.p)

    def _rgrad(self, X: torch.Tensor, Zr: torch.Tensor) -> torch.Tensor:
        Xm = self._frames(X)
        eg = torch.bmm(Zr.transpose(1, 2), torch.bmm(Zr, Xm)) * (-2.0 / Zr.shape[1])  # (r, dim, p)
        XtG = torch.bmm(Xm.transpose(1, 2), eg)
        return (eg - torch.bmm(Xm, 0.5 * (XtG + XtG.transpose(1, 2)))).reshape(X.shape)

    def _losses(self, X, rows):
        Zr = self.Z if rows is None else self.Z[rows]
        return -torch.bmm(Zr, self._frames(X)).pow(2).sum(-1).mean(1)

    # ---- constants -------------------------------------------------------------------------------
    @property
    def eigengap(self) -> float:
        """lambda_p - lambda_{p+1} of C."""
        w = self._spectrum[0]
        return float(w[-self.p] - w[-self.p - 1])

    @property
    def mu_at_solution(self) -> float:
        """2 (lambda_p - lambda_{p+1}): the Riemannian Hessian's smallest eigenvalue at x* off the
        directions X* Omega along which f is constant."""
        return 2.0 * self.eigengap

    @cached_property
    def zeta(self) -> float:
        return self.manifold.zeta(self.manifold.diameter)

    @cached_property
    def _solution(self):
        w, V = self._spectrum
        Vp = V[:, ::-1][:, :self.p]  # the top p eigenvectors, largest first
        A = Vp.T @ self._x0.to(torch.float64).cpu().numpy().reshape(self.dim, self.p)
        u, _, vt = np.linalg.svd(A)
        x = torch.as_tensor((Vp @ (u @ vt)).reshape(-1).copy(), dtype=torch.float64)
        return x.to(self.device, self.dtype), -float(w[-self.p:].sum())

    def _fingerprint_parts(self):
        return [self.Z, self.p]

    def initial_point(self):
        return self._x0.clone()

    def subspace_error(self, x: torch.Tensor) -> torch.Tensor:
        """||X X^T - X* X*^T||_F^2 / 2 (batched over leading dimensions of x)."""
        X = x.to(torch.float64).reshape(*x.shape[:-1], self.dim, self.p)
        Xs = self.x_star.to(torch.float64).reshape(self.dim, self.p)
        P = X @ X.transpose(-1, -2) - Xs @ Xs.T
        return 0.5 * P.pow(2).sum((-1, -2))

    def dist_sq(self, X):
        """min_Q ||X - X* Q||_F^2 over orthogonal p x p Q: the distance to the minimizers (every
        orthonormal basis X* Q of the leading eigenspace), ||X||^2 + ||X*||^2 - 2 ||X*^T X||_* by the
        orthogonal Procrustes problem (the nuclear norm: the sum of the singular values)."""
        M = X.reshape(*X.shape[:-1], self.dim, self.p)
        Xs = self.x_star.reshape(self.dim, self.p)
        nuclear = torch.linalg.svdvals(Xs.T @ M).sum(-1)
        return X.pow(2).sum(-1) + Xs.pow(2).sum() - 2 * nuclear

    def extra_metrics(self, x):
        return {"subspace_error": float(self.subspace_error(x)),
                "stiefel_error": float(self.manifold.orthonormality_error(x.to(torch.float64)))}


class KarcherSPD(Problem):
    """The Karcher mean of SPD matrices A_ij (k x k): minimize f(X) = (1/(n m)) sum_ij d^2(X, A_ij) / 2
    over P(k) with the affine-invariant metric; X is flattened to d = k^2 entries.

    Riemannian gradient: grad f_ij(X) = -Log_X(A_ij) = -S logm(S^{-1} A_ij S^{-1}) S, S = X^{1/2}
    (one batched ``eigh`` per client row and sample). P(k) is a Hadamard manifold with sectional
    curvature in [-1/2, 0]: d^2(., A) / 2 is geodesically 1-strongly convex (mu = 1), and its Hessian is
    bounded by zeta(d(X, A)) (Zhang & Sra 2016, Lemma 5). On the domain B = the ball around x* of
    radius R = max(max_ij d(x*, A_ij), d(x_0, x*)) (it holds the data and the initial point; the
    bound assumes the iterates stay in it, which is not enforced), every f_ij is geodesically
    L-smooth with L = zeta = zeta(-1/2, 2 R) (also L_i and every L_ij). x* is solved by Riemannian
    gradient descent with stepsize 1 (X <- Exp_X(mean_ij Log_X(A_ij))) to ||grad f|| <= 1e-13; when
    the A_ij commute, x* = expm(mean_ij logm(A_ij)) exactly (the log-Euclidean mean, tested). Metrics
    besides f - f*: ``riem_dist_sq`` = d^2(X, x*), ``min_eig`` = the smallest eigenvalue of X.
    """

    name = "karcher_spd"
    convex = False  # geodesically convex; x* is solved here, not by Newton's method in R^d

    def __init__(self, A: torch.Tensor, x0: torch.Tensor | None = None, dtype=torch.float64, device="cpu"):
        super().__init__(dtype, device)
        A = torch.as_tensor(A)
        if A.ndim != 4 or A.shape[2] != A.shape[3]:
            raise ValueError(f"karcher_spd: expected matrices A of shape (n, m, k, k), got {tuple(A.shape)}")
        A = 0.5 * (A + A.transpose(-1, -2)).to(torch.float64)
        if not bool((torch.linalg.eigvalsh(A) > 0).all()):
            raise ValueError("karcher_spd: every A_ij must be positive definite")
        self.k = A.shape[-1]
        self.manifold = SPD(self.k)
        self.A = A.to(self.device, dtype)
        self.n, M = A.shape[:2]
        self.d = self.k * self.k
        self.m = torch.full((self.n,), M, dtype=torch.long, device=self.device)
        x0 = self.manifold.identity() if x0 is None else torch.as_tensor(x0, dtype=torch.float64).reshape(-1)
        if x0.shape != (self.d,) or not self.manifold.contains(x0):
            raise ValueError(f"karcher_spd: the initial point must be an SPD matrix of size {self.k}")
        self._x0 = x0.to(self.device, dtype)

    @classmethod
    def generate(cls, n: int = 1, m: int = 100, k: int = 3, spread: float = 0.5, commuting: bool = False,
                 seed: int = 0, dtype=torch.float64, device="cpu") -> KarcherSPD:
        """A_ij = C^{1/2} expm(spread G_ij) C^{1/2} around a random center C (G_ij symmetric with
        standard normal entries); ``commuting``: A_ij = Q diag(exp(c + spread g_ij)) Q^T with one Q.
        The initial point is the identity."""
        if spread <= 0 or min(n, m, k) < 1:
            raise ValueError(f"karcher_spd needs spread > 0 and n, m, k >= 1, got {spread}, {n}, {m}, {k}")
        g = generator(seed, "data")
        P = SPD(k)
        if commuting:
            Q, _ = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))
            c = torch.randn(k, generator=g, dtype=torch.float64)
            w = torch.exp(c + spread * torch.randn(n, m, k, generator=g, dtype=torch.float64))
            A = (Q * w.unsqueeze(-2)) @ Q.T
        else:
            C = P.mat(P.random_point(generator=g, scale=0.5))
            S = sym_function(C, torch.sqrt)
            G = torch.randn(n, m, k, k, generator=g, dtype=torch.float64)
            A = S @ sym_function(spread * (G + G.transpose(-1, -2)) / 2, torch.exp) @ S
        return cls(A, dtype=dtype, device=device)

    # ---- oracles ---------------------------------------------------------------------------------
    def _log_terms(self, X: torch.Tensor, Ar: torch.Tensor):
        """S = X^{1/2} (r, k, k) and logm(S^{-1} A S^{-1}) (r, b, k, k) for the rows' matrices Ar."""
        S, Si = self.manifold._roots(X)
        M = Si.unsqueeze(1) @ Ar @ Si.unsqueeze(1)
        return S, sym_function(0.5 * (M + M.transpose(-1, -2)), torch.log)

    def _rgrad(self, X, Ar):
        S, Lg = self._log_terms(X, Ar)
        G = -(S @ Lg.mean(1) @ S)
        return self.manifold.flat(0.5 * (G + G.transpose(-1, -2)))

    def _grads(self, X, rows):
        return self._rgrad(X, self.A if rows is None else self.A[rows])

    def _sample_grads(self, X, rows, idx):
        return self._rgrad(X, _gather(self.A, rows, idx))

    def _losses(self, X, rows):
        return self._loss_rows(X, self.A if rows is None else self.A[rows])

    def _loss_rows(self, X, Ar):
        _, Si = self.manifold._roots(X)
        M = Si.unsqueeze(1) @ Ar @ Si.unsqueeze(1)
        w = torch.linalg.eigvalsh(0.5 * (M + M.transpose(-1, -2)))
        return 0.5 * w.log().pow(2).sum(-1).mean(1)

    # ---- solution and constants --------------------------------------------------------------------
    @cached_property
    def _solution(self):
        P = self.manifold
        A = self.A.to(torch.float64).cpu().reshape(-1, self.k, self.k).unsqueeze(0)
        x = self._x0.to(torch.float64).cpu().reshape(1, -1)
        for _ in range(1000):
            g = self._rgrad(x, A)  # the mean gradient of all n m matrices
            if float(P.norm(x, g).max()) <= 1e-13:
                break
            x = P.exp(x, -g)
        return x[0].to(self.device, self.dtype), float(self._loss_rows(x, A)[0])

    @cached_property
    def radius(self) -> float:
        """R = max(max_ij d(x*, A_ij), d(x_0, x*)): the domain is the ball B(x*, R)."""
        P = self.manifold
        xs = self.x_star.to(torch.float64).cpu()
        r = float(P.dist(xs, P.flat(self.A.to(torch.float64).cpu())).max())
        return max(r, float(P.dist(xs, self._x0.to(torch.float64).cpu())))

    @cached_property
    def zeta(self) -> float:
        return self.manifold.zeta(2.0 * self.radius)

    def _smoothness(self):
        return torch.full((self.n,), self.zeta, dtype=torch.float64)

    def _global_smoothness(self):
        return self.zeta

    def _mu(self):
        return 1.0

    @property
    def L_samples(self) -> torch.Tensor:
        return torch.full((self.n, int(self.m[0])), self.zeta, dtype=torch.float64)

    @property
    def L_sample_max(self) -> float:
        return self.zeta

    def _fingerprint_parts(self):
        return [self.A]

    def initial_point(self):
        return self._x0.clone()

    def extra_metrics(self, x):
        P = self.manifold
        x64 = x.to(torch.float64)
        return {"riem_dist_sq": float(P.dist(x64, self.x_star.to(torch.float64))) ** 2,
                "min_eig": float(torch.linalg.eigvalsh(P.mat(x64)).min())}

    @property
    def gradient_flops(self) -> float:
        return 30.0 * self.n * float(self.m.max()) * self.k ** 3

