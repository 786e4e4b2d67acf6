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


def session_iterates(problem, spec, rounds: int, tol=None):
    """(iterates, session): ``spec`` run on ``problem`` by the runner's Session for ``rounds`` rounds
    (stopping early at f - f* <= ``tol``), with the model after every round (the first: x0)."""
    from optsim.experiment.runner import Session
    from optsim.reproduce.common import stop_config

    s = Session(problem, spec, stop_config(rounds, tol=tol, log_every=1))
    s.attach()
    s.start()
    s.end_round()
    xs = [s.method.x.clone()]
    while s.running:
        s.step()
        s.end_round()
        xs.append(s.method.x.clone())
    return xs, s
