"""Quadratic problems with exactly controlled constants.

f_i(x) = 1/2 x^T A_i x - b_i^T x, with A_i = Q diag(lambda * s_i) Q^T: ``lambda`` is geometric
between ``mu`` and ``L`` and the client scalings s_i average to 1 over clients, so the mean
Hessian A = Q diag(lambda) Q^T has exactly the requested L and mu. ``heterogeneity`` in
[0, 0.5) spreads the s_i (0 = identical Hessians) and the clients' linear terms differ by
``heterogeneity * ||b||`` so that each client's minimizer differs from the global one.
A stochastic oracle adds Gaussian noise of standard deviation ``noise / sqrt(batch)``.
"""
from __future__ import annotations

import math

import torch

from ..rng import generator
from .base import Problem

__all__ = ["Quadratic"]


class Quadratic(Problem):
    """Quadratics f_i(x) = x^T A_i x / 2 - b_i^T x with exactly controlled L, mu and heterogeneity."""

    name = "quadratic"

    def __init__(self, A: torch.Tensor, b: torch.Tensor, *, noise: float = 0.0, dtype=torch.float64,
                 device="cpu"):
        super().__init__(dtype, device)
        if A.ndim != 3 or A.shape[1] != A.shape[2] or b.shape != A.shape[:2]:
            raise ValueError(f"quadratic: expected A (n, d, d) and b (n, d), got {tuple(A.shape)}, {tuple(b.shape)}")
        self.A = (0.5 * (A + A.transpose(1, 2))).to(self.device, dtype)
        self.b = b.to(self.device, dtype)
        self.n, self.d = b.shape
        self.noise = float(noise)
        self.m = torch.ones(self.n, dtype=torch.long, device=self.device)

    @classmethod
    def generate(cls, n: int, d: int, L: float = 1.0, mu: float = 1e-2, heterogeneity: float = 0.0,
                 noise: float = 0.0, seed: int = 0, dtype=torch.float64, device="cpu") -> "Quadratic":
        """The seeded family described in the module docstring."""
        if not 0 < mu <= L:
            raise ValueError(f"quadratic needs 0 < mu <= L, got mu={mu}, L={L}")
        if not 0 <= heterogeneity < 0.5:
            raise ValueError(f"heterogeneity must be in [0, 0.5), got {heterogeneity}")
        g = generator(seed, "data")
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        lam = torch.logspace(math.log10(mu), math.log10(L), d, dtype=torch.float64)  # float64 ends (not float32)
        lam[0], lam[-1] = mu, L  # exactly the requested constants
        u = torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1
        s = 1 + heterogeneity * (u - u.mean(0, keepdim=True))
        if n == 1:
            s = torch.ones(1, d, dtype=torch.float64)
        A = torch.einsum("ij,nj,kj->nik", Q, lam * s, Q)
        x_true = torch.randn(d, generator=g, dtype=torch.float64)
        b = torch.einsum("nij,j->ni", A, x_true)
        shift = torch.randn(n, d, generator=g, dtype=torch.float64)
        shift = shift - shift.mean(0, keepdim=True)
        b = b + heterogeneity * b.norm(dim=1, keepdim=True) * shift / shift.norm(dim=1, keepdim=True).clamp_min(1e-30)
        return cls(A, b, noise=noise, dtype=dtype, device=device)

    def _data(self, rows):
        return (self.A, self.b) if rows is None else (self.A[rows], self.b[rows])

    def _grads(self, X, rows):
        A, b = self._data(rows)
        return torch.bmm(A, X.unsqueeze(-1)).squeeze(-1) - b

    def _grads_many(self, Xs):
        return torch.bmm(self.A, Xs.permute(1, 2, 0)).permute(2, 0, 1) - self.b

    def _losses(self, X, rows):
        A, b = self._data(rows)
        return 0.5 * (X * torch.bmm(A, X.unsqueeze(-1)).squeeze(-1)).sum(-1) - (b * X).sum(-1)

    def _point_losses(self, P, rows):
        """(m, k, d) -> (m, k): x^T A_i x / 2 - b_i^T x at k points per client, one bmm."""
        A, b = self._data(rows)
        return 0.5 * (P * torch.bmm(P, A)).sum(-1) - (P * b[:, None, :]).sum(-1)

    def _hessians(self, X, rows):
        return self._data(rows)[0].clone()

    def minibatch_grads(self, X, batch_size, generator, clients=None):
        """grad f_i + noise / sqrt(batch_size) * N(0, I): an unbiased stochastic oracle."""
        g = self.grads(X, clients)
        if self.noise > 0:
            g = g + self.noise / float(batch_size) ** 0.5 * torch.randn(
                g.shape, generator=generator, dtype=torch.float64).to(g)
        return g

    def noise_variance(self, batch_size: int = 1) -> float:
        """noise^2 d / batch_size: the variance of the additive Gaussian noise of one stochastic gradient."""
        return self.noise ** 2 * self.d / batch_size

    @property
    def mean_squared_smoothness(self) -> float:
        """0: the noise is additive (g(x; xi) - g(y; xi) = grad f_i(x) - grad f_i(y))."""
        return 0.0

    @property
    def additive_noise(self) -> bool:
        return True

    def subset(self, clients) -> "Quadratic":
        rows = torch.as_tensor(clients, dtype=torch.long, device=self.device)
        return Quadratic(self.A[rows], self.b[rows], noise=self.noise, dtype=self.dtype, device=self.device)

    @property
    def quadratic_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.A, self.b

    @property
    def local_mu(self) -> torch.Tensor:
        """lambda_min(A_i) of each client (0 when A_i is singular)."""
        return torch.linalg.eigvalsh(self.A.to(torch.float64))[:, 0].clamp_min(0).cpu()

    def sample_gradient_variance(self, x: torch.Tensor) -> float:
        """noise^2 d, the variance of one stochastic gradient (the same at every x)."""
        return float(self.noise) ** 2 * self.d

    def _smoothness(self):
        return torch.linalg.eigvalsh(self.A.to(torch.float64))[:, -1]

    def _global_smoothness(self):
        return float(torch.linalg.eigvalsh(self.A.to(torch.float64).mean(0))[-1])

    def _mu(self):
        ev = float(torch.linalg.eigvalsh(self.A.to(torch.float64).mean(0))[0])
        return ev if ev > 0 else None

    @property
    def convex(self):
        return self.mu is not None

    @property
    def gradient_flops(self):
        return 2.0 * self.n * self.d * self.d

    def _fingerprint_parts(self):
        return [self.A, self.b]

    def solve(self, tol=1e-12, max_iter=5):
        x = torch.linalg.solve(self.A.to(torch.float64).mean(0), self.b.to(torch.float64).mean(0))
        for _ in range(max_iter):  # iterative refinement to the float64 floor
            r = self.full_grad(x)
            if float(r.norm()) <= tol:
                break
            x = x - torch.linalg.solve(self.A.to(torch.float64).mean(0), r)
        return x
