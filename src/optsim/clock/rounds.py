"""Simulated time of synchronous rounds.

A synchronous round costs, for each client that took part, its downlink time, its compute
time and its uplink time; the round ends when the slowest client is done:

    t_i = [down_i > 0](latency_down + down_i / bandwidth_down)
          + compute_i * grads_i
          + [up_i > 0](latency_up + up_i / bandwidth_up),         round time = max_i t_i

where ``grads_i`` is the number of local full gradients client i computed in the round
(from the meter) and ``compute_i`` the seconds one takes.
"""
from __future__ import annotations

import math

import torch

from ..meter import RoundUsage

__all__ = ["TimeModel", "Clock", "compute_times"]


def compute_times(spec, n: int, base: float = 1.0) -> torch.Tensor:
    """Seconds per local full gradient for each of ``n`` clients.

    ``spec`` is a number (same for all), a list of ``n`` numbers, or ``"linear"``
    (tau_i = base * i, i = 1..n) or ``"sqrt"`` (tau_i = base * sqrt(i)).
    """
    if isinstance(spec, str):
        i = torch.arange(1, n + 1, dtype=torch.float64)
        if spec == "linear":
            return base * i
        if spec == "sqrt":
            return base * i.sqrt()
        raise ValueError(f"compute time '{spec}' unknown; use a number, a list, 'linear' or 'sqrt'")
    t = torch.as_tensor(spec, dtype=torch.float64)
    if t.ndim == 0:
        t = t.expand(n).clone()
    if t.shape != (n,):
        raise ValueError(f"compute times: expected one value or {n} values, got shape {tuple(t.shape)}")
    if (t < 0).any():
        raise ValueError("compute times must be >= 0")
    return t


class TimeModel:
    """Per-client compute seconds and link latency/bandwidth (bits per second) up and down."""

    def __init__(self, compute: torch.Tensor, latency_up: float = 0.0, bandwidth_up: float = math.inf,
                 latency_down: float = 0.0, bandwidth_down: float = math.inf):
        self.compute = compute.to(torch.float64)
        self._compute = self.compute.numpy()
        self._compute_max = float(self.compute.max()) if self.compute.numel() else 0.0
        self.latency_up, self.bandwidth_up = float(latency_up), float(bandwidth_up)
        self.latency_down, self.bandwidth_down = float(latency_down), float(bandwidth_down)

    def round_time(self, usage: RoundUsage) -> float:
        """Seconds of one synchronous round that used ``usage``. When every client used the same,
        the formula runs on floats with the slowest client's compute time (its largest term)."""
        if not usage.n:
            return 0.0
        uniform = usage.per_client is None
        counter = (lambda j: usage.common[j]) if uniform else usage.counter_array
        t = (self._compute_max if uniform else self._compute) * counter(2)  # gradients
        if self.latency_up or self.bandwidth_up != math.inf:  # (free links add nothing)
            up = counter(0)
            t = t + (up > 0) * (self.latency_up + up / self.bandwidth_up)
        if self.latency_down or self.bandwidth_down != math.inf:
            down = counter(1)
            t = t + (down > 0) * (self.latency_down + down / self.bandwidth_down)
        return float(t) if uniform else float(t.max())


class Clock:
    """Owns simulated time: advanced once per closed round."""

    def __init__(self, model: TimeModel):
        self.model = model
        self.now = 0.0

    def advance(self, usage: RoundUsage) -> float:
        self.now += self.model.round_time(usage)
        return self.now
