"""Recipes of the local-training family (PAPERS.md, L rows and the L baseline): ProxSkip's
sqrt(kappa) communication, ProxSkip-VR (L2), GradSkip (L7), FedShuffle (L8), cyclic client
participation (L9). Every recipe measures its claim on traces (``comm_rounds`` for
communication, ``grad_evals`` for local work) and draws its figure.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..experiment import build_problem, parse_config, run
from ..plots import plot_traces
from ..problems import LogisticRegression, Quadratic
from ..rng import numpy_rng
from .common import f0 as _f0
from .common import first_reach, save_figure
from .registry import Outcome, recipe

__all__ = ["hetero_quadratic", "weighted_minimizer", "run_on"]


def hetero_quadratic(L_i, d: int, mu: float, spread: float = 1.0, seed: int = 0) -> Quadratic:
    """Clients f_i(x) = 1/2 x^T A_i x - b_i^T x with eigenvalues of A_i log-spaced in [mu, L_i]
    (each client mu-strongly convex and exactly L_i-smooth, its own random eigenbasis) and
    minimizers x_i* = x_true + spread * N(0, I) (heterogeneous data)."""
    rng = numpy_rng(seed, "data")
    L_i = [float(v) for v in L_i]
    x_true = rng.standard_normal(d)
    A, b = [], []
    for Li in L_i:
        Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        lam = np.geomspace(mu, Li, d)
        Ai = (Q * lam) @ Q.T
        A.append(Ai)
        b.append(Ai @ (x_true + spread * rng.standard_normal(d)))
    return Quadratic(torch.tensor(np.array(A)), torch.tensor(np.array(b)))


def weighted_minimizer(problem, weights, iters: int = 50) -> torch.Tensor:
    """argmin_x sum_i weights_i f_i(x) by Newton's method (uncounted oracles, float64): the point
    a method converges to when it effectively weights client i by weights_i."""
    w = torch.as_tensor(weights, dtype=problem.dtype, device=problem.device)
    w = w / w.sum()
    x = problem.x_star.clone()
    for _ in range(iters):
        X = x.expand(problem.n, problem.d)
        g = (w[:, None] * problem._grads(X, None)).sum(0)
        if float(g.norm()) < 1e-13:
            break
        H = (w[:, None, None] * problem._hessians(X, None)).sum(0)
        x = x - torch.linalg.solve(H, g)
    return x


def run_on(problem, name: str, methods: list, out: Path, rounds: int, tol: float | None = None,
           log_every: int | None = None, seeds: dict | None = None, x=("comm_rounds", "grad_evals")):
    """Run ``methods`` on a ready-made problem; traces under ``out/traces``; {label: trace}."""
    cfg = {"name": name, "problem": {"name": "quadratic"}, "methods": methods,
           "stop": {"max_rounds": rounds, "tol": tol}, "plot": {"x": list(x)}}
    if log_every:
        cfg["log_every"] = log_every
    if seeds:
        cfg["seeds"] = seeds
    traces = run(parse_config(cfg), out, progress=False, problem=problem, plot=False, summary=False)
    return {t.label: t for t in traces}


def _first(trace, column: str, metric: str, tol: float) -> float:
    return first_reach(trace, column, metric, tol, math.nan)


def _figure(path: Path, draw) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4))
    draw(ax)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


# ---- baseline: ProxSkip's communication acceleration ------------------------------------------------
@recipe("baseline-proxskip", "ProxSkip's communication rounds to reach 1e-8 grow like sqrt(kappa), GD's like kappa")
def proxskip_sqrt_kappa(out: Path, fast: bool) -> Outcome:
    kappas = [1e2, 3e2, 1e3] if fast else [1e2, 1e3, 1e4]
    seeds = [0, 1] if fast else [0, 1, 2]
    gd_rounds, ps_rounds, last = [], [], {}
    for kappa in kappas:
        pr = Quadratic.generate(10, 10, L=1.0, mu=1.0 / kappa, heterogeneity=0.3, seed=0)
        tol = 1e-8 * _f0(pr)
        every = max(1, int(kappa // 100))
        rounds = int(60 * kappa)
        t = run_on(pr, f"kappa{kappa:g}_gd", [{"name": "gd"}], out / f"kappa{kappa:g}", rounds, tol, every)
        gd_rounds.append(_first(t["gd"], "comm_rounds", "f_gap", tol))
        last["GD"] = t["gd"]
        counts = []
        for s in seeds:
            t = run_on(pr, f"kappa{kappa:g}_proxskip_seed{s}", [{"name": "proxskip", "label": f"ProxSkip (seed {s})"}],
                       out / f"kappa{kappa:g}", rounds, tol, every, seeds={"method": s})
            tr = t[f"ProxSkip (seed {s})"]
            counts.append(_first(tr, "comm_rounds", "f_gap", tol))
            if s == 0:
                last["ProxSkip"] = tr
        ps_rounds.append(float(np.mean(counts)))
    lk = np.log(kappas)
    s_gd = float(np.polyfit(lk, np.log(gd_rounds), 1)[0])
    s_ps = float(np.polyfit(lk, np.log(ps_rounds), 1)[0])

    def draw(ax):
        ax.loglog(kappas, gd_rounds, "o-", label=f"GD (slope {s_gd:.2f})")
        ax.loglog(kappas, ps_rounds, "s-", label=f"ProxSkip (slope {s_ps:.2f})")
        ax.set_xlabel(r"condition number $\kappa$")
        ax.set_ylabel("communication rounds to $10^{-8}$")

    figs = _figure(out / "proxskip_rounds_vs_kappa", draw)
    for tr in last.values():
        tr.label = f"{tr.label} (kappa={kappas[-1]:g})"
    figs += plot_traces(list(last.values()), ["comm_rounds", "grad_evals"], "f_gap", out / "proxskip_vs_gd_f_gap")
    passed = 0.35 <= s_ps <= 0.7 and 0.85 <= s_gd <= 1.15 and all(p < g for p, g in zip(ps_rounds, gd_rounds))
    rows = ", ".join(f"kappa={k:g}: GD {g:.0f}, ProxSkip {p:.0f}" for k, g, p in zip(kappas, gd_rounds, ps_rounds))
    return Outcome(passed, f"communication rounds to f-f* <= 1e-8 (f(x0)-f*): {rows}; fitted log-log slopes "
                           f"ProxSkip {s_ps:.2f} (theory 0.5), GD {s_gd:.2f} (theory 1)", figs)


# ---- L2: ProxSkip-VR --------------------------------------------------------------------------------
def _logreg_unit_rows(n: int, m: int, d: int, lam: float, seed: int = 0) -> LogisticRegression:
    """Synthetic logistic regression, unit-norm rows, each client its own labelling direction."""
    rng = numpy_rng(seed, "data")
    w0 = rng.standard_normal(d)
    feats, labels = [], []
    for _ in range(n):
        A = rng.standard_normal((m, d))
        A /= np.linalg.norm(A, axis=1, keepdims=True)
        w = w0 + 0.5 * rng.standard_normal(d)
        z = A @ w * 3
        feats.append(A)
        labels.append(np.where(rng.random(m) < 1 / (1 + np.exp(-z)), 1.0, -1.0))
    return LogisticRegression(feats, labels, lam=lam)


@recipe("L2", "ProxSkip-VR (L-SVRG / SAGA local estimators) reaches the target with fewer total local gradient "
              "computations than ProxSkip when local data is large")
def proxskip_vr(out: Path, fast: bool) -> Outcome:
    m = 1000 if fast else 2000
    pr = _logreg_unit_rows(5, m, 10, lam=1e-3)
    tol = 1e-6 * _f0(pr)
    methods = [{"name": "proxskip", "label": "ProxSkip"},
               {"name": "proxskip_vr", "estimator": "lsvrg", "label": "ProxSkip-LSVRG"},
               {"name": "proxskip_vr", "estimator": "saga", "label": "ProxSkip-SAGA"}]
    t = run_on(pr, "proxskip_vr", methods, out, 200000, tol, 20)
    cost = {k: _first(v, "grad_evals", "f_gap", tol) for k, v in t.items()}
    comm = {k: _first(v, "comm_rounds", "f_gap", tol) for k, v in t.items()}
    figs = plot_traces(list(t.values()), ["grad_evals", "comm_rounds"], "f_gap", out / "proxskip_vr_f_gap")
    passed = all(np.isfinite(list(cost.values()))) and max(cost["ProxSkip-LSVRG"], cost["ProxSkip-SAGA"]) < 0.5 * cost["ProxSkip"]
    txt = "; ".join(f"{k}: {cost[k]:.1f} local gradients, {comm[k]:.0f} communications" for k in t)
    return Outcome(passed, f"to f-f* <= 1e-6 (f(x0)-f*), n=5 clients x m={m} samples, kappa_i <= "
                           f"{pr.L_max / pr.lam:.0f}: {txt}", figs)


# ---- L7: GradSkip -----------------------------------------------------------------------------------
@recipe("L7", "GradSkip needs as many communication rounds as ProxSkip but fewer local gradient steps when the "
              "clients' condition numbers differ")
def gradskip(out: Path, fast: bool) -> Outcome:
    kmax = 300 if fast else 1000
    mu = 1e-3
    L_i = [kmax * mu, 10 * mu, 5 * mu, 3 * mu, 2 * mu]
    pr = hetero_quadratic(L_i, 10, mu)
    tol = 1e-8 * _f0(pr)
    t = run_on(pr, "gradskip", [{"name": "proxskip", "label": "ProxSkip"}, {"name": "gradskip", "label": "GradSkip"}],
               out, 100 * kmax, tol, 5)
    comm = {k: _first(v, "comm_rounds", "f_gap", tol) for k, v in t.items()}
    work = {k: _first(v, "grad_evals", "f_gap", tol) for k, v in t.items()}
    figs = plot_traces(list(t.values()), ["comm_rounds", "grad_evals"], "f_gap", out / "gradskip_f_gap")
    ratio_c = comm["GradSkip"] / comm["ProxSkip"]
    ratio_w = work["GradSkip"] / work["ProxSkip"]
    passed = 0.75 <= ratio_c <= 1.33 and ratio_w <= 0.6
    return Outcome(passed, f"to f-f* <= 1e-8 (f(x0)-f*), kappa_i = {', '.join(f'{v / mu:g}' for v in L_i)}: "
                           f"communications ProxSkip {comm['ProxSkip']:.0f}, GradSkip {comm['GradSkip']:.0f} "
                           f"(ratio {ratio_c:.2f}); local gradient steps per client ProxSkip {work['ProxSkip']:.0f}, "
                           f"GradSkip {work['GradSkip']:.0f} (ratio {ratio_w:.2f})", figs)


# ---- L8: FedShuffle ---------------------------------------------------------------------------------
def fedshuffle_config(name: str, methods: list, rounds: int, size: int = 120) -> dict:
    """Least squares on synthetic data split with the 'unbalanced' partition (sizes ~ 1/i^1.5)."""
    return {"name": name, "seed": 0,
            "problem": {"name": "least_squares", "data": "synthetic:linreg", "size": size, "dim": 5,
                        "noise": 1.0, "clients": 6, "partition": {"name": "unbalanced", "power": 1.5},
                        "lam": 0.1},
            "methods": methods, "stop": {"max_rounds": rounds}, "log_every": 5,
            "plot": {"x": ["rounds", "grad_evals"], "y": "dist_sq"}}


@recipe("L8", "Under data imbalance (local epochs, unequal m_i) FedShuffle converges to the true optimum x*, "
              "while FedAvg converges to a different point")
def fedshuffle(out: Path, fast: bool) -> Outcome:
    rounds = 300 if fast else 1000
    b = 4
    probe = parse_config(fedshuffle_config("probe", ["gd"], 1))
    pr = build_problem(probe)

    tau = (pr.m.cpu() // b).to(torch.float64)
    # the same local stepsize for all three methods: a round's total local stepsize 0.5 / L_max (per step
    # well below 1 / L_s, so every local step is stable)
    eta = min(0.5 / (pr.L_max * float(tau.max())), 0.5 / pr.L_sample_max)
    common = {"local_epochs": 1, "batch_size": b, "stepsize": eta}
    methods = [{"name": "fedavg", **common, "label": "FedAvg"},
               {"name": "fednova", **common, "label": "FedNova"},
               {"name": "fedshuffle", "local_epochs": 1, "batch_size": b, "stepsize": eta, "label": "FedShuffle"}]
    cfg = parse_config(fedshuffle_config("fedshuffle", methods, rounds))
    traces = {t.label: t for t in run(cfg, out, progress=False, problem=pr, plot=False, summary=False)}
    figs = plot_traces(list(traces.values()), ["rounds", "grad_evals"], "dist_sq", out / "fedshuffle_dist")
    tail = {k: float(np.sqrt(np.mean(v["dist_sq"][len(v) * 2 // 3:]))) for k, v in traces.items()}
    x_tilde = weighted_minimizer(pr, tau)  # FedAvg's target: client i weighted by its tau_i local steps
    predicted = float((x_tilde - pr.x_star).norm())
    passed = tail["FedShuffle"] < 0.25 * tail["FedAvg"] and abs(tail["FedAvg"] - predicted) < 0.3 * predicted
    sizes = ", ".join(str(int(v)) for v in pr.m)
    return Outcome(passed, f"client sizes {sizes} (batch {b}, 1 local epoch): ||x - x*|| (rms over the last third of "
                           f"{rounds} rounds) FedAvg {tail['FedAvg']:.3g}, FedNova {tail['FedNova']:.3g}, FedShuffle "
                           f"{tail['FedShuffle']:.3g}; predicted FedAvg limit ||argmin sum tau_i f_i - x*|| = "
                           f"{predicted:.3g}", figs)


# ---- L9: regularized (cyclic) client participation ---------------------------------------------------
@recipe("L9", "FedAvg with cyclic (regularized) client participation has smaller client-sampling variance than "
              "with uniform random sampling of the same number of clients")
def cyclic_participation(out: Path, fast: bool) -> Outcome:
    n, R = 20, 5
    seeds = range(4 if fast else 20)
    rounds = 40 * R if fast else 200 * R
    pr = hetero_quadratic([1.0] * n, 10, 0.1, spread=1.0, seed=1)
    final = {"cyclic": [], "uniform": []}
    shown = []
    for s in seeds:
        methods = [{"name": "fedavg", "local_steps": 5, "sampler": {"name": "cyclic", "groups": R}, "label": "cyclic"},
                   {"name": "fedavg", "local_steps": 5, "sampler": {"name": "nice", "tau": n // R}, "label": "uniform"}]
        t = run_on(pr, f"cyclic_seed{s}", methods, out / f"seed{s}", rounds, None, R, seeds={"sampler": s},
                   x=("rounds", "comm_rounds"))
        for k in final:
            final[k].append(np.mean(t[k]["dist_sq"][len(t[k]) // 2:]))
        if s == 0:
            shown = list(t.values())
    figs = plot_traces(shown, ["rounds"], "dist_sq", out / "cyclic_vs_uniform_dist")
    mc, mu_ = float(np.mean(final["cyclic"])), float(np.mean(final["uniform"]))
    sc, su = float(np.std(final["cyclic"])), float(np.std(final["uniform"]))
    passed = mc < 0.5 * mu_ and sc < su
    return Outcome(passed, f"n={n} clients, R={R} groups of {n // R} (uniform: {n // R} clients per round), 5 local "
                           f"steps, {len(final['cyclic'])} seeds: E||x - x*||^2 over the second half of {rounds} rounds "
                           f"cyclic {mc:.3g} (std over seeds {sc:.2g}) vs uniform {mu_:.3g} (std {su:.2g})", figs)
