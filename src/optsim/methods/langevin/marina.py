"""Langevin-MARINA: federated Langevin sampling with MARINA's compressed gradient differences
(Sun, Salim & Richtárik, "Federated Learning with a Sampling Algorithm under Isoperimetry",
arXiv 2206.00920, TMLR 2024; PAPERS.md P3).

    x_{k+1} = x_k - h g_k + sqrt(2 h) xi_k,
    g_{k+1} = grad F(x_{k+1})                                            with probability p,
            = g_k + sum_i Q_i(grad F_i(x_{k+1}) - grad F_i(x_k))          otherwise,

one coin for all clients (and all chains: they are lock-step replicas), Q_i unbiased compressors
with variance omega. Here F = sum_i F_i (the paper writes F = (1/n) sum_i F_i; the sum is n times
its mean, the same algorithm up to the scaling of h). Under a log-Sobolev inequality the paper
bounds KL(rho_K | pi) by an exponentially decaying term plus an O(h) bias growing with
omega (1 - p) / (p n). NOT CONFIRMED against the paper (its body was not readable here): the
algorithm's exact form, the theorem number and its stepsize; the structure above is the research
notes' recollection (../shared/research/linalg-stochastic-sampling.md, P3). The default p is
MARINA's usual ``1 / (omega + 1)`` (for rand_k: k / d); the stepsize is explicit.
"""
from __future__ import annotations

import torch

from ...targets import ClientTarget
from .base import FederatedLangevin

__all__ = ["LangevinMARINA"]


class LangevinMARINA(FederatedLangevin):
    name = "langevin_marina"
    paper = "Sun, Salim & Richtárik (2024), Federated Sampling with Langevin Algorithm under Isoperimetry, TMLR (P3)"

    def __init__(self, target: ClientTarget, step: float, compressor="rand_k", p: float | None = None,
                 seed: int = 0, float_bits: int = 32):
        super().__init__(target, step, seed, float_bits)
        self.comp = self._compressor(compressor)
        if self.comp.omega is None:
            raise ValueError(f"{self.name}: the compressor must be unbiased (rand_k, perm_k, qsgd, natural, identity), "
                             f"got '{self.comp.name}'")
        self.p = 1.0 / (self.comp.omega + 1.0) if p is None else float(p)
        if not 0.0 < self.p <= 1.0:
            raise ValueError(f"{self.name}: p must be in (0, 1], got {p}")

    def _start(self):
        W = self.channel.broadcast(self.X.reshape(-1))
        self.G = self.client_grads(W)                       # clients' gradients at x_0 (C, n, d)
        self.g = self.channel.uplink(self.G, weights=1.0)   # g_0 = grad F(x_0), sent dense

    def _step(self):
        self.X = self.X - self.h * self.g + self.noise()
        W = self.channel.broadcast(self.X.reshape(-1))
        G_new = self.client_grads(W)
        if float(torch.rand((), generator=self.method_gen)) < self.p:
            self.g = self.channel.uplink(G_new, weights=1.0)
        else:
            self.g = self.g + self.channel.uplink(self.compress_up(self.comp, G_new - self.G), weights=1.0)
        self.G = G_new
