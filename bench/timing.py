"""Timing helpers shared by the benchmark scripts (``from timing import ...`` from bench/)."""
from __future__ import annotations

import statistics
import time

import torch


def block(fn, reps: int) -> float:
    """Mean seconds per call over ``reps`` consecutive calls of ``fn()``."""
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def best_of(fn, reps: int, repeat: int = 3) -> float:
    """Best mean seconds per call over ``repeat`` blocks of ``reps`` calls (after one warm-up call)."""
    fn()
    return min(block(fn, reps) for _ in range(repeat))


def median_time(fn, repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one warm-up run (CUDA-synchronized)."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(fns: dict, repeats: int, device: torch.device) -> dict:
    """Per-call seconds of each function of ``fns`` (name -> callable), timed in turn within each of
    ``repeats`` rounds (after one warm-up call each), so that all of them see the same machine
    load; returns name -> list of ``repeats`` times (ratios: take them round by round)."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for fn in fns.values():
        fn()
    sync()
    out: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            out[name].append(time.perf_counter() - t0)
    return out


def median_ratio(num: list, den: list) -> float:
    """Median over rounds of num[r] / den[r] (times from :func:`interleaved`)."""
    return statistics.median(a / b for a, b in zip(num, den))
