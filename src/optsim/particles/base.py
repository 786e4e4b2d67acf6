"""What every particle sampler shares: particles as an (N, d) tensor, one ``step()`` per iteration,
and a run loop that logs distribution metrics into a :class:`optsim.trace.Trace`.

Particle samplers are not :class:`optsim.methods.Method` s: a Method advances one model ``x`` of a
:class:`optsim.problems.Problem` through the channel, and the runner's metrics are those of an
objective (f - f*, ||grad f||^2). Here the iterate is a whole empirical measure, the oracle is a
target's score on a batch of points, and the metrics are distances between distributions
(:mod:`optsim.targets.metrics`); nothing is communicated. So they form their own package, on the
layer of the other standalone algorithms (``optim``), over the targets of :mod:`optsim.targets`.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager

import torch

from ..targets import Target
from ..trace import Trace

__all__ = ["SMALL_FLOPS", "ParticleSampler", "intra_op_threads", "run_particles"]


class ParticleSampler:
    """Base class: ``init(X0)`` then ``step()`` moves ``self.X`` (N, d); ``stepsize`` is explicit
    (no theorem gives a computable default for these samplers: ``stepsize_source = "explicit"``)."""

    name = "particles"
    paper = ""
    stepsize_source = "explicit"

    def __init__(self, target: Target, stepsize: float):
        if not (isinstance(stepsize, (int, float)) and stepsize > 0 and math.isfinite(stepsize)):
            raise ValueError(f"{self.name}: stepsize must be a positive number, got {stepsize!r}")
        self.target = target
        self.stepsize = float(stepsize)
        self.X: torch.Tensor | None = None
        self.iteration = 0

    def init(self, X0: torch.Tensor) -> None:
        X0 = torch.as_tensor(X0, dtype=self.target.dtype)
        if X0.ndim != 2 or X0.shape[1] != self.target.d or X0.shape[0] < 2:
            raise ValueError(f"{self.name}: initial particles must be an (N, {self.target.d}) tensor with N >= 2, "
                             f"got shape {tuple(X0.shape)}")
        if not bool(self.target.contains(X0).all()):
            raise ValueError(f"{self.name}: every initial particle must lie in the target's domain")
        self.X = X0.clone()
        self.iteration = 0

    def step(self) -> None:
        raise NotImplementedError


#: below this many flops per iteration (about 4 N^2 d for SVGD) runs use one intra-op thread: for
#: small particle sets, threading costs more than it saves (the same rule as ``threads: auto``)
SMALL_FLOPS = 2e6


@contextmanager
def intra_op_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (None: unchanged), restoring the setting after."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_particles(sampler: ParticleSampler, X0: torch.Tensor, steps: int,
                  metrics: dict[str, Callable[[torch.Tensor], float]] | None = None, log_every: int = 1,
                  label: str | None = None, threads: int | str = "auto") -> Trace:
    """Run ``steps`` iterations from ``X0``, logging ``round``, ``wall_time`` (the sampler's own
    steps only) and each metric ``name: fn(X) -> float`` every ``log_every`` iterations (and at the end).
    ``threads``: intra-op threads for the run; "auto" uses 1 below :data:`SMALL_FLOPS` per iteration
    and torch's setting otherwise."""
    if steps < 0 or log_every < 1:
        raise ValueError("run_particles needs steps >= 0 and log_every >= 1")
    if threads == "auto":
        N, d = X0.shape
        threads = 1 if 4.0 * N * N * d < SMALL_FLOPS else None
    with intra_op_threads(threads):
        return iterate(sampler, X0, steps, metrics, log_every, label)


def iterate(sampler, X0: torch.Tensor, steps: int, metrics: dict | None, log_every: int, label: str | None,
            counters: Callable[[], dict] | None = None) -> Trace:
    """The run loop of every sampler (particles, Langevin chains): ``sampler.init(X0)``, then
    ``steps`` calls of ``sampler.step()``; every ``log_every`` iterations (and at the end) a row of
    ``round``, ``wall_time`` (the sampler's own steps), the ``counters()`` (e.g. a meter's
    snapshot) and each metric ``fn(sampler.X)``; status ``diverged`` at the first non-finite X."""
    metrics = metrics or {}
    trace = Trace(label=label or sampler.name, method=sampler.name)
    sampler.init(X0)
    wall = 0.0

    def log(k):
        row = {"round": k, "wall_time": wall, **(counters() if counters is not None else {})}
        row.update({name: float(fn(sampler.X)) for name, fn in metrics.items()})
        trace.append(row)

    log(0)
    for k in range(1, steps + 1):
        t0 = time.perf_counter()
        sampler.step()
        wall += time.perf_counter() - t0
        if not bool(torch.isfinite(sampler.X).all()):
            trace.status = "diverged"
            log(k)
            return trace
        if k % log_every == 0 or k == steps:
            log(k)
    trace.status = "finished"
    return trace
