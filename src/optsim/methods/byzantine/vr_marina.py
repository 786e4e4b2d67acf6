"""Byz-VR-MARINA (B1) and Byz-VR-MARINA-PP / -PP+ (B3): VR-MARINA's estimator, aggregated robustly."""
from __future__ import annotations

import math

import torch
from pydantic import Field, PositiveInt

from ...estimators import paired_minibatch
from ...mechanisms import MarinaEstimate
from ...sampling import Nice
from ..base import register_method
from .base import RobustMethod, RobustParams, honest_sampling_probabilities

__all__ = ["ByzVRMARINA", "ByzVRMARINAPP"]


class ByzVRMARINAParams(RobustParams):
    #: minibatch b of the gradient differences per client (the same samples at both points, with replacement)
    batch_size: PositiveInt = 1
    #: probability of a full-gradient round; default min(b / m, 1 / (1 + omega)) (B1, Table 2 caption)
    p: float | None = Field(None, gt=0, le=1)


@register_method
class ByzVRMARINA(RobustMethod):
    """Byz-VR-MARINA: Gorbunov, Horváth, Richtárik, Gidel (2023), "Variance reduction is an antidote to
    Byzantines: better rates, weaker assumptions and communication compression as a cherry on the
    top", Algorithm 1. g^0 = ARAgg(grad f_i(x^0)) (the clients send full gradients; the paper starts
    from grad f(x^0)); each round the server broadcasts g (and the coin), every client steps
    x+ = x - gamma g and, with one coin c ~ Be(p),

        c = 1: client i sends grad f_i(x+) in full,           g+ = ARAgg(grad f_i(x+)),
        c = 0: client i sends Q(Dhat_i(x+, x)),                g+ = ARAgg(g + Q(Dhat_i(x+, x))),

    Dhat_i: the mean over b samples of client i (with replacement, the same at x+ and x) of
    grad f_ij(x+) - grad f_ij(x); Q unbiased (omega), drawn per client. The attack replaces what the
    aggregator sees (the Byzantine rows of g + Q_i). With the mean aggregator and no Byzantines the
    iterates are VR-MARINA's (:class:`~optsim.methods.compression.VRMARINA`, Gorbunov et al. 2021).

    Stepsize (Theorem 2.1, nonconvex): gamma = 1 / (L + sqrt(A)) with
    A = (6(1-p)/p)(4 c delta/p + 1/(2G))(omega L^2 + (1+omega) Lpm_loc^2 / b)
        + (6(1-p)/p)(4 c delta (1+omega)/p + omega/(2G)) Lpm^2;
    PL (Theorem 2.2, when the problem's mu is known): min(1 / (L + sqrt(2A)), p / (4 mu)), and then
    E[f(x^K) - f*] <= (1 - gamma mu)^K Phi^0 + 24 c delta zeta^2 / mu (linear to f* when every client
    holds the same data, zeta = 0). delta = B/n, c the aggregator's (delta, c)-robustness constant, G
    the number of honest clients; L and the global Hessian variance Lpm are bounded by
    sqrt(mean_{i honest} L_i^2), the local one Lpm_loc by sqrt(mean_{i honest} (1/m_i) sum_j L_ij^2).
    The constants are those of the paper's ICLR submission text (the final version's were not checked).
    """

    name = "byz_vr_marina"
    stepsize_source = "theorem"
    paper = ("Gorbunov, Horváth, Richtárik, Gidel (2023), Variance reduction is an antidote to Byzantines, "
             "Alg. 1 (Byz-VR-MARINA)")
    uses = ("compressor", "aggregator")
    Params = ByzVRMARINAParams
    draws_coins = True
    state = ("x", "x0", "est", "last_full")

    def check(self):
        if not self.problem.has_sample_grads:
            raise ValueError(f"{self.name} needs a finite-sum problem with per-sample gradients, got {self.problem.name}")

    @property
    def p(self) -> float:
        if self.params.p is not None:
            return float(self.params.p)
        m = float(self.problem.m.to(torch.float64).mean())
        return min(1.0, self.params.batch_size / m, 1.0 / (1.0 + self.omega))

    def theory_stepsize(self):
        p, w, b = self.p, self.omega, self.params.batch_size
        G = self.n - self.byzantine_count
        cd = self.c_delta()
        L = self.honest_L_tilde()
        Lloc = self.honest_sample_smoothness()
        A = (6 * (1 - p) / p) * (4 * cd / p + 1 / (2 * G)) * (w * L ** 2 + (1 + w) * Lloc ** 2 / b) \
            + (6 * (1 - p) / p) * (4 * cd * (1 + w) / p + w / (2 * G)) * L ** 2
        mu = self.problem.mu
        if mu is None:
            return 1.0 / (L + math.sqrt(A))
        return min(1.0 / (L + math.sqrt(2 * A)), p / (4 * mu))

    def init(self, x0):
        self.x0 = self.x = x0
        self.est = MarinaEstimate()
        self.est.refresh(self.problem.grads(self.at_clients(x0)), self.channel, aggregate=self.aggregate,
                         context=self.attack_context())
        self.last_full = True

    def step(self):
        x_old = self.x
        self.x = self.channel.broadcast(self.x - self.gamma * self.est.g)
        self.last_full = self.coin(self.p)
        if self.last_full:
            self.est.refresh(self.problem.grads(self.at_clients(self.x)), self.channel, aggregate=self.aggregate,
                             context=self.attack_context())
            return
        new, old = paired_minibatch(self.problem, self.x, x_old, self.params.batch_size, self.ctx.generator("noise"))
        self.est.move(self.compress(new - old), self.channel, aggregate=self.aggregate, context=self.attack_context(),
                      estimates=True)


class ByzVRMARINAPPParams(ByzVRMARINAParams):
    #: clients sampled in a full-gradient round (C hat; B3 needs C hat >= delta_real n / delta); default n
    full_round_clients: PositiveInt | None = None
    #: alpha of the clipping radius lambda = alpha ||x+ - x||; default 2 script L (Theorem 4.1); 0: no clipping
    clip_mult: float | None = Field(None, ge=0)
    #: Byz-VR-MARINA-PP+ (B3 Algorithm 3): the plain mean of the clipped differences in compressed rounds
    plus: bool = False


@register_method
class ByzVRMARINAPP(ByzVRMARINA):
    """Byz-VR-MARINA-PP: Malinovsky, Richtárik, Horváth, Gorbunov (2024), "Byzantine robustness and
    partial participation can be achieved at once: just clip gradient differences", Algorithm 1
    (``plus``: Algorithm 3, Byz-VR-MARINA-PP+). Each round, with one coin c ~ Be(p), the server
    samples S uniformly without replacement, |S| = C hat (``full_round_clients``) when c = 1 and
    C (the ``nice`` sampler's tau; all clients without a sampler) otherwise, and broadcasts g to S:

        x+ = x - gamma g,   lambda = alpha ||x+ - x||,
        c = 1: g+ = ARAgg({grad f_i(x+)}_{i in S}),
        c = 0: g+ = g + ARAgg({clip_lambda(Q(Dhat_i(x+, x)))}_{i in S})     (PP+: the mean),

    the clipping done by the server (Byzantine clients would skip it). With S = [n] and no clipping
    (``clip_mult: 0``) it is Byz-VR-MARINA for aggregators that commute with translations (B3 Sec. 3).

    Stepsize (Theorem 4.1, alpha = 2 script L, script L = max_{i honest, j} L_ij):
    gamma = 1 / (script L (1 + sqrt(A))),
    A = 32 p_G G P_{G_C} (30 omega + 11)(1 + 2 c delta) / (p^2 (1 - delta) C) + 16 (1 - p_G)(1 + 4 F_A^2) / p^2;
    PL (mu known): 1 / (script L (1 + sqrt(2A))). p_G, P_{G_C}: :func:`honest_sampling_probabilities`
    with delta = B/n; F_A the aggregator's bound ||ARAgg(x_1..x_m)|| <= F_A max_i ||x_i|| (B3
    Assumption 2.3; Appendix C: 1 for Krum and GM with bucketing, sqrt(d) for CM with bucketing).
    Default p = min(C/n, b/m, zeta_Q/d) (B3's recommendation; zeta_Q = the compressor's density).
    """

    name = "byz_vr_marina_pp"
    paper = ("Malinovsky, Richtárik, Horváth, Gorbunov (2024), Byzantine robustness and partial participation can "
             "be achieved at once: just clip gradient differences, Alg. 1 / Alg. 3 (Byz-VR-MARINA-PP / -PP+)")
    uses = ("compressor", "sampler", "aggregator")
    Params = ByzVRMARINAPPParams

    def check(self):
        super().check()
        s = self.sampler
        if s is not None and not s.is_full and not isinstance(s, Nice):
            raise ValueError(f"{self.name} samples C clients uniformly: use sampler {{name: nice, tau: C}}, "
                             f"got {s.describe()}")
        Ch = self.params.full_round_clients
        if Ch is not None and Ch > self.n:
            raise ValueError(f"{self.name}: full_round_clients = {Ch} > n = {self.n}")
        B = self.byzantine_count
        if B and self.full_round_clients < B:
            raise ValueError(f"{self.name}: full_round_clients = {self.full_round_clients} < the {B} Byzantine clients "
                             "(Theorem 4.1 needs C hat >= delta_real n / delta)")

    @property
    def C(self) -> int:
        s = self.sampler
        return self.n if s is None or s.is_full else s.tau

    @property
    def full_round_clients(self) -> int:
        Ch = self.params.full_round_clients
        return self.n if Ch is None else int(Ch)

    @property
    def p(self) -> float:
        if self.params.p is not None:
            return float(self.params.p)
        m = float(self.problem.m.to(torch.float64).mean())
        return min(1.0, self.C / self.n, self.params.batch_size / m, self.compressor.density / self.d)

    @property
    def clip_mult(self) -> float:
        a = self.params.clip_mult
        return 2.0 * self.honest_sample_max() if a is None else float(a)

    def aggregator_bound(self) -> float:
        """F_A of B3 Assumption 2.3 (see the class docstring)."""
        F = self.aggregator.bound(self.d) if self.aggregator is not None else 1.0
        if F is None:
            raise NotImplementedError(f"{self.name}: the aggregator {self.aggregator.describe()} has no bound "
                                      "F_A (B3 Assumption 2.3) for the theorem's stepsize: set 'stepsize'")
        return float(F)

    def theory_stepsize(self):
        p, w, C, n = self.p, self.omega, self.C, self.n
        B = self.byzantine_count
        G = n - B
        delta = self.delta
        pG, PGC = honest_sampling_probabilities(n, G, C, delta)
        cd = self.c_delta()
        F = self.aggregator_bound()
        A = 32 * pG * G * PGC * (30 * w + 11) * (1 + 2 * cd) / (p ** 2 * (1 - delta) * C) \
            + 16 * (1 - pG) * (1 + 4 * F ** 2) / p ** 2
        Ls = self.honest_sample_max()
        k = 2 if self.problem.mu is not None else 1
        return 1.0 / (Ls * (1 + math.sqrt(k * A)))

    def _sample(self, full: bool):
        """The round's clients S (None: all)."""
        if full:
            Ch = self.full_round_clients
            return None if Ch == self.n else Nice(self.n, Ch).sample(self.ctx.generator("sampler"))
        s = self.sampler
        return None if s is None or s.is_full else self.sample_clients()

    def step(self):
        x_old = self.x
        self.last_full = self.coin(self.p)
        S = self._sample(self.last_full)
        m = self.n if S is None else S.shape[0]
        self.x = self.x - self.gamma * self.channel.broadcast(self.est.g, clients=S)
        context = self.attack_context()
        if self.last_full:
            G = self.problem.grads(self.at_clients(self.x, m), clients=S)
            self.est.refresh(G, self.channel, clients=S, aggregate=self.aggregate, context=context)
            return
        new, old = paired_minibatch(self.problem, self.x, x_old, self.params.batch_size, self.ctx.generator("noise"),
                                    clients=S)
        a = self.clip_mult
        clip = a * float(torch.linalg.vector_norm(self.x - x_old)) if a > 0 else None
        if self.params.plus:
            aggregate = lambda V: self.channel.aggregate(V, clip=clip)  # noqa: E731
        else:
            aggregate = lambda V: self.aggregate(V, clip=clip)  # noqa: E731
        self.est.move(self.compress(new - old, clients=S), self.channel, clients=S, aggregate=aggregate,
                      context=context)
