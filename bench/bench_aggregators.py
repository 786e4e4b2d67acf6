"""Time of each robust aggregator (optsim.robust) relative to the floor ``X.mean(0)``.

Input: ``--clients`` x ``--dim`` vectors (default 1000 x 100000 float32, 400 MB), standard normal,
``--byzantine`` of them (default a tenth) shifted by +10. Floor: the plain ``X.mean(0)`` on the same
tensor, timed in the same run, interleaved with the rules (each round times every function once,
so all see the same machine load); the table gives the median time and the median over rounds of
(time of the rule) / (time of the floor in the same round).

Targets (the issue's): cm and tm at most 3 x the mean; gm at most T x that (T = 8 iterations of
smoothed Weiszfeld). The other rules have no target: Krum, Multi-Krum and NNM compute all pairwise
distances (one m x m x d matrix product, O(m^2 d) against the mean's O(m d)).

``--alternatives`` also times other torch ways to get the order statistics of cm and tm (a full
sort, kthvalue, topk, quantile), so that the choice made in optsim.robust.aggregators can be
checked on the machine at hand.

Run: ``python bench/bench_aggregators.py`` (``--clients 20 --dim 50 --repeats 1`` for a smoke run;
``--device cuda`` on a GPU: the vectors live there, and every timing waits for the device).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics

import torch

from optsim.robust import make_aggregator
from timing import interleaved, median_ratio

SPECS = ["mean", "cm", "tm", "gm", {"name": "gm", "T": 3}, "krum", "multi_krum", "cc", "clip",
         {"name": "cm", "bucketing": 2}, {"name": "cm", "nnm": True}]


def alternatives(X: torch.Tensor, f: int) -> dict:
    """Other torch implementations of the order statistics behind cm and tm, for comparison."""
    m = X.shape[0]
    k = (m + 1) // 2
    out = {
        "torch.median dim 0 (lower middle)": lambda: torch.median(X, dim=0).values,
        "kthvalue dim 0 (one order statistic)": lambda: torch.kthvalue(X, k, dim=0).values,
        "sort dim 0 (all order statistics)": lambda: torch.sort(X, dim=0).values,
        f"topk {f + 1} dim 0 (one side of tm)": lambda: torch.topk(X, f + 1, dim=0, sorted=False).values,
        "transpose copy + median dim 1": lambda: torch.median(X.T.contiguous(), dim=1).values,
    }
    if X.numel() <= 16_000_000:  # torch.quantile refuses larger inputs
        out["torch.quantile 0.5 dim 0"] = lambda: torch.quantile(X, 0.5, dim=0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=100000)
    ap.add_argument("--byzantine", type=int, default=None, help="f (default: clients // 10)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alternatives", action="store_true", help="also time other torch order-statistic calls")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = ap.parse_args()

    m, d = args.clients, args.dim
    f = args.byzantine if args.byzantine is not None else m // 10
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    g = torch.Generator().manual_seed(args.seed)
    X = torch.randn(m, d, generator=g, dtype=dtype)
    X[:f] += 10.0
    X = X.to(device)  # (the same vectors on every device; the aggregators draw on the CPU and move the draws)
    size_mb = X.numel() * X.element_size() / 2 ** 20

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads, {os.cpu_count()} cores"
    print(f"torch {torch.__version__}, {where}; "
          f"{m} clients x {d} coordinates {args.dtype} ({size_mb:.0f} MB), f = {f}, "
          f"{args.repeats} interleaved repeats (median)")

    fns = {"floor X.mean(0)": lambda: X.mean(0)}
    for spec in SPECS:
        agg = make_aggregator(spec, m, f)
        gen = torch.Generator().manual_seed(1)
        fns[agg.describe()] = (lambda a=agg, gg=gen: a(X, gg))
    times = interleaved(fns, args.repeats, device)
    floor = times["floor X.mean(0)"]

    width = max(len(k) for k in fns) + 2
    print(f"\n{'rule':{width}s}{'ms':>10s}{'x mean':>10s}")
    ratios = {}
    for name, ts in times.items():
        ratios[name] = median_ratio(ts, floor)
        print(f"{name:{width}s}{statistics.median(ts) * 1e3:10.1f}{ratios[name]:10.2f}")

    T = make_aggregator("gm", m, f).T
    tm_name = make_aggregator("tm", m, f).describe()
    gm_name = make_aggregator("gm", m, f).describe()
    print("\ntargets (x mean):")
    for name, target in (("cm", 3.0), (tm_name, 3.0), (gm_name, 3.0 * T)):
        verdict = "met" if ratios[name] <= target else "NOT met"
        print(f"  {name:{width}s} <= {target:5.1f}: {ratios[name]:8.2f}  {verdict}")

    if args.alternatives:
        alt = {"floor X.mean(0)": lambda: X.mean(0), **alternatives(X, f)}
        times = interleaved(alt, args.repeats, device)
        width = max(len(k) for k in alt) + 2
        print(f"\n{'alternative (order statistics only)':{width}s}{'ms':>10s}{'x mean':>10s}")
        for name, ts in times.items():
            print(f"{name:{width}s}{statistics.median(ts) * 1e3:10.1f}"
                  f"{median_ratio(ts, times['floor X.mean(0)']):10.2f}")
    assert all(math.isfinite(r) for r in ratios.values())


if __name__ == "__main__":
    main()
