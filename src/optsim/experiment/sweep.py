"""Sweeps: a grid over config fields, run in parallel processes through the results store.

``optsim sweep CONFIG`` expands ``sweep.grid`` into one run per (grid point, method), runs the
runs that the store does not already hold (``--force`` redoes them) in ``--jobs`` worker
processes, and reports "best of grid" per method: the values of the ``sweep.tune`` keys whose
runs reach the lowest final metric (median over the other grid keys, e.g. seeds). A failed or
diverged run is recorded and never stops the sweep; a worker that dies is replaced and its run
resumes from its last checkpoint; an interrupted sweep resumes where it stopped when the same
command is run again.
"""
from __future__ import annotations

import copy
import itertools
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .config import ConfigError, ExperimentConfig, parse_config, set_path
from .store import DONE, ResultStore, build_id, other_build, redo, run_hash, run_stored

__all__ = ["Job", "expand_sweep", "run_sweep", "best_of_grid", "SweepResult"]


@dataclass
class Job:
    """One run of a sweep: a full single-method config and the grid point it came from."""

    config: dict[str, Any]
    point: dict[str, Any]
    method: str  # the method's label in the base config
    hash: str = ""


@dataclass
class SweepResult:
    jobs: list[Job]
    status: dict[str, str] = field(default_factory=dict)  # hash -> status
    final: dict[str, float] = field(default_factory=dict)  # hash -> final metric value
    stale: dict[str, str] = field(default_factory=dict)  # hash -> build of a reused run made by another build


def _point_label(point: dict[str, Any]) -> str:
    def short(k):
        return k.split(".")[-1]
    return ", ".join(f"{short(k)}={v:g}" if isinstance(v, float) else f"{short(k)}={v}" for k, v in point.items())


def expand_sweep(data: dict[str, Any]) -> tuple[ExperimentConfig, list[Job]]:
    """The base config and one :class:`Job` per grid point and method (every one validated)."""
    base_cfg = parse_config(data)
    if base_cfg.sweep is None:
        raise ConfigError("this config has no 'sweep' section: add sweep: {grid: {KEY: [values]}} or use `optsim run`")
    grid = base_cfg.sweep.grid
    base = copy.deepcopy(data)
    base.pop("sweep")
    jobs = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values))
        d = copy.deepcopy(base)
        for k, v in point.items():
            set_path(d, k, v)
        try:
            c = parse_config(d)
        except ConfigError as e:
            raise ConfigError(f"sweep point {_point_label(point)}: {e}") from None
        for spec, label in zip(c.methods, c.labels()):
            one = copy.deepcopy(d)
            one["methods"] = [dict(spec, label=f"{label} [{_point_label(point)}]")]
            job = Job(one, point, label)
            job.hash = run_hash(parse_config(one), one["methods"][0])
            jobs.append(job)
    return base_cfg, jobs


_PROBLEMS: dict[str, Any] = {}


def _problem_for(cfg: ExperimentConfig):
    """Build (once per process) the problem of a config."""
    from .build import build_problem, problem_key

    key = problem_key(cfg)
    if key not in _PROBLEMS:
        _PROBLEMS.clear()  # keep one problem per worker: grids rarely interleave problems
        _PROBLEMS[key] = build_problem(cfg)
    return _PROBLEMS[key]


def _die_with_parent(parent: int) -> None:
    """Pool worker initializer: the worker ends when the sweep process does (kill -9 included).
    On Linux the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``); everywhere a
    watchdog thread sees the parent change and exits. With the workers gone, the multiprocessing
    resource tracker (whose pipe they hold open) ends too."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    import threading

    threading.Thread(target=watch, name="optsim-parent-watch", daemon=True).start()


def run_job_batch(store_path: str, configs: list[dict[str, Any]], force: bool | str | float = False,
                  threads: int | None = None, batch: int | None = None) -> list[tuple[str, str, float]]:
    """Run sweep jobs that share one problem (in a worker process or inline): in lock-step as
    one batched computation (:mod:`optsim.experiment.batched`) when the problem is large enough
    (or ``batch`` > 1 asks for it), otherwise one after the other. Each run is claimed,
    checkpointed and stored through the results store; returns (hash, status, final metric)."""
    import torch

    from .batched import run_batched
    from .runner import SMALL_PROBLEM_FLOPS

    if threads:
        torch.set_num_threads(threads)
    cfgs = [parse_config(c) for c in configs]
    if threads:
        cfgs = [c.model_copy(update={"threads": threads}) if c.threads == "auto" else c for c in cfgs]
    problem = _problem_for(cfgs[0])
    use_batch = batch > 1 if batch is not None else problem.gradient_flops >= SMALL_PROBLEM_FLOPS
    store = ResultStore(store_path)
    out = []
    if not use_batch or len(cfgs) == 1:
        for c in cfgs:
            t = run_stored(store, problem, c.methods[0], c, progress=False, force=force)
            out.append((run_hash(c, c.methods[0]), t.status, t.last(t.meta.get("metric", "f_gap")) if len(t) else math.nan))
        return out
    mine, resume, hashes = [], [], []
    for c in cfgs:
        h = run_hash(c, c.methods[0])
        state, row = store.claim(h, c, c.methods[0], force=force)
        if state == "claimed":
            mine.append(c)
            hashes.append(h)
            resume.append(row["checkpoint"] if row is not None and row["checkpoint"] else None)
        else:
            out.append((h, row["status"], row["final_metric"] if row["final_metric"] is not None else math.nan))

    def checkpoint(i, session):
        store.save_checkpoint(hashes[i], session.state_bytes(), session.trace)

    every = cfgs[0].checkpoint_every
    try:
        traces = run_batched(problem, [c.methods[0] for c in mine], mine, on_checkpoint=checkpoint,
                             checkpoint_every=every, resume=resume)
    except KeyboardInterrupt:
        raise
    for h, t in zip(hashes, traces):
        t.meta["hash"] = h
        store.save_result(h, t)
        out.append((h, t.status, t.last(t.meta.get("metric", "f_gap")) if len(t) else math.nan))
    return out


def run_sweep(data: dict[str, Any], store: ResultStore, jobs: int | None = None, force: bool | str = False,
              progress: bool = True, max_restarts: int = 3, batch: int | None = None) -> SweepResult:
    """Run every job of the sweep ``data`` that the store does not hold yet.

    ``batch``: runs that share a problem are grouped into lock-step batches of up to this many
    (None: 32 when the problem is large enough for batching to pay, 1 = no batching)."""
    started = time.time()
    base_cfg, all_jobs = expand_sweep(data)
    result = SweepResult(all_jobs)
    todo, stale = [], result.stale
    for job in all_jobs:
        row = store.get(job.hash)
        if row is not None and row["status"] in DONE and not redo(row, force):
            result.status[job.hash] = row["status"]
            result.final[job.hash] = row["final_metric"] if row["final_metric"] is not None else math.inf
            if other_build(row) is not None:
                stale[job.hash] = other_build(row)
        else:
            todo.append(job)
    if stale:
        print(f"optsim: {len(stale)} of the sweep's stored runs were made by another optsim build "
              f"({', '.join(sorted(set(stale.values())))}; this is {build_id()}): reused; "
              "--redo-stale recomputes them", file=sys.stderr)
    n_jobs = max(1, jobs or os.cpu_count() or 1)
    bar = tqdm(total=len(all_jobs), initial=len(all_jobs) - len(todo), desc=f"sweep {base_cfg.name}",
               disable=None if progress else True, file=sys.stderr, dynamic_ncols=True)
    report = _Progress(len(all_jobs), len(all_jobs) - len(todo), base_cfg.name, enabled=progress and bar.disable)

    def done(h, status, final):
        result.status[h] = status
        result.final[h] = final if final is not None and math.isfinite(final) and status == "finished" else math.inf
        bar.update(1)
        report.update(status)
        if report.failed:
            bar.set_postfix_str(f"{report.failed} failed", refresh=False)

    chunks = _chunks(todo, batch)
    n_jobs = max(1, min(n_jobs, len(chunks) or 1))
    threads = max(1, (os.cpu_count() or 1) // n_jobs)

    def finish(chunk, results):
        for h, status, final in results:
            done(h, status, final)

    with bar:
        if n_jobs == 1:
            for chunk in chunks:
                finish(chunk, run_job_batch(str(store.path), [j.config for j in chunk], force, None, batch))
            return result
        restarts = 0
        pending = list(chunks)
        while pending:
            try:
                with ProcessPoolExecutor(n_jobs, mp_context=get_context("spawn"), initializer=_die_with_parent,
                                         initargs=(os.getpid(),)) as pool:
                    futures = {pool.submit(run_job_batch, str(store.path), [j.config for j in ch], force, threads,
                                           batch): ch for ch in pending}
                    for fut in as_completed(futures):
                        chunk = futures[fut]
                        try:
                            finish(chunk, fut.result())
                        except BrokenProcessPool:
                            raise
                        except Exception as e:  # a run's own failure is stored by the store
                            for job in chunk:
                                done(job.hash, "failed", math.nan)
                            print(f"optsim: {chunk[0].config['methods'][0]['label']}: {type(e).__name__}: {e}",
                                  file=sys.stderr)
                        pending.remove(chunk)
            except BrokenProcessPool:
                restarts += 1
                if restarts > max_restarts:
                    raise RuntimeError(f"sweep workers died {restarts} times; {len(pending)} runs left "
                                       "(run the same command again to resume them)") from None
                print(f"optsim: a sweep worker died; restarting {len(pending)} runs (they resume from checkpoints)",
                      file=sys.stderr)
            if force is True:  # after a restart, redo only what this sweep has not written yet
                force = started
    return result


class _Progress:
    """Progress of a sweep without a terminal (a log file, CI): a line every 10 % of the runs or
    every 30 s, with failures and an estimate of the time left (a terminal gets tqdm's bar)."""

    def __init__(self, total: int, reused: int, name: str, enabled: bool):
        self.total, self.done, self.failed, self.name, self.enabled = total, reused, 0, name, enabled
        self.reused, self.start, self.last = reused, time.time(), 0.0
        if enabled and total:
            print(f"sweep {name}: {total} runs, {reused} already in the store", file=sys.stderr, flush=True)

    def update(self, status: str) -> None:
        self.done += 1
        self.failed += status == "failed"
        if not self.enabled:
            return
        now = time.time()
        step = max(1, self.total // 10)
        if self.done == self.total or self.done % step == 0 or now - self.last >= 30:
            self.last = now
            ran = self.done - self.reused
            left = (now - self.start) / ran * (self.total - self.done) if ran else math.nan
            eta = f", about {_duration(left)} left" if self.done < self.total and math.isfinite(left) else ""
            fails = f", {self.failed} failed" if self.failed else ""
            print(f"sweep {self.name}: {self.done}/{self.total} runs done{fails}{eta}", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _chunks(jobs: list[Job], batch: int | None) -> list[list[Job]]:
    """Jobs grouped by the problem they build, in chunks of at most ``batch``; by default 32 when
    the problem is large enough for batching to pay (see ``runner.SMALL_PROBLEM_FLOPS``), else 1."""
    from .build import problem_key
    from .runner import SMALL_PROBLEM_FLOPS

    groups: dict[str, list[Job]] = {}
    for j in jobs:
        groups.setdefault(problem_key(parse_config(j.config)), []).append(j)
    out = []
    for g in groups.values():
        size = batch
        if size is None:
            size = 32 if _problem_for(parse_config(g[0].config)).gradient_flops >= SMALL_PROBLEM_FLOPS else 1
        size = max(1, size)
        out.extend(g[i:i + size] for i in range(0, len(g), size))
    return out


def best_of_grid(base_cfg: ExperimentConfig, result: SweepResult) -> list[dict[str, Any]]:
    """Per method, the values of the tuned keys with the lowest median final metric over the other
    grid keys (diverged and failed runs count as +inf); ``edge`` lists the tuned keys whose best
    value is at the end of its grid (the tuned value is then not a minimum)."""
    tune = base_cfg.sweep.tune
    rows = []
    for method in base_cfg.labels():
        groups: dict[tuple, list[float]] = {}
        for job in result.jobs:
            if job.method != method:
                continue
            key = tuple(job.point[k] for k in tune)
            groups.setdefault(key, []).append(result.final.get(job.hash, math.inf))
        scored = sorted((float(np.median(v)), k) for k, v in groups.items())
        if scored:
            score, key = scored[0]
            edge = [t for t, v in zip(tune, key) if _on_edge(v, [k[tune.index(t)] for k in groups])]
            rows.append({"method": method, **dict(zip(tune, key)), "median_final": score, "runs": len(groups[key]),
                         "edge": edge})
    return rows


def _on_edge(value, values: list) -> bool:
    """Whether a tuned numeric value is the smallest or the largest of its grid (the optimum may
    lie outside: the grid should be widened)."""
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(set(nums)) < 3 or not isinstance(value, (int, float)):
        return False
    return value in (min(nums), max(nums))
