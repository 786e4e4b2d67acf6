"""What the federated Langevin samplers share.

The iterate is ``C`` independent chains, an (C, d) tensor advanced as one computation (every
client's gradient at every chain is one batched oracle call, (n, C, d)), on a client-split target
``pi ∝ exp(-sum_i F_i)`` (:class:`optsim.targets.ClientTarget`). Messages go through a
:class:`optsim.channel.Channel` built with ``replicas=C``: the chains are replicas of one federated
run that communicate in lock-step, so the meter counts the bits of one chain (per client), exactly
as for an optimization method, and compressors come from :mod:`optsim.compress` by spec. A
compressed message of all chains is one compressor call over the (C * m, d) rows; its bits per
sender are the mean over chains (exact for compressors whose bit count does not depend on the data:
identity, top_k, rand_k, perm_k).

Why not a registered :class:`optsim.methods.Method`: a Method moves one model ``x`` of a
:class:`optsim.problems.Problem` and the runner's metrics are those of an objective; here the
iterate is an ensemble of chains whose metrics are distances between distributions
(:mod:`optsim.targets.metrics`), and the oracles are a target's client potentials. The run loop
:func:`run_langevin` logs the meter's columns (``bits_up``, ``bits_down``, ``grad_evals``,
``comm_rounds``) with those metrics into a :class:`optsim.trace.Trace`.

Stepsize convention: ``step`` is h in ``x <- x - h grad F(x) + sqrt(2 h) xi`` (ULA with step h).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ...channel import Channel
from ...compress import Message, make_compressor
from ...meter import Meter
from ...particles.base import SMALL_FLOPS, intra_op_threads, iterate
from ...rng import generator
from ...targets import ClientTarget
from ...trace import Trace

__all__ = ["FederatedLangevin", "run_langevin"]


class FederatedLangevin:
    """Base class: ``init(X0)`` (C, d) then ``step()``; subclasses write ``_start`` and ``_step``."""

    name = "langevin"
    paper = ""
    stepsize_source = "explicit"

    def __init__(self, target: ClientTarget, step: float, seed: int = 0, float_bits: int = 32):
        if not isinstance(target, ClientTarget):
            raise ValueError(f"{self.name}: the target must be a ClientTarget (client-split potentials F_i)")
        if not (isinstance(step, (int, float)) and step > 0 and math.isfinite(step)):
            raise ValueError(f"{self.name}: step must be a positive number, got {step!r}")
        self.target, self.h, self.seed, self.float_bits = target, float(step), int(seed), int(float_bits)
        self.n, self.d = target.n, target.d
        self.X: torch.Tensor | None = None

    def _compressor(self, spec, down: bool = False):
        return make_compressor(spec, self.d, 1 if down else self.n, self.float_bits)

    def init(self, X0: torch.Tensor) -> None:
        X0 = torch.as_tensor(X0, dtype=self.target.dtype)
        if X0.ndim != 2 or X0.shape[1] != self.d or X0.shape[0] < 1:
            raise ValueError(f"{self.name}: initial chains must be a (C, {self.d}) tensor, got shape {tuple(X0.shape)}")
        self.C = X0.shape[0]
        self.meter = Meter(self.n)
        self.channel = Channel(self.meter, self.d, self.float_bits, replicas=self.C)
        self.noise_gen = generator(self.seed, "noise")
        self.comp_gen = generator(self.seed, "compressor")
        self.down_gen = generator(self.seed, "down_compressor")
        self.method_gen = generator(self.seed, "method")
        self.X = X0.clone()
        self.iteration = 0
        self._start()
        self.meter.close_round()

    def step(self) -> None:
        self._step()
        self.iteration += 1
        self.meter.close_round()

    # helpers -----------------------------------------------------------------------------------
    def client_grads(self, W: torch.Tensor) -> torch.Tensor:
        """Every client's gradient at every chain's point W (C, d) -> (C, n, d); one oracle call each."""
        self.meter.add_oracle("grad", None, 1.0)
        return self.target.client_grad_potentials(W).transpose(0, 1)

    def noise(self) -> torch.Tensor:
        return math.sqrt(2.0 * self.h) * torch.randn(self.X.shape, generator=self.noise_gen, dtype=self.X.dtype)

    def compress_up(self, comp, V: torch.Tensor) -> Message:
        """Clients' rows V (C, n, d) compressed in one call: a Message (C, n, d) with bits (n,) per chain."""
        C, m, d = V.shape
        msg = comp(V.reshape(C * m, d), self.comp_gen)
        return Message(msg.values.reshape(C, m, d), msg.bits.reshape(C, m).mean(0))

    def compress_down(self, comp, V: torch.Tensor) -> Message:
        """The server's rows V (C, d), one per chain: a one-row Message (C, 1, d) with its bits per chain."""
        msg = comp(V, self.down_gen)
        return Message(msg.values[:, None, :], msg.bits.mean().reshape(1))

    def _start(self) -> None:
        raise NotImplementedError

    def _step(self) -> None:
        raise NotImplementedError


def run_langevin(sampler: FederatedLangevin, X0: torch.Tensor, steps: int,
                 metrics: dict[str, Callable[[torch.Tensor], float]] | None = None, log_every: int = 1,
                 label: str | None = None, threads: int | str = "auto") -> Trace:
    """Run ``steps`` iterations from chains ``X0`` (C, d), logging every ``log_every`` iterations
    (and at the end) the meter's cumulative per-client costs of one chain (``bits_up``,
    ``bits_down``, ``grad_evals``, ``comm_rounds``), ``wall_time`` (the sampler's own steps) and each
    metric ``name: fn(X) -> float`` of the chains. ``threads``: "auto" runs single-threaded below
    :data:`optsim.particles.base.SMALL_FLOPS` per iteration (about 2 n C d^2 for the gradients)."""
    if steps < 0 or log_every < 1:
        raise ValueError("run_langevin needs steps >= 0 and log_every >= 1")
    if threads == "auto":
        threads = 1 if 2.0 * sampler.n * X0.shape[0] * sampler.d ** 2 < SMALL_FLOPS else None
    with intra_op_threads(threads):
        return iterate(sampler, X0, steps, metrics, log_every, label, counters=lambda: sampler.meter.snapshot())
