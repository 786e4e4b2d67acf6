"""The 3PC method: gradient descent whose gradients travel through a three point compressor.

Richtárik, Sokolov, Fatkhullin, Gasanov, Li, Gorbunov (2022), "3PC: three point compressors for
communication-efficient distributed training and a better theory for lazy aggregation"
(arXiv 2202.00998), Algorithm 1, with any mechanism of :mod:`optsim.mechanisms.three_pc` (EF21,
LAG, CLAG) and its theorem's stepsize (:func:`~optsim.mechanisms.three_pc.three_pc_stepsize`).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ...mechanisms import Feedback, make_three_pc, three_pc_stepsize
from ..base import Method, MethodParams, register_method

__all__ = ["ThreePCMethod"]


class ThreePCParams(MethodParams):
    #: the mechanism: ef21, lag (lazy aggregation) or clag (compressed lazy aggregation)
    mechanism: Literal["ef21", "lag", "clag"] = "ef21"
    #: the trigger zeta of lag / clag (a free parameter of the theorem: larger zeta, fewer messages, smaller stepsize)
    zeta: float = Field(1.0, ge=0)
    #: g_i^0 = grad f_i(x^0) sent uncompressed (True) or through the mechanism from h = 0 (False)
    init_full: bool = True


@register_method
class ThreePCMethod(Method):
    """3PC: Richtárik, Sokolov, Fatkhullin, Gasanov, Li, Gorbunov (2022), "3PC: three point
    compressors for communication-efficient distributed training and a better theory for lazy
    aggregation" (arXiv 2202.00998), Algorithm 1 with a mechanism of :mod:`optsim.mechanisms.three_pc`:

        x+ = x - gamma g,   g_i+ = C_{g_i, grad f_i(x)}(grad f_i(x+)),   g+ = (1/n) sum_i g_i+

    (each client sends g_i+ - g_i, nothing when lazy). Stepsize: :func:`three_pc_stepsize` with the
    mechanism's (A, B): EF21 (A = 1 - sqrt(1 - alpha), ... as in :class:`EF21`), LAG (A = 1, B = zeta),
    CLAG (A = 1 - (1 - alpha)(1 + s), B = max((1 - alpha)(1 + 1/s), zeta)). With the ef21 mechanism
    the iterates are EF21's (same stepsize and compressor stream).
    """

    name = "three_pc"
    stepsize_source = "reading"
    paper = ("Richtárik, Sokolov, Fatkhullin, Gasanov, Li, Gorbunov (2022), 3PC: three point compressors for "
             "communication-efficient distributed training and a better theory for lazy aggregation, Alg. 1")
    uses = ("compressor",)
    Params = ThreePCParams
    state = ("x", "fb")

    def check(self):
        comp = self.compressor
        if self.params.mechanism == "lag":
            comp = None if comp is None or comp.name == "identity" else comp
        self.mechanism = make_three_pc(self.params.mechanism, comp, self.params.zeta, self.channel.float_bits)
        self.mechanism.constants()  # refuses a non-contractive compressor

    def theory_stepsize(self):
        p = self.problem
        return three_pc_stepsize(self.mechanism, p.L, p.L_tilde, p.mu)

    def init(self, x0):
        self.x = x0
        G = self.problem.grads(x0.expand(self.n, self.d))
        if self.params.init_full:
            msg = self.channel.dense(G)
        else:
            # from h = 0 with y = x: every client's first message is sent (the trigger sees ||x||^2 > 0)
            msg = self.mechanism(torch.zeros_like(G), G, G, self.ctx.generator("compressor"))
        self.fb = Feedback(self.mechanism)
        self.fb.start(msg, self.channel, X=G)

    def step(self):
        self.x = self.channel.broadcast(self.x - self.gamma * self.fb.g)
        X = self.problem.grads(self.x.expand(self.n, self.d))
        self.fb.send(X, self.channel, generator=self.ctx.generator("compressor"))
