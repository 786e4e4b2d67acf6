"""Quadratic min-max problems as variational inequalities, with a stochastic operator of any noise law.

min_x max_y  1/2 x^T A x + x^T B y - 1/2 y^T C y - a^T x + b^T y, with A, C symmetric positive
semidefinite, is the VI: find z* = (x*, y*) with F(z*) = 0 for the linear operator

    F(z) = M z - c,   M = [[A, B], [-B^T, C]],   c = (a, -b)      (z = (x, y), D = dx + dy).

M + M^T = 2 diag(A, C) >= 0, so F is monotone; mu-strongly monotone with mu = lambda_min(diag(A, C))
(:attr:`mu`); L-Lipschitz with L = ||M||_2 (:attr:`L`); when M is invertible and its symmetric part
is nonzero in the right directions, F is star-cocoercive: <F(z), z - z*> >= (1/ell) ||F(z)||^2 with
1/ell = lambda_min of the symmetric part of M^{-1} (:attr:`star_cocoercivity`; writing v = F(z) =
M (z - z*), <v, M^{-1} v> >= (1/ell) ||v||^2). The bilinear game A = C = 0 is monotone but neither
strongly monotone nor star-cocoercive (ell = inf).

Stochastic operator: F_xi(z) = F(z) + sigma xi, xi of i.i.d. coordinates of a
:class:`~optsim.problems.noise.NoiseLaw` (heavy-tailed laws have a bounded alpha-th moment only below
their tail index), as in the VI part of Sadiev et al. (2023), "High-probability bounds for stochastic
optimization and variational inequalities: the case of unbounded variance". Operators act on rows of
(R, D) batches: R independent runs at once.

Split over n clients (:meth:`QuadraticMinMax.client_operator`): F_i(z) = F(z) + e_i with offsets
e_i summing to zero, so F = (1/n) sum_i F_i keeps z*, while F_i(z*) = e_i != 0 (heterogeneous clients,
the setting of the distributed VI methods of Gorbunov et al. 2023/24, arXiv 2310.01860).
"""
from __future__ import annotations

import math

import torch

from ..rng import generator as seeded
from .noise import NoiseLaw, as_noise_law

__all__ = ["QuadraticMinMax"]


class QuadraticMinMax:
    """The VI of a quadratic min-max problem (module docstring)."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *,
                 noise: float = 0.0, noise_law: NoiseLaw | str | dict | None = None):
        dx, dy = B.shape
        if A.shape != (dx, dx) or C.shape != (dy, dy) or a.shape != (dx,) or b.shape != (dy,):
            raise ValueError(f"quadratic min-max: expected A ({dx}, {dx}), C ({dy}, {dy}), a ({dx},), b ({dy},) for "
                             f"B ({dx}, {dy}); got {tuple(A.shape)}, {tuple(C.shape)}, {tuple(a.shape)}, {tuple(b.shape)}")
        if noise < 0:
            raise ValueError(f"quadratic min-max: noise must be >= 0, got {noise}")
        f64 = torch.float64
        A, C = 0.5 * (A + A.T).to(f64), 0.5 * (C + C.T).to(f64)
        for name, S in (("A", A), ("C", C)):
            if float(torch.linalg.eigvalsh(S)[0]) < -1e-12 * max(1.0, float(S.abs().max())):
                raise ValueError(f"quadratic min-max: {name} must be positive semidefinite (a monotone operator)")
        self.dx, self.dy, self.D = dx, dy, dx + dy
        self.M = torch.cat([torch.cat([A, B.to(f64)], 1), torch.cat([-B.T.to(f64), C], 1)], 0)
        self.c = torch.cat([a.to(f64), -b.to(f64)])
        self.noise, self.noise_law = float(noise), as_noise_law(noise_law)

    @classmethod
    def bilinear(cls, d: int, seed: int = 0, noise: float = 0.0, noise_law=None,
                 spectrum: tuple[float, float] = (0.5, 1.0)) -> QuadraticMinMax:
        """min_x max_y x^T B y - a^T x + b^T y with B = U diag(s) V^T, s evenly spaced in ``spectrum``."""
        g = seeded(seed, "data")
        U, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        V, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        B = (U * torch.linspace(*spectrum, d, dtype=torch.float64)) @ V.T
        Z = torch.zeros(d, d, dtype=torch.float64)
        return cls(Z, B, Z, torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64),
                   noise=noise, noise_law=noise_law)

    @classmethod
    def strongly_monotone(cls, d: int, mu: float = 0.1, seed: int = 0, noise: float = 0.0, noise_law=None) -> QuadraticMinMax:
        """The bilinear game of :meth:`bilinear` plus (mu/2)||x||^2 - (mu/2)||y||^2: mu-strongly monotone."""
        p = cls.bilinear(d, seed)
        I = mu * torch.eye(d, dtype=torch.float64)
        return cls(I, p.M[:d, d:], I, p.c[:d], -p.c[d:], noise=noise, noise_law=noise_law)

    # ---- operators ---------------------------------------------------------------------------------
    def operator(self, Z: torch.Tensor) -> torch.Tensor:
        """F(z) for every row of Z (or for a vector)."""
        return Z @ self.M.T - self.c

    def stochastic_operator(self, Z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """F(z) + sigma xi, one independent draw per row."""
        F = self.operator(Z)
        if self.noise > 0:
            F = F + self.noise * self.noise_law.sample(F.shape, generator).to(F)
        return F

    def client_offsets(self, n: int, spread: float = 1.0, seed: int = 0) -> torch.Tensor:
        """(n, D) offsets e_i with sum_i e_i = 0 and sqrt(mean_i ||e_i||^2) = ``spread`` (seeded)."""
        if n < 1 or spread < 0:
            raise ValueError(f"client_offsets: needs n >= 1 and spread >= 0, got n={n}, spread={spread}")
        E = torch.randn(n, self.D, generator=seeded(seed, "partition"), dtype=torch.float64)
        E = E - E.mean(0)
        rms = float(E.pow(2).sum(1).mean().sqrt())
        return E * (spread / rms) if rms > 0 else E

    def client_operator(self, E: torch.Tensor):
        """The clients' stochastic operators: op(Z (R, D), generator) -> (R, n, D), row [r, i] =
        F(z_r) + e_i + sigma xi (an independent noise draw per run and client)."""
        E = E.to(torch.float64)

        def op(Z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            F = (self.operator(Z).unsqueeze(-2) + E).to(Z)
            if self.noise > 0:
                F = F + self.noise * self.noise_law.sample(F.shape, generator).to(F)
            return F

        return op

    # ---- constants ----------------------------------------------------------------------------------
    @property
    def z_star(self) -> torch.Tensor:
        return torch.linalg.solve(self.M, self.c)

    @property
    def L(self) -> float:
        return float(torch.linalg.matrix_norm(self.M, 2))

    @property
    def mu(self) -> float:
        return float(torch.linalg.eigvalsh(0.5 * (self.M + self.M.T))[0])

    @property
    def star_cocoercivity(self) -> float:
        """ell with <F(z), z - z*> >= (1/ell) ||F(z)||^2 for all z (inf when there is none)."""
        Minv = torch.linalg.inv(self.M)
        lo = float(torch.linalg.eigvalsh(0.5 * (Minv + Minv.T))[0])
        return 1.0 / lo if lo > 1e-14 else math.inf

    def noise_moment_bound(self, alpha: float) -> float:
        """sigma^alpha D E|xi_1|^alpha >= E||F_xi(z) - F(z)||^alpha, alpha in (0, 2]."""
        return self.noise ** alpha * self.noise_law.vector_moment_bound(alpha, self.D)

    def distance_sq(self, Z: torch.Tensor) -> torch.Tensor:
        """||z - z*||^2 of every row."""
        return ((Z - self.z_star) ** 2).sum(-1)
