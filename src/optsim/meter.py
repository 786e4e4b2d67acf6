"""The one meter of a run: bits up and down, oracle calls and communication rounds, per client.

The channel adds bits, the problem adds oracle calls; a method never touches the meter.
Everything is kept per client (shape ``(n,)``, float64) both cumulatively and for the current
round, so the clock can turn a round's usage into simulated time and the trace can report
per-client means.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Meter", "RoundUsage", "ORACLES"]

#: Oracle kinds the meter counts. Amounts are in units of one *local full* oracle call of a
#: client (a minibatch of b out of m_i samples counts b / m_i).
ORACLES = ("grad", "hess", "func")


@dataclass(frozen=True)
class RoundUsage:
    """What one round used, per client: bits up/down and oracle calls."""

    bits_up: torch.Tensor
    bits_down: torch.Tensor
    oracle: dict[str, torch.Tensor]
    communicated: bool


class Meter:
    """Per-client counters of one run (cumulative and for the current round).

    The counters are rows of one (5, n) tensor (bits up, bits down, then one row per oracle kind),
    so closing a round is a few whole-tensor operations whatever the number of kinds."""

    _ROWS = ("up", "down") + ORACLES

    def __init__(self, n: int):
        self.n = int(n)
        self._total = torch.zeros(len(self._ROWS), self.n, dtype=torch.float64)
        self._round = torch.zeros_like(self._total)
        self.comm_rounds = 0

    @property
    def bits_up(self) -> torch.Tensor:
        return self._total[0]

    @property
    def bits_down(self) -> torch.Tensor:
        return self._total[1]

    @property
    def oracle(self) -> dict[str, torch.Tensor]:
        return {k: self._total[2 + j] for j, k in enumerate(ORACLES)}

    def _add(self, row: int, clients, amount) -> None:
        target = self._round[row]
        if clients is None:
            if isinstance(amount, torch.Tensor):
                target += amount if amount.dtype == torch.float64 and amount.device.type == "cpu" else amount.to("cpu", torch.float64)
            else:
                target += float(amount)
            return
        clients = torch.as_tensor(clients).cpu()
        amount = torch.as_tensor(amount, dtype=torch.float64).cpu()
        target.index_add_(0, clients, amount.expand(clients.shape[0]).contiguous())

    def add_up(self, clients, bits) -> None:
        """Bits sent client -> server by ``clients`` (``None`` = all), ``bits`` scalar or per client."""
        self._add(0, clients, bits)

    def add_down(self, clients, bits) -> None:
        """Bits sent server -> client to ``clients`` (``None`` = all)."""
        self._add(1, clients, bits)

    def add_oracle(self, kind: str, clients, amount) -> None:
        """``amount`` local full oracle calls of ``kind`` by each of ``clients``."""
        self._add(2 + ORACLES.index(kind), clients, amount)

    def close_round(self) -> RoundUsage:
        """End the current round: fold its counts into the totals and return them."""
        used = self._round.clone()
        self._total += used
        self._round.zero_()
        communicated = bool(used[:2].any())
        self.comm_rounds += int(communicated)
        return RoundUsage(used[0], used[1], {k: used[2 + j] for j, k in enumerate(ORACLES)}, communicated)

    def snapshot(self) -> dict[str, float]:
        """Cumulative per-client means, as the trace reports them."""
        up, down, grad, hess = self._total[:4].mean(1).tolist()
        return {"bits_up": up, "bits_down": down, "grad_evals": grad, "hess_evals": hess,
                "comm_rounds": float(self.comm_rounds)}
