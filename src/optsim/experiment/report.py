"""Figures and an HTML report from the results store.

Runs are selected by experiment name and config fields (``--where problem.clients=20``), grouped
by their config up to the seed (only runs of one otherwise identical configuration are averaged),
and drawn as the mean over seeds with a min-max band (:mod:`optsim.plots`).
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

from ..plots import Curve, plot_curves
from ..trace import Trace
from .store import ResultStore

__all__ = ["select", "group_curves", "best_curves", "plot_groups", "write_report", "get_path"]


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


def _seedless(config: dict) -> str:
    """The identity of a run's configuration up to its seed (runs that differ only in the seed are
    seeds of one configuration)."""
    rest = {k: v for k, v in config.items() if k not in ("seed", "seeds")}
    return json.dumps(rest, sort_keys=True, default=str)


def _seedless_label(trace: Trace) -> str:
    return re.sub(r"(, )?seed=[^,\]]*", "", trace.label).replace(" []", "").replace("[, ", "[")


def group_curves(runs: list[tuple[dict, Trace]]) -> list[Curve]:
    """The runs as curves: the seeds of one otherwise identical configuration form one curve (mean
    and min-max band), its family the method."""
    groups: dict[str, list[Trace]] = {}
    for config, t in runs:
        groups.setdefault(_seedless(config), []).append(t)
    return [Curve(_seedless_label(ts[0]), ts[0].method, ts) for ts in groups.values()]


def best_curves(curves: list[Curve], metric: str, top: int | None = None, per_family: bool = False) -> list[Curve]:
    """The ``top`` curves with the lowest final ``metric`` (mean over seeds; diverged or failed runs
    last), or the best curve of each family (``per_family``)."""
    def score(c: Curve) -> float:
        finals = [t.last(metric) if t.status == "finished" and len(t) else math.inf for t in c.traces]
        v = float(np.mean(finals))
        return v if math.isfinite(v) else math.inf

    ranked = sorted(curves, key=score)
    if per_family:
        seen: dict[str, Curve] = {}
        for c in ranked:
            seen.setdefault(c.family, c)
        ranked = list(seen.values())
    return ranked[:top] if top else ranked


def plot_groups(runs: list[tuple[dict, Trace]], x: Sequence[str], y: str, path: Path, title: str = "",
                formats: Sequence[str] = ("png",), top: int | None = None, best: bool = False) -> list[Path]:
    """Mean over seeds (runs whose configuration differs only in the seed) with a min-max band, one
    hue per method; ``top``/``best``: only the N best curves, or the best of each method."""
    curves = group_curves(runs)
    if top or best:
        curves = best_curves(curves, y, top, per_family=best)
    return plot_curves(curves, x, y, path, title, formats)


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
