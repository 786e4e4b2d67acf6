"""Cost of one sketch-and-project iteration (optsim.methods.linalg) against a one-row read.

System: ``--rows`` x ``--dim`` dense float64 (default 10,000 x 1,000, 80 MB: larger than the caches),
standard normal A, b = A x*. One iteration reads one row (Kaczmarz: B = I, S = e_i, p_i ~ ||A_i||^2)
or one column (least-squares coordinate descent: B = A^T A, S = A e_j, p_j ~ ||A_{:j}||^2) of A.

Floors, timed in the same run, interleaved with the solvers (each round times every function once):
* "row dot": a Python loop of ``ddot(A[i], x)`` over the same random row indices as Kaczmarz (one
  row read with one BLAS call per row); "column dot" likewise ``ddot(A^T[j], r)`` over the columns
  of coordinate descent (A^T stored contiguous, as the solver stores it);
* "stream": the whole matrix read once by one BLAS call (``A @ x``), divided by the number of rows
  (columns): a row (column) read at full memory bandwidth without any per-call cost.
Hand-written references of the same work: the textbook Kaczmarz loop in NumPy
(``x -= ((a @ x - b_i) / ||a||^2) * a``) and the textbook column loop.

Target (the issue's): one Kaczmarz / coordinate-descent iteration at most 3 x the one-row (column) read.
Ratios are medians over rounds of (solver time per iteration) / (floor time per row) in the same round.

Batched runs: ``--runs`` independent Kaczmarz runs of ``--batch-iters`` iterations as one (R, d) tensor
computation (``SketchAndProject.run(runs=R)``), against a Python loop over the runs, each run alone
(the single-run NumPy/BLAS path, and the same batched code with R = 1), on the large system and on a
small one (``--small-rows`` x ``--small-dim``, ``--small-runs`` runs: the size of recipe S1's
expected-iterate estimates). On the large system the batched step is memory-bound (it gathers R
rows and reads and writes the (R, d) iterates several times per iteration).

Run: ``python bench/bench_linear_systems.py`` (``--rows 200 --dim 20 --iters 2000 --runs 8 --repeats 1``
for a smoke run).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from scipy.linalg.blas import daxpy, ddot
from timing import interleaved

from optsim.methods.linalg import cd_least_squares, kaczmarz
from optsim.problems.linear_system import LinearSystem


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=1_000)
    ap.add_argument("--iters", type=int, default=100_000, help="Kaczmarz iterations per timing")
    ap.add_argument("--runs", type=int, default=1_000, help="independent runs of the batched comparison")
    ap.add_argument("--batch-iters", type=int, default=100)
    ap.add_argument("--small-rows", type=int, default=40, help="small system of the batched comparison (recipe S1's)")
    ap.add_argument("--small-dim", type=int, default=10)
    ap.add_argument("--small-runs", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    m, d = args.rows, args.dim
    g = torch.Generator().manual_seed(0)
    A = torch.randn(m, d, generator=g, dtype=torch.float64)
    xs = torch.randn(d, generator=g, dtype=torch.float64)
    system = LinearSystem(A, A @ xs, xs)
    kz, cd = kaczmarz(system), cd_least_squares(system)
    iters_cd = max(1, args.iters * d // m)  # same bytes read as the Kaczmarz timing
    An, bn, At = A.numpy(), system.b.numpy(), np.ascontiguousarray(A.numpy().T)
    rows = kz.sketch.draw(args.iters, torch.Generator().manual_seed(1)).numpy()
    cols = cd.sketch.draw(iters_cd, torch.Generator().manual_seed(2)).numpy()
    rn, cn = np.einsum("ij,ij->i", An, An), np.einsum("ij,ij->i", At, At)
    x0 = torch.zeros(d, dtype=torch.float64)
    xv, rv = np.zeros(d), np.zeros(m)

    def row_dot():
        for i in rows:
            ddot(An[i], xv)

    def col_dot():
        for j in cols:
            ddot(At[j], rv)

    def stream_rows():
        An @ xv

    def kaczmarz_opt():
        kz.run(x0, args.iters, every=args.iters)

    def cd_opt():
        cd.run(x0, iters_cd, every=iters_cd)

    def kaczmarz_hand():
        x = np.zeros(d)
        for i in rows:
            a = An[i]
            x -= ((a @ x - bn[i]) / rn[i]) * a

    def cd_hand():
        x, r = np.zeros(d), -bn.copy()
        for j in cols:
            a = At[j]
            c = (a @ r) / cn[j]
            x[j] -= c
            daxpy(a, r, a=-c)

    fns = {"kaczmarz": kaczmarz_opt, "kaczmarz by hand": kaczmarz_hand, "row dot": row_dot,
           "cd least squares": cd_opt, "cd by hand": cd_hand, "column dot": col_dot, "stream": stream_rows}
    times = interleaved(fns, args.repeats, torch.device("cpu"))
    per = {"kaczmarz": args.iters, "kaczmarz by hand": args.iters, "row dot": args.iters,
           "cd least squares": iters_cd, "cd by hand": iters_cd, "column dot": iters_cd, "stream": m}
    unit = {k: [t / per[k] for t in v] for k, v in times.items()}
    col_stream = [t * m / d for t in unit["stream"]]  # one column holds the bytes of m / d rows

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(unit[a], b if isinstance(b, list) else unit[b]))

    print(f"# A: {m} x {d} float64 ({A.numel() * 8 / 2**20:.0f} MiB), 1 thread, {os.cpu_count()} cpus, "
          f"{args.iters} Kaczmarz / {iters_cd} CD iterations per timing, {args.repeats} rounds")
    print(f"{'':34s}{'us/iter':>10s}{'/ dot':>9s}{'/ stream':>10s}")
    for name, floor, stream in [("kaczmarz", "row dot", unit["stream"]), ("kaczmarz by hand", "row dot", unit["stream"]),
                                ("row dot", "row dot", unit["stream"]),
                                ("cd least squares", "column dot", col_stream), ("cd by hand", "column dot", col_stream),
                                ("column dot", "column dot", col_stream)]:
        print(f"{name:34s}{statistics.median(unit[name]) * 1e6:10.2f}{ratio(name, floor):9.2f}"
              f"{ratio(name, stream):10.2f}")
    print(f"{'stream (A @ x per row)':34s}{statistics.median(unit['stream']) * 1e6:10.3f}")
    print(f"kaczmarz / floor {ratio('kaczmarz', 'row dot'):.2f}   cd least squares / floor "
          f"{ratio('cd least squares', 'column dot'):.2f}   (target <= 3)")

    # ---- batched independent runs ----------------------------------------------------------------------
    small = LinearSystem.generate(args.small_rows, args.small_dim, 0.5, 1.0, seed=0)
    for label, solver, R in [(f"{m} x {d}", kz, args.runs), (f"{args.small_rows} x {args.small_dim}", kaczmarz(small),
                                                               args.small_runs)]:
        batched_runs(label, solver, R, args.batch_iters, max(1, args.repeats // 2))


def batched_runs(label, kz, R, K, repeats):
    """R independent Kaczmarz runs of K iterations: one (R, d) computation against a loop over runs."""
    loop_runs = max(1, min(R, 50))  # the loop over runs, timed on a subset and scaled per run
    x0 = torch.zeros(kz.d, dtype=torch.float64)

    def batched():
        kz.run(x0, K, runs=R, seed=3, every=K)

    def loop_fast():
        for s in range(loop_runs):
            kz.run(x0, K, seed=s, every=K)

    def loop_same_code():
        for s in range(loop_runs):
            kz.run(x0, K, seed=s, every=K, fast=False)

    bt = interleaved({"batched": batched, "loop fast": loop_fast, "loop same": loop_same_code}, repeats,
                     torch.device("cpu"))
    b = statistics.median(bt["batched"]) / (R * K)
    lf = statistics.median(bt["loop fast"]) / (loop_runs * K)
    ls = statistics.median(bt["loop same"]) / (loop_runs * K)
    print(f"\n# {label}: {R} independent Kaczmarz runs x {K} iterations (us per run-iteration)")
    print(f"{'batched (R, d) tensor':34s}{b * 1e6:10.3f}")
    print(f"{'loop over runs, NumPy/BLAS path':34s}{lf * 1e6:10.3f}{lf / b:9.2f} x batched")
    print(f"{'loop over runs, same code R = 1':34s}{ls * 1e6:10.3f}{ls / b:9.2f} x batched")
    print(f"{label}: batched speed-up over loop {lf / b:.1f} (NumPy/BLAS path), {ls / b:.1f} (same code)")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)")
