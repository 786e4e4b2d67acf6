"""Convergence figures: a log-scale metric against rounds / bits / gradient evaluations / time,
written as PNG and PDF, readable with many runs.

Every line is a :class:`Curve`: one run, or the mean over the seeds of one configuration with a
min-max band. A curve belongs to a *family* (its method): each family has one hue, and the curves
of a family (e.g. a stepsize grid) get shades of it and line styles, so that 36 curves of 4
methods read as 4 colours. The legend sits outside the axes, shared by the panels; curves are
labelled by what tells them apart (``diana rand-6 x2``, see :func:`describe`); bits axes are in
kbit / Mbit / Gbit. :func:`plot_traces` draws runs, :func:`plot_curves` any curves (the results
store groups seeds into curves, :mod:`optsim.experiment.report`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .trace import Trace

__all__ = ["BANDS", "Curve", "Series", "check_band", "series", "describe", "curves_of", "draw_curves", "plot_curves", "plot_traces",
           "plot_config", "save_figure", "LABELS"]

LABELS = {
    "rounds": "rounds", "round": "rounds", "comm_rounds": "communication rounds",
    "bits_up": "bits sent up per client", "bits_down": "bits sent down per client",
    "grad_evals": "gradient evaluations per client (local full gradients)",
    "hess_evals": "Hessian evaluations per client", "func_evals": "function evaluations per client (local full)",
    "sim_time": "simulated time (s)",
    "wall_time": "wall-clock time (s)", "f_gap": r"$f(x) - f^\star$",
    "grad_norm_sq": r"$\|\nabla f(x)\|^2$", "dist_sq": r"$\|x - x^\star\|^2$", "loss": r"$f(x)$",
}

_STYLES = ("-", "--", "-.", ":")


@dataclass
class Curve:
    """A line: ``traces`` of one configuration (several seeds: mean and min-max band), its legend
    ``label`` and its ``family`` (the method: one hue per family)."""

    label: str
    family: str
    traces: list[Trace]


def _compressor(spec: Any) -> str:
    if spec is None:
        return ""
    if isinstance(spec, (list, tuple)):
        return "∘".join(_compressor(s) for s in spec)
    if isinstance(spec, str):
        spec = {"name": spec}
    name = spec.get("name", "?")
    args = {k: v for k, v in spec.items() if k != "name"}
    short = {"rand_k": "rand", "top_k": "top", "perm_k": "perm", "scaled_sign": "ssign", "rank_r": "rank"}
    if name in short and len(args) == 1:
        return f"{short[name]}-{next(iter(args.values()))}"
    if name == "identity":
        return ""
    if name == "bernoulli":
        inner = _compressor(args.get("inner", "identity"))
        return f"bern-{args.get('p', 0.5)}" + (f"({inner})" if inner else "")
    return name + "".join(f"-{v}" for v in args.values() if not isinstance(v, (dict, list)))


def describe(spec: dict[str, Any]) -> str:
    """A legend label for a method's config: its ``label`` when it has one, otherwise the name, the
    components and the non-default parameters that tell runs apart, e.g. ``diana rand-6 x2``,
    ``ef21 top-12 nice-5``, ``gd stepsize=0.1``."""
    if spec.get("label"):
        return str(spec["label"])
    parts = [str(spec.get("name", "?"))]
    for key in ("compressor", "down_compressor"):
        c = _compressor(spec.get(key))
        if c:
            parts.append(("↓" if key == "down_compressor" else "") + c)
    s = spec.get("sampler")
    if s is not None and s != "full":
        s = {"name": s} if isinstance(s, str) else s
        parts.append(s["name"] + "".join(f"-{v}" for k, v in s.items() if k != "name"))
    mult = spec.get("stepsize_mult")
    if mult is not None and float(mult) != 1.0:
        parts.append(f"x{float(mult):g}")
    for k, v in spec.items():
        if k in ("name", "label", "compressor", "down_compressor", "sampler", "stepsize_mult"):
            continue
        parts.append(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def curves_of(traces: Sequence[Trace]) -> list[Curve]:
    """One curve per run, labelled from its config (:func:`describe`)."""
    return [Curve(describe(t.meta.get("config") or {"name": t.label, "label": t.label}), t.method, [t])
            for t in traces]


#: the bands a figure can draw around the mean over seeds: min-max, or mean +- standard error
BANDS = ("minmax", "se")


def check_band(band: str) -> str:
    """``band`` if it is one of :data:`BANDS`, else a one-line ValueError."""
    if band not in BANDS:
        raise ValueError(f"unknown band '{band}': use minmax (min-max over seeds) or se (mean +- standard error)")
    return band


@dataclass
class Series:
    """What a figure draws of one curve against one x column: ``x`` (the mean over seeds, unscaled),
    the ``mean`` of ``y`` over seeds with its band ``lo`` / ``hi`` (min-max, or mean +- the standard
    error: sample standard deviation over the seeds that logged the point / sqrt of their number), the
    points a log axis shows (``keep``: finite and positive mean; ``band``: also a positive ``lo``), the
    seeds' traces used (those as long as the shortest) and the legend entry."""

    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    keep: np.ndarray
    band: np.ndarray
    traces: list[Trace]
    legend: str


def series(curve: Curve, xname: str, y: str, band: str = "minmax") -> Series:
    """The data :func:`draw_curves` plots for ``curve`` against the column ``xname``: the seeds are cut
    to the shortest one, then averaged (``y`` with ``nanmean``); the band is their min and max
    (``band="minmax"``) or the mean +- the standard error (``band="se"``: ``nanstd(ddof=1) / sqrt(k)``
    over the k seeds that logged the point; no band where k < 2)."""
    check_band(band)
    n = min(len(t) for t in curve.traces if len(t))
    traces = [t for t in curve.traces if len(t) >= n]
    xs = np.mean([t[xname][:n] for t in traces], axis=0)
    ys = np.array([t[y][:n] for t in traces])
    with warnings.catch_warnings():  # a column that is NaN in every seed (not logged): no point
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(ys, axis=0)
        if band == "se":
            k = np.sum(~np.isnan(ys), axis=0)
            se = np.where(k > 1, np.nanstd(ys, axis=0, ddof=1) / np.sqrt(np.maximum(k, 1)), np.nan)
            lo, hi = mean - se, mean + se
        else:
            lo, hi = np.nanmin(ys, axis=0), np.nanmax(ys, axis=0)
    keep = np.isfinite(mean) & (mean > 0)
    seeds = f" ({len(traces)} seeds)" if len(traces) > 1 else ""
    status = {t.status for t in traces} - {"finished", "running"}
    legend = curve.label + seeds + (f" [{', '.join(sorted(status))}]" if status else "")
    return Series(xs, mean, lo, hi, keep, keep & (lo > 0), traces, legend)


def _unit(values: np.ndarray, name: str) -> tuple[float, str]:
    """(scale, axis label) for an x column: bits in kbit / Mbit / Gbit."""
    label = LABELS.get(name, name)
    if not name.startswith("bits"):
        return 1.0, label
    top = float(np.nanmax(values)) if values.size and np.isfinite(values).any() else 0.0
    for scale, unit in ((1e9, "Gbit"), (1e6, "Mbit"), (1e3, "kbit")):
        if top >= 10 * scale:
            return scale, f"{label} ({unit})"
    return 1.0, f"{label} (bits)"


def _colours(curves: Sequence[Curve]) -> list[tuple]:
    """One hue per family (in order of first appearance), shades within a family."""
    import matplotlib
    from matplotlib.colors import to_rgb

    families = list(dict.fromkeys(c.family for c in curves))
    palette = matplotlib.colormaps["tab10" if len(families) <= 10 else "tab20"]
    base = {f: to_rgb(palette(i % palette.N)) for i, f in enumerate(families)}
    members: dict[str, list[int]] = {}
    for i, c in enumerate(curves):
        members.setdefault(c.family, []).append(i)
    out: list[tuple] = [()] * len(curves)
    for f, idx in members.items():
        for j, i in enumerate(idx):
            t = 0.0 if len(idx) == 1 else 0.55 * j / (len(idx) - 1)  # darkest first, towards white
            out[i] = tuple(ch + (1 - ch) * t for ch in base[f])
    return out


def plot_curves(curves: Sequence[Curve], x: Sequence[str], y: str, path: str | Path, title: str = "",
                formats: Sequence[str] = ("png", "pdf"), band: str = "minmax") -> list[Path]:
    """One panel per x column, the curves on a log y axis, a shared legend outside the axes; returns
    the files written. ``band``: the band around each mean over seeds (:data:`BANDS`)."""
    return save_figure(draw_curves(curves, x, y, title, band), path, formats)


def draw_curves(curves: Sequence[Curve], x: Sequence[str], y: str, title: str = "", band: str = "minmax"):
    """The figure of :func:`plot_curves` (a matplotlib Figure, not saved)."""
    check_band(band)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [c for c in curves if any(len(t) for t in c.traces)]
    colours = _colours(curves)
    ncol = 1 if len(curves) <= 18 else 2
    longest = max((len(c.label) for c in curves), default=10)
    legend_width = min(7.0, 0.9 + ncol * 0.075 * longest)
    fig, axes = plt.subplots(1, len(x), figsize=(4.6 * len(x) + legend_width, 4.0), squeeze=False)
    handles, labels = [], []
    for k, (ax, xname) in enumerate(zip(axes[0], x)):
        everything = np.concatenate([t[xname] for c in curves for t in c.traces if len(t)] or [np.zeros(0)])
        scale, xlabel = _unit(everything, xname)
        for i, c in enumerate(curves):
            s = series(c, xname, y, band)
            xs, mean, keep, traces = s.x / scale, s.mean, s.keep, s.traces
            style = _STYLES[(sum(1 for d in curves[:i] if d.family == c.family)) % len(_STYLES)]
            if any(t.status == "diverged" for t in traces):
                style = ":"
            line, = ax.semilogy(xs[keep], mean[keep], style, color=colours[i], lw=1.4)
            if len(traces) > 1:
                ok = s.band
                ax.fill_between(xs[ok], s.lo[ok], s.hi[ok], color=colours[i], alpha=0.15, lw=0)
            if k == 0:
                handles.append(line)
                labels.append(s.legend)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(LABELS.get(y, y))
        ax.grid(True, which="major", alpha=0.3)
        ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    if title:
        fig.suptitle(title)
    right = 1 - legend_width / fig.get_figwidth()
    fig.tight_layout(rect=(0, 0, right, 1))
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(right, 0.5), fontsize=7 if ncol == 1 else 6,
                   ncol=ncol, frameon=False)
    return fig


def plot_traces(traces: Sequence[Trace], x: Sequence[str], y: str, path: str | Path,
                title: str = "", formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """One panel per x axis in ``x``, one curve per run; returns the written files."""
    return plot_curves(curves_of(traces), x, y, path, title, formats)


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
