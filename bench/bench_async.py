"""Arrivals per second of Asynchronous SGD (issue 6 target: >= 50,000 on 2 cores).

Problem: the homogeneous stochastic quadratic of the asynchronous papers' time experiments,
d = 100, 1000 workers, additive Gaussian noise (``StochasticQuadratic``). Compute times: equal
(tau_i = 1: every gradient batch holds all 1000 pending jobs) and tau_i = sqrt(i) (batches hold
the jobs started during the fastest worker's job, ~60 here).

Reported: arrivals per second of ``ASGD.advance`` (server updates, event queue, delays, lazy
batched gradients, accounting: everything but metric evaluation), and the ratio of the time
per arrival to the time of one single-worker gradient call (``problem.minibatch_grads`` on one
row, counted like a method's call): below 1 means that simulating an arrival costs less than
the gradient a naive simulator would compute for it. The machine's load average and a Python
loop calibration are printed too, since the hot path is Python.

Run: ``python bench/bench_async.py [--arrivals N] [--threads T]``.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from optsim.channel import Channel
from optsim.clock import FixedTimes, Timing, mean_times
from optsim.meter import Meter
from optsim.methods import build_method
from optsim.problems import StochasticQuadratic


def python_speed() -> float:
    """Nanoseconds per iteration of a trivial Python loop (machine calibration)."""
    t0 = time.perf_counter()
    s = 0
    for i in range(2_000_000):
        s += i
    return (time.perf_counter() - t0) / 2_000_000 * 1e9


def single_gradient_seconds(problem, reps: int = 2000) -> float:
    gen = torch.Generator()
    gen.manual_seed(0)
    x = torch.zeros(1, problem.d, dtype=problem.dtype)
    clients = [torch.tensor([i]) for i in range(problem.n)]
    problem.minibatch_grads(x, 1, gen, clients=clients[0])
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for r in range(reps):
            problem.minibatch_grads(x, 1, gen, clients=clients[r % problem.n])
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def arrivals_per_second(problem, tau, arrivals: int) -> tuple[float, dict]:
    meter = Meter(problem.n)
    problem.attach(meter)
    method = build_method({"name": "asgd", "stepsize": 1e-4}, problem, Channel(meter, problem.d))
    method.attach_timing(Timing(FixedTimes(tau)))
    method.init(torch.zeros(problem.d, dtype=problem.dtype))
    method.advance(2 * problem.n)  # warm-up: first wave of arrivals
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        method.advance(arrivals)
        best = min(best, time.perf_counter() - t0)
    meter.close_round()
    counted = float(meter.oracle["grad"].sum())
    return arrivals / best, {"arrivals": method.arrivals, "grads_counted": counted, "sim_time": method.now,
                             "steady_delay": method.trace_meta()["delays"]["steady_mean"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arrivals", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    problem = StochasticQuadratic.generate(1000, 100, noise=1.0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"ASGD, d = 100, n = 1000 workers, {args.arrivals} arrivals, torch threads = {args.threads}, "
          f"cores = {os.cpu_count()}, load average = {load:.2f}, python loop = {python_speed():.0f} ns/iter")
    g1 = single_gradient_seconds(problem)
    print(f"one single-worker gradient call: {g1 * 1e6:.1f} us")
    print(f"{'compute times':<16} {'arrivals/s':>12} {'us/arrival':>11} {'ratio to 1-worker grad':>23} {'steady delay':>13}")
    for label, tau in [("tau_i = 1", np.ones(1000)), ("tau_i = sqrt(i)", mean_times("sqrt", 1000))]:
        rate, info = arrivals_per_second(problem, tau, args.arrivals)
        per = 1.0 / rate
        print(f"{label:<16} {rate:>12,.0f} {per * 1e6:>11.2f} {per / g1:>23.3f} {info['steady_delay']:>13.1f}")
        assert info["grads_counted"] >= info["arrivals"] - problem.n  # every delivered gradient counted


if __name__ == "__main__":
    main()
