"""Compressed gradient methods with unbiased compressors: DCGD and DIANA (learned shifts,
:class:`optsim.mechanisms.Shifts`)."""
from __future__ import annotations

import math

from pydantic import Field

from ...mechanisms import Shifts
from ..base import Method, MethodParams, register_method

__all__ = ["DCGD", "DIANA"]


@register_method
class DCGD(Method):
    """Distributed compressed gradient descent: x+ = x - gamma * (1/n) sum_i C_i(grad f_i(x)).

    Khirirat, Feyzmahdavian, Johansson (2018), "Distributed learning with compressed gradients";
    stepsize from the unified analysis of Gorbunov, Hanzely, Richtárik (2020), "A unified theory
    of SGD" (DCGD as SGD with A = L + 2 omega L_max / n): gamma = 1 / (L + 2 omega L_max / n).
    With an unbiased compressor it converges linearly only to a neighbourhood of x* of size
    proportional to gamma * omega / (mu n) * (1/n) sum_i ||grad f_i(x*)||^2.
    """

    name = "dcgd"
    stepsize_source = "theorem"
    paper = "Khirirat, Feyzmahdavian, Johansson (2018), Distributed learning with compressed gradients, Alg. 1"
    replica_batched = True
    uses = ("compressor",)

    def theory_stepsize(self):
        p = self.problem
        return 1.0 / (p.L + 2 * self.omega * p.L_max / self.n)

    def init(self, x0):
        self.x = x0

    def step(self):
        G = self.problem.grads(self.at_clients(self.x))
        g = self.channel.uplink(self.compress(G))
        self.x = self.channel.broadcast(self.x - self.gamma * g)


class DIANAParams(MethodParams):
    #: shift stepsize; default 1/(omega + 1)
    shift_stepsize: float | None = Field(None, gt=0, le=1)


@register_method
class DIANA(Method):
    """DIANA: compressed gradient *differences* with learned shifts h_i.

    Mishchenko, Gorbunov, Takáč, Richtárik (2019), "Distributed learning with compressed gradient
    differences", Algorithm 1 (with h_i^0 = 0):

        Delta_i = C_i(grad f_i(x) - h_i),   g = h + (1/n) sum_i Delta_i,
        h_i += a Delta_i,   h += a (1/n) sum_i Delta_i,   x+ = x - gamma g.

    Shift stepsize a = 1/(omega + 1). Stepsize, strongly convex case: gamma = 1 / ((1 + 6 omega / n) L_max)
    (Gorbunov, Hanzely, Richtárik 2020, "A unified theory of SGD", DIANA with M = 4 omega/(n a));
    nonconvex case: gamma = 1 / (10 L sqrt(1 + omega/n) (omega + 2)) (Horváth et al. 2019,
    "Stochastic distributed learning with gradient quantization and variance reduction", Thm. 4).
    The shifts learn grad f_i(x*), so the method converges linearly to x* itself.
    """

    name = "diana"
    stepsize_source = "theorem"
    paper = "Mishchenko, Gorbunov, Takáč, Richtárik (2019), Distributed learning with compressed gradient differences, Alg. 1"
    uses = ("compressor",)
    Params = DIANAParams
    replica_batched = True
    state = ("x", "shifts")

    def theory_stepsize(self):
        p, w = self.problem, self.omega
        if p.mu is not None:
            return 1.0 / ((1 + 6 * w / self.n) * p.L_max)
        return 1.0 / (10 * p.L * math.sqrt(1 + w / self.n) * (w + 2))

    @property
    def shift_stepsize(self) -> float:
        a = self.params.shift_stepsize
        return a if a is not None else 1.0 / (self.omega + 1)

    def init(self, x0):
        self.x = x0
        self.shifts = Shifts()
        self.shifts.zero(self.zeros_clients(x0))

    def step(self):
        G = self.problem.grads(self.at_clients(self.x))
        g = self.shifts.estimate(G, self.compress, self.channel, self.shift_stepsize)
        self.x = self.channel.broadcast(self.x - self.gamma * g)
