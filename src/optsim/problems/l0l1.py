"""An (L0, L1)-smooth federated test problem: sums of shifted hyperbolic cosines.

Client i holds m samples j, and

    f_i(x) = (1/m) sum_j sum_k a_ijk (cosh(x_k - c_ijk) - 1),      a_ijk > 0,

a strongly convex, separable function whose curvature grows like its gradient: it is not
L-smooth for any L (the Hessian is unbounded), but (L0, L1)-smooth in the sense of Zhang, He, Sra,
Jadbabaie (2020), ||hess f(x)|| <= L0 + L1 ||grad f(x)||:

* a sample f_ij: per coordinate a cosh(u) <= a + |a sinh(u)|, so L0 = max_k a_ijk, L1 = 1
  (:attr:`L0_samples`);
* a client f_i: where all samples' u_jk = x_k - c_ijk share a sign the same bound holds with the
  mean weight; between the centers |u_jk| <= D_ik (the spread of the c_ijk), so
  L0_i = max_k mean_j a_ijk cosh(D_ik), L1 = 1 (:attr:`L0_i`, :attr:`L1`); f = mean_i f_i likewise
  with the spread over all clients (:attr:`L0`).

Gradient descent with a constant stepsize diverges from far starting points (one step of length
~ sinh(distance) overshoots into a region of astronomically larger curvature), while clipped or
normalized steps converge: the (L0, L1) test problem of the L12 paper's setting. ``L_i`` / ``L``
report the curvature at the solution x* (the functions are not globally smooth); ``mu`` is exact
(cosh'' >= 1): mu = min_k mean_ij a_ijk.
"""
from __future__ import annotations

import torch

from ..rng import generator
from .base import Problem

__all__ = ["CoshProblem"]


class CoshProblem(Problem):
    """(L0, L1)-smooth sums of shifted cosh: f_i(x) = (1/m) sum_j sum_k a_ijk (cosh(x_k - c_ijk) - 1)."""

    name = "l0l1_cosh"

    def __init__(self, a: torch.Tensor, c: torch.Tensor, *, dtype=torch.float64, device="cpu"):
        super().__init__(dtype, device)
        if a.ndim != 3 or a.shape != c.shape:
            raise ValueError(f"l0l1_cosh: expected weights a and centers c of one shape (n, m, d), got "
                             f"{tuple(a.shape)} and {tuple(c.shape)}")
        if bool((a <= 0).any()):
            raise ValueError("l0l1_cosh: the weights a_ijk must be positive")
        self.a = a.to(self.device, dtype)
        self.c = c.to(self.device, dtype)
        self.n, M, self.d = a.shape
        self.m = torch.full((self.n,), M, dtype=torch.long, device=self.device)

    @classmethod
    def generate(cls, n: int, d: int, m: int = 4, center: float = 8.0, spread: float = 0.3,
                 noise: float = 0.2, weight_range: tuple[float, float] = (0.5, 2.0), seed: int = 0,
                 dtype=torch.float64, device="cpu") -> "CoshProblem":
        """Centers c_ijk = center + spread * z_ik + noise * e_ijk (z, e standard normal: clients differ
        by ``spread``, their samples by ``noise``), weights a_ijk uniform in ``weight_range``."""
        g = generator(seed, "data")
        lo, hi = weight_range
        a = lo + (hi - lo) * torch.rand(n, m, d, generator=g, dtype=torch.float64)
        c = (center + spread * torch.randn(n, 1, d, generator=g, dtype=torch.float64)
             + noise * torch.randn(n, m, d, generator=g, dtype=torch.float64))
        return cls(a, c, dtype=dtype, device=device)

    def _data(self, rows):
        return (self.a, self.c) if rows is None else (self.a[rows], self.c[rows])

    def _grads(self, X, rows):
        a, c = self._data(rows)
        return (a * torch.sinh(X[:, None, :] - c)).mean(1)

    def _losses(self, X, rows):
        a, c = self._data(rows)
        return (a * (torch.cosh(X[:, None, :] - c) - 1)).sum(-1).mean(1)

    def _sample_grads(self, X, rows, idx):
        a, c = self._data(rows)
        ar = torch.arange(a.shape[0], device=a.device)[:, None]
        return (a[ar, idx] * torch.sinh(X[:, None, :] - c[ar, idx])).mean(1)

    def _hessians(self, X, rows):
        a, c = self._data(rows)
        return torch.diag_embed((a * torch.cosh(X[:, None, :] - c)).mean(1))

    # constants
    def _curvature_at_solution(self) -> torch.Tensor:
        x = self.x_star.to(torch.float64)
        a, c = self.a.to(torch.float64), self.c.to(torch.float64)
        return (a * torch.cosh(x - c)).mean(1)  # (n, d) diagonal Hessians at x*

    def _smoothness(self):
        return self._curvature_at_solution().max(1).values

    def _global_smoothness(self):
        return float(self._curvature_at_solution().mean(0).max())

    def _mu(self):
        return float(self.a.to(torch.float64).mean((0, 1)).min())

    convex = True

    @property
    def L0_i(self) -> torch.Tensor:
        """(n,) L0 of the clients' f_i (with L1 = 1): max_k mean_j a_ijk cosh(D_ik)."""
        a, c = self.a.to(torch.float64).cpu(), self.c.to(torch.float64).cpu()
        D = c.max(1).values - c.min(1).values
        return (a.mean(1) * torch.cosh(D)).max(1).values

    @property
    def L0(self) -> float:
        """L0 of f = mean_i f_i (with L1 = 1): max_k mean_ij a_ijk cosh(D_k), D_k the spread of all c_ijk."""
        a, c = self.a.to(torch.float64).cpu(), self.c.to(torch.float64).cpu()
        D = c.amax((0, 1)) - c.amin((0, 1))
        return float((a.mean((0, 1)) * torch.cosh(D)).max())

    @property
    def L0_samples(self) -> float:
        """L0 of the single-sample functions f_ij (with L1 = 1): max a_ijk."""
        return float(self.a.max())

    L1 = 1.0

    @property
    def L0_L1(self) -> dict:
        return {"L0": self.L0, "L0_i": self.L0_i, "L0_samples": self.L0_samples, "L1": self.L1}

    @property
    def gradient_flops(self):
        return 4.0 * self.n * float(self.m.max()) * self.d

    def _fingerprint_parts(self):
        return [self.a, self.c]
