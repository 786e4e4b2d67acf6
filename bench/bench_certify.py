"""Cost of randomized-smoothing certification (optsim.robust.certify) and of privacy accounting.

1. CERTIFY (n0 = 100 selection draws + n estimation draws per input, default 1,000 digits images
   and n = 10,000) with an MLP 64-64-10 in float32 on the CPU: total seconds, noisy draws per
   second, and the ratio to the floor measured in the same run: plain batched inference of the
   same number of draws written by hand (noise, add the input, forward, argmax; the same batch
   size), i.e. everything certification cannot avoid. Target (the issue's): under a minute.
2. The accountant's cost per logged round (PrivacyAccountant.epsilon at a new round count, RDP)
   against one round of DP-FedAvg (100 clients of logistic regression, 5 local steps), timed in the
   same run.

Run: ``python bench/bench_certify.py`` (``--inputs 20 --draws 200`` for a smoke run).
"""
from __future__ import annotations

import argparse
import time

import torch

from optsim.experiment import build_problem, parse_config
from optsim.experiment.runner import Session
from optsim.privacy import PrivacyAccountant
from optsim.problems.neural import make_model
from optsim.robust import certify
from optsim.robust.certify import DEFAULT_MAX_BYTES


def hand_inference(net, X, sigma, draws, rows, generator):
    """The floor: classify ``draws`` noisy copies of every input in batches of ``rows``."""
    total = X.shape[0] * draws
    out = torch.empty(total, dtype=torch.long)
    with torch.inference_mode():
        for s in range(0, total, rows):
            e = min(total, s + rows)
            idx = torch.arange(s, e) // draws
            batch = X[idx] + sigma * torch.randn((e - s, *X.shape[1:]), generator=generator, dtype=X.dtype)
            out[s:e] = net(batch).argmax(1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sklearn.datasets import load_digits

    X, _ = load_digits(return_X_y=True)
    X = torch.as_tensor((X / 16.0)[: args.inputs], dtype=torch.float32).reshape(-1, 1, 8, 8)
    net = make_model("mlp", in_shape=(1, 8, 8), classes=10, hidden=(64,), seed=0).float().eval()
    rows = max(1, DEFAULT_MAX_BYTES // (2 * X[0].numel() * 4))
    draws = 100 + args.draws
    t0 = time.perf_counter()
    certify(net, X, 0.25, n0=100, n=args.draws, alpha=0.001, seed=0)
    t_cert = time.perf_counter() - t0
    t0 = time.perf_counter()
    hand_inference(net, X, 0.25, draws, rows, torch.Generator().manual_seed(0))
    t_floor = time.perf_counter() - t0
    total = X.shape[0] * draws
    print(f"certify: {X.shape[0]} inputs x ({100} + {args.draws}) draws, MLP 64-64-10 float32, {args.threads} threads")
    print(f"{'':34s}{'seconds':>10s}{'draws/s':>14s}{'/ floor':>10s}")
    print(f"{'certify (CERTIFY, batched)':34s}{t_cert:10.2f}{total / t_cert:14,.0f}{t_cert / t_floor:10.2f}")
    print(f"{'floor: hand-batched inference':34s}{t_floor:10.2f}{total / t_floor:14,.0f}{1.0:10.2f}")

    cfg = parse_config({"name": "bench", "seed": 0, "problem": {"name": "logreg", "data": "synthetic:logreg",
                                                                 "size": 10_000, "dim": 20, "clients": 100},
                        "methods": ["fedavg"], "stop": {"max_rounds": 10_000}, "log_every": 1,
                        "privacy": {"clip": 1.0, "noise_multiplier": 1.0, "delta": 1e-5}})
    spec = {"name": "fedavg", "local_steps": 5, "stepsize": 0.5, "sampler": {"name": "nice", "tau": 10}}
    session = Session(build_problem(cfg), spec, cfg)
    session.attach()
    session.start()
    session.end_round()
    reps = 50
    t0 = time.perf_counter()
    for _ in range(reps):
        session.step()
    t_round = (time.perf_counter() - t0) / reps
    acc = PrivacyAccountant(1.0, 0.1, 1e-5, sampling="fixed", population=100)
    acc.step()
    acc.epsilon()  # the one-off RDP curve of one round
    t0 = time.perf_counter()
    for _ in range(reps):
        acc.step()
        acc.epsilon()
    t_eps = (time.perf_counter() - t0) / reps
    print(f"accountant (rdp) per logged round: {t_eps * 1e3:.3f} ms; one DP-FedAvg round (100 clients, 5 local steps): "
          f"{t_round * 1e3:.3f} ms; ratio {t_eps / t_round:.3f}")


if __name__ == "__main__":
    main()
