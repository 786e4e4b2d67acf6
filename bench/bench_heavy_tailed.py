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

DProx-clipped-SGD-shift (S6): ``--clients`` n heterogeneous clients (the shared Hessian of the quadratic
above, offsets in the linear terms, an l1 regularizer), R runs as one (R, n, d) batch:

* its floor: the round's oracle calls alone -- R n heavy-tailed stochastic gradients
  (``Quadratic._grads_many`` on the (R, n, d) batch, one bmm, plus the Student-t draw);
* its round (the oracle call, then ``shifted_clip_step``: clipped differences, shift update, prox);
* the same round by hand in torch (checked to give the same iterates).

clipped-SGDA / clipped-SEG (S5, variational inequalities): a strongly monotone quadratic game of dimension
``--dim`` with the same Student-t noise, R runs as one (R, D) batch; the floor is one stochastic operator call
on the batch (``QuadraticMinMax.stochastic_operator``); SEG makes two per round, so its ratio is to twice the
floor.

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

from optsim.methods.heavy_tailed import (
    clip_rows,
    clipped_seg_step,
    clipped_sgda_step,
    shifted_clip_step,
    sstm_point,
    sstm_update,
)
from optsim.problems import Quadratic
from optsim.problems.minmax import QuadraticMinMax
from optsim.problems.noise import NoiseLaw
from optsim.problems.regularizer import Regularizer
from optsim.problems.stochastic_quadratic import StochasticQuadratic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--clients", type=int, default=5, help="clients of DProx-clipped-SGD-shift")
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

    # ---- DProx-clipped-SGD-shift: n clients, R runs, (R, n, d) ----
    n, nu_shift, strength = args.clients, 0.5, 0.01
    E = torch.randn(n, d, generator=g, dtype=torch.float64)
    q = Quadratic(A.expand(n, d, d).clone(), b + (E - E.mean(0)))
    law, reg = NoiseLaw("student_t", nu), Regularizer("l1", strength=strength)
    H = 0.1 * torch.randn(R, n, d, generator=g, dtype=torch.float64)
    h = H.mean(1)
    An, bn = q.A, q.b

    def shift_floor():
        G = q._grads_many(X.unsqueeze(1).expand(R, n, d))
        return G.add_(law.sample(G.shape, g))

    def shift_round():
        G = q._grads_many(X.unsqueeze(1).expand(R, n, d))
        G.add_(law.sample(G.shape, g))
        return shifted_clip_step(X, H, h, G, gamma, lam, nu_shift, reg)

    def shift_hand(noise=True):
        G = torch.bmm(An, X.T.unsqueeze(0).expand(n, d, R)).permute(2, 0, 1) - bn
        if noise:  # the t draw in place, one buffer per uniform: log W = log1p(-V), V uniform
            logW = torch.rand(R, n, d, generator=g, dtype=torch.float64).neg_().log1p_()
            U = torch.rand(R, n, d, generator=g, dtype=torch.float64)
            G.add_(U.mul_(2 * math.pi).cos_().mul_(logW.mul_(-2.0 / nu).expm1_().mul_(nu).sqrt_()))
        D = G.sub_(H)
        D.mul_(torch.clamp(lam / D.norm(dim=2, keepdim=True), max=1.0))
        dm = D.mean(1)
        V = X - gamma * (h + dm)
        return torch.sign(V) * torch.clamp(V.abs() - gamma * strength, min=0.0), H + nu_shift * D, h + nu_shift * dm

    # ---- clipped-SGDA / clipped-SEG on a game, R runs, (R, D) ----
    game = QuadraticMinMax.strongly_monotone(d, mu=0.1, seed=0, noise=1.0,
                                             noise_law={"kind": "student_t", "tail": nu})
    Zg = torch.randn(R, game.D, generator=g, dtype=torch.float64)

    def vi_floor():
        return game.stochastic_operator(Zg, g)

    def sgda_round():
        return clipped_sgda_step(game.stochastic_operator, Zg, gamma, lam, g)

    def seg_round():
        return clipped_seg_step(game.stochastic_operator, Zg, gamma, lam, g)

    ref, got = shift_hand(noise=False), shifted_clip_step(X, H, h, q._grads_many(X.unsqueeze(1).expand(R, n, d)), gamma,
                                                           lam, nu_shift, reg)
    assert all(torch.allclose(a, c, rtol=1e-12, atol=1e-12) for a, c in zip(ref, got)), "the round by hand differs"

    fns = {"floor: the oracle call (R stochastic gradients)": floor,
           "clipped-SGD round (batched)": sgd_round,
           "clipped-SSTM round (batched)": sstm_round,
           "clipped-SGD round by hand (torch)": sgd_hand,
           "clipped-SGD, Python loop over runs": sgd_loop,
           "floor: R n stochastic gradients (n clients)": shift_floor,
           "DProx-clipped-SGD-shift round (batched)": shift_round,
           "DProx-clipped-SGD-shift round by hand (torch)": shift_hand,
           "floor: one operator call on R game points": vi_floor,
           "clipped-SGDA round (batched)": sgda_round,
           "clipped-SEG round (batched, 2 operator calls)": seg_round}
    floors = {name: ("floor: R n stochastic gradients (n clients)" if ("DProx" in name or "R n" in name)
                     else "floor: one operator call on R game points" if ("game" in name or "SGDA" in name
                                                                          or "SEG" in name)
                     else "floor: the oracle call (R stochastic gradients)") for name in fns}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; stochastic quadratic "
          f"d = {d}, Student-t noise nu = {nu}, {R} runs ({n} clients for DProx-clipped-SGD-shift), float64, "
          f"{args.repeats} interleaved repeats (median)")
    times = interleaved(fns, args.repeats, torch.device("cpu"))
    width = max(len(k) for k in fns) + 2
    print(f"\n{'what':{width}s}{'ms':>10s}{'x its floor':>12s}")
    ratios = {}
    for name, ts in times.items():
        ratios[name] = median_ratio(ts, times[floors[name]])
        print(f"{name:{width}s}{statistics.median(ts) * 1e3:10.3f}{ratios[name]:12.2f}")
    rs, ra = ratios["clipped-SGD round (batched)"], ratios["clipped-SSTM round (batched)"]
    rd = ratios["DProx-clipped-SGD-shift round (batched)"]
    rv, re_ = ratios["clipped-SGDA round (batched)"], ratios["clipped-SEG round (batched, 2 operator calls)"] / 2
    print(f"\ntarget: a round <= 1.5 x its oracle calls: clipped-SGD {rs:.2f} x  clipped-SSTM {ra:.2f} x  "
          f"DProx-clipped-SGD-shift {rd:.2f} x  {'met' if max(rs, ra, rd) <= 1.5 else 'NOT met'}; by hand / floor = "
          f"{ratios['clipped-SGD round by hand (torch)']:.2f} (clipped-SGD), "
          f"{ratios['DProx-clipped-SGD-shift round by hand (torch)']:.2f} (DProx-clipped-SGD-shift); "
          f"loop over runs / batched round = {ratios['clipped-SGD, Python loop over runs'] / rs:.1f}")
    print(f"target for the VI rounds: clipped-SGDA {rv:.2f} x  clipped-SEG {re_:.2f} x its operator calls  "
          f"{'met' if max(rv, re_) <= 1.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
