"""Parallel Stochastic Newton (S4) and its serial counterpart, on quadratics, batched over runs.

Mutný & Richtárik (2017), "Parallel stochastic Newton method" (arXiv 1705.02005), with the serial
method SDNA (Qu, Richtárik, Takáč & Fercoq 2016, "SDNA: stochastic dual Newton ascent for empirical
risk minimization"). For f(x) = x^T M x / 2 - b^T x with M symmetric positive definite (the quadratic
case of the paper's bounds G <= Hessian <= M, with G = M), each of c processors draws an independent
block S_j, a uniformly random tau-subset of the coordinates, and computes its local Newton step
h_j = -(M_{S_j S_j})^-1 grad_{S_j} f(x); the steps are combined as

    x+ = x + gamma sum_j I_{S_j} h_j.

Serial (c = 1, gamma = 1): SDNA, with E[f(x_k) - f*] <= (1 - sigma)^k (f(x_0) - f*),
sigma = lambda_min(M^1/2 H M^1/2), H = E[I_S (M_SS)^-1 I_S^T].

Damping (our derivation; the paper's own damping rule could not be read, so this is NOT its
confirmed formula): with D = sum_j I_{S_j} (M_{S_j S_j})^-1 I_{S_j}^T, E[D] = c H and, since
H_j M H_j = H_j for each block, E[D M D] = c H + c (c - 1) H M H <= c (1 + (c - 1) beta) H with
beta = lambda_max(H^1/2 M H^1/2). The upper quadratic bound then gives
E[f(x+)] <= f(x) - gamma c (1 - gamma (1 + (c - 1) beta) / 2) grad^T H grad, minimized by
gamma = 1 / (1 + (c - 1) beta), so that

    E[f(x_k) - f*] <= (1 - c sigma / (1 + (c - 1) beta))^k (f(x_0) - f*),

a speed-up of c / (1 + (c - 1) beta) per iteration over the serial method: close to c while
c beta << 1 (beta is about tau / d for well-conditioned M), saturating at 1 / beta.
The exact one-step expectations used here are checked by enumeration in tests/test_linear_systems.py.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from ...problems.linear_system import LinearSystem
from ._threads import threads_for

__all__ = ["PSNRuns", "ParallelStochasticNewton"]


@dataclass
class PSNRuns:
    """``steps`` (K,), ``gap`` (K, R): f(x_k) - f* per run at the recorded iterations, ``x`` (R, d) final iterates."""

    steps: torch.Tensor
    gap: torch.Tensor
    x: torch.Tensor


class ParallelStochasticNewton:
    """PSN with ``parallel`` processors each drawing a uniformly random ``tau``-subset (see the module
    docstring) on a symmetric positive definite ``system`` (f(x) = x^T A x / 2 - b^T x, minimized at x*);
    ``parallel = 1`` is SDNA. ``damping``: None for the derived 1 / (1 + (c - 1) beta), or a number."""

    #: the most subsets enumerated for the exact H = E[I_S M_SS^-1 I_S^T]
    MAX_SUBSETS = 50_000

    def __init__(self, system: LinearSystem, tau: int, parallel: int = 1, damping: float | None = None):
        if not system.symmetric:
            raise ValueError("PSN needs a symmetric positive definite system (LinearSystem.generate(..., "
                             "positive_definite=True))")
        d = system.d
        if not 1 <= int(tau) <= d:
            raise ValueError(f"PSN: the block size tau must be in [1, {d}], got {tau}")
        if int(parallel) < 1:
            raise ValueError(f"PSN: the number of processors must be >= 1, got {parallel}")
        if math.comb(d, int(tau)) > self.MAX_SUBSETS:
            raise ValueError(f"PSN: C({d}, {tau}) subsets is too many to enumerate for the exact theory; use a "
                             f"smaller d or tau")
        self.system, self.M, self.b = system, system.A, system.b
        self.d, self.tau, self.c = d, int(tau), int(parallel)
        self.H = self._expected_block_inverse()
        if damping is None:
            self.gamma = 1.0 / (1.0 + (self.c - 1) * self.beta)
        else:
            if not float(damping) > 0:
                raise ValueError(f"PSN: damping must be > 0, got {damping}")
            self.gamma = float(damping)

    # -- theory -----------------------------------------------------------------------------------------------
    def _expected_block_inverse(self) -> torch.Tensor:
        M = self.M.to(torch.float64)
        subsets = torch.tensor(list(itertools.combinations(range(self.d), self.tau)))  # (r, tau)
        Minv = torch.linalg.inv(M[subsets[:, :, None], subsets[:, None, :]])  # (r, tau, tau)
        H = torch.zeros(self.d, self.d, dtype=torch.float64)
        r = subsets.shape[0]
        idx_r = subsets[:, :, None].expand(-1, -1, self.tau)
        idx_c = subsets[:, None, :].expand(-1, self.tau, -1)
        H.index_put_((idx_r.reshape(-1), idx_c.reshape(-1)), Minv.reshape(-1), accumulate=True)
        return H / r

    def _sym_sqrt(self, X):
        w, V = torch.linalg.eigh(X)
        return (V * w.clamp_min(0).sqrt()) @ V.T

    @property
    def sigma(self) -> float:
        """lambda_min(M^1/2 H M^1/2): the serial method's rate is 1 - sigma."""
        Mh = self._sym_sqrt(self.M.to(torch.float64))
        return float(torch.linalg.eigvalsh(Mh @ self.H @ Mh)[0])

    @property
    def beta(self) -> float:
        """lambda_max(H^1/2 M H^1/2)."""
        Hh = self._sym_sqrt(self.H)
        return float(torch.linalg.eigvalsh(Hh @ self.M.to(torch.float64) @ Hh)[-1])

    def rate_bound(self) -> float:
        """1 - gamma c (2 - gamma (1 + (c - 1) beta)) sigma: the bound on E[f(x+) - f*] / (f(x) - f*) at
        damping gamma (1 - c sigma / (1 + (c - 1) beta) at the derived gamma)."""
        g, c = self.gamma, self.c
        return 1.0 - g * c * (2.0 - g * (1.0 + (c - 1) * self.beta)) * self.sigma

    def expected_next_gap(self, x: torch.Tensor) -> float:
        """Exact E[f(x+) - f*] from x: with e = x - x*, g = M e, it is
        f(x) - f* - gamma c g^T H g + gamma^2 / 2 (c g^T H g + c (c - 1) g^T H M H g)."""
        M = self.M.to(torch.float64)
        e = x.to(torch.float64) - self.system.x_true.to(torch.float64)
        g = M @ e
        Hg = self.H @ g
        gHg, gHMHg = float(g @ Hg), float(Hg @ M @ Hg)
        c, gm = self.c, self.gamma
        return 0.5 * float(e @ g) - gm * c * gHg + 0.5 * gm * gm * (c * gHg + c * (c - 1) * gHMHg)

    def gap(self, X: torch.Tensor) -> torch.Tensor:
        """f(x) - f* = (x - x*)^T M (x - x*) / 2 for each row of X."""
        return 0.5 * self.system.error(X, "A")

    # -- iterations -----------------------------------------------------------------------------------------
    def draw(self, runs: int, gen: torch.Generator) -> torch.Tensor:
        """(runs, c, tau) blocks: for each run and processor an independent uniformly random tau-subset."""
        keys = torch.rand(runs * self.c, self.d, generator=gen, dtype=torch.float64)
        return keys.argsort(1)[:, :self.tau].reshape(runs, self.c, self.tau)

    def step(self, X: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        """One PSN step of every run: X (R, d), ``blocks`` (R, c, tau)."""
        R = X.shape[0]
        G = X @ self.M - self.b  # (R, d) gradients (M symmetric)
        Mss = self.M[blocks[..., :, None], blocks[..., None, :]]  # (R, c, tau, tau)
        gs = G.gather(1, blocks.reshape(R, -1)).reshape(R, self.c, self.tau)
        h = torch.linalg.solve(Mss, gs[..., None])[..., 0]  # local Newton steps (sign: x - gamma h)
        return X.scatter_add(1, blocks.reshape(R, -1), -self.gamma * h.reshape(R, -1))

    def run(self, x0: torch.Tensor, iters: int, runs: int = 1, seed: int = 0, every: int = 1) -> PSNRuns:
        """``runs`` independent runs from ``x0`` batched as one (R, d) computation."""
        if iters < 0 or runs < 1 or every < 1:
            raise ValueError("run: need iters >= 0, runs >= 1, every >= 1")
        gen = torch.Generator().manual_seed(int(seed))
        X = torch.as_tensor(x0).to(self.M.dtype).expand(runs, self.d).clone()
        steps, gaps = [0], [self.gap(X)]
        with threads_for(runs * self.d * (2 * self.d + self.c * self.tau ** 2)):
            for k in range(1, iters + 1):
                X = self.step(X, self.draw(runs, gen))
                if k % every == 0 or k == iters:
                    steps.append(k)
                    gaps.append(self.gap(X))
        return PSNRuns(torch.tensor(steps), torch.stack(gaps), X)
