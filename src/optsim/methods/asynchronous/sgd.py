"""Synchronous minibatch SGD, Asynchronous SGD and Rescaled ASGD against simulated time."""
from __future__ import annotations

from typing import Literal

import numpy as np

from ..base import register_method
from ..event import AsyncParams, EventMethod, delay_stepsize

__all__ = ["MinibatchSGD", "ASGD", "RescaledASGD"]


@register_method
class MinibatchSGD(EventMethod):
    """Synchronous minibatch SGD against simulated time: every worker computes a gradient at
    x^k, the server waits for all n, then x^{k+1} = x^k - gamma * mean_i g_i. One iteration
    lasts as long as the slowest job. Default stepsize min{1/L, eps n / (2 L sigma^2)} (SGD
    with a batch of n; e.g. Tyurin & Richtarik, 2023, "Optimal time complexities of parallel
    stochastic optimization methods under a fixed computation model", Sec. on Minibatch SGD).
    """

    name = "minibatch_sgd"
    stepsize_source = "reading"
    paper = "Minibatch SGD (baseline of Tyurin & Richtarik 2023, NeurIPS, 'Optimal time complexities ... fixed computation model')"
    state = EventMethod.state + ("_acc", "_count")

    def theory_stepsize(self):
        return self._sgd_stepsize(self.n)

    def begin(self):
        self._acc, self._count = None, 0
        self.launch_all(0.0)

    def on_arrival(self, i, t):
        g = self.gather_all(i)
        if g is not None:
            self.update(self.engine.x - self.gamma * g)
            self.launch_all(t)


@register_method
class ASGD(EventMethod):
    """Asynchronous SGD: whenever a gradient arrives (computed at x^{k - delta_k}), the server
    steps x^{k+1} = x^k - gamma g and sends x^{k+1} back to that worker, which starts again.
    With equal deterministic times the steady-state delay is n - 1.

    Koloskova, Stich, Jaggi (2022), "Sharper convergence guarantees for asynchronous SGD for
    distributed and federated learning", and Mishchenko, Bach, Even, Woodworth (2022),
    "Asynchronous SGD beats minibatch SGD under arbitrary delays" (Algorithm 1 in both).
    Default stepsize min{1/(2 n L), eps / (4 L sigma^2)}: the delay-independent choice for n
    workers of these analyses, in the form the Ringmaster ASGD paper compares against
    (Ringmaster's stepsize with its threshold R replaced by the number of workers n).

    On the CPU the rule runs on the engine's batched fast path
    (:meth:`optsim.clock.JobEngine.advance_sgd`), equal to :meth:`on_arrival` applied arrival by
    arrival; a subclass that overrides a hook the fast path inlines runs the plain loop.
    """

    name = "asgd"
    stepsize_source = "reading"
    paper = "Mishchenko, Bach, Even, Woodworth (2022), Asynchronous SGD beats minibatch SGD under arbitrary delays, Alg. 1"
    state = EventMethod.state + ("_gam",)

    def theory_stepsize(self):
        return delay_stepsize(self.problem.L, self.n, self.params.eps, self.sigma2)

    def worker_stepsizes(self) -> list[float]:
        return [self.gamma] * self.n

    def begin(self):
        self._gam = self.worker_stepsizes()
        self.launch_all(0.0)

    def on_arrival(self, i, t):
        self.record(i, True)
        self.update(self.engine.x - self._gam[i] * self.gradient(i))
        self.launch(i, t)

    #: hooks the fast path inlines (a subclass overriding one runs the plain loop)
    _FAST_PATH_HOOKS = ("on_arrival", "launch", "record", "gradient", "update")

    def advance(self, updates, until=None):
        cls = type(self)
        if all(getattr(cls, h) is getattr(ASGD, h) for h in self._FAST_PATH_HOOKS):
            return self.engine.advance_sgd(updates, until, self._gam, self.evaluate, self.job_work)
        return super().advance(updates, until)


class RescaledParams(AsyncParams):
    #: what the per-worker stepsizes gamma_i = gamma tau_i / c are normalized by: the harmonic
    #: mean of the tau_i (the same aggregate stepsize per second as ASGD with gamma) or the
    #: largest tau_i (no worker steps more than gamma)
    normalize: Literal["harmonic", "max"] = "harmonic"


@register_method
class RescaledASGD(ASGD):
    """Rescaled ASGD: Asynchronous SGD whose worker i steps with gamma_i proportional to its
    compute time tau_i, so that every worker contributes the same aggregate stepsize per unit
    of time; vanilla ASGD instead favours fast workers and converges toward the minimizer of
    sum_i f_i / tau_i (frequency-weighted), not of f.

    Mahran, Maranjyan, Richtarik (2026), "Rescaled Asynchronous SGD: optimal distributed
    optimization under data and system heterogeneity" (Algorithm 1). tau_i are the expected
    compute times of the run's time model (``timing.mean``). Normalization (ours):
    gamma_i = gamma tau_i / tau_H, tau_H the harmonic mean of the tau_i, so that the
    aggregate stepsize per second equals vanilla ASGD's with the same gamma
    (``normalize: max`` uses tau_max instead). Default gamma: as :class:`ASGD`.
    """

    name = "rescaled_asgd"
    stepsize_source = "derived"
    paper = "Mahran, Maranjyan, Richtarik (2026), Rescaled Asynchronous SGD, Alg. 1"
    Params = RescaledParams

    def worker_stepsizes(self):
        tau = np.asarray(self.timing.mean, dtype=np.float64) + self.engine.link
        c = len(tau) / np.sum(1.0 / tau) if self.params.normalize == "harmonic" else tau.max()
        return (self.gamma * tau / c).tolist()
