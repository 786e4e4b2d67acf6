"""Gaussian and Gaussian-mixture targets with exact moments and exact samplers."""
from __future__ import annotations

import math

import torch

from .base import ClientTarget, Target

__all__ = ["Gaussian", "GaussianClients", "GaussianMixture"]


def _as_cov(cov, d: int, dtype) -> torch.Tensor:
    C = torch.as_tensor(cov, dtype=dtype)
    if C.ndim == 0:
        C = C * torch.eye(d, dtype=dtype)
    elif C.ndim == 1:
        C = torch.diag(C)
    if C.shape != (d, d):
        raise ValueError(f"covariance must be a scalar, a length-{d} diagonal or a {d} x {d} matrix, got {tuple(C.shape)}")
    if not torch.allclose(C, C.T, rtol=1e-10, atol=1e-12):
        raise ValueError("covariance must be symmetric")
    try:
        torch.linalg.cholesky(C)
    except RuntimeError:
        raise ValueError("covariance must be positive definite (its Cholesky factorization failed)") from None
    return C


class Gaussian(Target):
    """``N(mean, cov)`` with any positive definite covariance (a scalar, a diagonal or a matrix):
    ``F(x) = (x - m)^T P (x - m) / 2`` with ``P = cov^-1``."""

    name = "gaussian"

    def __init__(self, mean, cov=1.0, dtype=torch.float64):
        self.dtype = dtype
        self.m = torch.as_tensor(mean, dtype=dtype).reshape(-1)
        self.d = self.m.numel()
        self.C = _as_cov(cov, self.d, dtype)
        self.L = torch.linalg.cholesky(self.C)
        self.P = torch.cholesky_inverse(self.L)
        self.P = 0.5 * (self.P + self.P.T)

    def potential(self, X):
        Z = self._check(X) - self.m
        return 0.5 * ((Z @ self.P) * Z).sum(1)

    def grad_potential(self, X):
        return (self._check(X) - self.m) @ self.P

    def log_density(self, X):
        """Normalized log density."""
        return -self.potential(X) - 0.5 * self.d * math.log(2 * math.pi) - torch.log(torch.diagonal(self.L)).sum()

    @property
    def mean(self):
        return self.m

    @property
    def cov(self):
        return self.C

    def sample(self, n, generator):
        Z = torch.randn(n, self.d, generator=generator, dtype=self.dtype)
        return self.m + Z @ self.L.T


class GaussianMixture(Target):
    """``sum_k w_k N(m_k, C_k)``: ``F = -log sum_k w_k N(x; m_k, C_k)``, its gradient
    ``sum_k r_k(x) P_k (x - m_k)`` with the responsibilities r_k, all components batched."""

    name = "gaussian_mixture"

    def __init__(self, weights, means, covs=1.0, dtype=torch.float64):
        self.dtype = dtype
        self.w = torch.as_tensor(weights, dtype=dtype).reshape(-1)
        self.M = torch.as_tensor(means, dtype=dtype)
        if self.M.ndim != 2 or self.M.shape[0] != self.w.numel():
            raise ValueError(f"means must be a ({self.w.numel()}, d) array, one row per weight, got {tuple(self.M.shape)}")
        if (self.w <= 0).any():
            raise ValueError("mixture weights must be > 0")
        self.w = self.w / self.w.sum()
        K, self.d = self.M.shape
        if not isinstance(covs, (list, tuple)):
            c = torch.as_tensor(covs, dtype=dtype)
            covs = list(c) if c.ndim == 3 else [c] * K  # (K, d, d) per component, else one shared
        if len(covs) != K:
            raise ValueError(f"give one covariance per component ({K}), got {len(covs)}")
        self.C = torch.stack([_as_cov(c, self.d, dtype) for c in covs])
        self.L = torch.linalg.cholesky(self.C)
        self.P = torch.cholesky_inverse(self.L)
        self.logw = torch.log(self.w) - torch.log(torch.diagonal(self.L, dim1=1, dim2=2)).sum(1) \
            - 0.5 * self.d * math.log(2 * math.pi)

    def _parts(self, X):
        Z = self._check(X)[None, :, :] - self.M[:, None, :]          # (K, k, d)
        PZ = torch.einsum("kab,knb->kna", self.P, Z)                 # (K, k, d)
        logc = self.logw[:, None] - 0.5 * (PZ * Z).sum(2)            # (K, k)
        return PZ, logc

    def potential(self, X):
        _, logc = self._parts(X)
        return -torch.logsumexp(logc, 0)

    def log_density(self, X):
        return -self.potential(X)

    def grad_potential(self, X):
        PZ, logc = self._parts(X)
        r = torch.softmax(logc, 0)                                   # responsibilities (K, k)
        return (r[:, :, None] * PZ).sum(0)

    @property
    def mean(self):
        return self.w @ self.M

    @property
    def cov(self):
        m = self.mean
        second = (self.w[:, None, None] * (self.C + self.M[:, :, None] * self.M[:, None, :])).sum(0)
        return second - torch.outer(m, m)

    def sample(self, n, generator):
        comp = torch.multinomial(self.w, n, replacement=True, generator=generator)
        Z = torch.randn(n, self.d, generator=generator, dtype=self.dtype)
        return self.M[comp] + torch.einsum("nab,nb->na", self.L[comp], Z)


class GaussianClients(ClientTarget):
    """A Gaussian posterior split across n heterogeneous clients:
    ``F_i(x) = (x - b_i)^T A_i (x - b_i) / 2`` (A_i symmetric positive semidefinite, their sum
    definite), so ``pi ∝ exp(-sum_i F_i)`` is ``N(m, P^-1)`` with ``P = sum_i A_i`` and
    ``m = P^-1 sum_i A_i b_i``; every client's gradient at k points is one batched product (n, k, d)."""

    name = "gaussian_clients"

    def __init__(self, A, b, dtype=torch.float64):
        self.dtype = dtype
        self.A = torch.as_tensor(A, dtype=dtype)
        self.b = torch.as_tensor(b, dtype=dtype)
        if self.A.ndim != 3 or self.A.shape[1] != self.A.shape[2] or self.b.shape != self.A.shape[:2]:
            raise ValueError(f"need A of shape (n, d, d) and b of shape (n, d), got {tuple(self.A.shape)} and {tuple(self.b.shape)}")
        self.n, self.d = self.b.shape
        self.P = self.A.sum(0)
        self.gauss = Gaussian(torch.linalg.solve(self.P, torch.einsum("nab,nb->a", self.A, self.b)),
                              torch.linalg.inv(self.P), dtype)

    @classmethod
    def random(cls, n: int, d: int, spread: float = 1.0, eig_range=(0.5, 2.0), seed: int = 0, dtype=torch.float64):
        """n clients with random eigenbases, eigenvalues log-spaced in ``eig_range`` / n, centres
        b_i ~ N(0, spread^2 I): heterogeneous clients whose sum has eigenvalues in ``eig_range``."""
        g = torch.Generator().manual_seed(seed)
        Q = torch.linalg.qr(torch.randn(n, d, d, generator=g, dtype=dtype)).Q
        lam = torch.logspace(math.log10(eig_range[0]), math.log10(eig_range[1]), d, dtype=dtype) / n
        A = (Q * lam) @ Q.transpose(1, 2)
        return cls(0.5 * (A + A.transpose(1, 2)), spread * torch.randn(n, d, generator=g, dtype=dtype), dtype)

    def client_potentials(self, X):
        Z = self._check(X)[None] - self.b[:, None, :]
        return 0.5 * (torch.einsum("nab,nkb->nka", self.A, Z) * Z).sum(2)

    def client_grad_potentials(self, X):
        Z = self._check(X)[None] - self.b[:, None, :]
        return torch.einsum("nab,nkb->nka", self.A, Z)

    @property
    def L(self) -> float:
        """Smoothness constant of F: the largest eigenvalue of P."""
        return float(torch.linalg.eigvalsh(self.P)[-1])

    @property
    def mean(self):
        return self.gauss.mean

    @property
    def cov(self):
        return self.gauss.cov

    def sample(self, n, generator):
        return self.gauss.sample(n, generator)

    def ula_stationary_cov(self, step: float) -> torch.Tensor:
        """Covariance of the unadjusted Langevin algorithm's stationary law with step h for this
        target: ``Sigma_h = P^-1 (I - h P / 2)^-1`` (it solves Sigma = (I - hP) Sigma (I - hP) + 2h I);
        its mean is m exactly. Needs h < 2 / L."""
        I = torch.eye(self.d, dtype=self.dtype)
        return torch.linalg.inv(self.P @ (I - 0.5 * step * self.P))
