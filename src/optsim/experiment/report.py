"""Figures and an HTML report from the results store.

Runs are selected by experiment name and config fields (``--where problem.clients=20``), grouped
by their config up to the seed, and drawn as the mean over seeds with a min-max band.
"""
from __future__ import annotations

import base64
import html
import json
import math
import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..trace import Trace
from .store import ResultStore

__all__ = ["select", "plot_groups", "write_report", "get_path"]


def get_path(data: dict, dotted: str) -> Any:
    cur: Any = data
    for p in dotted.split("."):
        if isinstance(cur, list) and p.isdigit():
            cur = cur[int(p)]
        elif isinstance(cur, dict) and p in cur:
            cur = cur[p]
        else:
            return None
    return cur


def _matches(config: dict, where: dict[str, Any]) -> bool:
    import yaml

    for k, v in where.items():
        got = get_path(config, k)
        want = yaml.safe_load(v) if isinstance(v, str) else v
        if got != want and str(got) != str(want):
            return False
    return True


def select(store: ResultStore, experiment: str | None = None, where: dict[str, Any] | None = None,
           statuses: Sequence[str] | None = None) -> list[tuple[str, dict, Trace]]:
    """(experiment, run config, trace) of the stored runs matching the filters."""
    filters = {"experiment": experiment} if experiment else {}
    out = []
    for row, trace in store.traces(**filters):
        config = json.loads(row["config"])
        if where and not _matches(config, where):
            continue
        if statuses and row["status"] not in statuses:
            continue
        out.append((row["experiment"], config, trace))
    return out


def _group_key(config: dict, trace: Trace) -> str:
    label = re.sub(r"(, )?seed=[^,\]]*", "", trace.label).replace(" []", "").replace("[, ", "[")
    return label


def plot_groups(runs: list[tuple[dict, Trace]], x: Sequence[str], y: str, path: Path, title: str = "",
                formats: Sequence[str] = ("png",)) -> list[Path]:
    """Mean over seeds (runs whose label differs only in ``seed=``) with a min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[Trace]] = {}
    for config, t in runs:
        groups.setdefault(_group_key(config, t), []).append(t)
    fig, axes = plt.subplots(1, len(x), figsize=(5.2 * len(x), 4), squeeze=False)
    from ..plots import LABELS, save_figure

    for ax, xname in zip(axes[0], x):
        for label, traces in groups.items():
            n = min(len(t) for t in traces)
            if n == 0:
                continue
            xs = np.mean([t[xname][:n] for t in traces], axis=0)
            ys = np.array([t[y][:n] for t in traces])
            with np.errstate(invalid="ignore"):
                mean = np.nanmean(ys, axis=0)
            keep = np.isfinite(mean) & (mean > 0)
            line, = ax.semilogy(xs[keep], mean[keep], label=f"{label} ({len(traces)} seeds)" if len(traces) > 1 else label)
            if len(traces) > 1:
                lo, hi = np.nanmin(ys, axis=0), np.nanmax(ys, axis=0)
                ok = keep & (lo > 0)
                ax.fill_between(xs[ok], lo[ok], hi[ok], color=line.get_color(), alpha=0.2)
        ax.set_xlabel(LABELS.get(xname, xname))
        ax.set_ylabel(LABELS.get(y, y))
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, formats, dpi=120)


def write_report(store: ResultStore, out: Path, experiment: str | None = None, where: dict[str, Any] | None = None,
                 x: Sequence[str] = ("rounds", "bits_up")) -> Path:
    """One self-contained HTML page: a figure per experiment (embedded PNG) and a table of every
    run's config and final metrics."""
    runs = select(store, experiment, where)
    if not runs:
        raise ValueError("no stored runs match" + (f" experiment '{experiment}'" if experiment else "") +
                         ": run a config with `optsim run` or `optsim sweep` first")
    by_exp: dict[str, list] = {}
    for exp, config, trace in runs:
        by_exp.setdefault(exp or "runs", []).append((config, trace))
    out = Path(out)
    parts = [f"<h1>optsim report</h1><p>{len(runs)} runs, generated {time.strftime('%Y-%m-%d %H:%M')}</p>"]
    for exp, group in by_exp.items():
        y = group[0][1].meta.get("metric", "f_gap")
        png = plot_groups(group, list(x), y, out.with_name(f".{out.stem}_{_slug(exp)}"), title=exp)[0]
        data = base64.b64encode(png.read_bytes()).decode()
        png.unlink()
        parts.append(f"<h2>{html.escape(exp)}</h2><img alt='{html.escape(exp)}' src='data:image/png;base64,{data}'>")
    parts.append("<h2>Runs</h2><table><tr><th>label</th><th>status</th><th>rounds</th><th>final metric</th>"
                 "<th>bits up</th><th>wall s</th><th>config</th></tr>")
    for _, config, t in runs:
        metric = t.meta.get("metric", "f_gap")
        fm = t.last(metric) if len(t) else math.nan
        cfg = html.escape(json.dumps(config, sort_keys=True))
        parts.append(f"<tr><td>{html.escape(t.label)}</td><td>{t.status}</td><td>{t.last('round'):.0f}</td>"
                     f"<td>{metric} = {fm:.3e}</td><td>{t.last('bits_up'):.4g}</td>"
                     f"<td>{t.meta.get('wall_time', math.nan):.2f}</td><td><details><summary>config</summary>"
                     f"<pre>{cfg}</pre></details></td></tr>")
    parts.append("</table>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:4px 8px;font-size:13px}img{max-width:100%}pre{white-space:pre-wrap;max-width:60em}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>optsim report</title>"
                   f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    return out


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", s)
