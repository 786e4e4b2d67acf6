"""Running an experiment config: every method through the results store (or directly), each trace
written to ``<out>/traces/`` as soon as its run ends, trackers fed, figures drawn.

:func:`run` is what ``optsim run`` does; one run's bookkeeping is :class:`~optsim.experiment.runner.Session`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..plots import plot_config
from ..problems import Problem
from ..trace import Trace, safe_filename
from .build import build_problem
from .config import ExperimentConfig, parse_config
from .runner import run_method, validate_methods
from .store import run_stored
from .trackers import make_trackers

__all__ = ["run", "summary_line", "claim_output"]

#: config fields that do not change what a results folder holds
_COSMETIC = ("out", "plot", "trackers", "threads", "checkpoint_every")


def claim_output(out: Path, cfg: ExperimentConfig, overwrite: bool = False) -> None:
    """Make ``out`` the folder of ``cfg``'s results: it records the config it holds
    (``config.json``); a folder that holds another config's results is refused unless ``overwrite``
    (the error names the first field that differs and the fixes)."""
    data = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _COSMETIC}
    record = out / "config.json"
    if record.exists() and not overwrite:
        try:
            held = json.loads(record.read_text())
        except (OSError, ValueError):
            held = None
        if isinstance(held, dict) and held != data:
            held = _with_defaults(held)  # written by an earlier optsim: fields added since take their defaults
        if isinstance(held, dict) and held != data:
            diff = next((k for k in sorted(set(held) | set(data)) if held.get(k) != data.get(k)), "?")
            raise ValueError(f"{out} holds the results of another config (it differs in '{diff}'): give another "
                             f"folder (--out DIR, or `out:` in the config) or --force to overwrite them")
    out.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(record)


def _with_defaults(held: dict) -> dict:
    """A recorded config as the current schema reads it (new fields at their defaults); unchanged when
    the schema no longer reads it."""
    try:
        again = parse_config(held).model_dump(mode="json")
    except ValueError:
        return held
    return {k: v for k, v in again.items() if k not in _COSMETIC}


def run(cfg: ExperimentConfig, out: str | Path | None = None, progress: bool = True,
        problem: Problem | None = None, plot: bool = True, summary: bool = True, store=None,
        force: bool | str = False) -> list[Trace]:
    """Run every method of ``cfg``; each trace is written to ``out/traces/`` as soon as it ends
    (an interrupted run is saved with status ``interrupted``), then the figures are drawn.

    With a :class:`~optsim.experiment.store.ResultStore`, finished runs of the same config are
    reused (``force`` redoes them; ``force="stale"`` only those another optsim build made) and runs
    checkpoint into the store and resume from it. (``optsim run`` first checks that ``out`` holds no
    other config's results: :func:`claim_output`.)
    """
    out = Path(out or cfg.out)
    problem = problem or build_problem(cfg)
    validate_methods(cfg, problem)
    trackers = make_trackers(cfg.trackers, out, cfg.name)
    traces = []
    for spec in cfg.methods:
        trace = None
        try:
            if store is not None:
                trace = run_stored(store, problem, spec, cfg, progress=progress, force=force, trackers=trackers)
            else:
                trace = run_method(problem, spec, cfg, progress=progress, trackers=trackers)
        except KeyboardInterrupt as e:
            trace = getattr(e, "trace", None)
            raise
        finally:
            if trace is not None:
                trace.save(out / "traces" / f"{safe_filename(trace.label)}.json")
        traces.append(trace)
        if summary:
            print(summary_line(trace), file=sys.stderr)
    if plot:
        plot_config(traces, cfg, out)
    return traces


def summary_line(t: Trace) -> str:
    """The one line ``optsim run`` prints for a finished run."""
    metric = t.meta.get("metric", "f_gap")
    msg = f"  {t.label:<24} {t.status:<9} rounds={t.last('round'):.0f} {metric}={t.last(metric):.3e}"
    if t.meta.get("stored_by"):
        msg += f"  (reused from the results store, made by optsim {t.meta['stored_by']}: --redo-stale recomputes it)"
    elif t.meta.get("reused"):
        msg += "  (reused from the results store)"
    if t.meta.get("resumed_from") is not None and not t.meta.get("reused"):
        msg += f"  (resumed from round {t.meta['resumed_from']:g})"
    if t.status in ("failed", "diverged"):
        msg += f"  ({t.meta.get('message', '')})"
    return msg
