"""A 32-run sweep (8 stepsizes x 4 seeds) of EF21 (top-k) on the a9a-sized problem, batched and not.

Reports the total time of the 32 runs relative to one run, measured in the same process:
unbatched (the runs one after another), batched replica-stacked (the 32 runs as one method on
(32, ...) tensors: EF21 with top-k is deterministic, so the grid stacks) and batched lock-step
(each run its own method, only the gradients batched; :mod:`optsim.experiment.batched`).
Issue target: batched <= 4 x one run.

Run: ``python bench/bench_sweep.py [--rounds 100]``.
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
    ap.add_argument("--repeat", type=int, default=3, help="alternations of one run and the stacked sweep")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    problem = a9a_like(dtype=dtype)
    problem.x_star  # solve once, outside the timings
    base = {"problem": {"name": "logreg"}, "methods": ["gd"], "dtype": args.dtype,
            "stop": {"max_rounds": args.rounds}, "log_every": args.rounds}
    cfgs, specs = [], []
    for seed in range(4):
        for e in range(-4, 4):
            cfgs.append(parse_config(json.loads(json.dumps(dict(base, seed=seed)))))
            specs.append({"name": "ef21", "compressor": {"name": "top_k", "k": 12}, "stepsize_mult": 2.0 ** e})
    def one_run():
        return [run_method(problem, specs[0], cfgs[0], progress=False)]

    def stacked():
        traces = run_batched(problem, specs, cfgs)
        assert all(t.meta.get("replica_stack") == len(specs) for t in traces)
        return traces

    def timed(fn):
        t0 = time.perf_counter()
        traces = fn()
        assert all(t.status in ("finished", "diverged") for t in traces)
        return time.perf_counter() - t0

    one_run()  # warm-up
    # one run and the stacked sweep alternate, so that both see the same machine load
    ones, stacks = zip(*[(timed(one_run), timed(stacked)) for _ in range(args.repeat)])
    one = statistics.median(ones)
    tb = statistics.median([b / o for o, b in zip(ones, stacks)]) * one
    tl = timed(lambda: run_batched(problem, specs, cfgs, stack=False))
    ts = timed(lambda: [run_method(problem, s, c, progress=False) for s, c in zip(specs, cfgs)])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}; EF21 top-12, "
          f"100 clients x 326 x 123, {args.rounds} rounds per run")
    print(f"  one run (median of {args.repeat})  {one:8.2f} s   1.00 x one run")
    print(f"  32 runs, unbatched      {ts:8.2f} s  {ts / one:5.2f} x one run")
    print(f"  32 runs, replica-stacked{tb:8.2f} s  {tb / one:5.2f} x one run  (speed-up {ts / tb:.1f} x; "
          f"median ratio of {args.repeat} alternations)")
    print(f"  32 runs, lock-step      {tl:8.2f} s  {tl / one:5.2f} x one run  (speed-up {ts / tl:.1f} x)")


if __name__ == "__main__":
    main()
