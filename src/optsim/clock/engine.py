"""The event engine: workers running jobs against simulated time.

Each of the ``n`` workers repeatedly runs *jobs*: it receives the server's model, computes
(``work`` units: one stochastic gradient by default) and sends the result back. A job started at
time t by worker i ends at t + links + ``timing.compute.duration(i, t, work)``
(:class:`~optsim.clock.Timing`); the :class:`~optsim.clock.EventQueue` hands the arrivals to the
method in time order. The method is its *arrival rule* only: :meth:`JobEngine.advance` calls
``on_arrival(i, t)`` for each arrival, and the rule reads the job's result
(:meth:`JobEngine.result`), logs the arrival (:meth:`JobEngine.record`), replaces the model
(:meth:`JobEngine.update`) and restarts workers (:meth:`JobEngine.launch`).

Jobs are evaluated lazily and in batches. A job's model is known when it starts; its result is
needed only when it arrives. Jobs whose results are not needed yet are *pending*; when an
arrival needs one, every pending job is evaluated in one call of the method's ``evaluate(X,
clients, workers)`` hook (the jobs do not depend on each other), which computes the results and
moves the messages through the channel. The model a job started at is kept by reference (the
server replaces ``x``, never updates it in place); on the CPU the server's arithmetic runs on
NumPy views (``numpy=True``), which costs a fraction of a torch call.

Fast path: :meth:`JobEngine.advance_sgd` runs the plain asynchronous SGD rule (apply the
arrived gradient with the worker's stepsize, restart the worker at the new model) with the
updates applied lazily and batched (``np.subtract.accumulate``, which rounds exactly like the
updates one by one). Its reference is :meth:`JobEngine.advance` with that rule written out
(:meth:`JobEngine.sgd_arrival`); tests prove the two equal. A method uses the fast path only
when it overrides none of the hooks the fast path inlines.

Delays: every arrival records its delay (server updates since the job's model), its worker and
whether its result was used (:class:`DelayLog`); the log also keeps per-window statistics for
the trace.
"""
from __future__ import annotations

import heapq
import math
from array import array
from typing import Callable

import numpy as np
import torch

from .events import EventQueue, Timing
from .models import FixedTimes

__all__ = ["JobEngine", "DelayLog"]

#: ``evaluate(X, clients, workers)``: results (m, d) of the jobs ``workers`` at models X (m, d)
Evaluate = Callable[[torch.Tensor, torch.Tensor | None, list], torch.Tensor]


class DelayLog:
    """Delays of arrivals (server updates since the model they were computed at), their workers,
    whether each was used, and per-window statistics (one window per :meth:`window` call)."""

    def __init__(self, n: int):
        self.n = int(n)
        self.delays, self.workers, self.used = array("q"), array("q"), array("b")
        self.windows: dict[str, list] = {"round": [], "arrivals": [], "sim_time": [], "delay_mean": [], "delay_max": []}

    def __len__(self) -> int:
        return len(self.delays)

    def record(self, delay: int, worker: int = 0, used: bool = True) -> None:
        self.delays.append(delay)
        self.workers.append(worker)
        self.used.append(used)

    def window(self, start: int, updates: int, arrivals: int, now: float) -> None:
        """Close a window: the arrivals logged since index ``start``."""
        d = np.frombuffer(self.delays, dtype=np.int64)[start:] if len(self.delays) > start else np.zeros(0)
        w = self.windows
        w["round"].append(updates)
        w["arrivals"].append(arrivals)
        w["sim_time"].append(now)
        w["delay_mean"].append(float(d.mean()) if d.size else math.nan)
        w["delay_max"].append(int(d.max()) if d.size else 0)

    def summary(self, updates: int) -> dict:
        """Over all arrivals and over the second half (steady state): count, mean and max delay."""
        d = np.frombuffer(self.delays, dtype=np.int64)
        half = d[d.size // 2:]
        return {"arrivals": int(d.size), "updates": int(updates), "mean": float(d.mean()), "max": int(d.max()),
                "steady_mean": float(half.mean()), "steady_max": int(half.max())}

    def worker_summary(self, updates: int) -> dict:
        """:meth:`summary` plus the share of discarded arrivals, per-worker mean delays and arrival
        counts, and the windows (``meta['delays']`` of event-driven methods)."""
        d = np.frombuffer(self.delays, dtype=np.int64)
        if not d.size:
            return {"arrivals": 0}
        w = np.frombuffer(self.workers, dtype=np.int64)
        used = np.frombuffer(self.used, dtype=np.int8).astype(bool)
        counts = np.bincount(w, minlength=self.n)
        per = np.bincount(w, weights=d, minlength=self.n) / np.maximum(counts, 1)
        out = self.summary(updates)
        out.update(discarded=float(1 - used.mean()), per_worker_mean=per.round(3).tolist(),
                   per_worker_arrivals=counts.tolist(), windows=self.windows)
        return out


class JobEngine:
    """Workers running jobs against simulated time (see the module docstring).

    ``timing``: the jobs' durations; ``model_bits``: bits of one model on the links (each job
    receives ``models_per_job`` models and sends one result of that size); ``numpy``: keep the
    server's model as a NumPy array (CPU) instead of a tensor.

    State (all of it lives here, so a checkpoint of the engine is the run's simulated system):
    ``x`` the server's model, ``k`` its version (server updates), ``arrivals``, the queue (``now``),
    each worker's job (its model, version, result) and the :class:`DelayLog`.
    """

    def __init__(self, timing: Timing, model_bits: float, models_per_job: int = 1, numpy: bool = True):
        self.timing, self.n = timing, timing.n
        self.queue = EventQueue(self.n)
        self.link = timing.link_time(model_bits, models_per_job * model_bits)
        self.numpy = bool(numpy)
        self.log = DelayLog(self.n)

    # ---- state ----------------------------------------------------------------------------------
    def start(self, x0: torch.Tensor) -> None:
        """The server's model x0 at version 0; no worker is running yet."""
        n = self.n
        self.x = x0.numpy() if self.numpy else x0
        self.d = int(x0.shape[-1])
        self.k = 0
        self.arrivals = 0
        self.models: list = [None] * n  # the model each worker's current job started at
        self.version = [0] * n
        self.results: list = [None] * n  # its evaluated result (None: pending or idle)
        self.todo: list[int] = []  # workers whose result is pending
        self.pending = [False] * n

    @property
    def now(self) -> float:
        return self.queue.now

    def model(self) -> torch.Tensor:
        """The server's model as a tensor (a view of the NumPy array on the CPU)."""
        return torch.from_numpy(self.x) if self.numpy else self.x

    def update(self, x_new) -> None:
        """Replace the server's model (one server update: the version moves on)."""
        self.x = x_new
        self.k += 1

    # ---- workers --------------------------------------------------------------------------------
    def launch(self, i: int, t: float, work: float = 1.0) -> None:
        """Worker ``i`` starts a job of ``work`` units at the current model at time ``t``."""
        self.models[i] = self.x
        self.version[i] = self.k
        self.results[i] = None
        if not self.pending[i]:
            self.pending[i] = True
            self.todo.append(i)
        self.queue.schedule(i, t + self.link + self.timing.compute.duration(i, t, work))

    def cancel(self, i: int) -> None:
        """Abandon worker ``i``'s job (relaunch it with :meth:`launch`)."""
        self.queue.cancel(i)

    def busy(self, i: int) -> bool:
        return self.queue.busy[i]

    def result(self, i: int, evaluate: Evaluate):
        """The result of worker ``i``'s current job (evaluating the pending batch if needed)."""
        g = self.results[i]
        if g is None:
            self.evaluate_pending(evaluate)
            g = self.results[i]
        return g

    def batch_models(self, workers: list[int], models: list) -> torch.Tensor:
        """``models`` of ``workers`` as one (m, d) tensor (a view when all are one model)."""
        first = models[workers[0]]
        if all(models[j] is first for j in workers):  # all at one model: no copy
            X = torch.from_numpy(first) if self.numpy else first
            return X.reshape(1, self.d).expand(len(workers), self.d)
        if self.numpy:
            buf = np.empty((len(workers), self.d), dtype=first.dtype)
            for r, j in enumerate(workers):
                buf[r] = models[j]
            return torch.from_numpy(buf)
        return torch.stack([models[j] for j in workers])

    def evaluate_pending(self, evaluate: Evaluate) -> None:
        """Evaluate every pending job in one call of ``evaluate`` (module docstring)."""
        todo = self.todo
        todo.sort()
        clients = None if len(todo) == self.n else torch.from_numpy(np.array(todo, dtype=np.int64))
        G = evaluate(self.batch_models(todo, self.models), clients, todo)
        Gv = G.numpy() if self.numpy else G
        res, pend = self.results, self.pending
        for r, j in enumerate(todo):
            res[j] = Gv[r]
            pend[j] = False
        self.todo = []

    def record(self, i: int, used: bool, evaluate: Evaluate) -> int:
        """Log worker ``i``'s arrival; returns its delay. A discarded result was computed all the
        same: it is evaluated (with the pending batch) so that it is counted."""
        if not used and self.results[i] is None:
            self.evaluate_pending(evaluate)
        delay = self.k - self.version[i]
        self.log.record(delay, i, used)
        return delay

    # ---- the event loop -------------------------------------------------------------------------
    def advance(self, updates: int, until: float | None, on_arrival: Callable[[int, float], None]) -> int:
        """Hand arrivals to ``on_arrival(i, t)`` until ``updates`` server updates were made or the
        next arrival would come after ``until``; returns the number of updates made."""
        q, k0, a0 = self.queue, self.k, len(self.log)
        if not q.heap:
            raise RuntimeError("no worker is running")
        while self.k - k0 < updates:
            if until is not None and q.peek_time() > until:
                q.now = max(q.now, until)
                break
            t, i = q.pop()
            self.arrivals += 1
            on_arrival(i, t)
        self.log.window(a0, self.k, self.arrivals, q.now)
        return self.k - k0

    def sgd_arrival(self, i: int, t: float, stepsize: float, evaluate: Evaluate, work: float = 1.0) -> None:
        """The plain asynchronous SGD rule: use worker ``i``'s result g, x <- x - stepsize g, restart
        the worker at the new model (the reference of :meth:`advance_sgd`)."""
        self.record(i, True, evaluate)
        self.update(self.x - stepsize * self.result(i, evaluate))
        self.launch(i, t, work)

    def advance_sgd(self, updates: int, until: float | None, stepsizes: list[float], evaluate: Evaluate,
                    work: float = 1.0) -> int:
        """:meth:`advance` with :meth:`sgd_arrival` as the rule (``stepsizes[i]`` of worker i),
        applied lazily: between two batched evaluations an arrival only logs (stepsize, g); the
        models x^{k+1}, x^{k+2}, ... that the restarted jobs need are produced at once by
        ``np.subtract.accumulate`` over [x^k; s_1 g_1; s_2 g_2; ...]. NumPy engines only."""
        if not self.numpy:
            return self.advance(updates, until, lambda i, t: self.sgd_arrival(i, t, stepsizes[i], evaluate, work))
        q, k0, a0 = self.queue, self.k, len(self.log)
        h, job, busy = q.heap, q.job, q.busy
        if not h:
            raise RuntimeError("no worker is running")
        pop, push = heapq.heappop, heapq.heappush
        dur, link, seq = self.timing.compute.duration, self.link, q.seq
        compute = self.timing.compute
        fixed = getattr(compute, "_tau", None) if isinstance(compute, FixedTimes) else None
        models, version, gs, pend = self.models, self.version, self.results, self.pending
        log = self.log
        delays, dworkers, used = log.delays, log.workers, log.used
        k, target = self.k, self.k + updates
        log_g: list = []  # results applied since the models were last materialized
        log_w: list = []  # and their workers
        late: list = []  # workers whose job started at a model not materialized yet
        t = q.now
        while k < target:
            if until is not None and h and h[0][0] > until:
                t = max(t, until)
                break
            t, _, i, j = pop(h)
            if j != job[i]:
                continue
            busy[i] = False
            delays.append(k - version[i])
            dworkers.append(i)
            g = gs[i]
            if g is None:  # a pending result: materialize the models, evaluate the batch
                self._materialize(log_g, log_w, late, k, stepsizes)
                log_g, log_w, late = [], [], []
                q.seq = seq
                self.evaluate_pending(evaluate)
                g = gs[i]
            log_g.append(g)
            log_w.append(i)
            k += 1
            version[i] = k
            models[i] = None
            late.append(i)
            gs[i] = None
            if not pend[i]:
                pend[i] = True
                self.todo.append(i)
            jj = job[i] + 1
            job[i] = jj
            busy[i] = True
            push(h, (t + link + (fixed[i] * work if fixed is not None else dur(i, t, work)), seq, i, jj))
            seq += 1
        self._materialize(log_g, log_w, late, k, stepsizes)
        used.extend([1] * (len(delays) - len(used)))
        q.seq, q.now = seq, max(q.now, t)
        self.k = k
        self.arrivals += len(delays) - a0
        log.window(a0, self.k, self.arrivals, q.now)
        return k - k0

    def _materialize(self, log_g: list, log_w: list, late: list, k: int, stepsizes: list[float]) -> None:
        """Apply the logged updates: x^{k-m+r} for r = 1..m (m = len(log_g)), give each job in
        ``late`` its model, and set x = x^k."""
        m = len(log_g)
        if not m:
            return
        U = np.empty((m + 1, self.d), dtype=self.x.dtype)
        U[0] = self.x
        for r, g in enumerate(log_g):
            U[r + 1] = g
        U[1:] *= np.asarray([stepsizes[w] for w in log_w], dtype=U.dtype)[:, None]
        np.subtract.accumulate(U, axis=0, out=U)
        base = k - m
        for i in late:
            self.models[i] = U[self.version[i] - base]
        self.x = U[m]

    def window(self, a0: int) -> None:
        """Close a delay window opened when the log held ``a0`` arrivals (methods with their own loop)."""
        self.log.window(a0, self.k, self.arrivals, self.queue.now)
