"""The homogeneous stochastic quadratic of the asynchronous papers' time experiments.

Every worker samples stochastic gradients of the *same* f(x) = 1/2 x^T A x - b^T x (one (d, d)
matrix, not one per client), so a batch of m gradients is one (m, d) x (d, d) product, whatever
the number of workers.
"""
from __future__ import annotations

import math

import torch

from ..rng import generator
from .base import Problem
from .noise import NoiseLaw, as_noise_law

__all__ = ["StochasticQuadratic"]


class StochasticQuadratic(Problem):
    """f_i = f for every worker i, f(x) = 1/2 x^T A x - b^T x, with the stochastic gradient

        g(x; xi) = (1 + s zeta) * grad f(x) + sigma z,     zeta ~ N(0, 1), z ~ N(0, I_d),

    averaged over ``batch_size`` samples: ``noise`` = sigma is additive noise (variance
    sigma^2 d at every x), ``mult_noise`` = s multiplies the gradient (variance
    s^2 ||grad f(x)||^2), which makes the mean-squared smoothness constant
    L_sigma = s L > 0 (additive noise alone gives L_sigma = 0: the same sample at two points
    gives the exact gradient difference).
    """

    name = "stochastic_quadratic"

    def __init__(self, A: torch.Tensor, b: torch.Tensor, n: int, *, noise: float = 0.0, mult_noise: float = 0.0,
                 noise_law: NoiseLaw | str | dict | None = None, dtype=torch.float64, device="cpu"):
        super().__init__(dtype, device)
        d = b.shape[0]
        if A.shape != (d, d) or b.ndim != 1:
            raise ValueError(f"stochastic quadratic: expected A (d, d) and b (d,), got {tuple(A.shape)}, {tuple(b.shape)}")
        self.A = (0.5 * (A + A.T)).to(self.device, dtype)
        self.b = b.to(self.device, dtype)
        self.n, self.d = int(n), int(d)
        self.noise, self.mult_noise = float(noise), float(mult_noise)
        self.noise_law = as_noise_law(noise_law)
        self.m = torch.ones(self.n, dtype=torch.long, device=self.device)

    @classmethod
    def tridiagonal(cls, n: int, d: int, L: float = 1.0, noise: float = 0.0, mult_noise: float = 0.0,
                    dtype=torch.float64, device="cpu") -> StochasticQuadratic:
        """Nesterov's worst-case quadratic: A = (L/4) tridiag(-1, 2, -1), b = (L/4) e_1
        (condition number ~ (d + 1)^2)."""
        A = torch.diag(torch.full((d,), 2.0, dtype=torch.float64))
        off = torch.full((d - 1,), -1.0, dtype=torch.float64)
        A = (A + torch.diag(off, 1) + torch.diag(off, -1)) * (L / 4)
        b = torch.zeros(d, dtype=torch.float64)
        b[0] = L / 4
        return cls(A, b, n, noise=noise, mult_noise=mult_noise, dtype=dtype, device=device)

    @classmethod
    def generate(cls, n: int, d: int, L: float = 1.0, mu: float = 1e-2, noise: float = 0.0, mult_noise: float = 0.0,
                 seed: int = 0, noise_law=None, dtype=torch.float64, device="cpu") -> StochasticQuadratic:
        """A random rotation of a geometric spectrum between mu and L, x_true ~ N(0, I)."""
        g = generator(seed, "data")
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        lam = torch.logspace(math.log10(mu), math.log10(L), d, dtype=torch.float64)
        lam[0], lam[-1] = mu, L
        A = (Q * lam) @ Q.T
        b = A @ torch.randn(d, generator=g, dtype=torch.float64)
        return cls(A, b, n, noise=noise, mult_noise=mult_noise, noise_law=noise_law, dtype=dtype, device=device)

    # ---- oracles --------------------------------------------------------------------------------
    def _grads(self, X, rows):
        return X @ self.A - self.b

    def _losses(self, X, rows):
        return 0.5 * ((X @ self.A) * X).sum(-1) - X @ self.b

    def _hessians(self, X, rows):
        return self.A.expand(X.shape[0], self.d, self.d).clone()

    def loss(self, x):
        x = x.to(self.dtype)
        return float(0.5 * x @ (self.A @ x) - self.b @ x)

    def full_grad(self, x):
        return self.A @ x.to(self.dtype) - self.b

    def minibatch_grads(self, X, batch_size, generator, clients=None):
        """g(x; xi) averaged over ``batch_size`` samples (class docstring); counted as
        ``batch_size`` samples of a client holding one (the problem is homogeneous)."""
        g = self.grads(X, clients)
        m, scale = g.shape[0], 1.0 / float(batch_size) ** 0.5
        if self.mult_noise > 0:
            zeta = torch.randn(m, 1, generator=generator, dtype=torch.float64).to(g)
            g = g * (1.0 + self.mult_noise * scale * zeta)
        if self.noise > 0 and self.noise_law.kind == "gaussian":
            g = g + self.noise * scale * torch.randn(g.shape, generator=generator, dtype=torch.float64).to(g)
        elif self.noise > 0:
            b = int(batch_size)
            z = self.noise_law.sample((b,) + tuple(g.shape), generator)
            g = g.add_((z[0] if b == 1 else z.mean(0)).to(g), alpha=self.noise)  # g is a fresh tensor
        return g

    def noise_variance(self, batch_size: int = 1) -> float:
        """Variance of one stochastic gradient at x* (additive part): sigma^2 d Var(z_1) / batch
        (infinite for a heavy-tailed noise law)."""
        if self.noise == 0:
            return 0.0
        return self.noise ** 2 * self.d * self.noise_law.variance / batch_size

    def noise_moment_bound(self, alpha: float) -> float:
        """A bound sigma_alpha^alpha on E||g(x; xi) - grad f(x)||^alpha of one sample (additive part,
        ``mult_noise`` = 0): noise^alpha d E|z_1|^alpha, alpha in (0, 2] (noise module docstring)."""
        return self.noise ** alpha * self.noise_law.vector_moment_bound(alpha, self.d)

    @property
    def mean_squared_smoothness(self) -> float:
        """L_sigma of one sample: s L."""
        return self.mult_noise * self.L

    # ---- constants ------------------------------------------------------------------------------
    def _smoothness(self):
        return torch.full((self.n,), float(torch.linalg.eigvalsh(self.A.to(torch.float64))[-1]), dtype=torch.float64)

    def _global_smoothness(self):
        return float(torch.linalg.eigvalsh(self.A.to(torch.float64))[-1])

    def _mu(self):
        ev = float(torch.linalg.eigvalsh(self.A.to(torch.float64))[0])
        return ev if ev > 0 else None

    @property
    def convex(self):
        return self.mu is not None

    @property
    def gradient_flops(self):
        return 2.0 * self.n * self.d * self.d

    def _fingerprint_parts(self):
        return [self.A, self.b, self.n]

    def solve(self, tol=1e-12, max_iter=5):
        A, b = self.A.to(torch.float64), self.b.to(torch.float64)
        x = torch.linalg.solve(A, b)
        for _ in range(max_iter):
            r = A @ x - b
            if float(r.norm()) <= tol:
                break
            x = x - torch.linalg.solve(A, r)
        return x
