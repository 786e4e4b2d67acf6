"""DASHA (gradient, finite-sum PAGE and stochastic MVR estimators), DASHA-PP (partial
participation, with the same three estimators) and VR-MARINA.

DASHA keeps, on each client, an estimator h_i of its gradient and a compressed-and-corrected copy
g_i known to the server; every round every (participating) client sends one compressed vector,
never a full gradient and without a shared coin deciding who sends what. The momentum
a = 1/(2 omega + 1) pulls g_i towards h_i so that the compression error contracts.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field, PositiveInt

from ..estimators import mvr, mvr_increment, paired_minibatch, sarah
from ..sampling import Independent, Nice
from .base import Method, MethodParams, register_method
from .variance_reduced import PAGE

__all__ = ["DASHA", "DASHAPAGE", "DASHAMVR", "DASHAPP", "DASHAPPPAGE", "DASHAPPMVR", "VRMARINA", "dasha_stepsize",
           "dasha_pp_stepsize", "dasha_pp_vr_stepsize", "mvr_momentum", "per_sample_smoothness"]


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
        self.G.add_(msg.values)
        self.H = H_new
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


# ---- DASHA-PP -------------------------------------------------------------------------------------

def participation(sampler, n: int) -> tuple[float, float]:
    """(p_a, p_aa): the probability that a client takes part and that two given clients both do."""
    if sampler is None or sampler.is_full:
        return 1.0, 1.0
    if isinstance(sampler, Nice):
        t = sampler.tau
        return t / n, (t * (t - 1) / (n * (n - 1)) if n > 1 else t / n)
    if isinstance(sampler, Independent):
        p = sampler.probs
        if not bool((p == p[0]).all()):
            raise ValueError("dasha_pp: the theory assumes every client takes part with the same probability p_a; "
                             f"got unequal probabilities ({sampler.describe()})")
        return float(p[0]), float(p[0]) ** 2
    raise ValueError(f"dasha_pp supports full, nice and independent (uniform) sampling, got {sampler.describe()}")


def dasha_pp_stepsize(L: float, L_hat: float, omega: float, n: int, p_a: float, p_aa: float) -> float:
    """gamma = (L + L_hat sqrt((48 omega (2 omega + 1) + 16 (omega + 1)(1 - p_aa / p_a)) / (n p_a^2)))^{-1}
    (see :class:`DASHAPP`)."""
    s = (48 * omega * (2 * omega + 1) + 16 * (omega + 1) * (1 - p_aa / p_a)) / (n * p_a ** 2)
    return 1.0 / (L + L_hat * math.sqrt(s))


def dasha_pp_vr_stepsize(L: float, omega: float, n: int, p_a: float, p_aa: float, inner: float,
                         extra: float) -> float:
    """gamma = (L + sqrt((48 omega (2 omega + 1) + 16 (omega + 1)(1 - p_aa / p_a)) / (n p_a^2) inner
    + extra / p_a^2))^{-1}: DASHA-PAGE's / DASHA-MVR's stepsize (``inner``, ``extra`` as there) with
    n -> n p_a^2 and the participation term of :func:`dasha_pp_stepsize` (see :class:`DASHAPPPAGE`)."""
    s = (48 * omega * (2 * omega + 1) + 16 * (omega + 1) * (1 - p_aa / p_a)) / (n * p_a ** 2) * inner
    return 1.0 / (L + math.sqrt(s + extra / p_a ** 2))


class DASHAPPParams(MethodParams):
    #: momentum a; default p_a / (2 omega + 1)
    a: float | None = Field(None, gt=0, le=1)
    #: momentum b of the local estimator; default p_a / (2 - p_a)
    b: float | None = Field(None, gt=0, le=1)


class _DASHAPPBase(Method):
    """The DASHA-PP round (arXiv 2205.15580, Algorithm 1) around the estimator's increment k_i given
    by :meth:`_k`: after x+ = x - gamma g, every participating client i computes k_i and

        m_i = C_i(k_i / p_a - (a / p_a)(g_i - h_i)),   h_i += k_i / p_a,   g_i += m_i;

    the others keep h_i, g_i; the server adds g += (1/n) sum_{i in S} m_i (no reweighting).
    Participating clients get x+; those that missed the previous round also get x when the
    estimator reads it. Each client keeps its last full local gradient and the round of the model
    it belongs to, so a client that computed grad f_i(x) in the previous round does not compute it
    again.
    """

    uses = ("compressor", "sampler")
    Params = DASHAPPParams
    #: whether the estimator computes full local gradients (then h_i^0 = grad f_i(x^0) is kept as well)
    full_gradients = True
    state = ("x", "G", "H", "P", "g", "known", "last", "t", "last_full")

    def check(self):
        participation(self.sampler, self.n)

    @property
    def p_a(self) -> float:
        return participation(self.sampler, self.n)[0]

    @property
    def a(self) -> float:
        return self.params.a if self.params.a is not None else self.p_a / (2 * self.omega + 1)

    @property
    def b(self) -> float:
        return self.params.b if self.params.b is not None else self._default_b()

    def _default_b(self) -> float:
        return self.p_a / (2 - self.p_a)

    def _initial(self, x0) -> torch.Tensor:
        return self.problem.grads(x0.expand(self.n, self.d))

    def init(self, x0):
        _start(self, x0)
        self.t = 0
        self.last = np.zeros(self.n, dtype=np.int64)  # round of each client's last participation (CPU bookkeeping)
        if self.full_gradients:  # each client's latest full local gradient and the round of its model
            self.P = self.H.clone()
            self.known = np.zeros(self.n, dtype=np.int64)

    def step(self):
        x_old = self.x
        self.x = self.x - self.gamma * self.g
        S = self.sample_clients()
        self.t += 1
        r = S.shape[0]
        if r == 0:
            return
        dev = self.problem.device
        S_cpu = S.cpu()
        S_dev = S.to(dev)
        self.channel.broadcast(self.x, clients=S_cpu)
        H = self.H.index_select(0, S_dev)
        k = self._k(S_cpu, S_dev, x_old, H)
        p_a, a = self.p_a, self.a
        kp = k / p_a
        msg = self.compress(torch.sub(kp, self.G.index_select(0, S_dev) - H, alpha=a / p_a), clients=S_dev)
        self.H.index_copy_(0, S_dev, H.add_(kp))
        self.G.index_add_(0, S_dev, msg.values)  # S: distinct clients
        self.last[S_cpu.numpy()] = self.t
        self.g = self.g + self.channel.uplink(msg, clients=S_dev, weights=1.0 / self.n)

    def _k(self, S_cpu, S_dev, x_old, H) -> torch.Tensor:
        raise NotImplementedError

    # helpers of the estimators
    def _send_old(self, S_cpu, x_old) -> None:
        """x goes to the participating clients that missed the previous round (the others hold it)."""
        S = S_cpu.numpy()
        stale = S[self.last[S] != self.t - 1]
        if stale.size:
            self.channel.broadcast(x_old, clients=torch.from_numpy(stale))

    def _full_grads(self, S_cpu, S_dev, x_old, need_old: bool):
        """grad f_i(x+) for the clients S and, if ``need_old``, grad f_i(x): a client that computed it
        in the previous round reuses it, the others compute it (one oracle call for both points)."""
        r = S_cpu.shape[0]
        if need_old:
            self._send_old(S_cpu, x_old)
            S = S_cpu.numpy()
            miss = torch.from_numpy(S[self.known[S] != self.t - 1])
        else:
            miss = S_cpu[:0]
        miss_dev = miss.to(self.problem.device)
        X = torch.cat([self.x.expand(r, self.d), x_old.expand(miss.shape[0], self.d)])
        grads = self.problem.grads(X, clients=torch.cat([S_dev, miss_dev]))
        new = grads[:r]
        old = None
        if need_old:
            if miss.numel():
                self.P.index_copy_(0, miss_dev, grads[r:])
            old = self.P.index_select(0, S_dev)
        self.P.index_copy_(0, S_dev, new)
        self.known[S_cpu.numpy()] = self.t
        return new, old

    def _minibatch_pair(self, S_cpu, S_dev, x_old, batch: int):
        """Minibatch gradients of the same ``batch`` samples (drawn with replacement) of each client of
        S at x+ and x."""
        self._send_old(S_cpu, x_old)
        return paired_minibatch(self.problem, self.x, x_old, batch, self.ctx.generator("noise"), S_dev)


@register_method
class DASHAPP(_DASHAPPBase):
    """DASHA-PP: Tyurin, Richtárik (2022), "A computation and communication efficient method for
    distributed nonconvex problems in the partial participation setting" (arXiv 2205.15580),
    Algorithm 1 with the gradient-setting estimator. Each client takes part with probability p_a
    (``sampler``: full, nice or uniform independent); after x+ = x - gamma g, a participating client i
    (which gets x+ and, if it missed the previous round, x) computes

        k_i = grad f_i(x+) - grad f_i(x) - b (h_i - grad f_i(x)),
        m_i = C_i(k_i / p_a - (a / p_a)(g_i - h_i)),   h_i += k_i / p_a,   g_i += m_i,

    the others keep h_i, g_i; the server adds g += (1/n) sum_{i in S} m_i (no reweighting). With the
    full sampler (p_a = 1, b = 1) this is :class:`DASHA` (same iterates up to floating-point
    rounding of h_i + (grad f_i(x+) - h_i)); with b = 1 grad f_i(x) cancels and is not computed. A
    client that took part in the previous round reuses its grad f_i(x) (one gradient per round, as
    DASHA); otherwise it computes it (two, in the same oracle call).

    Parameters: a = p_a / (2 omega + 1), b = p_a / (2 - p_a) (they minimize the contraction factors
    of g_i - h_i and h_i - grad f_i, as in the paper's theorem). Stepsize: the paper's theorem has
    gamma = (L + L_hat sqrt(c1 omega (2 omega + 1) / (n p_a^2) + c2 (1 - p_aa / p_a) / (n p_a^2)))^{-1}
    with p_aa the probability that two clients both take part; its constants could not be re-read.
    We use (48 omega (2 omega + 1) + 16 (omega + 1)(1 - p_aa / p_a)) / (n p_a^2) under the root, a
    bound our own Lyapunov derivation (f + (gamma/a) ||g - h||^2 + (gamma/b) ||h - grad f||^2 +
    per-client terms) shows sufficient: it needs 16 omega (4 omega + 1) + 16 (omega + 1)(1 - p_aa/p_a)
    there. With the full sampler the method is DASHA and DASHA's Theorem 6.1 stepsize is used.
    """

    name = "dasha_pp"
    paper = ("Tyurin, Richtárik (2022), A computation and communication efficient method for distributed "
             "nonconvex problems in the partial participation setting, Alg. 1 (DASHA-PP)")

    def theory_stepsize(self):
        p = self.problem
        p_a, p_aa = participation(self.sampler, self.n)
        if p_a >= 1:
            return dasha_stepsize(p.L, p.L_tilde, self.omega, self.n)
        return dasha_pp_stepsize(p.L, p.L_tilde, self.omega, self.n, p_a, p_aa)

    def _k(self, S_cpu, S_dev, x_old, H):
        b = self.b
        if b == 1.0:  # grad f_i(x) cancels
            new, _ = self._full_grads(S_cpu, S_dev, x_old, need_old=False)
            return new - H
        new, old = self._full_grads(S_cpu, S_dev, x_old, need_old=True)
        return mvr_increment(H, new, old, b)


class DASHAPPPAGEParams(DASHAPPParams):
    #: momentum b; the full-gradient branch uses b / p. Default p p_a / (2 - p_a) (b / p = p_a / (2 - p_a))
    b: float | None = Field(None, gt=0, le=1)
    #: minibatch size B per participating client in the cheap rounds (sampled with replacement)
    batch_size: PositiveInt = 1
    #: probability of the full-gradient branch (one coin for all clients); default B / (m + B)
    p: float | None = Field(None, gt=0, le=1)


@register_method
class DASHAPPPAGE(_DASHAPPBase):
    """DASHA-PP-PAGE: DASHA-PP (arXiv 2205.15580, Algorithm 1) with the PAGE estimator on finite sums
    f_i = (1/m_i) sum_j f_ij. With one coin c ~ Be(p) per round, shared by the clients, a participating
    client i computes

        c = 1: k_i = grad f_i(x+) - grad f_i(x) - (b / p)(h_i - grad f_i(x)),
        c = 0: k_i = (1/B) sum_{j in I_i} (grad f_ij(x+) - grad f_ij(x)),

    I_i: B samples of client i drawn uniformly with replacement, the same at both points; then the
    DASHA-PP round (:class:`DASHAPP`): m_i = C_i(k_i / p_a - (a / p_a)(g_i - h_i)), h_i += k_i / p_a,
    g_i += m_i, g += (1/n) sum_{i in S} m_i. h_i^0 = g_i^0 = grad f_i(x^0) (sent once in full).
    In full rounds a client reuses grad f_i(x) if it computed it in the previous round.

    With the full sampler (p_a = 1) and the default b = p, b / p = 1: the full branch gives
    h_i+ = grad f_i(x+) and the method is :class:`DASHAPAGE` iterate for iterate (up to the rounding of
    h_i + k_i), with the same coin, minibatches and compressor draws.

    Parameters (the paper's finite-sum theorem, our reading): a = p_a / (2 omega + 1),
    b = p p_a / (2 - p_a), p = B / (m + B) (m: mean local sample count). The stepsize constants of that
    theorem could not be confirmed from the text: we use DASHA-PAGE's stepsize (DASHA, Thm. 6.4)
    with n replaced by n p_a^2 and the participation term of :class:`DASHAPP`,
    gamma = (L + sqrt((48 omega (2 omega + 1) + 16 (omega + 1)(1 - p_aa / p_a)) / (n p_a^2)
    (L_hat^2 + (1 - p) L_max^2 / B) + 2 (1 - p) L_max^2 / (p n B p_a^2)))^{-1}, exactly DASHA-PAGE's
    with the full sampler; L_max^2 bounded by max_i (1/m_i) sum_j L_ij^2 (:func:`per_sample_smoothness`).
    ``last_full`` tells the latest round's coin.
    """

    name = "dasha_pp_page"
    paper = ("Tyurin, Richtárik (2022), A computation and communication efficient method for distributed "
             "nonconvex problems in the partial participation setting, Alg. 1 with the PAGE estimator (DASHA-PP-PAGE)")
    Params = DASHAPPPAGEParams

    def check(self):
        super().check()
        per_sample_smoothness(self.problem)

    @property
    def p(self) -> float:
        return page_probability(self.params, self.problem)

    def _default_b(self) -> float:
        return self.p * self.p_a / (2 - self.p_a)

    def theory_stepsize(self):
        pr, p, B, n = self.problem, self.p, self.params.batch_size, self.n
        p_a, p_aa = participation(self.sampler, n)
        Lm2 = per_sample_smoothness(pr) ** 2
        inner = pr.L_tilde ** 2 + (1 - p) * Lm2 / B
        extra = 2 * (1 - p) * Lm2 / (p * n * B)
        if p_a >= 1:
            return dasha_stepsize(pr.L, pr.L_tilde, self.omega, n, extra=extra, c=48.0, inner=inner)
        return dasha_pp_vr_stepsize(pr.L, self.omega, n, p_a, p_aa, inner, extra)

    def _k(self, S_cpu, S_dev, x_old, H):
        self.last_full = self.coin(self.p)
        if self.last_full:
            c = self.b / self.p
            if c == 1.0:  # grad f_i(x) cancels
                new, _ = self._full_grads(S_cpu, S_dev, x_old, need_old=False)
                return new - H
            new, old = self._full_grads(S_cpu, S_dev, x_old, need_old=True)
            return mvr_increment(H, new, old, c)
        new, old = self._minibatch_pair(S_cpu, S_dev, x_old, self.params.batch_size)
        return new - old


class DASHAPPMVRParams(DASHAPPParams):
    #: MVR momentum b <= p_a / (2 - p_a); default min(p_a / (2 - p_a), DASHA-MVR's default for ``eps``)
    b: float | None = Field(None, gt=0, le=1)
    #: minibatch size B per participating client and round
    batch_size: PositiveInt = 1
    #: target accuracy eps (E||grad f||^2 <= eps) used by the default b
    eps: float = Field(1e-4, gt=0)
    #: minibatch of h_i^0; default: the full local gradient
    init_batch_size: PositiveInt | None = None


@register_method
class DASHAPPMVR(_DASHAPPBase):
    """DASHA-PP-MVR: DASHA-PP (arXiv 2205.15580, Algorithm 1) with the momentum variance reduction
    estimator (stochastic setting; here samples of the finite sums drawn with replacement). A
    participating client i draws B samples xi_i and computes, at the same samples,

        k_i = grad f_i(x+; xi_i) - grad f_i(x; xi_i) - b (h_i - grad f_i(x; xi_i)),

    then the DASHA-PP round (:class:`DASHAPP`): m_i = C_i(k_i / p_a - (a / p_a)(g_i - h_i)),
    h_i += k_i / p_a, g_i += m_i, g += (1/n) sum_{i in S} m_i. h_i^0 = g_i^0: the full local gradient, or
    a minibatch of ``init_batch_size``. With the full sampler (p_a = 1) this is :class:`DASHAMVR`
    iterate for iterate (up to the rounding of h_i + k_i), with the same minibatches.

    Parameters (the paper's stochastic theorem, our reading): a = p_a / (2 omega + 1), b in
    (0, p_a / (2 - p_a)]; default b = min(p_a / (2 - p_a), b_MVR) with b_MVR DASHA-MVR's default for the
    target ``eps`` (:func:`mvr_momentum`; the paper's corollary for b could not be confirmed from the
    text). Smaller b, smaller noise floor of ||grad f||^2. Stepsize: as for :class:`DASHAPPPAGE`, the
    theorem's constants could not be confirmed; we use DASHA-MVR's (DASHA, Thm. 6.7) with n replaced by
    n p_a^2 and the participation term of :class:`DASHAPP`, gamma = (L + sqrt((48 omega (2 omega + 1)
    + 16 (omega + 1)(1 - p_aa / p_a)) / (n p_a^2) (L_hat^2 + (1 - b)^2 L_sigma^2 / B)
    + 12 L_sigma^2 / (b n B p_a^2)))^{-1}, exactly DASHA-MVR's with the full sampler.
    """

    name = "dasha_pp_mvr"
    paper = ("Tyurin, Richtárik (2022), A computation and communication efficient method for distributed "
             "nonconvex problems in the partial participation setting, Alg. 1 with the MVR estimator (DASHA-PP-MVR)")
    Params = DASHAPPMVRParams
    full_gradients = False

    def check(self):
        super().check()
        per_sample_smoothness(self.problem)

    def _default_b(self) -> float:
        if not hasattr(self, "_b_default"):
            b = mvr_momentum(self.problem, self.omega, self.params.eps, self.params.batch_size)
            self._b_default = min(self.p_a / (2 - self.p_a), b)
        return self._b_default

    def theory_stepsize(self):
        pr, b, B, n = self.problem, self.b, self.params.batch_size, self.n
        p_a, p_aa = participation(self.sampler, n)
        Ls2 = per_sample_smoothness(pr) ** 2
        inner = pr.L_tilde ** 2 + (1 - b) ** 2 * Ls2 / B
        extra = 12 * Ls2 / (b * n * B)
        if p_a >= 1:
            return dasha_stepsize(pr.L, pr.L_tilde, self.omega, n, extra=extra, c=48.0, inner=inner)
        return dasha_pp_vr_stepsize(pr.L, self.omega, n, p_a, p_aa, inner, extra)

    def _initial(self, x0):
        return mvr_initial(self, x0)

    def _k(self, S_cpu, S_dev, x_old, H):
        new, old = self._minibatch_pair(S_cpu, S_dev, x_old, self.params.batch_size)
        return mvr_increment(H, new, old, self.b)


# ---- VR-MARINA ------------------------------------------------------------------------------------

class VRMARINAParams(MethodParams):
    #: large minibatch per client in refresh rounds (with replacement); default: full local gradients
    batch_size: PositiveInt | None = None
    #: small minibatch b' per client in compressed rounds
    small_batch_size: PositiveInt = 1
    #: probability of a refresh round; default min(zeta_Q / d, b' / (m + b')) (Cor. 3.1)
    p: float | None = Field(None, gt=0, le=1)


@register_method
class VRMARINA(PAGE):
    """VR-MARINA: Gorbunov, Burlachenko, Li, Richtárik (2021), "MARINA: faster non-convex distributed
    learning with compression", Algorithm 2 (finite-sum; with ``batch_size`` < m_i the refresh rounds
    use minibatches, the online variant). g^0 = grad f(x^0) (full gradients); each round
    x+ = x - gamma g (broadcast) and, with one shared coin c ~ Be(p):

        c = 1: g+ = (1/n) sum_i grad f_i(x+) (sent uncompressed; a minibatch of ``batch_size`` if set);
        c = 0: g+ = g + (1/n) sum_i Q((1/b') sum_{j in I_i} (grad f_ij(x+) - grad f_ij(x))),

    I_i: b' samples of client i with replacement, the same at x+ and x. Theorem 3.1:
    gamma = 1 / (L + sqrt((1 - p)/(p n) (omega L^2 + (1 + omega) L_pm^2 / b'))); we use L_tilde for L
    (as :class:`MARINA`) and bound L_pm by sqrt(mean_i (1/m_i) sum_j L_ij^2). Default p from
    Corollary 3.1, b' = 1 (the corollary leaves b' free). ``last_full`` tells the latest round's coin.
    """

    name = "vr_marina"
    paper = "Gorbunov, Burlachenko, Li, Richtárik (2021), MARINA: faster non-convex distributed learning with compression, Alg. 2 (VR-MARINA)"
    uses = ("compressor",)
    Params = VRMARINAParams

    def check(self):
        per_sample_smoothness(self.problem)

    @property
    def p(self) -> float:
        if self.params.p is not None:
            return float(self.params.p)
        bs = self.params.small_batch_size
        m = float(self.problem.m.to(torch.float64).mean())
        return min(1.0, self.compressor.density / self.d, bs / (m + bs))

    def theory_stepsize(self):
        pr, p, w, bs = self.problem, self.p, self.omega, self.params.small_batch_size
        Lpm2 = mean_sample_smoothness(pr) ** 2
        var = (1 - p) / (p * self.n) * (w * pr.L_tilde ** 2 + (1 + w) * Lpm2 / bs)
        return 1.0 / (pr.L_tilde + math.sqrt(var))

    @property
    def small_batch(self) -> int:
        return int(self.params.small_batch_size)

    def _difference_message(self, D):
        return self.compress(D)
