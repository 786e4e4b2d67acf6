"""Recipes of the accelerated local-training, personalization and (L0, L1) papers (PAPERS.md L1, L3,
L4, L5, L6, L10, L11, L12). Each measures its claim on traces -- ``comm_rounds`` for communication,
``grad_evals`` for local work, ``bits_up`` for compression -- and draws its figure. Problems are small
seeded quadratics (exact constants and solutions), so ``fast`` runs take seconds.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..experiment import evaluate, parse_config
from ..experiment.runner import Session
from ..trace import Trace
from ..methods.local.personalized import moreau_prox, moreau_solution, personalized_solution
from ..plots import plot_traces
from ..problems import Quadratic
from ..problems.l0l1 import CoshProblem
from .common import f0 as _f0
from .common import first_reach, save_figure
from .local import run_on
from .registry import Outcome, recipe

__all__ = ["run_tracked", "shared_basis_quadratic"]


def _first(trace: Trace, column: str, level: float, metric: str = "f_gap") -> float:
    """``column`` at the first logged row where ``metric`` <= level (NaN if never)."""
    return first_reach(trace, column, metric, level, math.nan)


def _slope(xs, ys) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


def _quad(kappa: float, n: int = 10, d: int = 10, seed: int = 0) -> Quadratic:
    return Quadratic.generate(n, d, L=1.0, mu=1.0 / kappa, heterogeneity=0.3, seed=seed)


def run_tracked(problem, spec: dict, rounds: int, metrics, log_every: int = 10, seed: int = 0,
                x0: torch.Tensor | None = None) -> Trace:
    """Run one method on ``problem`` for ``rounds`` rounds with extra metrics ``metrics(method) ->
    dict`` logged next to the standard ones (for objectives other than f: personalized, Moreau)."""
    cfg = parse_config({"problem": {"name": "quadratic"}, "methods": [spec], "seed": seed,
                        "stop": {"max_rounds": rounds}, "log_every": log_every})
    s = Session(problem, spec, cfg)
    s.attach()
    s.start(x0)

    def log():
        ok = s.x_is_finite()
        s.record({**evaluate(problem, s.method.x), **metrics(s.method)} if ok else None)

    if s.close_round():
        log()
    while s.running:
        s.step()
        if s.close_round():
            log()
    return s.trace


def _save(traces, out: Path):
    for t in traces:
        t.save(out / "traces" / f"{t.label.replace(' ', '_').replace('/', '-')}.json")


# ---- L1: APDA with inexact prox against ProxSkip ----------------------------------------------------------
@recipe("L1", "APDA with inexact prox (fast GD inner solver) keeps ProxSkip's O(sqrt(kappa)) communication with "
              "fewer local steps per round: ~kappa^(1/4) against ProxSkip's kappa^(1/2)")
def l1_apda(out: Path, fast: bool) -> Outcome:
    kappas = [1e2, 4e2, 1.6e3] if fast else [1e2, 1e3, 1e4]
    rows, last = [], {}
    for kappa in kappas:
        pr = _quad(kappa)
        tol = 1e-8 * _f0(pr)
        every = max(1, int(math.sqrt(kappa) / 4))
        t = run_on(pr, f"L1_k{kappa:g}", [{"name": "apda_inexact", "label": "APDA-Inexact (fast GD)"},
                                          {"name": "proxskip", "label": "ProxSkip"}],
                   out / f"kappa{kappa:g}", int(20 * kappa), tol, every)  # ProxSkip: O(kappa) iterations
        a, p = t["APDA-Inexact (fast GD)"], t["ProxSkip"]
        ca, cp = _first(a, "comm_rounds", tol), _first(p, "comm_rounds", tol)
        ga, gp = _first(a, "grad_evals", tol), _first(p, "grad_evals", tol)
        rows.append((kappa, ca, cp, ga / ca, gp / cp, ga, gp))
        last = t
    k, ca, cp, la, lp, ga, gp = (np.array(c) for c in zip(*rows))
    s_la, s_lp, s_ca = _slope(k, la), _slope(k, lp), _slope(k, ca)
    figs = plot_traces(list(last.values()), ["comm_rounds", "grad_evals"], "f_gap", out / "L1_largest_kappa")
    figs += _scaling_figure(out / "L1_local_steps", k, {"APDA-Inexact: local steps / round": la,
                                                        "ProxSkip: local steps / round": lp,
                                                        "APDA-Inexact: rounds to 1e-8": ca,
                                                        "ProxSkip: rounds to 1e-8": cp})
    ok = bool(np.all(np.isfinite(ca)) and np.all(np.isfinite(cp)) and s_la <= 0.36 and s_lp >= 0.42
              and la[-1] < lp[-1] and ga[-1] < gp[-1] and s_ca <= 0.65)
    detail = "; ".join(f"kappa={int(r[0])}: rounds {r[1]:.0f} vs {r[2]:.0f}, local steps/round {r[3]:.1f} vs {r[4]:.1f}"
                       for r in rows)
    return Outcome(ok, f"APDA vs ProxSkip -- {detail}; log-log slopes in kappa: local steps/round {s_la:.2f} "
                       f"(APDA) vs {s_lp:.2f} (ProxSkip), APDA rounds {s_ca:.2f}; total local gradients at the "
                       f"largest kappa {ga[-1]:.0f} vs {gp[-1]:.0f}", figs)


def _scaling_figure(path: Path, ks, series: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4))
    for label, ys in series.items():
        ax.loglog(ks, ys, "o-" if "local" in label else "s--", label=label)
    ax.set_xlabel(r"condition number $\kappa$")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


# ---- L3 / L5: accelerated communication with client sampling ------------------------------------------------
def _sampled_scaling(out: Path, fast: bool, spec: dict, label: str, name: str):
    kappas = [1e2, 4e2, 1.6e3] if fast else [1e2, 1e3, 1e4]
    rounds, last = [], None
    for kappa in kappas:
        pr = _quad(kappa, n=20)
        tol = 1e-8 * _f0(pr)
        t = run_on(pr, f"{name}_k{kappa:g}", [{**spec, "label": label}], out / f"kappa{kappa:g}",
                   int(3000 * math.sqrt(kappa)), tol, max(1, int(math.sqrt(kappa) / 8)))
        rounds.append(_first(t[label], "comm_rounds", tol))
        last = t[label]
    k, r = np.array(kappas), np.array(rounds)
    return k, r, last


@recipe("L3", "5GCS: with C of n clients per round, the communication rounds to 1e-8 grow like sqrt(kappa)")
def l3_5gcs(out: Path, fast: bool) -> Outcome:
    spec = {"name": "5gcs", "sampler": {"name": "nice", "tau": 4}}
    k, r, last = _sampled_scaling(out, fast, spec, "5GCS (4 of 20 clients)", "L3")
    s = _slope(k, r) if np.all(np.isfinite(r)) else math.nan
    figs = _scaling_figure(out / "L3_rounds", k, {"5GCS: rounds to 1e-8": r, r"$\sqrt{\kappa}$ (scaled)":
                                                  r[0] * np.sqrt(k / k[0]), r"$\kappa$ (scaled)": r[0] * k / k[0]})
    figs += plot_traces([last], ["comm_rounds", "grad_evals"], "f_gap", out / "L3_largest_kappa")
    ok = bool(np.isfinite(s) and s <= 0.65)
    return Outcome(ok, "5GCS, 4 of 20 clients per round: rounds to 1e-8 " +
                   ", ".join(f"{int(a)}: {b:.0f}" for a, b in zip(k, r)) +
                   f"; log-log slope in kappa {s:.2f} (sqrt(kappa): 0.5, GD-like: 1)", figs)


@recipe("L5", "TAMUNA converges linearly with local training, compression (s owners per coordinate) and partial "
              "participation; its rounds to 1e-8 grow like sqrt(kappa)")
def l5_tamuna(out: Path, fast: bool) -> Outcome:
    spec = {"name": "tamuna", "sampler": {"name": "nice", "tau": 5}, "s": 2}
    k, r, last = _sampled_scaling(out, fast, spec, "TAMUNA (5 of 20 clients, s=2)", "L5")
    s = _slope(k, r) if np.all(np.isfinite(r)) else math.nan
    figs = _scaling_figure(out / "L5_rounds", k, {"TAMUNA: rounds to 1e-8": r, r"$\sqrt{\kappa}$ (scaled)":
                                                  r[0] * np.sqrt(k / k[0]), r"$\kappa$ (scaled)": r[0] * k / k[0]})
    figs += plot_traces([last], ["comm_rounds", "bits_up"], "f_gap", out / "L5_largest_kappa")
    ok = bool(np.isfinite(s) and s <= 0.65)
    return Outcome(ok, "TAMUNA, 5 of 20 clients per round, s = 2: rounds to 1e-8 " +
                   ", ".join(f"{int(a)}: {b:.0f}" for a, b in zip(k, r)) +
                   f"; log-log slope in kappa {s:.2f}; bits up per client at the largest kappa "
                   f"{last.last('bits_up'):.3g}", figs)


# ---- L4: CompressedScaffnew against ProxSkip --------------------------------------------------------------
@recipe("L4", "CompressedScaffnew converges linearly to the exact solution and needs fewer bits than ProxSkip "
              "(Scaffnew)")
def l4_compressed_scaffnew(out: Path, fast: bool) -> Outcome:
    n, d, kappa = (20, 20, 300) if fast else (50, 50, 1000)
    pr = _quad(kappa, n=n, d=d)
    tol = 1e-10 * _f0(pr)
    t = run_on(pr, "L4", [{"name": "compressed_scaffnew", "label": "CompressedScaffnew (s=2)"},
                          {"name": "proxskip", "label": "ProxSkip"}], out, 400 * kappa, tol, 20,
               x=("comm_rounds", "bits_up"))
    c, p = t["CompressedScaffnew (s=2)"], t["ProxSkip"]
    lvl = 1e-8 * _f0(pr)
    bc, bp = _first(c, "bits_up", lvl), _first(p, "bits_up", lvl)
    f = c["f_gap"]
    keep = f > 0
    slope = float(np.polyfit(c["round"][keep], np.log10(f[keep]), 1)[0])
    figs = plot_traces([c, p], ["comm_rounds", "bits_up"], "f_gap", out / "L4")
    ok = bool(c.best("f_gap") <= tol * 1.0001 and slope < 0 and bc < bp)
    return Outcome(ok, f"n={n}, d={d}, kappa={kappa}: CompressedScaffnew best f-f* {c.best('f_gap'):.2e} (linear, "
                       f"fitted log10 slope {slope:.2e}/iteration); bits up per client to reach 1e-8 (relative): "
                       f"CompressedScaffnew {bc:.3g} vs ProxSkip {bp:.3g} ({bp / bc:.2f}x fewer); rounds "
                       f"{_first(c, 'comm_rounds', lvl):.0f} vs {_first(p, 'comm_rounds', lvl):.0f}", figs)


# ---- L6: importance sampling --------------------------------------------------------------------------------
def shared_basis_quadratic(L_i, d: int, mu: float, spread: float = 1.0, seed: int = 0) -> Quadratic:
    """Clients f_i(x) = 1/2 x^T A_i x - b_i^T x with one common eigenbasis, eigenvalues log-spaced in
    [mu, L_i] and minimizers x_true + spread * N(0, I): every f_i is mu-strongly convex and so is f
    (unlike independent bases, which make f much better conditioned than its clients), so the
    worst-case rates that the methods' parameters are tuned to are attained."""
    g = torch.Generator().manual_seed(int(seed))
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    lam = torch.stack([torch.logspace(math.log10(mu), math.log10(float(L)), d, dtype=torch.float64) for L in L_i])
    A = torch.einsum("ij,nj,kj->nik", Q, lam, Q)
    xs = torch.randn(d, generator=g, dtype=torch.float64) + spread * torch.randn(len(L_i), d, generator=g,
                                                                               dtype=torch.float64)
    return Quadratic(A, torch.einsum("nij,nj->ni", A, xs))


@recipe("L6", "5GCS with compression and partial participation: importance sampling needs fewer rounds (and bits) "
              "than uniform sampling with the same expected number of clients")
def l6_importance(out: Path, fast: bool) -> Outcome:
    n, d = 20, 10
    L_i = np.geomspace(1.0, 100.0, n)
    pr = shared_basis_quadratic(L_i, d, mu=0.01 if fast else 0.003, spread=1.0, seed=0)
    tol = 1e-8 * _f0(pr)
    comp = {"name": "rand_k", "k": 5}
    methods = [{"name": "5gcs_cc", "sampler": {"name": "independent", "p": 0.2}, "compressor": comp,
                "label": "uniform (p=0.2)"},
               {"name": "5gcs_cc", "sampler": {"name": "independent", "p": 0.2}, "compressor": comp,
                "sampling": "optimal", "label": "importance (optimal p_i)"},
               {"name": "5gcs_cc", "sampler": {"name": "importance", "tau": 4}, "compressor": comp,
                "label": "importance (p_i ~ L_i)"}]
    if fast:  # p_i ~ L_i (optsim's generic importance sampler) is the slowest: full runs only
        methods = methods[:2]
    t = run_on(pr, "L6", methods, out, 60000, tol, 10, x=("comm_rounds", "bits_up"))
    u, o = t["uniform (p=0.2)"], t["importance (optimal p_i)"]
    li = t.get("importance (p_i ~ L_i)")
    ru, ro = (_first(x, "comm_rounds", tol) for x in (u, o))
    rl = _first(li, "comm_rounds", tol) if li is not None else math.nan
    bu, bo = _first(u, "bits_up", tol), _first(o, "bits_up", tol)
    figs = plot_traces(list(t.values()), ["comm_rounds", "bits_up"], "f_gap", out / "L6")
    ok = bool(np.isfinite(ro) and np.isfinite(ru) and ro <= 0.8 * ru and bo < bu)
    return Outcome(ok, f"L_i from 1 to 100, rand-5 of {d}, E|S| = 4 of {n}: rounds to 1e-8 uniform {ru:.0f}, "
                       f"optimal importance {ro:.0f} ({ru / ro:.2f}x fewer), p_i ~ L_i {rl:.0f} (full runs only); bits up per client "
                       f"{bu:.3g} vs {bo:.3g}", figs)


# ---- L10: compressed L2GD ---------------------------------------------------------------------------------------
@recipe("L10", "Compressed L2GD (natural compression both ways) converges at the rate of uncompressed L2GD on the "
               "personalized objective while sending fewer bits")
def l10_l2gd(out: Path, fast: bool) -> Outcome:
    lam = 0.1
    pr = _quad(100, n=10, d=10)
    Xs = personalized_solution(pr, lam)
    x0 = torch.full((pr.d,), 20.0, dtype=pr.dtype)  # far from X(lam): a long linear phase before the noise floor
    seeds = range(8 if fast else 24)
    iters = 600 if fast else 1500
    nat = {"name": "natural"}
    specs = {"L2GD": {"name": "l2gd", "lam": lam},
             "compressed L2GD (natural, both ways)": {"name": "l2gd", "lam": lam, "compressor": nat,
                                                     "down_compressor": nat}}
    metric = lambda m: {"pers_dist": float((m.X - Xs).pow(2).sum(1).mean())}  # noqa: E731
    curves, bits, traces, rates = {}, {}, [], {}
    from ..methods import build_method
    for label, spec in specs.items():
        runs = [run_tracked(pr, {**spec, "label": label}, iters, metric, log_every=10, seed=s, x0=x0) for s in seeds]
        curves[label] = np.mean([r["pers_dist"] for r in runs], axis=0)
        bits[label] = np.mean([r["bits_up"] for r in runs], axis=0)
        traces.append(runs[0])
        rates[label] = build_method(spec, pr, None).rate
        it = runs[0]["round"]
    _save(traces, out)
    (cu, cc), (bu, bc) = curves.values(), bits.values()
    fit = it >= iters // 10  # after the fast initial phase
    su, sc = (-float(np.polyfit(it[fit], np.log(c[fit]), 1)[0]) for c in (cu, cc))
    level = 3 * max(cu[-1], cc[-1])
    hit_u, hit_c = np.flatnonzero(cu <= level), np.flatnonzero(cc <= level)
    biu, bic = (float(b[h[0]]) if h.size else math.inf for b, h in ((bu, hit_u), (bc, hit_c)))
    figs = _mean_curves(out / "L10", it, curves, bits, level)
    (ru, rc) = rates.values()
    ok = bool(0.7 <= sc / su <= 1.3 and bic < biu and abs((1 - rc) / (1 - ru) - 1) <= 0.1)
    return Outcome(ok, f"lambda={lam}, mean ||X - X(lam)||^2 over {len(seeds)} seeds: fitted linear rates "
                       f"{su:.2e} (L2GD) vs {sc:.2e} (compressed) per iteration (ratio {sc / su:.2f}); bits up per "
                       f"client to reach {level:.2e}: {biu:.3g} vs {bic:.3g} ({biu / bic:.2f}x fewer); theory "
                       f"rates alpha mu/n {1 - ru:.2e} vs {1 - rc:.2e}", figs)


def _mean_curves(path: Path, it, curves: dict, bits: dict, level: float) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4))
    for label, c in curves.items():
        axes[0].semilogy(it, c, label=label)
        axes[1].semilogy(bits[label], c, label=label)
    for ax, xl in zip(axes, ("iterations", "bits sent up per client")):
        ax.axhline(level, color="gray", ls=":", lw=1)
        ax.set_xlabel(xl)
        ax.set_ylabel(r"mean $\|X - X(\lambda)\|^2$ (personalized)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


# ---- L11: FO-MAML on the Moreau objective ---------------------------------------------------------------------
@recipe("L11", "FO-MAML converges linearly to a neighbourhood of the Moreau objective's solution; more inner steps "
               "(the generalization) shrink the neighbourhood geometrically")
def l11_moreau(out: Path, fast: bool) -> Outcome:
    pr = _quad(20, n=10, d=10)
    alpha = 0.5 / pr.L_max
    xm = moreau_solution(pr, alpha)
    X = xm.reshape(1, -1).expand(pr.n, pr.d)
    gFi = (X - moreau_prox(pr, X, alpha)) / alpha  # grad F_i at the Moreau solution
    LM = pr.L_i / (1 + alpha * pr.L_i)
    muM = pr.mu / (1 + alpha * pr.mu)
    sigma = float(gFi.norm(dim=1).mean())
    rounds = 1500 if fast else 4000
    metric = lambda m: {"moreau_dist": float((m.x - xm).norm())}  # noqa: E731
    aL = alpha * pr.L_max
    traces, dists, bounds = [], {}, {}
    for s in (1, 2, 3, 4):
        spec = {"name": "fo_maml", "alpha": alpha} if s == 1 else {"name": "fo_muml", "alpha": alpha, "inner_steps": s}
        label = "FO-MAML" if s == 1 else f"multistep s={s}"
        t = run_tracked(pr, {**spec, "label": label}, rounds, metric, log_every=10)
        traces.append(t)
        dists[s] = t.last("moreau_dist")
        bounds[s] = (alpha * pr.L_max) ** (s + 1) * sigma / muM
    _save(traces, out)
    figs = plot_traces(traces, ["round", "grad_evals"], "moreau_dist", out / "L11")
    ratios = [dists[s + 1] / dists[s] for s in (1, 2, 3)]
    ok = bool(all(dists[s] <= bounds[s] for s in dists) and all(r <= min(0.9, 1.5 * aL) for r in ratios)
              and dists[1] > 1e-8 and float(LM.max()) > 0)
    return Outcome(ok, f"alpha L = {aL:.2f}: final ||x - x_M*|| " +
                   ", ".join(f"s={s}: {dists[s]:.2e} (bound {bounds[s]:.2e})" for s in dists) +
                   f"; ratios per extra inner step {', '.join(f'{r:.2f}' for r in ratios)} (alpha L = {aL:.2f})", figs)


# ---- L12: clipping on an (L0, L1)-smooth problem ------------------------------------------------------------------
@recipe("L12", "On an (L0,L1)-smooth problem, clipped local GD (full or partial participation, reshuffled clients, "
               "local random reshuffling) converges where unclipped local GD with the same stepsizes diverges")
def l12_clipped(out: Path, fast: bool) -> Outcome:
    pr = CoshProblem.generate(10, 8, m=4, seed=0)
    rounds = 600 if fast else 2000
    methods = [{"name": "clip_local_gd", "local_steps": 5, "label": "clipped local GD"},
               {"name": "clip_local_gd", "local_steps": 5, "sampler": {"name": "nice", "tau": 3},
                "label": "clipped, 3 of 10 clients"},
               {"name": "clip_local_gd", "local_epochs": 1, "batch_size": 1, "label": "clipped, local RR epochs"},
               {"name": "clip_local_gd", "local_steps": 5, "sampler": {"name": "cyclic", "groups": 5},
                "label": "clipped, reshuffled clients (5 groups)"},
               {"name": "clip_local_gd", "local_steps": 5, "clip": math.inf, "label": "unclipped local GD"},
               {"name": "clip_local_gd", "local_epochs": 1, "batch_size": 1, "clip": math.inf,
                "label": "unclipped, local RR epochs"}]
    t = run_on(pr, "L12", methods, out, rounds, None, 5, x=("comm_rounds", "grad_evals"))
    figs = plot_traces(list(t.values()), ["comm_rounds", "grad_evals"], "f_gap", out / "L12")
    f0 = _f0(pr)
    full, part, rr = t["clipped local GD"], t["clipped, 3 of 10 clients"], t["clipped, local RR epochs"]
    un, unrr = t["unclipped local GD"], t["unclipped, local RR epochs"]
    cyc = t["clipped, reshuffled clients (5 groups)"]
    ok = bool(full.status == "finished" and full.last("f_gap") <= 1e-5 * f0 and rr.last("f_gap") <= 1e-5 * f0
              and part.status == "finished" and part.best("f_gap") <= 1e-2 * f0
              and cyc.status == "finished" and cyc.best("f_gap") <= 1e-2 * f0
              and un.status == "diverged" and unrr.status == "diverged")
    return Outcome(ok, f"f(x0)-f* = {f0:.3g}; clipped: full {full.last('f_gap'):.2e}, partial (best) "
                       f"{part.best('f_gap'):.2e}, RR {rr.last('f_gap'):.2e}, reshuffled clients (best) {cyc.best('f_gap'):.2e} "
                       f"after {rounds} rounds; unclipped: "
                       f"{un.status} ({un.meta.get('message', '')}), RR {unrr.status}", figs)
