"""The event-driven kind of method: asynchronous workers on the event engine.

An :class:`EventMethod` is its *arrival rule*. The workers (the clients) run jobs on the one
event engine (:class:`optsim.clock.JobEngine`): a job receives the server's model, computes a
stochastic gradient there (``batch_size`` samples, ``problem.minibatch_grads`` with the ``noise``
generator) and sends it back; its duration comes from the run's :class:`~optsim.clock.Timing`.
The method implements

* :meth:`EventMethod.begin` -- start the workers at time 0 (default: every worker at x0);
* :meth:`EventMethod.on_arrival` -- the server's reaction to worker ``i``'s arrival at time ``t``:
  read the result (:meth:`gradient`), log the arrival (:meth:`record`, with whether the result
  is used), replace the model (:meth:`update`), restart workers (:meth:`launch`);
* optionally :meth:`EventMethod.evaluate` -- what a batch of jobs computes and sends (default: a
  stochastic gradient each, the model down and the gradient up through the channel).

The runner's hooks (:class:`~optsim.methods.base.TimedMethod`) come from the engine: the trace's
``round`` counts server updates, ``comm_rounds`` arrivals, and ``meta['delays']`` holds the delay
statistics (:class:`~optsim.clock.DelayLog`). All of a run's simulated system (queue, jobs,
model, delays) lives in the engine, which is the method's declared state with the rule's own.

Accounting: the problem counts oracle calls and the channel counts bits, per batch: a job's
two messages (its model down, its gradient up) and its oracle call are charged when its
gradient is evaluated, i.e. between the job's start and its delivery, so at a logged round the
counts may include up to one job per worker still in flight. Every delivered job is counted,
discarded ones too (their gradient was computed all the same); a job stopped before its
gradient was evaluated (Ringmaster's stops) costs nothing.

Theory defaults use the target accuracy ``eps`` (E||grad f||^2 <= eps) and the variance
``sigma2`` of one stochastic gradient (default: ``problem.noise_variance(batch_size)`` when
the problem knows its noise).
"""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt

from ..clock import FixedTimes, JobEngine, SimulatedClock, Timing
from .base import MethodParams, TimedMethod

__all__ = ["EventMethod", "AsyncParams"]


class AsyncParams(MethodParams):
    #: samples per stochastic gradient
    batch_size: PositiveInt = 1
    #: target accuracy of the theory (E||grad f(x)||^2 <= eps)
    eps: PositiveFloat = 1e-3
    #: variance of one stochastic gradient; default: from the problem (``problem.noise_variance``)
    sigma2: NonNegativeFloat | None = None


class EventMethod(TimedMethod):
    """Base class of event-driven methods (module docstring)."""

    Params = AsyncParams
    #: units of work (gradients) per job, for the compute-time model
    job_work: ClassVar[float] = 1.0
    #: models sent down per job (Rennala MVR sends two)
    models_per_job: ClassVar[int] = 1
    state = ("engine",)

    engine: JobEngine

    # ---- wiring ------------------------------------------------------------------------------
    def attach_timing(self, timing: Timing) -> SimulatedClock:
        """Run the jobs with ``timing``; returns the event queue (the run's clock)."""
        if timing.n != self.n:
            raise ValueError(f"{self.name}: the compute-time model has {timing.n} workers, the problem {self.n}")
        self.timing = timing
        self.engine = JobEngine(timing, self.channel.float_bits_of(), self.models_per_job,
                                numpy=self.problem.device.type == "cpu")
        return self.engine.queue

    @property
    def sigma2(self) -> float:
        s = self.params.sigma2 if self.params.sigma2 is not None else self.problem.noise_variance(self.params.batch_size)
        if s is None:
            raise NotImplementedError(f"{self.name}: the gradient variance of {self.problem.name} is unknown: "
                                      "set 'sigma2' (or 'stepsize' and the method's batch/threshold)")
        return s

    # ---- the engine's state, read by arrival rules -------------------------------------------
    @property
    def x(self) -> torch.Tensor:
        """The server's model (read-only: the server replaces it, never updates it in place)."""
        return self.engine.model()

    @property
    def k(self) -> int:
        """Server updates so far (the version of the current model)."""
        return self.engine.k

    @property
    def now(self) -> float:
        return self.engine.queue.now

    @property
    def arrivals(self) -> int:
        return self.engine.arrivals

    @property
    def delays(self):
        """Delay of every arrival so far (server updates since its job's model)."""
        return self.engine.log.delays

    def init(self, x0):
        if self.timing is None:  # built outside the runner: unit compute times, free links
            self.attach_timing(Timing(FixedTimes(np.ones(self.n))))
        self.engine.start(x0)
        self.begin()

    # ---- what a rule does --------------------------------------------------------------------
    def launch(self, i: int, t: float, work: float | None = None) -> None:
        """Worker ``i`` starts a job (``work`` units, default :attr:`job_work`) at the current model
        at time ``t``."""
        self.engine.launch(i, t, self.job_work if work is None else work)

    def launch_all(self, t: float, workers=None) -> None:
        for i in (range(self.n) if workers is None else workers):
            self.launch(i, t)

    def cancel(self, i: int) -> None:
        """Abandon worker ``i``'s job (relaunch it with :meth:`launch`)."""
        self.engine.cancel(i)

    def gradient(self, i: int):
        """The result of worker ``i``'s current job (evaluating the pending batch if needed)."""
        return self.engine.result(i, self.evaluate)

    def record(self, i: int, used: bool) -> int:
        """Log worker ``i``'s arrival (``used``: its result enters the model); returns its delay."""
        return self.engine.record(i, used, self.evaluate)

    def update(self, x_new) -> None:
        """Replace the server's model by ``x_new`` (one server update)."""
        self.engine.update(x_new)

    def gather_all(self, i: int):
        """Synchronous rounds: take worker ``i``'s arrived gradient; once all n have arrived, the
        mean of the round's gradients (the round restarts), else None (state ``_acc``, ``_count``,
        set to None, 0 by the method's :meth:`begin`)."""
        self.record(i, True)
        g = self.gradient(i)
        self._acc = g if self._acc is None else self._acc + g
        self._count += 1
        if self._count < self.n:
            return None
        mean, self._acc, self._count = self._acc / self.n, None, 0
        return mean

    # ---- hooks ---------------------------------------------------------------------------------
    def begin(self) -> None:
        """Start the workers at time 0 (default: every worker starts a job at x0)."""
        self.launch_all(0.0)

    def on_arrival(self, i: int, t: float) -> None:
        raise NotImplementedError

    def evaluate(self, X: torch.Tensor, clients, workers: list[int]) -> torch.Tensor:
        """The results of the jobs ``workers`` (clients ``clients``; None: all) at models ``X``
        (rows): each worker receives its model and sends a stochastic gradient back."""
        self.channel.send_down(X, clients=clients)
        G = self.problem.minibatch_grads(X, self.params.batch_size, self.ctx.generator("noise"), clients=clients)
        return self.channel.gather(G, clients=clients)

    def advance(self, updates, until=None):
        return self.engine.advance(updates, until, self.on_arrival)

    def trace_meta(self) -> dict:
        """Delay statistics for the trace's metadata (``meta['delays']``): over all arrivals,
        over the second half (steady state), per worker (mean), the share of discarded
        arrivals, and per logged window (``windows``: round, arrivals, sim_time, mean and max
        delay since the previous window)."""
        engine = getattr(self, "engine", None)
        if engine is None or not hasattr(engine, "k"):
            return {}
        return {"delays": engine.log.worker_summary(engine.k)}

    # ---- shared theory -----------------------------------------------------------------------
    def _sgd_stepsize(self, batch: float) -> float:
        """min{1/L, eps B / (2 L sigma^2)}: the stepsize of SGD with batches of B gradients of one
        point (Tyurin & Richtarik, 2023, Thm. 7.2 for Rennala SGD; minibatch SGD with B = n)."""
        L, s2 = self.problem.L, self.sigma2
        return min(1.0 / L, self.params.eps * batch / (2 * L * s2)) if s2 > 0 else 1.0 / L

    def _noise_count(self, override) -> int:
        """``override`` if given, else max{1, ceil(sigma^2 / eps)}: Rennala SGD's batch B (Tyurin &
        Richtarik, 2023, Thm. 7.2), Ringmaster ASGD's delay threshold R (Maranjyan et al., 2025, Thm. 4.1)."""
        if override is not None:
            return int(override)
        return max(1, math.ceil(self.sigma2 / self.params.eps))


def delay_stepsize(L: float, R: float, eps: float, sigma2: float) -> float:
    """min{1/(2 R L), eps / (4 L sigma^2)} (Maranjyan, Tyurin, Richtarik, 2025, Thm. 4.1)."""
    g = 1.0 / (2.0 * R * L)
    return min(g, eps / (4.0 * L * sigma2)) if sigma2 > 0 else g
