"""(L0, L1)-STM: the similar-triangles method run with the smoothness constant of the ball around x* that
its iterates provably never leave (our derivation, below).

Gorbunov, Tupitsa, Choudhury, Aliev, Richtárik, Horváth, Takáč (2024), "Methods for convex (L0, L1)-smooth
optimization: clipping, acceleration, and adaptivity" (arXiv 2409.14989) propose an accelerated method of
the similar-triangles (STM) type for convex (L0, L1)-smooth f. Only the paper's first page could be read
here: **the paper's own algorithm, its constants and its theorem are not confirmed** and are not what this
module implements. Tyurin (2025, arXiv 2508.06884, abstract) summarizes the earlier accelerated methods
under (L0, L1)-smoothness as having an extra dependence on the initial gradient or exponential factors in
L1 R; the scheme below is of the second kind, and every step of its guarantee is proved here.

The method: the similar-triangles method (Gasnikov, Nesterov 2018, "Universal method for stochastic
composite optimization problems", Comput. Math. Math. Phys. 58(1); the deterministic, Euclidean case).
A_0 = 0, y^0 = z^0 = x^0 and, for k = 0, 1, ...:

    alpha_{k+1} = eta (k + 2) / (2 L_eff),     A_{k+1} = A_k + alpha_{k+1},
    x^{k+1} = (A_k y^k + alpha_{k+1} z^k) / A_{k+1},
    z^{k+1} = z^k - alpha_{k+1} grad f(x^{k+1}),
    y^{k+1} = (A_k y^k + alpha_{k+1} z^{k+1}) / A_{k+1},

so A_k = eta k (k + 3) / (4 L_eff); the model (the point the metrics evaluate) is y^k. The proof below uses
only L_eff alpha_{k+1}^2 <= A_{k+1}; the algorithm number and the exact coefficients in Gasnikov and
Nesterov (2018) (recalled there as the equality L alpha_{k+1}^2 = A_{k+1}) are not confirmed here, and the
theorem used is the one proved in this docstring. ``stepsize`` is eta
(default 1); ``L_eff`` defaults to L0 exp(L1 R0) with R0 = ||x^0 - x*|| (x* the problem's solution and x^0
the run's starting point; (L0, L1) the problem's, or (L, 0) for an L-smooth problem). With L1 = 0 it is
the standard STM with L = L0.

Guarantee (derived; f convex, twice differentiable, ||hess f(x)|| <= L0 + L1 ||grad f(x)||, eta <= 1):

    f(y^N) - f* <= R0^2 / (2 A_N) = 2 L_eff R0^2 / (eta N (N + 3))   for every N >= 1,

hence O(sqrt(L0 e^{L1 R0} R0^2 / eps)) rounds to f - f* <= eps: the exponential factor enters under the
square root. Proof:

1. Growth of the gradient. Along x* + t u (||u|| = 1), g(t) = ||grad f(x* + t u)|| has g(0) = 0 and
   |g'(t)| <= ||hess f|| <= L0 + L1 g(t), so g(t) <= (L0 / L1)(e^{L1 t} - 1) (Gronwall; L0 t if L1 = 0).
   Hence ||hess f(x)|| <= L0 + L1 ||grad f(x)|| <= L0 e^{L1 r} on the ball B = B(x*, r): f is
   L_eff-smooth on B(x*, R0) with L_eff = L0 e^{L1 R0} (B is convex).
2. Induction: z^0, ..., z^k in B. Then y^k (a convex combination of z^0..z^k) and x^{k+1} (one of y^k
   and z^k) are in B. Since y^{k+1} - x^{k+1} = (alpha / A_{k+1})(z^{k+1} - z^k), y^{k+1} is the gradient
   step x^{k+1} - s g with g = grad f(x^{k+1}) and s = alpha_{k+1}^2 / A_{k+1}; with the coefficients above
   L_eff s = eta (k + 2)^2 / ((k + 1)(k + 4)) <= eta <= 1. Writing g = M (x^{k+1} - x*) with
   M = int_0^1 hess f(x* + t (x^{k+1} - x*)) dt (0 <= M <= L_eff I: the segment is in B),
   y^{k+1} - x* = (I - s M)(x^{k+1} - x*) and ||I - s M|| <= 1, so y^{k+1} is in B, and so is the segment
   [x^{k+1}, y^{k+1}]. On it the descent lemma holds with L_eff:
   f(y^{k+1}) <= f(x^{k+1}) - s (1 - L_eff s / 2) ||g||^2 <= f(x^{k+1}) - (s / 2) ||g||^2.
3. Convexity at x^{k+1} towards y^k and towards x* (weights A_k and alpha_{k+1}), with
   A_{k+1} x^{k+1} = A_k y^k + alpha_{k+1} z^k, gives
   A_k f(y^k) + alpha_{k+1} f* >= A_{k+1} f(x^{k+1}) - alpha_{k+1} <g, z^k - x*>, and
   alpha_{k+1} <g, z^k - x*> = ||z^k - x*||^2 / 2 - ||z^{k+1} - x*||^2 / 2 + alpha_{k+1}^2 ||g||^2 / 2.
   With step 2 (A_{k+1} s = alpha_{k+1}^2):
   A_{k+1} (f(y^{k+1}) - f*) + ||z^{k+1} - x*||^2 / 2 <= A_k (f(y^k) - f*) + ||z^k - x*||^2 / 2.
   Summed from A_0 = 0: ||z^{k+1} - x*|| <= R0 (z^{k+1} in B, closing the induction) and
   f(y^N) - f* <= R0^2 / (2 A_N).

Every round each client sends its full local gradient at x^{k+1} (d floats) and the server broadcasts
x^{k+1}, as for :class:`~optsim.methods.baselines.GD`: one gradient per round.
"""
from __future__ import annotations

import math

import torch
from pydantic import Field, PositiveFloat

from ..base import Method, MethodParams, register_method
from ..heavy_tailed.clipped import sstm_point, sstm_update
from .gd import l0l1_constants

__all__ = ["L0L1STM", "stm_effective_smoothness"]


def stm_effective_smoothness(L0: float, L1: float, R0: float) -> float:
    """L0 exp(L1 R0): a bound on ||hess f|| over the ball B(x*, R0) of an (L0, L1)-smooth f (module docstring, step 1)."""
    return L0 * math.exp(L1 * R0)


class L0L1STMParams(MethodParams):
    #: L0 of (L0, L1)-smoothness (default: the problem's; (L, 0) for an L-smooth problem)
    L0: PositiveFloat | None = None
    #: L1 of (L0, L1)-smoothness (default: the problem's)
    L1: float | None = Field(None, ge=0)
    #: the smoothness constant the coefficients use (default: L0 exp(L1 ||x^0 - x*||))
    L_eff: PositiveFloat | None = None


@register_method
class L0L1STM(Method):
    """(L0, L1)-STM: the similar-triangles method with alpha_{k+1} = eta (k + 2) / (2 L_eff) and
    L_eff = L0 exp(L1 ||x^0 - x*||) (our derivation, module docstring: f(y^N) - f* <=
    2 L_eff R0^2 / (eta N (N + 3)) for eta <= 1). Gorbunov et al. (2024, arXiv 2409.14989) propose an
    accelerated STM-type method for this class; its algorithm and constants are not confirmed here and
    this is not claimed to be it. ``stepsize`` = eta (default 1); ``L_eff`` may be set explicitly (e.g.
    L0 + L1 ||grad f(x^0)||, a heuristic without the guarantee). The model is y^k."""

    name = "l0l1_stm"
    stepsize_source = "derived"
    paper = ("Gasnikov, Nesterov (2018), Universal method for stochastic composite optimization problems (similar "
             "triangles method), with L_eff = L0 exp(L1 R0) derived here for convex (L0,L1)-smooth f; cf. Gorbunov, "
             "Tupitsa, Choudhury, Aliev, Richtárik, Horváth, Takáč (2024), arXiv 2409.14989, accelerated method "
             "(not confirmed)")
    Params = L0L1STMParams
    state = ("x", "z", "A_sum", "k", "L_eff")

    def check(self):
        if self.params.L_eff is None and self.problem.x_star is None:
            raise ValueError(f"l0l1_stm: {self.problem.name} has no known solution x*, so the default "
                             f"L_eff = L0 exp(L1 ||x0 - x*||) is unknown: set 'L_eff'")

    def theory_stepsize(self):
        return 1.0

    def effective_smoothness(self, x0: torch.Tensor) -> float:
        """L_eff: the given one, else L0 exp(L1 ||x0 - x*||)."""
        if self.params.L_eff is not None:
            return float(self.params.L_eff)
        L0, L1 = l0l1_constants(self.problem, self.params.L0, self.params.L1)
        R0 = float(torch.linalg.vector_norm(x0.to(torch.float64) - self.problem.x_star.to(x0.device, torch.float64)))
        if L1 * R0 >= 700:
            raise ValueError(f"l0l1_stm: L0 exp(L1 R0) overflows (L1 R0 = {L1 * R0:.4g}): set 'L_eff'")
        return stm_effective_smoothness(L0, L1, R0)

    def init(self, x0):
        self.x, self.z, self.A_sum, self.k = x0, x0.clone(), 0.0, 0
        self.L_eff = self.effective_smoothness(x0)

    def step(self):
        a = self.gamma * (self.k + 2) / (2.0 * self.L_eff)
        point = self.channel.broadcast(sstm_point(self.x, self.z, self.A_sum, a))
        g = self.channel.uplink(self.problem.grads(self.at_clients(point)))
        self.x, self.z, self.A_sum = sstm_update(self.x, self.z, self.A_sum, a, g, math.inf)  # no clipping
        self.k += 1

    def trace_meta(self):
        return {"L_eff": self.L_eff}
