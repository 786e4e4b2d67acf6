"""Batched runs: several runs on the same problem computed together.

Two ways, chosen per group of runs by :func:`run_batched`:

* **Replica-stacked** (runs that differ only in the stepsize or the seed, of a method declaring
  ``replica_batched``, e.g. stepsize grids of GD, DCGD, DIANA, EF21, EF-BV, DASHA or MARINA; with client
  sampling or coins, the runs sharing that seed, which sample the same clients and branches):
  one method instance runs all R replicas as one computation -- the model
  is (R, d), client state (R, n, d), the stepsize an (R, 1) tensor, one gradient call serves all
  replicas (for a GLM, one (n M x d)(d x R) product and one batched product back), and the
  meter, channel and clock count once, since every replica sends and computes the same. Each
  replica keeps its own trace, stop rules and checkpoints (its slice of the stacked state), and
  equals its separate run up to floating-point summation order. Finished replicas leave the stack;
  replicas with the same stepsize (seeds of a method that draws no random numbers) are the same
  run and share one row. A randomized compressor draws each row's random numbers from that
  replica's own generator (one call per replica, then one batched computation).
* **Lock-step** (anything else): each run (a *replica*) keeps its own method, meter, channel and
  clock, and runs its unchanged ``step()`` in a greenlet of its own against a proxy of the
  problem. The proxy counts oracle calls into the replica's meter as usual but, instead of
  computing, switches back to the coordinator with the request (a greenlet switch costs about a
  microsecond; threads convoy on the GIL). Once every live replica is waiting on an oracle (or
  has finished its round), the coordinator executes the requests: full-participation gradient
  requests of all replicas as one call of ``problem._grads_many``, anything else one by one.
  Each replica's own method arithmetic (compression, aggregation, bookkeeping) is not batched.

bench/bench_sweep.py measures both against one run.
"""
from __future__ import annotations

import copy
import json
import warnings
from typing import Any, Callable

import greenlet
import torch

from ..compress import ReplicaMismatch
from ..problems import Problem
from ..state import map_state
from ..trace import Trace
from .config import ExperimentConfig
from .runner import RoundBoundary, Session, evaluate, evaluate_many, threads_for

__all__ = ["run_batched"]


class _Coordinator:
    """Runs each replica's round in a greenlet; an oracle call switches back here with the request."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self.main = greenlet.getcurrent()

    def proxy(self, rid: int) -> Problem:
        """A shallow copy of the problem whose uncounted oracles are executed by the coordinator."""
        p = copy.copy(self.problem)
        p.meter = None
        for kind in ("_grads", "_losses", "_sample_grads", "_hessians"):
            setattr(p, kind, self._requester(kind))
        return p

    def _requester(self, kind: str) -> Callable:
        def request(*args):
            return self.main.switch((kind, args))
        return request

    def round(self, tasks: dict[int, Callable[[], None]]) -> dict[int, BaseException]:
        """Run ``tasks`` (replica -> its round) to completion, executing their oracle requests in
        batches; returns the exceptions of the replicas whose round failed."""
        failed: dict[int, BaseException] = {}
        pending: dict[int, tuple[greenlet.greenlet, tuple]] = {}

        def advance(r, g, send=None, error=None, first=False):
            try:
                if error is not None:
                    out = g.throw(error)
                else:
                    out = g.switch() if first else g.switch(send)
            except Exception as e:  # noqa: BLE001  (the replica's round failed)
                failed[r] = e
                return
            if not g.dead:
                pending[r] = (g, out)

        for r, task in tasks.items():
            advance(r, greenlet.greenlet(task, parent=self.main), first=True)
        while pending:
            reqs, pending = pending, {}
            results = self._execute({r: req for r, (_, req) in reqs.items()})
            for r, (g, _) in reqs.items():
                value, error = results[r]
                advance(r, g, value, error)
        return failed

    def _execute(self, reqs: dict[int, tuple]) -> dict[int, tuple[Any, BaseException | None]]:
        p = self.problem
        out: dict[int, tuple[Any, BaseException | None]] = {}
        full = [r for r, (kind, args) in reqs.items() if kind == "_grads" and args[1] is None]
        if len(full) > 1:
            try:
                G = p._grads_many(torch.stack([reqs[r][1][0] for r in full]))
                out.update({r: (G[i], None) for i, r in enumerate(full)})
            except Exception as e:  # noqa: BLE001  (handed to the replicas)
                out.update({r: (None, e) for r in full})
        for r, (kind, args) in reqs.items():
            if r in out:
                continue
            try:
                out[r] = (getattr(type(p), kind)(p, *args), None)
            except Exception as e:  # noqa: BLE001
                out[r] = (None, e)
        return out


class _StackedProblem:
    """The problem as a replica-stacked method sees it: the gradient and loss oracles take the R
    replicas' client inputs (R, n, d) (gradients also (R, m, d) for m distinct sampled clients) in
    one call and count once (every replica makes the same calls); everything else is the problem's
    own."""

    def __init__(self, problem: Problem, replicas: int):
        self._problem, self.replicas = problem, replicas

    def __getattr__(self, name):
        return getattr(self._problem, name)

    def _check(self, X: torch.Tensor, clients) -> None:
        p = self._problem
        if clients is not None or X.shape != (self.replicas, p.n, p.d):
            raise ValueError(f"a replica-stacked run takes full-participation inputs ({self.replicas}, {p.n}, {p.d}), "
                             f"got {tuple(X.shape)}{'' if clients is None else ' for a subset of clients'}")

    def grads(self, X: torch.Tensor, clients=None) -> torch.Tensor:
        p = self._problem
        if clients is None:
            self._check(X, clients)
            p._count("grad", None, 1.0)
            return p._grads_many(X)
        rows = torch.as_tensor(clients, dtype=torch.long, device=p.device)
        if X.shape != (self.replicas, rows.shape[0], p.d):
            raise ValueError(f"a replica-stacked run takes inputs ({self.replicas}, {rows.shape[0]}, {p.d}) for "
                             f"{rows.shape[0]} clients, got {tuple(X.shape)}")
        if rows.unique().shape[0] != rows.shape[0]:
            raise ReplicaMismatch("replica-stacked gradients of repeated clients")
        p._count("grad", rows, 1.0)
        full = X.new_zeros(self.replicas, p.n, p.d)  # the sampled clients' rows of one stacked pass
        full[:, rows] = X
        return p._grads_many(full)[:, rows]

    def losses(self, X: torch.Tensor, clients=None) -> torch.Tensor:
        self._check(X, clients)
        self._problem._count("func", None, 1.0)
        return self._problem._losses_many(X)


#: config fields that shape a run besides its method and seed (replicas must agree on them)
_RUN_FIELDS = {"dtype", "device", "threads", "float_bits", "stop", "log_every", "time"}
#: method keys replicas of one stack may differ in
_REPLICA_KEYS = ("label", "stepsize", "stepsize_mult")


def _stack_key(spec: dict[str, Any], cfg: ExperimentConfig, method) -> str:
    """Replicas with equal keys can share a stack; with client sampling (coins) they must also
    share the sampler's (method's) seed, so that they sample the same clients (take the same branch)."""
    params = {k: v for k, v in spec.items() if k not in _REPLICA_KEYS}
    shared = [cfg.seeds.get(c, cfg.seed) if used else None
              for c, used in (("sampler", method.samples_clients), ("method", method.draws_coins))]
    return json.dumps([params, cfg.model_dump(include=_RUN_FIELDS, mode="json"), shared], sort_keys=True,
                      default=str)


def _stack_groups(problem: Problem, specs, cfgs, resume) -> list[dict[int, Session]]:
    """Groups (of two or more) of the fresh runs that can run replica-stacked, each run's own
    session built (it holds the replica's stepsize, trace and checkpoints)."""
    groups: dict[str, dict[int, Session]] = {}
    for i, (spec, cfg) in enumerate(zip(specs, cfgs)):
        if resume and resume[i] is not None:
            continue
        try:
            s = Session(problem, spec, cfg)
        except Exception:  # noqa: BLE001  (the lock-step path records the failure)
            continue
        if s.method.replicable():
            groups.setdefault(_stack_key(spec, cfg, s.method), {})[i] = s
    return [g for g in groups.values() if len(g) > 1]


class _Stack:
    """Replicas of one method run as one replica-stacked method (see the module docstring).

    Replicas with the same stepsize (e.g. seeds of a method that draws no random numbers) are
    the same run: they share one row of the stack."""

    def __init__(self, problem: Problem, reps: dict[int, Session]):
        self.problem, self.reps = problem, reps
        keys: list = []
        #: replica id -> its row of the stack
        self.row_of: dict[int, int] = {}
        for i, s in reps.items():
            key = s.method.gamma if s.method.deterministic() else (s.method.gamma, i)
            if key not in keys:
                keys.append(key)
            self.row_of[i] = keys.index(key)
        first = next(iter(reps.values()))
        self.lead = Session(_StackedProblem(problem, len(keys)), first.spec, first.cfg, replicas=len(keys))
        firsts = [min(i for i in reps if self.row_of[i] == r) for r in range(len(keys))]
        self.lead.method.__dict__["gamma"] = torch.tensor([reps[i].method.gamma for i in firsts], dtype=problem.dtype,
                                                          device=problem.device).unsqueeze(1)
        #: each row's random numbers come from its replica's own generators
        self.lead.method.ctx.replicas = [reps[i].method.ctx for i in firsts]
        for s in reps.values():
            s.trace.meta.update(replica_stack=len(keys), replica_runs=len(reps))

    @property
    def rows(self) -> int:
        return self.lead.channel.replicas

    def live(self) -> list[int]:
        return [i for i in self.reps if self.reps[i].running]

    def start(self) -> None:
        self.lead.attach()
        x0 = self.lead.initial_point()
        self.lead.start(x0.expand(self.rows, -1).clone())
        self.end_round()

    def step(self) -> None:
        self.lead.step()
        self.end_round()

    def end_round(self) -> None:
        """Close the round once; log it in every live replica's trace (metrics of all rows in one
        batched evaluation) and apply each replica's stop rules."""
        lead, live = self.lead, self.live()
        log = lead.close_round()
        if log:
            X = lead.method.x
            finite = torch.isfinite(X).all(1)
            metrics = dict(zip(finite.nonzero().flatten().tolist(), evaluate_many(self.problem, X[finite])))
        for i in live:
            s = self.reps[i]
            s.k, s.wall, s._row, s._over = lead.k, lead.wall, dict(lead._row), lead._over
            if log:
                s.record(metrics.get(self.row_of[i]))
        needed = sorted({self.row_of[i] for i in self.live()})
        if len(needed) < self.rows:
            self._keep(needed)

    def _keep(self, rows: list[int]) -> None:
        """Keep only these rows of the stack."""
        index = torch.tensor(rows, dtype=torch.long, device=self.problem.device)
        m = self.lead.method
        m.load_state_dict(map_state(m, lambda v: v[index]))
        m.__dict__["gamma"] = m.gamma[index]  # the replicas' stepsizes (R, 1)
        m.problem.replicas = self.lead.channel.replicas = len(rows)
        m.ctx.replicas = [m.ctx.replicas[r] for r in rows]
        new = {r: j for j, r in enumerate(rows)}
        self.row_of = {i: new[r] for i, r in self.row_of.items() if r in new}

    def materialize(self, i: int) -> Session:
        """Replica i's own session holding its row of the stacked state (for a checkpoint)."""
        s, r = self.reps[i], self.row_of[i]
        s.method.load_state_dict(map_state(self.lead.method, lambda v: v[r].clone()))
        s.meter, s.clock = self.lead.meter, self.lead.clock
        return s

    def run(self, on_checkpoint, checkpoint_every: int) -> None:
        boundary = RoundBoundary()
        try:
            with boundary:
                boundary.round_starts()
                self.start()
                boundary.round_ends()
                while self.live():
                    boundary.round_starts()
                    self.step()
                    if on_checkpoint and checkpoint_every and self.lead.k % checkpoint_every == 0:
                        for i in self.live():
                            on_checkpoint(i, self.materialize(i))
                    boundary.round_ends()
        except KeyboardInterrupt:
            for i in self.live():
                self.reps[i].interrupt()
                if on_checkpoint and boundary.between_rounds:
                    on_checkpoint(i, self.materialize(i))
            raise
        except ReplicaMismatch:
            raise
        except Exception as e:  # noqa: BLE001  (the stack's round failed: every live replica fails)
            for i in self.live():
                self.reps[i].fail(e)
        finally:
            self.problem.attach(None)


def run_batched(problem: Problem, specs: list[dict[str, Any]], cfgs: list[ExperimentConfig],
                on_checkpoint: Callable[[int, Session], None] | None = None, checkpoint_every: int = 0,
                resume: list[bytes | None] | None = None, stack: bool = True) -> list[Trace]:
    """Run ``specs[i]`` under ``cfgs[i]`` (same problem) together; returns their traces.

    Runs that can be replica-stacked are (``stack=False`` forces the lock-step path for all);
    the others run in lock-step. ``on_checkpoint(i, session)`` is called every
    ``checkpoint_every`` rounds of replica i; ``resume[i]`` continues replica i from a checkpoint.
    """
    for attr in ("L", "L_i", "mu", "x_star", "f_star"):  # computed once, shared by the proxies
        getattr(problem, attr)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads_for(cfgs[0], problem))
    traces: dict[int, Trace] = {}
    try:
        for group in (_stack_groups(problem, specs, cfgs, resume) if stack else []):
            try:
                _Stack(problem, group).run(on_checkpoint, checkpoint_every)
            except ReplicaMismatch:  # not stackable after all: these runs go the lock-step way
                continue
            except Exception as e:  # noqa: BLE001
                warnings.warn(f"replica stacking failed ({type(e).__name__}: {e}); running these runs in lock-step")
                continue
            traces.update({i: s.trace for i, s in group.items()})
        rest = [i for i in range(len(specs)) if i not in traces]
        if rest:
            traces.update(_run_lockstep(problem, rest, specs, cfgs, on_checkpoint, checkpoint_every, resume))
    finally:
        torch.set_num_threads(threads_before)
    return [traces[i] for i in range(len(specs))]


def _run_lockstep(problem: Problem, ids: list[int], specs, cfgs, on_checkpoint, checkpoint_every,
                  resume) -> dict[int, Trace]:
    """The lock-step path (see the module docstring) for runs ``ids``."""
    coord = _Coordinator(problem)
    sessions: dict[int, Session | None] = {}
    traces: dict[int, Trace] = {}
    for i in ids:
        spec, cfg = specs[i], cfgs[i]
        try:
            s = Session(coord.proxy(i), spec, cfg)
            s.attach()
            if resume and resume[i] is not None:
                s.restore(resume[i])
            sessions[i] = s
            traces[i] = s.trace
        except Exception as e:  # noqa: BLE001
            t = Trace(spec.get("label", spec["name"]), spec["name"], status="failed")
            t.meta["message"] = f"{type(e).__name__}: {e}"
            sessions[i] = None
            traces[i] = t
    live_sessions = {i: s for i, s in sessions.items() if s is not None}

    def advance(live: list[int], task_of: Callable[[Session], Callable[[], None]]) -> None:
        failed = coord.round({i: task_of(live_sessions[i]) for i in live})
        for i in live:
            s = live_sessions[i]
            if i in failed:
                s.fail(failed[i])
                continue
            if s.close_round():
                s.record(evaluate(problem if s.threat is None else s.eval_problem, s.method.x)
                         if s.x_is_finite() else None)
            if on_checkpoint and checkpoint_every and s.running and s.k % checkpoint_every == 0:
                on_checkpoint(i, s)

    boundary = RoundBoundary()
    try:
        with boundary:
            fresh = [i for i in live_sessions if not (resume and resume[i] is not None)]
            boundary.round_starts()
            if fresh:
                advance(fresh, lambda s: s.start)
            boundary.round_ends()
            while True:
                live = [i for i, s in live_sessions.items() if s.running]
                if not live:
                    break
                boundary.round_starts()
                advance(live, lambda s: s.step)
                boundary.round_ends()
    except KeyboardInterrupt:
        for i, s in live_sessions.items():
            if s.running:
                s.interrupt()
                if on_checkpoint and boundary.between_rounds:
                    on_checkpoint(i, s)
        raise
    return {i: s.trace if s is not None else traces[i] for i, s in sessions.items()}
