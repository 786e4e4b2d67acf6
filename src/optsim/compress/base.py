"""The compressor interface, the message type and the registry.

A compressor is built for a dimension ``d`` (and, for correlated ones, a number of clients
``n``) and maps client rows ``X`` (m, d) to a :class:`Message`: the decoded values (m, d) the
receiver reconstructs and the exact number of bits each row costs on the wire. It exposes the
constants of the analyses:

* ``omega``: unbiased compressors, E[C(x)] = x and E||C(x) - x||^2 <= omega ||x||^2;
* ``alpha``: contractive compressors, E||C(x) - x||^2 <= (1 - alpha) ||x||^2.

Bits rule (``b`` = bits per float, 32 by default; index = ceil(log2 d) bits): every operator
documents its count in its docstring, sparsifiers include their indices.
"""
from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..meter import constant_bits
from ..specs import split_spec, unknown_name

__all__ = ["Compressor", "Message", "ReplicaMismatch", "COMPRESSORS", "register_compressor", "make_compressor",
           "check_compressor_spec", "index_bits"]

COMPRESSORS: dict[str, type["Compressor"]] = {}


def index_bits(d: int) -> int:
    """Bits of one coordinate index among d."""
    return max(1, math.ceil(math.log2(d))) if d > 1 else 0


@dataclass
class Message:
    """What a batch of senders transmits: decoded ``values`` (m, d) and ``bits`` (m,) per sender.

    In a replica-stacked run (:mod:`optsim.experiment.batched`) ``values`` carries leading replica
    dimensions (R, m, d) and ``bits`` (m,) is what each sender of every replica sends."""

    values: torch.Tensor
    bits: torch.Tensor
    #: what produced it, ``(compressor, input rows)`` (set by :meth:`Compressor.__call__`; None for
    #: plain tensors): lets a real transport (``channel/distributed.py``) send the compact form
    #: (values + indices, quantized levels) instead of dense values
    origin: tuple | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.bits.shape != self.values.shape[-2:-1]:
            raise ValueError(f"message bits must have shape ({self.values.shape[-2]},), got {tuple(self.bits.shape)}")


class ReplicaMismatch(ValueError):
    """Replica-stacked runs diverged in what they communicate (e.g. a compressor whose bits depend on
    its input): they cannot share one meter, and run one by one instead."""


class Compressor:
    """Base class. Subclasses set ``name``, compute ``omega``/``alpha`` and implement ``compress``."""

    name: ClassVar[str] = ""
    #: E[C(x)] = x
    unbiased: ClassVar[bool] = False
    #: draws random numbers (False: C(x) is a function of x alone, row by row)
    randomized: ClassVar[bool] = True

    def __init__(self, d: int, n: int = 1, float_bits: int = 32):
        if d < 1:
            raise ValueError(f"dimension must be >= 1, got {d}")
        self.d, self.n, self.float_bits = int(d), int(n), int(float_bits)

    @property
    def omega(self) -> float | None:
        """Variance constant of an unbiased compressor (None if biased)."""
        return None

    @property
    def alpha(self) -> float | None:
        """Contraction constant (None if not contractive)."""
        return None

    def compress(self, X: torch.Tensor, generator: torch.Generator | None, clients) -> tuple[torch.Tensor, torch.Tensor | float]:
        raise NotImplementedError

    def __call__(self, X: torch.Tensor, generator: torch.Generator | None = None, clients=None) -> Message:
        if X.ndim != 2 or X.shape[1] != self.d:
            raise ValueError(f"{self.name}: expected (clients, {self.d}) input, got {tuple(X.shape)}")
        values, bits = self.compress(X, generator, clients)
        if isinstance(bits, (int, float)):
            bits = constant_bits(X.shape[0], bits)
        else:
            bits = torch.as_tensor(bits, dtype=torch.float64)
            bits = (bits.expand(X.shape[0]).clone() if bits.ndim == 0 else bits).cpu()
        return Message(values, bits, origin=(self, X))

    def compress_replicas(self, X: torch.Tensor, generators: list | None, clients=None) -> Message:
        """Replica-stacked rows X (R, m, d) of R runs in lock-step, replica r drawing from
        ``generators[r]``: values (R, m, d) equal, row by row, to calling the compressor on each
        replica with its generator, and the bits (m,) every replica sends (:class:`ReplicaMismatch`
        when they differ between replicas)."""
        R, m, d = X.shape
        if self.randomized:
            values, bits = self._compress_replicas(X, generators, clients)
        else:  # a function of each row alone: all replicas' rows at once
            msg = self(X.reshape(R * m, d), None, None if clients is None else torch.as_tensor(clients).repeat(R))
            values, bits = msg.values.view(X.shape), msg.bits.view(R, m)
        if not bool((bits == bits[:1]).all()):
            raise ReplicaMismatch(f"{self.describe()} sends a different number of bits in each replica")
        return Message(values, bits[0].clone(), origin=(self, X))

    def _compress_replicas(self, X, generators, clients) -> tuple[torch.Tensor, torch.Tensor]:
        """(values (R, m, d), bits (R, m)) of a randomized compressor: replica by replica, unless a
        subclass draws every replica's numbers first and computes the rest at once."""
        msgs = [self(Xr, g, clients) for Xr, g in zip(X, generators)]
        return torch.stack([m.values for m in msgs]), torch.stack([m.bits for m in msgs])

    def mean_bits(self, rows: int, dtype=torch.float64, device="cpu") -> float:
        """Mean bits per row of one message of ``rows`` zero rows drawn with a fixed generator: the
        size of a message when its bits do not depend on the data."""
        msg = self(torch.zeros(rows, self.d, dtype=dtype, device=device), torch.Generator().manual_seed(0))
        return float(msg.bits.mean())

    @property
    def uncompressed_bits(self) -> float:
        """Bits of one uncompressed row: d floats."""
        return float(self.d * self.float_bits)

    @property
    def density(self) -> float:
        """zeta, the expected number of coordinates a message carries (MARINA, Gorbunov et al. 2021,
        Sec. 2): d for dense operators; sparsifiers and compositions override it."""
        return float(self.d)

    def dense_bits(self, dim: int) -> float:
        """Bits to send a dense ``dim``-vector in this operator's value format (quantizers)."""
        raise TypeError(f"{self.name} cannot encode the values of another compressor's support")

    def omega_for(self, dim: int) -> float | None:
        """``omega`` when applied to vectors of ``dim`` (possibly) nonzero coordinates."""
        return self.omega

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.params().items()]
        return f"{self.name}({', '.join(parts)})" if parts else self.name

    def params(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return self.describe()


def register_compressor(cls: type[Compressor]) -> type[Compressor]:
    """Class decorator adding ``cls`` to :data:`COMPRESSORS` under ``cls.name``."""
    COMPRESSORS[cls.name] = cls
    return cls


def make_compressor(spec: Any, d: int, n: int = 1, float_bits: int = 32) -> Compressor:
    """Build a compressor from a spec: a name (``"top_k"`` needs no more), a dict
    ``{"name": "rand_k", "k": 5}``, or a list ``[outer, inner]`` meaning outer(inner(x))."""
    if spec is None:
        spec = "identity"
    if isinstance(spec, Compressor):
        return spec
    if isinstance(spec, (list, tuple)):
        return make_compressor({"name": "compose", "outer": spec[0], "inner": spec[1]}, d, n, float_bits)
    name, spec = split_spec(spec, "compressor", COMPRESSORS)
    cls = COMPRESSORS[name]
    sig = inspect.signature(cls.__init__)
    allowed = [p for p in sig.parameters if p not in ("self", "d", "n", "float_bits")]
    for key in spec:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"compressor '{name}' has no parameter '{key}'{hint} (parameters: {', '.join(allowed) or 'none'})")
    missing = [p for p in allowed if sig.parameters[p].default is inspect.Parameter.empty and p not in spec]
    if missing:
        raise ValueError(f"compressor '{name}' needs {', '.join(missing)} (e.g. {{name: {name}, {missing[0]}: ...}})")
    return cls(d=d, n=n, float_bits=float_bits, **spec)


def check_compressor_spec(spec: Any) -> None:
    """Refuse a compressor spec naming an unknown compressor (close matches suggested), before any
    dimension is known (config validation); :func:`make_compressor` checks the rest."""
    if isinstance(spec, (list, tuple)):
        for s in spec:
            check_compressor_spec(s)
        return
    if spec is None or isinstance(spec, Compressor):
        return
    name = spec if isinstance(spec, str) else spec.get("name") if isinstance(spec, dict) else None
    if name not in COMPRESSORS:
        raise unknown_name("compressor", name, COMPRESSORS)