"""The simulated channel: all clients live in this process as rows of a tensor.

Every cross-client interaction of a method goes through it, so the bits are counted here
(in the run's :class:`~optsim.meter.Meter`) and nowhere else:

* :meth:`uplink` -- clients' messages aggregated at the server (a weighted sum, the mean by
  default); each sender is charged its message's bits up;
* :meth:`gather` -- clients' messages delivered individually to the server (for methods whose
  server needs each one); :meth:`receive` -- the same as a robust server sees them (Byzantine
  rows replaced by their attack) and :meth:`aggregate` -- its (robust) aggregate of vectors it holds;
* :meth:`broadcast` -- one server message to (a subset of) clients, each receiver charged its
  bits down; :meth:`send_down` -- a different message to each client.

Under a Byzantine threat model (``threat``) the Byzantine senders' rows of what the server receives
for aggregation (``uplink``, ``receive``) are replaced by their attack's; they are charged bits
like the others. In a private run (``privacy``) every ``uplink`` is a release of the Gaussian
mechanism: each sender's row bounded (clipped or normalized), noise added by the clients or the
server, the release counted by the run's accountant (:mod:`optsim.privacy.mechanisms`).

A plain tensor is a dense message of ``d * float_bits`` bits per row. Messages of other shapes
get their bits here too, never in a method: :meth:`dense` (any row length) and :meth:`sparse`
(rows with a known number of nonzero values, with or without their indices).

A channel built with ``replicas=R`` carries R runs in lock-step (a replica-stacked batched run,
:mod:`optsim.experiment.batched`): every tensor has a leading dimension R, each replica's
traffic is identical in size, and the meter counts one replica's bits.
"""
from __future__ import annotations

import torch

from ..compress import Message
from ..compress.base import index_bits
from ..meter import Meter, bits_each, constant_bits

__all__ = ["Channel"]


class Channel:
    def __init__(self, meter: Meter, d: int, float_bits: int = 32, replicas: int = 0):
        self.meter, self.d, self.float_bits = meter, int(d), int(float_bits)
        #: 0: one run; R > 0: R replica-stacked runs (see the module docstring)
        self.replicas = int(replicas)
        #: the run's Byzantine threat model (:class:`optsim.robust.Threat`; None: every client is honest)
        self.threat = None
        #: the run's differential-privacy mechanism (:class:`optsim.privacy.Privatizer`; None: not private)
        self.privacy = None

    def float_bits_of(self, count: int | None = None) -> float:
        """Bits of ``count`` uncompressed floats (default d: one model), e.g. for a link's timing."""
        return float((self.d if count is None else count) * self.float_bits)

    def dense(self, X: torch.Tensor) -> Message:
        """``X`` (m, d) sent uncompressed: d floats per row. Rows of another length D (e.g. packed
        Hessians, a scalar) are passed as a 2-d ``X`` (m, D): D floats per row."""
        if X.ndim == 2 and X.shape[1] != self.d:
            return Message(X, torch.full((X.shape[0],), float(X.shape[1] * self.float_bits), dtype=torch.float64))
        X = X.reshape(self.replicas, -1, self.d) if self.replicas else X.reshape(-1, self.d)
        return Message(X, constant_bits(X.shape[-2], self.d * self.float_bits))

    def sparse(self, X: torch.Tensor, nnz, indexed: bool = True) -> Message:
        """Rows of ``X`` (m, D) of which only ``nnz`` values are sent (a number, or (m,) counts): each
        value costs ``float_bits``, plus ceil(log2 D) bits for its index when ``indexed`` (a support the
        receiver does not know). The sparsifiers' rule (:mod:`optsim.compress`) for supports a
        method chooses itself (shared random masks, owned blocks, patterns)."""
        per = float(self.float_bits + (index_bits(X.shape[-1]) if indexed else 0))
        if isinstance(nnz, (int, float)):
            return Message(X, constant_bits(X.shape[-2], float(nnz) * per))
        return Message(X, torch.as_tensor(nnz, dtype=torch.float64).cpu() * per)

    def _as_message(self, msg) -> Message:
        return msg if isinstance(msg, Message) else self.dense(msg)

    def uplink(self, msg: Message | torch.Tensor, clients=None, weights: torch.Tensor | float | None = None) -> torch.Tensor:
        """Aggregate the senders' messages at the server: sum_j weights_j * values_j
        (the mean over senders when ``weights`` is None; a float: every sender's weight). ``clients``
        (default all) are the senders, one per row of the message."""
        msg = self._as_message(msg)
        self.meter.add_up(clients, msg.bits)
        V = msg.values if self.threat is None else self.threat.apply(msg.values, clients)
        if self.privacy is not None:
            m = V.shape[-2]
            w = (torch.full((m,), 1.0 / max(m, 1), dtype=V.dtype, device=V.device) if weights is None
                 else torch.full((m,), float(weights), dtype=V.dtype, device=V.device) if isinstance(weights, float)
                 else torch.as_tensor(weights, dtype=V.dtype, device=V.device))
            return self.privacy.release(V, w)
        if weights is None:
            return V.mean(-2) if V.shape[-2] else V.new_zeros(*V.shape[:-2], self.d)
        if isinstance(weights, float):
            return V.sum(-2).mul_(weights)
        w = torch.as_tensor(weights, dtype=V.dtype, device=V.device)
        return (w.reshape(-1, 1) * V).sum(-2)

    def receive(self, msg: Message | torch.Tensor, clients=None, context: dict | None = None,
                base: torch.Tensor | None = None) -> torch.Tensor:
        """Deliver each sender's message to the server like :meth:`gather`, plus ``base`` when given
        (the vectors the server already holds when messages are changes of them: a (d,) estimate or
        (m, d) per-sender mirrors), the Byzantine senders' rows then replaced by the threat model's
        attack (``context``: what an omniscient attack may read, e.g. the model ``x`` and the
        initial ``x0``). What a robust server aggregates."""
        V = self.gather(msg, clients)
        if base is not None:
            V = V + base
        return V if self.threat is None else self.threat.apply(V, clients, context)

    @staticmethod
    def aggregate(V: torch.Tensor, aggregator=None, generator: torch.Generator | None = None,
                  clip: float | None = None) -> torch.Tensor:
        """The server's aggregate of vectors it holds (rows of ``V``, e.g. from :meth:`receive`):
        each clipped to norm ``clip`` when given (server-side clipping, B3), then the robust
        ``aggregator`` (:mod:`optsim.robust.aggregators`, drawing from ``generator``) or the mean.
        Nothing is counted: no message moves."""
        if clip is not None:
            norms = torch.linalg.vector_norm(V, dim=-1, keepdim=True)
            V = V * torch.where(norms > clip, clip / norms.clamp_min(1e-300), torch.ones_like(norms))
        if aggregator is None:
            return V.mean(-2)
        return aggregator(V, generator)

    def gather(self, msg: Message | torch.Tensor, clients=None) -> torch.Tensor:
        """Deliver each sender's message to the server, rows in the order of ``clients``."""
        msg = self._as_message(msg)
        self.meter.add_up(clients, msg.bits)
        return msg.values

    def broadcast(self, msg: Message | torch.Tensor, clients=None) -> torch.Tensor:
        """Send one server message (a (d,) tensor or a one-row :class:`Message`) to ``clients``
        (default all); returns the decoded (d,) vector."""
        if isinstance(msg, torch.Tensor):  # a dense vector: d floats to each receiver
            if msg.numel() != self.d * max(self.replicas, 1):
                raise ValueError("broadcast sends one message; use send_down for one message per client")
            self.meter.add_down(clients, float(self.d * self.float_bits))
            return msg.reshape(self.replicas, self.d) if self.replicas else msg.reshape(self.d)
        msg = self._as_message(msg)
        if msg.values.shape[-2] != 1:
            raise ValueError("broadcast sends one message; use send_down for one message per client")
        each = bits_each(msg.bits)
        self.meter.add_down(clients, float(msg.bits[0]) if each is None else each)
        return msg.values[..., 0, :]

    def send_down(self, msg: Message | torch.Tensor, clients=None) -> torch.Tensor:
        """Send row j of the message to client ``clients[j]``; returns the decoded rows."""
        msg = self._as_message(msg)
        self.meter.add_down(clients, msg.bits)
        return msg.values
