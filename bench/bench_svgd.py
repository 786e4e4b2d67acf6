"""Time of one SVGD step (optsim.particles) relative to the floor "one kernel matrix plus one
matrix product".

Input: ``--particles`` x ``--dim`` particles (default 1,000 x 100), standard normal, target a
Gaussian with a random covariance (its score is one (N, d) x (d, d) product). Timed in turn within
each round (all see the same machine load; the table gives the median time and the median over
rounds of time / floor):

* floor: ``K = exp(-D2 / h)`` with ``D2`` the squared distances from one ``X X^T`` product, then
  ``K @ G`` for an (N, d) matrix G, at a fixed h;
* SVGD field at a fixed bandwidth (``svgd_direction`` with ``RBF(h)``);
* SVGD field with the median bandwidth (``RBF()``, Liu and Wang's convention: the exact median of
  the N^2 squared distances);
* one whole ``SVGD.step()`` (target score, median bandwidth, update);
* the median alone (``median_sq_distance``) and ``torch.kthvalue`` over all N^2 entries, for comparison;
* a hand-written reference of the same field: the (N, N, d) differences written out
  (``phi_i = sum_j k_ij s_j + (2 / h) sum_j k_ij (x_i - x_j)``), in row blocks of 100 particles.

Target (the issue's): one SVGD step within 2 x the floor.

Run: ``python bench/bench_svgd.py`` (``--particles 50 --dim 5 --repeats 2`` for a smoke run).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics

import torch
from timing import interleaved, median_ratio

from optsim.particles import SVGD, svgd_direction
from optsim.targets import RBF, Gaussian, median_sq_distance, sq_distances


def reference_field(X, S, h, block=100):
    """SVGD's RBF field with the pairwise differences materialized (rows in blocks)."""
    out = torch.empty_like(X)
    for a in range(0, len(X), block):  # blocks of rows, to bound the (block, N, d) memory
        diff = X[a:a + block, None, :] - X[None, :, :]
        K = torch.exp(-(diff * diff).sum(-1) / h)
        out[a:a + block] = K @ S + (2.0 / h) * (K[:, :, None] * diff).sum(1)
    return out / len(X)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    N, d = args.particles, args.dim
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    g = torch.Generator().manual_seed(args.seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    target = Gaussian(torch.zeros(d), A @ A.T / d + torch.eye(d, dtype=torch.float64), dtype=torch.float64)
    target.m, target.P = target.m.to(device, dtype), target.P.to(device, dtype)
    target.dtype = dtype
    X = torch.randn(N, d, generator=g, dtype=torch.float64).to(device, dtype)
    S = target.score(X)
    h = median_sq_distance(sq_distances(X)) / math.log(N + 1)
    sampler = SVGD(target, 1e-3)
    sampler.X = X.clone()

    def floor():
        K = torch.exp(sq_distances(X).div_(-h))
        return K @ S

    def step():
        sampler.X = X  # the same particles every time
        sampler.step()

    D2 = sq_distances(X)
    flat = D2.reshape(-1)
    fns = {
        "floor: kernel matrix + K @ (N, d)": floor,
        "svgd field, fixed bandwidth": lambda: svgd_direction(X, S, RBF(h)),
        "svgd field, median bandwidth": lambda: svgd_direction(X, S, RBF()),
        "SVGD.step() (score, median, update)": step,
        "median of D2 alone": lambda: median_sq_distance(D2),
        "torch.kthvalue over N^2 (for comparison)": lambda: torch.kthvalue(flat.cpu(), flat.numel() // 2),
        "hand-written reference (N, N, d) diffs": lambda: reference_field(X, S, h),
    }
    err = float((svgd_direction(X, S, RBF(h))[0] - reference_field(X, S, h)).abs().max())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, {device}; "
          f"{N} particles x {d} dims {args.dtype}, {args.repeats} interleaved repeats (median); "
          f"max |field - reference| = {err:.1e}")
    times = interleaved(fns, args.repeats, device)
    base = times["floor: kernel matrix + K @ (N, d)"]
    width = max(len(k) for k in fns) + 2
    print(f"\n{'what':{width}s}{'ms':>10s}{'x floor':>10s}")
    ratios = {}
    for name, ts in times.items():
        ratios[name] = median_ratio(ts, base)
        print(f"{name:{width}s}{statistics.median(ts) * 1e3:10.2f}{ratios[name]:10.2f}")
    r = ratios["SVGD.step() (score, median, update)"]
    print(f"\ntarget: one SVGD step <= 2.0 x floor: {r:.2f}  {'met' if r <= 2.0 else 'NOT met'}")
    assert all(math.isfinite(v) for v in ratios.values())


if __name__ == "__main__":
    main()
