"""Pipeline model parallelism against simulated time: PipeDream's schedule, its delays, the
methods PipeDream (PD) and Randomized PipeDream (RPD), and LocalSGD as the comparison.

Ilin, Richtarik (2026), "Demystifying pipeline parallelism: first theory for PipeDream".

The model x in R^d is split into S contiguous blocks, block s living on stage s. A microbatch
m goes forward through stages 1..S and backward through S..1; PipeDream's steady state is the
one-forward-one-backward (1F1B) schedule: stage s first runs S - s + 1 forwards, then
alternates one backward (of its oldest microbatch) and one forward. Each forward F_s(m) reads
block s (weight stashing: its backward uses the same version), each backward B_s(m) ends with
the update of block s by its part of microbatch m's gradient. Counting every block update as
one iteration (stale block-SGD), the update of block s by microbatch m has delay
(iterations completed before it) - (iterations completed when F_1(m) read block 1): the
gradient was taken at weights up to that many iterations old. With equal stage times, the
delay of stage 1 (the largest) is S^2 - S/2 + O(1) (the paper's scaling; exactly S^2 - S/2
for even S in our simulator: :func:`pipedream_delays`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt

from ...clock import DelayLog, SimulatedClock
from ..base import Method, MethodParams, TimedMethod, register_method

__all__ = ["PipeSchedule", "pipedream_schedule", "pipedream_delays", "PipeDream", "RandomizedPipeDream",
           "LocalSGDPipe", "steady_delay"]


@dataclass
class PipeSchedule:
    """Start/end times of every forward ``F`` and backward ``B`` of PipeDream's 1F1B schedule:
    ``start[op][s, m]``, ``end[op][s, m]`` (stage s = 0..S-1, microbatch m = 0..M-1)."""

    S: int
    M: int
    forward: np.ndarray
    backward: np.ndarray
    start: dict = field(default_factory=dict)
    end: dict = field(default_factory=dict)

    def updates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All block updates in time order: (times, stages, microbatches); ties by stage."""
        t = self.end["B"].ravel()
        s = np.repeat(np.arange(self.S), self.M)
        m = np.tile(np.arange(self.M), self.S)
        order = np.lexsort((s, t))
        return t[order], s[order], m[order]


def pipedream_schedule(S: int, forward=1.0, backward=None, microbatches: int = 100, link: float = 0.0,
                       in_flight: int | None = None) -> PipeSchedule:
    """Simulate PipeDream's 1F1B schedule over ``S`` stages for ``microbatches`` microbatches.

    ``forward``/``backward``: seconds of one forward/backward on each stage (a number or S
    numbers; backward defaults to forward); ``link``: seconds to pass activations or their
    gradients between neighbouring stages. An op starts when its stage is free and its input
    has arrived (F_s(m) after F_{s-1}(m), B_s(m) after B_{s+1}(m), B_S(m) after F_S(m)).
    ``in_flight``: at most this many microbatches between their first forward and their last
    backward (default S, PipeDream's; stage s warms up with min(S - s, in_flight) forwards, so
    its forward of microbatch m comes after its backward of m - in_flight).
    """
    S, M = int(S), int(microbatches)
    W = S if in_flight is None else int(in_flight)
    if W < 1:
        raise ValueError(f"in_flight must be >= 1, got {W}")
    fw = np.broadcast_to(np.asarray(forward, dtype=np.float64), (S,)).copy()
    bw = fw.copy() if backward is None else np.broadcast_to(np.asarray(backward, dtype=np.float64), (S,)).copy()
    if (fw <= 0).any() or (bw <= 0).any():
        raise ValueError("pipeline stage times must be > 0")
    seqs = []
    for s in range(S):
        warm = min(S - s, W, M)
        seq = [("F", m) for m in range(warm)]
        for m in range(M):
            seq.append(("B", m))
            if m + warm < M:
                seq.append(("F", m + warm))
        seqs.append(seq)
    start = {"F": np.full((S, M), np.nan), "B": np.full((S, M), np.nan)}
    end = {"F": np.full((S, M), np.nan), "B": np.full((S, M), np.nan)}
    free = [0.0] * S
    ptr = [0] * S
    total = sum(len(q) for q in seqs)
    done = 0
    while done < total:
        progressed = False
        for s in range(S):
            seq = seqs[s]
            while ptr[s] < len(seq):
                op, m = seq[ptr[s]]
                if op == "F":
                    dep = 0.0 if s == 0 else end["F"][s - 1, m] + link
                else:
                    dep = end["F"][s, m] if s == S - 1 else end["B"][s + 1, m] + link
                if math.isnan(dep):
                    break
                st = max(free[s], dep)
                en = st + (fw[s] if op == "F" else bw[s])
                start[op][s, m], end[op][s, m] = st, en
                free[s] = en
                ptr[s] += 1
                done += 1
                progressed = True
        if not progressed:
            raise RuntimeError("pipeline schedule deadlocked")  # cannot happen for 1F1B
    return PipeSchedule(S, M, fw, bw, start, end)


def pipedream_delays(schedule: PipeSchedule, steady: tuple[float, float] = (0.4, 0.8)) -> dict:
    """Delays of the block updates of ``schedule`` (module docstring), per stage, over the
    microbatches in the ``steady`` fraction of the run: ``delay[s]`` (max), ``delay_mean[s]``,
    ``max`` over stages, and ``local[s]``: updates of block s itself between F_s(m) and B_s(m)
    (the stage's own weight staleness, S - 1 - s in steady state)."""
    S, M = schedule.S, schedule.M
    times, stages, mbs = schedule.updates()
    k_of = np.empty((S, M), dtype=np.int64)
    k_of[stages, mbs] = np.arange(times.size)  # iteration index of each update (0-based)
    read = schedule.start["F"][0]  # F_1(m): the oldest weights microbatch m reads
    k_read = np.searchsorted(times, read, side="right")  # updates completed by then
    lo, hi = int(steady[0] * M), max(int(steady[0] * M) + 1, int(steady[1] * M))
    delay = k_of[:, lo:hi] - k_read[None, lo:hi]
    own = [np.searchsorted(schedule.end["B"][s], schedule.start["F"][s, lo:hi], side="right") for s in range(S)]
    local = [int(np.max(np.arange(lo, hi) - own[s])) for s in range(S)]
    return {"delay": delay.max(1).tolist(), "delay_mean": delay.mean(1).tolist(), "max": int(delay.max()),
            "local": local}


def steady_delay(S: int) -> int:
    """The steady-state PipeDream delay with equal stage times, measured by simulation."""
    return pipedream_delays(pipedream_schedule(S, 1.0, microbatches=6 * S + 20))["max"]


def _blocks(d: int, S: int) -> list[slice]:
    if S > d:
        raise ValueError(f"cannot split d = {d} coordinates into {S} stages")
    edges = np.linspace(0, d, S + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


class PipeParams(MethodParams):
    #: pipeline stages S (the model's coordinates are split into S contiguous blocks)
    stages: PositiveInt = 4
    #: seconds of one forward on each stage (number or list of S); backward: ``backward`` (default: the same)
    forward: PositiveFloat | list[PositiveFloat] = 1.0
    backward: PositiveFloat | list[PositiveFloat] | None = None
    #: seconds to pass activations between neighbouring stages
    link: NonNegativeFloat = 0.0
    #: samples per microbatch
    batch_size: PositiveInt = 1


def _pipe_stepsize(L: float, tau: float, S: int) -> float:
    """gamma = 1 / (2 L (1 + tau / S)): a stale block-SGD step whose delay tau (in block updates)
    is tau / S full-gradient steps (our choice; the paper's Theorem gives the rate in gamma)."""
    return 1.0 / (2.0 * L * (1.0 + tau / S))


class _Pipeline(TimedMethod):
    """Shared wiring of the schedule-driven methods: their time follows the pipeline schedule
    (a :class:`~optsim.clock.SimulatedClock`), their delays a :class:`~optsim.clock.DelayLog`."""

    Params = PipeParams

    def attach_timing(self, timing):
        """Pipelines keep their own stage times (Params); the run's compute model is not used."""
        self.clock = SimulatedClock()
        return self.clock

    @property
    def delays(self):
        """Delay of every block update (iterations since the weights its gradient was taken at)."""
        return self.log.delays

    def _sample_clients(self, m: int) -> torch.Tensor:
        if self.n == 1:
            return torch.zeros(m, dtype=torch.long)
        return torch.randint(self.n, (m,), generator=self.ctx.generator("method"))

    def _grads(self, X: torch.Tensor) -> torch.Tensor:
        """Stochastic gradients of f at the rows of X (each of a uniformly sampled client)."""
        return self.problem.minibatch_grads(X, self.params.batch_size, self.ctx.generator("noise"),
                                            clients=self._sample_clients(X.shape[0]))

    def trace_meta(self) -> dict:
        if not hasattr(self, "log"):
            return {}
        if len(self.log):
            summary = self.log.summary(self.k)
        else:
            summary = {"arrivals": 0, "updates": int(self.k), "mean": 0.0, "max": 0, "steady_mean": 0.0, "steady_max": 0}
        return {"delays": {**summary, **self._extra_meta()}}

    def _extra_meta(self) -> dict:
        return {}


@register_method
class PipeDream(_Pipeline):
    """PipeDream (Harlap et al., 2018) in its 1F1B steady state, simulated exactly: microbatch
    m's gradient is taken at the blocks its forwards read (weight stashing), and block s is
    updated when B_s(m) ends. One iteration = one block update; simulated time follows
    :func:`pipedream_schedule`. The objective is f = mean_i f_i: each microbatch is
    ``batch_size`` samples of a uniformly drawn client.

    Ilin, Richtarik (2026), "Demystifying pipeline parallelism: first theory for PipeDream", the
    PD method (Sec. on PipeDream's schedule); default stepsize 1 / (2 L (1 + tau / S)) with tau
    the steady-state delay (ours; see :func:`_pipe_stepsize`).
    """

    name = "pipedream"
    stepsize_source = "derived"
    paper = "Ilin, Richtarik (2026), Demystifying pipeline parallelism: first theory for PipeDream; Harlap et al. (2018), PipeDream"
    state = ("x", "k", "arrivals", "clock", "log", "_blk", "_sched_M", "_events", "_pos", "_reads", "_kread",
             "_grad", "_left")

    def theory_stepsize(self):
        return _pipe_stepsize(self.problem.L, steady_delay(self.params.stages), self.params.stages)

    def init(self, x0):
        S = self.params.stages
        self._blk = _blocks(self.d, S)
        self.x = x0.clone()
        self.k, self.arrivals = 0, 0
        self.log = DelayLog(1)
        self._sched_M = 0
        self._events: list = []  # (time, kind 0 = update / 1 = read, stage, microbatch)
        self._pos = 0
        self._reads: dict[int, torch.Tensor] = {}  # microbatch -> the weights its forwards read
        self._kread: dict[int, int] = {}
        self._grad: dict[int, torch.Tensor] = {}
        self._left: dict[int, int] = {}
        self._extend(max(64, 8 * S))

    def _extend(self, M: int) -> None:
        """(Re)build the event list for M microbatches (the schedule of the first ones does not change)."""
        p = self.params
        sch = pipedream_schedule(p.stages, p.forward, p.backward, M, p.link)
        ev = []
        for s in range(p.stages):
            for m in range(M):
                ev.append((float(sch.end["B"][s, m]), 0, s, m))
                ev.append((float(sch.start["F"][s, m]), 1, s, m))
        ev.sort()
        done = self._pos
        self._events = ev
        self._pos = done
        self._sched_M = M

    def advance(self, updates, until=None):
        k0 = self.k
        S = self.params.stages
        while self.k - k0 < updates:
            if self._pos >= len(self._events) - 4 * S * S:
                self._extend(2 * self._sched_M)
            t, kind, s, m = self._events[self._pos]
            if until is not None and t > until:
                self.clock.now = max(self.clock.now, until)
                break
            self._pos += 1
            self.clock.now = t
            blk = self._blk[s]
            if kind == 1:  # F_s(m) reads block s
                if s == 0:
                    self._reads[m] = self.x.clone()
                    self._kread[m] = self.k
                    self._left[m] = S
                else:
                    self._reads[m][blk] = self.x[blk]
                continue
            g = self._grad.get(m)
            if g is None:  # the first update of m (stage S): its forwards are complete
                g = self._grads(self._reads.pop(m).reshape(1, -1))[0]
                self._grad[m] = g
                self.arrivals += 1
            self.log.record(self.k - self._kread[m])
            x = self.x.clone()
            x[blk] -= self.gamma * g[blk]
            self.x = x
            self.k += 1
            self._left[m] -= 1
            if not self._left[m]:
                del self._grad[m], self._left[m], self._kread[m]
        return self.k - k0

    def _extra_meta(self):
        return {"pipeline": pipedream_delays(pipedream_schedule(self.params.stages, self.params.forward,
                                                                self.params.backward, 6 * self.params.stages + 20,
                                                                self.params.link))}


class RPDParams(MethodParams):
    stages: PositiveInt = 4
    #: delay tau of every block update (in block updates); default: PipeDream's steady-state delay
    delay: int | None = None
    batch_size: PositiveInt = 1


@register_method
class RandomizedPipeDream(Method):
    """Randomized PipeDream (RPD): stale block-SGD. Each iteration picks a stage s uniformly
    and updates block s with the block-s part of a stochastic gradient taken at the iterate
    tau iterations ago: x_s^{k+1} = x_s^k - gamma [g(x^{k - tau})]_s (other blocks unchanged;
    x^{j} = x^0 for j < 0).

    Ilin, Richtarik (2026), "Demystifying pipeline parallelism: first theory for PipeDream",
    Algorithm RPD; default tau = the steady-state PipeDream delay (S^2 - S/2 + O(1)), default
    stepsize 1 / (2 L (1 + tau / S)) (ours). A round-based method: one round = one block update.
    """

    name = "rpd"
    stepsize_source = "derived"
    paper = "Ilin, Richtarik (2026), Demystifying pipeline parallelism: first theory for PipeDream, RPD"
    Params = RPDParams
    state = ("x", "_blk", "_tau", "_hist", "_h")

    @property
    def tau(self) -> int:
        return steady_delay(self.params.stages) if self.params.delay is None else int(self.params.delay)

    def theory_stepsize(self):
        return _pipe_stepsize(self.problem.L, self.tau, self.params.stages)

    def init(self, x0):
        self._blk = _blocks(self.d, self.params.stages)
        self._tau = self.tau
        self.x = x0
        self._hist = [x0] * (self._tau + 1)  # ring buffer of the last tau + 1 iterates
        self._h = 0

    def step(self):
        S = self.params.stages
        gen = self.ctx.generator("method")
        s = int(torch.randint(S, (1,), generator=gen))
        client = torch.zeros(1, dtype=torch.long) if self.n == 1 else torch.randint(self.n, (1,), generator=gen)
        stale = self._hist[(self._h + 1) % (self._tau + 1)]  # x^{k - tau}
        g = self.problem.minibatch_grads(stale.reshape(1, -1), self.params.batch_size, self.ctx.generator("noise"),
                                         clients=client)[0]
        x = self.x.clone()
        blk = self._blk[s]
        x[blk] -= self.gamma * g[blk]
        self.x = x
        self._h = (self._h + 1) % (self._tau + 1)
        self._hist[self._h] = x


class LocalPipeParams(MethodParams):
    #: pipeline stages S; the LocalSGD baseline runs M = S model replicas through them
    stages: PositiveInt = 4
    #: local steps H of every replica between two averagings (the paper's experiments: H = 5)
    local_steps: PositiveInt = 5
    #: model replicas M sharing the pipeline (default S, the authors' default)
    replicas: PositiveInt | None = None
    forward: PositiveFloat | list[PositiveFloat] = 1.0
    backward: PositiveFloat | list[PositiveFloat] | None = None
    #: seconds to pass activations between neighbouring stages
    link: NonNegativeFloat = 0.0
    #: extra seconds of one model averaging (all-reduce) after the pipeline has drained
    sync_time: NonNegativeFloat = 0.0
    batch_size: PositiveInt = 1


@register_method
class LocalSGDPipe(_Pipeline):
    """LocalSGD on the same S-stage pipeline, the comparison of Ilin & Richtarik (2026): M model
    replicas (default M = S), each split into the S stage blocks like PipeDream's model, share the
    S devices. Microbatch j of a round belongs to replica j mod M; in 1F1B order its forward on
    stage s comes after the backward of the same replica's previous microbatch j - M on that stage
    (:func:`pipedream_schedule` with ``in_flight = min(M, S)``), so every replica runs plain SGD
    without stale weights. After H local steps of every replica (M H microbatches) the pipeline
    drains, the replicas are averaged (plus ``sync_time`` seconds) and the next round starts:
    LocalSGD trades PipeDream's weight staleness for a synchronization bubble every round.

    Simulated exactly like :class:`PipeDream`: block s of replica j mod M is updated when B_s(j)
    ends, with the block-s part of the gradient at the replica's weights that F_s(j) read (its
    current iterate: no other microbatch of the replica is in flight). One iteration = one block
    update; the model the metrics see is the replicas' average at that moment, partial steps of
    replicas in flight included (averaging does not change it), so a comparison at a fixed
    simulated time sees every update finished by then, as in the authors' simulator.

    Ilin, Richtarik (2026), "Demystifying pipeline parallelism: first theory for PipeDream", the
    LocalSGD baseline of the simulated-time comparison (M runs, H local steps, a hard
    synchronization barrier per round, as in the authors' public simulator); local SGD itself:
    Stich (2019), "Local SGD converges fast and communicates little". Default stepsize 1 / (4 L)
    (homogeneous-data Local SGD, Woodworth et al., 2020, "Is local SGD better than minibatch
    SGD?").
    """

    name = "local_sgd_pipe"
    stepsize_source = "reading"
    paper = "Ilin, Richtarik (2026), Demystifying pipeline parallelism: first theory for PipeDream (LocalSGD baseline); Stich (2019), Local SGD"
    Params = LocalPipeParams
    state = ("x", "k", "arrivals", "clock", "log", "_blk", "_ev_t", "_ev_s", "_ev_j", "_round", "_t0", "_pos", "_X",
             "_grad")

    def theory_stepsize(self):
        return 1.0 / (4.0 * self.problem.L)

    @property
    def replicas(self) -> int:
        return self.params.stages if self.params.replicas is None else int(self.params.replicas)

    def init(self, x0):
        p = self.params
        S, H, R = p.stages, p.local_steps, self.replicas
        self._blk = _blocks(self.d, S)
        sch = pipedream_schedule(S, p.forward, p.backward, R * H, p.link, in_flight=min(R, S))
        # the block updates of one round in time order: (end of B_s(j), stage s, microbatch j);
        # the first update of j is on the last stage (its gradient is taken then)
        t, s, j = sch.updates()
        self._ev_t, self._ev_s, self._ev_j = t.tolist(), s.tolist(), j.tolist()
        self._round = float(sch.end["B"].max()) + p.sync_time
        self._t0 = 0.0  # start of the current round
        self._pos = 0  # next block update of the round
        self.x = x0
        self._X = x0.reshape(1, -1).repeat(R, 1)
        self._grad: dict[int, torch.Tensor] = {}  # microbatch of the round -> its gradient
        self.k, self.arrivals = 0, 0
        self.log = DelayLog(1)

    def advance(self, updates, until=None):
        k0, R = self.k, self._X.shape[0]
        while self.k - k0 < updates:
            t = self._t0 + self._ev_t[self._pos]
            if until is not None and t > until:
                self.clock.now = max(self.clock.now, until)
                break
            s, j = self._ev_s[self._pos], self._ev_j[self._pos]
            r, blk = j % R, self._blk[s]
            g = self._grad.get(j)
            if g is None:  # B_S(j): the gradient at the weights F_1(j)..F_S(j) read (replica r's iterate)
                g = self._grads(self._X[r].reshape(1, -1))[0]
                self._grad[j] = g
                self.arrivals += 1
                self.log.record(0)
            X = self._X.clone()
            X[r, blk] -= self.gamma * g[blk]
            self._X = X
            x = self.x.clone()
            x[blk] = X[:, blk].mean(0)
            self.x = x
            if s == 0:  # B_1(j): replica r's step is complete
                del self._grad[j]
            self.k += 1
            self._pos += 1
            self.clock.now = t
            if self._pos == len(self._ev_t):  # the pipeline has drained: average the replicas
                self._X = self.x.reshape(1, -1).repeat(R, 1)
                self._pos = 0
                self._t0 += self._round
        return self.k - k0

    def _extra_meta(self):
        return {"round_time": self._round, "replicas": self.replicas,
                "microbatches_per_round": self.replicas * self.params.local_steps}
