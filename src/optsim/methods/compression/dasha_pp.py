"""DASHA-PP: DASHA with partial participation, with the gradient, PAGE and MVR estimators.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field, PositiveInt

from ...estimators import mvr_increment, paired_minibatch
from ...sampling import Independent, Nice
from ..base import Method, MethodParams, register_method
from .dasha import (
    _start,
    dasha_stepsize,
    mvr_initial,
    mvr_momentum,
    page_probability,
    per_sample_smoothness,
)

__all__ = ["participation", "dasha_pp_stepsize", "dasha_pp_vr_stepsize", "DASHAPPParams", "DASHAPP", "DASHAPPPAGEParams", "DASHAPPPAGE", "DASHAPPMVRParams", "DASHAPPMVR"]


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
    stepsize_source = "derived"
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
    stepsize_source = "derived"
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
    stepsize_source = "derived"
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
