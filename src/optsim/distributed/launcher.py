"""The launcher: N worker processes on this machine (torch.distributed's elastic launcher, loopback),
and a one-line report when one of them fails."""
from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import socket
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from ..problems import Problem
from .errors import DistributedRunError
from .worker import _worker


#: launches tried, each on a fresh port, when the rendezvous port was taken before its store bound it
_PORT_ATTEMPTS = 3


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
    from ..experiment.runner import SMALL_PROBLEM_FLOPS

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


def _read_traces(path: Path) -> list:
    from ..trace import Trace

    try:
        return [Trace.from_dict(d) for d in json.loads(path.read_text())] if path.exists() else []
    except (OSError, ValueError):
        return []


def _recover(traces: list, tmp: Path, cfg, out: Path, store) -> list:
    """After a failure: when rank 0 died before saving the run in progress, take that run's trace
    from another rank (every rank holds the same trace), save it with the traces, and end its
    results-store row as failed (the row of a dead owner must not stay "running")."""
    from ..experiment.store import run_hash
    from ..trace import safe_filename

    labels = {t.label for t in traces}
    for f in sorted(tmp.glob("result.json.rank*")):
        for t in _read_traces(f):
            if t.label not in labels:
                t.status = "failed"
                t.meta["message"] = ("rank 0 died; trace from rank " + f.name.rsplit("rank", 1)[1] + ": "
                                     + str(t.meta.get("message", "")))
                t.save(Path(out) / "traces" / f"{safe_filename(t.label)}.json")
                traces.append(t)
                labels.add(t.label)
    if store is not None:
        for spec in cfg.methods:
            label = spec.get("label", spec["name"])
            store.end_orphan(run_hash(cfg, spec), next((t for t in traces if t.label == label), None),
                             "rank 0 of a distributed run died before saving the run")
    return traces


def launch(cfg, nproc: int, out: str | Path | None = None, *, problem: Problem | None = None, store=None,
           force: bool | str = False, progress: bool = True, plot: bool = True, timeout: float | None = None,
           compact: bool = True, start_method: str | None = None, fault: tuple[int, int] | None = None) -> list:
    """Run every method of ``cfg`` on ``nproc`` worker processes of this machine (loopback) and
    return rank 0's traces (also written to ``out/traces/``).

    ``store``: a :class:`~optsim.experiment.store.ResultStore` (finished runs are reused unless
    ``force``); ``timeout``: seconds a collective waits (default :func:`~optsim.distributed.default_timeout`);
    ``compact=False`` sends compressed messages as dense rows; ``start_method``: ``fork`` (fast,
    used for CPU workers with one thread each) or ``spawn`` (default otherwise and on GPUs);
    ``fault=(rank, round)`` makes that worker kill itself at that round (tests).
    Raises :class:`DistributedRunError` (one-line message, ``.traces``) when a worker fails.
    """
    from torch.distributed.elastic.multiprocessing import (
        DefaultLogsSpecs,
        SignalException,
    )
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from ..experiment import build_problem
    from ..experiment.runner import validate_methods
    from ..trace import Trace

    nproc = int(nproc)
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    if cfg.byzantine is not None:
        raise ValueError("byzantine: Byzantine clients are simulated by `optsim run` only; remove the byzantine "
                         "block to run on processes")
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

    def config() -> LaunchConfig:
        # is_host: this launch hosts its rendezvous store. Left to guess, the agent whose port was taken
        # in the meantime (another launch, another program) would join that foreign store as a client
        # and hang or fail when its owner goes away; told to host, it fails at once and a new port is tried
        return LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"optsim-{uuid.uuid4().hex[:12]}",
                            rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{_free_port()}",
                            rdzv_configs={"is_host": True}, local_addr="127.0.0.1", max_restarts=0,
                            monitor_interval=0.1, start_method=start_method, shutdown_timeout=5,
                            logs_specs=DefaultLogsSpecs(log_dir=str(tmp / "logs")))
    failures = None
    # Forked workers must never garbage-collect the parent's leftovers (a failed agent's store, whose
    # C++ threads exist only here: collecting it in a child crashes it): collect them here, and
    # freeze what is left out of the children's collections.
    gc.collect()
    gc.freeze()
    try:
        with _quiet_launcher():
            for attempt in range(_PORT_ATTEMPTS):
                try:
                    elastic_launch(config(), _worker)(job)
                    break
                except RendezvousConnectionError:   # the port was taken before the store bound it
                    if attempt == _PORT_ATTEMPTS - 1:
                        raise
    except ChildFailedError as e:
        failures = dict(e.failures)  # plain data: the exception's traceback would keep the agent alive
    except SignalException as e:  # Ctrl-C / SIGTERM reached the launcher: the workers were stopped
        raise KeyboardInterrupt(str(e)) from None
    finally:
        gc.unfreeze()
        gc.collect()
        traces = _read_traces(tmp / "result.json")
        if failures is not None:
            traces = _recover(traces, tmp, cfg, out, store)
        shutil.rmtree(tmp, ignore_errors=True)
    if failures is not None:
        raise DistributedRunError(_describe_failure(failures, traces), traces)
    if plot:
        from ..plots import plot_config

        plot_config(traces, cfg, out)
    return traces
