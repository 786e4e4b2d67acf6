"""GradSkip and GradSkip+: ProxSkip in which clients also skip local gradient steps.
"""
from __future__ import annotations

import math
from functools import cached_property

import torch
from pydantic import model_validator

from ..base import register_method
from .proxskip import ProxSkipParams, _Skip

__all__ = ["gradskip_probabilities", "gradskip_stepsize", "GradSkipParams", "GradSkip", "GradSkipPlus"]


def gradskip_probabilities(L_i: torch.Tensor, mu: float) -> tuple[float, torch.Tensor]:
    """GradSkip's theory choice: p = 1/sqrt(kappa_max) and q_i = (1 - 1/kappa_i) / (1 - 1/kappa_max),
    kappa_i = L_i / mu (q_i = 1 for every client when all kappa_i = 1)."""
    kappa = L_i.to(torch.float64) / mu
    kmax = float(kappa.max())
    if kmax <= 1.0:
        return 1.0, torch.ones_like(kappa)
    return 1.0 / math.sqrt(kmax), ((1 - 1 / kappa) / (1 - 1 / kmax)).clamp(0.0, 1.0)


def gradskip_stepsize(L_i: torch.Tensor, p: float, q: torch.Tensor) -> float:
    """The largest stepsize of the GradSkip analysis for given p and q_i:
    gamma = min_i 1 / (L_i (1 + (1 - q_i)(1/p^2 - 1))) (= 1/L_max at the default p, q_i)."""
    L = L_i.to(torch.float64)
    return float((1.0 / (L * (1 + (1 - q) * (1 / p ** 2 - 1)))).min())


class GradSkipParams(ProxSkipParams):
    #: per-client probabilities q_i of a local gradient step (one value or n values in [0, 1]);
    #: default (1 - 1/kappa_i) / (1 - 1/kappa_max)
    q: float | list[float] | None = None

    @model_validator(mode="after")
    def _q_range(self):
        qs = self.q if isinstance(self.q, list) else [self.q] if self.q is not None else []
        if any(not 0.0 <= float(v) <= 1.0 for v in qs):
            raise ValueError("q: probabilities must be in [0, 1]")
        return self


@register_method
class GradSkip(_Skip):
    """GradSkip: Maranjyan, Safaryan, Richtárik (2022), "GradSkip: communication-accelerated local
    gradient methods with better computational complexity" (arXiv 2210.16402), Algorithm 1.

    ProxSkip in which client i, at every iteration, keeps its control variate with probability q_i
    (eta_i = 1: hh_i = h_i, a normal local step) or replaces it by its current gradient (eta_i = 0:
    hh_i = grad f_i(x_i), so xh_i = x_i: no step); then the shared coin (probability p) decides
    communication exactly as in ProxSkip, with hh_i in place of h_i. A client that skipped stays
    put until the next communication, so it computes no new gradient (gradients are recomputed
    only for clients whose model changed; the meter counts exactly those).

    Theory (the paper's GradSkip theorem, Sec. 3; as we derive and recall it): with each f_i
    L_i-smooth and mu-strongly convex, gamma <= min_i 1/(L_i (1 + (1 - q_i)(1/p^2 - 1))) gives
    E Psi_T <= (1 - min(gamma mu, 1 - q_max (1 - p^2)))^T Psi_0. Defaults: gamma = 1/L_max,
    p = 1/sqrt(kappa_max), q_i = (1 - 1/kappa_i)/(1 - 1/kappa_max) (kappa_i = L_i/mu_min): the same
    rate and communication as ProxSkip, with client i expected to compute
    p / (p + (1 - p)(1 - q_i)) gradients per iteration instead of 1. q_i = 1 for all: ProxSkip.
    """

    name = "gradskip"
    stepsize_source = "reading"
    paper = ("Maranjyan, Safaryan, Richtárik (2022), GradSkip: communication-accelerated local gradient methods "
             "with better computational complexity, Alg. 1")
    Params = GradSkipParams
    state = ("x", "X", "H", "last_comm", "Gc", "fresh")

    @cached_property
    def _defaults(self) -> tuple[float, torch.Tensor]:
        return gradskip_probabilities(self.problem.L_i, self.mu_min)

    @property
    def p(self) -> float:
        return float(self.params.p) if self.params.p is not None else self._defaults[0]

    @cached_property
    def q(self) -> torch.Tensor:
        """(n,) probabilities of a local gradient step (float64, CPU)."""
        if self.params.q is None:
            return self._defaults[1]
        return torch.as_tensor(self.params.q, dtype=torch.float64).expand(self.n).clone()

    def check(self):
        if isinstance(self.params.q, list) and len(self.params.q) != self.n:
            raise ValueError(f"gradskip: q lists {len(self.params.q)} values for {self.n} clients")

    def theory_stepsize(self):
        if self.params.p is None and self.params.q is None:
            return 1.0 / self.problem.L_max
        return gradskip_stepsize(self.problem.L_i, self.p, self.q)

    def init(self, x0):
        super().init(x0)
        self.Gc = self.zeros_clients()  # each client's gradient at its current x_i
        self.fresh = torch.zeros(self.n, dtype=torch.bool)

    def _gradients(self) -> torch.Tensor:
        stale = ~self.fresh
        if bool(stale.all()):
            self.Gc = self.problem.grads(self.X)
        elif bool(stale.any()):
            rows = torch.nonzero(stale).squeeze(1)
            r = rows.to(self.X.device)
            self.Gc[r] = self.problem.grads(self.X[r], rows)
        return self.Gc

    def _shadow(self, G: torch.Tensor) -> torch.Tensor:
        """hh: h_i with probability q_i, grad f_i(x_i) otherwise."""
        keep = torch.rand(self.n, generator=self.ctx.generator("skip"), dtype=torch.float64) < self.q
        return torch.where(keep.to(G.device)[:, None], self.H, G)

    def step(self):
        G = self._gradients()
        Hh = self._shadow(G)
        Xh = self.X - self.gamma * (G - Hh)
        self.last_comm = self.coin(self.p)
        if self.last_comm:
            self._communicate(Xh, Hh)
            self.fresh = torch.zeros(self.n, dtype=torch.bool)
        else:
            self.fresh = ~(Xh != self.X).any(1).cpu()  # unchanged models keep their gradient
            self.X, self.H = Xh, Hh
            self.x = Xh.mean(0)


@register_method
class GradSkipPlus(GradSkip):
    """GradSkip+: Maranjyan, Safaryan, Richtárik (2022), "GradSkip" (arXiv 2210.16402), Algorithm 2,
    for the federated (consensus) problem, with the gradient-skipping randomness given by an
    unbiased compressor C_Omega (``compressor``, variance Omega, applied to each client's row,
    locally: nothing is sent) and the prox-skipping randomness by the shared Bernoulli(p) coin
    (C_omega, omega = 1/p - 1):

        hh = grad f(x) - (1 + Omega)^{-1} C_Omega(grad f(x) - h),  xh = x - gamma (grad f(x) - hh),

    then the communication / h update of ProxSkip. C_Omega = identity (Omega = 0) is ProxSkip;
    a per-client Bernoulli(q_i) is GradSkip.

    Stepsize (our derivation along the GradSkip analysis, consistent with its special cases; the
    paper's GradSkip+ theorem could not be read): gamma = min_i 1/(L_i (1 + (1/p^2 - 1) Omega/(1 + Omega))),
    rate min(gamma mu, 1 - (1 - p^2)/(1 + Omega)); default p = 1/sqrt(kappa_max) as in ProxSkip.
    """

    name = "gradskip_plus"
    stepsize_source = "derived"
    paper = "Maranjyan, Safaryan, Richtárik (2022), GradSkip, Alg. 2 (GradSkip+)"
    uses = ("compressor",)
    Params = ProxSkipParams

    def check(self):
        if self.compressor.omega is None:
            raise ValueError(f"gradskip_plus needs an unbiased compressor C_Omega, got {self.compressor.describe()}")

    @property
    def p(self) -> float:
        if self.params.p is not None:
            return float(self.params.p)
        return min(1.0, 1.0 / math.sqrt(self.problem.L_max / self.mu_min))

    @cached_property
    def q(self) -> torch.Tensor:
        return torch.full((self.n,), 1.0 / (1.0 + self.omega), dtype=torch.float64)

    def theory_stepsize(self):
        W = self.omega
        return float((1.0 / (self.problem.L_i * (1 + (1 / self.p ** 2 - 1) * W / (1 + W)))).min())

    def _shadow(self, G):
        C = self.compress(G - self.H).values
        return G - C / (1.0 + self.omega)
