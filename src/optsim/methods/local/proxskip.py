"""ProxSkip-type methods: one step = one local step of every client, communication by a shared coin.

ProxSkip / Scaffnew and ProxSkip-VR. Iterations without communication send nothing through the
channel, so the meter does not count them as communication rounds. ``x`` (what the metrics
evaluate) is the mean of the clients' local models, a diagnostic that is not sent.
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import Literal

import torch
from pydantic import Field, PositiveInt

from ...estimators import svrg
from ..base import Method, MethodParams, register_method
from .rounds import mu_min_of

__all__ = ["ProxSkipParams", "ProxSkip", "ProxSkipVRParams", "ProxSkipVR"]


def _draw(m: torch.Tensor, b: int, generator: torch.Generator) -> torch.Tensor:
    """(len(m), b) local sample indices, uniform with replacement in [0, m_i) (CPU)."""
    u = torch.rand(m.shape[0], b, generator=generator, dtype=torch.float64)
    return (u * m.to(torch.float64)[:, None]).long().clamp_max_(m[:, None] - 1)


# ---- ProxSkip-type methods: one iteration per step, communication by a shared coin -------------------
class ProxSkipParams(MethodParams):
    #: probability of communicating after a local step; default sqrt(gamma mu_min)
    p: float | None = Field(None, gt=0, le=1)


class _Skip(Method):
    """Shared state of the ProxSkip family: client models X (n, d) and control variates H (n, d)."""

    Params = ProxSkipParams
    state = ("x", "X", "H", "last_comm")

    @cached_property
    def mu_min(self) -> float:
        return mu_min_of(self.problem, self.name)

    @property
    def p(self) -> float:
        if self.params.p is not None:
            return float(self.params.p)
        return min(1.0, math.sqrt(self.gamma * self.mu_min))

    def init(self, x0):
        self.X = x0.expand(self.n, self.d).clone()
        self.H = self.zeros_clients()  # sum_i h_i = 0, as the theorems require
        self.x = x0
        self.last_comm = False

    def _communicate(self, Xh: torch.Tensor, Hh: torch.Tensor) -> None:
        """The prox step of the consensus constraint: clients send xh_i - (gamma/p) h_i (d floats),
        the server averages and broadcasts (d floats); h_i += (p/gamma) (x_new - xh_i)."""
        g, p = self.gamma, self.p
        avg = self.channel.uplink(Xh - (g / p) * Hh)
        xbar = self.channel.broadcast(avg)
        self.H = Hh + (p / g) * (xbar - Xh)
        self.X = xbar.expand(self.n, self.d).clone()
        self.x = xbar

    def _skip_step(self, G: torch.Tensor) -> None:
        """One iteration of ProxSkip / ProxSkip-VR from the clients' gradient estimates G: local step
        xh_i = x_i - gamma (g_i - h_i), then with probability p the prox (communication) step."""
        Xh = self.X - self.gamma * (G - self.H)
        self.last_comm = self.coin(self.p)
        if self.last_comm:
            self._communicate(Xh, self.H)
        else:
            self.X = Xh
            self.x = Xh.mean(0)

    def lyapunov(self) -> float:
        """Psi = sum_i ||x_i - x*||^2 + (gamma/p)^2 sum_i ||h_i - grad f_i(x*)||^2 (ProxSkip's Thm. 3.6)."""
        xs = self.problem.x_star
        hs = self.problem._grads(xs.expand(self.n, self.d), None)
        return float((self.X - xs).pow(2).sum() + (self.gamma / self.p) ** 2 * (self.H - hs).pow(2).sum())


@register_method
class ProxSkip(_Skip):
    """ProxSkip in its federated form Scaffnew: Mishchenko, Malinovsky, Stich, Richtárik (2022),
    "ProxSkip: yes! Local gradient steps provably lead to communication acceleration! Finally!"
    (arXiv 2202.09357), Algorithm 2. Every iteration each client takes a local step
    xh_i = x_i - gamma (grad f_i(x_i) - h_i); with probability p (one coin for all clients) the
    iteration ends with communication, x_i = mean_j (xh_j - (gamma/p) h_j) and
    h_i <- h_i + (p/gamma)(x_i - xh_i); otherwise x_i = xh_i (nothing is sent).

    Defaults from Thm. 3.6 (E Psi_T <= (1 - min(gamma mu, p^2))^T Psi_0 for gamma <= 1/L) and its
    corollary: gamma = 1/L_max, p = sqrt(gamma mu_min) = 1/sqrt(kappa) (each f_i L_max-smooth and
    mu_min-strongly convex), so O(kappa log 1/eps) local steps and O(sqrt(kappa) log 1/eps)
    communication rounds.
    """

    name = "proxskip"
    stepsize_source = "theorem"
    paper = ("Mishchenko, Malinovsky, Stich, Richtárik (2022), ProxSkip: yes! Local gradient steps provably lead to "
             "communication acceleration! Finally!, Alg. 2 (Scaffnew), Thm. 3.6")

    def theory_stepsize(self):
        return 1.0 / self.problem.L_max

    def step(self):
        self._skip_step(self.problem.grads(self.X))


class ProxSkipVRParams(ProxSkipParams):
    #: local estimator: "lsvrg" (loopless SVRG) or "saga"
    estimator: Literal["lsvrg", "saga"] = "lsvrg"
    #: samples per local step (drawn uniformly with replacement)
    batch_size: PositiveInt = 1
    #: L-SVRG: probability that a client refreshes its reference point; default max(2 gamma mu, b/m)
    q: float | None = Field(None, gt=0, le=1)


@register_method
class ProxSkipVR(_Skip):
    """ProxSkip-VR: Malinovsky, Yi, Richtárik (2022), "Variance reduced ProxSkip: algorithm,
    theory and application to federated learning" (arXiv 2207.04338): ProxSkip (Scaffnew) with the
    local gradient replaced by a variance-reduced estimator g_i of grad f_i(x_i), f_i = (1/m_i)
    sum_j f_ij:

    * ``lsvrg`` (ProxSkip-LSVRG): g_i = mean_{j in B}(grad f_ij(x_i) - grad f_ij(y_i)) + grad f_i(y_i);
      afterwards, independently per client with probability q, y_i <- x_i (one full local gradient);
    * ``saga`` (ProxSkip-SAGA): g_i = mean_{j in B}(grad f_ij(x_i) - G_ij) + mean_j G_ij, then
      G_ij <- grad f_ij(x_i) for j in B (table initialized at x^0, one full pass).

    Theory (general estimator theorem, Sec. 3; our reading, number not re-verified): if
    E||g - grad f(x*)||^2 <= 2A D_f(x, x*) + B sigma^2 and E sigma+^2 <= (1 - rho) sigma^2 + 2C D_f,
    then with gamma <= 1/(A + 2BC/rho) the Lyapunov function ||x - x*||^2 + (gamma/p)^2 ||h - h*||^2
    + (2B/rho) gamma^2 sigma^2 contracts by max(1 - gamma mu, 1 - p^2, 1 - rho/2). For both estimators
    (per-sample smoothness L_s = max_ij L_ij, any batch size): A = 2 L_s, B = 2, C = rho L_s, so the
    default gamma = 1/(6 L_s) and p = sqrt(gamma mu_min). L-SVRG: rho = q, default
    q = max(2 gamma mu_min, b / m) (keeps the rate at gamma mu while refreshing about once per local
    epoch); SAGA: rho = 1 - (1 - 1/m)^b. Cost per local step: 2b/m_i (+ q) local gradients.
    """

    name = "proxskip_vr"
    stepsize_source = "reading"
    paper = ("Malinovsky, Yi, Richtárik (2022), Variance reduced ProxSkip: algorithm, theory and application to "
             "federated learning (ProxSkip-LSVRG / ProxSkip-SAGA)")
    Params = ProxSkipVRParams
    state = ("x", "X", "H", "last_comm", "Y", "GY", "T", "Tbar", "_m", "_ar")

    def check(self):
        if not self.problem.has_sample_grads:
            raise ValueError(f"proxskip_vr needs a finite-sum problem with per-sample gradients, got {self.problem.name}")

    def theory_stepsize(self):
        return 1.0 / (6.0 * self.problem.L_sample_max)

    @property
    def q(self) -> float:
        if self.params.q is not None:
            return float(self.params.q)
        m = float(self.problem.m.to(torch.float64).mean())
        return min(1.0, max(2.0 * self.gamma * self.mu_min, self.params.batch_size / m))

    def init(self, x0):
        super().init(x0)
        pr = self.problem
        self._m = pr.m.cpu()
        self._ar = torch.arange(self.n)
        if self.params.estimator == "lsvrg":
            self.Y = self.X.clone()
            self.GY = pr.grads(self.Y)
            return
        # SAGA table G[i, j] = grad f_ij(x0): one pass over each client's samples
        M = int(self._m.max())
        self.T = torch.zeros(self.n, M, self.d, dtype=pr.dtype, device=pr.device)
        for j in range(M):
            rows = torch.nonzero(self._m > j).squeeze(1)
            idx = torch.full((rows.shape[0], 1), j, dtype=torch.long)
            self.T[rows.to(pr.device), j] = pr.sample_grads(self.X[rows.to(pr.device)], idx.to(pr.device), rows)
        self.Tbar = self.T.sum(1) / self._m.to(pr.device, pr.dtype)[:, None]

    def _estimate(self) -> torch.Tensor:
        pr, b, gen = self.problem, self.params.batch_size, self.ctx.generator("noise")
        idx = _draw(self._m, b, gen).to(pr.device)
        if self.params.estimator == "lsvrg":
            ar = self._ar
            both = pr.sample_grads(torch.cat([self.X, self.Y]), torch.cat([idx, idx]), torch.cat([ar, ar]))
            g = svrg(both[: self.n], both[self.n:], self.GY)
            refresh = torch.nonzero(torch.rand(self.n, generator=gen, dtype=torch.float64) < self.q).squeeze(1)
            if refresh.numel():
                r = refresh.to(pr.device)
                self.Y[r] = self.X[r]
                self.GY[r] = pr.grads(self.X[r], refresh)
            return g
        ar = torch.arange(self.n, device=pr.device)
        new = [pr.sample_grads(self.X, idx[:, k:k + 1]) for k in range(b)]
        g = sum(new[k] - self.T[ar, idx[:, k]] for k in range(b)) / b + self.Tbar
        inv_m = 1.0 / self._m.to(pr.device, pr.dtype)[:, None]
        for k in range(b):
            old = self.T[ar, idx[:, k]]
            self.Tbar = self.Tbar + (new[k] - old) * inv_m
            self.T[ar, idx[:, k]] = new[k]
        return g

    def step(self):
        self._skip_step(self._estimate())
