"""The trace of one run: logged rows of metrics and costs, its status and metadata."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Trace columns usable as a stopping/plot metric (y) and as an x axis.
METRICS = ("f_gap", "grad_norm_sq", "dist_sq", "loss")
#: Trace columns a figure may show on its y axis: the metrics and the columns some problems add
#: (held-out metrics of neural problems, linear systems' residual, Riemannian errors, privacy's epsilon).
PLOT_METRICS = (*METRICS, "test_loss", "test_accuracy", "test_perplexity", "residual_sq", "eig_error", "sphere_error",
                "riem_dist_sq", "min_eig", "subspace_error", "stiefel_error", "epsilon")
AXES = ("rounds", "comm_rounds", "bits_up", "bits_down", "grad_evals", "func_evals", "sim_time", "wall_time")

__all__ = ["Trace", "COLUMNS", "STATUSES", "METRICS", "PLOT_METRICS", "AXES", "safe_filename"]

#: Columns of every trace row (metrics a problem cannot give are NaN).
COLUMNS = ("round", "comm_rounds", "bits_up", "bits_down", "grad_evals", "hess_evals", "func_evals", "sim_time",
           "wall_time", "loss", "f_gap", "grad_norm_sq", "dist_sq")
STATUSES = ("running", "finished", "diverged", "failed", "interrupted")


def safe_filename(label: str) -> str:
    """A file name for a trace (or a tracker's folder) labelled ``label``."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", label).strip("_") or "run"


@dataclass
class Trace:
    label: str
    method: str
    status: str = "running"
    rows: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in COLUMNS})
    meta: dict[str, Any] = field(default_factory=dict)

    def append(self, row: dict[str, float]) -> None:
        """Add a row: the COLUMNS (NaN where missing) and any other numeric metric of the row
        (e.g. ``test_accuracy``), as an extra column padded with NaN before its first value."""
        n = len(self)
        for c in COLUMNS:
            self.rows[c].append(float(row.get(c, math.nan)))
        for c, v in row.items():
            if c not in COLUMNS and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.rows.setdefault(c, [math.nan] * n).append(float(v))
        for c, col in self.rows.items():
            if len(col) == n:
                col.append(math.nan)

    def __getitem__(self, column: str) -> np.ndarray:
        if column == "rounds":
            column = "round"
        return np.asarray(self.rows[column], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.rows["round"])

    def last(self, column: str) -> float:
        return self.rows["round" if column == "rounds" else column][-1] if len(self) else math.nan

    def best(self, column: str) -> float:
        v = self[column]
        v = v[np.isfinite(v)]
        return float(v.min()) if v.size else math.nan

    def to_dict(self) -> dict:
        return {"label": self.label, "method": self.method, "status": self.status, "meta": self.meta,
                "rows": self.rows}

    @classmethod
    def from_dict(cls, d: dict) -> "Trace":
        t = cls(d["label"], d["method"], d["status"], meta=d.get("meta", {}))
        t.rows = {c: list(d["rows"].get(c, [math.nan] * len(d["rows"]["round"]))) for c in COLUMNS}
        t.rows.update({c: list(v) for c, v in d["rows"].items() if c not in COLUMNS})  # extra metric columns
        return t

    def save(self, path: str | Path) -> None:
        """Write atomically (a crash never leaves a half-written trace)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), default=_jsonable))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
