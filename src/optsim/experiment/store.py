"""The results store: every run in an embedded SQLite database (WAL mode).

One row per run = one method on one problem config with one seed. The row holds the run's
full config and its hash (independent of key order), the optsim build that made it, the seed, the
status (running / finished / diverged / failed / interrupted), timings, the trace and, while
the run is unfinished, its latest checkpoint. A finished (or diverged, or failed) run with the
same hash is reused rather than recomputed (one made by another optsim build is flagged as such;
``force="stale"``, ``--redo-stale`` on the command line, recomputes those only, ``force=True``
every run); an interrupted run, or one whose worker died,
resumes from its checkpoint. Several processes may write at once: each opens its own
connection, writes in short ``BEGIN IMMEDIATE`` transactions, and a run is *claimed* by one
process at a time (a claim whose owner process is gone is taken over).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

from ..trace import Trace
from .config import ExperimentConfig, config_hash
from .runner import run_method

__all__ = ["ResultStore", "StoreReadOnly", "run_config", "run_hash", "run_stored", "default_store_path", "build_id", "mark_reused", "other_build", "redo",
           "force_mode", "DONE"]

#: statuses that are final: such a run is reused, not redone (unless forced)
DONE = ("finished", "diverged", "failed")
#: config fields that do not change a run's result (excluded from its hash)
_PRESENTATION = ("name", "out", "plot", "methods", "sweep", "checkpoint_every", "threads", "trackers")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    hash        TEXT NOT NULL UNIQUE,
    experiment  TEXT,
    label       TEXT,
    method      TEXT,
    seed        INTEGER,
    config      TEXT NOT NULL,
    version     TEXT,
    status      TEXT NOT NULL,
    owner       TEXT,
    created     REAL,
    updated     REAL,
    wall_time   REAL,
    rounds      INTEGER,
    final_metric REAL,
    message     TEXT,
    trace       TEXT,
    checkpoint  BLOB
);
CREATE INDEX IF NOT EXISTS runs_experiment ON runs(experiment);
"""


@functools.lru_cache(maxsize=1)
def build_id() -> str:
    """The optsim build: its version and a fingerprint of its source files, e.g. ``0.1.0+3f2a9c1d0b7e``.
    A stored run records the build that made it, so that a run reused after the code changed (an
    upgrade, a local edit) is reported as such instead of passing for a result of this code."""
    from .. import __version__

    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return f"{__version__}+{digest.hexdigest()[:12]}"


def other_build(row: sqlite3.Row) -> str | None:
    """The build that made a stored run when it is not this one (a stale run), else None."""
    version = row["version"]
    return None if version == build_id() else str(version)


def mark_reused(trace: Trace, row: sqlite3.Row, done: bool) -> None:
    """Mark ``trace``, read from the store's ``row``, as reused (``done``) or still running elsewhere,
    and as stale when another optsim build made it (``meta["stored_by"]``)."""
    trace.meta["reused"] = done
    if done and other_build(row) is not None:
        trace.meta["stored_by"] = other_build(row)


def redo(row: sqlite3.Row | None, force: bool | str | float) -> bool:
    """Whether a stored run is recomputed: always with ``force=True``, never with ``False``; with
    ``"stale"`` when it is final and another optsim build made it; with a time ``t`` (seconds since
    the epoch) when it was last written before ``t`` (a forced sweep resuming after a worker died:
    what it has already redone, or started to, is not redone again)."""
    if isinstance(force, bool):
        return force
    if row is None:
        return False
    if force == "stale":
        return row["status"] in DONE and other_build(row) is not None
    return row["updated"] < force


def force_mode(force: bool, redo_stale: bool) -> bool | str:
    """The ``force`` argument of the command-line flags ``--force`` and ``--redo-stale``."""
    return True if force else "stale" if redo_stale else False


def default_store_path() -> Path:
    return Path(os.environ.get("OPTSIM_RESULTS", "optsim-results")) / "runs.db"


def _canonical_component(spec: Any) -> Any:
    """A component spec in one form: names as ``{"name": ...}``, nested specs alike."""
    if isinstance(spec, str):
        return {"name": spec}
    if isinstance(spec, (list, tuple)):
        return [_canonical_component(c) for c in spec]
    if isinstance(spec, dict):
        return {k: _canonical_component(v) if k in ("inner", "outer") else v for k, v in spec.items()}
    return spec


def canonical_method(spec: dict[str, Any]) -> dict[str, Any]:
    """A method's config as it affects results: its name, the parameters that differ from their
    defaults and its components in one form (``stepsize_mult: 1.0`` and no ``stepsize_mult`` are the
    same run; the label is presentation)."""
    from ..methods.base import MethodSpec

    ms = MethodSpec.parse(spec)
    out = {"name": ms.cls.name, **ms.params.model_dump(mode="json", exclude_defaults=True)}
    out.update({k: _canonical_component(v) for k, v in ms.components.items() if v is not None})
    return out


def run_config(cfg: ExperimentConfig, spec: dict[str, Any]) -> dict[str, Any]:
    """The config of one run: the experiment's result-relevant fields plus this one method
    (:func:`canonical_method`), so that runs identical but for presentation share their identity."""
    data = cfg.model_dump(mode="json")
    for k in _PRESENTATION:
        data.pop(k, None)
    data["method"] = canonical_method(spec)
    return data


def run_hash(cfg: ExperimentConfig, spec: dict[str, Any]) -> str:
    return config_hash(run_config(cfg, spec))


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None) -> bool:
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # cannot tell for another machine: assume it is working
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


class StoreDamaged(RuntimeError):
    """The results store's file is not a healthy SQLite database (overwritten, truncated, corrupted)."""

    def __init__(self, path: Path, detail: str):
        detail = " ".join(str(detail).split())[:200]
        super().__init__(f"the results store {path} is damaged ({detail}); nothing was written to it: move it aside "
                         f"(mv {path} {path}.damaged) to start a new one, and `optsim runs export --store "
                         f"{path}.damaged --salvage` saves the runs that can still be read")


#: store files checked in this process, by path, size and modification time (a healthy file is checked
#: once per process until something else changes it)
_CHECKED: set[tuple] = set()


class StoreReadOnly(RuntimeError):
    """A write through a store opened with ``readonly=True``."""


class ResultStore:
    """A SQLite results database (created on first use). Safe to use from several processes.

    The first connection of a process to an existing file runs SQLite's ``quick_check``; a file
    that fails it (or that SQLite cannot read) raises :class:`StoreDamaged` before anything is
    written, and so does a database error later on. ``salvage=True`` opens a damaged file
    read-only, without the check, to read what can still be read (``optsim runs export --salvage``).
    ``readonly=True`` opens an existing store for reading only (a ``mode=ro`` SQLite URI: nothing is
    created, no schema or journal mode is set, no check is run; a damaged file fails at its first
    read): a write through it raises :class:`StoreReadOnly`, and SQLite itself refuses any other.
    Readers see the last committed state while other processes write (WAL).
    """

    def __init__(self, path: str | Path | None = None, *, salvage: bool = False, readonly: bool = False):
        self.path = Path(path) if path is not None else default_store_path()
        self.salvage = bool(salvage)
        self.readonly = bool(readonly)
        if not (self.salvage or self.readonly):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = None
        self._pid = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # never share a connection across fork
            self._conn = self._open()
            self._pid = os.getpid()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        if self.salvage or self.readonly:
            if self.readonly and not self.path.is_file():
                raise FileNotFoundError(f"no results store at {self.path} to open read-only: run a config with "
                                        "`optsim run` or `optsim sweep` first")
            uri = self.path.resolve().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=120, isolation_level=None)
            conn.row_factory = sqlite3.Row
            return conn
        existing = self.path.exists() and self.path.stat().st_size > 0
        key = (str(self.path.resolve()), self.path.stat().st_size, self.path.stat().st_mtime_ns) if existing else None
        conn = None
        try:
            conn = sqlite3.connect(self.path, timeout=120, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=120000")
            if existing and key not in _CHECKED:
                result = conn.execute("PRAGMA quick_check").fetchone()[0]
                if result != "ok":
                    raise StoreDamaged(self.path, result)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            if conn is not None:
                conn.close()
            raise StoreDamaged(self.path, e) from None
        except StoreDamaged:
            conn.close()
            raise
        if key is not None:
            _CHECKED.add(key)
        return conn

    def _read(self, query: str, params: tuple = ()) -> list[sqlite3.Row]:
        """Rows of a read query; a damaged file raises :class:`StoreDamaged`."""
        try:
            return self.conn.execute(query, params).fetchall()
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as e:
            raise StoreDamaged(self.path, e) from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __getstate__(self):
        return {"path": self.path, "salvage": self.salvage, "readonly": self.readonly}

    def __setstate__(self, state):
        self.__init__(state["path"], salvage=state.get("salvage", False), readonly=state.get("readonly", False))

    def _tx(self):
        return _Transaction(self)

    # ---- runs ------------------------------------------------------------------------------------
    def get(self, key: str | int) -> sqlite3.Row | None:
        """A run by id, hash or unique hash prefix."""
        if isinstance(key, int) or str(key).isdigit():
            rows = self._read("SELECT * FROM runs WHERE id = ?", (int(key),))
            return rows[0] if rows else None
        rows = self._read("SELECT * FROM runs WHERE hash LIKE ?", (f"{key}%",))
        return rows[0] if len(rows) == 1 else None

    def claim(self, h: str, cfg: ExperimentConfig, spec: dict[str, Any],
              force: bool | str | float = False) -> tuple[str, sqlite3.Row | None]:
        """Try to take run ``h``: returns ("done", row) when it is finished and reusable,
        ("busy", row) when a live process is running it, ("claimed", row or None) when this
        process now owns it (row is the previous state, possibly with a checkpoint). ``force``:
        see :func:`redo`."""
        now = time.time()
        with self._tx() as c:
            row = c.execute("SELECT * FROM runs WHERE hash = ?", (h,)).fetchone()
            force = redo(row, force)
            if row is not None and not force:
                if row["status"] in DONE:
                    return "done", row
                if row["status"] == "running" and row["owner"] != _owner() and _owner_alive(row["owner"]):
                    return "busy", row
            if row is None:
                c.execute("INSERT INTO runs (hash, experiment, label, method, seed, config, version, status, owner,"
                          " created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                          (h, cfg.name, spec.get("label", spec["name"]), spec["name"], cfg.seed,
                           json.dumps(run_config(cfg, spec), sort_keys=True), build_id(), _owner(), now, now))
            else:
                reset = ", checkpoint = NULL, trace = NULL" if force else ""
                c.execute(f"UPDATE runs SET status = 'running', owner = ?, updated = ?, experiment = ?, label = ?,"
                          f" version = ?{reset} WHERE hash = ?",
                          (_owner(), now, cfg.name, spec.get("label", spec["name"]), build_id(), h))
            return "claimed", (None if force else row)

    def save_checkpoint(self, h: str, blob: bytes, trace: Trace) -> None:
        with self._tx() as c:
            c.execute("UPDATE runs SET checkpoint = ?, trace = ?, rounds = ?, updated = ? WHERE hash = ?",
                      (blob, json.dumps(trace.to_dict(), default=str), int(trace.last("round") if len(trace) else 0),
                       time.time(), h))

    def save_result(self, h: str, trace: Trace, checkpoint: bytes | None = None) -> None:
        """Store the run's trace and status; a final status drops the checkpoint."""
        metric = trace.meta.get("metric", "f_gap")
        keep = checkpoint if trace.status not in DONE else None
        with self._tx() as c:
            c.execute("UPDATE runs SET status = ?, trace = ?, wall_time = ?, rounds = ?, final_metric = ?, message = ?,"
                      " checkpoint = COALESCE(?, CASE WHEN ? THEN NULL ELSE checkpoint END), updated = ?, owner = NULL"
                      " WHERE hash = ?",
                      (trace.status, json.dumps(trace.to_dict(), default=str), trace.meta.get("wall_time"),
                       int(trace.last("round")) if len(trace) else 0, _finite(trace.last(metric)) if len(trace) else None,
                       trace.meta.get("message"), keep, trace.status in DONE, time.time(), h))

    def end_orphan(self, h: str, trace: Trace | None, message: str) -> bool:
        """End run ``h`` as failed when its row is still "running" for an owner that is dead (with
        ``trace``, what was logged, when there is one); returns whether it did."""
        row = self.get(h)
        if row is None or row["status"] != "running" or _owner_alive(row["owner"]):
            return False
        if trace is None:
            trace = self.trace(row) or Trace(row["label"], row["method"])
        trace.status = "failed"
        trace.meta.setdefault("message", message)
        trace.meta["hash"] = h
        self.save_result(h, trace)
        return True

    def status(self, row: sqlite3.Row) -> str:
        """The row's status as a reader should see it: a "running" row whose owner process is dead
        is "orphaned" (its next run takes it over and resumes from its checkpoint)."""
        if row["status"] == "running" and not _owner_alive(row["owner"]):
            return "orphaned"
        return row["status"]

    def trace(self, row: sqlite3.Row) -> Trace | None:
        return Trace.from_dict(json.loads(row["trace"])) if row["trace"] else None

    def runs(self, **filters: Any) -> list[sqlite3.Row]:
        """Rows (without trace and checkpoint) matching column filters, e.g. experiment='quickstart'."""
        cols = "id, hash, experiment, label, method, seed, config, version, status, owner, created, updated," \
               " wall_time, rounds, final_metric, message"
        where = " AND ".join(f"{k} = ?" for k in filters)
        q = f"SELECT {cols} FROM runs" + (f" WHERE {where}" if where else "") + " ORDER BY id"
        return self._read(q, tuple(filters.values()))

    def traces(self, **filters: Any) -> Iterator[tuple[sqlite3.Row, Trace]]:
        """(row, trace) of every run with a trace; opened to salvage, the runs that can be read
        (by id, skipping what the damage made unreadable)."""
        where = " AND ".join(f"{k} = ?" for k in filters)
        if not self.salvage:
            q = "SELECT * FROM runs" + (f" WHERE {where}" if where else "") + " ORDER BY id"
            for row in self._read(q, tuple(filters.values())):
                t = self.trace(row)
                if t is not None:
                    yield row, t
            return
        ids = self._readable_ids()
        for i in ids:
            try:
                row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (i,)).fetchone()
                if row is None or any(row[k] != v for k, v in filters.items()):
                    continue
                t = self.trace(row)
            except (sqlite3.DatabaseError, ValueError):
                continue
            if t is not None:
                yield row, t

    def _readable_ids(self) -> list[int]:
        """Run ids of a store opened to salvage: from the table, or, when the damage breaks the scan,
        probed one by one (stopping after 500 ids in a row that cannot be read or do not exist)."""
        try:
            return [r[0] for r in self.conn.execute("SELECT id FROM runs ORDER BY id").fetchall()]
        except sqlite3.DatabaseError:
            pass
        ids, misses, i = [], 0, 0
        while misses < 500:
            i += 1
            try:
                found = self.conn.execute("SELECT id FROM runs WHERE rowid = ?", (i,)).fetchone() is not None
            except sqlite3.DatabaseError:
                found = False
            ids += [i] if found else []
            misses = 0 if found else misses + 1
        return ids

    def remove(self, keys: list[str | int]) -> int:
        n = 0
        with self._tx() as c:
            for key in keys:
                row = self.get(key)
                if row is not None:
                    n += c.execute("DELETE FROM runs WHERE id = ?", (row["id"],)).rowcount
        return n

    def integrity(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]


def _finite(v: float) -> float | None:
    import math

    return v if v is not None and math.isfinite(v) else None


class _Transaction:
    def __init__(self, store: ResultStore):
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        if self.store.salvage:
            raise StoreDamaged(self.store.path, "opened to salvage it: read-only")
        if self.store.readonly:
            raise StoreReadOnly(f"the results store {self.store.path} is opened read-only (readonly=True): "
                                "nothing was written; open it with ResultStore(path) to write")
        self.conn = self.store.conn
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        try:
            self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        except sqlite3.DatabaseError as e:
            raise StoreDamaged(self.store.path, e) from None
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            raise StoreDamaged(self.store.path, exc) from None
        return False


def run_stored(store: ResultStore, problem, spec: dict[str, Any], cfg: ExperimentConfig, *, progress: bool = True,
               force: bool | str = False, checkpoint_every: int | None = None, trackers: list | None = None) -> Trace:
    """Run one method through the store: reuse a finished run, resume an unfinished one,
    checkpoint while running, and store the result (also when interrupted)."""

    h = run_hash(cfg, spec)
    state, row = store.claim(h, cfg, spec, force=force)
    if state in ("done", "busy"):
        trace = store.trace(row)
        if trace is None:  # busy with no trace yet
            trace = Trace(spec.get("label", spec["name"]), spec["name"], status="running")
        mark_reused(trace, row, state == "done")
        trace.label = spec.get("label", spec["name"])
        return trace
    resume = row["checkpoint"] if row is not None and row["checkpoint"] else None
    every = checkpoint_every if checkpoint_every is not None else cfg.checkpoint_every

    def checkpoint(session):
        store.save_checkpoint(h, session.state_bytes(), session.trace)

    try:
        trace = run_method(problem, spec, cfg, progress=progress, resume=resume, checkpoint=checkpoint,
                           checkpoint_every=every, trackers=trackers)
    except KeyboardInterrupt as e:
        t = getattr(e, "trace", None)
        if t is not None:
            store.save_result(h, t)  # the checkpoint written on interrupt stays
        raise
    trace.meta["hash"] = h
    store.save_result(h, trace)
    return trace
