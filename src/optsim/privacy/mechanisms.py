"""The Gaussian mechanism on the clients' messages: bound each client's contribution, add noise.

Each private release (one aggregation of the clients' rows by the channel) is

    local:    sum_i w_i (b(v_i) + s sigma z_i)          (every client noises its own row),
    central:  sum_i w_i b(v_i) + s sigma max_i(w_i) z    (the server noises the aggregate),

z ~ N(0, I) from the run's ``privacy`` random stream, sigma the noise multiplier and b the bound of
one client's row, with sensitivity s:

* ``clip: C`` -- flat clipping b(v) = min(1, C / ||v||) v (Abadi et al. 2016, "Deep learning with
  differential privacy"; McMahan et al. 2018, "Learning differentially private recurrent language
  models", DP-FedAvg), s = C;
* ``normalize: alpha`` -- smoothed normalization b(v) = v / (alpha + ||v||) (Shulgin, Khirirat,
  Richtárik 2025, "Smoothed normalization for efficient distributed private optimization"), whose
  norm is below 1, s = 1.

The privacy unit is a client (client-level DP: neighbouring runs differ in one client's data); one
release with noise multiplier sigma is the Gaussian mechanism of sensitivity s, subsampled by the
round's client sampling, and the accountant (:mod:`optsim.privacy.accounting`) composes the
releases. The local variant also protects a client from the server.
"""
from __future__ import annotations

import math

import torch

from ..bounds import clip_rows, smoothed_normalize

__all__ = ["clip_rows", "smoothed_normalize", "Privatizer"]


class Privatizer:
    """One run's mechanism (module docstring): ``noise_multiplier`` sigma >= 0, ``clip`` C or
    ``normalize`` alpha, ``where`` "local" or "central", ``generator`` the ``privacy`` stream.
    ``accountant``: a :class:`~optsim.privacy.accounting.PrivacyAccountant` that counts the releases."""

    def __init__(self, noise_multiplier: float, clip: float | None = None, normalize: float | None = None,
                 where: str = "central", generator: torch.Generator | None = None, accountant=None):
        if (clip is None) == (normalize is None):
            raise ValueError("privacy: bound each client's contribution with clip: C or normalize: alpha (one of them)")
        if clip is not None and not clip > 0:
            raise ValueError(f"privacy: clip must be > 0, got {clip}")
        if normalize is not None and not normalize >= 0:
            raise ValueError(f"privacy: normalize (alpha) must be >= 0, got {normalize}")
        if not noise_multiplier >= 0:
            raise ValueError(f"privacy: noise_multiplier must be >= 0, got {noise_multiplier}")
        if where not in ("local", "central"):
            raise ValueError(f"privacy: where must be 'local' or 'central', got {where!r}")
        self.noise_multiplier, self.clip, self.normalize, self.where = float(noise_multiplier), clip, normalize, where
        self.generator = generator
        self.accountant = accountant
        #: releases made so far (each one aggregation of the clients' rows)
        self.releases = 0

    @property
    def sensitivity(self) -> float:
        return float(self.clip) if self.clip is not None else 1.0

    def bound(self, V: torch.Tensor) -> torch.Tensor:
        """Each row's bounded contribution b(v)."""
        return clip_rows(V, self.clip) if self.clip is not None else smoothed_normalize(V, self.normalize)

    def _noise(self, shape, like: torch.Tensor) -> torch.Tensor:
        z = torch.randn(shape, generator=self.generator, dtype=torch.float64).to(like)
        return (self.noise_multiplier * self.sensitivity) * z

    def release(self, V: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The private weighted sum of the rows of V (module docstring); one release is counted."""
        B = self.bound(V)
        if self.noise_multiplier > 0 and self.where == "local":
            B = B + self._noise(B.shape, B)
        out = (weights.reshape(-1, 1) * B).sum(-2)
        if self.noise_multiplier > 0 and self.where == "central":
            out = out + float(weights.max()) * self._noise(out.shape, out)
        self.releases += 1
        if self.accountant is not None:
            self.accountant.step()
        return out

    def epsilon(self, more: int = 0) -> float:
        """The epsilon spent so far, or after ``more`` further releases (inf without noise)."""
        if self.accountant is None:
            return math.inf
        return float(self.accountant.epsilon(steps=self.accountant.steps + int(more)))

    def restore(self, releases: int) -> None:
        """Continue a run that had made ``releases`` releases (checkpoints)."""
        self.releases = int(releases)
        if self.accountant is not None:
            self.accountant.steps = self.releases

    def describe(self) -> str:
        b = f"clip={self.clip:g}" if self.clip is not None else f"normalize={self.normalize:g}"
        return f"gaussian(sigma={self.noise_multiplier:g}, {b}, {self.where})"
