"""DASHA with the gradient, finite-sum PAGE and stochastic MVR estimators.

DASHA keeps, on each client, an estimator h_i of its gradient and a compressed-and-corrected copy
g_i known to the server; every round every client sends one compressed vector, never a full
gradient and without a shared coin deciding who sends what. The momentum a = 1/(2 omega + 1)
pulls g_i towards h_i so that the compression error contracts. The estimators' recursions are
:mod:`optsim.estimators`'.
"""
from __future__ import annotations

import math

import torch
from pydantic import Field, PositiveInt

from ...estimators import mvr, paired_minibatch, sarah
from ..base import Method, MethodParams, register_method

__all__ = ["per_sample_smoothness", "mean_sample_smoothness", "mvr_momentum", "dasha_stepsize", "DASHAParams", "mvr_initial", "page_probability", "DASHA", "DASHAPAGEParams", "DASHAPAGE", "DASHAMVRParams", "DASHAMVR"]


def per_sample_smoothness(problem) -> float:
    """sqrt(max_i (1/m_i) sum_j L_ij^2): bounds the per-sample mean-square smoothness constants of
    the DASHA and MARINA papers (L_max, L_sigma, L_+-), which are defined by the *variance* of
    per-sample gradient differences, from above."""
    Ls = problem.L_samples
    if Ls is None:
        raise ValueError(f"{problem.name} has no per-sample smoothness constants (a finite-sum problem is needed)")
    m = problem.m.cpu().to(torch.float64)
    return math.sqrt(float((Ls.pow(2).sum(1) / m).max()))


def mean_sample_smoothness(problem) -> float:
    """sqrt(mean_i (1/m_i) sum_j L_ij^2) (the averaged form, for MARINA's L_+-)."""
    Ls = problem.L_samples
    m = problem.m.cpu().to(torch.float64)
    return math.sqrt(float((Ls.pow(2).sum(1) / m).mean()))


def mvr_momentum(problem, omega: float, eps: float, batch_size: int) -> float:
    """DASHA-MVR's default momentum (Cor. 6.8 of arXiv 2202.01268, our reading):
    b = min(sqrt(t) / omega, t), t = n eps B / sigma^2, clipped to (0, 1]; sigma^2 is the one-sample
    gradient variance at x = 0 (``problem.sample_gradient_variance``)."""
    x0 = torch.zeros(problem.d, dtype=problem.dtype, device=problem.device)
    s2 = max(problem.sample_gradient_variance(x0), 1e-300)
    t = problem.n * eps * batch_size / s2
    b = t if omega == 0 else min(math.sqrt(t) / omega, t)
    return float(min(1.0, max(b, 1e-12)))


def dasha_stepsize(L: float, L_hat: float, omega: float, n: int, extra: float = 0.0, c: float = 16.0,
                   inner: float | None = None) -> float:
    """gamma = (L + sqrt(c omega (2 omega + 1) / n * inner + extra))^{-1}, ``inner`` = L_hat^2 by default."""
    inner = L_hat ** 2 if inner is None else inner
    return 1.0 / (L + math.sqrt(c * omega * (2 * omega + 1) / n * inner + extra))


def _start(method, x0) -> None:
    """DASHA's and DASHA-PP's initialization: h_i^0 = g_i^0 (the estimator's initial value, sent
    once uncompressed), g^0 their mean."""
    method.x = x0
    H = method._initial(x0)
    msg = method.channel.dense(H)
    method.H, method.G = H, msg.values.clone()
    method.g = method.channel.uplink(msg)


class DASHAParams(MethodParams):
    #: momentum a of the compressed estimator; default 1/(2 omega + 1) (the theorems)
    a: float | None = Field(None, gt=0, le=1)


class _DASHABase(Method):
    """The DASHA round (Alg. 1) around a local estimator h_i given by :meth:`_estimate`."""

    uses = ("compressor",)
    Params = DASHAParams
    state = ("x", "G", "H", "g", "last_full")

    @property
    def a(self) -> float:
        return self.params.a if self.params.a is not None else 1.0 / (2 * self.omega + 1)

    def _initial(self, x0) -> torch.Tensor:
        return self.problem.grads(self.at_clients(x0))

    def init(self, x0):
        _start(self, x0)

    def _estimate(self, x_new, x_old) -> torch.Tensor:
        raise NotImplementedError

    def step(self):
        x_old = self.x
        self.x = self.channel.broadcast(self.x - self.gamma * self.g)
        H_new = self._estimate(self.x, x_old)
        msg = self.compress(H_new - self.H - self.a * (self.G - self.H))
        self.H = H_new
        self._deliver(msg)

    def _deliver(self, msg) -> None:
        """The clients' messages m_i reach the server: g_i += m_i, g += (1/n) sum_i m_i."""
        self.G.add_(msg.values)
        self.g = self.g + self.channel.uplink(msg)

    def _pair(self, x_new, x_old, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Minibatch gradients of the same ``batch`` samples per client at x_new and x_old."""
        return paired_minibatch(self.problem, x_new, x_old, batch, self.ctx.generator("noise"))


def mvr_initial(method, x0) -> torch.Tensor:
    """The MVR estimators' h_i^0: full local gradients, or minibatches of ``init_batch_size``."""
    B0 = method.params.init_batch_size
    X = x0.expand(method.n, method.d)
    if B0 is None:
        return method.problem.grads(X)
    return method.problem.minibatch_grads(X, B0, method.ctx.generator("noise"))


def page_probability(params, problem) -> float:
    """The PAGE estimator's full-gradient probability: ``params.p``, by default B / (m + B) with m
    the mean local sample count (DASHA-PAGE and DASHA-PP-PAGE)."""
    if params.p is not None:
        return float(params.p)
    B = params.batch_size
    return B / (float(problem.m.to(torch.float64).mean()) + B)


@register_method
class DASHA(_DASHABase):
    """DASHA: Tyurin, Richtárik (2022), "DASHA: distributed nonconvex optimization with communication
    compression, optimal oracle complexity, and no client synchronization" (arXiv 2202.01268),
    Algorithm 1 (gradient setting, h_i = grad f_i):

        x+ = x - gamma g,   h_i+ = grad f_i(x+),   m_i = C_i(h_i+ - h_i - a (g_i - h_i)),
        g_i+ = g_i + m_i,   g+ = g + (1/n) sum_i m_i,

    g_i^0 = h_i^0 = grad f_i(x^0) (sent once in full). C_i unbiased with omega. Theorem 6.1:
    a = 1/(2 omega + 1), gamma = (L + sqrt(16 omega (2 omega + 1) / n) L_hat)^{-1}, L_hat = L_tilde
    = sqrt(mean L_i^2), gives E||grad f(x_hat)||^2 <= 2 (f(x^0) - f*) / (gamma T). The same stepsize
    is used on PL / strongly convex problems (the paper's PL theorem is not implemented). Theorem
    numbers are from our reading of the paper.
    """

    name = "dasha"
    stepsize_source = "reading"
    paper = ("Tyurin, Richtárik (2022), DASHA: distributed nonconvex optimization with communication compression, "
             "optimal oracle complexity, and no client synchronization, Alg. 1")
    replica_batched = True

    def theory_stepsize(self):
        p = self.problem
        return dasha_stepsize(p.L, p.L_tilde, self.omega, self.n)

    def _estimate(self, x_new, x_old):
        return self.problem.grads(self.at_clients(x_new))


class DASHAPAGEParams(DASHAParams):
    #: minibatch size B per client in the cheap rounds (sampled with replacement)
    batch_size: PositiveInt = 1
    #: probability of a full local gradient; default B / (m + B) (m: mean local sample count)
    p: float | None = Field(None, gt=0, le=1)


@register_method
class DASHAPAGE(_DASHABase):
    """DASHA-PAGE: DASHA (arXiv 2202.01268, Algorithm 1) with the PAGE estimator on finite sums
    f_i = (1/m_i) sum_j f_ij: with one coin c ~ Be(p) per round,

        c = 1: h_i+ = grad f_i(x+);    c = 0: h_i+ = h_i + (1/B) sum_{j in I_i} (grad f_ij(x+) - grad f_ij(x)),

    I_i: B samples of client i drawn uniformly with replacement, the same at both points. Every
    round still sends only the compressed m_i. Theorem 6.4 (our reading): a = 1/(2 omega + 1),
    p = B / (m + B), gamma = (L + sqrt(48 omega (2 omega + 1)/n (L_hat^2 + (1 - p) L_max^2 / B)
    + 2 (1 - p) L_max^2 / (p n B)))^{-1}, with L_max^2 bounded by max_i (1/m_i) sum_j L_ij^2
    (:func:`per_sample_smoothness`).
    """

    name = "dasha_page"
    stepsize_source = "reading"
    paper = "Tyurin, Richtárik (2022), DASHA, Alg. 1 with the PAGE estimator (DASHA-PAGE)"
    Params = DASHAPAGEParams

    def check(self):
        per_sample_smoothness(self.problem)

    @property
    def p(self) -> float:
        return page_probability(self.params, self.problem)

    def theory_stepsize(self):
        pr, p, B, n = self.problem, self.p, self.params.batch_size, self.n
        Lm2 = per_sample_smoothness(pr) ** 2
        inner = pr.L_tilde ** 2 + (1 - p) * Lm2 / B
        return dasha_stepsize(pr.L, pr.L_tilde, self.omega, n, extra=2 * (1 - p) * Lm2 / (p * n * B), c=48.0,
                              inner=inner)

    def _estimate(self, x_new, x_old):
        self.last_full = self.coin(self.p)
        if self.last_full:
            return self.problem.grads(x_new.expand(self.n, self.d))
        new, old = self._pair(x_new, x_old, self.params.batch_size)
        return sarah(self.H, new, old)


class DASHAMVRParams(DASHAParams):
    #: minibatch size B per client and round
    batch_size: PositiveInt = 1
    #: MVR momentum b; default from Cor. 6.8: min(sqrt(n eps B / sigma^2) / omega, n eps B / sigma^2), in (0, 1]
    b: float | None = Field(None, gt=0, le=1)
    #: target accuracy eps (E||grad f||^2 <= eps) used by the default b
    eps: float = Field(1e-4, gt=0)
    #: minibatch of h_i^0; default: the full local gradient
    init_batch_size: PositiveInt | None = None


@register_method
class DASHAMVR(_DASHABase):
    """DASHA-MVR: DASHA (arXiv 2202.01268, Algorithm 1) with the momentum variance reduction
    estimator (stochastic setting; here samples of the finite sums drawn with replacement):

        h_i+ = grad f_i(x+; xi) + (1 - b)(h_i - grad f_i(x; xi)),   xi: B samples, the same at x+ and x.

    Theorem 6.7 (our reading): a = 1/(2 omega + 1), gamma = (L + sqrt(48 omega (2 omega + 1)/n
    (L_hat^2 + (1 - b)^2 L_sigma^2 / B) + 12 L_sigma^2 / (b n B)))^{-1}; E||grad f||^2 then reaches
    O(1/(gamma T)) plus a noise floor of order b sigma^2 / (n B) (smaller b, smaller floor). Default b
    from Corollary 6.8 for the target ``eps``, with sigma^2 the one-sample gradient variance at x^0
    (``problem.sample_gradient_variance``, an estimate of the corollary's uniform bound). L_sigma is bounded by
    :func:`per_sample_smoothness`.
    """

    name = "dasha_mvr"
    stepsize_source = "reading"
    paper = "Tyurin, Richtárik (2022), DASHA, Alg. 1 with the MVR estimator (DASHA-MVR)"
    Params = DASHAMVRParams

    def check(self):
        per_sample_smoothness(self.problem)

    @property
    def b(self) -> float:
        if self.params.b is not None:
            return float(self.params.b)
        if not hasattr(self, "_b_default"):
            self._b_default = mvr_momentum(self.problem, self.omega, self.params.eps, self.params.batch_size)
        return self._b_default

    def theory_stepsize(self):
        pr, b, B, n = self.problem, self.b, self.params.batch_size, self.n
        Ls2 = per_sample_smoothness(pr) ** 2
        inner = pr.L_tilde ** 2 + (1 - b) ** 2 * Ls2 / B
        return dasha_stepsize(pr.L, pr.L_tilde, self.omega, n, extra=12 * Ls2 / (b * n * B), c=48.0, inner=inner)

    def _initial(self, x0):
        return mvr_initial(self, x0)

    def _estimate(self, x_new, x_old):
        new, old = self._pair(x_new, x_old, self.params.batch_size)
        return mvr(self.H, new, old, self.b)
