"""MARINA's estimate: refreshed in full with probability p, otherwise moved by compressed differences.

Gorbunov, Burlachenko, Li, Richtárik (2021), "MARINA: faster non-convex distributed learning with
compression", Algorithm 1: the server keeps an estimate g of the gradient; with one coin shared by
all clients (probability p) every client sends its new vector v_i^+ in full and g = (1/n) sum_i
v_i^+, otherwise it sends Q(v_i^+ - v_i) (unbiased Q) and g += (1/n) sum_i Q(v_i^+ - v_i). The
vectors are gradients (MARINA), minibatch estimators (VR-MARINA, PAGE's server form) or any
estimator (compressed Gluon). The coin is the method's (``Method.coin``).

Robust servers (Byz-VR-MARINA, Gorbunov, Horváth, Richtárik, Gidel 2023, Algorithm 1; -PP,
Malinovsky et al. 2024, Algorithm 1) pass ``aggregate`` (e.g. ``Method.aggregate``): the server
receives each sender's vector (Byzantine rows replaced by their attack, ``channel.receive``) and
aggregates them robustly instead of averaging. Compressed rounds then aggregate either the clients'
estimates g + Q_i (``estimates=True``, B1) or the differences Q_i themselves, g += Agg(Q_i) (B3).
"""
from __future__ import annotations

from ..compress import Message
from ..state import Stateful

__all__ = ["MarinaEstimate"]


class MarinaEstimate(Stateful):
    """The server's estimate ``g`` (module docstring)."""

    state = ("g",)

    def refresh(self, V, channel, clients=None, weights=None, aggregate=None, context=None):
        """The clients send their vectors V in full; g = their aggregate (``aggregate`` of the
        received rows when given, ``context`` for the attack)."""
        if aggregate is None:
            self.g = channel.uplink(channel.dense(V), clients=clients, weights=weights)
        else:
            self.g = aggregate(channel.receive(channel.dense(V), clients, context))
        return self.g

    def move(self, msg: Message, channel, clients=None, weights=None, aggregate=None, context=None,
             estimates: bool = False):
        """The clients send ``msg`` (their compressed differences); g += their aggregate. With
        ``aggregate``: g = Agg(g + Q_i) (``estimates``) or g += Agg(Q_i) (module docstring)."""
        if aggregate is None:
            self.g = self.g + channel.uplink(msg, clients=clients, weights=weights)
        elif estimates:
            self.g = aggregate(channel.receive(msg, clients, context, base=self.g))
        else:
            self.g = self.g + aggregate(channel.receive(msg, clients, context))
        return self.g
