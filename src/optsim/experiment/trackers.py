"""Optional experiment trackers: TensorBoard and Weights & Biases (offline).

Enabled per config (``trackers: [tensorboard, wandb]``), they receive every logged trace row of
every run. Both are optional dependencies (``pip install 'optsim[trackers]'``); asking for one
that is not installed is a clear error. W&B always runs offline (``wandb sync`` uploads later).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..trace import safe_filename

__all__ = ["Tracker", "make_trackers", "TRACKERS"]

TRACKERS = ("tensorboard", "wandb")


class Tracker:
    def start(self, label: str, config: dict[str, Any]) -> None: ...

    def log(self, row: dict[str, float]) -> None: ...

    def finish(self, status: str) -> None: ...


class TensorBoardTracker(Tracker):
    """One event-file folder per run under ``out/tensorboard/<label>``; x = round."""

    def __init__(self, out: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise RuntimeError("the tensorboard tracker needs the tensorboard package: pip install 'optsim[trackers]'") from None
        self._cls, self.out, self.writer = SummaryWriter, Path(out) / "tensorboard", None

    def start(self, label, config):

        self.writer = self._cls(log_dir=str(self.out / safe_filename(label)))
        self.writer.add_text("config", f"```\n{config}\n```")

    def log(self, row):
        step = int(row["round"])
        for k, v in row.items():
            if k != "round" and isinstance(v, float) and math.isfinite(v):
                self.writer.add_scalar(k, v, step)

    def finish(self, status):
        self.writer.add_text("status", status)
        self.writer.close()


class WandbTracker(Tracker):
    """One offline W&B run per optsim run under ``out/wandb``."""

    def __init__(self, out: Path, project: str):
        try:
            import wandb
        except ImportError:
            raise RuntimeError("the wandb tracker needs the wandb package: pip install 'optsim[trackers]'") from None
        self.wandb, self.out, self.project, self.run = wandb, Path(out), project, None

    def start(self, label, config):
        self.out.mkdir(parents=True, exist_ok=True)
        self.run = self.wandb.init(project=self.project, name=label, config=config, dir=str(self.out),
                                   mode="offline", reinit="finish_previous")

    def log(self, row):
        self.run.log({k: v for k, v in row.items() if isinstance(v, float) and math.isfinite(v)},
                     step=int(row["round"]))

    def finish(self, status):
        self.run.summary["status"] = status
        self.run.finish()


def make_trackers(names: list[str], out: Path, project: str) -> list[Tracker]:
    out_list: list[Tracker] = []
    for name in names:
        if name == "tensorboard":
            out_list.append(TensorBoardTracker(out))
        elif name == "wandb":
            out_list.append(WandbTracker(out, project))
        else:
            raise ValueError(f"unknown tracker '{name}' (available: {', '.join(TRACKERS)})")
    return out_list
