"""VR-MARINA: MARINA with minibatch gradient differences (finite sums).
"""
from __future__ import annotations

import math

import torch
from pydantic import Field, PositiveInt

from ..base import MethodParams, register_method
from ..baselines.variance_reduced import PAGE
from .dasha import mean_sample_smoothness, per_sample_smoothness

__all__ = ["VRMARINAParams", "VRMARINA"]


class VRMARINAParams(MethodParams):
    #: large minibatch per client in refresh rounds (with replacement); default: full local gradients
    batch_size: PositiveInt | None = None
    #: small minibatch b' per client in compressed rounds
    small_batch_size: PositiveInt = 1
    #: probability of a refresh round; default min(zeta_Q / d, b' / (m + b')) (Cor. 3.1)
    p: float | None = Field(None, gt=0, le=1)


@register_method
class VRMARINA(PAGE):
    """VR-MARINA: Gorbunov, Burlachenko, Li, Richtárik (2021), "MARINA: faster non-convex distributed
    learning with compression", Algorithm 2 (finite-sum; with ``batch_size`` < m_i the refresh rounds
    use minibatches, the online variant). g^0 = grad f(x^0) (full gradients); each round
    x+ = x - gamma g (broadcast) and, with one shared coin c ~ Be(p):

        c = 1: g+ = (1/n) sum_i grad f_i(x+) (sent uncompressed; a minibatch of ``batch_size`` if set);
        c = 0: g+ = g + (1/n) sum_i Q((1/b') sum_{j in I_i} (grad f_ij(x+) - grad f_ij(x))),

    I_i: b' samples of client i with replacement, the same at x+ and x. Theorem 3.1:
    gamma = 1 / (L + sqrt((1 - p)/(p n) (omega L^2 + (1 + omega) L_pm^2 / b'))); we use L_tilde for L
    (as :class:`MARINA`) and bound L_pm by sqrt(mean_i (1/m_i) sum_j L_ij^2). Default p from
    Corollary 3.1, b' = 1 (the corollary leaves b' free). ``last_full`` tells the latest round's coin.
    """

    name = "vr_marina"
    stepsize_source = "theorem"
    paper = "Gorbunov, Burlachenko, Li, Richtárik (2021), MARINA: faster non-convex distributed learning with compression, Alg. 2 (VR-MARINA)"
    uses = ("compressor",)
    Params = VRMARINAParams

    def check(self):
        per_sample_smoothness(self.problem)

    @property
    def p(self) -> float:
        if self.params.p is not None:
            return float(self.params.p)
        bs = self.params.small_batch_size
        m = float(self.problem.m.to(torch.float64).mean())
        return min(1.0, self.compressor.density / self.d, bs / (m + bs))

    def theory_stepsize(self):
        pr, p, w, bs = self.problem, self.p, self.omega, self.params.small_batch_size
        Lpm2 = mean_sample_smoothness(pr) ** 2
        var = (1 - p) / (p * self.n) * (w * pr.L_tilde ** 2 + (1 + w) * Lpm2 / bs)
        return 1.0 / (pr.L_tilde + math.sqrt(var))

    @property
    def small_batch(self) -> int:
        return int(self.params.small_batch_size)

    def _difference_message(self, D):
        return self.compress(D)
