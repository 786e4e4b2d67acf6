"""Recipes C1 (EF-BV), C2 (shifted compression framework) and C4 (DASHA-PP); see PAPERS.md.

Each recipe builds small seeded problems in code (so that what the claim is about -- the number of
workers, the heterogeneity that creates DCGD's neighbourhood, the participation level -- is
controlled), runs the methods with their theoretical defaults through
:func:`optsim.experiment.run_method`, draws the figure and checks the claim on measured numbers.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..channel import Channel
from ..experiment import run_method
from ..meter import Meter
from ..methods.base import build_method
from ..plots import plot_traces
from ..problems import LogisticRegression, NonconvexLogisticRegression, Quadratic
from ..trace import safe_filename
from .common import first_reach, stop_config
from .registry import Outcome, recipe

__all__ = ["iid_logreg", "hetero_logreg"]


def iid_logreg(n: int, m: int = 25, d: int = 20, lam: float = 0.1, seed: int = 0) -> LogisticRegression:
    """n clients with m samples each from one distribution (Gaussian features, labels from one
    noisy linear model): the per-client problem does not change with n."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(d)
    feats, labels = [], []
    for _ in range(n):
        A = rng.standard_normal((m, d))
        feats.append(A)
        labels.append(np.where(A @ w + rng.standard_normal(m) > 0, 1.0, -1.0))
    return LogisticRegression(feats, labels, lam=lam)


def hetero_logreg(n: int = 10, m: int = 20, d: int = 10, lam: float = 0.1, spread: float = 0.3, seed: int = 0,
                  nonconvex: bool = False):
    """Heterogeneous clients: each its own labelling vector and feature scale 1 + spread * i, so
    that grad f_i(x*) != 0 (the source of DCGD's neighbourhood)."""
    rng = np.random.default_rng(seed)
    feats, labels = [], []
    for i in range(n):
        A = rng.standard_normal((m, d)) * (1 + spread * i)
        w = rng.standard_normal(d)
        feats.append(A)
        labels.append(np.where(A @ w + 0.5 * rng.standard_normal(m) > 0, 1.0, -1.0))
    return (NonconvexLogisticRegression if nonconvex else LogisticRegression)(feats, labels, lam=lam)


def _cfg(rounds: int, tol: float | None = None, log_every: int = 5, metric: str = "auto"):
    return stop_config(rounds, tol, log_every, metric)


def _run(problem, spec, cfg, label: str):
    t = run_method(problem, spec, cfg, progress=False)
    t.label = label
    return t


def _save(traces, out: Path, name: str, x, y: str, title: str) -> list[Path]:
    for t in traces:
        t.save(out / "traces" / f"{safe_filename(name + '_' + t.label.replace('*', 'star'))}.json")
    return plot_traces(traces, list(x), y, out / f"{name}_{y}", title=title)


def _lockstep(problem, spec_a: dict, spec_b: dict, rounds: int) -> float:
    """Largest coordinate difference between two methods' iterates run side by side (same seed)."""
    built = []
    for spec in (spec_a, spec_b):
        meter = Meter(problem.n)
        problem.attach(meter)
        m = build_method(spec, problem, Channel(meter, problem.d), 0)
        m.init(torch.zeros(problem.d, dtype=problem.dtype, device=problem.device))
        built.append(m)
    diff = 0.0
    for _ in range(rounds):
        for m in built:
            m.step()
        diff = max(diff, float((built[0].x - built[1].x).abs().max()))
    problem.attach(None)
    return diff


# ---- C1: EF-BV ---------------------------------------------------------------------------------------

#: a random *biased* compressor: top-19 of 20 coordinates, then 1-level QSGD on them (eta = sqrt(1/20), omega = sqrt(19))
C1_COMPRESSOR = {"name": "compose", "outer": {"name": "qsgd", "s": 1}, "inner": {"name": "top_k", "k": 19}}


@recipe("C1", "EF-BV recovers DIANA and EF21 exactly and converges linearly; with a random biased compressor "
              "it needs fewer rounds as the number of workers grows (the EF21-type scaling nu = lambda does not)")
def ef_bv(out: Path, fast: bool) -> Outcome:
    out = Path(out)
    # 1) the special cases, iterate for iterate
    het = hetero_logreg(n=5, d=10)
    randk, topk = {"name": "rand_k", "k": 2}, {"name": "top_k", "k": 2}
    d_diana = _lockstep(het, {"name": "ef_bv", "compressor": randk, "nu": 1.0, "stepsize": 0.05},
                        {"name": "diana", "compressor": randk, "stepsize": 0.05}, 50)
    d_ef21 = _lockstep(het, {"name": "ef_bv", "compressor": topk, "lam": 1.0, "nu": 1.0, "stepsize": 0.05},
                       {"name": "ef21", "compressor": topk, "stepsize": 0.05, "init_full": False}, 50)
    # 2) more workers, fewer rounds (theory parameters lambda*, nu*, gamma)
    ns = (4, 16, 64) if fast else (4, 16, 64, 256)
    tol = 1e-8 if fast else 1e-10
    traces, rounds, rounds_ref = [], {}, {}
    for n in ns:
        pr = iid_logreg(n)
        spec = {"name": "ef_bv", "compressor": C1_COMPRESSOR}
        t = _run(pr, spec, _cfg(40000, tol), f"EF-BV nu* n={n}")
        meter = Meter(n)
        lam = build_method(spec, pr, Channel(meter, pr.d), 0).constants["lam"]
        ref = _run(pr, {**spec, "nu": lam}, _cfg(40000, tol), f"EF-BV nu=lambda n={n}")
        traces += [t, ref]
        rounds[n], rounds_ref[n] = first_reach(t, "round", "f_gap", tol), first_reach(ref, "round", "f_gap", tol)
    figs = _save(traces, out, "ef_bv_workers", ["rounds", "bits_up"], "f_gap",
                 "EF-BV, top-19 + QSGD (biased, random): n = " + ", ".join(map(str, ns)))
    gain = {n: rounds_ref[n] / rounds[n] for n in ns}
    decreasing = all(rounds[a] > rounds[b] for a, b in zip(ns, ns[1:]))
    gain_grows = all(gain[a] < gain[b] for a, b in zip(ns, ns[1:]))
    passed = d_diana == 0.0 and d_ef21 == 0.0 and decreasing and gain_grows and gain[ns[-1]] >= 1.5 \
        and all(math.isfinite(r) for r in rounds.values())
    msg = (f"max |x_EFBV - x_DIANA| = {d_diana:.1e}, |x_EFBV - x_EF21| = {d_ef21:.1e} over 50 rounds; rounds to "
           f"f-f* <= {tol:g} with nu*: " + ", ".join(f"n={n}: {rounds[n]:.0f}" for n in ns)
           + "; with nu = lambda: " + ", ".join(f"n={n}: {rounds_ref[n]:.0f}" for n in ns)
           + "; gain " + ", ".join(f"{gain[n]:.2f}x" for n in ns))
    return Outcome(passed, msg, figs)


# ---- C2: shifted compression -------------------------------------------------------------------------

@recipe("C2", "Shifts remove the neighbourhood of plain compressed GD: DCGD (zero shift) stalls while DCGD-SHIFT "
              "with optimal, DIANA, rand-DIANA or EF21-type shifts reaches 1e-10; with model compression the "
              "shifted model converges where compressing the model itself stalls")
def shifted(out: Path, fast: bool) -> Outcome:
    out = Path(out)
    pr = hetero_logreg(n=10, d=10, lam=0.1)
    randk = {"name": "rand_k", "k": 2}
    tol = 1e-10
    dcgd_rounds = 1500 if fast else 5000
    variants = [("zero (DCGD)", {"shift": "zero"}), ("star", {"shift": "star"}), ("DIANA", {"shift": "diana"}),
                ("rand-DIANA", {"shift": "rand_diana"}),
                ("EF21 (top-8)", {"shift": "ef21", "shift_compressor": {"name": "top_k", "k": 8}})]
    traces, best = [], {}
    for label, extra in variants:
        rounds = dcgd_rounds if extra["shift"] == "zero" else 20000
        t = _run(pr, {"name": "dcgd_shift", "compressor": randk, **extra}, _cfg(rounds, tol * 0.1), label)
        traces.append(t)
        best[label] = t.best("f_gap")
    dcgd = traces[0]
    plateau = float(np.median(dcgd["f_gap"][len(dcgd) // 2:]))
    figs = _save(traces, out, "shifts", ["rounds", "bits_up"], "f_gap", "DCGD-SHIFT, rand-2 of 10, 10 clients")
    # model (downlink) compression on a quadratic: shifted model vs the model compressed itself
    q = Quadratic.generate(5, 10, L=1.0, mu=0.25, heterogeneity=0.3, seed=0)
    spec = {"name": "dcgd_shift", "shift": "diana", "compressor": {"name": "rand_k", "k": 5}, "down_compressor": "natural"}
    mc = _run(q, spec, _cfg(3000, 1e-20, metric="dist_sq"), "model shift (DIANA-type)")
    mz = _run(q, {**spec, "model_shift": "zero"}, _cfg(1500 if fast else 3000, metric="dist_sq"), "no model shift")
    m_plateau = float(np.median(mz["dist_sq"][len(mz) // 2:]))
    figs += _save([mc, mz], out, "model_compression", ["rounds", "bits_down"], "dist_sq",
                  "shifted model compression (natural), quadratic")
    shifted_ok = all(best[label] <= tol for label, _ in variants[1:])
    passed = shifted_ok and plateau >= 1e3 * tol and mc.best("dist_sq") <= 1e-15 and m_plateau >= 1e-6
    msg = (f"DCGD plateau (median f-f*, 2nd half) = {plateau:.2e}; best f-f* with shifts: "
           + ", ".join(f"{k}: {v:.1e}" for k, v in best.items() if not k.startswith("zero"))
           + f"; model compression: shifted model ||x-x*||^2 = {mc.best('dist_sq'):.1e} in {mc.last('round'):.0f} rounds, "
           f"unshifted plateau {m_plateau:.1e}")
    return Outcome(passed, msg, figs)


# ---- C4: DASHA-PP -------------------------------------------------------------------------------------

def _max_senders(problem, spec: dict, rounds: int) -> int:
    """The largest number of clients that communicate (up or down) in one round."""
    meter = Meter(problem.n)
    problem.attach(meter)
    m = build_method(spec, problem, Channel(meter, problem.d), 0)
    m.init(torch.zeros(problem.d, dtype=problem.dtype, device=problem.device))
    meter.close_round()
    most = 0
    for _ in range(rounds):
        m.step()
        u = meter.close_round()
        most = max(most, int(((u.bits_up > 0) | (u.oracle["grad"] > 0)).sum()))
    problem.attach(None)
    return most


@recipe("C4", "DASHA-PP combines variance reduction, partial participation and compression: it reaches the "
              "stationarity target at every participation level, halving participation doubles the rounds but "
              "not the gradient computations per client, no round ever needs all clients, and on finite sums "
              "its PAGE estimator (DASHA-PP-PAGE) reaches the target with far fewer gradient computations")
def dasha_pp(out: Path, fast: bool) -> Outcome:
    out = Path(out)
    n = 20
    pr = hetero_logreg(n=n, d=10, lam=0.1, spread=0.1, nonconvex=True)
    randk = {"name": "rand_k", "k": 2}
    tol = 1e-8 if fast else 1e-10
    taus = (10, 5) if fast else (10, 5, 2)
    runs = [("DASHA (all clients)", {"name": "dasha"})]
    runs += [(f"DASHA-PP tau={t}", {"name": "dasha_pp", "sampler": {"name": "nice", "tau": t}}) for t in taus]
    runs += [("DASHA-PP indep. p=0.25", {"name": "dasha_pp", "sampler": {"name": "independent", "p": 0.25}}),
             ("MARINA", {"name": "marina"}), (f"PP-MARINA tau={taus[0]}", {"name": "marina", "sampler": {"name": "nice", "tau": taus[0]}})]
    if not fast:
        runs += [("DASHA-PAGE B=2", {"name": "dasha_page", "batch_size": 2}),
                 ("VR-MARINA b'=2", {"name": "vr_marina", "small_batch_size": 2})]
    traces, R, G = [], {}, {}
    for label, spec in runs:
        t = _run(pr, {**spec, "compressor": randk}, _cfg(60000, tol), label)
        traces.append(t)
        R[label], G[label] = first_reach(t, "round", "grad_norm_sq", tol), first_reach(t, "grad_evals", "grad_norm_sq", tol)
    figs = _save(traces, out, "dasha_pp", ["rounds", "grad_evals", "bits_up"], "grad_norm_sq",
                 f"nonconvex logistic regression, {n} clients, rand-2 of 10")
    pp = [f"DASHA-PP tau={t}" for t in taus]
    reached = all(math.isfinite(R[k]) for k in pp + ["DASHA-PP indep. p=0.25"])
    halving = all(R[b] >= 1.5 * R[a] and G[b] <= 1.4 * G[a] for a, b in zip(pp, pp[1:]))
    senders_pp = _max_senders(pr, {"name": "dasha_pp", "compressor": randk, "sampler": {"name": "nice", "tau": taus[-1]}}, 200)
    senders_marina = _max_senders(pr, {"name": "marina", "compressor": randk, "sampler": {"name": "nice", "tau": taus[-1]}}, 200)
    # finite sums with many samples per client (m = 200): the PAGE estimator computes a minibatch of B at x+ and x
    # in most rounds (full local gradients with probability B / (m + B)), so fewer gradients per client
    fs = hetero_logreg(n=n, m=200, d=10, lam=0.1, spread=0.1, nonconvex=True)
    B, tau = 4, taus[0]
    fs_runs = [(f"DASHA-PP tau={tau}", {"name": "dasha_pp", "sampler": {"name": "nice", "tau": tau}}),
               (f"DASHA-PP-PAGE tau={tau} B={B}", {"name": "dasha_pp_page", "batch_size": B, "sampler": {"name": "nice", "tau": tau}})]
    fs_traces, FR, FG = [], {}, {}
    for label, spec in fs_runs:
        t = _run(fs, {**spec, "compressor": randk}, _cfg(60000, tol), label)
        fs_traces.append(t)
        FR[label], FG[label] = first_reach(t, "round", "grad_norm_sq", tol), first_reach(t, "grad_evals", "grad_norm_sq", tol)
    figs += _save(fs_traces, out, "dasha_pp_finite_sum", ["rounds", "grad_evals"], "grad_norm_sq",
                  f"nonconvex logistic regression, {n} clients x 200 samples, rand-2 of 10, tau={tau}")
    (pp_label, _), (page_label, _) = fs_runs
    page_ok = math.isfinite(FR[page_label]) and FG[page_label] <= 0.5 * FG[pp_label]
    passed = reached and halving and senders_pp == taus[-1] and senders_marina == n and page_ok
    msg = (f"to ||grad f||^2 <= {tol:g}: " + "; ".join(f"{k}: {R[k]:.0f} rounds, {G[k]:.0f} grads/client" for k, _ in runs)
           + f". Most clients active in one round (200 rounds, tau={taus[-1]}): DASHA-PP {senders_pp}, "
           f"PP-MARINA {senders_marina} (its refresh rounds need all {n}). Finite sums (m = 200): "
           + "; ".join(f"{k}: {FR[k]:.0f} rounds, {FG[k]:.0f} grads/client" for k, _ in fs_runs))
    return Outcome(passed, msg, figs)
