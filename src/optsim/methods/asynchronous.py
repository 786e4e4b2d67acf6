"""Event-driven methods: asynchronous and heterogeneous workers against simulated time.

Each of the ``n`` clients is a *worker* that repeatedly runs *jobs*: it receives a model,
computes a stochastic gradient there (``batch_size`` samples, ``problem.minibatch_grads`` with
the ``noise`` generator) and sends it back. A job's duration comes from the run's
:class:`~optsim.clock.Timing` (compute-time model + link model); the server handles arrivals
in time order from an :class:`~optsim.clock.EventQueue`. Every arrival records its *delay*:
the number of server updates since the model its gradient was computed at.

How a method plugs into the runner (``event_driven = True``):

* the runner hands the method its timing with :meth:`EventMethod.attach_timing`, which returns
  the event queue; the queue is the run's clock (``now`` = time of the last event);
* ``init(x0)`` starts the workers; ``advance(updates, until)`` processes arrivals until
  ``updates`` server updates were made (or simulated time would pass ``until``) and returns
  how many were made; ``step()`` is ``advance(1)``. The trace's ``round`` is the number of
  server updates, ``comm_rounds`` the number of arrivals;
* :meth:`EventMethod.trace_meta` adds the delay statistics to the trace's metadata.

Speed: gradients are evaluated lazily and in batches. Jobs whose models are known and whose
gradients are not needed yet are *pending*; when an arrival needs a pending gradient, all
pending jobs are evaluated in one batched oracle call (they do not depend on each other). The
model a job started at is kept by reference (the server never updates ``x`` in place), and on
the CPU the per-arrival arithmetic runs on NumPy views, which costs a fraction of a torch call.

Accounting: the problem counts oracle calls and the channel counts bits, per batch: a job's
two messages (its model down, its gradient up) and its oracle call are charged when its
gradient is evaluated, i.e. between the job's start and its delivery, so at a logged round the
counts may include up to one job per worker still in flight. Every delivered job is counted,
discarded ones too (their gradient was computed all the same); a job stopped before its
gradient was evaluated (Ringmaster's stops) costs nothing.

Theory defaults use the target accuracy ``eps`` (E||grad f||^2 <= eps) and the variance
``sigma2`` of one stochastic gradient (default: computed from the problem when it knows its
noise, e.g. ``noise^2 * d / batch_size`` for :class:`~optsim.problems.Quadratic`).
"""
from __future__ import annotations

import heapq
import math
from array import array
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt

from ..clock import EventQueue, FixedTimes, Timing
from ..compress import Message
from ..problems.quadratic import Quadratic
from .base import Method, MethodParams, register_method

__all__ = ["EventMethod", "AsyncParams", "MinibatchSGD", "ASGD", "RescaledASGD", "RingmasterASGD", "RingleaderASGD", "RennalaSGD",
           "RennalaMVR", "noise_variance"]


def noise_variance(problem, batch_size: int = 1) -> float | None:
    """sigma^2 = E||g(x) - grad f_i(x)||^2 of one stochastic gradient of ``batch_size`` samples,
    when the problem knows it (``problem.noise_variance(b)``, or additive Gaussian noise of a
    :class:`Quadratic`); None otherwise."""
    if hasattr(problem, "noise_variance"):
        return float(problem.noise_variance(batch_size))
    if isinstance(problem, Quadratic):
        return problem.noise ** 2 * problem.d / batch_size
    return None


class AsyncParams(MethodParams):
    #: samples per stochastic gradient
    batch_size: PositiveInt = 1
    #: target accuracy of the theory (E||grad f(x)||^2 <= eps)
    eps: PositiveFloat = 1e-3
    #: variance of one stochastic gradient; default: from the problem (see noise_variance)
    sigma2: NonNegativeFloat | None = None


class EventMethod(Method):
    """Base class of event-driven methods (module docstring). Subclasses implement
    :meth:`begin` (start the workers) and :meth:`on_arrival` (the server's reaction to one
    arrival, calling :meth:`update` when it changes the model)."""

    event_driven: ClassVar[bool] = True
    Params = AsyncParams
    #: units of work (gradients) per job, for the compute-time model
    job_work: ClassVar[float] = 1.0
    #: models sent down per job (Rennala MVR sends two)
    models_per_job: ClassVar[int] = 1

    timing: Timing | None = None

    # ---- wiring ------------------------------------------------------------------------------
    def attach_timing(self, timing: Timing) -> EventQueue:
        """Use ``timing`` for the jobs; returns the event queue (the run's clock)."""
        if timing.n != self.n:
            raise ValueError(f"{self.name}: the compute-time model has {timing.n} workers, the problem {self.n}")
        self.timing = timing
        self.queue = EventQueue(self.n)
        return self.queue

    @property
    def sigma2(self) -> float:
        s = self.params.sigma2 if self.params.sigma2 is not None else noise_variance(self.problem, self.params.batch_size)
        if s is None:
            raise NotImplementedError(f"{self.name}: the gradient variance of {self.problem.name} is unknown: "
                                      "set 'sigma2' (or 'stepsize' and the method's batch/threshold)")
        return s

    # ---- state -------------------------------------------------------------------------------
    @property
    def x(self) -> torch.Tensor:
        """The server's model (read-only: the server replaces it, never updates it in place)."""
        return torch.from_numpy(self._x) if self._np else self._x

    @property
    def now(self) -> float:
        return self.queue.now

    def init(self, x0):
        if self.timing is None:  # built outside the runner: unit compute times, free links
            self.attach_timing(Timing(FixedTimes(np.ones(self.n))))
        p = self.problem
        self._np = p.device.type == "cpu"
        self._x = x0.numpy() if self._np else x0
        self.k = 0  # server updates (model version)
        self.arrivals = 0
        self._models: list = [None] * self.n  # the model each worker's current job started at
        self._version = [0] * self.n
        self._g: list = [None] * self.n  # its evaluated gradient (None: pending or idle)
        self._todo: list[int] = []  # workers whose gradient is pending
        self._pending = [False] * self.n
        self._gen = self.ctx.generator("noise")
        b = float(self.channel.d * self.channel.float_bits)
        self._link = self.timing.link_time(b, self.models_per_job * b)
        self._dur = self.timing.compute.duration
        self.delays, self.delay_workers, self.used = array("q"), array("q"), array("b")
        self.window_log: dict[str, list] = {"round": [], "arrivals": [], "sim_time": [], "delay_mean": [], "delay_max": []}
        self.begin()

    # ---- workers -----------------------------------------------------------------------------
    def launch(self, i: int, t: float, work: float | None = None) -> None:
        """Worker ``i`` starts a job (``work`` units, default :attr:`job_work`) at the current
        model at time ``t``."""
        self._models[i] = self._x
        self._version[i] = self.k
        self._g[i] = None
        if not self._pending[i]:
            self._pending[i] = True
            self._todo.append(i)
        self.queue.schedule(i, t + self._link + self._dur(i, t, self.job_work if work is None else work))

    def launch_all(self, t: float, workers=None) -> None:
        for i in (range(self.n) if workers is None else workers):
            self.launch(i, t)

    def gather_all(self, i: int):
        """Synchronous rounds: take worker ``i``'s arrived gradient; once all n have arrived, the
        mean of the round's gradients (the round restarts), else None."""
        self.record(i, True)
        g = self.gradient(i)
        self._acc = g if getattr(self, "_acc", None) is None else self._acc + g
        self._count = getattr(self, "_count", 0) + 1
        if self._count < self.n:
            return None
        mean, self._acc, self._count = self._acc / self.n, None, 0
        return mean

    def cancel(self, i: int) -> None:
        """Abandon worker ``i``'s job (relaunch it with :meth:`launch`)."""
        self.queue.cancel(i)

    def gradient(self, i: int):
        """The gradient of worker ``i``'s current job (evaluating the pending batch if needed)."""
        g = self._g[i]
        if g is None:
            self._evaluate_pending()
            g = self._g[i]
        return g

    def _batch_models(self, todo: list[int], models: list):
        """The models of the jobs ``todo`` as one (m, d) tensor."""
        first = models[todo[0]]
        if all(models[j] is first for j in todo):  # all at one model: no copy
            X = torch.from_numpy(first) if self._np else first
            return X.reshape(1, self.d).expand(len(todo), self.d)
        if self._np:
            buf = np.empty((len(todo), self.d), dtype=first.dtype)
            for r, j in enumerate(todo):
                buf[r] = models[j]
            return torch.from_numpy(buf)
        return torch.stack([models[j] for j in todo])

    def _evaluate_pending(self) -> None:
        """Evaluate every pending job in one batched call (module docstring)."""
        todo = self._todo
        todo.sort()
        clients = None if len(todo) == self.n else torch.from_numpy(np.array(todo, dtype=np.int64))
        X = self._batch_models(todo, self._models)
        self.channel.send_down(X, clients=clients)  # each worker received the model of its job
        G = self.evaluate(X, clients)
        Gv = G.numpy() if self._np else G
        g, pend = self._g, self._pending
        for r, j in enumerate(todo):
            g[j] = Gv[r]
            pend[j] = False
        self._todo = []

    def evaluate(self, X: torch.Tensor, clients) -> torch.Tensor:
        """The jobs' results at models ``X`` (rows) of ``clients``: a stochastic gradient each,
        sent up through the channel."""
        G = self.problem.minibatch_grads(X, self.params.batch_size, self._gen, clients=clients)
        return self.channel.gather(G, clients=clients)

    # ---- server ------------------------------------------------------------------------------
    def begin(self) -> None:
        """Start the workers at time 0 (default: every worker starts a job at x0)."""
        self.launch_all(0.0)

    def on_arrival(self, i: int, t: float) -> None:
        raise NotImplementedError

    def record(self, i: int, used: bool) -> int:
        """Log worker ``i``'s arrival; returns its delay. A discarded gradient was computed all
        the same: it is evaluated (with the pending batch) so that it is counted."""
        if not used and self._g[i] is None:
            self._evaluate_pending()
        delay = self.k - self._version[i]
        self.delays.append(delay)
        self.delay_workers.append(i)
        self.used.append(used)
        return delay

    def advance(self, updates: int, until: float | None = None) -> int:
        """Handle arrivals until ``updates`` server updates were made or the next arrival would
        come after ``until``; returns the number of updates made."""
        q, k0, a0 = self.queue, self.k, len(self.delays)
        on_arrival = self.on_arrival
        if not q.heap:
            raise RuntimeError(f"{self.name}: no worker is running")
        while self.k - k0 < updates:
            if until is not None and q.peek_time() > until:
                q.now = max(q.now, until)
                break
            t, i = q.pop()
            self.arrivals += 1
            on_arrival(i, t)
        self._log_window(a0)
        return self.k - k0

    def step(self):
        self.advance(1)

    def _log_window(self, a0: int) -> None:
        d = np.frombuffer(self.delays, dtype=np.int64)[a0:] if len(self.delays) > a0 else np.zeros(0)
        w = self.window_log
        w["round"].append(self.k)
        w["arrivals"].append(self.arrivals)
        w["sim_time"].append(self.queue.now)
        w["delay_mean"].append(float(d.mean()) if d.size else math.nan)
        w["delay_max"].append(int(d.max()) if d.size else 0)

    def trace_meta(self) -> dict:
        """Delay statistics for the trace's metadata (``meta['delays']``): over all arrivals,
        over the second half (steady state), per worker (mean), the share of discarded
        arrivals, and per logged window (``windows``: round, arrivals, sim_time, mean and max
        delay since the previous window)."""
        if not hasattr(self, "delays"):
            return {}
        d = np.frombuffer(self.delays, dtype=np.int64)
        if not d.size:
            return {"delays": {"arrivals": 0}}
        w = np.frombuffer(self.delay_workers, dtype=np.int64)
        used = np.frombuffer(self.used, dtype=np.int8).astype(bool)
        counts = np.bincount(w, minlength=self.n)
        per = np.bincount(w, weights=d, minlength=self.n) / np.maximum(counts, 1)
        half = d[d.size // 2:]
        return {"delays": {"arrivals": int(d.size), "updates": int(self.k), "mean": float(d.mean()),
                           "max": int(d.max()), "steady_mean": float(half.mean()), "steady_max": int(half.max()),
                           "discarded": float(1 - used.mean()), "per_worker_mean": per.round(3).tolist(),
                           "per_worker_arrivals": counts.tolist(), "windows": self.window_log}}

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


@register_method
class MinibatchSGD(EventMethod):
    """Synchronous minibatch SGD against simulated time: every worker computes a gradient at
    x^k, the server waits for all n, then x^{k+1} = x^k - gamma * mean_i g_i. One iteration
    lasts as long as the slowest job. Default stepsize min{1/L, eps n / (2 L sigma^2)} (SGD
    with a batch of n; e.g. Tyurin & Richtarik, 2023, "Optimal time complexities of parallel
    stochastic optimization methods under a fixed computation model", Sec. on Minibatch SGD).
    """

    name = "minibatch_sgd"
    paper = "Minibatch SGD (baseline of Tyurin & Richtarik 2023, NeurIPS, 'Optimal time complexities ... fixed computation model')"

    def theory_stepsize(self):
        return self._sgd_stepsize(self.n)

    def begin(self):
        self._acc, self._count = None, 0
        self.launch_all(0.0)

    def on_arrival(self, i, t):
        g = self.gather_all(i)
        if g is not None:
            self._x = self._x - self.gamma * g
            self.k += 1
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
    """

    name = "asgd"
    paper = "Mishchenko, Bach, Even, Woodworth (2022), Asynchronous SGD beats minibatch SGD under arbitrary delays, Alg. 1"

    def theory_stepsize(self):
        return _delay_stepsize(self.problem.L, self.n, self.params.eps, self.sigma2)

    def worker_stepsizes(self) -> list[float]:
        return [self.gamma] * self.n

    def begin(self):
        self._gam = self.worker_stepsizes()
        self.launch_all(0.0)

    def on_arrival(self, i, t):
        self.record(i, True)
        self._x = self._x - self._gam[i] * self.gradient(i)
        self.k += 1
        self.launch(i, t)

    def advance(self, updates, until=None):
        """:meth:`EventMethod.advance` specialized (the benchmark's hot path): the arrival handler
        is inlined and the server updates are applied lazily. Between two batched gradient
        evaluations an arrival only logs (gamma_i, g); the models x^{k+1}, x^{k+2}, ... that the
        restarted jobs need are produced at once by ``np.subtract.accumulate`` over
        [x^k; gamma_1 g_1; gamma_2 g_2; ...], which rounds exactly like applying the updates one
        by one."""
        if type(self).on_arrival is not ASGD.on_arrival or not self._np:
            return super().advance(updates, until)
        q, k0, a0 = self.queue, self.k, len(self.delays)
        h, job, busy = q.heap, q.job, q.busy
        if not h:
            raise RuntimeError(f"{self.name}: no worker is running")
        pop, push = heapq.heappop, heapq.heappush
        dur, link, work, seq = self._dur, self._link, self.job_work, q.seq
        fixed = getattr(self.timing.compute, "_tau", None) if isinstance(self.timing.compute, FixedTimes) else None
        models, version, gs, pend, gam = self._models, self._version, self._g, self._pending, self._gam
        delays, dworkers, used = self.delays, self.delay_workers, self.used
        k, target = self.k, self.k + updates
        log_g: list = []  # gradients applied since the models were last materialized
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
            if g is None:  # a pending gradient: materialize the models, evaluate the batch
                self._materialize(log_g, log_w, late, k)
                log_g, log_w, late = [], [], []
                q.seq = seq
                self._evaluate_pending()
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
                self._todo.append(i)
            jj = job[i] + 1
            job[i] = jj
            busy[i] = True
            push(h, (t + link + (fixed[i] * work if fixed is not None else dur(i, t, work)), seq, i, jj))
            seq += 1
        self._materialize(log_g, log_w, late, k)
        used.extend([1] * (len(delays) - len(used)))
        q.seq, q.now = seq, max(q.now, t)
        self.k = k
        self.arrivals += len(delays) - a0
        self._log_window(a0)
        return k - k0

    def _materialize(self, log_g: list, log_w: list, late: list, k: int) -> None:
        """Apply the logged updates: x^{k-m+r} for r = 1..m (m = len(log_g)), give each job in
        ``late`` its model, and set x = x^k."""
        m = len(log_g)
        if not m:
            return
        U = np.empty((m + 1, self.d), dtype=self._x.dtype)
        U[0] = self._x
        for r, g in enumerate(log_g):
            U[r + 1] = g
        U[1:] *= np.asarray([self._gam[w] for w in log_w], dtype=U.dtype)[:, None]
        np.subtract.accumulate(U, axis=0, out=U)
        base = k - m
        for i in late:
            self._models[i] = U[self._version[i] - base]
        self._x = U[m]


def _delay_stepsize(L: float, R: float, eps: float, sigma2: float) -> float:
    """min{1/(2 R L), eps / (4 L sigma^2)} (Maranjyan, Tyurin, Richtarik, 2025, Thm. 4.1)."""
    g = 1.0 / (2.0 * R * L)
    return min(g, eps / (4.0 * L * sigma2)) if sigma2 > 0 else g


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
    paper = "Mahran, Maranjyan, Richtarik (2026), Rescaled Asynchronous SGD, Alg. 1"
    Params = RescaledParams

    def check(self):
        if self.params.normalize not in ("harmonic", "max"):
            raise ValueError(f"rescaled_asgd: normalize must be 'harmonic' or 'max', got '{self.params.normalize}'")

    def worker_stepsizes(self):
        tau = np.asarray(self.timing.mean, dtype=np.float64) + self._link
        c = len(tau) / np.sum(1.0 / tau) if self.params.normalize == "harmonic" else tau.max()
        return (self.gamma * tau / c).tolist()


class RingmasterParams(AsyncParams):
    #: delay threshold R (gradients with delay >= R are ignored); default max{1, ceil(sigma^2/eps)}
    R: PositiveInt | None = None
    #: stop (and restart at the newest model) jobs whose gradient could only arrive too stale
    stops: bool = False


@register_method
class RingmasterASGD(EventMethod):
    """Ringmaster ASGD: Asynchronous SGD that ignores gradients with delay >= R (the worker
    restarts at the current model either way). With ``stops``, after each update the server
    also stops every job whose delay already reached R and restarts it at the new model.

    Maranjyan, Tyurin, Richtarik (2025), "Ringmaster ASGD: the first asynchronous SGD with
    optimal time complexity", ICML, Algorithm 1 (without stops) / Algorithm 2 (with stops);
    defaults R = max{1, ceil(sigma^2 / eps)} and gamma = min{1/(2 R L), eps / (4 L sigma^2)}
    (Theorem 4.1).
    """

    name = "ringmaster_asgd"
    paper = "Maranjyan, Tyurin, Richtarik (2025), Ringmaster ASGD, ICML, Alg. 1-2, Thm. 4.1"
    Params = RingmasterParams

    @property
    def R(self) -> int:
        return self._noise_count(self.params.R)

    def theory_stepsize(self):
        return _delay_stepsize(self.problem.L, self.R, self.params.eps, self.sigma2)

    def begin(self):
        self._R = self.R
        self._by_version: dict[int, list[int]] = {}
        self.launch_all(0.0)

    def launch(self, i, t, work=None):
        super().launch(i, t, work)
        if self.params.stops:
            self._by_version.setdefault(self.k, []).append(i)

    def on_arrival(self, i, t):
        fresh = self.k - self._version[i] < self._R
        self.record(i, fresh)
        if fresh:
            self._x = self._x - self.gamma * self.gradient(i)
            self.k += 1
            if self.params.stops:  # jobs started at version k - R can now only arrive too stale
                for j in self._by_version.pop(self.k - self._R, ()):
                    if j != i and self.queue.busy[j] and self._version[j] == self.k - self._R:
                        self.cancel(j)
                        self.launch(j, t)
        self.launch(i, t)


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
    paper = "Tyurin, Richtarik (2023), Optimal time complexities of parallel stochastic optimization methods, NeurIPS, Method 4, Thm. 7.2"
    Params = RennalaParams

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
        fresh = self._version[i] == self.k
        self.record(i, fresh)
        if fresh:
            g = self.gradient(i)
            self._acc = g if self._acc is None else self._acc + g
            self._count += 1
            if self._count == self._B:
                self._x = self._x - self.gamma * (self._acc / self._B)
                self.k += 1
                self._acc, self._count = None, 0
        self.launch(i, t)


class MVRParams(RennalaParams):
    #: momentum a in (0, 1]: d^k = g(x^k) + (1 - a)(d^{k-1} - g(x^{k-1})); default min{1, B eps / sigma^2}
    momentum: PositiveFloat | None = None
    #: gradients averaged for d^0 at x^0; default max{B, ceil(sigma^2 / eps)}
    B_init: PositiveInt | None = None
    #: mean-squared smoothness L_sigma (E||g(x;xi) - g(y;xi) - grad f(x) + grad f(y)||^2 <= L_sigma^2 ||x - y||^2);
    #: default: from the problem (``problem.mean_squared_smoothness``, 0 for additive noise)
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
    paper = "Tovmasyan, Maranjyan, Richtarik (2026), Rennala MVR, Alg. 1"
    Params = MVRParams
    job_work = 2.0
    models_per_job = 2

    @property
    def B(self) -> int:
        """Default max{1, ceil(sigma L_sigma / (L sqrt(eps)))}: balances the two terms of the MVR
        oracle complexity, B L Delta / eps + L_sigma Delta sigma / eps^{3/2} (our derivation)."""
        if self.params.B is not None:
            return int(self.params.B)
        return max(1, math.ceil(math.sqrt(self.sigma2) * self.L_sigma / (self.problem.L * math.sqrt(self.params.eps))))

    @property
    def momentum(self) -> float:
        if self.params.momentum is not None:
            return min(1.0, float(self.params.momentum))
        s2 = self.sigma2
        return 1.0 if s2 == 0 else min(1.0, self.B * self.params.eps / s2)

    @property
    def L_sigma(self) -> float:
        if self.params.L_sigma is not None:
            return float(self.params.L_sigma)
        if hasattr(self.problem, "mean_squared_smoothness"):
            return float(self.problem.mean_squared_smoothness)
        if isinstance(self.problem, Quadratic):
            return 0.0  # additive noise: g(x; xi) - g(y; xi) = grad f(x) - grad f(y)
        return float(self.problem.L_max)

    def theory_stepsize(self):
        L, Ls, a = self.problem.L, self.L_sigma, self.momentum
        g = 1.0 / (2.0 * L)
        return min(g, math.sqrt(a * self.B) / (2.0 * Ls)) if Ls > 0 else g

    def begin(self):
        self._a = self.momentum
        s2 = self.sigma2 if self.params.B_init is None else 0.0
        self._Bk = int(self.params.B_init) if self.params.B_init is not None else max(self.B, math.ceil(s2 / self.params.eps))
        self._xprev = self._x
        self._prev_models = [None] * self.n
        self._h = [None] * self.n
        self._d = None
        self._acc = self._acch = None
        self._count = 0
        self.launch_all(0.0)

    def launch(self, i, t, work=None):
        self._prev_models[i] = self._xprev
        super().launch(i, t, 1.0 if self.k == 0 else 2.0)  # the initial batch takes single gradients

    def evaluate(self, X, clients):
        if self.k == 0 and all(self._version[j] == 0 for j in self._todo):
            return super().evaluate(X, clients)  # initial batch: plain gradients at x0
        state = self._gen.get_state()
        G = self.problem.minibatch_grads(X, self.params.batch_size, self._gen, clients=clients)
        after = self._gen.get_state()
        self._gen.set_state(state)  # the same samples at the previous models
        Xp = self._batch_models(self._todo, self._prev_models)
        self.channel.send_down(Xp, clients=clients)
        H = self.problem.minibatch_grads(Xp, self.params.batch_size, self._gen, clients=clients)
        self._gen.set_state(after)
        Hv = H.numpy() if self._np else H
        for r, j in enumerate(self._todo):
            self._h[j] = Hv[r]
        if clients is None:
            clients = torch.arange(self.n)
        return self.channel.gather(torch.cat([G, H]), clients=torch.cat([clients, clients]))[:G.shape[0]]

    def on_arrival(self, i, t):
        fresh = self._version[i] == self.k
        self.record(i, fresh)
        if fresh:
            g = self.gradient(i)
            self._acc = g if self._acc is None else self._acc + g
            if self.k > 0:
                h = self._h[i]
                self._acch = h if self._acch is None else self._acch + h
            self._count += 1
            if self._count == self._Bk:
                gm = self._acc / self._Bk
                if self.k == 0:
                    self._d = gm
                else:
                    self._d = gm + (1.0 - self._a) * (self._d - self._acch / self._Bk)
                self._xprev = self._x
                self._x = self._x - self.gamma * self._d
                self.k += 1
                self._Bk = self.B
                self._acc = self._acch = None
                self._count = 0
        self.launch(i, t)


# ---- heterogeneous data: Ringleader ASGD -----------------------------------------------------------

class RingleaderParams(AsyncParams):
    #: lower bound B on the harmonic mean (1/n sum_i 1/b_i)^{-1} of the table's per-worker counts in
    #: the stepsize; default max{1, tau_n / (2 tau_avg)} from the run's expected compute times
    B: PositiveFloat | None = None


@register_method
class RingleaderASGD(EventMethod):
    """Ringleader ASGD: asynchronous SGD for heterogeneous data (f = (1/n) sum_i f_i) with a
    gradient table, rounds of exactly n updates, and a buffer for fast workers.

    The server keeps, per worker i, the sum G_i and count b_i of the stochastic gradients of f_i it
    received, and steps with the table's average of per-worker means,
    x <- x - gamma (1/n) sum_i G_i / b_i. A round has two phases. Phase 1 (no update): arrivals are
    added to the table and their workers restart at the unchanged x, until every worker has an
    entry; the worker that completes the table triggers the first update of the round and restarts
    at the new model. Phase 2: each other worker's next arrival is added to the table, triggers one
    update and restarts that worker at the new model; a worker already updated in this round that
    delivers again has its gradient stored in a second table (G_i^+, b_i^+) and restarts at the
    current model. After the n-th update of the round the second table replaces the first. No
    worker idles, no gradient is discarded, every update uses every worker's f_i with weight 1/n,
    and the gradients in the table are at most 2n - 2 updates old.

    Maranjyan, Richtárik (2025), "Ringleader ASGD: the first asynchronous SGD with optimal time
    complexity under data heterogeneity", arXiv 2509.22860 (ICLR 2026), the method as described in
    the paper (the listing's algorithm number was not available to us; we followed the authors'
    public simulator for the phase logic). Default stepsize gamma = min{1/(8 n L), eps B / (10 L
    sigma^2)} with B a lower bound on the harmonic mean of the counts b_i, taken as the paper's
    fixed-computation-model bound B >= tau_n / (2 tau_avg) (tau_i the expected compute times, plus
    link time) and at least 1; L is the constant of the paper's heterogeneous smoothness assumption,
    L_f <= L <= sqrt((1/n) sum_i L_i^2): we use the upper end, ``problem.L_tilde`` (conservative).
    The theorem number of the stepsize was not available to us.
    """

    name = "ringleader_asgd"
    paper = "Maranjyan, Richtarik (2025), Ringleader ASGD: the first asynchronous SGD with optimal time complexity under data heterogeneity, arXiv 2509.22860"
    Params = RingleaderParams

    @property
    def B(self) -> float:
        if self.params.B is not None:
            return float(self.params.B)
        if self.timing is None:
            return 1.0
        b = self.channel.d * self.channel.float_bits
        tau = np.asarray(self.timing.mean, dtype=np.float64) + self.timing.link_time(b, b)
        return max(1.0, float(tau.max()) / (2.0 * float(tau.mean())))

    def theory_stepsize(self):
        L, s2 = float(self.problem.L_tilde), self.sigma2
        g = 1.0 / (8.0 * self.n * L)
        return min(g, self.params.eps * self.B / (10.0 * L * s2)) if s2 > 0 else g

    def begin(self):
        n, d = self.n, self.d
        zeros = (lambda: np.zeros((n, d), dtype=self._x.dtype)) if self._np else (
            lambda: torch.zeros(n, d, dtype=self._x.dtype, device=self._x.device))
        self._zeros = zeros
        self._mean, self._cnt = zeros(), [0] * n  # the table: per-worker means of its gradients, counts
        self._gbar = self._mean[0] * 0  # (1/n) sum_i mean_i
        self._next_mean, self._next_cnt = zeros(), [0] * n  # the buffer of the round's second arrivals
        self._next_gbar = self._mean[0] * 0
        self._vmin = math.inf  # oldest model version among the table's gradients
        self._next_vmin = math.inf
        self._phase1 = True
        self._arrived = 0  # workers with a table entry (phase 1)
        self._needs = [True] * n  # workers still to trigger their update of the round (phase 2)
        self._remaining = n
        self.table_delay_max = 0
        self.launch_all(0.0)

    def _add(self, mean, cnt, i, g, gbar):
        """Fold g into worker i's running mean; returns the updated (1/n) sum_i mean_i."""
        c = cnt[i] + 1
        cnt[i] = c
        delta = (g - mean[i]) / c
        mean[i] = mean[i] + delta
        return gbar + delta / self.n

    def _update(self) -> None:
        self.table_delay_max = max(self.table_delay_max, int(self.k - self._vmin))
        self._x = self._x - self.gamma * self._gbar
        self.k += 1

    def on_arrival(self, i, t):
        self.record(i, True)
        g, v = self.gradient(i), self._version[i]
        if self._phase1 or self._needs[i]:
            first = self._cnt[i] == 0
            self._gbar = self._add(self._mean, self._cnt, i, g, self._gbar)
            self._vmin = min(self._vmin, v)
            if self._phase1:
                self._arrived += first
                if self._arrived < self.n:
                    self.launch(i, t)  # the model has not changed
                    return
                self._phase1 = False  # i completed the table: the round's first update
                self._needs = [True] * self.n
                self._remaining = self.n
            self._update()
            self._needs[i] = False
            self._remaining -= 1
            self.launch(i, t)
            if not self._remaining:  # n updates made: the buffer becomes the table
                self._mean, self._next_mean = self._next_mean, self._zeros()
                self._cnt, self._next_cnt = self._next_cnt, [0] * self.n
                self._gbar, self._next_gbar = self._next_gbar, self._next_gbar * 0
                self._vmin, self._next_vmin = self._next_vmin, math.inf
                self._arrived = sum(c > 0 for c in self._cnt)
                self._phase1 = True
            return
        self._next_gbar = self._add(self._next_mean, self._next_cnt, i, g, self._next_gbar)
        self._next_vmin = min(self._next_vmin, v)
        self.launch(i, t)

    def trace_meta(self) -> dict:
        meta = super().trace_meta()
        if "delays" in meta:
            meta["delays"]["table_max"] = int(getattr(self, "table_delay_max", 0))
        return meta


# ---- local training against simulated time ------------------------------------------------------

class AsyncLocalParams(AsyncParams):
    #: local SGD steps per job
    local_steps: PositiveInt = 4
    #: server stepsize eta: x <- x - eta * gamma * (sum of the job's local gradients)
    server_stepsize: PositiveFloat = 1.0


@register_method
class AsyncLocalSGD(EventMethod):
    """Asynchronous Local SGD: a worker takes the current model, runs H local SGD steps
    y_{h+1} = y_h - gamma g(y_h) from it (a job of H units of work) and sends its progress; the
    server applies it at once, x <- x - eta gamma sum_h g(y_h), and sends the new model back.
    H = 1, eta = 1 is Asynchronous SGD. Pending jobs run their local steps in lock-step, one
    batched oracle call per local step.

    Asynchronous local-update SGD as analysed e.g. by Mishchenko et al. (2022), "Asynchronous
    SGD beats minibatch SGD under arbitrary delays" (local-steps extension), and used as the
    asynchronous baseline of the LOSCAR-SGD paper (Maziane et al., 2026). Default stepsize:
    ASGD's with n H in place of n (each job moves the model by H local steps; ours).
    """

    name = "async_local_sgd"
    paper = "Asynchronous Local SGD (asynchronous baseline of Maziane, Mahran, Maranjyan, Richtarik (2026), LOSCAR-SGD)"
    Params = AsyncLocalParams

    @property
    def job_work(self) -> float:  # type: ignore[override]
        return float(self.params.local_steps)

    def theory_stepsize(self):
        return _delay_stepsize(self.problem.L, self.n * self.params.local_steps, self.params.eps, self.sigma2)

    def evaluate(self, X, clients):
        gen, b = self._gen, self.params.batch_size
        Y, total = X, None
        for _ in range(self.params.local_steps):
            G = self.problem.minibatch_grads(Y, b, gen, clients=clients)
            total = G if total is None else total + G
            Y = Y - self.gamma * G
        return self.channel.gather(total, clients=clients)

    def on_arrival(self, i, t):
        self.record(i, True)
        self._x = self._x - (self.params.server_stepsize * self.gamma) * self.gradient(i)
        self.k += 1
        self.launch(i, t)


class _RoundClock:
    """The clock of round-synchronous methods with their own time accounting (``now``)."""

    def __init__(self):
        self.now = 0.0

    def advance(self, usage=None) -> float:
        return self.now


class LoscarParams(AsyncParams):
    #: local steps of the fastest worker in a round's compute window (worker i does floor(H tau_min / tau_i) >= 1)
    local_steps: PositiveInt = 8
    #: keep computing while the model is being communicated (Q_i = floor(comm time / tau_i) extra steps)
    overlap: bool = True
    #: coordinates synchronized per round (a fresh uniformly random set shared by all workers); default d
    k: PositiveInt | None = None
    #: how the averaged coordinates enter a worker that kept computing: "corrected" (LOSCAR) or "overwrite"
    merge: Literal["corrected", "overwrite"] = "corrected"


@register_method
class LoscarSGD(Method):
    """LOSCAR-SGD: Local SGD with communication-computation overlap and delay-corrected sparse
    model averaging. Round r: worker i runs N_i local SGD steps from w_i to y_i, sends the K
    coordinates S_r of y_i (a random set shared by all workers), keeps computing Q_i more steps
    (to z_i) while the message is in flight, and merges the server's average m = mean_i
    [y_i]_{S_r}: corrected w_i <- z_i + P_{S_r}(m - y_i) (the average replaces the worker's own
    stale contribution, its overlap progress is kept) or overwrite [w_i]_{S_r} <- m.

    Maziane, Mahran, Maranjyan, Richtarik (2026), "LOSCAR-SGD: Local SGD with
    communication-computation overlap and delay-corrected sparse model averaging", Algorithm 1.
    Heterogeneous compute: worker i's step takes tau_i (the run's compute-time model, expected
    times); a round is a compute window of H tau_min seconds (N_i = max(1, floor(H tau_min /
    tau_i)) steps) plus the communication of the K coordinates (link model, up and down; Q_i =
    floor(comm / tau_i) overlap steps when ``overlap``). ``overlap: false, k: d`` is synchronous
    Local SGD with heterogeneous local step counts. The model the metrics see is the workers'
    average. Default stepsize 1 / (4 L), the homogeneous-data Local SGD stepsize (Woodworth et al.,
    2020, "Is local SGD better than minibatch SGD?"), the setting of the LOSCAR analysis.
    One round of the runner = one communication round.
    """

    name = "loscar_sgd"
    paper = "Maziane, Mahran, Maranjyan, Richtarik (2026), LOSCAR-SGD, Alg. 1"
    Params = LoscarParams
    event_driven: ClassVar[bool] = True

    def check(self):
        if self.params.merge not in ("corrected", "overwrite"):
            raise ValueError(f"loscar_sgd: merge must be 'corrected' or 'overwrite', got '{self.params.merge}'")
        if self.params.k is not None and self.params.k > self.d:
            raise ValueError(f"loscar_sgd: k = {self.params.k} > d = {self.d}")

    def attach_timing(self, timing: Timing):
        self.timing = timing
        self.clock = _RoundClock()
        return self.clock

    @property
    def now(self) -> float:
        return self.clock.now

    def _plan(self):
        if getattr(self, "timing", None) is None:
            self.attach_timing(Timing(FixedTimes(np.ones(self.n))))
        tau = np.asarray(self.timing.mean, dtype=np.float64)
        K = self.d if self.params.k is None else int(self.params.k)
        bits = K * self.channel.float_bits
        comm = self.timing.link_time(bits, bits)
        window = self.params.local_steps * float(tau.min())
        N = np.maximum(1, np.floor(window / tau + 1e-9)).astype(int)
        Q = np.floor(comm / tau + 1e-9).astype(int) if self.params.overlap else np.zeros(self.n, dtype=int)
        return K, comm, window, N, Q

    def theory_stepsize(self):
        return 1.0 / (4.0 * self.problem.L)

    def init(self, x0):
        self._K, self._comm, self._window, self._N, self._Q = self._plan()
        self.W = x0.reshape(1, -1).repeat(self.n, 1)
        self.x = x0
        self.k, self.arrivals = 0, 0
        self._gen = self.ctx.generator("noise")

    def _local(self, W: torch.Tensor, steps: np.ndarray) -> torch.Tensor:
        """Each worker i takes steps[i] local SGD steps (batched over the workers still stepping)."""
        W = W.clone()
        for h in range(int(steps.max(initial=0))):
            rows = torch.from_numpy(np.nonzero(steps > h)[0])
            full = rows.numel() == self.n
            G = self.problem.minibatch_grads(W if full else W[rows], self.params.batch_size, self._gen,
                                             clients=None if full else rows)
            if full:
                W = W - self.gamma * G
            else:
                W[rows] = W[rows] - self.gamma * G
        return W

    def advance(self, updates, until=None):
        k0 = self.k
        while self.k - k0 < updates:
            t = self.clock.now + self._window + self._comm
            if until is not None and t > until:
                self.clock.now = max(self.clock.now, until)
                break
            Y = self._local(self.W, self._N)
            if self._K < self.d:
                idx = torch.randperm(self.d, generator=self.ctx.generator("method"))[:self._K]
            else:
                idx = torch.arange(self.d)
            bits = float(self._K * self.channel.float_bits)  # K floats (the shared mask needs no indices)
            V = torch.zeros_like(Y)
            V[:, idx] = Y[:, idx]
            sent = self.channel.gather(Message(V, torch.full((self.n,), bits, dtype=torch.float64)))
            avg = sent.mean(0)
            m = self.channel.broadcast(Message(avg.reshape(1, -1), torch.tensor([bits], dtype=torch.float64)))[idx]
            Z = self._local(Y, self._Q)  # overlap steps while the message is in flight
            if self.params.merge == "corrected":
                Z[:, idx] = Z[:, idx] + (m - Y[:, idx])
            else:
                Z[:, idx] = m
            self.W = Z
            self.x = Z.mean(0)
            self.k += 1
            self.arrivals += self.n
            self.clock.now = t
        return self.k - k0

    def step(self):
        self.advance(1)

    def trace_meta(self) -> dict:
        return {"loscar": {"local_steps": self._N.tolist(), "overlap_steps": self._Q.tolist(),
                           "round_time": self._window + self._comm, "comm_time": self._comm, "k": self._K}}
