"""Simulated time.

* :mod:`~optsim.clock.rounds` -- synchronous rounds: :class:`Clock` advanced by the meter's
  per-round usage and a :class:`TimeModel` (max over clients of down + compute + up).
* :mod:`~optsim.clock.models` -- compute-time models of workers: fixed tau_i, random
  (exponential, log-normal, uniform jitter), the universal computation model (time-varying
  speeds, outages), traces given as data; all seeded per worker.
* :mod:`~optsim.clock.events` -- :class:`SimulatedClock` (time moved by its method), the
  time-ordered event queue of event-driven (asynchronous) methods and :class:`Timing`, the
  duration of one job (links + computation).
* :mod:`~optsim.clock.engine` -- the one event engine: workers running jobs, lazy batched
  evaluation of independent jobs, delay bookkeeping (:class:`JobEngine`, :class:`DelayLog`).
"""
from .engine import DelayLog, JobEngine
from .events import EventQueue, SimulatedClock, Timing
from .models import (ComputeModel, FixedTimes, RandomTimes, TraceTimes, UniversalTimes, make_compute_model,
                     mean_times)
from .rounds import Clock, TimeModel, compute_times

__all__ = ["Clock", "TimeModel", "compute_times", "round_clock", "SimulatedClock", "EventQueue", "Timing",
           "JobEngine", "DelayLog", "ComputeModel", "FixedTimes",
           "RandomTimes", "UniversalTimes", "TraceTimes", "make_compute_model", "mean_times", "make_timing"]


def make_timing(tc, n: int, seed: int = 0) -> Timing:
    """The :class:`Timing` of a :class:`~optsim.experiment.config.TimeConfig` for ``n`` workers."""
    return Timing(make_compute_model(tc, n, seed), tc.latency_up, tc.bandwidth_up, tc.latency_down, tc.bandwidth_down)


def round_clock(tc, n: int) -> Clock:
    """The :class:`Clock` of synchronous rounds for a :class:`~optsim.experiment.config.TimeConfig`
    and ``n`` clients."""
    return Clock(TimeModel(compute_times(tc.compute, n), tc.latency_up, tc.bandwidth_up, tc.latency_down,
                           tc.bandwidth_down))
