"""The distributed channel: the same interface as the simulated one, over torch.distributed.

Every rank runs the same method object over all ``n`` clients (same shapes, stepsizes and
random draws), but owns a contiguous slice of the client rows (:class:`Comm`); the rows it does
not own hold zeros (see :func:`optsim.distributed.shard_problem`). The channel moves only the
owned rows:

* :meth:`DistributedChannel.uplink` -- a dense message (a plain tensor, ``channel.dense`` or the
  identity compressor) is summed over the owned rows and combined with one ``all_reduce``; a
  compressed message travels in its compressed form with one ``all_gather`` of fixed-size rows
  (sparsifiers: values + int16/int32 indices; QSGD: the norm + int8 levels; natural: int16 exponents;
  sign: int8; compositions: indices + the quantizer's form of the kept values), every rank
  decodes all rows and reduces them exactly as the simulated channel does (so the aggregate is
  bit-for-bit the simulated one);
* :meth:`DistributedChannel.gather` -- one ``all_gather`` of the (encoded) rows;
* ``broadcast`` / ``send_down`` -- no data moves: every rank computed the same server state;
  the bits down are counted as in the simulation.

Gloo has no ``all_to_all``, and a fixed size per row (k for top-k) makes ``all_gather`` enough.
Ranks pad to the largest number of senders any rank owns (every rank knows the senders, so the
sizes need no exchange). The meter counts the accounting model's bits, identically on every
rank (the bits of the built-in compressors do not depend on the data; for other messages the
owned rows' bits travel with the rows); :attr:`Comm.wire_bytes` counts the bytes actually handed
to collectives, summed over ranks.

A collective that fails (a worker died) or times out raises :class:`DistributedError`.
"""
from __future__ import annotations

import math
import re
import time

import torch
import torch.distributed as dist

from ..compress import Compressor, Message
from ..compress.operators import (QSGD, Bernoulli, Compose, Identity, Natural, PermK, RandK, ScaledSign,
                                  Sign, TopK)
from ..meter import Meter
from .simulated import Channel

__all__ = ["Comm", "DistributedChannel", "DistributedError", "codec_for", "shard_bounds"]

#: ``Message.origin`` of the channel's own dense messages (bits d * float_bits, data-independent)
DENSE = ("dense",)
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


class DistributedError(RuntimeError):
    """A collective failed: a worker died, timed out, or the ranks disagreed."""


def shard_bounds(n: int, world: int) -> list[int]:
    """Contiguous, balanced slices of ``n`` client rows: rank r owns [b[r], b[r+1])."""
    return [r * n // world for r in range(world + 1)]


class _Plan:
    """Who owns which sender of a message, and where each row lands in the gathered buffer."""

    def __init__(self, comm: "Comm", clients, m: int):
        if clients is None:
            if m != comm.n:
                raise ValueError(f"distributed channel: a message of {m} rows from all {comm.n} clients; "
                                 "pass the senders (clients=...)")
            senders = torch.arange(m)
        else:
            senders = torch.as_tensor(clients).reshape(-1).cpu().long()
            if senders.shape[0] != m:
                raise ValueError(f"distributed channel: {m} message rows but {senders.shape[0]} senders")
        owner = torch.bucketize(senders, comm.inner_bounds, right=True)
        counts = torch.bincount(owner, minlength=comm.world)
        self.m, self.rows = m, int(counts.max()) if m else 0  # rows per rank in the gathered buffer
        order = torch.sort(owner, stable=True).indices
        first = torch.cumsum(counts, 0) - counts
        local = torch.empty(m, dtype=torch.long)
        local[order] = torch.arange(m) - first[owner[order]]
        src = owner * self.rows + local
        own = torch.nonzero(owner == comm.rank).flatten()
        #: row of the gathered buffer of each sender (None: the buffer is already in message order)
        self.src = None if torch.equal(src, torch.arange(m)) else src.to(comm.device)
        #: the owned senders, in message order: a slice when contiguous (full participation), else indices
        lo = int(own[0]) if own.numel() else 0
        contiguous = torch.equal(own, torch.arange(lo, lo + own.numel()))
        self.own = slice(lo, lo + own.numel()) if contiguous else own.to(comm.device)
        self.own_cpu = self.own if contiguous else own


def _cause(e: BaseException) -> str:
    """The useful part of a backend's error: 'Read error [127.0.0.1]:4242: Connection reset by peer'."""
    text = " ".join(str(e).split()) or type(e).__name__
    text = re.sub(r"\[[^\]]*\.(cc|cpp|hpp|h):\d+\]\s*", "", text)
    return text.split(". This is typically")[0][:200]


class Comm:
    """This rank's place in the process group: its slice of clients, the collectives it calls
    (with failures turned into :class:`DistributedError`) and the bytes it hands them."""

    #: set (by a signal handler) when the launcher stops the workers: the next collective fails
    stop_reason: str | None = None

    def __init__(self, n: int, device: torch.device | str = "cpu", group=None):
        self.group = group
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        self.n, self.device = int(n), torch.device(device)
        self.bounds = shard_bounds(self.n, self.world)
        self.lo, self.hi = self.bounds[self.rank], self.bounds[self.rank + 1]
        self.inner_bounds = torch.tensor(self.bounds[1:-1], dtype=torch.long)
        #: bytes handed to collectives by all ranks together: the method's messages / metrics and control
        self.wire_bytes = 0
        self.control_bytes = 0
        self.collectives = 0
        #: seconds spent inside collectives (waiting for the other ranks included)
        self.seconds = 0.0
        self._full_plan: _Plan | None = None

    def plan(self, clients, m: int) -> _Plan:
        if clients is None:
            if self._full_plan is None or self._full_plan.m != m:
                self._full_plan = _Plan(self, None, m)
            return self._full_plan
        return _Plan(self, clients, m)

    def _run(self, what: str, fn):
        if Comm.stop_reason is not None:  # the launcher is stopping this worker: fail at a safe point
            raise DistributedError(f"{what} not started on rank {self.rank}: {Comm.stop_reason}")
        self.collectives += 1
        t0 = time.perf_counter()
        try:
            return fn()
        except Exception as e:  # gloo: RuntimeError "Connection reset by peer" / "Timed out"; NCCL: DistBackendError
            raise DistributedError(f"{what} failed on rank {self.rank} of {self.world}: {_cause(e)} "
                                   "(a worker died or did not answer within the timeout)") from e
        finally:
            self.seconds += time.perf_counter() - t0

    def _count(self, t: torch.Tensor, control: bool) -> None:
        nbytes = t.numel() * t.element_size() * self.world
        if control:
            self.control_bytes += nbytes
        else:
            self.wire_bytes += nbytes

    def all_reduce(self, t: torch.Tensor, what: str = "all_reduce", control: bool = False) -> torch.Tensor:
        """Sum ``t`` over ranks, in place (every rank gets the same result)."""
        self._count(t, control)
        self._run(what, lambda: dist.all_reduce(t, group=self.group))
        return t

    def all_gather(self, t: torch.Tensor, what: str = "all_gather", control: bool = False) -> torch.Tensor:
        """(rows, ...) on each rank -> (world * rows, ...) in rank order."""
        t = t.contiguous()
        out = torch.empty((self.world * t.shape[0],) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
        self._count(t, control)
        self._run(what, lambda: _all_gather(out, t, group=self.group))
        return out

    def broadcast(self, t: torch.Tensor, src: int = 0, what: str = "broadcast") -> torch.Tensor:
        self._count(t, True)
        self._run(what, lambda: dist.broadcast(t, src=src, group=self.group))
        return t


# ---- compact encodings of compressed rows ----------------------------------------------------------
# A codec turns the owned rows of a message into a few fixed-width tensors (one row per sender) and
# back. The choice depends only on the compressor (never on the data), so every rank agrees on the
# row layout. Decoding reproduces the compressor's values bit for bit (checked on every send).

class _Payload:
    """Encoding of a block of values (r, c)."""

    def encode(self, V: torch.Tensor, X: torch.Tensor | None) -> list[torch.Tensor]:
        return [V]

    def decode(self, parts: list[torch.Tensor], dtype) -> torch.Tensor:
        return parts[0].to(dtype)

    nparts = 1


class _Float(_Payload):
    name = "float"


class _SignCodes(_Payload):
    name = "int8 signs"

    def encode(self, V, X):
        return [V.to(torch.int8)]


class _ScaledSignCodes(_Payload):
    name = "scale + int8 signs"
    nparts = 2

    def encode(self, V, X):
        return [V.abs().amax(1, keepdim=True), torch.sign(V).to(torch.int8)]

    def decode(self, parts, dtype):
        return parts[0].to(dtype) * parts[1].to(dtype)


class _NaturalCodes(_Payload):
    """sign * (binary exponent + bias) as int16: the values are signed powers of two."""

    name = "int16 exponents"
    _BIAS = 1100  # frexp exponents of float64 lie in [-1073, 1024]

    def encode(self, V, X):
        _, e = torch.frexp(V.abs())
        code = torch.sign(V).to(torch.int32) * (e.to(torch.int32) + self._BIAS)
        return [code.to(torch.int16)]

    def decode(self, parts, dtype):
        c = parts[0].to(torch.int32)
        mag = torch.ldexp(torch.ones(c.shape, dtype=dtype, device=c.device), (c.abs() - self._BIAS - 1).to(dtype))
        return torch.where(c == 0, torch.zeros_like(mag), torch.sign(c).to(dtype) * mag)


class _QSGDCodes(_Payload):
    """The row norm and the signed levels sign * xi in [-s, s] (int8 up to s = 127)."""

    name = "norm + int levels"
    nparts = 2

    def __init__(self, s: int):
        self.s = s
        self.itype = torch.int8 if s <= 127 else torch.int16 if s <= 32767 else torch.int32

    def encode(self, V, X):
        norm = X.norm(dim=1, keepdim=True)  # the compressor's own computation, hence the same bits
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        levels = torch.where(norm > 0, torch.round(V * self.s / safe), torch.zeros_like(V))
        return [norm, levels.to(self.itype)]

    def decode(self, parts, dtype):
        return parts[0].to(dtype) * parts[1].to(dtype) / self.s


class Codec:
    """How one message's rows travel. ``dense`` codecs with float payloads are summed with
    ``all_reduce``; the others are gathered. ``static_bits``: the meter's bits of every row are
    known on every rank (no need to send them)."""

    def __init__(self, payload: _Payload, k: int | None = None, static_bits: bool = True, d: int = 0):
        self.payload, self.k, self.static_bits = payload, k, static_bits
        self.itype = torch.int16 if d <= 2**15 else torch.int32  # coordinate indices

    @property
    def summable(self) -> bool:
        return self.k is None and isinstance(self.payload, _Float)

    def describe(self) -> str:
        return self.payload.name if self.k is None else f"{self.k} {str(self.itype)[6:]} indices + {self.payload.name}"

    def encode(self, V: torch.Tensor, X: torch.Tensor | None) -> list[torch.Tensor]:
        if self.k is None:
            return self.payload.encode(V, X)
        idx = V.abs().topk(self.k, dim=1, sorted=False).indices  # the support (all nonzeros)
        return self.payload.encode(V.gather(1, idx), None) + [idx.to(self.itype)]

    def decode(self, parts: list[torch.Tensor], d: int, dtype) -> torch.Tensor:
        if self.k is None:
            return self.payload.decode(parts, dtype)
        vals = self.payload.decode(parts[:-1], dtype)
        idx = parts[-1].long()
        return torch.zeros(idx.shape[0], d, dtype=dtype, device=idx.device).scatter_(1, idx, vals)


_STATIC = (Identity, RandK, TopK, PermK, Natural, QSGD, Sign, ScaledSign)
_QUANTIZERS = {Identity: _Float, Sign: _SignCodes, ScaledSign: _ScaledSignCodes, Natural: _NaturalCodes}


def _static_bits(c: Compressor) -> bool:
    if type(c) in _STATIC:
        return True
    if type(c) is Bernoulli:
        return _static_bits(c.inner)
    if type(c) is Compose:
        return _static_bits(c.inner) and _static_bits(c.outer)
    return False


def _support(c: Compressor) -> int | None:
    """Largest number of nonzeros of a row of ``c``'s output when it is a (composed) sparsifier."""
    if type(c) in (RandK, TopK, PermK):
        return c.support
    if type(c) is Compose:
        return c.inner.support
    if type(c) is Bernoulli:
        return _support(c.inner)
    return None


def codec_for(msg: Message) -> Codec:
    """The compact form of ``msg`` on the wire, chosen from the compressor that made it."""
    origin = msg.origin
    if origin is None:  # a message a method built itself: dense floats, its bits travel with the rows
        return Codec(_Float(), static_bits=False)
    if origin is DENSE:
        return Codec(_Float())
    c = origin[0]
    static = _static_bits(c)
    d = msg.values.shape[1]
    k = _support(c)
    if k is not None and k < d:
        payload = _Float()
        if type(c) is Compose and type(c.outer) in _QUANTIZERS:  # the quantizer's form of the kept values
            payload = _QUANTIZERS[type(c.outer)]()
        return Codec(payload, k, static, d)
    if type(c) in _QUANTIZERS:
        return Codec(_QUANTIZERS[type(c)](), static_bits=static)
    if type(c) is QSGD:
        return Codec(_QSGDCodes(c.s), static_bits=static)
    return Codec(_Float(), static_bits=static)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality on finite rows (rows with NaN/inf are garbage in a diverging run anyway)."""
    if torch.equal(a, b):
        return True
    fin = torch.isfinite(b).all(1)
    return bool(torch.equal(a[fin], b[fin]))


def _width(p: torch.Tensor) -> int:
    """Bytes of one row of part ``p``."""
    return math.prod(p.shape[1:]) * p.element_size()


def _to_bytes(parts: list[torch.Tensor], rows: int) -> torch.Tensor:
    return torch.cat([p.reshape(rows, math.prod(p.shape[1:])).contiguous().view(torch.uint8) for p in parts], dim=1)


class DistributedChannel(Channel):
    """:class:`~optsim.channel.simulated.Channel` over torch.distributed (see the module docstring).
    ``compact=False`` sends compressed messages as dense float rows (for comparison)."""

    def __init__(self, meter: Meter, d: int, float_bits: int = 32, *, comm: Comm, compact: bool = True):
        super().__init__(meter, d, float_bits)
        self.comm, self.compact = comm, bool(compact)
        #: how the latest messages travelled, for the trace's metadata
        self.formats: dict[str, int] = {}

    def dense(self, X: torch.Tensor) -> Message:
        msg = super().dense(X)
        msg.origin = DENSE
        return msg

    def _codec(self, msg: Message) -> Codec:
        codec = codec_for(msg)
        if not self.compact and not codec.summable:
            codec = Codec(_Float(), static_bits=codec.static_bits)
        return codec

    def _exchange(self, msg: Message, plan: _Plan, codec: Codec) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All senders' rows on every rank (m, d), in message order, and their bits when not static."""
        V = msg.values
        own = plan.own
        Vo = V[own]
        X = msg.origin[1][own] if isinstance(msg.origin, tuple) and len(msg.origin) == 2 else None
        parts = codec.encode(Vo, X)
        if not _same(codec.decode(parts, V.shape[1], V.dtype), Vo):
            name = msg.origin[0].describe() if X is not None else "message"
            raise DistributedError(f"the compact encoding of {name} did not reproduce its values (was the "
                                   "compressor's input modified in place before the channel sent it?)")
        if not codec.static_bits:
            parts = parts + [msg.bits[plan.own_cpu].to(V.device, torch.float64).reshape(-1, 1)]
        row = _to_bytes(parts, Vo.shape[0])
        buf = torch.zeros(plan.rows, row.shape[1], dtype=torch.uint8, device=V.device)
        buf[: row.shape[0]] = row
        got = self.comm.all_gather(buf, what=f"uplink ({codec.describe()})")
        got = got[: plan.m] if plan.src is None else got[plan.src]
        # split the bytes back into typed parts (same layout on every rank)
        out, at = [], 0
        for p in parts:
            width = _width(p)
            out.append(got[:, at:at + width].contiguous().view(p.dtype).reshape((plan.m,) + tuple(p.shape[1:])))
            at += width
        bits = None
        if not codec.static_bits:
            bits = out.pop().reshape(-1).cpu()
        self.formats[codec.describe()] = self.formats.get(codec.describe(), 0) + 1
        return codec.decode(out, V.shape[1], V.dtype), bits

    def uplink(self, msg: Message | torch.Tensor, clients=None, weights: torch.Tensor | float | None = None) -> torch.Tensor:
        msg = self._as_message(msg)
        V = msg.values
        m = V.shape[0]
        codec = self._codec(msg)
        if m == 0:
            self.meter.add_up(clients, msg.bits)
            return torch.zeros(self.d, dtype=V.dtype, device=V.device)
        plan = self.comm.plan(clients, m)
        if codec.summable and codec.static_bits:  # dense: sum the owned rows, one all_reduce
            self.meter.add_up(clients, msg.bits)
            Vo = V[plan.own]
            if weights is None:
                part = Vo.sum(0)
            elif isinstance(weights, float):
                part = Vo.sum(0).mul_(weights)
            else:
                w = torch.as_tensor(weights, dtype=V.dtype, device=V.device)[plan.own]
                part = (w.reshape(-1, 1) * Vo).sum(0)
            total = self.comm.all_reduce(part.contiguous(), what="uplink (dense all_reduce)")
            self.formats["dense all_reduce"] = self.formats.get("dense all_reduce", 0) + 1
            return total / m if weights is None else total
        full, bits = self._exchange(msg, plan, codec)
        self.meter.add_up(clients, msg.bits if bits is None else bits)
        if weights is None:  # exactly the simulated channel's reduction, on the same (m, d) rows
            return full.mean(0)
        if isinstance(weights, float):
            return full.sum(0).mul_(weights)
        w = torch.as_tensor(weights, dtype=V.dtype, device=V.device)
        return (w.reshape(-1, 1) * full).sum(0)

    def gather(self, msg: Message | torch.Tensor, clients=None) -> torch.Tensor:
        msg = self._as_message(msg)
        m = msg.values.shape[0]
        if m == 0:
            self.meter.add_up(clients, msg.bits)
            return msg.values
        codec = self._codec(msg)
        full, bits = self._exchange(msg, self.comm.plan(clients, m), codec)
        self.meter.add_up(clients, msg.bits if bits is None else bits)
        return full
