"""Rennala SGD and Rennala MVR: fresh-gradient batch collection against simulated time."""
from __future__ import annotations

import math

import torch
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt

from ...estimators import mvr
from ..base import register_method
from ..event import AsyncParams, EventMethod

__all__ = ["RennalaSGD", "RennalaMVR"]


class RennalaParams(AsyncParams):
    #: gradients per update; default max{1, ceil(sigma^2 / eps)}
    B: PositiveInt | None = None


@register_method
class RennalaSGD(EventMethod):
    """Rennala SGD: the server collects B stochastic gradients computed at the current x^k
    (from whichever workers finish first; gradients computed at older models are ignored),
    then steps x^{k+1} = x^k - gamma mean(g); every worker that delivers restarts at the newest
    model. (The listing sends x^k to the worker that completed the batch; we send it x^{k+1},
    which saves one wasted job and changes nothing in the analysis.)

    Tyurin, Richtarik (2023), "Optimal time complexities of parallel stochastic optimization
    methods under a fixed computation model", NeurIPS, Method 4 (Rennala SGD); defaults
    B = max{1, ceil(sigma^2 / eps)}, gamma = min{1/L, eps B / (2 L sigma^2)} (Theorem 7.2).
    """

    name = "rennala_sgd"
    stepsize_source = "theorem"
    paper = "Tyurin, Richtarik (2023), Optimal time complexities of parallel stochastic optimization methods, NeurIPS, Method 4, Thm. 7.2"
    Params = RennalaParams
    state = EventMethod.state + ("_B", "_acc", "_count")

    @property
    def B(self) -> int:
        return self._noise_count(self.params.B)

    def theory_stepsize(self):
        return self._sgd_stepsize(self.B)

    def begin(self):
        self._B = self.B
        self._acc, self._count = None, 0
        self.launch_all(0.0)

    def on_arrival(self, i, t):
        e = self.engine
        fresh = e.version[i] == e.k
        self.record(i, fresh)
        if fresh:
            g = self.gradient(i)
            self._acc = g if self._acc is None else self._acc + g
            self._count += 1
            if self._count == self._B:
                self.update(e.x - self.gamma * (self._acc / self._B))
                self._acc, self._count = None, 0
        self.launch(i, t)


class MVRParams(RennalaParams):
    #: MVR weight a in (0, 1] of the new gradient: d^k = g(x^k) + (1 - a)(d^{k-1} - g(x^{k-1}));
    #: default min{1, B eps / sigma^2} (glossary: ``mvr_a``)
    mvr_a: PositiveFloat | None = None
    #: gradients averaged for d^0 at x^0; default max{B, ceil(sigma^2 / eps)}
    B_init: PositiveInt | None = None
    #: mean-squared smoothness L_sigma (E||g(x;xi) - g(y;xi) - grad f(x) + grad f(y)||^2 <= L_sigma^2 ||x - y||^2);
    #: default: from the problem (``problem.mean_squared_smoothness``, 0 for additive noise), else L_max
    L_sigma: NonNegativeFloat | None = None


@register_method
class RennalaMVR(EventMethod):
    """Rennala MVR: Rennala SGD's batch collection with a momentum-based variance-reduced
    (MVR / STORM-type) estimator. A job at iteration k >= 1 computes, with one sample xi, the
    pair (g(x^k; xi), g(x^{k-1}; xi)) (two gradients: the job's work is 2 units and it receives
    both models); the server collects B fresh pairs and sets

        d^k = mean g(x^k; xi) + (1 - a) (d^{k-1} - mean g(x^{k-1}; xi)),   x^{k+1} = x^k - gamma d^k,

    with d^0 the mean of B_init gradients at x^0. Same samples at both points come from
    replaying the noise generator.

    Tovmasyan, Maranjyan, Richtarik (2026), "Rennala MVR: improved time complexity for parallel
    stochastic optimization via momentum-based variance reduction", Algorithm 1. Defaults (from
    the standard MVR analysis, our derivation; check the paper's Theorem 5.2 for its constants):
    a = min{1, B eps / sigma^2}, gamma = min{1/(2L), sqrt(a B) / (2 L_sigma)}.
    """

    name = "rennala_mvr"
    stepsize_source = "derived"
    paper = "Tovmasyan, Maranjyan, Richtarik (2026), Rennala MVR, Alg. 1"
    Params = MVRParams
    job_work = 2.0
    models_per_job = 2
    state = EventMethod.state + ("_a", "_Bk", "_xprev", "_prev_models", "_h", "_d", "_acc", "_acch", "_count")

    @property
    def B(self) -> int:
        """Default max{1, ceil(sigma L_sigma / (L sqrt(eps)))}: balances the two terms of the MVR
        oracle complexity, B L Delta / eps + L_sigma Delta sigma / eps^{3/2} (our derivation)."""
        if self.params.B is not None:
            return int(self.params.B)
        return max(1, math.ceil(math.sqrt(self.sigma2) * self.L_sigma / (self.problem.L * math.sqrt(self.params.eps))))

    @property
    def mvr_a(self) -> float:
        if self.params.mvr_a is not None:
            return min(1.0, float(self.params.mvr_a))
        s2 = self.sigma2
        return 1.0 if s2 == 0 else min(1.0, self.B * self.params.eps / s2)

    @property
    def L_sigma(self) -> float:
        if self.params.L_sigma is not None:
            return float(self.params.L_sigma)
        ls = self.problem.mean_squared_smoothness
        return float(ls) if ls is not None else float(self.problem.L_max)

    def theory_stepsize(self):
        L, Ls, a = self.problem.L, self.L_sigma, self.mvr_a
        g = 1.0 / (2.0 * L)
        return min(g, math.sqrt(a * self.B) / (2.0 * Ls)) if Ls > 0 else g

    def begin(self):
        self._a = self.mvr_a
        s2 = self.sigma2 if self.params.B_init is None else 0.0
        self._Bk = int(self.params.B_init) if self.params.B_init is not None else max(self.B, math.ceil(s2 / self.params.eps))
        self._xprev = self.engine.x
        self._prev_models = [None] * self.n
        self._h = [None] * self.n
        self._d = None
        self._acc = self._acch = None
        self._count = 0
        self.launch_all(0.0)

    def launch(self, i, t, work=None):
        self._prev_models[i] = self._xprev
        super().launch(i, t, 1.0 if self.k == 0 else 2.0)  # the initial batch takes single gradients

    def evaluate(self, X, clients, workers):
        e = self.engine
        if e.k == 0 and all(e.version[j] == 0 for j in workers):
            return super().evaluate(X, clients, workers)  # initial batch: plain gradients at x0
        self.channel.send_down(X, clients=clients)
        gen = self.ctx.generator("noise")
        state = gen.get_state()
        G = self.problem.minibatch_grads(X, self.params.batch_size, gen, clients=clients)
        after = gen.get_state()
        gen.set_state(state)  # the same samples at the previous models
        Xp = e.batch_models(workers, self._prev_models)
        self.channel.send_down(Xp, clients=clients)
        H = self.problem.minibatch_grads(Xp, self.params.batch_size, gen, clients=clients)
        gen.set_state(after)
        Hv = H.numpy() if e.numpy else H
        for r, j in enumerate(workers):
            self._h[j] = Hv[r]
        if clients is None:
            clients = torch.arange(self.n)
        return self.channel.gather(torch.cat([G, H]), clients=torch.cat([clients, clients]))[:G.shape[0]]

    def on_arrival(self, i, t):
        e = self.engine
        fresh = e.version[i] == e.k
        self.record(i, fresh)
        if fresh:
            g = self.gradient(i)
            self._acc = g if self._acc is None else self._acc + g
            if e.k > 0:
                h = self._h[i]
                self._acch = h if self._acch is None else self._acch + h
            self._count += 1
            if self._count == self._Bk:
                gm = self._acc / self._Bk
                if e.k == 0:
                    self._d = gm
                else:
                    self._d = mvr(self._d, gm, self._acch / self._Bk, self._a)
                self._xprev = e.x
                self.update(e.x - self.gamma * self._d)
                self._Bk = self.B
                self._acc = self._acch = None
                self._count = 0
        self.launch(i, t)
