"""Baselines: the unadjusted Langevin algorithm run by a server with its clients, uncompressed
(ULA / LMC) and with every client's gradient compressed once, without any correction.

* :class:`ULA` (Roberts & Tweedie 1996; Durmus & Moulines 2017, "Nonasymptotic convergence
  analysis for the unadjusted Langevin algorithm"): the server holds the chains, broadcasts them
  (d floats per client), each client returns ``grad F_i(x)`` (d floats), and
  ``x <- x - h sum_i grad F_i(x) + sqrt(2 h) xi``. For a Gaussian target its stationary law is
  ``N(m, P^-1 (I - hP/2)^-1)``: the O(h) discretization bias
  (:meth:`optsim.targets.GaussianClients.ula_stationary_cov`).
* :class:`CompressedULA`: the same with ``C(grad F_i(x))`` sent instead (the "naive" compressed
  Langevin the ELF paper compares with): with a biased compressor (top_k) its fixed points are
  not those of ULA.
"""
from __future__ import annotations

from ...targets import ClientTarget
from .base import FederatedLangevin

__all__ = ["ULA", "CompressedULA"]


class ULA(FederatedLangevin):
    name = "ula"
    paper = "Roberts & Tweedie (1996); Durmus & Moulines (2017), unadjusted Langevin algorithm"

    def _start(self):
        pass

    def _gradient(self):
        W = self.channel.broadcast(self.X.reshape(-1))  # the chains' points, d floats per client
        return self.channel.uplink(self.client_grads(W), weights=1.0)  # sum_i grad F_i

    def _step(self):
        self.X = self.X - self.h * self._gradient() + self.noise()


class CompressedULA(ULA):
    name = "compressed_ula"
    paper = "ULA with compressed client gradients, no error feedback (the baseline of Karagulyan & Richtárik, UAI 2025)"

    def __init__(self, target: ClientTarget, step: float, compressor="top_k", seed: int = 0, float_bits: int = 32):
        super().__init__(target, step, seed, float_bits)
        self.comp = self._compressor(compressor)

    def _gradient(self):
        W = self.channel.broadcast(self.X.reshape(-1))
        return self.channel.uplink(self.compress_up(self.comp, self.client_grads(W)), weights=1.0)
