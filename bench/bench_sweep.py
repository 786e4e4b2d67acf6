"""A 32-run sweep (8 stepsizes x 4 seeds) of EF21 (top-k) on the a9a-sized problem, batched and not.

Reports total times relative to one run, measured in the same process:

* unbatched: the 32 runs one after another;
* replica-stacked (:mod:`optsim.experiment.batched`): EF21 with top-k draws no random numbers,
  so the 4 seeds of a stepsize are one run and the grid is one method on (8, ...) tensors;
* replica-stacked, 32 distinct stepsizes (2^-4 .. 2^3.75 in 32 steps): the cost of stacking
  itself, one method on (32, ...) tensors;
* lock-step: each run its own method in a greenlet, only the gradients batched;
* DIANA with rand-k, the same 8 x 4 grid replica-stacked: a randomized compressor makes the 32
  runs 32 rows, each drawing from its own generator (against one DIANA run).

The stacked sweeps alternate with one run, so that both see the same machine load (median of
the per-alternation ratios). Issue target: batched <= 4 x one run.

Run: ``python bench/bench_sweep.py [--rounds 100] [--dtype float32]``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bench_round import a9a_like
from optsim.experiment import parse_config, run_method
from optsim.experiment.batched import run_batched


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--repeat", type=int, default=3, help="alternations of one run and each stacked sweep")
    args = ap.parse_args()
    problem = a9a_like(dtype=getattr(torch, args.dtype))
    problem.x_star  # solve once, outside the timings
    base = {"problem": {"name": "logreg"}, "methods": ["gd"], "dtype": args.dtype,
            "stop": {"max_rounds": args.rounds}, "log_every": args.rounds}

    def grid(seeds, exponents, method=None):
        cfgs, specs = [], []
        for seed in seeds:
            for e in exponents:
                cfgs.append(parse_config(json.loads(json.dumps(dict(base, seed=seed)))))
                specs.append(dict(method or {"name": "ef21", "compressor": {"name": "top_k", "k": 12}},
                                  stepsize_mult=2.0 ** e))
        return specs, cfgs

    specs, cfgs = grid(range(4), range(-4, 4))
    distinct = grid([0], [-4 + 0.25 * j for j in range(32)])
    diana = grid(range(4), range(-4, 4), {"name": "diana", "compressor": {"name": "rand_k", "k": 12}})
    current = {"grid": (specs, cfgs)}

    def one_run():
        s, c = current["grid"]
        return [run_method(problem, s[0], c[0], progress=False)]

    def stacked(grid_specs, grid_cfgs, rows):
        def run():
            traces = run_batched(problem, grid_specs, grid_cfgs)
            assert all(t.meta.get("replica_stack") == rows for t in traces)
            return traces
        return run

    def timed(fn):
        t0 = time.perf_counter()
        traces = fn()
        assert all(t.status in ("finished", "diverged") for t in traces)
        return time.perf_counter() - t0

    def alternated(fn):
        """(median one-run time, median ratio of fn's time to the one run next to it)."""
        ones, runs = zip(*[(timed(one_run), timed(fn)) for _ in range(args.repeat)])
        return statistics.median(ones), statistics.median([b / o for o, b in zip(ones, runs)])

    one_run()  # warm-up
    one, r_grid = alternated(stacked(specs, cfgs, 8))
    _, r_distinct = alternated(stacked(*distinct, 32))
    tl = timed(lambda: run_batched(problem, specs, cfgs, stack=False))
    ts = timed(lambda: [run_method(problem, s, c, progress=False) for s, c in zip(specs, cfgs)])
    current["grid"] = diana
    one_run()
    one_diana, r_diana = alternated(stacked(*diana, 32))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}; EF21 top-12, "
          f"100 clients x 326 x 123, {args.rounds} rounds per run")
    print(f"  one run (median of {args.repeat})                  {one:7.2f} s   1.00 x one run")
    print(f"  32 runs, unbatched                         {ts:7.2f} s  {ts / one:5.2f} x one run")
    print(f"  32 runs, replica-stacked (8 rows)          {r_grid * one:7.2f} s  {r_grid:5.2f} x one run"
          f"  (speed-up {ts / one / r_grid:.1f} x)")
    print(f"  32 distinct stepsizes, stacked (32 rows)   {r_distinct * one:7.2f} s  {r_distinct:5.2f} x one run")
    print(f"  32 runs, lock-step                         {tl:7.2f} s  {tl / one:5.2f} x one run"
          f"  (speed-up {ts / tl:.1f} x)")
    print(f"  DIANA rand-12: one run {one_diana:.2f} s; 32 runs stacked (32 rows) {r_diana * one_diana:7.2f} s"
          f"  {r_diana:5.2f} x one run")


if __name__ == "__main__":
    main()
