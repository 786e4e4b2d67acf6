"""Helpers shared by the recipes: running a recipe's config, first time a trace reaches a level,
the initial gap, a stop-rule config for runs on ready-made problems, and saving a matplotlib figure
as PNG and PDF."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..experiment import parse_config

__all__ = ["run_config", "first_reach", "f0", "stop_config", "save_figure"]


def run_config(cfg_dict: dict, out: Path, problem=None, fail_on=("failed",)):
    """Run every method of a recipe's config (no progress bars, summary or figures) on ``problem``
    (built from the config by default); returns (traces by label, config, problem). Runs ending
    with a status in ``fail_on`` make it raise one error naming each with its message."""
    from ..experiment import build_problem, run

    cfg = parse_config(cfg_dict)
    problem = problem if problem is not None else build_problem(cfg)
    traces = run(cfg, out, progress=False, summary=False, plot=False, problem=problem)
    bad = [f"{t.label}: {t.status} ({t.meta.get('message', '')})" for t in traces if t.status in fail_on]
    if bad:
        raise RuntimeError("; ".join(bad))
    return {t.label: t for t in traces}, cfg, problem


def first_reach(trace, column: str, metric: str, level: float, miss: float = math.inf) -> float:
    """``column`` at the first logged row where ``metric`` <= ``level`` (``miss`` if never): the rounds,
    bits, gradient evaluations or simulated time to reach a target."""
    hit = np.flatnonzero(trace[metric] <= level)
    return float(trace[column][hit[0]]) if hit.size else miss


def f0(problem) -> float:
    """Initial gap f(0) - f*."""
    return problem.loss(torch.zeros(problem.d, dtype=problem.dtype)) - problem.f_star


def stop_config(rounds: int, tol: float | None = None, log_every: int = 1, metric: str = "auto"):
    """A parsed config for ``run_method`` on a ready-made problem: stop after ``rounds`` rounds or when
    ``metric`` <= ``tol``, log every ``log_every`` rounds."""
    stop = {"max_rounds": rounds, "metric": metric}
    if tol:
        stop["tol"] = tol
    return parse_config({"problem": {"name": "quadratic"}, "methods": ["gd"], "stop": stop, "log_every": log_every})


def save_figure(fig, path: Path, dpi: int = 130) -> list[Path]:
    """Save ``fig`` as ``path`` .png and .pdf (creating the folder), close it; the files written."""
    from ..plots import save_figure as save

    return save(fig, path, ("png", "pdf"), dpi=dpi)
