"""Cost of a zeroth-order round (STP, MiSTP over R independent runs) relative to its own oracle calls.

Input: a one-client logistic regression with ``--samples`` x ``--dim`` standard normal features, R =
``--runs`` runs advanced as one (R, d) batch. Timed in turn within each round (all see the same load;
the table gives the median time and the median over rounds of time / floor):

* MiSTP floor: the round's oracle call alone -- the minibatch losses of the 3 candidate points of
  every run (``Problem._sample_point_losses`` on prepared points and minibatches);
* MiSTP round: ``stp_step`` with the direction draw, the minibatch draw (without replacement), the
  candidates, the counted oracle call and the three-point choice;
* MiSTP by hand: the same round written directly in torch (gather, one bmm, softplus, argmin);
* MiSTP, a Python loop over runs (each run's round separately, as the authors' code does);
* STP floor / round: the full losses of the 2 new candidates of every run, and the whole round
  (the value at x_k is kept).

Target (the issue's): a round within 1.5 x the cost of its own oracle calls.

Run: ``python bench/bench_zeroth_order.py`` (``--samples 200 --dim 10 --runs 4 --repeats 2`` for a smoke run).
"""
from __future__ import annotations

import argparse
import os
import statistics

import numpy as np
import torch
from timing import interleaved, median_ratio

from optsim.methods.zeroth_order import (
    batch_values,
    draw_batches,
    sample_directions,
    stp_step,
)
from optsim.problems import LogisticRegression


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=200)
    ap.add_argument("--runs", type=int, default=32)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    N, d, R, b = args.samples, args.dim, args.runs, min(args.batch, args.samples)
    rng = np.random.default_rng(0)
    A = rng.standard_normal((N, d))
    y = np.where(A @ rng.standard_normal(d) > 0, 1.0, -1.0)
    p = LogisticRegression([A], [y], lam=1.0 / N)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(R, d, generator=g, dtype=torch.float64)
    clients = torch.zeros(R, dtype=torch.long)
    S0 = sample_directions("sphere", R, d, g)
    idx0 = draw_batches(p.m[clients], b, g)
    P3 = torch.stack([X - 0.1 * S0, X + 0.1 * S0, X], 1)
    P2 = P3[:, :2].reshape(1, 2 * R, d)
    fx = p.point_losses(X[None])[0]
    Ab, yb = p.A[0], p.b[0]

    def mistp_floor():
        return p._sample_point_losses(P3, clients, idx0)

    def mistp_round():
        S = sample_directions("sphere", R, d, g)
        idx = draw_batches(p.m[clients], b, g)
        return stp_step(batch_values(p, clients, idx), X, S, 0.1)

    def mistp_hand():
        S = torch.randn(R, d, generator=g, dtype=torch.float64)
        S = S / S.norm(dim=1, keepdim=True)
        idx = torch.rand(R, N, generator=g, dtype=torch.float64).topk(b, 1, largest=False).indices
        P = torch.stack([X - 0.1 * S, X + 0.1 * S, X], 1)
        As, ys = Ab[idx], yb[idx]
        z = torch.bmm(P, As.transpose(1, 2))
        F = torch.nn.functional.softplus(-ys[:, None, :] * z).mean(-1) + 0.5 * p.lam * P.pow(2).sum(-1)
        return P[torch.arange(R), F.argmin(1)]

    def mistp_loop():
        out = []
        for r in range(R):
            s = torch.randn(d, generator=g, dtype=torch.float64)
            s = s / s.norm()
            i = torch.rand(N, generator=g, dtype=torch.float64).topk(b, largest=False).indices
            Pr = torch.stack([X[r] - 0.1 * s, X[r] + 0.1 * s, X[r]])
            F = torch.nn.functional.softplus(-yb[i][None] * (Pr @ Ab[i].T)).mean(-1) + 0.5 * p.lam * Pr.pow(2).sum(-1)
            out.append(Pr[int(F.argmin())])
        return torch.stack(out)

    def stp_floor():
        return p._point_losses(P2, None)

    def stp_round():
        S = sample_directions("sphere", R, d, g)
        return stp_step(batch_values(p, clients, None), X, S, 0.1, fx=fx)

    fns = {"MiSTP floor: the oracle call (3 R minibatch values)": mistp_floor,
           "MiSTP round (stp_step, batched)": mistp_round,
           "MiSTP round by hand (torch)": mistp_hand,
           "MiSTP, Python loop over runs": mistp_loop,
           "STP floor: the oracle call (2 R full values)": stp_floor,
           "STP round (stp_step, batched)": stp_round}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; logistic "
          f"{N} x {d}, {R} runs, minibatch {b}, float64, {args.repeats} interleaved repeats (median)")
    times = interleaved(fns, args.repeats, torch.device("cpu"))
    width = max(len(k) for k in fns) + 2
    print(f"\n{'what':{width}s}{'ms':>10s}{'x floor':>10s}")
    ratios = {}
    for name, ts in times.items():
        base = times["STP floor: the oracle call (2 R full values)" if name.startswith("STP")
                     else "MiSTP floor: the oracle call (3 R minibatch values)"]
        ratios[name] = median_ratio(ts, base)
        print(f"{name:{width}s}{statistics.median(ts) * 1e3:10.3f}{ratios[name]:10.2f}")
    rm, rs = ratios["MiSTP round (stp_step, batched)"], ratios["STP round (stp_step, batched)"]
    print(f"\ntarget: a round <= 1.5 x its oracle calls: MiSTP {rm:.2f} x  STP {rs:.2f} x  "
          f"{'met' if max(rm, rs) <= 1.5 else 'NOT met'}; loop over runs / batched round = "
          f"{ratios['MiSTP, Python loop over runs'] / rm:.1f}")


if __name__ == "__main__":
    main()
