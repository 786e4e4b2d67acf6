"""What the dashboard shows, read from the results store opened read-only.

Every function opens the store anew (``file:...?mode=ro``: nothing is written, and a sweep may
write meanwhile), reads, and closes it. Runs are selected as ``optsim plot`` / ``optsim report``
select them (experiment, config fields ``where``) plus method and status; a plot groups the seeds of
otherwise identical configs into one curve (:func:`optsim.experiment.report.group_curves`) and
computes each curve's mean and min-max band with :func:`optsim.plots.series`, the data of the figure
``optsim plot`` draws, so that the page, its CSV and its PNG/PDF export show the same numbers.
"""
from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..experiment.report import best_curves, get_path, group_curves, plot_groups
from ..experiment.store import ResultStore, StoreDamaged, other_build
from ..plots import LABELS, series

__all__ = ["X_AXES", "Query", "StoreUnavailable", "downsample_index", "export_plot", "list_runs", "plot_curves_data",
           "read_store", "run_detail", "trace_columns"]

#: the x axes a plot offers (trace columns; "rounds" is the column "round")
X_AXES = ("rounds", "comm_rounds", "bits_up", "bits_down", "grad_evals", "func_evals", "sim_time", "wall_time")
#: statuses as a reader sees them ("orphaned": running for a process that is gone, as `optsim runs ls` shows)
STATUSES = ("running", "orphaned", "finished", "diverged", "failed", "interrupted")
#: axis titles without TeX (the page has no TeX renderer): the metrics whose figure labels are TeX
_PLAIN = {"f_gap": "f(x) − f*", "grad_norm_sq": "‖∇f(x)‖²", "dist_sq": "‖x − x*‖²", "loss": "f(x)"}
#: matplotlib figures are drawn one at a time (pyplot is not thread-safe)
_FIGURE_LOCK = threading.Lock()


class StoreUnavailable(RuntimeError):
    """The results store cannot be read: absent, not a database, or damaged (the message names the fix)."""


@contextmanager
def read_store(path: str | Path) -> Iterator[ResultStore]:
    """The store at ``path`` opened read-only for one request (closed after it)."""
    path = Path(path)
    if not path.is_file():
        raise StoreUnavailable(f"no results store at {path}: run a config with `optsim run` or `optsim sweep` "
                               "first, or pass --store FILE")
    store = ResultStore(path, salvage=True)  # mode=ro, no check, never written
    try:
        yield store
    except StoreDamaged as e:
        raise StoreUnavailable(str(e)) from None
    except sqlite3.DatabaseError as e:
        raise StoreUnavailable(f"the results store {path} cannot be read ({e}); it may be damaged: "
                               f"`optsim runs export --store {path} --salvage` saves what can still be read") from None
    finally:
        store.close()


class Query:
    """A selection of runs: ``experiment``, ``method``, ``status`` (each a value or several) and config
    fields ``where`` (dotted keys, values read as YAML, as ``optsim plot --where``)."""

    def __init__(self, experiment: Sequence[str] = (), method: Sequence[str] = (), status: Sequence[str] = (),
                 where: dict[str, str] | None = None):
        self.experiment = [e for e in experiment if e]
        self.method = [m for m in method if m]
        self.status = [s for s in status if s]
        self.where = dict(where or {})
        self._want = {k: _yaml(v) if isinstance(v, str) else v for k, v in self.where.items()}
        bad = [s for s in self.status if s not in STATUSES]
        if bad:
            raise ValueError(f"unknown status {bad[0]!r}: use one of {', '.join(STATUSES)}")

    @classmethod
    def from_params(cls, params: dict[str, list[str]]) -> Query:
        """From URL query parameters: experiment, method, status (repeated or comma-separated) and
        ``where=key.sub=value`` (repeated)."""
        def values(name):
            return [v for item in params.get(name, []) for v in item.split(",") if v]

        where = {}
        for item in params.get("where", []):
            if "=" not in item:
                raise ValueError(f"where '{item}' must look like key.sub=value")
            k, v = item.split("=", 1)
            where[k.strip()] = v
        return cls(values("experiment"), values("method"), values("status"), where)

    def _sql(self) -> tuple[str, tuple]:
        clauses, args = [], []
        for col, vals in (("experiment", self.experiment), ("method", self.method)):
            if vals:
                clauses.append(f"{col} IN ({', '.join('?' * len(vals))})")
                args += vals
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", tuple(args)

    def matches(self, config: dict) -> bool:
        """Whether a run's config has the ``where`` values (as ``optsim plot --where``: equal as YAML
        values or as text)."""
        for k, want in self._want.items():
            got = get_path(config, k)
            if got != want and str(got) != str(want):
                return False
        return True

    def rows(self, store: ResultStore, with_trace: bool = False) -> list[tuple[sqlite3.Row, dict, str]]:
        """(row, config, status as a reader sees it) of the matching runs, by id."""
        cols = ("id, hash, experiment, label, method, seed, config, version, status, owner, created, updated, "
                "wall_time, rounds, final_metric, message, checkpoint IS NOT NULL AS has_checkpoint"
                + (", trace" if with_trace else ""))  # never the checkpoint itself
        where, args = self._sql()
        out = []
        for row in store.conn.execute(f"SELECT {cols} FROM runs{where} ORDER BY id", args).fetchall():
            status = store.status(row)
            if self.status and status not in self.status:
                continue
            config = json.loads(row["config"])
            if self.where and not self.matches(config):
                continue
            out.append((row, config, status))
        return out


def _yaml(text: str) -> Any:
    """A ``where`` value as YAML reads it (``20`` the number, ``[a, b]`` a list), else the text itself."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _num(v: Any) -> Any:
    """A JSON-safe number: NaN and infinities become None."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _floats(a: np.ndarray) -> list[float | None]:
    a = np.asarray(a, dtype=np.float64)
    return [float(v) if math.isfinite(v) else None for v in a.tolist()]


def list_runs(path: str | Path, query: Query) -> dict[str, Any]:
    """The runs table: one entry per matching run (no trace), and the experiments, methods and
    statuses of the whole store (the choices of the filters)."""
    with read_store(path) as store:
        runs = []
        for row, config, status in query.rows(store):
            runs.append({"id": row["id"], "hash": row["hash"], "experiment": row["experiment"], "label": row["label"],
                         "method": row["method"], "seed": row["seed"], "status": status,
                         "stale": other_build(row), "rounds": row["rounds"], "final_metric": _num(row["final_metric"]),
                         "wall_time": _num(row["wall_time"]), "updated": row["updated"],
                         "checkpoint": bool(row["has_checkpoint"]), "message": row["message"]})
        choices = {col: [r[0] for r in store.conn.execute(
            f"SELECT DISTINCT {col} FROM runs WHERE {col} IS NOT NULL ORDER BY {col}").fetchall()]
            for col in ("experiment", "method")}
    return {"runs": runs, "experiments": choices["experiment"], "methods": choices["method"],
            "statuses": list(STATUSES), "x_axes": list(X_AXES)}


def run_detail(path: str | Path, key: str) -> dict[str, Any]:
    """One run: its row, config, the trace's metadata (paper, stepsize, metric, ...), its columns and
    length, and whether it holds a checkpoint."""
    with read_store(path) as store:
        row = store.get(key)
        if row is None:
            raise KeyError(f"no run '{key}' in {path}")
        trace = store.trace(row)
        info = {k: _num(row[k]) for k in row.keys() if k not in ("trace", "checkpoint", "config")}  # noqa: SIM118 (a Row)
        info["status"] = store.status(row)
        info["stored_status"] = row["status"]
        info["stale"] = other_build(row)
        info["checkpoint"] = len(row["checkpoint"]) if row["checkpoint"] else None
        info["config"] = json.loads(row["config"])
        info["meta"] = json.loads(json.dumps(trace.meta, default=str)) if trace is not None else None
        info["columns"] = [c for c in trace.rows if np.isfinite(trace[c]).any()] if trace is not None else []
        info["length"] = len(trace) if trace is not None else 0
    return info


def downsample_index(n: int, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` of ``n`` points, evenly spaced, the first and the last kept."""
    if max_points < 2:
        raise ValueError(f"max_points={max_points}: ask for at least 2 points")
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(np.int64))


def trace_columns(path: str | Path, key: str, columns: Sequence[str] = (), max_points: int = 2000) -> dict[str, Any]:
    """A run's trace columns (all by default), at most ``max_points`` rows of them (evenly spaced rows,
    first and last kept); ``length`` is the trace's full length, ``index`` the rows sent."""
    with read_store(path) as store:
        row = store.get(key)
        if row is None:
            raise KeyError(f"no run '{key}' in {path}")
        trace = store.trace(row)
    if trace is None:
        return {"id": row["id"], "length": 0, "index": [], "columns": {}}
    names = list(columns) or list(trace.rows)
    unknown = [c for c in names if c != "rounds" and c not in trace.rows]
    if unknown:
        raise ValueError(f"unknown trace column '{unknown[0]}': the run has {', '.join(trace.rows)}")
    idx = downsample_index(len(trace), max_points)
    return {"id": row["id"], "length": len(trace), "index": idx.tolist(),
            "columns": {c: _floats(trace[c][idx]) for c in names}}


def _check_axes(x: str, y: str) -> None:
    if x not in X_AXES:
        raise ValueError(f"unknown x axis '{x}': use one of {', '.join(X_AXES)}")
    if not y or y in X_AXES or y == "round":
        raise ValueError(f"y must be a metric column (e.g. f_gap, grad_norm_sq, dist_sq, loss), not '{y}'")


def _runs(store: ResultStore, query: Query) -> list[tuple[dict, Any]]:
    """(config, trace) of the selected runs that have a trace."""
    return [(config, store.trace(row)) for row, config, _ in query.rows(store, with_trace=True) if row["trace"]]


def _curves(runs: list[tuple[dict, Any]], x: str, y: str | None, best: bool):
    """(y, curves): ``y`` defaults to the first run's metric, as ``optsim plot``; the seeds of otherwise
    identical configs form a curve (:func:`~optsim.experiment.report.group_curves`)."""
    y = y or (runs[0][1].meta.get("metric", "f_gap") if runs else "f_gap")
    if x not in X_AXES:
        raise ValueError(f"unknown x axis '{x}': use one of {', '.join(X_AXES)}")
    if y in X_AXES or y == "round":
        raise ValueError(f"y must be a metric column (e.g. f_gap, grad_norm_sq, dist_sq, loss), not '{y}'")
    if runs and all(y not in t.rows for _, t in runs):
        names = sorted({c for _, t in runs for c in t.rows} - {"round", *X_AXES})
        raise ValueError(f"no selected run logged '{y}': choose y among {', '.join(names)}")
    curves = group_curves(runs)
    if best:
        curves = best_curves(curves, y, per_family=True)
    return y, [c for c in curves if any(len(t) for t in c.traces)]


def plot_curves_data(path: str | Path, query: Query, x: str = "rounds", y: str | None = None,
                     max_points: int = 1000, best: bool = False) -> dict[str, Any]:
    """The curves of a plot: per curve (the seeds of one otherwise identical config) the mean of ``y``
    against ``x`` and its min-max band over seeds, exactly as :func:`optsim.plots.draw_curves` draws
    them (points a log axis cannot show are None), at most ``max_points`` points each."""
    with read_store(path) as store:
        runs = _runs(store, query)
    y, curves = _curves(runs, x, y, best)
    out = []
    for c in curves:
        if any(y not in t.rows for t in c.traces):  # an extra metric some seeds did not log
            continue
        s = series(c, x, y)
        idx = downsample_index(len(s.x), max_points)
        mean = np.where(s.keep, s.mean, np.nan)
        lo, hi = np.where(s.band, s.lo, np.nan), np.where(s.band, s.hi, np.nan)
        out.append({"label": s.legend, "family": c.family, "seeds": len(s.traces),
                    "statuses": sorted({t.status for t in s.traces}), "length": len(s.x),
                    "x": _floats(s.x[idx]), "mean": _floats(mean[idx]),
                    "lo": _floats(lo[idx]) if len(s.traces) > 1 else None,
                    "hi": _floats(hi[idx]) if len(s.traces) > 1 else None})
    return {"x": x, "y": y, "xlabel": LABELS.get(x, x), "ylabel": _PLAIN.get(y, LABELS.get(y, y)), "runs": len(runs),
            "curves": out}


def export_plot(path: str | Path, query: Query, x: str = "rounds", y: str | None = None, fmt: str = "png",
                best: bool = False, title: str | None = None) -> tuple[bytes, str]:
    """The current plot as a file: PNG or PDF drawn by :func:`optsim.experiment.report.plot_groups`
    (the figure of ``optsim plot --x X --y Y``, titled with the experiment as it is), or CSV of the
    curves' full data (curve, seeds, x, mean, min, max; one row per point). Returns (bytes, file name)."""
    if fmt not in ("png", "pdf", "csv"):
        raise ValueError(f"unknown export format '{fmt}': use png, pdf or csv")
    with read_store(path) as store:
        runs = _runs(store, query)
    y, curves = _curves(runs, x, y, best)
    if not runs:
        raise ValueError("no stored runs with a trace match these filters")
    if title is None:
        title = query.experiment[0] if len(query.experiment) == 1 else ""
    name = f"plot_{(query.experiment[0] if len(query.experiment) == 1 else 'runs')}_{y}_{x}.{fmt}"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["curve", "method", "seeds", x, f"{y}_mean", f"{y}_min", f"{y}_max"])
        for c in curves:
            s = series(c, x, y)
            for i in range(len(s.x)):
                w.writerow([s.legend, c.family, len(s.traces), repr(float(s.x[i])), repr(float(s.mean[i])),
                            repr(float(s.lo[i])), repr(float(s.hi[i]))])
        return buf.getvalue().encode(), name
    with _FIGURE_LOCK, tempfile.TemporaryDirectory() as tmp:
        (f,) = plot_groups(runs, [x], y, Path(tmp) / "plot", title=title, formats=(fmt,), best=best)
        return f.read_bytes(), name
