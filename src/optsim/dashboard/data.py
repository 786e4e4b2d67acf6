"""What the dashboard shows, read from the results store opened read-only.

Every function opens the store anew (``ResultStore(path, readonly=True)``, a ``mode=ro`` SQLite URI:
nothing is written, and a sweep may write meanwhile), reads, and closes it. Runs are selected as
``optsim plot`` / ``optsim report`` select them (experiment, config fields ``where``) plus method and
status, and may be grouped by any config field (a dotted key, e.g. ``method.stepsize_mult``; a method
parameter a run left at its default counts with its default value). A plot groups the seeds of
otherwise identical configs into one curve (:func:`optsim.experiment.report.group_curves`), one hue
per method or per value of the group field, and computes each curve's mean and band (min-max or
mean +- standard error) with :func:`optsim.plots.series`, the data of the figure ``optsim plot`` draws,
so that the page, its CSV and its PNG/PDF export show the same numbers. The sweep view reduces each
run to one number (the final or the best value of a metric) and plots it against a swept config
field, one line per method; the recipe view reads the outcomes ``optsim reproduce`` writes.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import math
import sqlite3
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..experiment.report import best_curves, get_path, group_curves
from ..experiment.store import ResultStore, StoreDamaged, other_build
from ..plots import BANDS, LABELS, Curve, check_band, plot_curves, series
from ..trace import Trace

__all__ = ["BANDS", "STATS", "X_AXES", "Query", "StoreUnavailable", "downsample_index", "export_plot", "field_value",
           "list_runs", "plot_curves_data", "read_store", "recipe_file", "recipe_outcomes", "run_detail", "sweep_data",
           "trace_columns", "varying_fields"]

#: the x axes a plot offers (trace columns; "rounds" is the column "round")
X_AXES = ("rounds", "comm_rounds", "bits_up", "bits_down", "grad_evals", "func_evals", "sim_time", "wall_time")
#: statuses as a reader sees them ("orphaned": running for a process that is gone, as `optsim runs ls` shows)
STATUSES = ("running", "orphaned", "finished", "diverged", "failed", "interrupted")
#: axis titles without TeX (the page has no TeX renderer): the metrics whose figure labels are TeX
_PLAIN = {"f_gap": "f(x) − f*", "grad_norm_sq": "‖∇f(x)‖²", "dist_sq": "‖x − x*‖²", "loss": "f(x)"}
#: matplotlib figures are drawn one at a time (pyplot is not thread-safe)
_FIGURE_LOCK = threading.Lock()
#: what the sweep view takes of each run's metric: its value at the last logged row, or its lowest finite value
STATS = ("final", "best")


class StoreUnavailable(RuntimeError):
    """The results store cannot be read: absent, not a database, or damaged (the message names the fix)."""


@contextmanager
def read_store(path: str | Path) -> Iterator[ResultStore]:
    """The store at ``path`` opened read-only for one request (closed after it)."""
    path = Path(path)
    if not path.is_file():
        raise StoreUnavailable(f"no results store at {path}: run a config with `optsim run` or `optsim sweep` "
                               "first, or pass --store FILE")
    store = ResultStore(path, readonly=True)  # mode=ro: never written
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
        values or as text; a method parameter left at its default has its default value)."""
        for k, want in self._want.items():
            got = field_value(config, k)
            if got != want and str(got) != str(want):
                return False
        return True

    def rows(self, store: ResultStore, with_trace: bool = False) -> list[tuple[sqlite3.Row, dict, str]]:
        """(row, config, status as a reader sees it) of the matching runs, by id; ``with_trace``: only
        runs that have a trace (read it with :func:`_traces`)."""
        cols = ("id, hash, experiment, label, method, seed, config, version, status, owner, created, updated, "
                "wall_time, rounds, final_metric, message, checkpoint IS NOT NULL AS has_checkpoint")
        # never the checkpoint itself; traces are read apart, only those not already decoded (_traces)
        where, args = self._sql()
        if with_trace:
            where = (where + " AND" if where else " WHERE") + " trace IS NOT NULL"
        out = []
        for row in store.conn.execute(f"SELECT {cols} FROM runs{where} ORDER BY id", args).fetchall():
            status = store.status(row)
            if self.status and status not in self.status:
                continue
            config = _config(row)
            if self.where and not self.matches(config):
                continue
            out.append((row, config, status))
        return out


#: parsed configs by run hash (a hash is its config's identity); read, never modified
_CONFIGS: dict[str, dict] = {}


def _config(row: sqlite3.Row) -> dict:
    config = _CONFIGS.get(row["hash"])
    if config is None:
        config = json.loads(row["config"])
        if len(_CONFIGS) > 200_000:
            _CONFIGS.clear()
        _CONFIGS[row["hash"]] = config
    return config


class _Columns(Mapping):
    """The columns of a stored trace, each parsed from the trace's JSON text when first read (a plot
    reads two of a dozen columns: parsing only those is most of the time a large plot takes)."""

    def __init__(self, text: str, spans: dict[str, tuple[int, int]]):
        self._text, self._spans, self._done = text, spans, {}

    def __getitem__(self, column: str) -> np.ndarray:
        v = self._done.get(column)
        if v is None:
            a, b = self._spans[column]
            v = self._done[column] = np.array(json.loads(self._text[a:b]), dtype=np.float64)
        return v

    def __iter__(self):
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)

    def nbytes(self) -> int:
        return len(self._text) + sum(v.nbytes for v in self._done.values())


def decode_trace(text: str) -> Trace:
    """A stored trace (``json.dumps(trace.to_dict())``: label, method, status, meta, then ``rows``, the
    lists of numbers by column) whose columns are parsed when first read; a text of another layout
    is parsed whole (:meth:`Trace.from_dict`)."""
    start = text.rfind('"rows": {')
    spans: dict[str, tuple[int, int]] = {}
    pos = start + len('"rows": {')
    ok = start > 0
    while ok:
        q = text.find('"', pos)
        if q < 0:
            break
        e = text.find('"', q + 1)
        a = text.find("[", e)
        b = text.find("]", a)
        ok = e > q and text[e + 1:a] == ": " and b > a and text[pos:q].strip(", ") == ""
        spans[text[q + 1:e]] = (a, b + 1)
        pos = b + 1
    head = text[:start].rstrip().rstrip(",") + "}" if ok else ""
    if not ok or text[pos:].strip() != "}}" or "round" not in spans:
        return Trace.from_dict(json.loads(text))
    d = json.loads(head)
    t = Trace(d["label"], d["method"], d["status"], meta=d.get("meta", {}))
    t.rows = _Columns(text, spans)  # type: ignore[assignment]
    return t


#: decoded traces by (run id, hash, last update): a finished run's trace is decoded once per process
_TRACES: OrderedDict[tuple, Trace] = OrderedDict()
_TRACES_LOCK = threading.Lock()
#: the memory the decoded traces may hold (their JSON text and the columns parsed), bytes
TRACE_CACHE_BYTES = 512 * 2**20


def _traces(store: ResultStore, rows: Sequence[sqlite3.Row]) -> list[Trace | None]:
    """The traces of ``rows`` (None for a row without one), decoded lazily and kept in a bounded cache."""
    keys = [(r["id"], r["hash"], r["updated"]) for r in rows]
    with _TRACES_LOCK:
        found = {k: _TRACES[k] for k in keys if k in _TRACES}
        for k in found:
            _TRACES.move_to_end(k)
    missing = [k for k in keys if k not in found]
    for i in range(0, len(missing), 500):
        batch = {k[0]: k for k in missing[i:i + 500]}
        for rid, text in store.conn.execute(
                f"SELECT id, trace FROM runs WHERE id IN ({', '.join('?' * len(batch))})", tuple(batch)).fetchall():
            if text:
                found[batch[rid]] = decode_trace(text)
    with _TRACES_LOCK:
        for k in missing:
            if k in found:
                _TRACES[k] = found[k]
        total = sum(_size(t) for t in _TRACES.values())
        while _TRACES and total > TRACE_CACHE_BYTES:
            total -= _size(_TRACES.popitem(last=False)[1])
    return [found.get(k) for k in keys]


def _size(t: Trace) -> int:
    return t.rows.nbytes() if isinstance(t.rows, _Columns) else 8 * len(t.rows) * max(len(t), 1)


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


# ---- config fields ---------------------------------------------------------------------------------------------------

def _flatten(data: dict) -> dict[str, Any]:
    """The leaves of a config as dotted keys (lists are leaves; an empty mapping has none)."""
    out: dict[str, Any] = {}
    stack = [("", data)]
    while stack:
        prefix, d = stack.pop()
        for k, v in d.items():
            if isinstance(v, dict):
                stack.append((f"{prefix}{k}.", v))
            else:
                out[f"{prefix}{k}"] = v
    return out


@functools.lru_cache(maxsize=1024)
def _method_params(method: str) -> dict[str, Any]:
    """The parameters of a stored method config (canonical: defaults left out) with their defaults
    filled in, by the method's own ``Params``; {} for a method this build does not know."""
    from ..methods.base import MethodSpec

    try:
        spec = MethodSpec.parse(json.loads(method))
        return spec.params.model_dump(mode="json")
    except Exception:  # noqa: BLE001 (an unknown or changed method: its stored values only)
        return {}


def warm_up() -> None:
    """Import what the first request would: the method registry (every method module), which gives the
    defaults of the parameters a stored config leaves out."""
    _method_params(json.dumps({"name": "gd"}))


#: method parameter defaults as dotted keys, by the stored method config's text
_DEFAULTS: dict[str, dict[str, Any]] = {}


def _defaults(method: dict) -> dict[str, Any]:
    key = repr(method)
    found = _DEFAULTS.get(key)
    if found is None:
        found = {f"method.{k}": v for k, v in _method_params(json.dumps(method, sort_keys=True)).items()}
        if len(_DEFAULTS) > 10_000:
            _DEFAULTS.clear()
        _DEFAULTS[key] = found
    return found


#: flattened configs by run hash (a hash is a config's identity: its flattening never changes)
_FLAT: dict[str, dict[str, Any]] = {}


def _fields(row: sqlite3.Row, config: dict) -> dict[str, Any]:
    """A run's config fields as dotted keys, method parameters left at their default included."""
    h = row["hash"]
    flat = _FLAT.get(h)
    if flat is None:
        flat = _flatten(config)
        method = config.get("method")
        if isinstance(method, dict):
            for k, v in _defaults(method).items():
                flat.setdefault(k, v)
        if len(_FLAT) > 200_000:
            _FLAT.clear()
        _FLAT[h] = flat
    return flat


def field_value(config: dict, key: str) -> Any:
    """The value of the config field ``key`` (dotted) in a run's config; a method parameter the run
    left at its default (stored configs leave defaults out) has its default value."""
    got = get_path(config, key)
    if got is None and key.startswith("method.") and isinstance(config.get("method"), dict):
        got = _defaults(config["method"]).get(key)
    return got


def _hashable(v: Any) -> Any:
    """A field value as a dictionary key and a JSON value: lists and mappings as their JSON text."""
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _order(values: Sequence[Any]) -> list[Any]:
    """Distinct values in order: numbers by value, then texts, then None."""
    distinct = list(dict.fromkeys(values))
    nums = sorted(v for v in distinct if _is_number(v))
    rest = sorted((v for v in distinct if v is not None and not _is_number(v)), key=str)
    return nums + rest + ([None] if None in distinct else [])


def varying_fields(configs: Sequence[dict]) -> list[str]:
    """The config fields (dotted keys) whose value is not the same in every run's config (a field some
    runs lack varies; a row without a config, such as a claim whose process died before it wrote one,
    does not count). Each config is compared with the first one, descending only into the parts that
    differ (the bulk of a config is equal and compared as a whole)."""
    configs = [c for c in configs if c]
    out: set[str] = set()
    for c in configs[1:]:
        _diff(configs[0], c, "", out)
    return sorted(out)


def _diff(a: Any, b: Any, prefix: str, out: set[str]) -> None:
    if a is b or a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a.keys() | b.keys():
            _diff(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{prefix}{k}.", out)
        return
    for side in (a, b):
        if isinstance(side, dict):
            out.update(f"{prefix}{k}" for k in _flatten(side))
        elif side is not _ABSENT:
            out.add(prefix[:-1])


_ABSENT = object()
#: varying fields by the selection's run hashes (the last few selections)
_VARYING: OrderedDict[str, list[str]] = OrderedDict()


def _varying_cached(hashes: list[str], configs: Sequence[dict]) -> list[str]:
    """:func:`varying_fields` of a selection, remembered by its run hashes (configs never change)."""
    import hashlib

    key = hashlib.sha1("\0".join(hashes).encode()).hexdigest()
    with _TRACES_LOCK:
        if key in _VARYING:
            _VARYING.move_to_end(key)
            return _VARYING[key]
    fields = varying_fields(configs)
    with _TRACES_LOCK:
        _VARYING[key] = fields
        while len(_VARYING) > 64:
            _VARYING.popitem(last=False)
    return fields


def _check_field(key: str | None, configs: Sequence[dict]) -> str | None:
    """``key`` if some run's config has that field, else a one-line ValueError with close matches."""
    if not key:
        return None
    configs = [c for c in configs if c]
    if configs and all(field_value(c, key) is None for c in configs):
        names = set(_flatten(configs[0])) | set(_defaults(configs[0].get("method") or {}) if isinstance(
            configs[0].get("method"), dict) else ()) | set(varying_fields(configs))
        close = __import__("difflib").get_close_matches(key, sorted(names), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"no selected run has the config field '{key}'{hint} (a dotted key, e.g. method.stepsize_mult)")
    return key


def list_runs(path: str | Path, query: Query, group: str | None = None) -> dict[str, Any]:
    """The runs table: one entry per matching run (no trace), and the experiments, methods and
    statuses of the whole store (the choices of the filters), the config fields that vary among the
    matching runs (``fields``, the choices of a group-by) and, grouped by the config field ``group``,
    each run's ``group`` value and per value the number of runs, statuses and the mean and least final
    metric (``groups``, in order of the value)."""
    with read_store(path) as store:
        runs, configs = [], []
        for row, config, status in query.rows(store):
            configs.append(config)
            runs.append({"id": row["id"], "hash": row["hash"], "experiment": row["experiment"], "label": row["label"],
                         "method": row["method"], "seed": row["seed"], "status": status,
                         "stale": other_build(row), "rounds": row["rounds"], "final_metric": _num(row["final_metric"]),
                         "wall_time": _num(row["wall_time"]), "updated": row["updated"],
                         "checkpoint": bool(row["has_checkpoint"]), "message": row["message"]})
        choices = {col: [r[0] for r in store.conn.execute(
            f"SELECT DISTINCT {col} FROM runs WHERE {col} IS NOT NULL ORDER BY {col}").fetchall()]
            for col in ("experiment", "method")}
    out = {"runs": runs, "experiments": choices["experiment"], "methods": choices["method"],
           "statuses": list(STATUSES), "x_axes": list(X_AXES), "bands": list(BANDS), "stats": list(STATS),
           "fields": _varying_cached([r["hash"] for r in runs], configs), "group": _check_field(group, configs),
           "groups": []}
    if group:
        members: dict[Any, list[dict]] = {}
        for run, config in zip(runs, configs):
            v = field_value(config, group)
            run["group"] = _hashable(v)
            members.setdefault(run["group"], []).append(run)
        for v in _order(list(members)):
            rs = members[v]
            finals = [r["final_metric"] for r in rs if r["final_metric"] is not None]
            statuses: dict[str, int] = {}
            for r in rs:
                statuses[r["status"]] = statuses.get(r["status"], 0) + 1
            out["groups"].append({"value": v, "runs": len(rs), "ids": [r["id"] for r in rs], "statuses": statuses,
                                  "final_metric_mean": float(np.mean(finals)) if finals else None,
                                  "final_metric_min": float(np.min(finals)) if finals else None})
    return out


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
    rows = query.rows(store, with_trace=True)
    traces = _traces(store, [row for row, _, _ in rows])
    return [(config, t) for (_, config, _), t in zip(rows, traces) if t is not None]


def _check_metric(runs: list[tuple[dict, Any]], x: str | None, y: str | None) -> str:
    """``y``, by default the first run's metric, as ``optsim plot``; ``x`` one of :data:`X_AXES`."""
    y = y or (runs[0][1].meta.get("metric", "f_gap") if runs else "f_gap")
    if x is not None and x not in X_AXES:
        raise ValueError(f"unknown x axis '{x}': use one of {', '.join(X_AXES)}")
    if y in X_AXES or y == "round":
        raise ValueError(f"y must be a metric column (e.g. f_gap, grad_norm_sq, dist_sq, loss), not '{y}'")
    if runs and all(y not in t.rows for _, t in runs):
        names = sorted({c for _, t in runs for c in t.rows} - {"round", *X_AXES})
        raise ValueError(f"no selected run logged '{y}': choose y among {', '.join(names)}")
    return y


def _group_label(key: str, value: Any) -> str:
    short = key[len("method."):] if key.startswith("method.") and key != "method.name" else key
    if value is None:
        return f"{short}=none"
    return f"{short}={value:g}" if isinstance(value, float) else f"{short}={_hashable(value)}"


def _curves(runs: list[tuple[dict, Any]], x: str, y: str | None, best: bool, group: str | None = None):
    """(y, curves): the seeds of otherwise identical configs form a curve
    (:func:`~optsim.experiment.report.group_curves`) whose family (hue; ``best``: the best curve of
    each) is its method, or with ``group`` the value of that config field."""
    y = _check_metric(runs, x, y)
    curves = group_curves(runs)
    if group:
        _check_field(group, [c for c, _ in runs])
        config_of = {id(t): c for c, t in runs}
        curves = [Curve(c.label, _group_label(group, field_value(config_of[id(c.traces[0])], group)), c.traces)
                  for c in curves]
    if best:
        curves = best_curves(curves, y, per_family=True)
    return y, [c for c in curves if any(len(t) for t in c.traces)]


def plot_curves_data(path: str | Path, query: Query, x: str = "rounds", y: str | None = None,
                     max_points: int = 1000, best: bool = False, band: str = "minmax",
                     group: str | None = None) -> dict[str, Any]:
    """The curves of a plot: per curve (the seeds of one otherwise identical config) the mean of ``y``
    against ``x`` and its band over seeds (``band``: min-max or mean +- standard error), exactly as
    :func:`optsim.plots.draw_curves` draws them (points a log axis cannot show are None), at most
    ``max_points`` points each; ``family`` is the method, or ``key=value`` of the config field ``group``."""
    check_band(band)
    with read_store(path) as store:
        runs = _runs(store, query)
    y, curves = _curves(runs, x, y, best, group)
    out = []
    for c in curves:
        if any(y not in t.rows for t in c.traces):  # an extra metric some seeds did not log
            continue
        s = series(c, x, y, band)
        idx = downsample_index(len(s.x), max_points)
        mean = np.where(s.keep, s.mean, np.nan)
        lo, hi = np.where(s.band, s.lo, np.nan), np.where(s.band, s.hi, np.nan)
        out.append({"label": s.legend, "family": c.family, "seeds": len(s.traces),
                    "statuses": sorted({t.status for t in s.traces}), "length": len(s.x),
                    "x": _floats(s.x[idx]), "mean": _floats(mean[idx]),
                    "lo": _floats(lo[idx]) if len(s.traces) > 1 else None,
                    "hi": _floats(hi[idx]) if len(s.traces) > 1 else None})
    return {"x": x, "y": y, "xlabel": LABELS.get(x, x), "ylabel": _PLAIN.get(y, LABELS.get(y, y)), "runs": len(runs),
            "band": band, "group": group or None, "curves": out}


def export_plot(path: str | Path, query: Query, x: str = "rounds", y: str | None = None, fmt: str = "png",
                best: bool = False, title: str | None = None, band: str = "minmax",
                group: str | None = None) -> tuple[bytes, str]:
    """The current plot as a file: PNG or PDF drawn by :func:`optsim.plots.plot_curves` (the figure of
    ``optsim plot --x X --y Y``, titled with the experiment as it is; the curves and band of the page),
    or CSV of the curves' full data (curve, family, seeds, x, mean and the band's two edges: ``min`` /
    ``max``, or ``mean-se`` / ``mean+se``; one row per point). Returns (bytes, file name)."""
    if fmt not in ("png", "pdf", "csv"):
        raise ValueError(f"unknown export format '{fmt}': use png, pdf or csv")
    check_band(band)
    with read_store(path) as store:
        runs = _runs(store, query)
    y, curves = _curves(runs, x, y, best, group)
    if not runs:
        raise ValueError("no stored runs with a trace match these filters")
    if title is None:
        title = query.experiment[0] if len(query.experiment) == 1 else ""
    name = f"plot_{(query.experiment[0] if len(query.experiment) == 1 else 'runs')}_{y}_{x}.{fmt}"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        edges = ("min", "max") if band == "minmax" else ("mean-se", "mean+se")
        w.writerow(["curve", "method" if not group else group, "seeds", x, f"{y}_mean", f"{y}_{edges[0]}",
                    f"{y}_{edges[1]}"])
        for c in curves:
            s = series(c, x, y, band)
            for i in range(len(s.x)):
                w.writerow([s.legend, c.family, len(s.traces), repr(float(s.x[i])), repr(float(s.mean[i])),
                            repr(float(s.lo[i])), repr(float(s.hi[i]))])
        return buf.getvalue().encode(), name
    with _FIGURE_LOCK, tempfile.TemporaryDirectory() as tmp:
        (f,) = plot_curves(curves, [x], y, Path(tmp) / "plot", title=title, formats=(fmt,), band=band)
        return f.read_bytes(), name


# ---- sweep view --------------------------------------------------------------------------------------------------------

def _run_value(trace: Any, y: str, stat: str) -> float:
    """One run's number: ``y`` at its last logged row (``final``) or its least finite value (``best``);
    NaN for a run that diverged or failed (as :func:`~optsim.experiment.report.best_curves` ranks
    such runs last), that did not log ``y`` or has no finite value of it."""
    if y not in trace.rows or not len(trace) or trace.status in ("diverged", "failed"):
        return math.nan
    return float(trace[y][-1]) if stat == "final" else float(trace.best(y))


def _band(values: np.ndarray, band: str) -> tuple[float | None, float | None]:
    if len(values) < 2:
        return None, None
    if band == "minmax":
        return float(values.min()), float(values.max())
    se = float(values.std(ddof=1) / math.sqrt(len(values)))
    m = float(values.mean())
    return m - se, m + se


def sweep_data(path: str | Path, query: Query, param: str, y: str | None = None, stat: str = "final",
               band: str = "minmax", group: str | None = None) -> dict[str, Any]:
    """A metric against a swept config field: each selected run with a trace gives one number (the
    final or the best value of ``y``, :data:`STATS`); runs whose configs are identical but for the seed
    form a point (mean over the seeds, and the band: min-max, or mean +- standard error with the
    sample standard deviation); points whose configs are identical but for ``param`` form a line,
    labelled by its method (or ``key=value`` of the config field ``group``) and the other fields that
    tell lines of one method apart. A point with a seed that diverged or failed (or whose number is not
    finite) has no mean and counts those seeds (``diverged``). Each line's ``best`` is its point of least
    mean. ``param`` must vary among the selected runs; runs without it (``skipped``: e.g. a compressor's
    parameter for a method without one) are left out; numbers are sorted by value (log axes), other
    values are categories."""
    if stat not in STATS:
        raise ValueError(f"unknown stat '{stat}': use final (the last logged value) or best (the least value)")
    check_band(band)
    if not param:
        raise ValueError("choose the swept config field: param=KEY (a dotted key, e.g. method.stepsize_mult)")
    with read_store(path) as store:
        selected = query.rows(store, with_trace=True)
        rows = [(row, config, t) for (row, config, _), t in zip(selected, _traces(store, [r for r, _, _ in selected]))
                if t is not None]
    flats = [_fields(row, config) for row, config, _ in rows]
    fields = varying_fields([config for _, config, _ in rows])
    y = _check_metric([(c, t) for _, c, t in rows], None, y)
    if param not in fields:
        _check_field(param, [config for _, config, _ in rows] + [{"": None}])
        raise ValueError(f"'{param}' has one value in the selected runs: choose a field that varies among them "
                         f"({', '.join(f for f in fields if f not in ('seed', 'seeds')) or 'none varies'})")
    ignore = {param, "seed", "seeds"}
    lines: dict[str, dict[str, Any]] = {}
    skipped = 0
    for (row, config, trace), flat in zip(rows, flats):
        if flat.get(param) is None:
            skipped += 1
            continue
        rest = {k: _hashable(v) for k, v in flat.items() if k not in ignore}
        line = lines.setdefault(json.dumps(rest, sort_keys=True, default=str), {
            "family": _group_label(group, flat.get(group)) if group else str(config.get("method", {}).get("name")),
            "rest": rest, "points": {}})
        v = _hashable(flat.get(param))
        line["points"].setdefault(v, []).append((row["id"], _run_value(trace, y, stat)))
    values = [v for line in lines.values() for v in line["points"]]
    categorical = not all(_is_number(v) for v in values)
    by_family: dict[str, list[dict]] = {}
    for line in lines.values():
        by_family.setdefault(line["family"], []).append(line)
    out = []
    for family, members in by_family.items():
        differ = sorted({k for m in members for k in m["rest"]
                         if len({_hashable(o["rest"].get(k)) for o in members}) > 1} - {"method.name"})
        for line in members:
            label = " ".join([family] + [_group_label(k, line["rest"].get(k)) for k in differ])
            points = []
            for v in _order(list(line["points"])):
                ids, nums = zip(*line["points"][v])
                nums = np.array(nums, dtype=np.float64)
                finite = np.isfinite(nums)
                ok = bool(finite.all())
                lo, hi = _band(nums, band) if ok else (None, None)
                points.append({"x": v, "mean": float(nums.mean()) if ok else None, "lo": lo, "hi": hi,
                               "seeds": len(nums), "diverged": int((~finite).sum()), "ids": list(ids)})
            scored = [p for p in points if p["mean"] is not None]
            best = min(scored, key=lambda p: p["mean"]) if scored else None
            out.append({"label": label, "family": family, "points": points,
                        "best": None if best is None else {k: best[k] for k in ("x", "mean", "lo", "hi", "seeds")}})
    return {"param": param, "y": y, "ylabel": _PLAIN.get(y, LABELS.get(y, y)), "stat": stat, "band": band,
            "group": group or None, "categorical": categorical, "runs": len(rows) - skipped, "skipped": skipped,
            "fields": fields, "lines": out}


# ---- recipe outcomes ---------------------------------------------------------------------------------------------------

#: the figure files the recipe view serves
FIGURE_TYPES = (".png", ".pdf", ".svg")


def recipe_outcomes(folder: str | Path) -> dict[str, Any]:
    """The outcomes ``optsim reproduce`` wrote under ``folder`` (its ``--out``): ``ID/outcome.json`` of
    each recipe run (verdict PASS / FAIL / NOT REPRODUCED, the claim, what was measured, its figures as
    paths in ``ID/``), by ID; an absent folder has none."""
    folder = Path(folder)
    out = []
    for f in sorted(folder.glob("*/outcome.json")) if folder.is_dir() else []:
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            out.append({"id": f.parent.name, "verdict": "UNREADABLE", "measured": f"{f}: {e}", "figures": []})
            continue
        figs = []
        for rel in data.get("figures", []):
            try:
                recipe_file(folder, f.parent.name, rel)
            except (KeyError, ValueError):
                continue
            figs.append({"name": rel, "url": f"/api/recipe-file/{f.parent.name}/{rel}"})
        data["id"] = f.parent.name
        data["figures"] = figs
        out.append(data)
    verdicts: dict[str, int] = {}
    for o in out:
        verdicts[o.get("verdict", "?")] = verdicts.get(o.get("verdict", "?"), 0) + 1
    return {"folder": str(folder), "recipes": out, "verdicts": verdicts}


def recipe_file(folder: str | Path, rid: str, rel: str) -> Path:
    """A figure file of recipe ``rid`` under ``folder/rid`` (nothing outside it is served)."""
    base = (Path(folder) / rid).resolve()
    if "/" in rid or rid.startswith("."):
        raise ValueError(f"no recipe '{rid}'")
    target = (base / rel).resolve()
    if base not in target.parents or target.suffix.lower() not in FIGURE_TYPES:
        raise ValueError(f"'{rel}' is not a figure of recipe {rid}")
    if not target.is_file():
        raise KeyError(f"no file {rel} in {base}")
    return target
