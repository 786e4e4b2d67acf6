"""Cost of a round of the S7 methods (``l0l1_gd``, ``polyak_gd``, ``adgd``, ``l0l1_stm``) and of the S9 method
(``biased_sgd``) relative to their own oracle calls.

Input: a synthetic a9a-sized logistic regression (``bench_round.a9a_like``: ``--clients`` clients x
``--samples`` samples x 123 features, float64). Each method is built by the library (``build_method``, a
channel and a meter) and its round is ``method.step()`` plus closing the meter's round. Its floor: the
uncounted oracle calls its rounds made, recorded and replayed as they were made
(``bench_round.recorded_oracles``): full local gradients (and, for Polyak, local losses) over all clients
in one batched call; for BiasedSGD the weighted minibatch gradients of its independently drawn samples.
References by hand: the (L0, L1)-GD and (L0, L1)-STM rounds written directly in torch (same gradient
call, checked to give the same iterates). Timed in turn within each repeat (all see the same load): median time and median over
repeats of time / floor.

Target (the issue's): a round within 1.5 x the cost of its own oracle calls.

Run: ``python bench/bench_l0l1_biased.py`` (``--clients 4 --samples 30 --repeats 2`` for a smoke run).
"""
from __future__ import annotations

import argparse
import os
import statistics

import torch
from bench_round import a9a_like, recorded_oracles
from timing import interleaved, median_ratio

from optsim.allocator import keep_freed_memory
from optsim.channel import Channel
from optsim.meter import Meter
from optsim.methods import build_method

SPECS = {"l0l1_gd": {"name": "l0l1_gd"}, "polyak_gd": {"name": "polyak_gd"}, "adgd": {"name": "adgd"},
         "biased_sgd": {"name": "biased_sgd", "prob": 0.1}, "l0l1_stm": {"name": "l0l1_stm"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--samples", type=int, default=326)
    ap.add_argument("--rounds", type=int, default=5, help="rounds per timed block")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as every run's Session does
    problem = a9a_like(n=args.clients, m=args.samples, dtype=torch.float64)
    _ = problem.f_star  # solved (and cached) before timing: Polyak's step and STM's default L_eff need it
    rounds = args.rounds
    fns = {}
    for label, spec in SPECS.items():
        meter = Meter(problem.n)
        method = build_method(spec, problem, Channel(meter, problem.d), seed=0)
        problem.attach(meter)
        method.init(torch.zeros(problem.d, dtype=torch.float64))

        def one_round(method=method, meter=meter):
            problem.attach(meter)
            method.step()
            meter.close_round()

        if label == "l0l1_gd":  # the same round by hand: the same iterates
            L0, L1 = method.L0_L1
            eta, state = method.gamma, {"x": method.x.clone()}

            def by_hand(state=state, L0=L0, L1=L1, eta=eta):
                x = state["x"]
                g = problem._grads(x.expand(problem.n, problem.d), None).mean(0)
                state["x"] = x - eta / (L0 + L1 * float(g.norm())) * g

            for _ in range(3):
                by_hand()
                one_round()
            assert torch.allclose(state["x"], method.x, rtol=1e-12, atol=1e-14), "(L0, L1)-GD by hand differs"
        if label == "l0l1_stm":  # the similar-triangles round by hand, from the method's current state
            state = {"y": method.x.clone(), "z": method.z.clone(), "A": method.A_sum, "k": method.k}
            L_eff, eta = method.L_eff, method.gamma

            def by_hand(state=state, L_eff=L_eff, eta=eta):
                a = eta * (state["k"] + 2) / (2 * L_eff)
                A, A1 = state["A"], state["A"] + a
                x = (A * state["y"] + a * state["z"]) / A1
                state["z"] = state["z"] - a * problem._grads(x.expand(problem.n, problem.d), None).mean(0)
                state["y"] = (A * state["y"] + a * state["z"]) / A1
                state["A"], state["k"] = A1, state["k"] + 1

            for _ in range(3):
                by_hand()
                one_round()
            assert torch.allclose(state["y"], method.x, rtol=1e-12, atol=1e-14), "(L0, L1)-STM by hand differs"
        if label == "biased_sgd":  # the same round by hand: the same draws, oracle and update, no framework
            from optsim.methods.biased.biased_sgd import independent_sampling
            gen = torch.Generator().manual_seed(0)
            gen.set_state(method.ctx.generator("noise").get_state())
            P, m_cpu, gamma, state = method.probs, problem.m.cpu(), method.gamma, {"x": method.x.clone()}

            def by_hand(state=state, P=P, m_cpu=m_cpu, gamma=gamma, gen=gen):
                idx, w = independent_sampling(P, m_cpu, "biased", gen)
                x = state["x"]
                state["x"] = x - gamma * problem._weighted_sample_grads(x.expand(problem.n, problem.d), None, idx, w).mean(0)

            for _ in range(3):
                by_hand()
                one_round()
            assert torch.allclose(state["x"], method.x, rtol=1e-12, atol=1e-14), "BiasedSGD by hand differs"
        floor = recorded_oracles(problem, one_round, rounds * args.repeats)  # fresh samples in every replay
        fns[f"{label} round"] = (lambda f=one_round: [f() for _ in range(rounds)])
        fns[f"{label}: its oracle calls"] = (lambda f=floor: [f() for _ in range(rounds)])
        if label in ("l0l1_gd", "l0l1_stm", "biased_sgd"):
            fns[f"{label} round by hand (torch)"] = (lambda f=by_hand: [f() for _ in range(rounds)])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; logistic regression "
          f"{problem.n} clients x {args.samples} samples x {problem.d} features, float64, blocks of {rounds} rounds, "
          f"{args.repeats} interleaved repeats (median)")
    # each method's round, floor (and round by hand) interleaved with each other only: they follow one
    # another on the same data, so no one of them alone pays for the caches another method's work emptied
    times = {}
    for m in SPECS:
        group = {name: fn for name, fn in fns.items() if name.split()[0].rstrip(":") == m}
        times.update(interleaved(group, args.repeats, torch.device("cpu")))
    width = max(len(k) for k in fns) + 2
    print(f"\n{'what':{width}s}{'ms/round':>10s}{'x its floor':>13s}")
    ratios = {}
    for name, ts in times.items():
        floor = f"{name.split()[0].rstrip(':')}: its oracle calls"
        ratios[name] = median_ratio(ts, times[floor])
        print(f"{name:{width}s}{statistics.median(ts) * 1e3 / rounds:10.3f}{ratios[name]:13.2f}")
    worst = max(ratios[f"{m} round"] for m in SPECS)
    print("\ntarget: a round <= 1.5 x its oracle calls: " + "  ".join(f"{m} {ratios[f'{m} round']:.2f} x" for m in SPECS)
          + f"  {'met' if worst <= 1.5 else 'NOT met'}; (L0,L1)-GD by hand / floor = "
          f"{ratios['l0l1_gd round by hand (torch)']:.2f}; (L0,L1)-STM by hand / floor = "
          f"{ratios['l0l1_stm round by hand (torch)']:.2f}; BiasedSGD by hand / floor = "
          f"{ratios['biased_sgd round by hand (torch)']:.2f}")


if __name__ == "__main__":
    main()
