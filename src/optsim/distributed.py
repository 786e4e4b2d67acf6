"""Real multi-process execution: the same method over torch.distributed.

``optsim run CONFIG --backend distributed --nproc N`` (or :func:`launch`) starts N worker
processes on this machine with torch.distributed's elastic launcher (the engine behind
``torchrun``); ``torchrun ... -m optsim.distributed CONFIG`` runs the same workers on several
machines. Each worker:

1. joins the process group (``gloo`` on CPU, ``nccl`` on GPU) with a collective timeout
   (``$OPTSIM_DIST_TIMEOUT`` seconds, 60 by default);
2. builds the same problem and, per method, the same method object over all ``n`` clients, so
   shapes, theory stepsizes and every random stream (sampler, compressor, coins) are identical on
   every rank;
3. owns a contiguous slice of the client rows: :func:`shard_problem` computes the oracles of the
   owned rows only (the other rows are zeros) and the
   :class:`~optsim.channel.distributed.DistributedChannel` combines the owned rows of each message
   with collectives, so every rank ends each round with the same server state;
4. logs metrics combined over ranks; rank 0 writes the traces, the results store and the figures.

Oracle calls are counted for every requested row on every rank (each rank's meter equals the
simulated run's meter: the calls are the same, only who computes them differs), bits by the
accounting model, and the bytes actually handed to collectives in the trace column
``wire_bytes`` (cumulative, all ranks together; metrics and control traffic are reported apart in
``meta["distributed"]``).

A worker that dies makes the collectives of the others fail (at once when its sockets close, or
after the timeout when it hangs): the run ends with status ``failed`` and the trace logged so far
is saved; the launcher stops the other workers and raises :class:`DistributedRunError` with a
one-line message. Checkpoints and resuming are not supported in this mode (a run restarts).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .channel.distributed import Comm, DistributedChannel, DistributedError, shard_bounds
from .problems import Problem

__all__ = ["launch", "shard_problem", "DistributedBackend", "DistributedRunError", "DistributedError",
           "default_timeout", "main"]


class DistributedRunError(RuntimeError):
    """A distributed run did not complete (a worker died or a run failed); ``traces`` holds what
    rank 0 saved."""

    def __init__(self, message: str, traces: list | None = None):
        super().__init__(message)
        self.traces = traces or []


def default_timeout() -> float:
    """Seconds a collective may wait for the other ranks (``$OPTSIM_DIST_TIMEOUT``, default 60)."""
    return float(os.environ.get("OPTSIM_DIST_TIMEOUT", 60))


# ---- the sharded view of a problem ------------------------------------------------------------------
def _slice_rows(problem: Problem, lo: int, hi: int) -> Problem:
    """An uncounted copy of ``problem`` holding only client rows [lo, hi) (views, no copies): every
    tensor attribute whose first dimension is n is sliced. A problem kind whose per-client data is
    not held that way defines ``shard(lo, hi)`` itself."""
    if hasattr(problem, "shard"):
        return problem.shard(lo, hi)
    local = copy.copy(problem)
    n = problem.n
    for k, v in vars(problem).items():
        if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n:
            setattr(local, k, v[lo:hi])
    local.n, local.meter = hi - lo, None
    return local


class _ShardedOracles:
    """Mixin of the sharded view: the row oracles compute the owned rows [lo, hi) only (zeros
    elsewhere); the counted oracles of :class:`Problem` keep counting every requested row."""

    _shard_lo: int
    _shard_hi: int
    _shard_local: Problem
    _shard_full: Problem

    def _shard_call(self, name: str, X: torch.Tensor, rows, extra: tuple, tail: tuple) -> torch.Tensor:
        lo, hi, local = self._shard_lo, self._shard_hi, self._shard_local
        if rows is None:
            out = X.new_zeros((self.n,) + tail)
            if hi > lo:
                out[lo:hi] = getattr(local, name)(X[lo:hi], None, *[e[lo:hi] for e in extra])
            return out
        pos = ((rows >= lo) & (rows < hi)).nonzero().flatten()
        out = X.new_zeros((rows.shape[0],) + tail)
        if pos.numel():
            out[pos] = getattr(local, name)(X[pos], rows[pos] - lo, *[e[pos] for e in extra])
        return out

    def _grads(self, X, rows):
        return self._shard_call("_grads", X, rows, (), (self.d,))

    def _losses(self, X, rows):
        return self._shard_call("_losses", X, rows, (), ())

    def _sample_grads(self, X, rows, idx):
        return self._shard_call("_sample_grads", X, rows, (idx,), (self.d,))

    def _hessians(self, X, rows):
        return self._shard_call("_hessians", X, rows, (), (self.d, self.d))

    def _grads_many(self, Xs):
        out = torch.zeros_like(Xs)
        if self._shard_hi > self._shard_lo:
            out[:, self._shard_lo:self._shard_hi] = self._shard_local._grads_many(Xs[:, self._shard_lo:self._shard_hi])
        return out

    # uncounted global quantities stay global (every rank holds the data)
    def loss(self, x):
        return self._shard_full.loss(x)

    def full_grad(self, x):
        return self._shard_full.full_grad(x)

    def full_hessian(self, x):
        return self._shard_full.full_hessian(x)

    @property
    def gradient_flops(self) -> float:
        return self._shard_local.gradient_flops if self._shard_hi > self._shard_lo else 0.0


_SHARDED: dict[type, type] = {}


def shard_problem(problem: Problem, lo: int, hi: int) -> Problem:
    """The view of ``problem`` for the rank that owns client rows [lo, hi).

    It is the same problem (same n, d, constants, x*, f*; ``isinstance`` still holds) except that
    its row oracles compute only the owned rows and return zeros for the others. The counted
    oracles count every requested row, so every rank's meter equals the simulated run's (oracle
    counts do not depend on the data). Per-sample and minibatch oracles draw their random indices
    for all rows on every rank (same generator calls) and compute the owned rows only.
    """
    if problem.convex:
        problem.x_star  # noqa: B018 -- solve (or load) x*, f* on the full problem before copying
    for attr in ("L_i", "L", "mu"):
        getattr(problem, attr)
    cls = type(problem)
    if cls not in _SHARDED:
        _SHARDED[cls] = type(f"Sharded{cls.__name__}", (_ShardedOracles, cls), {"__module__": __name__})
    view = copy.copy(problem)
    view.__class__ = _SHARDED[cls]
    view._shard_lo, view._shard_hi = int(lo), int(hi)
    view._shard_local = _slice_rows(problem, int(lo), int(hi))
    view._shard_full = problem
    view.meter = None
    return view


# ---- the runner's hook ----------------------------------------------------------------------------
class DistributedBackend:
    """What :class:`~optsim.experiment.runner.Session` asks a backend for: the channel, the metrics
    (combined over ranks) and, after each round, the agreed wall clock and the bytes on the wire."""

    def __init__(self, comm: Comm, cfg, compact: bool = True):
        self.comm, self.cfg, self.compact = comm, cfg, compact
        self.channels: list[DistributedChannel] = []
        self._w: torch.Tensor | None = None

    def channel(self, meter, d: int, float_bits: int) -> DistributedChannel:
        ch = DistributedChannel(meter, d, float_bits, comm=self.comm, compact=self.compact)
        self.channels.append(ch)
        return ch

    def evaluate(self, problem: Problem, x: torch.Tensor) -> dict[str, float]:
        """The simulated runner's metrics: partial sums over the owned rows, one all_gather (with a
        fingerprint of each rank's model, so that ranks holding different models fail loudly),
        summed in rank order (every rank gets the same numbers, hence the same stop decisions)."""
        local, d = problem._shard_local, problem.d
        buf = torch.zeros(d + 4, dtype=x.dtype, device=x.device)
        if local.n:
            xb = x.reshape(1, d).expand(local.n, d)
            buf[:d] = local._grads(xb, None).sum(0)
            buf[d] = local._losses(xb, None).sum()
        buf[d + 1:] = self._fingerprint(x)
        got = self.comm.all_gather(buf.reshape(1, -1), what="metrics (all_gather)", control=True)
        if not bool((got[:, d + 1:] == got[:1, d + 1:]).all()):
            raise DistributedError(f"rank {self.comm.rank}: the ranks hold different models: the method computes its "
                                   "model from client rows outside the channel (e.g. a virtual average of local models "
                                   "between communications), which only the simulated backend can do")
        tot = got[:, : d + 1].sum(0)
        g = tot[:d] / problem.n
        out = {"loss": float(tot[d] / problem.n), "grad_norm_sq": float(g.pow(2).sum())}
        if problem.f_star is not None:
            out["f_gap"] = out["loss"] - problem.f_star
            out["dist_sq"] = float((x - problem.x_star).pow(2).sum())
        extra = getattr(problem._shard_full, "extra_metrics", None)
        if extra is not None:
            out.update(extra(x))
        return out

    def _fingerprint(self, x: torch.Tensor) -> torch.Tensor:
        """Three numbers computed identically from the model: equal on all ranks iff (up to a
        negligible chance) the ranks hold the same model bit for bit."""
        if self._w is None or self._w.shape != x.shape:
            self._w = torch.linspace(1.0, 2.0, x.numel(), dtype=x.dtype, device=x.device).reshape(x.shape)
        return torch.stack([x.sum(), (x * self._w).sum(), x.abs().max()])

    def close_round(self, session) -> dict[str, float]:
        """Agree on the wall clock when a wall-time limit can stop the run (rank 0's clock), and
        report the bytes handed to collectives so far."""
        if self.cfg.stop.max_wall_time is not None:
            t = torch.tensor([session.wall], dtype=torch.float64)
            session.wall = float(self.comm.broadcast(t, what="wall clock (broadcast)")[0])
        return {"wire_bytes": float(self.comm.wire_bytes)}

    def describe(self) -> dict[str, Any]:
        formats: dict[str, int] = {}
        for ch in self.channels:
            for k, v in ch.formats.items():
                formats[k] = formats.get(k, 0) + v
        return {"world_size": self.comm.world, "collective_backend": dist.get_backend(self.comm.group),
                "shards": self.comm.bounds, "wire_bytes": self.comm.wire_bytes,
                "control_bytes": self.comm.control_bytes, "collectives": self.comm.collectives,
                "collective_seconds": self.comm.seconds,
                "formats": formats}


# ---- workers ------------------------------------------------------------------------------------------
#: seconds a worker the launcher stops may still take (rank 0 saving its trace) before it exits
STOP_GRACE = 3.0


def _on_sigterm(signum, frame):
    """The launcher stops the workers when one failed: never raise in the middle of arbitrary code
    (rank 0 may be saving its trace); the next collective fails instead (the peers are gone anyway),
    and a worker still alive after :data:`STOP_GRACE` seconds (hung) exits hard."""
    if Comm.stop_reason is None:
        Comm.stop_reason = f"stopped by {signal.Signals(signum).name} (the launcher stops every worker when one fails)"
        timer = threading.Timer(STOP_GRACE, os._exit, args=(1,))
        timer.daemon = True
        timer.start()


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    tmp.replace(path)


def _worker(job: dict) -> dict:
    """One rank (started by the launcher or by torchrun: RANK, WORLD_SIZE, MASTER_ADDR/PORT set)."""
    if job.get("threads"):  # first: a forked worker must not enter the parent's OpenMP pool (it would hang)
        torch.set_num_threads(int(job["threads"]))
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: the run ends "interrupted", saved
    if job.get("loopback"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    cfg = job["cfg"]
    problem = job.get("problem")
    cuda = str(cfg.device).startswith("cuda")
    if cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        cfg = cfg.model_copy(update={"device": f"cuda:{local_rank}"})
        problem = None
    timeout = datetime.timedelta(seconds=float(job.get("timeout") or default_timeout()))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    failed = True
    try:
        out = _run_worker(cfg, job, problem)
        failed = False
        return out
    finally:
        if not failed:
            dist.destroy_process_group()


def _run_worker(cfg, job: dict, problem: Problem | None) -> dict:
    from .experiment import build_problem
    from .experiment.runner import _summary, run_method, safe_filename, validate_methods

    rank, world = dist.get_rank(), dist.get_world_size()
    if problem is None:
        problem = build_problem(cfg)
        validate_methods(cfg, problem)
    bounds = shard_bounds(problem.n, world)
    view = shard_problem(problem, bounds[rank], bounds[rank + 1])
    out = Path(job["out"])
    result_file = Path(job["result_file"]) if job.get("result_file") else None
    store = None
    if rank == 0 and job.get("store"):
        from .experiment.store import ResultStore

        store = ResultStore(job["store"])
    fault = job.get("fault")  # (rank, round[, "kill" | "hang"]): that rank dies or hangs there (tests)

    def kill_hook(session):
        if fault is not None and rank == fault[0] and session.k >= fault[1]:
            if len(fault) > 2 and fault[2] == "hang":
                time.sleep(3600)
            os.kill(os.getpid(), signal.SIGKILL)

    def save(trace):
        path = out / "traces" / f"{safe_filename(trace.label)}.json"
        trace.save(path)
        saved.append(str(path))

    def publish(trace):
        traces.append(trace)
        if result_file is not None:
            _write_json(result_file, [t.to_dict() for t in traces])
        print(_summary(trace), file=sys.stderr)

    traces, saved = [], []
    for spec in cfg.methods:
        h, state, row = None, ["claimed"], None
        if job.get("store"):  # rank 0 asks the results store; every rank learns whether to run
            if rank == 0:
                from .experiment.store import run_hash

                h = run_hash(cfg, spec)
                state[0], row = store.claim(h, cfg, spec, force=job.get("force") or False)
            dist.broadcast_object_list(state, src=0)
        if state[0] != "claimed":  # "done" (reused) or "busy" (another process runs it), as run_stored
            if rank == 0:
                from .experiment.store import mark_reused
                from .experiment.trace import Trace

                t = store.trace(row) or Trace(spec.get("label", spec["name"]), spec["name"], status="running")
                mark_reused(t, row, state[0] == "done")
                t.label = spec.get("label", spec["name"])
                save(t)  # as the simulated runner does
                publish(t)
            continue
        backend = DistributedBackend(Comm(problem.n, problem.device), cfg, compact=job.get("compact", True))
        interrupted = None
        try:
            trace = run_method(view, spec, cfg, progress=bool(job.get("progress")) and rank == 0, backend=backend,
                               checkpoint=kill_hook if fault else None, checkpoint_every=1 if fault else 0)
        except KeyboardInterrupt as e:
            trace, interrupted = getattr(e, "trace", None), e
            if trace is None:
                raise
        trace.meta["distributed"] = backend.describe()
        if rank == 0:
            save(trace)
            if store is not None:
                trace.meta["hash"] = h
                store.save_result(h, trace)
            publish(trace)
        if interrupted is not None:
            raise interrupted
        if trace.status == "failed":  # the group cannot be trusted any more: end the launch
            raise DistributedRunError(f"{trace.label}: failed at round {trace.last('round'):.0f}: "
                                      f"{trace.meta.get('message', '')}")
    if rank == 0 and job.get("plot"):
        from .plots import plot_config

        for f in plot_config(traces, cfg, out):
            print(f"figure: {f}")
    return {"rank": rank, "world": world, "traces": saved}


# ---- the launcher --------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _quiet_launcher():
    """The elastic agent logs every worker's failure at length; optsim reports it in one line."""
    names = ("torch.distributed.elastic", "torch.multiprocessing.spawn", "torch.distributed.launcher",
             "torchelastic-events-null")
    known = [n for n in logging.root.manager.loggerDict if n.startswith(names)]
    loggers = [logging.getLogger(n) for n in set(names) | set(known)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _worker_threads(cfg, problem: Problem, nproc: int) -> int:
    """Threads per worker: the runner's rule on the worker's shard, never more than cores / N."""
    from .experiment.runner import SMALL_PROBLEM_FLOPS

    per_worker = max(1, (os.cpu_count() or 1) // nproc)
    if cfg.threads != "auto":
        return int(cfg.threads)
    flops = problem.gradient_flops / nproc
    return 1 if problem.device.type == "cpu" and flops < SMALL_PROBLEM_FLOPS else per_worker


def _describe_failure(failures: dict, traces: list) -> str:
    parts = []
    bad = [t for t in traces if t.status == "failed"]
    if bad:
        t = bad[-1]
        parts.append(f"run '{t.label}' failed at round {t.last('round'):.0f} ({t.meta.get('message', '')}); "
                     "its trace up to there is saved")
    else:
        parts.append("no trace of the run in progress (rank 0 stopped)" if traces else "no run completed")
    # the launcher reports the first worker it saw exit; name it when a signal killed it
    for rank, f in sorted(failures.items()):
        if f.exitcode is not None and f.exitcode < 0 and f.signal_name() != "SIGTERM":
            parts.insert(0, f"worker rank {rank} died ({f.signal_name()})")
    return "distributed run failed: " + "; ".join(parts)


def launch(cfg, nproc: int, out: str | Path | None = None, *, problem: Problem | None = None, store=None,
           force: bool | str = False, progress: bool = True, plot: bool = True, timeout: float | None = None,
           compact: bool = True, start_method: str | None = None, fault: tuple[int, int] | None = None) -> list:
    """Run every method of ``cfg`` on ``nproc`` worker processes of this machine (loopback) and
    return rank 0's traces (also written to ``out/traces/``).

    ``store``: a :class:`~optsim.experiment.store.ResultStore` (finished runs are reused unless
    ``force``); ``timeout``: seconds a collective waits (default :func:`default_timeout`);
    ``compact=False`` sends compressed messages as dense rows; ``start_method``: ``fork`` (fast,
    used for CPU workers with one thread each) or ``spawn`` (default otherwise and on GPUs);
    ``fault=(rank, round)`` makes that worker kill itself at that round (tests).
    Raises :class:`DistributedRunError` (one-line message, ``.traces``) when a worker fails.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from .experiment import build_problem
    from .experiment.runner import validate_methods
    from .experiment.trace import Trace

    nproc = int(nproc)
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    out = Path(out or cfg.out)
    problem = problem if problem is not None else build_problem(cfg)
    validate_methods(cfg, problem)
    if nproc > problem.n:
        raise ValueError(f"--nproc {nproc} is more than the {problem.n} clients: each worker needs at least one")
    for attr in ("L_i", "L", "mu", "x_star"):  # computed once here, before the workers start
        getattr(problem, attr) if attr != "x_star" or problem.convex else None
    threads = _worker_threads(cfg, problem, nproc)
    cuda = str(cfg.device).startswith("cuda")
    start_method = start_method or os.environ.get("OPTSIM_DIST_START_METHOD") or (
        "fork" if threads == 1 and not cuda else "spawn")  # fork + multi-threaded OpenMP can hang
    tmp = Path(tempfile.mkdtemp(prefix="optsim-dist-"))
    job = {"cfg": cfg.model_copy(update={"threads": threads}), "threads": threads, "out": str(out),
           "problem": None if cuda else problem,  # forked: shared; spawned: pickled (shared memory)
           "store": str(store.path) if store is not None else None, "force": force, "progress": progress,
           "plot": False, "timeout": timeout, "compact": compact, "fault": fault, "loopback": True,
           "result_file": str(tmp / "result.json")}
    lc = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"optsim-{uuid.uuid4().hex[:12]}",
                      rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{_free_port()}", local_addr="127.0.0.1",
                      max_restarts=0, monitor_interval=0.1, start_method=start_method, shutdown_timeout=5,
                      logs_specs=DefaultLogsSpecs(log_dir=str(tmp / "logs")))
    failures = None
    # Forked workers must never garbage-collect the parent's leftovers (a failed agent's store, whose
    # C++ threads exist only here: collecting it in a child crashes it): collect them here, and
    # freeze what is left out of the children's collections.
    gc.collect()
    gc.freeze()
    try:
        with _quiet_launcher():
            elastic_launch(lc, _worker)(job)
    except ChildFailedError as e:
        failures = dict(e.failures)  # plain data: the exception's traceback would keep the agent alive
    except SignalException as e:  # Ctrl-C / SIGTERM reached the launcher: the workers were stopped
        raise KeyboardInterrupt(str(e)) from None
    finally:
        gc.unfreeze()
        gc.collect()
        rf = tmp / "result.json"
        traces = [Trace.from_dict(d) for d in json.loads(rf.read_text())] if rf.exists() else []
        shutil.rmtree(tmp, ignore_errors=True)
    if failures is not None:
        raise DistributedRunError(_describe_failure(failures, traces), traces)
    if plot:
        from .plots import plot_config

        plot_config(traces, cfg, out)
    return traces


# ---- torchrun entry point ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``torchrun [--nnodes ...] -m optsim.distributed CONFIG``: one worker of a multi-machine run."""
    from .experiment import load_config
    from .experiment.store import force_mode

    p = argparse.ArgumentParser(prog="python -m optsim.distributed",
                                description="One optsim worker under torchrun (see README: several machines).")
    p.add_argument("config")
    p.add_argument("--out")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--store", help="results database written by rank 0 (default: none)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--redo-stale", action="store_true")
    p.add_argument("--timeout", type=float, default=None, help="seconds a collective waits (default 60)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    if "RANK" not in os.environ:
        print("optsim.distributed: start it with torchrun (or use `optsim run CONFIG --backend distributed`)",
              file=sys.stderr)
        return 2
    cfg = load_config(args.config, args.set)
    job = {"cfg": cfg, "out": str(Path(args.out or cfg.out)), "store": args.store,
           "force": force_mode(args.force, args.redo_stale),
           "progress": not args.quiet, "plot": not args.no_plot, "timeout": args.timeout, "compact": True}
    try:
        _worker(job)
    except (DistributedRunError, DistributedError) as e:
        print(f"optsim: error: rank {os.environ.get('RANK')}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
