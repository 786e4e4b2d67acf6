"""Learned shifts (DIANA; EF-BV's general form): compress the difference to a shift both ends know.

Mishchenko, Gorbunov, Takáč, Richtárik (2019), "Distributed learning with compressed gradient
differences", Algorithm 1 (DIANA), and Condat, Yi, Richtárik (2022), "EF-BV", Algorithm 1: each
client i keeps a shift h_i, the server their mean h; a round sends

    Delta_i = C_i(g_i - h_i),   estimate = h + nu (1/n) sum_i Delta_i,
    h_i += lambda Delta_i,      h += lambda (1/n) sum_i Delta_i.

When the shifts learn the clients' gradients at the solution, the compressed differences (and the
compression noise) vanish there. DIANA is nu = 1, lambda = 1/(omega + 1) with unbiased C; EF21 is
nu = lambda = 1 with contractive C.

A robust server (BR-DIANA, the baseline of Gorbunov et al. 2023, "Variance reduction is an
antidote to Byzantines") passes ``aggregate``: it forms each client's estimate h_i + Delta_i from
what it receives (a Byzantine row: whatever its attack made of it, ``channel.receive``) and
aggregates them robustly; the shifts move by the received Delta_i (nu = 1).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..compress import Message
from ..state import Stateful

__all__ = ["Shifts"]


class Shifts(Stateful):
    """The clients' shifts ``H`` (n, d) and their mean ``h`` (d,) at the server (replica-stacked:
    leading replica dimensions). Start with :meth:`zero` or :meth:`full`, then :meth:`estimate`
    each round."""

    state = ("H", "h")

    def zero(self, H: torch.Tensor) -> None:
        """h_i^0 = 0 (``H``: a zero tensor of the clients' shape, e.g. ``method.zeros_clients(x0)``)."""
        self.H = H
        self.h = H.mean(-2)

    def full(self, msg: Message, channel) -> None:
        """h_i^0 sent by the clients in ``msg`` (e.g. ``channel.dense(grad f_i(x^0))``)."""
        self.H = msg.values.clone()
        self.h = channel.uplink(msg)

    def estimate(self, G: torch.Tensor, compress: Callable[[torch.Tensor], Message], channel, lam: float,
                 nu: float = 1.0, aggregate=None, context=None) -> torch.Tensor:
        """One round (module docstring) with the clients' vectors ``G``; returns h + nu mean_i Delta_i
        (with ``aggregate``: Agg(h_i + Delta_i), nu = 1)."""
        msg = compress(G - self.H)
        if aggregate is not None:
            if nu != 1.0:
                raise ValueError("a robustly aggregated shift estimate needs nu = 1")
            V = channel.receive(msg, context=context, base=self.H)
            self.H.add_(V - self.H, alpha=lam)
            self.h = self.H.mean(-2)
            return aggregate(V)
        delta = channel.uplink(msg)
        g = torch.add(self.h, delta, alpha=nu)
        self.H.add_(msg.values, alpha=lam)
        self.h = torch.add(self.h, delta, alpha=lam)
        return g
