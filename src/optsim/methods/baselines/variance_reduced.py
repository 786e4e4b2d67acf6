"""Variance-reduced estimators with a shared coin: MARINA (and PP-MARINA) and distributed PAGE.

Both keep a gradient estimator g at the server (:class:`optsim.mechanisms.MarinaEstimate`) and,
each round, flip one coin shared by all clients (``Method.coin``): with probability p the
estimator is refreshed by (large-batch) gradients sent in full, otherwise it is moved by cheap
differences at the new and the old point (the same samples at both:
:func:`optsim.estimators.paired_minibatch`). ``last_full`` tells whether the latest round was a
refresh (for inspection and tests).
"""
from __future__ import annotations

import math

import torch
from pydantic import Field, PositiveInt

from ...sampling import Nice
from ...estimators import paired_minibatch
from ...mechanisms import MarinaEstimate
from ..base import Method, MethodParams, register_method

__all__ = ["MARINA", "PAGE"]


class MARINAParams(MethodParams):
    #: probability of a full-gradient round; default zeta_Q / d (PP-MARINA: zeta_Q r / (d n))
    p: float | None = Field(None, gt=0, le=1)


@register_method
class MARINA(Method):
    """MARINA: Gorbunov, Burlachenko, Li, Richtárik (2021), "MARINA: faster non-convex
    distributed learning with compression", Algorithm 1. g^0 = grad f(x^0) (all clients send
    full gradients); each round x+ = x - gamma g is broadcast (d floats), and with one shared
    coin c ~ Be(p):

        c = 1:  every client sends grad f_i(x+) uncompressed, g = (1/n) sum_i grad f_i(x+);
        c = 0:  every client sends Q(grad f_i(x+) - grad f_i(x)), g += (1/n) sum_i Q(...).

    Clients keep their previous gradient, so a round costs one local gradient. Q is unbiased
    (omega). Bits up per client: d * float_bits in a full round, the compressor's bits otherwise.

    Stepsize, with L_tilde = sqrt(mean_i L_i^2) (a valid constant of the paper's mean-squared
    smoothness Assumption 1.2 when f_i is L_i-smooth; it also bounds f's L): Thm. 2.1 (nonconvex)
    gamma = 1 / (L_tilde (1 + sqrt((1 - p) omega / (p n)))); Thm. 2.2 (PL, used when mu is known)
    gamma = min(1 / (L_tilde (1 + sqrt(2 (1 - p) omega / (p n)))), p / (2 mu)) -- the PL form is
    from our reading of the paper and not re-verified; it is never larger than Thm. 2.1's.
    Default p = zeta_Q / d (Corollary 2.1), zeta_Q = the compressor's ``density`` (k for rand_k).

    Partial participation (PP-MARINA, Algorithm 4) with a ``nice`` sampler of r = tau clients: a
    full round still involves all n clients; otherwise only the r sampled clients send
    Q(grad f_i(x+) - grad f_i(x)) (computing both gradients) and g += (1/r) sum_{i in S} Q(...).
    The paper samples the r clients with replacement; nice sampling (without replacement) has no
    larger variance, so the theorem's bound still applies. Thm. 4.1: gamma = 1 / (L_tilde (1 +
    sqrt((1 - p)(1 + omega) / (p r)))) (PL: same substitution as above, unverified); default
    p = zeta_Q r / (d n).
    """

    name = "marina"
    stepsize_source = "theorem"
    paper = "Gorbunov, Burlachenko, Li, Richtárik (2021), MARINA: faster non-convex distributed learning with compression, Alg. 1 / Alg. 4 (PP-MARINA)"
    uses = ("compressor", "sampler")
    Params = MARINAParams
    replica_batched = True
    draws_coins = True
    state = ("x", "G", "est", "last_full")

    def check(self):
        s = self.sampler
        if s is not None and not s.is_full and not isinstance(s, Nice):
            raise ValueError("marina: partial participation (PP-MARINA, Alg. 4) samples r clients uniformly; "
                             f"use sampler {{name: nice, tau: r}}, got {s.describe()}")

    @property
    def partial(self) -> bool:
        return self.sampler is not None and not self.sampler.is_full

    @property
    def r(self) -> int:
        return self.sampler.tau if self.partial else self.n

    @property
    def p(self) -> float:
        if self.params.p is not None:
            return float(self.params.p)
        return min(1.0, self.compressor.density * self.r / (self.d * self.n))

    def theory_stepsize(self):
        pr, p, w = self.problem, self.p, self.omega
        var = (1 - p) * (1 + w) / (p * self.r) if self.partial else (1 - p) * w / (p * self.n)
        if pr.mu is None:
            return 1.0 / (pr.L_tilde * (1 + math.sqrt(var)))
        return min(1.0 / (pr.L_tilde * (1 + math.sqrt(2 * var))), p / (2 * pr.mu))

    def replicable(self):
        return super().replicable() and not self.partial  # PP-MARINA: x+ and x of one client in a call

    def init(self, x0):
        self.x = x0
        G = self.problem.grads(self.at_clients(x0))
        self.est = MarinaEstimate()
        self.est.refresh(G, self.channel)
        self.G = None if self.partial else G  # clients' last gradients (full participation)
        self.last_full = True

    def step(self):
        x_old = self.x
        self.x = self.channel.broadcast(self.x - self.gamma * self.est.g)
        self.last_full = self.coin(self.p)
        if self.last_full:
            G = self.problem.grads(self.at_clients(self.x))
            self.est.refresh(G, self.channel)
            if not self.partial:
                self.G = G
        elif not self.partial:
            G = self.problem.grads(self.at_clients(self.x))
            self.est.move(self.compress(G - self.G), self.channel)
            self.G = G
        else:
            S = self.sample_clients()
            r = S.shape[0]
            X = torch.cat([self.x.expand(r, self.d), x_old.expand(r, self.d)])
            G = self.problem.grads(X, clients=torch.cat([S, S]))
            self.est.move(self.compress(G[:r] - G[r:], clients=S), self.channel, clients=S)


class PAGEParams(MethodParams):
    #: large minibatch b per client (with replacement); default: all local samples (full gradients)
    batch_size: PositiveInt | None = None
    #: small minibatch b' per client; default floor(sqrt(b)) (b' <= sqrt(b), Thm. 1), at least 1
    small_batch_size: PositiveInt | None = None
    #: probability of a large-batch round; default b' / (b + b') (Thm. 1)
    p: float | None = Field(None, gt=0, le=1)


@register_method
class PAGE(Method):
    """Distributed PAGE: Li, Bao, Zhang, Richtárik (2021), "PAGE: a simple and optimal
    probabilistic gradient estimator for nonconvex optimization", Algorithm 1, for
    f = (1/n) sum_i f_i with f_i = (1/m_i) sum_j f_ij held by client i (no compression). With one
    coin c ~ Be(p) per round, after x+ = x - gamma g (broadcast):

        c = 1:  g = (1/n) sum_i grad f_i(x+)   (each client: full local gradient, or a minibatch of b);
        c = 0:  g += (1/n) sum_i (1/b') sum_{j in I_i} (grad f_ij(x+) - grad f_ij(x)),

    I_i: b' samples of client i drawn uniformly with replacement, the same at both points. Every
    round the clients send one dense vector (d floats).

    Stepsize: PAGE's Thm. 1 requires 1/gamma >= L + (1 - p) L_avg^2 gamma / (p b') (giving
    gamma = 1 / (L (1 + sqrt((1 - p) / (p b')))) with L_avg = L). Here the minibatch difference has
    variance at most Lc^2 / (n b') ||x+ - x||^2, Lc^2 = (1/n) sum_i (1/m_i) sum_j L_ij^2 (per-sample
    smoothness, :attr:`GLMProblem.L_samples`), so gamma = 1 / (L + Lc sqrt((1 - p) / (p n b')))
    (n = 1, Lc = L: the paper's formula). PL case (mu known): min(1 / (L + Lc sqrt(2 (1 - p) /
    (p n b'))), p / (2 mu)) -- a conservative form of the paper's PL theorem (not re-verified).
    Defaults (Thm. 1): b = m_i (full local gradients), b' = floor(sqrt(min_i b_i)), p = b'/(b + b')
    with b the mean large batch. With b < m_i the large-batch rounds are noisy and the method
    converges to a neighbourhood (the paper's online case, Thm. 2).
    """

    name = "page"
    stepsize_source = "theorem"
    paper = "Li, Bao, Zhang, Richtárik (2021), PAGE: a simple and optimal probabilistic gradient estimator for nonconvex optimization, Alg. 1"
    Params = PAGEParams
    state = ("x", "est", "last_full")

    def check(self):
        if not self.problem.has_sample_grads:
            raise ValueError(f"page needs a finite-sum problem with per-sample gradients, got {self.problem.name}")

    @property
    def large_batch(self) -> torch.Tensor:
        """(n,) large-batch size per client (m_i with full local gradients)."""
        b = self.params.batch_size
        m = self.problem.m.cpu().to(torch.float64)
        return m if b is None else torch.full_like(m, float(b))

    @property
    def small_batch(self) -> int:
        b = self.params.small_batch_size
        return int(b) if b is not None else max(1, math.isqrt(int(self.large_batch.min())))

    @property
    def p(self) -> float:
        if self.params.p is not None:
            return float(self.params.p)
        bs = self.small_batch
        return bs / (float(self.large_batch.mean()) + bs)

    def theory_stepsize(self):
        pr, p, bs = self.problem, self.p, self.small_batch
        if pr.L_samples is None:
            raise NotImplementedError(f"page: no per-sample smoothness constants for {pr.name}: set 'stepsize'")
        Lc = math.sqrt(float((pr.L_samples.pow(2).sum(1) / pr.m.cpu().to(torch.float64)).mean()))
        var = (1 - p) / (p * self.n * bs)
        if pr.mu is None:
            return 1.0 / (pr.L + Lc * math.sqrt(var))
        return min(1.0 / (pr.L + Lc * math.sqrt(2 * var)), p / (2 * pr.mu))

    def _large(self, x):
        X = x.expand(self.n, self.d)
        if self.params.batch_size is None:
            return self.problem.grads(X)
        return self.problem.minibatch_grads(X, self.params.batch_size, self.ctx.generator("noise"))

    def init(self, x0):
        self.x = x0
        self.est = MarinaEstimate()
        self.est.refresh(self._large(x0), self.channel)
        self.last_full = True

    def step(self):
        x_old = self.x
        self.x = self.channel.broadcast(self.x - self.gamma * self.est.g)
        self.last_full = self.coin(self.p)
        if self.last_full:
            self.est.refresh(self._large(self.x), self.channel)
            return
        new, old = paired_minibatch(self.problem, self.x, x_old, self.small_batch, self.ctx.generator("noise"))
        self.est.move(self._difference_message(new - old), self.channel)

    def _difference_message(self, D):
        """The clients' minibatch gradient differences D (n, d) as sent: in full."""
        return self.channel.dense(D)
