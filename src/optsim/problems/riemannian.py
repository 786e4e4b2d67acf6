"""Finite sums on Riemannian manifolds, clients and samples as batch dimensions.

The test-beds of Riemannian variance reduction (Zhang, Reddi, Sra 2016, "Riemannian SVRG: fast
stochastic optimization on Riemannian manifolds", Sec. 5; Sato, Kasai, Mishra 2019, "Riemannian
stochastic variance reduced gradient algorithm with retraction and vector transport", Sec. 6):

* :class:`SpherePCA` -- the leading eigenvector: f_ij(x) = -(z_ij^T x)^2 on the unit sphere;
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

from ..manifolds import SPD, Sphere
from ..manifolds.spd import sym_function
from ..rng import generator
from .base import Problem

__all__ = ["KarcherSPD", "SpherePCA"]


def _gather(Z: torch.Tensor, rows: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
    """Samples Z[c_i, idx[i, s]] of the clients c = rows (None: all) for local indices idx (r, b):
    (r, b, ...), gathered directly (the clients' data are not copied first)."""
    c = torch.arange(Z.shape[0], device=Z.device) if rows is None else rows
    return Z[c[:, None], idx]


class SpherePCA(Problem):
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

    def _grads(self, X, rows):
        return self._rgrad(X, self.Z if rows is None else self.Z[rows])

    def _sample_grads(self, X, rows, idx):
        return self._rgrad(X, _gather(self.Z, rows, idx))

    def _losses(self, X, rows):
        Zr = self.Z if rows is None else self.Z[rows]
        return -torch.bmm(Zr, X.unsqueeze(-1)).squeeze(-1).pow(2).mean(1)

    # ---- constants -------------------------------------------------------------------------------
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

    def extra_metrics(self, x):
        c = float(x.to(torch.float64) @ self.x_star.to(torch.float64))
        return {"eig_error": 1.0 - c * c, "sphere_error": abs(float(x.to(torch.float64).norm()) - 1.0)}


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

