"""The one meter of a run: bits up and down, oracle calls and communication rounds, per client.

The channel adds bits, the problem adds oracle calls; a method never touches the meter.
Everything is kept per client (float64) both cumulatively and for the current round, so the
clock can turn a round's usage into simulated time and the trace can report per-client means.

Most rounds charge every client the same amount (all clients compute a full gradient and send
a message of a fixed size); such amounts are kept as one number per counter, and a per-client
array is touched only by amounts that differ between clients (client sampling, messages whose
size depends on their content). A client's count is the sum of both parts.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Meter", "RoundUsage", "ORACLES", "constant_bits", "bits_each"]

@functools.lru_cache(maxsize=256)
def constant_bits(m: int, bits: float) -> torch.Tensor:
    """The bits (m,) of m senders sending ``bits`` each (shared: messages' bits are never written).
    The tensor carries its value as ``constant`` (see :func:`bits_each`)."""
    t = torch.full((m,), float(bits), dtype=torch.float64)
    t.constant = float(bits)
    return t


def bits_each(bits: torch.Tensor) -> float | None:
    """The number of bits every sender sends when ``bits`` is a :func:`constant_bits` tensor (known
    without reading the tensor), else None."""
    return getattr(bits, "constant", None)


#: Oracle kinds the meter counts. Amounts are in units of one *local full* oracle call of a
#: client (a minibatch of b out of m_i samples counts b / m_i).
ORACLES = ("grad", "hess", "func")

#: Counters, in the order of a usage row: bits up, bits down, then one per oracle kind.
_ROWS = ("up", "down") + ORACLES


class _Counters:
    """Per-client views of counters 0 (bits up), 1 (bits down) and 2.. (oracle kinds), as float64
    tensors of shape (n,), from :meth:`counter_array`."""

    def counter_array(self, j: int) -> np.ndarray:
        raise NotImplementedError

    def counter(self, j: int) -> torch.Tensor:
        """Counter ``j`` of every client, shape (n,)."""
        return torch.from_numpy(self.counter_array(j))

    @property
    def bits_up(self) -> torch.Tensor:
        return self.counter(0)

    @property
    def bits_down(self) -> torch.Tensor:
        return self.counter(1)

    @property
    def oracle(self) -> dict[str, torch.Tensor]:
        return {k: self.counter(2 + j) for j, k in enumerate(ORACLES)}


@dataclass(frozen=True)
class RoundUsage(_Counters):
    """What one round used, per client: ``common[j]`` of counter j (bits up, bits down, then the
    oracle kinds) by every client, plus ``per_client[j]`` (a (5, n) float64 array; None when every
    client used the same)."""

    n: int
    common: tuple[float, ...]
    per_client: np.ndarray | None
    communicated: bool

    def counter_array(self, j: int) -> np.ndarray:
        """Counter ``j`` of every client, shape (n,), as a numpy array."""
        if self.per_client is None:
            return np.full(self.n, self.common[j])
        return self.per_client[j] + self.common[j]


class Meter(_Counters):
    """Per-client counters of one run (cumulative and for the current round), each the sum of an
    amount common to all clients (a float) and a per-client part (a row of one (5, n) numpy array,
    touched only by amounts that differ between clients; numpy: a scatter-add of a few dozen
    clients costs a tenth of torch's)."""

    def __init__(self, n: int):
        self.n = int(n)
        self._total = np.zeros((len(_ROWS), self.n))
        self._round = np.zeros_like(self._total)
        self._total_common = [0.0] * len(_ROWS)
        self._round_common = [0.0] * len(_ROWS)
        self._round_per_client = False
        self._total_per_client = False
        self.comm_rounds = 0

    def __setstate__(self, state):  # meters pickled before the common part existed
        for key in ("_total", "_round"):
            if isinstance(state[key], torch.Tensor):
                state[key] = state[key].numpy()
        state.setdefault("_total_common", [0.0] * len(_ROWS))
        state.setdefault("_round_common", [0.0] * len(_ROWS))
        state.setdefault("_round_per_client", bool(state["_round"].any()))
        state.setdefault("_total_per_client", True)
        self.__dict__.update(state)

    def counter_array(self, j: int) -> np.ndarray:
        """Cumulative counter ``j`` of every client, shape (n,), as a numpy array."""
        return self._total[j] + self._total_common[j]

    def _add(self, row: int, clients, amount) -> None:
        if clients is None:
            each = amount if isinstance(amount, (int, float)) else bits_each(amount)
            if each is not None:
                self._round_common[row] += float(each)
                return
            self._round_per_client = True
            self._round[row] += _array(amount)
            return
        self._round_per_client = True
        np.add.at(self._round[row], _array(clients), amount if isinstance(amount, (int, float)) else _array(amount))

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
        common = self._round_common
        self._round_common = [0.0] * len(_ROWS)
        self._total_common = [t + c for t, c in zip(self._total_common, common)]
        communicated = common[0] > 0 or common[1] > 0
        per_client = None
        if self._round_per_client:
            per_client = self._round.copy()
            self._total += per_client
            self._total_per_client = True
            self._round[:] = 0.0
            self._round_per_client = False
            communicated = communicated or bool(per_client[:2].any())
        self.comm_rounds += int(communicated)
        return RoundUsage(self.n, tuple(common), per_client, communicated)

    def snapshot(self) -> dict[str, float]:
        """Cumulative per-client means, as the trace reports them."""
        means = self._total.mean(1).tolist() if self._total_per_client else [0.0] * len(_ROWS)
        up, down, grad, hess, func = (c + t for c, t in zip(self._total_common, means))
        return {"bits_up": up, "bits_down": down, "grad_evals": grad, "hess_evals": hess, "func_evals": func,
                "comm_rounds": float(self.comm_rounds)}


def _array(x) -> np.ndarray:
    """Client ids or amounts (a tensor on any device, a list, an array) as a CPU numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
