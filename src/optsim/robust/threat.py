"""The threat model of a run: which clients are Byzantine and what they send.

``byzantine: {count: B, attack: NAME}`` (or ``fraction: delta``) in a config declares B Byzantine
clients (the last B by default; ``clients: first`` or an explicit list) and their attack
(:mod:`optsim.robust.attacks`). The channel applies it: whenever messages of a round are
aggregated (``uplink``) or robustly aggregated (``aggregate``), the Byzantine senders' vectors are
replaced by the attack's, which sees the honest vectors of the round. A data-level attack (label
flip) corrupts the Byzantine clients' data instead (the problem is built with their labels
flipped). Metrics are those of the honest clients' objective f = (1/G) sum_{i honest} f_i.
"""
from __future__ import annotations

from typing import Any

import torch

from .attacks import Attack, make_attack

__all__ = ["Threat"]


class Threat:
    """``byzantine`` (n,) bool mask of the Byzantine clients, their ``attack``, and the random stream of
    randomized attacks (``generator``, the run's ``attack`` component)."""

    def __init__(self, byzantine: torch.Tensor, attack: Attack, generator: torch.Generator | None = None):
        self.byzantine = torch.as_tensor(byzantine, dtype=torch.bool).cpu()
        self.attack = attack
        self.generator = generator
        self._rows: dict = {}

    @classmethod
    def from_config(cls, spec: Any, n: int) -> "Threat":
        """From ``byzantine:`` of a config (a :class:`~optsim.experiment.config.ByzantineConfig`)."""
        count = spec.count if spec.count is not None else int(round(spec.fraction * n))
        if not 0 <= count < n:
            raise ValueError(f"byzantine: {count} Byzantine clients of {n}: at least one client must be honest")
        mask = torch.zeros(n, dtype=torch.bool)
        if isinstance(spec.clients, list):
            ids = sorted(set(int(i) for i in spec.clients))
            if len(ids) != count or (ids and not 0 <= ids[0] <= ids[-1] < n):
                raise ValueError(f"byzantine.clients: {count} distinct client ids in [0, {n}) are needed, got {spec.clients}")
            mask[ids] = True
        elif spec.clients == "first":
            mask[:count] = True
        else:
            mask[n - count:] = True
        return cls(mask, make_attack(spec.attack, n, count))

    @property
    def count(self) -> int:
        return int(self.byzantine.sum())

    @property
    def honest(self) -> torch.Tensor:
        """Ids of the honest clients."""
        return torch.nonzero(~self.byzantine).flatten()

    @property
    def byzantine_ids(self) -> torch.Tensor:
        return torch.nonzero(self.byzantine).flatten()

    def apply(self, V: torch.Tensor, clients=None, context: dict | None = None) -> torch.Tensor:
        """The vectors the server receives: rows of ``V`` (one per sender in ``clients``, default all)
        with the Byzantine senders' rows replaced by the attack's."""
        if self.attack.data_level or not self.count:
            return V
        if clients is None:
            key = (V.shape[-2], V.device)
            if key not in self._rows:  # all clients send: the split is the same every round
                self._rows[key] = self._split(self.byzantine[: V.shape[-2]], V.device)
            byz, honest = self._rows[key]
        else:
            byz, honest = self._split(self.byzantine[torch.as_tensor(clients).cpu()], V.device)
        if not byz.numel():
            return V
        out = V.clone()
        out[..., byz, :] = self.attack(V[..., honest, :], V[..., byz, :], self.generator, context)
        return out

    @staticmethod
    def _split(mask: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Row positions of the Byzantine and of the honest senders, on ``device``."""
        return torch.nonzero(mask).flatten().to(device), torch.nonzero(~mask).flatten().to(device)

    def describe(self) -> str:
        return f"{self.count} Byzantine client(s), attack {self.attack.describe()}"
