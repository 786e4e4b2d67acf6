"""Recipes B1 (Byz-VR-MARINA), B2 (Byz-DASHA-PAGE, Byz-EF21) and B3 (Byz-VR-MARINA-PP); see PAPERS.md.

Each runs the paper's setup as far as it is known (``../shared/research``): logistic regression on
the paper's LibSVM dataset when the file is in the data folder (``optsim`` reads ``libsvm:NAME``
from ``$OPTSIM_DATA``), otherwise on a seeded synthetic stand-in of the same shape, so that the
recipe always runs; the figure's caption and the measured line say which. ``fast`` runs a small
stand-in in seconds.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

from ..data import data_dir
from ..experiment import build_problem, parse_config, run_method
from ..problems import NonconvexLogisticRegression
from ..trace import safe_filename
from .common import first_reach, save_figure
from .registry import Outcome, recipe

__all__ = ["byzantine_logreg_config"]

#: B1's attacks (its Figure 1: no attack, label flip, bit flip, ALIE, IPM)
B1_ATTACKS = ("none", "label_flip", "bit_flip", "alie", "ipm")
CM_BUCKETING = {"name": "cm", "bucketing": 2}


def _source(name: str, shape: tuple[int, int], fast: bool, fast_shape: tuple[int, int]) -> tuple[dict, str]:
    """The problem's data keys: the LibSVM file ``name`` when present (full runs), else a synthetic
    stand-in of its shape (``fast_shape`` in fast runs); and a phrase saying which."""
    if not fast and (data_dir() / name).exists():
        return {"data": f"libsvm:{name}"}, f"LibSVM {name}"
    size, dim = fast_shape if fast else shape
    what = "small synthetic stand-in" if fast else f"synthetic stand-in of {name}'s shape ({name} not in {data_dir()})"
    return {"data": "synthetic:logreg", "size": size, "dim": dim}, f"{what}, {size} x {dim}"


def byzantine_logreg_config(data: dict, clients: int, byzantine: int, attack, lam: float, rounds: int,
                            log_every: int) -> dict:
    """B1/B3's task: l2-logistic regression with rows scaled to unit norm, every client holding the
    whole dataset (zeta = 0), the last ``byzantine`` clients Byzantine."""
    return {"name": "byzantine", "dtype": "float64", "seed": 0,
            "problem": {"name": "logreg", **data, "clients": clients, "partition": "full", "lam": lam,
                        "normalize": "unit_rows"},
            "methods": ["gd"], "stop": {"max_rounds": rounds}, "log_every": log_every,
            "byzantine": {"count": byzantine, "attack": attack}}


def _best(problem, spec: dict, cfg, stepsizes, label: str, x0=None, key: str = "f_gap"):
    """The run with the smallest final ``key`` over the stepsize grid (the papers' protocol)."""
    best = None
    for lr in stepsizes:
        t = run_method(problem, {**spec, "stepsize": lr}, cfg, progress=False, x0=x0)
        v = t[key][-1] if t.status == "finished" and len(t) else math.inf
        if best is None or (math.isfinite(v) and v < best[0]):
            best = (v if math.isfinite(v) else math.inf, t)
    t = best[1]
    t.label = label
    return t


def _grid_figure(panels: dict[str, list], x: str, y: str, path: Path, title: str, xscale: float = 1.0,
                 xlabel: str | None = None) -> list[Path]:
    """One panel per key of ``panels`` (traces in each), ``y`` on a log scale against ``x``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(panels), 5)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows), squeeze=False)
    labels = list(dict.fromkeys(t.label for traces in panels.values() for t in traces))
    colour = {lab: plt.get_cmap("tab10")(i % 10) for i, lab in enumerate(labels)}
    for ax, (name, traces) in zip(axes.flat, panels.items()):
        for t in traces:
            v = np.maximum(t[y], 1e-16)
            ax.semilogy(t[x] * xscale, v, color=colour[t.label])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel or x, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        ax.xaxis.get_offset_text().set_fontsize(7)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    axes.flat[0].set_ylabel(y)
    handles = [matplotlib.lines.Line2D([], [], color=colour[lab]) for lab in labels]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05 + 0.03 * (len(labels) > 5) + 0.04 / rows, 1, 0.95))
    return save_figure(fig, path)


def _save(traces, out: Path, prefix: str) -> None:
    for t in traces:
        t.save(out / "traces" / f"{safe_filename(prefix + '_' + t.label)}.json")


# ---- B1 ---------------------------------------------------------------------------------------------

@recipe("B1", "Byz-VR-MARINA converges linearly to f* under every attack (NA, LF, BF, ALIE, IPM) when every "
              "worker holds the data, with and without Rand-K, while SGD, BR-SGDm, compressed SGD and BR-DIANA "
              "stall at a noise floor (4 good + 1 Byzantine, CM with bucketing)")
def byz_vr_marina(out: Path, fast: bool) -> Outcome:
    """Gorbunov, Horváth, Richtárik, Gidel (2023), Figure 1 (CM with bucketing s = 2; the paper also
    shows AVG and RFA): a9a, 5 workers with the full dataset, 1 Byzantine, batch 32, lr the best of
    {0.5, 0.05} (the paper: {0.5, 0.05, 0.005}), 10 epochs without compression, 20 with Rand-K,
    K = 0.1 d (the paper: 40)."""
    out = Path(out)
    data, where = _source("a9a", (32561, 123), fast, (500, 10))
    lam = 0.05 if fast else 0.01
    m = data.get("size", 32561)
    per_epoch = math.ceil(m / 32)
    epochs = (400 / per_epoch, 400 / per_epoch) if fast else (10, 20)
    stepsizes = (0.5,) if fast else (0.5, 0.05)
    tol = 1e-6
    d = data.get("dim", 123)
    randk = {"name": "rand_k", "k": max(1, math.ceil(0.1 * d))}
    rows = {
        "no compression": [("Byz-VR-MARINA", {"name": "byz_vr_marina"}),
                           ("SGD", {"name": "br_sgdm", "momentum": 0.0}),
                           ("BR-SGDm", {"name": "br_sgdm", "momentum": 0.9})],
        f"rand-{randk['k']}": [("Byz-VR-MARINA", {"name": "byz_vr_marina", "compressor": randk}),
                               ("compressed SGD", {"name": "br_diana", "compressor": randk, "shift_stepsize": 0.0,
                                                   "batch_size": 32}),
                               ("BR-DIANA", {"name": "br_diana", "compressor": randk, "batch_size": 32})],
    }
    panels, finals, problem = {}, {}, None
    for (row, methods), ep in zip(rows.items(), epochs):
        rounds = int(round(ep * per_epoch))
        for attack in B1_ATTACKS:
            cfg = parse_config(byzantine_logreg_config(data, 5, 1, attack, lam, rounds, max(1, rounds // 100)))
            problem = build_problem(cfg)
            traces = []
            for label, spec in methods:
                spec = {"aggregator": CM_BUCKETING, "batch_size": 32, **spec}
                t = _best(problem, spec, cfg, stepsizes, label)
                traces.append(t)
                finals[(row, attack, label)] = t["f_gap"][-1]
            _save(traces, out, f"{row}_{attack}")
            panels[f"{row}, {attack}"] = traces
    figs = _grid_figure(panels, "round", "f_gap", out / "b1_attacks", f"B1: f(x) - f* ({where}), CM + bucketing",
                        xscale=1 / per_epoch, xlabel="epochs")
    marina = {k: v for k, v in finals.items() if k[2] == "Byz-VR-MARINA"}
    base = {k: v for k, v in finals.items() if k[2] != "Byz-VR-MARINA"}
    converged = all(v <= tol for v in marina.values())
    stalled = all(v >= 10 * tol for v in base.values())
    worst = max(marina, key=marina.get)
    lrs = sorted({t.meta["stepsize"] for traces in panels.values() for t in traces})
    best_base = min(base, key=base.get)
    msg = (f"{where}; best lr of {list(stepsizes)} per run (chosen: {lrs}); Byz-VR-MARINA's final f - f* over {len(marina)} (row, attack) runs: at most "
           f"{marina[worst]:.1e} ({worst[0]}, {worst[1]}); the baselines' smallest: {base[best_base]:.1e} "
           f"({best_base[2]}, {best_base[0]}, {best_base[1]}); claim: MARINA <= {tol:g} everywhere and every "
           f"baseline >= {10 * tol:g}")
    return Outcome(converged and stalled, msg, figs)


# ---- B3 ---------------------------------------------------------------------------------------------

@recipe("B3", "With partial participation (4 of 20 clients, 5 Byzantine) rounds can sample a Byzantine majority; "
              "under the shift-back attack Byz-VR-MARINA-PP with clipped differences still converges linearly, "
              "without clipping it stays near f(x0) or diverges; PP with clipping needs fewer gradient "
              "computations than full participation, and a too large clipping radius is slower")
def byz_vr_marina_pp(out: Path, fast: bool) -> Outcome:
    """Malinovsky, Richtárik, Horváth, Gorbunov (2024), Figure 1: a9a, 15 good + 5 Byzantine workers
    with the full dataset, CM with bucketing (s = 2), shift-back, C = 4 clients per compressed round
    (all 20 in the full-gradient rounds), no compression, batch 32, lr 0.1. Clipping radius
    lambda_{k+1} = alpha ||x^{k+1} - x^k||: alpha = 2 script L (Theorem 4.1), 10 and 100 (the
    paper's lambda grid {0.1, 1, 10} on ||g^k|| at lr 0.1), and none."""
    out = Path(out)
    data, where = _source("a9a", (32561, 123), fast, (1000, 10))
    lam = 0.05 if fast else 0.01
    rounds = 1000 if fast else 12000
    cfg = parse_config(byzantine_logreg_config(data, 20, 5, "shift_back", lam, rounds, max(1, rounds // 200)))
    with warnings.catch_warnings():  # 5 Byzantine of 20 with buckets of 2: the papers' own setting
        warnings.simplefilter("ignore")
        problem = build_problem(cfg)
        base = {"name": "byz_vr_marina_pp", "sampler": {"name": "nice", "tau": 4}, "aggregator": CM_BUCKETING,
                "batch_size": 32, "stepsize": 0.1}
        runs = {"PP, clipping (alpha = 2L)": base,
                "PP, alpha = 10": {**base, "clip_mult": 10.0},
                "PP, alpha = 100": {**base, "clip_mult": 100.0},
                "PP, no clipping": {**base, "clip_mult": 0.0},
                "full participation": {"name": "byz_vr_marina", "aggregator": CM_BUCKETING, "batch_size": 32,
                                       "stepsize": 0.1}}
        traces = {}
        for label, spec in runs.items():
            t = run_method(problem, spec, cfg, progress=False)
            t.label = label
            traces[label] = t
    _save(traces.values(), out, "b3")
    tol = 1e-6
    clip, none_, full = traces["PP, clipping (alpha = 2L)"], traces["PP, no clipping"], traces["full participation"]
    start = float(clip["f_gap"][0])
    last = {k: (float(t["f_gap"][-1]) if t.status == "finished" else math.inf) for k, t in traces.items()}
    level = 1e-5  # where PP and full participation are compared (both reach it)
    evals_clip = first_reach(clip, "grad_evals", "f_gap", level)
    evals_full = first_reach(full, "grad_evals", "f_gap", level)
    reach = {k: first_reach(traces[k], "round", "f_gap", 1e-4) for k in ("PP, clipping (alpha = 2L)", "PP, alpha = 10",
                                                                          "PP, alpha = 100")}
    panels = {"clipping vs none": [clip, none_],
              "PP + clipping vs full participation": [clip, full],
              "clipping radius": [traces["PP, clipping (alpha = 2L)"], traces["PP, alpha = 10"],
                                  traces["PP, alpha = 100"]]}
    figs = _grid_figure(panels, "grad_evals", "f_gap", out / "b3_shift_back",
                        f"B3: shift-back, 5 of 20 Byzantine, 4 sampled ({where})", xlabel="epochs (gradient computations)")
    passed = (last["PP, clipping (alpha = 2L)"] <= tol and (none_.status != "finished" or last["PP, no clipping"] >= 0.1 * start)
              and evals_clip < evals_full and reach["PP, alpha = 10"] >= reach["PP, clipping (alpha = 2L)"])
    msg = (f"{where}; f(x0) - f* = {start:.2e}; final f - f*: " + ", ".join(
        f"{k}: {v:.1e}" if math.isfinite(v) else f"{k}: {traces[k].status}" for k, v in last.items())
        + f"; epochs to {level:g}: PP + clipping {evals_clip:.1f}, full participation {evals_full:.1f}; rounds to 1e-4: "
        + ", ".join(f"{k.split(', ')[1]}: {v:.0f}" for k, v in reach.items()))
    return Outcome(passed, msg, figs)


# ---- B2 ---------------------------------------------------------------------------------------------

def b2_problem(data: dict, good: int, byzantine: int, shard: int, lam: float, attack: str):
    """B2's split (the authors' notebook): good worker i holds rows [shard i, shard (i + 1)) in file
    order, the Byzantine workers (the last ones) hold the whole dataset; logistic loss with the
    nonconvex regularizer lam sum_j x_j^2 / (1 + x_j^2). Labels flipped on the Byzantine workers for
    the label-flip attack."""
    from ..data import load_dataset

    ds = load_dataset(data["data"], size=data.get("size", 1000), dim=data.get("dim", 20), seed=0)
    X, y = ds.X, np.where(ds.y == ds.y.max(), 1.0, -1.0)
    feats = [X[i * shard:(i + 1) * shard] for i in range(good)] + [X] * byzantine
    labels = [y[i * shard:(i + 1) * shard] for i in range(good)] + [y] * byzantine
    problem = NonconvexLogisticRegression(feats, labels, lam=lam)
    if attack == "label_flip":
        problem = problem.flip_labels(torch.arange(good, good + byzantine))
    return problem


@recipe("B2", "Under Byzantine attacks with heterogeneous data, Byz-DASHA-PAGE needs fewer communicated "
              "coordinates than Byz-VR-MARINA to reach the same gradient norm, and Byz-EF21 converges with "
              "top-k (13 good + 3 Byzantine workers, CM with bucketing)")
def byz_compressed(out: Path, fast: bool) -> Outcome:
    """Rammal, Gruntkowska, Fedin, Gorbunov, Richtárik (2024), the setup of the authors' notebook (the
    paper's body could not be read): phishing, 13 good workers with 850 contiguous rows each, 3
    Byzantine workers with the whole dataset, nonconvex regularizer lambda = 0.1, x0 = 1 (the notebook:
    x* + 1), CM with bucketing (s = 2), rand-6 for Byz-VR-MARINA and Byz-DASHA-PAGE (minibatch 1 % of
    the shard), top-1 for Byz-EF21, a budget of 5,000 coordinates sent per worker. Stepsizes: the
    notebook tunes 2^j times each method's theoretical stepsize; those theorems need the aggregator's
    c (unknown here) and B1's is far more conservative than B2's, so every method takes the best
    final ||grad f||^2 over one common grid of stepsizes instead. Attacks: label flip and IPM (and
    ALIE, bit flip in full runs). Target: 1 % of the initial ||grad f||^2."""
    out = Path(out)
    data, where = _source("phishing", (11055, 68), fast, (1100, 20))
    d = data.get("dim", 68)
    good, byz = (9, 2) if fast else (13, 3)
    shard = 1100 // good if fast else 850
    k = max(1, math.ceil(0.1 * d)) if fast else 6
    budget = 1000 if fast else 5000  # coordinates per worker
    batch = max(1, shard // 100)
    stepsizes = (0.5, 0.1) if fast else (2.0, 1.0, 0.5, 0.1, 0.05)
    attacks = ("label_flip", "ipm") if fast else ("label_flip", "ipm", "alie", "bit_flip")
    randk = {"name": "rand_k", "k": k}
    methods = {"Byz-VR-MARINA": ({"name": "byz_vr_marina", "compressor": randk, "batch_size": batch}, k),
               "Byz-DASHA-PAGE": ({"name": "byz_dasha_page", "compressor": randk, "batch_size": batch}, k),
               "Byz-EF21": ({"name": "byz_ef21", "compressor": {"name": "top_k", "k": 1}}, 1)}
    panels, reach, finals = {}, {}, {}
    for attack in attacks:
        problem = b2_problem(data, good, byz, shard, 0.1, attack)
        x0 = torch.ones(problem.d, dtype=problem.dtype)
        traces = []
        for label, (spec, per_round) in methods.items():
            rounds = budget // per_round
            cfg = parse_config({"name": "b2", "dtype": "float64", "problem": {"name": "quadratic"},
                                "methods": ["gd"], "stop": {"max_rounds": rounds, "metric": "grad_norm_sq",
                                                            "max_bits": None},
                                "log_every": max(1, rounds // 150),
                                "byzantine": {"count": byz, "attack": "none" if attack == "label_flip" else attack}})
            t = _best(problem, {**spec, "aggregator": CM_BUCKETING}, cfg, stepsizes, label, x0=x0,
                      key="grad_norm_sq")
            traces.append(t)
            finals[(attack, label)] = float(t["grad_norm_sq"][-1])
        target = 1e-2 * float(traces[0]["grad_norm_sq"][0])
        for t in traces:
            reach[(attack, t.label)] = first_reach(t, "bits_up", "grad_norm_sq", target)
        _save(traces, out, f"b2_{attack}")
        panels[attack] = traces
        reach[(attack, "target")] = target
    figs = _grid_figure(panels, "bits_up", "grad_norm_sq", out / "b2_coordinates",
                        f"B2: ||grad f||^2 vs bits sent per worker ({where}), CM + bucketing",
                        xlabel="bits sent up per worker")
    faster = all(reach[(a, "Byz-DASHA-PAGE")] < reach[(a, "Byz-VR-MARINA")] for a in attacks)
    start = {a: float(panels[a][2]["grad_norm_sq"][0]) for a in attacks}
    ef21 = all(finals[(a, "Byz-EF21")] <= 1e-2 * start[a] for a in attacks)
    msg = (f"{where}; bits per worker to reach 1 % of the initial ||grad f||^2 (inf: never within the budget): "
           + "; ".join(f"{a}: DASHA-PAGE {reach[(a, 'Byz-DASHA-PAGE')]:.3g}, VR-MARINA {reach[(a, 'Byz-VR-MARINA')]:.3g} "
                       f"(target {reach[(a, 'target')]:.2e})" for a in attacks)
           + "; Byz-EF21 top-1 final / initial ||grad f||^2: "
           + ", ".join(f"{a}: {finals[(a, 'Byz-EF21')] / start[a]:.1e}" for a in attacks))
    return Outcome(faster and ef21, msg, figs)
