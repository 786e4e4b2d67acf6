"""Three point compressors (3PC): the error-feedback and lazy-aggregation mechanisms, written once.

Richtárik, Sokolov, Fatkhullin, Gasanov, Li, Gorbunov (2022), "3PC: three point compressors for
communication-efficient distributed training and a better theory for lazy aggregation"
(arXiv 2202.00998), Definition 3.1: a (possibly random) map x -> C_{h,y}(x), parametrized by the
receiver's current estimate h and the previous input y, is a three point compressor when

    E||C_{h,y}(x) - x||^2 <= (1 - A) ||h - y||^2 + B ||x - y||^2     (0 < A <= 1, B >= 0).

A client keeps h (its last transmitted estimate, also known to the server) and y (its previous
input); each round it replaces h by C_{h,y}(x) and only the change C_{h,y}(x) - h travels.

Using a mechanism (any vectors, e.g. gradients of shape (n, d) or packed Hessians (n, d*d)):

    mech = make_three_pc("clag", compressor=make_compressor({"name": "top_k", "k": 5}, D, n), zeta=2.0)
    msg = mech(H, Y, X, generator)          # H, Y, X: (m, D) rows of the sending clients
    H += msg.values; Y = X                  # the caller keeps the per-client state
    update = channel.uplink(msg)            # bits: msg.bits per row, 0 for lazy rows

or, holding the state and talking to the channel, a :class:`Feedback`: ``fb = Feedback(mech)``,
``g = fb.start(channel.dense(X0), channel)`` in round 0, then ``g = fb.send(X, channel, compress)``
each round (EF21, the 3PC method, compressed Gluon and the Newton-3PC family use it).
Every mechanism lists valid (A, B) pairs (:meth:`ThreePC.constants`) and
:func:`three_pc_stepsize` turns them into the theorem's stepsize.
"""
from __future__ import annotations

import math
import torch

from typing import Callable

from ..compress import Compressor, Message
from ..state import Stateful

__all__ = ["ThreePC", "EF21Mechanism", "LAG", "CLAG", "MECHANISMS", "make_three_pc", "Feedback", "three_pc_stepsize"]

#: ``compress(rows (m, D), clients) -> Message``: the compression a mechanism applies
Compress = Callable[[torch.Tensor, object], Message]


def _young_pairs(alpha: float, grid: int = 400) -> list[tuple[float, float]]:
    """(1 - (1 - alpha)(1 + s), (1 - alpha)(1 + 1/s)) for s on a grid of (0, alpha/(1 - alpha)), plus
    the EF21 choice s = 1/sqrt(1 - alpha) - 1 (A = 1 - sqrt(1 - alpha), B = (1 - alpha)/(1 - sqrt(1 - alpha)))."""
    if alpha >= 1:
        return [(1.0, 0.0)]
    if alpha <= 0:
        return []
    top = alpha / (1 - alpha)
    ss = [top * (j + 1) / (grid + 1) for j in range(grid)]
    ss.append(1 / math.sqrt(1 - alpha) - 1)
    return [(1 - (1 - alpha) * (1 + s), (1 - alpha) * (1 + 1 / s)) for s in ss if (1 - alpha) * (1 + s) < 1]


def _trigger(D: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, zeta: float) -> torch.Tensor:
    """The lazy-aggregation trigger ||x - h||^2 > zeta ||x - y||^2, row-wise (D = X - H)."""
    dd = torch.linalg.vecdot(D, D)
    if zeta == 0:
        return dd > 0
    E = X - Y
    return dd > zeta * torch.linalg.vecdot(E, E)


class ThreePC:
    """A three point compressor C_{h,y}(x), batched over rows (one row per client).

    ``__call__(H, Y, X, generator, clients)`` returns a :class:`Message` whose values are the
    changes C_{h,y}(x) - h of each row and whose bits are what each row costs (0 for a row that
    sends nothing); ``apply(H, Y, X, compress, clients)`` is the same with the compression given as
    a function ``compress(rows, clients) -> Message`` (a method's own, e.g. replica-stacked).
    ``needs_previous`` tells whether Y is read (mechanisms that ignore it accept ``Y=None``).
    ``constants()`` lists valid (A, B) pairs of Definition 3.1.
    """

    name = ""
    needs_previous = False

    def __init__(self, compressor: Compressor | None = None, zeta: float = 1.0, float_bits: int = 32):
        self.compressor, self.float_bits = compressor, int(float_bits)
        if not zeta >= 0:
            raise ValueError(f"3PC trigger zeta must be >= 0, got {zeta}")
        self.zeta = float(zeta)

    def __call__(self, H: torch.Tensor, Y: torch.Tensor | None, X: torch.Tensor,
                 generator: torch.Generator | None = None, clients=None) -> Message:
        if H.shape != X.shape or H.ndim != 2 or (self.needs_previous and (Y is None or Y.shape != X.shape)):
            raise ValueError(f"{self.name}: expected H, X{', Y' if self.needs_previous else ''} of the same "
                             f"shape (m, D), got H {tuple(H.shape)}, X {tuple(X.shape)}"
                             + (f", Y {None if Y is None else tuple(Y.shape)}" if self.needs_previous else ""))
        return self.apply(H, Y, X, self.compressing(generator), clients)

    def compressing(self, generator: torch.Generator | None) -> Compress | None:
        """The mechanism's own compressor drawing from ``generator``, as a ``compress`` function."""
        c = self.compressor
        return None if c is None else (lambda V, clients: c(V, generator, clients))

    def apply(self, H, Y, X, compress: Compress | None, clients) -> Message:
        raise NotImplementedError

    def constants(self) -> list[tuple[float, float]]:
        raise NotImplementedError

    def _alpha(self) -> float:
        a = self.compressor.alpha if self.compressor is not None else 1.0
        if a is None:
            raise ValueError(f"3PC mechanism {self.name} needs a contractive compressor, got {self.compressor.describe()}")
        return float(a)

    def _dense_bits(self, rows: int, dim: int) -> torch.Tensor:
        """Bits of ``rows`` uncompressed rows of length ``dim``."""
        return torch.full((rows,), float(dim * self.float_bits), dtype=torch.float64)

    def describe(self) -> str:
        inner = self.compressor.describe() if self.compressor is not None else "identity"
        return f"{self.name}({inner}" + (f", zeta={self.zeta:g})" if self.needs_previous else ")")


class EF21Mechanism(ThreePC):
    """EF21: C_{h,y}(x) = h + C(x - h) with a contractive C (alpha); 3PC paper, Lemma for EF21:
    A = 1 - (1 - alpha)(1 + s), B = (1 - alpha)(1 + 1/s) for any s > 0 with A > 0
    (s = 1/sqrt(1 - alpha) - 1 gives EF21's theta, beta). Bernoulli aggregation (send x - h with
    probability p) is this mechanism with the unscaled ``bernoulli`` compressor (alpha = p)."""

    name = "ef21"

    def apply(self, H, Y, X, compress, clients):
        if compress is None:
            D = X - H
            return Message(D, self._dense_bits(D.shape[-2], D.shape[-1]))
        return compress(X - H, clients)

    def constants(self):
        return _young_pairs(self._alpha())


class LAG(ThreePC):
    """LAG, lazy aggregation (Chen, Giannakis, Sun, Yin 2018) as a 3PC (3PC paper, Lemma for LAG):
    C_{h,y}(x) = x if ||x - h||^2 > zeta ||x - y||^2, else h. A = 1, B = zeta. A triggered row sends
    x - h uncompressed (the ``compressor``'s dense format, d floats by default); the others send nothing."""

    name = "lag"
    needs_previous = True

    def apply(self, H, Y, X, compress, clients):
        D = X - H
        fire = _trigger(D, X, Y, self.zeta)
        values = torch.where(fire[:, None], D, torch.zeros_like(D))
        bits = self._dense_bits(D.shape[0], D.shape[1]) * fire.cpu().to(torch.float64)
        return Message(values, bits)

    def constants(self):
        return [(1.0, self.zeta)]


class CLAG(ThreePC):
    """CLAG, compressed lazy aggregation (3PC paper, Sec. 3, new): C_{h,y}(x) = h + C(x - h) if
    ||x - h||^2 > zeta ||x - y||^2, else h. A = 1 - (1 - alpha)(1 + s),
    B = max((1 - alpha)(1 + 1/s), zeta) for any s > 0 with A > 0. Only triggered rows run the
    compressor and send; zeta = 0 is EF21, the identity compressor is LAG."""

    name = "clag"
    needs_previous = True

    def apply(self, H, Y, X, compress, clients):
        D = X - H
        fire = _trigger(D, X, Y, self.zeta)
        if compress is not None and not self.compressor.randomized:
            # a row-wise deterministic compressor: compressing every row and keeping the triggered
            # ones is the same message, without gathering the triggered rows (bench/RESULTS.md);
            # the compressor's output is new, so lazy rows are zeroed in place
            msg = compress(D, clients)
            return Message(msg.values.mul_(fire.to(D.dtype)[:, None]), msg.bits * fire.cpu().to(torch.float64))
        values = torch.zeros_like(D)
        bits = torch.zeros(D.shape[0], dtype=torch.float64)
        idx = torch.nonzero(fire).flatten()
        if idx.numel():
            if compress is None:
                sub = Message(D[idx], self._dense_bits(idx.numel(), D.shape[1]))
            else:
                who = idx.cpu() if clients is None else torch.as_tensor(clients)[idx.cpu()]
                sub = compress(D[idx], who)
            values[idx] = sub.values
            bits[idx.cpu()] = sub.bits
        return Message(values, bits)

    def constants(self):
        return [(A, max(B, self.zeta)) for A, B in _young_pairs(self._alpha())]


MECHANISMS: dict[str, type[ThreePC]] = {"ef21": EF21Mechanism, "lag": LAG, "clag": CLAG}


def make_three_pc(name: str, compressor: Compressor | None = None, zeta: float = 1.0,
                  float_bits: int | None = None) -> ThreePC:
    """A mechanism by name (``ef21``, ``lag``, ``clag``). ``compressor`` acts on the rows' length
    (build it with that dimension); LAG takes none (or the identity)."""
    if name not in MECHANISMS:
        raise ValueError(f"unknown 3PC mechanism '{name}' (available: {', '.join(MECHANISMS)})")
    if name == "lag" and compressor is not None and compressor.name != "identity":
        raise ValueError(f"lag sends uncompressed vectors; use 'clag' to compress them (got {compressor.describe()})")
    if float_bits is None:
        float_bits = compressor.float_bits if compressor is not None else 32
    return MECHANISMS[name](compressor, zeta, float_bits)


def three_pc_stepsize(mechanism: ThreePC, L: float, L_tilde: float, mu: float | None = None) -> float:
    """The 3PC theorem's stepsize, maximized over the mechanism's valid (A, B) pairs: nonconvex
    (Thm. 5.5) gamma = 1 / (L + L_tilde sqrt(B / A)); PL (``mu`` given, Thm. 5.8)
    gamma = min(1 / (L + L_tilde sqrt(2 B / A)), A / (2 mu)). L is the smoothness constant of f
    (L_- in the paper) and L_tilde = sqrt(mean_i L_i^2) (L_+). Theorem numbers from our reading
    of arXiv v1; the formulas are those of EF21's Thms. 1-2 with (theta, beta) -> (A, B)."""
    best = 0.0
    for A, B in mechanism.constants():
        if A <= 0:
            continue
        if mu is None:
            g = 1.0 / (L + L_tilde * math.sqrt(B / A))
        else:
            g = min(1.0 / (L + L_tilde * math.sqrt(2 * B / A)), A / (2 * mu))
        best = max(best, g)
    if best <= 0:
        raise ValueError(f"{mechanism.describe()} has no valid (A, B) pair: set 'stepsize'")
    return best


class Feedback(Stateful):
    """A 3PC mechanism with the state it keeps (batched over clients): ``H`` the clients' current
    estimates g_i (known to the server too), ``Y`` their previous inputs (mechanisms that read them)
    and ``g`` the server's aggregate of the estimates (their mean, or the weighted sum of the uplinks).

    * :meth:`start` -- round 0: every client sends its first estimate (e.g. its gradient in full);
    * :meth:`send` -- every client (or the ``clients``) applies the mechanism to its new input X,
      sends the change of its estimate (0 bits when lazy), and the server adds the aggregated changes.

    Replica-stacked (leading replica dimension) with a method's ``compress``; ``weights`` as the
    channel's ``uplink`` (e.g. 1/n for partial participation without reweighting).

    A robust server (Byz-EF21, Rammal et al. 2024) passes ``aggregate`` (e.g. ``Method.aggregate``;
    all clients send): ``H`` is then the server's view of the estimates, the Byzantine rows being
    whatever their attack made of them (``channel.receive``), and g = aggregate(H).
    """

    state = ("H", "Y", "g")

    def __init__(self, mechanism: ThreePC):
        self.mechanism = mechanism

    def start(self, msg: Message, channel, X: torch.Tensor | None = None, aggregate=None,
              context=None) -> torch.Tensor:
        """Round 0: the clients send ``msg`` (their first estimates, e.g. ``channel.dense(G)``); ``X``
        their inputs, the previous inputs of the next round (default: the estimates). Returns g."""
        if aggregate is None:
            self.H = msg.values.clone()
            self.g = channel.uplink(msg)
        else:
            self.H = channel.receive(msg, context=context).clone()
            self.g = aggregate(self.H)
        if self.mechanism.needs_previous:
            self.Y = (self.H if X is None else X).clone()
        return self.g

    def send(self, X: torch.Tensor, channel, compress: Compress | None = None, generator=None, clients=None,
             weights=None, aggregate=None, context=None) -> torch.Tensor:
        """One round: the clients (default all; else the rows ``clients`` of X) send their changes;
        returns the server's new aggregate g. ``compress``: the compression to use (default: the
        mechanism's compressor drawing from ``generator``)."""
        mech = self.mechanism
        if compress is None:
            compress = mech.compressing(generator)
        if aggregate is not None:
            msg = mech.apply(self.H, self.Y if mech.needs_previous else None, X, compress, None)
            self.H = channel.receive(msg, context=context, base=self.H)
            if mech.needs_previous:
                self.Y = X
            self.g = aggregate(self.H)
            return self.g
        if clients is None:
            msg = mech.apply(self.H, self.Y if mech.needs_previous else None, X, compress, None)
            self.H.add_(msg.values)
            if mech.needs_previous:
                self.Y = X
            self.g = self.g + channel.uplink(msg)
            return self.g
        msg = mech.apply(self.H[..., clients, :], self.Y[..., clients, :] if mech.needs_previous else None, X,
                         compress, clients)
        self.H[..., clients, :] += msg.values
        if mech.needs_previous:
            self.Y[..., clients, :] = X
        self.g = self.g + channel.uplink(msg, clients=clients, weights=weights)
        return self.g
