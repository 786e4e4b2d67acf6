"""MARINA's estimate: refreshed in full with probability p, otherwise moved by compressed differences.

Gorbunov, Burlachenko, Li, Richtárik (2021), "MARINA: faster non-convex distributed learning with
compression", Algorithm 1: the server keeps an estimate g of the gradient; with one coin shared by
all clients (probability p) every client sends its new vector v_i^+ in full and g = (1/n) sum_i
v_i^+, otherwise it sends Q(v_i^+ - v_i) (unbiased Q) and g += (1/n) sum_i Q(v_i^+ - v_i). The
vectors are gradients (MARINA), minibatch estimators (VR-MARINA, PAGE's server form) or any
estimator (compressed Gluon). The coin is the method's (``Method.coin``).
"""
from __future__ import annotations

from ..compress import Message
from ..state import Stateful

__all__ = ["MarinaEstimate"]


class MarinaEstimate(Stateful):
    """The server's estimate ``g`` (module docstring)."""

    state = ("g",)

    def refresh(self, V, channel, clients=None, weights=None):
        """The clients send their vectors V in full; g = their aggregate."""
        self.g = channel.uplink(channel.dense(V), clients=clients, weights=weights)
        return self.g

    def move(self, msg: Message, channel, clients=None, weights=None):
        """The clients send ``msg`` (their compressed differences); g += their aggregate."""
        self.g = self.g + channel.uplink(msg, clients=clients, weights=weights)
        return self.g
