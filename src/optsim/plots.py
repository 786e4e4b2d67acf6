"""Convergence figures: a log-scale metric against rounds / bits / gradient evaluations / time,
one line per method, written as PNG and PDF."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .trace import Trace

__all__ = ["plot_traces", "plot_config", "save_figure", "LABELS"]

LABELS = {
    "rounds": "rounds", "round": "rounds", "comm_rounds": "communication rounds",
    "bits_up": "bits sent up per client", "bits_down": "bits sent down per client",
    "grad_evals": "gradient evaluations per client (local full gradients)",
    "hess_evals": "Hessian evaluations per client", "sim_time": "simulated time (s)",
    "wall_time": "wall-clock time (s)", "f_gap": r"$f(x) - f^\star$",
    "grad_norm_sq": r"$\|\nabla f(x)\|^2$", "dist_sq": r"$\|x - x^\star\|^2$", "loss": r"$f(x)$",
}


def plot_traces(traces: Sequence[Trace], x: Sequence[str], y: str, path: str | Path,
                title: str = "", formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """One panel per x axis in ``x``; returns the written files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(x), figsize=(5.2 * len(x), 4), squeeze=False)
    for ax, xname in zip(axes[0], x):
        for t in traces:
            if not len(t):
                continue
            xs, ys = t[xname], t[y]
            keep = np.isfinite(ys) & (ys > 0)
            style = "--" if t.status == "diverged" else "-"
            ax.semilogy(xs[keep], ys[keep], style, label=t.label + ("" if t.status == "finished" else f" ({t.status})"))
        ax.set_xlabel(LABELS.get(xname, xname))
        ax.set_ylabel(LABELS.get(y, y))
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, formats)


def save_figure(fig, path: str | Path, formats: Sequence[str] = ("png", "pdf"), dpi: int = 130) -> list[Path]:
    """Write ``fig`` as ``path`` with each suffix in ``formats`` (creating the folder), close it;
    returns the files written."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        out = path.with_suffix(f".{fmt}")
        fig.savefig(out, dpi=dpi)
        written.append(out)
    plt.close(fig)
    return written


def plot_config(traces: Sequence[Trace], cfg, out: str | Path) -> list[Path]:
    """The figure a config asks for, under ``out/``."""
    y = cfg.plot.y
    if y == "auto":
        y = traces[0].meta.get("metric", "f_gap") if traces else "f_gap"
    return plot_traces(traces, cfg.plot.x, y, Path(out) / f"{cfg.name}_{y}", title=cfg.name,
                       formats=cfg.plot.formats)
