"""Cost of a clipped-SGD / clipped-SSTM round over R independent runs relative to its own oracle calls.

Input: a one-client ``StochasticQuadratic`` of dimension ``--dim`` with Student-t noise (nu = 1.5), R =
``--runs`` runs advanced as one (R, d) batch. Timed in turn within each round (all see the same load;
the table gives the median time and the median over rounds of time / floor):

* floor: the round's oracle call alone -- R heavy-tailed stochastic gradients
  (``minibatch_grads`` on the (R, d) batch, noise draw included);
* clipped-SGD round (``clip_rows`` + step, batched) and clipped-SSTM round (``sstm_point``,
  the oracle call, ``sstm_update``);
* clipped-SGD by hand: the same round written directly in torch (X A - b, the Student-t draw, the
  clipping, the step);
* clipped-SGD, a Python loop over runs (each run's round separately).

Target (the issue's): a round within 1.5 x the cost of its own oracle calls.

Run: ``python bench/bench_heavy_tailed.py`` (``--dim 10 --runs 4 --repeats 2`` for a smoke run).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics

import torch
from timing import interleaved, median_ratio

from optsim.methods.heavy_tailed import clip_rows, sstm_point, sstm_update
from optsim.problems.stochastic_quadratic import StochasticQuadratic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    d, R, nu, gamma, lam = args.dim, args.runs, 1.5, 0.1, 2.0
    p = StochasticQuadratic.generate(1, d, noise=1.0, noise_law={"kind": "student_t", "tail": nu}, seed=0)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(R, d, generator=g, dtype=torch.float64)
    Zs = X + 0.1
    clients = torch.zeros(R, dtype=torch.long)
    A, b = p.A, p.b

    def floor():
        return p.minibatch_grads(X, 1, g, clients=clients)

    def sgd_round():
        return X - gamma * clip_rows(p.minibatch_grads(X, 1, g, clients=clients), lam)

    def sstm_round():
        al = 3.0 / (2.0 * p.L)
        G = p.minibatch_grads(sstm_point(X, Zs, 1.0, al), 1, g, clients=clients)
        return sstm_update(X, Zs, 1.0, al, G, 0.5)

    def sgd_hand():
        W = 1.0 - torch.rand(R, d, generator=g, dtype=torch.float64)
        U = torch.rand(R, d, generator=g, dtype=torch.float64)
        G = X @ A - b + torch.cos(2 * math.pi * U) * torch.sqrt(nu * torch.expm1(-(2.0 / nu) * torch.log(W)))
        return X - gamma * G * torch.clamp(lam / G.norm(dim=1, keepdim=True), max=1.0)

    def sgd_loop():
        out = []
        for r in range(R):
            W = 1.0 - torch.rand(d, generator=g, dtype=torch.float64)
            U = torch.rand(d, generator=g, dtype=torch.float64)
            G = A @ X[r] - b + torch.cos(2 * math.pi * U) * torch.sqrt(nu * torch.expm1(-(2.0 / nu) * torch.log(W)))
            out.append(X[r] - gamma * G * min(1.0, lam / float(G.norm())))
        return torch.stack(out)

    fns = {"floor: the oracle call (R stochastic gradients)": floor,
           "clipped-SGD round (batched)": sgd_round,
           "clipped-SSTM round (batched)": sstm_round,
           "clipped-SGD round by hand (torch)": sgd_hand,
           "clipped-SGD, Python loop over runs": sgd_loop}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; stochastic quadratic "
          f"d = {d}, Student-t noise nu = {nu}, {R} runs, float64, {args.repeats} interleaved repeats (median)")
    times = interleaved(fns, args.repeats, torch.device("cpu"))
    width = max(len(k) for k in fns) + 2
    print(f"\n{'what':{width}s}{'ms':>10s}{'x floor':>10s}")
    ratios = {}
    for name, ts in times.items():
        ratios[name] = median_ratio(ts, times["floor: the oracle call (R stochastic gradients)"])
        print(f"{name:{width}s}{statistics.median(ts) * 1e3:10.3f}{ratios[name]:10.2f}")
    rs, ra = ratios["clipped-SGD round (batched)"], ratios["clipped-SSTM round (batched)"]
    print(f"\ntarget: a round <= 1.5 x its oracle calls: clipped-SGD {rs:.2f} x  clipped-SSTM {ra:.2f} x  "
          f"{'met' if max(rs, ra) <= 1.5 else 'NOT met'}; by hand / floor = {ratios['clipped-SGD round by hand (torch)']:.2f}; "
          f"loop over runs / batched round = {ratios['clipped-SGD, Python loop over runs'] / rs:.1f}")


if __name__ == "__main__":
    main()
