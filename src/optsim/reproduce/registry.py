"""Paper recipes: ``optsim reproduce ID`` runs a paper's experiment, draws its figure and checks
its headline claim programmatically, printing ``ID: PASS`` or ``ID: FAIL`` with the numbers.

A recipe is a function ``(out: Path, fast: bool) -> Outcome`` registered with :func:`recipe`.
``fast`` scales it to well under a minute (CI smoke runs); the full version is what the paper's
plot needs. Recipes build their configs in code with :func:`optsim.experiment.parse_config`,
run them with :func:`optsim.experiment.run` (traces and figures land under ``out``) and
compare measured numbers, never hard-coded results.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

__all__ = ["Outcome", "Recipe", "RECIPES", "PAPER_IDS", "recipe", "run_recipe", "save_outcome", "status_table"]

#: Every seed paper's ID (see PAPERS.md) with its short title.
PAPER_IDS: dict[str, str] = {
    "SYS1": "FL_PyTorch: optimization research simulator for FL",
    "C1": "EF-BV: unified error feedback and variance reduction",
    "C2": "Shifted compression framework",
    "C3": "Sharper rates for nonconvex SGD with client and data sampling",
    "C4": "Computation and communication efficient method with partial participation (DASHA-PP)",
    "C5": "Distributed Newton-type methods with compression and Bernoulli aggregation",
    "C6": "Federated random reshuffling with gradient compression",
    "C7": "Federated random reshuffling with compression and variance reduction",
    "C8": "Communication-efficient Gluon in federated learning",
    "L1": "Communication acceleration via accelerated primal-dual with inexact prox",
    "L2": "Variance reduced ProxSkip",
    "L3": "5th generation local training with client sampling (5GCS)",
    "L4": "Provably doubly accelerated federated learning (CompressedScaffnew)",
    "L5": "TAMUNA",
    "L6": "Accelerated FL with compression and importance sampling",
    "L7": "GradSkip",
    "L8": "FedShuffle",
    "L9": "Regularized (cyclic) client participation",
    "L10": "Personalized FL with communication compression (L2GD)",
    "L11": "Meta-learning with Moreau envelopes",
    "L12": "(L0,L1)-smooth FL with local steps, partial participation and reshuffling",
    "L13": "LOSCAR-SGD",
    "A1": "Demystifying pipeline parallelism: theory for PipeDream",
    "A2": "Rescaled asynchronous SGD",
    "A3": "Rennala MVR",
    "A4": "Ringmaster LMO",
    "A5": "Independent subnetwork training theory",
    "B1": "Variance reduction is an antidote to Byzantines",
    "B2": "Communication compression for Byzantine robust learning",
    "B3": "Byzantine robustness and partial participation",
    "B4": "Practical private FL beyond restrictive assumptions",
    "B5": "Certified robustness in FL",
    "M1": "Distance-aware Muon",
    "M2": "Better LMO-based momentum with second-order information",
    "M3": "Muon is provably faster with MVR",
    "M4": "Local LMO",
    "M5": "MicroAdam",
    "M6": "Adaptive learning rates for faster stochastic gradient methods",
    "M7": "RAC-LoRA",
    "M8": "MAST",
    "M9": "Progressive training via randomized coordinate descent",
    "S1": "Randomized iterative methods for linear systems",
    "S2": "Accelerated stochastic matrix inversion",
    "S3": "Primal-dual fixed point methods for ridge regression",
    "S4": "Parallel stochastic Newton",
    "S5": "High-probability bounds with unbounded variance",
    "S6": "High-probability composite and distributed optimization with heavy tails",
    "S7": "Methods for convex (L0,L1)-smooth optimization",
    "S8": "Minibatch stochastic three points",
    "S9": "Biased SGD",
    "S10": "Riemannian loopless SVRG and PAGE",
    "P1": "Improved SVGD with importance weights",
    "P2": "Mirrored SVGD under (L0,L1) smoothness",
    "P3": "FL with a sampling algorithm under isoperimetry",
    "P4": "ELF: federated Langevin with compression",
}


@dataclass
class Outcome:
    """What a recipe measured: whether the claim held, and the numbers behind it."""

    passed: bool
    measured: str
    figures: list[Path] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """PASS; NOT REPRODUCED when the claim failed and ``measured`` says so (a faithful
        implementation that does not show the paper's claim); else FAIL."""
        if self.passed:
            return "PASS"
        return "NOT REPRODUCED" if "NOT REPRODUCED" in self.measured else "FAIL"


@dataclass(frozen=True)
class Recipe:
    id: str
    claim: str
    fn: Callable[[Path, bool], Outcome]


RECIPES: dict[str, Recipe] = {}


def recipe(id: str, claim: str):
    """Register the decorated ``fn(out, fast) -> Outcome`` as the recipe ``id``."""
    def wrap(fn):
        RECIPES[id] = Recipe(id, claim, fn)
        return fn
    return wrap


def run_recipe(id: str, out: Path, fast: bool = False) -> tuple[Outcome, float]:
    """Run recipe ``id`` with results under ``out/ID``; returns its outcome and seconds taken."""
    if id not in RECIPES:
        import difflib

        close = difflib.get_close_matches(id, list(RECIPES) + list(PAPER_IDS), n=3)
        known = "not yet implemented" if id in PAPER_IDS else "unknown"
        hint = f"; did you mean {', '.join(close)}?" if close and id not in PAPER_IDS else ""
        raise ValueError(f"recipe '{id}' is {known}{hint} (see `optsim reproduce --list`)")
    t0 = time.perf_counter()
    outcome = RECIPES[id].fn(Path(out) / id, fast)
    seconds = time.perf_counter() - t0
    save_outcome(RECIPES[id], outcome, Path(out) / id, fast, seconds)
    return outcome, seconds


def save_outcome(rec: Recipe, outcome: Outcome, folder: Path, fast: bool, seconds: float) -> Path:
    """Write ``folder/outcome.json`` (replacing the last one, atomically): the recipe's ID, title and
    claim, the verdict, what was measured, the figures (paths relative to ``folder`` when inside it),
    the mode, the time taken and when; the dashboard's recipe view reads these files."""
    import json
    import os

    from ..experiment.store import build_id

    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()

    def rel(p: Path) -> str:
        p = Path(p).resolve()
        return p.relative_to(root).as_posix() if root in p.parents else str(p)

    data = {"id": rec.id, "title": PAPER_IDS.get(rec.id, ""), "claim": rec.claim, "verdict": outcome.verdict,
            "passed": bool(outcome.passed), "measured": outcome.measured,
            "figures": [rel(f) for f in outcome.figures], "fast": bool(fast), "seconds": round(seconds, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build": build_id()}
    path = folder / "outcome.json"
    tmp = path.with_name(f".outcome.{os.getpid()}.json")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return path


def status_table() -> list[tuple[str, str, str]]:
    """(ID, status, title) for every paper ID and every baseline recipe."""
    rows = [(pid, "implemented" if pid in RECIPES else "not yet", title) for pid, title in PAPER_IDS.items()]
    rows += [(rid, "implemented", r.claim) for rid, r in RECIPES.items() if rid not in PAPER_IDS]
    return rows
