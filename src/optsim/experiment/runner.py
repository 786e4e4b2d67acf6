"""Running methods on a problem: the loop, the metrics, the stop rules, divergence, checkpoints.

One round = ``method.step()`` followed by closing the meter's round (bits and oracle calls)
and advancing the clock by the round's simulated time. Round 0 is the method's
initialization (whatever it communicates or computes there is charged too). Metrics are
evaluated every ``log_every`` rounds, outside the timed part (``wall_time`` is the time spent
in the method's own steps).

:class:`Session` holds one run's state so that the plain loop (:func:`run_method`), the
batched lock-step runner (:mod:`optsim.experiment.batched`) and the results store
(checkpoint / resume) share one implementation of the bookkeeping.
"""
from __future__ import annotations

import io
import math
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..allocator import keep_freed_memory
from ..channel import Channel
from ..meter import Meter
from ..methods.base import build_method
from ..problems import Problem
from ..privacy import PrivacyAccountant, Privatizer
from ..robust.threat import Threat
from ..sampling import Independent, Nice
from ..trace import Trace
from .config import ExperimentConfig

__all__ = ["Session", "run_method", "evaluate", "evaluate_many", "validate_methods", "threads_for", "RoundBoundary"]


#: below this many flops per batched gradient, one CPU thread is faster than several
SMALL_PROBLEM_FLOPS = 2e6
_DEFAULT_THREADS = torch.get_num_threads()


def threads_for(cfg: ExperimentConfig, problem: Problem) -> int:
    if cfg.threads != "auto":
        return int(cfg.threads)
    if problem.device.type != "cpu" or problem.gradient_flops >= SMALL_PROBLEM_FLOPS:
        return _DEFAULT_THREADS
    return 1


def evaluate(problem: Problem, x: torch.Tensor) -> dict[str, float]:
    """The metrics of model ``x`` (not counted as oracle calls)."""
    g = problem.full_grad(x)
    out = {"loss": problem.loss(x), "grad_norm_sq": float(g.pow(2).sum())}
    if problem.f_star is not None:
        out["f_gap"] = out["loss"] - problem.f_star
    if problem.x_star is not None:  # also a VI's z* (f_star None: its loss is a payoff, without a gap)
        out["dist_sq"] = float(problem.dist_sq(x))
    out.update(problem.extra_metrics(x))  # e.g. held-out accuracy of neural problems
    return out


def evaluate_many(problem: Problem, X: torch.Tensor) -> list[dict[str, float]]:
    """:func:`evaluate` for the models X (R, d) at once (batched runs)."""
    Xs = X.unsqueeze(1).expand(X.shape[0], problem.n, problem.d)
    g = problem._grads_many(Xs).mean(1)
    loss = problem._losses_many(Xs).mean(1)
    if problem.nonsmooth is not None:  # f + Psi, as problem.loss
        loss = loss + problem.nonsmooth.value(X.to(loss.dtype))
    rows = [{"loss": f, "grad_norm_sq": gn} for f, gn in zip(loss.tolist(), g.pow(2).sum(-1).tolist())]
    if problem.x_star is not None:
        for row, dist in zip(rows, problem.dist_sq(X).tolist()):
            if problem.f_star is not None:
                row["f_gap"] = row["loss"] - problem.f_star
            row["dist_sq"] = dist
    for row, x in zip(rows, X):
        row.update(problem.extra_metrics(x))
    return rows


def make_privatizer(cfg: ExperimentConfig, method) -> Privatizer:
    """The run's Gaussian mechanism (``cfg.privacy``) with its accountant: the sampling rate of one
    release is the method's client sampling (nice: fixed-size, C/n; independent: Poisson with the
    largest p_i; none: 1)."""
    pc, s, n = cfg.privacy, method.sampler, method.n
    if s is None or s.is_full:
        rate, sampling = 1.0, "poisson"
    elif isinstance(s, Nice):
        rate, sampling = s.tau / n, "fixed"
    elif isinstance(s, Independent):
        rate, sampling = float(s.probs.max()), "poisson"
    else:
        rate, sampling = 1.0, "poisson"  # a deterministic schedule: no amplification is claimed
    accountant = None
    if pc.noise_multiplier > 0:
        accountant = PrivacyAccountant(pc.noise_multiplier, rate, pc.delta, accountant=pc.accountant,
                                       sampling=sampling if rate < 1 else "poisson", population=n)
    privatizer = Privatizer(pc.noise_multiplier, clip=pc.clip, normalize=pc.normalize, where=pc.where,
                            generator=method.ctx.generator("privacy"), accountant=accountant)
    method.check_privacy(privatizer)
    return privatizer


def honest_problem(problem: Problem, threat: Threat) -> Problem:
    """The objective of the honest clients under ``threat`` (the metrics of a Byzantine run)."""
    try:
        return problem.subset(threat.honest).with_nonsmooth(problem.nonsmooth)  # f + Psi of the honest clients
    except NotImplementedError:
        raise ValueError(f"byzantine: {problem.name} cannot evaluate the honest clients' objective alone") from None


def _primary_metric(cfg: ExperimentConfig, problem: Problem) -> str:
    m = cfg.stop.metric
    if m == "auto":  # a VI's z* without an f*: dist_sq
        return "f_gap" if problem.f_star is not None else "dist_sq" if problem.x_star is not None else "grad_norm_sq"
    if (m == "f_gap" and problem.f_star is None) or (m == "dist_sq" and problem.x_star is None):
        raise ValueError(f"stop.metric '{m}' needs a known optimum; {problem.name} has none: use grad_norm_sq")
    return m


class Session:
    """One run of one method on ``problem`` under ``cfg``: its meter, channel, clock, method and trace."""

    def __init__(self, problem: Problem, spec: dict[str, Any], cfg: ExperimentConfig, trackers: list | None = None,
                 backend=None, replicas: int = 0):
        self.problem, self.spec, self.cfg = problem, spec, cfg
        keep_freed_memory()  # large per-round buffers stay mapped between rounds (allocator.py)
        #: None (simulated), or a real transport (:class:`optsim.distributed.DistributedBackend`): it
        #: makes the channel, evaluates the metrics and reports the bytes on the wire
        self.backend = backend
        #: :class:`~optsim.experiment.trackers.Tracker` objects that receive every logged row
        self.trackers = list(trackers or [])
        self._trackers_started = False
        self.trace = Trace(spec.get("label", spec["name"]), spec["name"])
        self.meter = Meter(problem.n)
        #: 0: one run; R > 0: the method runs R replica-stacked copies (:mod:`optsim.experiment.batched`)
        self.replicas = int(replicas)
        self.channel = (Channel(self.meter, problem.d, cfg.float_bits, self.replicas) if backend is None
                        else backend.channel(self.meter, problem.d, cfg.float_bits))
        #: the Byzantine threat model (None: every client honest); metrics are the honest clients' f
        self.threat = Threat.from_config(cfg.byzantine, problem.n) if cfg.byzantine is not None else None
        self.channel.threat = self.threat
        self.eval_problem = problem if self.threat is None else honest_problem(problem, self.threat)
        self.metric = _primary_metric(cfg, self.eval_problem)
        self.log_every = cfg.log_every or max(1, cfg.stop.max_rounds // 200)
        self.k, self.wall, self.first = 0, 0.0, None
        self.trace.meta["metric"] = self.metric
        self.method = build_method(spec, problem, self.channel, cfg.seed, cfg.float_bits, cfg.seeds)
        #: rounds (the meter's usage, timed by the time model) or the method's own simulated time
        self.clock = self.method.make_clock(cfg.time, cfg.seeds.get("clock", cfg.seed))
        if self.threat is not None:
            self.threat.generator = self.method.ctx.generator("attack")
            self.trace.meta["byzantine"] = self.threat.describe()
        #: the differential-privacy mechanism of the channel (None: not private) and its accountant
        self.privacy = make_privatizer(cfg, self.method) if cfg.privacy is not None else None
        self._releases_per_round = 1
        self.channel.privacy = self.privacy
        if self.privacy is not None:
            self.trace.meta["privacy"] = self.privacy.describe() + f", delta={cfg.privacy.delta:g}"
        self.trace.meta.update(stepsize=self.method.gamma, paper=self.method.paper, config=spec)

    @property
    def running(self) -> bool:
        return self.trace.status == "running"

    def attach(self) -> None:
        """Make the problem count into this session's meter."""
        self.problem.attach(self.meter)

    def initial_point(self) -> torch.Tensor:
        """The problem's own initial point (e.g. a neural network's initialization), else zero."""
        x0 = self.problem.initial_point()
        if x0 is None:
            x0 = torch.zeros(self.problem.d, dtype=self.problem.dtype, device=self.problem.device)
        return x0

    def start(self, x0: torch.Tensor | None = None) -> None:
        """Round 0: the method's initialization."""
        if x0 is None:
            x0 = self.initial_point()
        t0 = time.perf_counter()
        self.method.init(x0.clone())
        self.wall += time.perf_counter() - t0

    def step(self) -> None:
        """One round of the method, or (a method owning simulated time) its server updates up to the
        next logged round without passing ``max_sim_time`` (timed)."""
        t0 = time.perf_counter()
        span = min(self.log_every - self.k % self.log_every, self.cfg.stop.max_rounds - self.k)
        released = 0 if self.privacy is None else self.privacy.releases
        done = self.method.advance(span, self.cfg.stop.max_sim_time)
        self.wall += time.perf_counter() - t0
        self.k += done
        if self.privacy is not None:  # releases per round, to stop before a round overspends the budget
            self._releases_per_round = -(-(self.privacy.releases - released) // max(done, 1))

    def close_round(self) -> bool:
        """Fold the round into the meter and clock; True when this round must be logged."""
        self.clock.advance(self.meter.close_round())
        stop = self.cfg.stop
        snap = self.meter.snapshot()
        if self.backend is not None:  # agreed wall clock, bytes handed to collectives
            snap.update(self.backend.close_round(self))
        snap.update(self.method.counters())
        self._row = {"round": self.k, **snap, "sim_time": self.clock.now, "wall_time": self.wall}
        self._over = ((stop.max_bits is not None and snap["bits_up"] >= stop.max_bits)
                      or (stop.max_sim_time is not None and self.clock.now >= stop.max_sim_time)
                      or (stop.max_wall_time is not None and self.wall >= stop.max_wall_time)
                      or self.k >= stop.max_rounds)
        logged = self.k % self.log_every == 0 or self._over
        if self.privacy is not None and (logged or stop.max_epsilon is not None):
            eps = self.privacy.epsilon()
            self._row["epsilon"] = eps
            if stop.max_epsilon is not None and (
                    eps >= stop.max_epsilon
                    or self.privacy.epsilon(more=self._releases_per_round) > stop.max_epsilon):
                self._over, logged = True, True
                self.trace.meta["privacy_budget_reached"] = self.k
        return logged

    def x_is_finite(self) -> bool:
        return bool(torch.isfinite(self.method.x).all())

    def record(self, metrics: dict[str, float] | None) -> None:
        """Log the round with ``metrics`` (None: the iterate is not finite) and apply the stop rules."""
        row, t = self._row, self.trace
        if metrics is not None:
            row.update(metrics)
        if self.trackers and not self._trackers_started:
            for tr in self.trackers:
                tr.start(t.label, self.spec)
            self._trackers_started = True
        for tr in self.trackers:
            tr.log(row)
        if metrics is None:
            t.append(row)
            self._end("diverged", f"non-finite iterate at round {self.k}")
            return
        t.append(row)
        value = row[self.metric]
        self.first = value if self.first is None else self.first
        if not math.isfinite(value) or (self.first > 0 and value > self.cfg.stop.blowup * self.first):
            self._end("diverged", f"{self.metric} blew up to {value:.3g} at round {self.k}")
        elif self.cfg.stop.tol is not None and value <= self.cfg.stop.tol:
            t.meta["reached_tol"] = True
            self._end("finished")
        elif self._over:
            self._end("finished")

    def end_round(self) -> None:
        """close_round + evaluate + record, for the plain loop."""
        if self.close_round():
            ev = evaluate if self.backend is None else self.backend.evaluate
            self.record(ev(self.eval_problem, self.method.x) if self.x_is_finite() else None)

    def _end(self, status: str, message: str | None = None) -> None:
        self.trace.status = status
        if self._trackers_started:
            for tr in self.trackers:
                tr.finish(status)
            self._trackers_started = False
        if message:
            self.trace.meta["message"] = message
        self.trace.meta["wall_time"] = self.wall
        self.trace.meta.update(self.method.trace_meta())

    def fail(self, exc: BaseException) -> None:
        self._end("failed", f"{type(exc).__name__}: {exc}")
        self.trace.meta["traceback"] = traceback.format_exc()

    def interrupt(self) -> None:
        self._end("interrupted", f"interrupted at round {self.k}")

    # ---- checkpoints ---------------------------------------------------------------------------
    def state_bytes(self) -> bytes:
        """Everything needed to continue this run bit-for-bit: the method's declared state, its
        components (a sampler may keep state between rounds), the generators, the meter, the clock
        and the trace (one pickle, so shared objects such as generators stay shared)."""
        m = self.method
        state = {"method": m.state_dict(), "components": (m.compressor, m.down_compressor, m.sampler, m.aggregator),
                 "generators": m.ctx._generators, "meter": self.meter, "clock": self.clock,
                 "releases": None if self.privacy is None else self.privacy.releases,
                 "k": self.k, "wall": self.wall, "first": self.first, "trace": self.trace.to_dict()}
        buf = io.BytesIO()
        torch.save(state, buf)
        return buf.getvalue()

    def restore(self, blob: bytes) -> None:
        """Continue from :meth:`state_bytes` (on a freshly built session of the same run)."""
        s = torch.load(io.BytesIO(blob), weights_only=False, map_location=self.problem.device)
        m = self.method
        m.load_state_dict(s["method"])
        m.compressor, m.down_compressor, m.sampler, m.aggregator = s["components"]
        m.ctx.compressor, m.ctx.down_compressor, m.ctx.sampler, m.ctx.aggregator = s["components"]
        m.ctx._generators = s["generators"]
        if self.threat is not None:
            self.threat.generator = m.ctx.generator("attack")
        if self.privacy is not None:
            self.privacy.generator = m.ctx.generator("privacy")
            self.privacy.restore(s["releases"])
        self.meter, self.clock = s["meter"], s["clock"]
        self.channel.meter = self.meter
        if self.problem.meter is not None:
            self.problem.attach(self.meter)
        self.k, self.wall, self.first = s["k"], s["wall"], s["first"]
        self.trace = Trace.from_dict(s["trace"])
        self.trace.status = "running"
        self.trace.meta.pop("message", None)
        self.trace.meta["resumed_from"] = self.k


class RoundBoundary:
    """Ctrl-C waits for the end of the round, so that a run stops in a state it can resume exactly.

    Inside ``with RoundBoundary() as stop:`` (main thread only) the first SIGINT is held: the loop
    calls ``stop.check()`` between rounds, which raises KeyboardInterrupt there. A second Ctrl-C
    interrupts at once. ``between_rounds`` tells an interrupted run whether its state is a round
    boundary (checkpoint it) or half a round (keep the last checkpoint: resuming from a half-done
    round would count its work twice).
    """

    def __init__(self):
        self.pending = False
        self.between_rounds = True
        self._previous = None

    def _handler(self, signum, frame):
        if self.pending or self.between_rounds:
            if callable(self._previous) and self._previous is not signal.default_int_handler:
                return self._previous(signum, frame)
            raise KeyboardInterrupt
        self.pending = True

    def __enter__(self) -> "RoundBoundary":
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, None):
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> bool:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False

    def round_starts(self) -> None:
        self.between_rounds = False

    def round_ends(self) -> None:
        """The round is complete: a held Ctrl-C interrupts now."""
        self.between_rounds = True
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


def run_method(problem: Problem, spec: dict[str, Any], cfg: ExperimentConfig, progress: bool = True,
               x0: torch.Tensor | None = None, *, resume: bytes | None = None,
               checkpoint: Callable[[Session], None] | None = None, checkpoint_every: int = 0,
               trackers: list | None = None, backend=None,
               on_end: Callable[[Session], None] | None = None) -> Trace:
    """Run one method (its config mapping ``spec``) on ``problem`` under ``cfg``'s stop rules.

    ``resume``: continue from a checkpoint; ``checkpoint(session)`` is called every
    ``checkpoint_every`` rounds and when the run is interrupted at a round boundary (Ctrl-C waits
    for the round to end: :class:`RoundBoundary`; an interruption inside a round keeps the last
    checkpoint). A failed run returns its trace with status ``failed``; an interrupted one is
    marked ``interrupted`` and the KeyboardInterrupt goes on (``exc.trace`` holds the trace).
    ``backend``: a real transport for this rank's part of a multi-process run
    (:mod:`optsim.distributed`); None simulates. ``on_end(session)`` is called once the run has
    ended without an exception, e.g. to keep the final model (``session.method.x``).
    """
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads_for(cfg, problem))
    session = None
    boundary = RoundBoundary()
    try:
        with boundary:
            session = Session(problem, spec, cfg, trackers, backend=backend)
            session.attach()
            boundary.round_starts()
            if resume is not None:
                session.restore(resume)
            else:
                session.start(x0)
                session.end_round()
            boundary.round_ends()
            bar = tqdm(total=cfg.stop.max_rounds, initial=session.k, desc=session.trace.label,
                       disable=None if progress else True, leave=False, file=sys.stderr, dynamic_ncols=True)
            with bar:
                while session.running:
                    boundary.round_starts()
                    session.step()
                    session.end_round()
                    if checkpoint is not None and checkpoint_every and session.k % checkpoint_every == 0 \
                            and session.running:
                        checkpoint(session)
                    if session.k % session.log_every == 0:
                        bar.update(session.k - bar.n)
                        bar.set_postfix_str(f"{session.metric}={session.trace.last(session.metric):.3e}",
                                            refresh=False)
                    boundary.round_ends()
            if on_end is not None:
                on_end(session)
        return session.trace
    except KeyboardInterrupt as e:
        if session is not None:
            session.interrupt()
            if checkpoint is not None and boundary.between_rounds:
                checkpoint(session)
            e.trace = session.trace
        raise
    except Exception as e:  # a failed run keeps its trace and does not stop the others
        if session is None:
            session_trace = Trace(spec.get("label", spec["name"]), spec["name"])
            session_trace.status = "failed"
            session_trace.meta["message"] = f"{type(e).__name__}: {e}"
            return session_trace
        session.fail(e)
        return session.trace
    finally:
        torch.set_num_threads(threads_before)
        problem.attach(None)


def validate_methods(cfg: ExperimentConfig, problem: Problem) -> None:
    """Build every method once (components, parameters, theory stepsize) so that a bad config
    (k > d, a biased compressor where an unbiased one is needed, ...) fails before any run."""
    from .config import ConfigError

    try:
        threat = None if cfg.byzantine is None else Threat.from_config(cfg.byzantine, problem.n)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for i, spec in enumerate(cfg.methods):
        try:
            channel = Channel(Meter(problem.n), problem.d, cfg.float_bits)
            channel.threat = threat
            method = build_method(spec, problem, channel, cfg.seed, cfg.float_bits, cfg.seeds)
            if cfg.privacy is not None:
                make_privatizer(cfg, method)
            if not math.isfinite(method.gamma) or method.gamma <= 0:
                raise ValueError(f"stepsize {method.gamma} is not a positive number")
        except (ValueError, TypeError, NotImplementedError) as e:
            raise ConfigError(f"methods[{i}] ({spec.get('label', spec['name'])}): {e}") from None
