"""Time per round of DIANA (rand-k) and EF21 (top-k) relative to the floor.

Problem: logistic regression, 100 clients x 326 samples x 123 features (a9a-sized, synthetic).
Floor: one batched gradient over all clients (``problem.grads`` on (n, d)), measured in the
same run. A method's round does exactly one such gradient plus compression and aggregation,
so the ratio (time per round) / (floor) is the overhead of everything that is not the oracle.

Methods whose rounds make other oracle calls (partial participation: gradients of the sampled
clients, at two points for some; minibatches) are also reported against their own oracle work:
the same uncounted oracle calls, recorded from ``rounds`` of their rounds and replayed as they
were made (each call one batched computation), i.e. time per round / time of the same FLOPs.

Two floors: the issue's (one batched gradient, calls back to back: the float32 data, 16 MiB, then
stays in the last-level cache) and a cold floor (the same gradient with its data streamed from
memory, as it is in a round when the round's other work or other processes on the machine evict
it in between). Each method's block is timed right after a block of each floor and the ratios are
taken pair by pair (medians over ``repeat`` pairs). "own work ms": the round with its oracle
calls answered instantly (compression, aggregation, bookkeeping), back to back; "after a grad":
the same, each round right after one (untimed) batched gradient, as in a real round, where the
gradient's pass over the data has pushed the round's own code and data out of the near caches.

"diana by hand (numpy)": the DIANA round written directly in numpy without the framework (same
gradient call, same rand-k code, same iterates), what any implementation of the round can reach.

Run: ``python bench/bench_round.py`` (``--rounds N`` for longer blocks, ``--dtype float32``).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from optsim.channel import Channel
from optsim.clock import Clock, TimeModel, compute_times
from optsim.compress.operators import random_k_mask
from optsim.meter import Meter
from optsim.methods import build_method
from optsim.problems import LogisticRegression
from timing import block


def a9a_like(n=100, m=326, d=123, dtype=torch.float64, seed=0, lam=1e-3,
             balanced: bool = False) -> LogisticRegression:
    """Synthetic a9a-sized logistic regression (binary features, ~11% density), ``n`` clients x ``m``
    samples x ``d`` features. Labels: sign of a noisy linear score against the median of the noiseless
    score, or (``balanced=True``) against the median of the noisy score (exactly balanced classes)."""
    rng = np.random.default_rng(seed)
    A = (rng.random((n * m, d)) < 0.11).astype(np.float64)  # a9a: binary features, ~11% density
    w = rng.standard_normal(d)
    z = A @ w + 0.5 * rng.standard_normal(n * m)
    y = np.where(z > np.median(z if balanced else A @ w), 1.0, -1.0)
    return LogisticRegression([A[i * m:(i + 1) * m] for i in range(n)], [y[i * m:(i + 1) * m] for i in range(n)],
                              lam=lam, dtype=dtype)


PP = {"name": "nice", "tau": 50}


def diana_by_hand(problem, k: int, gamma: float, generator: torch.Generator):
    """A round of DIANA with rand-k (Mishchenko et al. 2019, Alg. 1; shift stepsize k/d) written
    directly in numpy on preallocated arrays, without the framework (method, compressor, channel,
    meter, clock): the same gradient call and the same rand-k mask code drawing from ``generator``.
    DIANA's time per round over this one's is what the framework costs on top of the arithmetic."""
    n, d = problem.n, problem.d
    X = torch.zeros(n, d, dtype=problem.dtype)
    Xn = X.numpy()
    Hn, D = np.zeros((n, d), Xn.dtype), np.empty((n, d), Xn.dtype)
    x, h = np.zeros(d, Xn.dtype), np.zeros(d, Xn.dtype)
    scale, a = d / k, k / d

    def one_round():
        Xn[:] = x
        np.subtract(problem._grads(X, None).numpy(), Hn, out=D)
        np.multiply(D, random_k_mask(n, d, k, generator).numpy(), out=D)  # (finite values)
        np.multiply(D, scale, out=D)
        np.add(Hn, a * D, out=Hn)
        mean = D.sum(0) / n
        g = h + mean
        h[:] += a * mean
        x[:] -= gamma * g
    return one_round, x


def bench(dtype, rounds: int, repeat: int = 7) -> list[tuple]:
    """Each method's block of ``rounds`` rounds is timed right after a block of the floor, ``repeat``
    times; a method's ratio is the median of its ``repeat`` ratios to the adjacent floor block
    (times: medians), so that drifts of the machine's speed hit both sides of each ratio alike."""
    problem = a9a_like(dtype=dtype)
    X = torch.zeros(problem.n, problem.d, dtype=dtype)
    contenders = {"floor (one batched gradient)": lambda: problem._grads(X, None)}
    work = {}  # each method's round with its oracle calls answered instantly
    for spec in ({"name": "diana", "compressor": {"name": "rand_k", "k": 12}, "stepsize": 0.1},
                 {"name": "ef21", "compressor": {"name": "top_k", "k": 12}, "stepsize": 0.1},
                 {"name": "gd", "stepsize": 0.1},
                 # the compression / variance-reduction family (issue 4): same floor, same target
                 {"name": "ef_bv", "compressor": {"name": "top_k", "k": 12}, "stepsize": 0.1},
                 {"name": "dcgd_shift", "compressor": {"name": "rand_k", "k": 12}, "shift": "diana", "stepsize": 0.1},
                 {"name": "dasha", "compressor": {"name": "rand_k", "k": 12}, "stepsize": 0.1},
                 {"name": "marina", "compressor": {"name": "rand_k", "k": 12}, "stepsize": 0.1},
                 {"name": "three_pc", "compressor": {"name": "top_k", "k": 12}, "mechanism": "clag", "stepsize": 0.1},
                 # partial participation: 50 of 100 clients, x+ and (for those that missed the previous
                 # round) x in one oracle call; the PAGE / MVR variants mostly take minibatches
                 {"name": "dasha_pp", "compressor": {"name": "rand_k", "k": 12}, "sampler": PP, "stepsize": 0.1},
                 {"name": "dasha_pp_page", "compressor": {"name": "rand_k", "k": 12}, "sampler": PP, "stepsize": 0.1},
                 {"name": "dasha_pp_mvr", "compressor": {"name": "rand_k", "k": 12}, "sampler": PP, "stepsize": 0.1}):
        meter = Meter(problem.n)
        clock = Clock(TimeModel(compute_times(1.0, problem.n)))
        method = build_method(spec, problem, Channel(meter, problem.d), seed=0)
        problem.attach(meter)
        method.init(torch.zeros(problem.d, dtype=dtype))

        def one_round(method=method, meter=meter, clock=clock):
            problem.attach(meter)
            method.step()
            clock.advance(meter.close_round())

        label = f" ({spec['mechanism']})" if "mechanism" in spec else " (50 of 100)" if "sampler" in spec else ""
        if spec["name"] == "diana":  # the same round by hand: check it computes the same iterates
            generator = torch.Generator()
            generator.set_state(method.ctx.generator("compressor").get_state())
            by_hand, x_hand = diana_by_hand(problem, 12, method.gamma, generator)
            for _ in range(3):
                by_hand()
                one_round()
            assert np.allclose(x_hand, method.x.numpy(), rtol=1e-4, atol=1e-6), "DIANA by hand differs"
        contenders[spec["name"] + label] = one_round
        contenders[ORACLE_FLOOR + spec["name"] + label] = recorded_oracles(problem, one_round, rounds)
        work[spec["name"] + label] = without_oracles(problem, one_round)
        if spec["name"] == "diana":
            name = "diana by hand (numpy)"
            contenders[name] = by_hand
            contenders[ORACLE_FLOOR + name] = recorded_oracles(problem, by_hand, rounds)
            work[name] = without_oracles(problem, by_hand)
    floor_fn = contenders.pop("floor (one batched gradient)")
    for fn in (floor_fn, *contenders.values()):  # warm-up
        fn()
    # paired blocks: each method's block right after a floor block, ratios taken pair by pair (the
    # float32 gradient runs from the last-level cache, whose share of this machine varies over time)
    floor_times, times, ratios = [], {name: [] for name in contenders}, {name: [] for name in contenders}
    cold, cold_ratios = [], {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            f = block(floor_fn, rounds)
            c = cold_block(floor_fn, rounds)
            t = block(fn, rounds)
            floor_times.append(f)
            cold.append(c)
            times[name].append(t)
            ratios[name].append(t / f)
            cold_ratios[name].append(t / c)
    work_times = {name: min(block(fn, rounds) for _ in range(repeat)) for name, fn in work.items()}
    work_after = {name: min(after_block(floor_fn, fn, rounds) for _ in range(repeat)) for name, fn in work.items()}
    problem.attach(None)
    med = statistics.median
    nan = float("nan")
    rows = [("floor (one batched gradient)", med(floor_times), 1.0, med(floor_times) / med(cold), nan, nan, nan,
             problem.n / med(floor_times)),
            ("cold floor (data from memory)", med(cold), med(cold) / med(floor_times), 1.0, nan, nan, nan,
             problem.n / med(cold))]
    for name in contenders:
        if name.startswith(ORACLE_FLOOR):
            continue
        own = [a / b for a, b in zip(ratios[name], ratios[ORACLE_FLOOR + name])]  # both against adjacent floors
        rows.append((name, med(times[name]), med(ratios[name]), med(cold_ratios[name]), med(own), work_times[name],
                     work_after[name], problem.n / med(times[name])))
    return rows


def after_block(before, fn, reps: int) -> float:
    """Mean seconds per call of ``fn()`` when each call follows an (untimed) call of ``before()``."""
    total = 0.0
    for _ in range(reps):
        before()
        t0 = time.perf_counter()
        fn()
        total += time.perf_counter() - t0
    return total / reps


_EVICT = torch.zeros(64 << 20, dtype=torch.uint8)  # twice the last-level cache of the 2-core machine


def cold_block(fn, reps: int) -> float:
    """Mean seconds per call of ``fn()`` when each call finds none of its data in the caches (64 MiB
    streamed through them before each call, untimed): what one batched gradient costs in a round
    whose other work, or other processes on the machine, evicted the data since the last one."""
    total = 0.0
    for _ in range(reps):
        _EVICT.add_(1)
        t0 = time.perf_counter()
        fn()
        total += time.perf_counter() - t0
    return total / reps


def without_oracles(problem, one_round):
    """``one_round`` with every gradient call answered at once by a stored result of the right shape
    (the round's own work: compression, aggregation, bookkeeping)."""
    G = problem._grads(torch.zeros(problem.n, problem.d, dtype=problem.dtype), None)

    def answer(X, rows, *idx):
        return G if rows is None else G[rows]

    def run():
        problem._grads = problem._sample_grads = answer
        try:
            one_round()
        finally:
            del problem._grads, problem._sample_grads
    return run


ORACLE_FLOOR = "oracle calls of "


def recorded_oracles(problem, one_round, rounds: int):
    """A function replaying, per call, 1/``rounds`` of the uncounted oracle calls that ``rounds``
    rounds of ``one_round`` made (so that its time per call is the oracle work of one round). Record as
    many rounds as the timing replays when the calls draw random samples: each replay then reads the
    rows a fresh round would, not the few sets a short record repeats (which stay warm in the caches)."""
    calls = []
    kinds = ("_grads", "_sample_grads", "_weighted_sample_grads", "_hessians", "_losses")
    for kind in kinds:
        def record(*args, kind=kind):
            calls.append((kind, args))
            return getattr(type(problem), kind)(problem, *args)
        setattr(problem, kind, record)
    try:
        for _ in range(rounds):
            one_round()
    finally:
        for kind in kinds:
            delattr(problem, kind)
    chunks = [calls[i::rounds] for i in range(rounds)]  # any 1/rounds share of the calls
    state = {"i": 0}

    def replay():
        chunk = chunks[state["i"] % rounds]
        state["i"] += 1
        for kind, args in chunk:
            getattr(type(problem), kind)(problem, *args)
    return replay


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", choices=["float64", "float32"], action="append",
                    help="only this dtype (repeatable; default both)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 100 clients x 326 samples x 123 features")
    for dtype in [getattr(torch, name) for name in (args.dtype or ["float64", "float32"])]:
        print(f"\n{str(dtype).replace('torch.', '')}:")
        print(f"  {'':<30}{'ms/round':>10}{'x floor':>9}{'x cold floor':>14}{'x own oracles':>15}{'own work ms':>13}"
              f"{'after a grad':>14}{'client grads/s':>16}")
        for name, t, ratio, cold, own, work_t, after, rate in bench(dtype, args.rounds):
            print(f"  {name:<30}{t * 1e3:>10.3f}{ratio:>9.2f}{cold:>14.2f}{own:>15.2f}{work_t * 1e3:>13.3f}"
                  f"{after * 1e3:>14.3f}{rate:>16,.0f}")


if __name__ == "__main__":
    main()
