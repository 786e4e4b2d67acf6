"""Cost of a MAST round (Double Sketched GD, distributed; and its L-SVRDSG round) relative to its own oracle calls.

Input: a logistic regression over ``--clients`` clients with ``--samples`` standard normal samples of
dimension ``--dim`` each, the MAST objective with a Bernoulli(``--keep``) sketch and a random shift v.
Timed in turn within each round (all see the same load; the table gives the median time and the
median over rounds of time / floor):

* floor: the round's oracle call alone -- every client's full local gradient at its sketched model
  (``Problem._grads`` on prepared (n, d) points: sketched models of x^0 = 0, where the methods start);
* DSGD round: ``MAST.step()`` (estimator ``sketch``) with the meter's ``close_round`` -- the n sketches,
  the sparse downlink and uplink through the channel, the counted oracle call, the server step;
* DSGD round by hand: the same round written directly in torch (masks, sketched models, gradients,
  the masked mean, the step);
* L-SVRDSG round: ``MAST.step()`` with estimator ``lsvrg`` (reference refresh probability 1e-12: the
  cheap round) against its own floor, two oracle calls (at x and at the reference point).

Target (the issue's): a round within 1.5 x the cost of its own oracle calls.

Run: ``python bench/bench_mast.py`` (``--clients 4 --samples 50 --dim 10 --repeats 2`` for a smoke run).
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from timing import interleaved, median_ratio

from optsim.channel import Channel
from optsim.meter import Meter
from optsim.methods import build_method
from optsim.problems import DiagonalSketch, LogisticRegression, SketchedProblem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--dim", type=int, default=200)
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n, N, d, keep = args.clients, args.samples, args.dim, args.keep
    rng = np.random.default_rng(0)
    w = rng.standard_normal(d)
    feats = [rng.standard_normal((N, d)) for _ in range(n)]
    labels = [np.where(A @ w > 0, 1.0, -1.0) for A in feats]
    base = LogisticRegression(feats, labels, lam=1e-3)
    v = torch.as_tensor(rng.standard_normal(d) * 0.1)
    # a linear model: the sketched objective of a logistic regression has no closed form, the method needs none
    sp = SketchedProblem(base, DiagonalSketch(d, "bernoulli", p=keep), shift=v)

    def method(spec):
        meter = Meter(n)
        sp.attach(meter)
        m = build_method(spec, sp, Channel(meter, d), seed=0)
        m.init(torch.zeros(d, dtype=torch.float64))
        return m, meter

    dsgd, meter1 = method({"name": "mast", "stepsize": 0.1})
    # L-SVRDSG needs the exact grad f_D of a quadratic base: a least-squares problem of the same size
    from optsim.problems import LeastSquares

    ls = LeastSquares(feats, [A @ w for A in feats], lam=1e-3)
    sq = SketchedProblem(ls, DiagonalSketch(d, "bernoulli", p=keep), shift=v)
    meter2 = Meter(n)
    sq.attach(meter2)
    vr = build_method({"name": "mast", "estimator": "lsvrg", "p": 1e-12, "stepsize": 0.01}, sq, Channel(meter2, d), 0)
    vr.init(torch.zeros(d, dtype=torch.float64))

    g = torch.Generator().manual_seed(1)
    S0 = DiagonalSketch(d, "bernoulli", p=keep).sample(n, g)
    Y0 = v + S0 * (torch.zeros(d, dtype=torch.float64) - v)  # the sketched models at the methods' x^0 = 0
    Y1 = Y0.clone()  # the reference point w = x^0 (the logistic loss's cost depends a little on the point)
    x_hand = torch.zeros(d, dtype=torch.float64)
    gen_hand = torch.Generator().manual_seed(2)

    def floor():
        base._grads(Y0, None)

    def floor2():
        ls._grads(Y0, None)
        ls._grads(Y1, None)

    def round_dsgd():
        dsgd.step()
        meter1.close_round()

    def round_vr():
        vr.step()
        meter2.close_round()

    def by_hand():
        nonlocal x_hand
        S = (torch.rand(n, d, generator=gen_hand, dtype=torch.float64) < keep).to(torch.float64) / keep
        G = S * base._grads(v + S * (x_hand - v), None)
        x_hand = x_hand - 0.1 * G.mean(0)

    # two groups, each on its own data (interleaving them would time one group's floor with a cold cache)
    cpu = torch.device("cpu")
    t = {**interleaved({"floor": floor, "dsgd": round_dsgd, "hand": by_hand}, args.repeats, cpu),
         **interleaved({"floor2": floor2, "vr": round_vr}, args.repeats, cpu)}
    med = {k: statistics.median(v) * 1e3 for k, v in t.items()}
    r_dsgd = median_ratio(t["dsgd"], t["floor"])
    r_hand = median_ratio(t["hand"], t["floor"])
    r_vr = median_ratio(t["vr"], t["floor2"])
    print(f"MAST rounds: {n} clients x {N} samples, d = {d}, Bernoulli keep {keep}, {args.repeats} repeats, "
          f"{torch.get_num_threads()} thread(s), float64")
    print(f"{'':48s} {'ms':>8s} {'/ floor':>8s}")
    print(f"{'floor: the oracle call (n local gradients)':48s} {med['floor']:8.3f} {1.0:8.2f}")
    print(f"{'DSGD round (MAST.step, sketch estimator)':48s} {med['dsgd']:8.3f} {r_dsgd:8.2f}")
    print(f"{'DSGD round by hand (torch)':48s} {med['hand']:8.3f} {r_hand:8.2f}")
    print(f"{'floor: two oracle calls (least squares)':48s} {med['floor2']:8.3f} {1.0:8.2f}")
    print(f"{'L-SVRDSG round (MAST.step, lsvrg, cheap round)':48s} {med['vr']:8.3f} {r_vr:8.2f}")
    print(f"target: a round <= 1.5 x its oracle calls: DSGD {r_dsgd:.2f} x  L-SVRDSG {r_vr:.2f} x")


if __name__ == "__main__":
    main()
