"""Building one method outside the runner, on its own meter and channel (tests that step a method by hand)."""
from __future__ import annotations

import torch

from optsim.channel import Channel
from optsim.meter import Meter
from optsim.methods import build_method


def make(problem, spec, seed=0, x0=None):
    """(method, meter): ``spec`` built on ``problem`` with a fresh meter, initialized at ``x0`` (default 0)."""
    meter = Meter(problem.n)
    problem.attach(meter)
    m = build_method(spec, problem, Channel(meter, problem.d), seed)
    m.init(torch.zeros(problem.d, dtype=torch.float64) if x0 is None else x0.clone())
    return m, meter
