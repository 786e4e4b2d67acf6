"""ELF: federated Langevin with primal, dual and bidirectional compression (Karagulyan &
Richtárik, "ELF: Federated Langevin Algorithms with Primal, Dual and Bidirectional Compression",
UAI 2025, PMLR 286:1965-1989; PAPERS.md P4). EF21-P compresses the model sent down, EF21 the
gradients sent up:

    x_{k+1}     = x_k - h g_k + sqrt(2 h) xi_k                     (server; g_k = sum_i g_i^k)
    w_{k+1}     = w_k + C_P(x_{k+1} - w_k)                         (sent down: clients hold w)
    g_i^{k+1}   = g_i^k + C_D(grad F_i(w_{k+1}) - g_i^k)           (sent up; the server adds the
                                                                    compressed increments to g)

P-ELF: C_D = identity; D-ELF: C_P = identity; B-ELF: both compressed; with both the identity it is
ULA (LMC) exactly. Start: w_0 = x_0, g_i^0 = grad F_i(x_0) sent uncompressed.

Read in the authors' code (avetx/elf_code, ``elf.py``), with two of its quirks not copied: the
server there accumulates ``grad = grad + mean(g_i)`` (here g = sum_i g_i, maintained by adding the
compressed increments, which is EF21's server), and the prior weight is zeroed inside its function
(here the target's potential is used whole). Its drift gamma/2 with noise sqrt(gamma) is ULA with
step h = gamma / 2, the convention here. The theorem (KL under a log-Sobolev inequality: exponential
decay plus an O(h) bias, h limited by the compressors' contraction constants) is NOT CONFIRMED
(shape recalled); the stepsize is explicit.
"""
from __future__ import annotations

from ...targets import ClientTarget
from .base import FederatedLangevin

__all__ = ["ELF"]

VARIANTS = {"P": ("primal", None), "D": (None, "dual"), "B": ("primal", "dual"), "LMC": (None, None)}


class ELF(FederatedLangevin):
    name = "elf"
    paper = "Karagulyan & Richtárik (2025), ELF, UAI, PMLR 286 (P-ELF, D-ELF, B-ELF)"

    def __init__(self, target: ClientTarget, step: float, variant: str = "B", compressor="top_k",
                 down_compressor=None, seed: int = 0, float_bits: int = 32):
        super().__init__(target, step, seed, float_bits)
        if variant not in VARIANTS:
            raise ValueError(f"elf: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.variant = variant
        primal, dual = VARIANTS[variant]
        down = compressor if down_compressor is None else down_compressor
        self.comp_p = self._compressor(down if primal else "identity", down=True)
        self.comp_d = self._compressor(compressor if dual else "identity")
        self.name = f"{variant}-ELF" if variant != "LMC" else "LMC"

    def _start(self):
        self.W = self.channel.broadcast(self.X.reshape(-1))  # w_0 = x_0, sent dense
        self.Gi = self.client_grads(self.W)                   # g_i^0 (C, n, d)
        self.g = self.channel.uplink(self.Gi, weights=1.0)   # sent dense

    def _step(self):
        self.X = self.X - self.h * self.g + self.noise()
        if self.comp_p.name == "identity":
            self.W = self.channel.broadcast(self.X.reshape(-1))
        else:
            self.W = self.W + self.channel.broadcast(self.compress_down(self.comp_p, self.X - self.W))
        G = self.client_grads(self.W)
        if self.comp_d.name == "identity":  # g_i + (grad F_i(w) - g_i) = grad F_i(w): sent as it is
            self.Gi = G
            self.g = self.channel.uplink(G, weights=1.0)
            return
        msg = self.compress_up(self.comp_d, G - self.Gi)
        self.Gi = self.Gi + msg.values
        self.g = self.g + self.channel.uplink(msg, weights=1.0)
