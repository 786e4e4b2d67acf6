"""A time-ordered event queue for event-driven (asynchronous) methods, and the timing of a job.

:class:`EventQueue` is a binary heap (``heapq``) of ``(time, seq, worker, job)``: events come
out in time order, ties in the order they were scheduled (``seq``), so a run is a deterministic
function of its seed. ``job`` identifies the job a worker is running: cancelling a worker's
job (``cancel``) makes its pending event stale, and stale events are skipped when popped
(lazy deletion, O(log n) per event).

:class:`Timing` turns a compute-time model and the channel's link model into the duration of
one job: downlink of the model + computation + uplink of the result,

    t_job = [bits_down > 0](latency_down + bits_down / bandwidth_down) + compute_i(t, work)
            + [bits_up > 0](latency_up + bits_up / bandwidth_up).

The queue also owns simulated time: ``now`` is the time of the last event popped. It is a
:class:`SimulatedClock`, the clock of every method that moves time itself (the runner reads
``now``; rounds do not move it): a method whose time comes from a precomputed schedule or a
computed round duration uses a plain :class:`SimulatedClock` and sets ``now``.
"""
from __future__ import annotations

import heapq
import math

from .models import ComputeModel

__all__ = ["SimulatedClock", "EventQueue", "Timing"]


class SimulatedClock:
    """Simulated time moved by its method (``now``), not by rounds: the runner's ``advance(usage)``
    leaves it where it is."""

    def __init__(self):
        self.now = 0.0

    def advance(self, usage=None) -> float:
        """The runner's clock interface: time moves with the method's events, not with rounds."""
        return self.now


class EventQueue(SimulatedClock):
    """Events ``(time, worker)`` in time order; one live job per worker."""

    def __init__(self, n: int):
        super().__init__()
        self.n = int(n)
        self.heap: list[tuple[float, int, int, int]] = []
        self.seq = 0
        self.job = [0] * self.n  # id of each worker's live job
        self.busy = [False] * self.n

    def __len__(self) -> int:
        return len(self.heap)

    def schedule(self, worker: int, time: float) -> None:
        """Worker ``worker``'s new job ends at ``time`` (it must not be busy)."""
        if time < self.now:
            raise ValueError(f"event at {time} is in the past (now = {self.now})")
        j = self.job[worker] + 1
        self.job[worker] = j
        self.busy[worker] = True
        heapq.heappush(self.heap, (time, self.seq, worker, j))
        self.seq += 1

    def cancel(self, worker: int) -> None:
        """Drop worker ``worker``'s pending event (its job is abandoned)."""
        self.job[worker] += 1
        self.busy[worker] = False

    def peek_time(self) -> float:
        """Time of the next live event (inf when none)."""
        h = self.heap
        while h and h[0][3] != self.job[h[0][2]]:
            heapq.heappop(h)
        return h[0][0] if h else math.inf

    def pop(self) -> tuple[float, int]:
        """The next live event ``(time, worker)``; advances ``now`` to its time."""
        h, job = self.heap, self.job
        while True:
            t, _, w, j = heapq.heappop(h)
            if j == job[w]:
                self.busy[w] = False
                self.now = t
                return t, w


class Timing:
    """Seconds of one job of worker i started at t: links (from the channel's link model) plus
    the compute-time model. ``bits_up``/``bits_down`` are the message sizes of one job."""

    def __init__(self, compute: ComputeModel, latency_up: float = 0.0, bandwidth_up: float = math.inf,
                 latency_down: float = 0.0, bandwidth_down: float = math.inf):
        self.compute = compute
        self.n = compute.n
        self.latency_up, self.bandwidth_up = float(latency_up), float(bandwidth_up)
        self.latency_down, self.bandwidth_down = float(latency_down), float(bandwidth_down)

    def link_time(self, bits_up: float, bits_down: float) -> float:
        """Seconds the two messages of one job spend on the links."""
        t = 0.0
        if bits_down > 0:
            t += self.latency_down + bits_down / self.bandwidth_down
        if bits_up > 0:
            t += self.latency_up + bits_up / self.bandwidth_up
        return t

    @property
    def mean(self):
        """Expected compute seconds per unit of work, per worker (tau_i)."""
        return self.compute.mean

    def describe(self) -> str:
        return self.compute.describe()
