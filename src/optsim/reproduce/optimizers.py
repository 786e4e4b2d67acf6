"""Recipes of the memory-efficient and structured optimizers (PAPERS.md: M5, M9).

M5 trains an MLP (64-256-256-10) on scikit-learn's digits (offline) in a plain torch loop with
Adam and MicroAdam (and bitsandbytes' 8-bit Adam when it is installed; version 0.50.2 runs on the
CPU), float32 on one thread, and reports the loss curves and the optimizer-state memory.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .neural import _backward_step, _figure, _OneThread, _train
from .registry import Outcome, recipe


def _adam_state_bytes(opt) -> int:
    """Bytes of every tensor in an optimizer's state but the step counters."""
    return sum(v.nbytes for st in opt.state.values() for k, v in st.items() if torch.is_tensor(v) and k != "step")


def _eight_bit_adam():
    """bitsandbytes' Adam8bit class, or None with the reason."""
    try:
        import bitsandbytes as bnb
    except Exception as e:  # noqa: BLE001  (not installed, or no usable backend)
        return None, f"bitsandbytes not importable ({type(e).__name__})"
    return bnb.optim.Adam8bit, f"bitsandbytes {bnb.__version__}"


# ---- M5: MicroAdam ----------------------------------------------------------------------------------------
@recipe("M5", "MicroAdam (m = 10, 1% density, 4-bit error feedback) trains like Adam: its final training loss is at "
              "most 2 x Adam's at the same steps and learning rate, with at most 1/4 of Adam's optimizer-state memory "
              "(memory table: Adam, MicroAdam in the default and in the paper's layout, 8-bit Adam when installed)")
def microadam(out: Path, fast: bool) -> Outcome:
    with _OneThread():
        return _microadam(out, fast)


def _microadam(out: Path, fast: bool) -> Outcome:
    from ..optim import MicroAdam
    from ..problems.neural import neural_problem

    steps = 200 if fast else 3000
    seeds = [0] if fast else [0, 1, 2]
    lr, batch = 1e-3, 32
    p = neural_problem("sklearn:digits", "mlp", 1, hidden=(256, 256), activation="relu", seed=0)
    X, Y = p.inputs[0], p.targets[0]
    adam8, note8 = _eight_bit_adam()
    made: dict[str, list] = {}

    def keep(name, opt):
        made.setdefault(name, []).append(opt)
        return opt

    makers = {
        "Adam": lambda ps: keep("Adam", torch.optim.Adam(ps, lr=lr)),
        "MicroAdam": lambda ps: keep("MicroAdam", MicroAdam(ps, lr=lr, m=10, density=0.01, quant_block=64)),
        "MicroAdam (paper layout)": lambda ps: keep("MicroAdam (paper layout)", MicroAdam(
            ps, lr=lr, m=10, density=0.01, quant_block=64, topk="blockwise", topk_block=4096,
            value_dtype=torch.bfloat16)),
    }
    if adam8 is not None:
        makers["8-bit Adam"] = lambda ps: keep("8-bit Adam", adam8(ps, lr=lr, min_8bit_size=1))
    if not fast:  # diagnostic, not in the check: does MicroAdam's loss floor move with the learning rate?
        makers["MicroAdam lr/10"] = lambda ps: keep("MicroAdam lr/10", MicroAdam(ps, lr=lr / 10, m=10, density=0.01,
                                                                                  quant_block=64))
    log_every = max(1, steps // 40)
    curves: dict[str, list] = {name: [] for name in makers}
    for seed in seeds:
        for name, make in makers.items():
            its, loss, _ = _train(p, X, Y, make, _backward_step, steps, batch, seed, log_every)
            curves[name].append(loss)
    mean = {name: np.mean(np.stack(v), axis=0) for name, v in curves.items()}
    tail = {name: float(np.mean(v[-max(1, len(v) // 4):])) for name, v in mean.items()}
    mem = {name: _adam_state_bytes(opts[0]) if name != "MicroAdam" and "MicroAdam" not in name
           else opts[0].optimizer_state_bytes() for name, opts in made.items()}
    figs = _figure({f"{n} ({mem[n] / p.d:.2f} B/param)": (its, v) for n, v in mean.items()}, out / "M5_loss",
                   "iterations", "training loss", f"M5: Adam vs MicroAdam (digits MLP, d = {p.d:,}, batch {batch})")
    ratio = tail["MicroAdam"] / tail["Adam"]
    mem_ratio = mem["MicroAdam"] / mem["Adam"]
    passed = ratio <= 2.0 and mem_ratio <= 0.25 and math.isfinite(ratio)
    table = "; ".join(f"{n}: loss {tail[n]:.4g}, state {mem[n]:,} B ({mem[n] / p.d:.3f} B/param)" for n in makers)
    reach = np.flatnonzero(mean["Adam"] <= tail["MicroAdam"])
    adam_at = f"Adam first reaches MicroAdam's final loss at step {int(its[reach[0]])}" if reach.size else \
        "Adam never reaches MicroAdam's final loss"
    verdict = "" if passed else "NOT REPRODUCED in this setting (training from scratch, same lr): "
    return Outcome(passed, f"{verdict}mean training loss over the last 25% of {steps} steps ({len(seeds)} seed(s), "
                   f"lr {lr}, initial {mean['Adam'][0]:.3g}): {table}; MicroAdam / Adam loss {ratio:.3g} ({adam_at} of "
                   f"{steps}), state {mem_ratio:.3f}; 8-bit Adam: "
                   + (note8 if adam8 is not None else f"skipped, {note8}"), figs)


# ---- M9: randomized progressive training ---------------------------------------------------------------------
@recipe("M9", "RPT with the theory stepsize converges linearly within its predicted bound (1 - gamma mu)^k, and, when "
              "deeper blocks are smoother, it reaches the target at a lower expected gradient cost than GD (cost per "
              "step sum_j q_j d_j < d at the same stepsize); RCD (one block) is reported")
def progressive_training(out: Path, fast: bool) -> Outcome:
    with _OneThread():
        return _progressive(out, fast)


def _progressive(out: Path, fast: bool) -> Outcome:
    from ..optim.progressive import (
        prefix_inclusion,
        rcd_scales,
        rpt_scales,
        rpt_sketch_second_moment,
        sketch_stepsize,
    )

    B, size = 4, (10 if fast else 25)
    runs, mu = (200 if fast else 1000), 0.1
    Ls = torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=torch.float64)      # block j's smoothness: deeper = smoother
    d = B * size
    gen = torch.Generator().manual_seed(0)
    blocks = []
    for Lj in Ls.tolist():                                           # block-diagonal A, block spectrum [mu, L_j]
        Q, _ = torch.linalg.qr(torch.randn(size, size, generator=gen, dtype=torch.float64))
        blocks.append(Q @ torch.diag(torch.linspace(mu, Lj, size, dtype=torch.float64)) @ Q.T)
    A = torch.block_diag(*blocks)
    A = 0.5 * (A + A.T)
    b = torch.randn(d, generator=gen, dtype=torch.float64)
    xs = torch.linalg.solve(A, b)

    def f(X):
        return 0.5 * ((X @ A) * X).sum(-1) - X @ b

    fs = float(f(xs))
    x0 = torch.randn(d, generator=gen, dtype=torch.float64) * 3
    gap0 = float(f(x0)) - fs
    sizes = [size] * B
    methods = {
        "GD": ("rpt", torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)),
        "RPT uniform": ("rpt", torch.full((B,), 1.0 / B, dtype=torch.float64)),
        "RPT q_j = L_j/L_1": ("rpt", None),
        "RCD (one block)": ("rcd", torch.full((B,), 1.0 / B, dtype=torch.float64)),
    }
    q_eq = Ls / Ls[0]
    methods["RPT q_j = L_j/L_1"] = ("rpt", q_eq - torch.cat([q_eq[1:], torch.zeros(1, dtype=torch.float64)]))
    target = 1e-6
    curves, lines, rep = {}, {}, {}
    for name, (kind, p) in methods.items():
        if kind == "rpt":
            q = prefix_inclusion(p)
            W = rpt_sketch_second_moment(q, sizes)
            cost_step = float((q * size).sum())
        else:
            q = p
            bl = torch.repeat_interleave(torch.arange(B), size)
            W = torch.where(bl[:, None] == bl[None, :], 1.0 / p[bl][:, None], torch.zeros((), dtype=torch.float64))
            cost_step = float((p * size).sum())
        gamma = sketch_stepsize(A, W)
        rate = 1 - gamma * mu
        K = int(math.ceil(math.log(target / 10) / math.log(rate)))           # the bound reaches target / 10
        X = x0.expand(runs, d).clone()
        log_every = max(1, K // 60)
        ks, gaps = [0], [gap0]
        for k in range(1, K + 1):
            C = rpt_scales(p, runs, gen) if kind == "rpt" else rcd_scales(p, runs, "single", gen)
            X -= gamma * torch.repeat_interleave(C, size, dim=1) * (X @ A - b)
            if k % log_every == 0 or k == K:
                ks.append(k)
                gaps.append(float((f(X) - fs).mean()))
        ks_a, gaps_a = np.asarray(ks, dtype=float), np.asarray(gaps)
        bound = gap0 * rate ** ks_a
        hit = np.flatnonzero(gaps_a <= target * gap0)
        reach = ks_a[hit[0]] * cost_step if hit.size else math.inf
        within = bool(np.all(gaps_a <= bound * 1.05 + 1e-300))
        curves[f"{name} (gamma={gamma:.3g})"] = (ks_a * cost_step / d, gaps_a / gap0)
        lines[name] = (ks_a * cost_step / d, bound / gap0)
        rep[name] = dict(gamma=gamma, cost=cost_step / d, reach=reach / d, within=within, K=K)
    figs = _figure({**curves, **{f"bound {n}": v for n, v in lines.items() if n != "RCD (one block)"}},
                   out / "M9_gap_vs_cost", "gradient cost (full gradients)", "E f(x) - f* (relative)",
                   f"M9: RPT vs GD vs RCD (block quadratic, L_j = 8,4,2,1, {runs} runs)")
    passed = (all(r["within"] for r in rep.values()) and rep["RPT uniform"]["reach"] < rep["GD"]["reach"]
              and rep["RPT q_j = L_j/L_1"]["reach"] < rep["GD"]["reach"])
    return Outcome(passed, f"mean over {runs} runs, d = {d}, mu = {mu}, target {target:g} x initial gap: " + "; ".join(
        f"{n}: gamma {r['gamma']:.4g}, cost/step {r['cost']:.3f} d, cost to target {r['reach']:.4g} full gradients, "
        f"within the bound {r['within']}" for n, r in rep.items()), figs)
