"""Sparse Kaczmarz (optsim.methods.linalg.sparse) against a sparse row read, and batched runs against a loop.

System: a random sparse ``--rows`` x ``--dim`` CSR matrix (default 200,000 x 50,000 with ``--nnz-row`` 20
nonzeros per row: 4 M nonzeros, 64 MB of CSR; dense it would take 80 GB), b = A z. x* is not needed for
timing, so the system is built without LSQR (``SparseLinearSystem.__new__`` with the arrays set).

Floor, timed in the same run, interleaved with the solver (each round times every function once): "row
dot": a Python loop over the same random rows computing ``data[s:e] @ x[indices[s:e]]`` (one sparse row
read). Hand-written reference of the same work: the textbook sparse Kaczmarz loop written out in the
benchmark (``x[cols] -= ((vals @ x[cols] - b_i) / ||a_i||^2) * vals``). Target: one Kaczmarz iteration
at most 3 x the sparse row read. Batched runs: ``--runs`` independent runs of ``--batch-iters``
iterations as one vectorized step (``run(runs=R)``) against a Python loop over the runs with the
single-run loop; reported as a speed-up.

Run: ``python bench/bench_sparse_systems.py`` (``--rows 2000 --dim 500 --iters 2000 --runs 8 --repeats 1``
for a smoke run).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import scipy.sparse as sp
import torch
from timing import interleaved

from optsim.methods.linalg.sparse import sparse_kaczmarz
from optsim.problems.linear_system import SparseLinearSystem


def _system(m: int, d: int, per_row: int, seed: int = 0) -> SparseLinearSystem:
    g = np.random.default_rng(seed)
    cols = np.sort(np.stack([g.choice(d, per_row, replace=False) for _ in range(min(m, 64))]), axis=1)
    cols = cols[np.arange(m) % cols.shape[0]]  # row patterns reused: building is fast, reads still random
    cols = (cols + (np.arange(m) * 7919 % d)[:, None]) % d
    cols.sort(axis=1)
    A = sp.csr_matrix((g.standard_normal(m * per_row), cols.ravel(), np.arange(0, m * per_row + 1, per_row)),
                      shape=(m, d))
    A.sum_duplicates()
    s = SparseLinearSystem.__new__(SparseLinearSystem)  # timing only: no LSQR solve
    s.A, s.At = A, A.T.tocsr()
    s.rows, s.d = m, d
    s.b = A @ g.standard_normal(d)
    s.b_t = torch.from_numpy(s.b)
    s.x_true = torch.zeros(d, dtype=torch.float64)
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=50_000)
    ap.add_argument("--nnz-row", type=int, default=20)
    ap.add_argument("--iters", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=256)
    ap.add_argument("--batch-iters", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    system = _system(args.rows, args.dim, args.nnz_row)
    solver = sparse_kaczmarz(system)
    opts = solver.draw(args.iters, torch.Generator().manual_seed(1))
    ip, ix, dv, b = solver.indptr, solver.indices, solver.data, system.b
    nrm = solver._safe

    def row_dot():
        x = np.zeros(system.d)
        acc = 0.0
        for i in opts:
            s, e = ip[i], ip[i + 1]
            acc += dv[s:e] @ x[ix[s:e]]
        return acc

    def by_hand():
        x = np.zeros(system.d)
        for i in opts:
            s, e = ip[i], ip[i + 1]
            cols, vals = ix[s:e], dv[s:e]
            x[cols] -= ((vals @ x[cols] - b[i]) / nrm[i]) * vals

    def solver_loop():
        solver._loop(np.zeros(system.d), None, opts)

    times = interleaved({"row dot": row_dot, "by hand": by_hand, "kaczmarz": solver_loop}, args.repeats,
                        torch.device("cpu"))
    per = {k: [t / args.iters for t in v] for k, v in times.items()}
    ratio = lambda a, f: statistics.median(x / y for x, y in zip(per[a], per[f]))
    print(f"# A: {args.rows} x {args.dim} CSR, {system.A.nnz} nonzeros ({system.A.data.nbytes * 2 / 2**20:.0f} MiB), "
          f"1 thread, {os.cpu_count()} cpus, {args.iters} iterations, median of {args.repeats} rounds")
    print(f"{'':34s}{'us/iter':>10s}{'/ dot':>9s}")
    for name in ("kaczmarz", "by hand", "row dot"):
        print(f"{name:34s}{statistics.median(per[name]) * 1e6:10.2f}{ratio(name, 'row dot'):9.2f}")
    print(f"sparse kaczmarz / floor {ratio('kaczmarz', 'row dot'):.2f}   by hand / floor {ratio('by hand', 'row dot'):.2f}"
          f"   (target <= 3)")

    R, K = args.runs, args.batch_iters
    chunk = solver.draw(R * K, torch.Generator().manual_seed(2)).reshape(K, R)

    def batched():
        X = np.zeros((R, system.d))
        for j in range(K):
            solver._step_batched(X, None, chunk[j])

    def loop():
        for r in range(R):
            solver._loop(np.zeros(system.d), None, chunk[:, r])

    bt = interleaved({"batched": batched, "loop": loop}, max(1, args.repeats // 2), torch.device("cpu"))
    bm, lm = statistics.median(bt["batched"]) / (R * K), statistics.median(bt["loop"]) / (R * K)
    print(f"\n# {R} independent runs x {K} iterations (us per run-iteration)")
    print(f"{'batched step':34s}{bm * 1e6:10.3f}")
    print(f"{'loop over runs (single-run loop)':34s}{lm * 1e6:10.3f}{lm / bm:9.2f} x batched")
    print(f"sparse batched speed-up over loop {lm / bm:.1f}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
