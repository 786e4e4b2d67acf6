"""Constrained targets for mirrored samplers, with exact moments and exact samplers.

* :class:`Dirichlet` on the probability simplex, in the coordinates ``theta`` in R^d of the first
  d of the ``K = d + 1`` components (``theta_K = 1 - sum theta``), the domain
  ``{theta > 0, sum theta < 1}``: ``F = -sum_k (alpha_k - 1) log theta_k``.
* :class:`TruncatedGaussianBox`: independent ``N(m, s^2)`` coordinates truncated to ``[a, b]``
  (a box), ``F = sum (x - m)^2 / (2 s^2)`` on the box; moments from SciPy's ``truncnorm``.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Target

__all__ = ["Dirichlet", "TruncatedGaussianBox"]


class Dirichlet(Target):
    """Dirichlet(alpha) on the simplex, in the coordinates of its first ``len(alpha) - 1`` components."""

    name = "dirichlet"

    def __init__(self, alpha, dtype=torch.float64):
        self.dtype = dtype
        self.alpha = torch.as_tensor(alpha, dtype=dtype).reshape(-1)
        if self.alpha.numel() < 2 or (self.alpha <= 0).any():
            raise ValueError("Dirichlet alpha needs at least 2 entries, all > 0")
        self.d = self.alpha.numel() - 1

    @staticmethod
    def full(X: torch.Tensor) -> torch.Tensor:
        """The K = d + 1 components (k, K) of points given by their first d."""
        return torch.cat([X, 1.0 - X.sum(1, keepdim=True)], 1)

    def potential(self, X):
        return -(torch.log(self.full(self._check(X))) * (self.alpha - 1.0)).sum(1)

    def grad_potential(self, X):
        T = self.full(self._check(X))
        g = (self.alpha - 1.0) / T
        return -(g[:, :-1] - g[:, -1:])

    @property
    def mean(self):
        return (self.alpha / self.alpha.sum())[:-1]

    @property
    def cov(self):
        A = self.alpha.sum()
        a = (self.alpha / A)[:-1]
        return (torch.diag(a) - torch.outer(a, a)) / (A + 1.0)

    def sample(self, n, generator):
        # Dirichlet as normalized Gamma(alpha_k, 1) draws (torch's Dirichlet takes no generator)
        G = _gamma(self.alpha, n, generator)
        return (G / G.sum(1, keepdim=True))[:, :-1]

    def contains(self, X):
        return (X > 0).all(1) & (X.sum(1) < 1)


def _gamma(alpha: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Gamma(alpha_k, 1) draws (n, K) from ``generator`` (NumPy's sampler seeded from it)."""
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.gamma(alpha.cpu().numpy(), size=(n, alpha.numel())), dtype=alpha.dtype)


class TruncatedGaussianBox(Target):
    """Independent ``N(m_j, s_j^2)`` coordinates truncated to ``[a_j, b_j]``."""

    name = "truncated_gaussian_box"

    def __init__(self, mean, std, low, high, dtype=torch.float64):
        self.dtype = dtype
        self.m = torch.as_tensor(mean, dtype=dtype).reshape(-1)
        self.d = self.m.numel()
        bc = lambda v: torch.as_tensor(v, dtype=dtype).reshape(-1).expand(self.d).clone()
        self.s, self.a, self.b = bc(std), bc(low), bc(high)
        if (self.s <= 0).any() or (self.a >= self.b).any():
            raise ValueError("need std > 0 and low < high in every coordinate")

    def potential(self, X):
        return (0.5 * ((self._check(X) - self.m) / self.s) ** 2).sum(1)

    def grad_potential(self, X):
        return (self._check(X) - self.m) / self.s ** 2

    def _dist(self):
        from scipy.stats import truncnorm

        m, s = self.m.numpy(), self.s.numpy()
        return truncnorm((self.a.numpy() - m) / s, (self.b.numpy() - m) / s, loc=m, scale=s)

    @property
    def mean(self):
        return torch.as_tensor(self._dist().mean(), dtype=self.dtype)

    @property
    def cov(self):
        return torch.diag(torch.as_tensor(self._dist().var(), dtype=self.dtype))

    def sample(self, n, generator):
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        x = self._dist().rvs(size=(n, self.d), random_state=np.random.default_rng(seed))
        return torch.as_tensor(x, dtype=self.dtype)

    def contains(self, X):
        return ((X > self.a) & (X < self.b)).all(1)
