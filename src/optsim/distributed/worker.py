"""What one worker process (one rank) runs: join the process group, run every method of the config
on its shard of the clients, and (rank 0) write the traces, the results store and the figures."""
from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ..channel.distributed import Comm, shard_bounds
from ..problems import Problem
from .backend import DistributedBackend
from .errors import DistributedRunError
from .sharding import shard_problem


def default_timeout() -> float:
    """Seconds a collective may wait for the other ranks (``$OPTSIM_DIST_TIMEOUT``, default 60)."""
    return float(os.environ.get("OPTSIM_DIST_TIMEOUT", 60))


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
    peers: list = [None] * dist.get_world_size()
    dist.all_gather_object(peers, (socket.gethostname(), os.getpid()))
    failed = True
    try:
        out = _run_worker(cfg, job, problem)
        failed = False
        return out
    finally:
        if not failed:
            dist.destroy_process_group()
        else:
            _stop_local_peers(peers)
            sys.stdout.flush()
            sys.stderr.flush()
            # the group is broken (a peer died, hung or was stopped): tearing it down can block for as
            # long as a peer does not answer; what this rank had to save is saved: exit now
            os._exit(1)


def _stop_local_peers(peers: list) -> None:
    """A failed rank wakes (SIGCONT: a stopped process cannot handle SIGTERM) and stops (SIGTERM) the
    other ranks of this machine: each saves what it must and exits within :data:`STOP_GRACE`; the
    launcher's own SIGTERM would wait for a stopped rank as long as it stays stopped."""
    host, me = socket.gethostname(), os.getpid()
    for peer_host, pid in peers:
        if peer_host == host and pid != me:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    break


def _run_worker(cfg, job: dict, problem: Problem | None) -> dict:
    from ..experiment import build_problem
    from ..experiment.runner import run_method, validate_methods
    from ..experiment.runs import summary_line as _summary
    from ..trace import safe_filename

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
        from ..experiment.store import ResultStore

        store = ResultStore(job["store"])
    # (rank, round[, "kill" | "hang" | "stop"[, seconds]]): that rank dies, hangs or is stopped (tests); with
    # seconds, the other ranks then sit that long in a wait inside C++ (as in a store or socket wait),
    # where a signal's Python handler cannot run
    fault = job.get("fault")

    def kill_hook(session):
        if fault is not None and rank == fault[0] and session.k >= fault[1]:
            if len(fault) > 2 and fault[2] == "hang":
                time.sleep(3600)
            os.kill(os.getpid(), signal.SIGSTOP if len(fault) > 2 and fault[2] == "stop" else signal.SIGKILL)
        if fault is not None and len(fault) > 3 and rank != fault[0] and session.k == fault[1]:
            try:
                dist.distributed_c10d._get_default_store().wait(["optsim-never-set"],
                                                                datetime.timedelta(seconds=float(fault[3])))
            except RuntimeError:  # DistStoreError: the wait timed out, as the real one would
                pass

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
                from ..experiment.store import run_hash

                h = run_hash(cfg, spec)
                state[0], row = store.claim(h, cfg, spec, force=job.get("force") or False)
            dist.broadcast_object_list(state, src=0)
        if state[0] != "claimed":  # "done" (reused) or "busy" (another process runs it), as run_stored
            if rank == 0:
                from ..experiment.store import mark_reused
                from ..trace import Trace

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
        elif trace.status != "finished" and result_file is not None:
            # every rank holds the same trace: if rank 0 is gone, the launcher saves this one
            _write_json(result_file.with_name(f"{result_file.name}.rank{rank}"),
                        [t.to_dict() for t in traces] + [trace.to_dict()])
        if interrupted is not None:
            raise interrupted
        if trace.status == "failed":  # the group cannot be trusted any more: end the launch
            raise DistributedRunError(f"{trace.label}: failed at round {trace.last('round'):.0f}: "
                                      f"{trace.meta.get('message', '')}")
    if rank == 0 and job.get("plot"):
        from ..plots import plot_config

        for f in plot_config(traces, cfg, out):
            print(f"figure: {f}")
    return {"rank": rank, "world": world, "traces": saved}
