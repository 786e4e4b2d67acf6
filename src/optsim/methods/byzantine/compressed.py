"""Byz-EF21, Byz-EF21-BC and Byz-DASHA-PAGE (B2): EF21 and DASHA-PAGE with a robust server.

Rammal, Gruntkowska, Fedin, Gorbunov, Richtárik (2024), "Communication compression for Byzantine
robust learning: new efficient algorithms and improved rates" (AISTATS). The paper's body could not
be read: the update rules follow the authors' code (byz_ef21.py, byz_dasha_page.py) and are those of
EF21 / DASHA-PAGE with the server's mean replaced by a robust aggregate of the clients' estimates it
tracks; the stepsizes are the forms the authors' experiment notebook evaluates (constants not
confirmed against the paper's theorems). Byz-EF21-BC is not in that code: here it is EF21-BC's
server-side error feedback on the robust aggregate (our reading of the method's name).
"""
from __future__ import annotations

import math

import torch
from pydantic import Field

from ...mechanisms import Feedback, make_three_pc
from ..base import register_method
from ..baselines.error_feedback import EF21Params, _down_alpha
from ..compression.dasha import DASHAPAGE, DASHAPAGEParams
from .base import ClipHeuristicParams, RobustMethod, RobustParams

__all__ = ["ByzEF21", "ByzEF21BC", "ByzDASHAPAGE"]


def byz_factor(G: int, c_delta: float) -> float:
    """(1/sqrt(G) + sqrt(8 c delta)), the factor the B2 stepsizes carry."""
    return 1 / math.sqrt(G) + math.sqrt(8 * c_delta)


class ByzEF21Params(EF21Params, ClipHeuristicParams):
    pass


class ByzEF21BCParams(EF21Params, RobustParams):
    pass

@register_method
class ByzEF21(RobustMethod):
    """Byz-EF21 (B2; update rule from the authors' code): EF21 (Richtárik, Sokolov, Fatkhullin 2021,
    Alg. 1) whose server aggregates the clients' estimates robustly:

        x+ = x - gamma g,   c_i = C(grad f_i(x+) - g_i),   g_i += c_i (client and server),
        g+ = ARAgg(g_1, ..., g_n),

    g_i^0 = grad f_i(x^0) sent in full. A Byzantine client's g_i at the server is whatever its attack
    made of it. With the mean aggregator and no Byzantines the iterates are EF21's. Stepsize (the
    authors' notebook, Top-K): gamma = 1 / (L + (2/alpha)(1 + sqrt(8 c delta)) L_tilde), with L and
    L_tilde over the honest clients (sqrt(mean L_i^2) bounds both) -- not confirmed in the paper.
    """

    name = "byz_ef21"
    stepsize_source = "reading"
    paper = ("Rammal, Gruntkowska, Fedin, Gorbunov, Richtárik (2024), Communication compression for Byzantine "
             "robust learning, Byz-EF21 (authors' code)")
    uses = ("compressor", "aggregator")
    Params = ByzEF21Params
    state = ("x", "x0", "fb", "prev_aggregate")

    def theory_stepsize(self):
        L = self.honest_L_tilde()
        return 1.0 / (L + (2 / self.alpha) * (1 + math.sqrt(8 * self.c_delta())) * L)

    def init(self, x0):
        self.x0 = self.x = x0
        G = self.problem.grads(self.at_clients(x0))
        self.fb = Feedback(make_three_pc("ef21", self.compressor, float_bits=self.channel.float_bits))
        self.fb.start(self.channel.dense(G) if self.params.init_full else self.compress(G), self.channel,
                      aggregate=self.robust_aggregate, context=self.attack_context())

    def step(self):
        self.x = self.channel.broadcast(self.x - self.gamma * self.fb.g)
        self.fb.send(self.problem.grads(self.at_clients(self.x)), self.channel, self.compress,
                     aggregate=self.robust_aggregate, context=self.attack_context())


@register_method
class ByzEF21BC(RobustMethod):
    """Byz-EF21-BC (B2; the algorithm could not be read, our reading): EF21-BC (Fatkhullin et al. 2021,
    "EF21 with bells & whistles", Alg. 5) with the robust aggregate in place of the mean: the clients
    run Byz-EF21's uplink (C_w, ``compressor``); the server keeps g, known to everyone, and broadcasts
    only b = C_M(ARAgg(g_1..g_n) - g) (``down_compressor``), g += b, x+ = x - gamma g. With C_M the
    identity it is Byz-EF21; with the mean aggregator and no Byzantines it is EF21-BC. Stepsize:
    Byz-EF21's form with alpha = alpha_w alpha_M (EF21-BC's convention here; derived, not the paper's).
    """

    name = "byz_ef21_bc"
    stepsize_source = "derived"
    paper = ("Rammal, Gruntkowska, Fedin, Gorbunov, Richtárik (2024), Communication compression for Byzantine "
             "robust learning, Byz-EF21-BC (our reading)")
    uses = ("compressor", "down_compressor", "aggregator")
    Params = ByzEF21BCParams
    state = ("x", "x0", "fb", "g")

    down_alpha = property(_down_alpha)

    def theory_stepsize(self):
        L = self.honest_L_tilde()
        return 1.0 / (L + (2 / (self.alpha * self.down_alpha)) * (1 + math.sqrt(8 * self.c_delta())) * L)

    def init(self, x0):
        self.x0 = self.x = x0
        G = self.problem.grads(self.at_clients(x0))
        self.fb = Feedback(make_three_pc("ef21", self.compressor, float_bits=self.channel.float_bits))
        gt = self.fb.start(self.channel.dense(G) if self.params.init_full else self.compress(G), self.channel,
                           aggregate=self.aggregate, context=self.attack_context())
        self.g = self.channel.broadcast(self.compress_down(gt))

    def step(self):
        self.x = self.x - self.gamma * self.g
        gt = self.fb.send(self.problem.grads(self.at_clients(self.x)), self.channel, self.compress,
                          aggregate=self.aggregate, context=self.attack_context())
        self.g = self.g + self.channel.broadcast(self.compress_down(gt - self.g))


class ByzDASHAPAGEParams(DASHAPAGEParams, ClipHeuristicParams):
    #: probability of a full local gradient; default B / m (the authors' code; m: mean local sample count)
    p: float | None = Field(None, gt=0, le=1)


@register_method
class ByzDASHAPAGE(RobustMethod, DASHAPAGE):
    """Byz-DASHA-PAGE (B2; update rule from the authors' code): DASHA-PAGE (Tyurin, Richtárik 2022)
    whose server tracks each client's g_i and aggregates them robustly:

        x+ = x - gamma g;   c ~ Be(p);   h_i+ = grad f_i(x+) (c = 1) or h_i + Dhat_i(x+, x) (c = 0);
        m_i = Q(h_i+ - h_i - a (g_i - h_i)) (always compressed);   g_i += m_i;   g+ = ARAgg(g_1..g_n),

    g_i^0 = h_i^0 = grad f_i(x^0) sent in full. Dhat_i: the mean over B samples with replacement (the
    code draws without). With the mean aggregator and no Byzantines (and the same p) the iterates are
    DASHA-PAGE's. Defaults as coded: a = 1/(2 omega + 1), p = B/m. Stepsize (the authors' notebook,
    not confirmed in the paper): gamma = 1 / (L + sqrt(R)),
    R = (12 omega (2 omega + 1)(L_avg^2 + L_max^2 / B) + (2/p) L_max^2 / B)(1/sqrt(G) + sqrt(8 c delta))^2,
    L, L_avg = sqrt(mean_{i honest} L_i^2), L_max = max_{i honest, j} L_ij.
    """

    name = "byz_dasha_page"
    stepsize_source = "reading"
    paper = ("Rammal, Gruntkowska, Fedin, Gorbunov, Richtárik (2024), Communication compression for Byzantine "
             "robust learning, Byz-DASHA-PAGE (authors' code)")
    uses = ("compressor", "aggregator")
    Params = ByzDASHAPAGEParams
    replica_batched = False
    draws_coins = True
    state = ("x", "x0", "G", "H", "g", "last_full", "prev_aggregate")

    @property
    def p(self) -> float:
        if self.params.p is not None:
            return float(self.params.p)
        return min(1.0, self.params.batch_size / float(self.problem.m.to(torch.float64).mean()))

    def theory_stepsize(self):
        p, w, B = self.p, self.omega, self.params.batch_size
        L = self.honest_L_tilde()
        Lmax = self.honest_sample_max()
        R = (12 * w * (2 * w + 1) * (L ** 2 + Lmax ** 2 / B) + (2 / p) * Lmax ** 2 / B) \
            * byz_factor(self.n - self.byzantine_count, self.c_delta()) ** 2
        return 1.0 / (L + math.sqrt(R))

    def init(self, x0):
        self.x0 = self.x = x0
        self.H = self._initial(x0)
        self.G = self.channel.receive(self.channel.dense(self.H), context=self.attack_context()).clone()
        self.g = self.robust_aggregate(self.G)
        self.last_full = True

    def _deliver(self, msg):
        self.G = self.channel.receive(msg, context=self.attack_context(), base=self.G)
        self.g = self.robust_aggregate(self.G)
