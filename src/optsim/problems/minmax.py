"""Quadratic min-max problems as variational inequalities, with a stochastic operator of any noise law.

min_x max_y  1/2 x^T A x + x^T B y - 1/2 y^T C y - a^T x - b^T y, with A, C symmetric positive
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

:class:`GameProblem` is the same VI as a :class:`~optsim.problems.Problem` the round runner serves: its
gradient oracles return the clients' operator values F_i(z) (counted as gradient evaluations), its
``operator`` structure tells methods that it is a VI (only methods that solve VIs accept it), ``loss`` is
the game's payoff, ``x_star`` is z* and ``f_star`` is None (a payoff has no optimality gap).
"""
from __future__ import annotations

import math
from functools import cached_property

import torch

from ..rng import generator as seeded
from .base import Problem
from .noise import NoiseLaw, as_noise_law

__all__ = ["GameProblem", "QuadraticMinMax"]


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
        """min_x max_y x^T B y - a^T x - b^T y with B = U diag(s) V^T, s evenly spaced in ``spectrum``."""
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


class GameProblem(Problem):
    """The VI of a :class:`QuadraticMinMax` split over n clients, as a problem of the round runner.

    Client i's oracle is the operator F_i(z) = F(z) + e_i with the offsets e_i of
    :meth:`QuadraticMinMax.client_offsets` (sum_i e_i = 0, so F = (1/n) sum_i F_i keeps z*; n = 1: e = 0),
    returned by :meth:`grads` and counted as one gradient evaluation per client; :meth:`minibatch_grads`
    adds the game's noise sigma xi (its :class:`~optsim.problems.noise.NoiseLaw`, heavy tails included;
    a batch of b draws is averaged and counted as b evaluations): the stochastic oracle of
    :meth:`QuadraticMinMax.client_operator`, row for row. F_i is -- in the players' coordinates z = (x, y) --
    (grad_x f_i, -grad_y f_i) of the payoff f_i(x, y) = f(x, y) + e_ix^T x - e_iy^T y, so :meth:`loss` is
    the game's payoff f(x, y) (module docstring), a saddle value, not an objective: ``f_star`` is None, and
    the runner's metrics are ``dist_sq`` = ||z - z*||^2 and ``grad_norm_sq`` = ||F(z)||^2 (the operator's
    residual). Constants: ``L`` = ||M||_2 the operator's Lipschitz constant (every F_i has the same M:
    ``L_i`` = L), ``mu`` its strong monotonicity (None for a bilinear game), ``x_star`` = z*.
    ``operator`` is the :class:`QuadraticMinMax` itself: the structure that admits VI methods only."""

    name = "quadratic_game"
    convex = False  # a VI: x_star is its solution z*, not a minimizer

    def __init__(self, vi: QuadraticMinMax, clients: int = 1, spread: float = 1.0, seed: int = 0,
                 dtype=torch.float64, device="cpu"):
        super().__init__(dtype, device)
        if int(clients) < 1:
            raise ValueError(f"quadratic_game: clients must be >= 1, got {clients}")
        self.operator = vi
        self.n, self.d = int(clients), vi.D
        self.m = torch.ones(self.n, dtype=torch.long, device=self.device)
        self.E = vi.client_offsets(self.n, spread, seed).to(self.device, dtype)
        self.M, self.c = vi.M.to(self.device, dtype), vi.c.to(self.device, dtype)
        self.noise, self.noise_law = vi.noise, vi.noise_law

    @classmethod
    def generate(cls, kind: str = "strongly_monotone", dim: int = 5, mu: float = 0.1, clients: int = 1,
                 spread: float = 1.0, noise: float = 0.0, noise_law=None, seed: int = 0, dtype=torch.float64,
                 device="cpu") -> GameProblem:
        """The seeded game of :meth:`QuadraticMinMax.bilinear` or :meth:`QuadraticMinMax.strongly_monotone`
        (dx = dy = ``dim``) split over ``clients`` with offsets of rms ``spread`` (the same seed)."""
        if kind == "bilinear":
            vi = QuadraticMinMax.bilinear(dim, seed, noise=noise, noise_law=noise_law)
        elif kind == "strongly_monotone":
            vi = QuadraticMinMax.strongly_monotone(dim, mu=mu, seed=seed, noise=noise, noise_law=noise_law)
        else:
            raise ValueError(f"quadratic_game: kind must be bilinear or strongly_monotone, got '{kind}'")
        return cls(vi, clients, spread, seed, dtype, device)

    # ---- oracles: the clients' operators ---------------------------------------------------------------
    def _offsets(self, rows):
        return self.E if rows is None else self.E[rows]

    def _grads(self, X, rows):
        return (X @ self.M.T - self.c) + self._offsets(rows)

    def _grads_many(self, Xs):
        return (Xs @ self.M.T - self.c) + self.E

    def _losses(self, X, rows):
        dx = self.operator.dx
        x, y = X[..., :dx], X[..., dx:]
        A, B, C = self.M[:dx, :dx], self.M[:dx, dx:], self.M[dx:, dx:]
        lin = self.c - self._offsets(rows)  # f_i = f + e_x^T x - e_y^T y: linear terms -(c_x - e_x)^T x + (c_y - e_y)^T y
        return (0.5 * (x * (x @ A)).sum(-1) + (x * (y @ B.T)).sum(-1) - 0.5 * (y * (y @ C)).sum(-1)
                - (lin[..., :dx] * x).sum(-1) + (lin[..., dx:] * y).sum(-1))

    def minibatch_grads(self, X, batch_size, generator, clients=None):
        """F_i(z) + sigma xi for each client row, xi the mean of ``batch_size`` draws of the noise law
        (one draw: the row of :meth:`QuadraticMinMax.client_operator`); counted as ``batch_size``
        operator evaluations per client."""
        rows = None if clients is None else torch.as_tensor(clients, dtype=torch.long, device=self.device)
        self._check_X(X, rows)
        b = int(batch_size)
        self._count("grad", rows, float(b))
        G = self._grads(X, rows)
        if self.noise > 0:
            z = self.noise_law.sample((b,) + tuple(G.shape), generator)
            G = G + self.noise * (z[0] if b == 1 else z.mean(0)).to(G)
        return G

    # ---- constants -------------------------------------------------------------------------------------
    def _smoothness(self):
        return torch.full((self.n,), self.operator.L, dtype=torch.float64)

    def _global_smoothness(self):
        return self.operator.L

    def _mu(self):
        mu = self.operator.mu
        return mu if mu > 1e-12 * max(1.0, self.operator.L) else None

    @property
    def x_star(self) -> torch.Tensor:
        """z*, the solution of F(z) = 0."""
        return self._z_star

    @property
    def f_star(self) -> None:
        return None

    @cached_property
    def _z_star(self) -> torch.Tensor:
        return self.operator.z_star.to(self.device, self.dtype)

    def noise_variance(self, batch_size: int = 1) -> float:
        """sigma^2 D Var(xi_1) / batch (infinite for a heavy-tailed law)."""
        return 0.0 if self.noise == 0 else self.noise ** 2 * self.d * self.noise_law.variance / batch_size

    def noise_moment_bound(self, alpha: float) -> float:
        return self.operator.noise_moment_bound(alpha)

    @property
    def mean_squared_smoothness(self) -> float:
        return 0.0

    @property
    def additive_noise(self) -> bool:
        return True

    @property
    def gradient_flops(self) -> float:
        return 2.0 * self.n * self.d * self.d

    def _fingerprint_parts(self):
        return [self.M, self.c, self.E, self.noise, repr(self.noise_law)]

    def info(self) -> dict:
        out = super().info()
        out.update({"z* residual ||F(z*)||": float(self.full_grad(self.x_star).norm()),
                    "star-cocoercivity ell": self.operator.star_cocoercivity})
        return out
