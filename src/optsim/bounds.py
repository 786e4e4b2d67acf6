"""Bounding the rows of a (m, d) tensor (one row per client): flat clipping and smoothed
normalization. One definition for every user: the privacy mechanism, the clipping compressor of
Clip21, clipped local training (L12), alpha-NormEC."""
from __future__ import annotations

import math

import torch

__all__ = ["clip_rows", "smoothed_normalize"]


def clip_rows(V: torch.Tensor, C: float, inplace: bool = False) -> torch.Tensor:
    """min(1, C / ||v||) v for every row v of V (0 stays 0; C = inf: V unchanged); ``inplace``: V is
    scaled in place (no copy of a large batch)."""
    if math.isinf(C):
        return V
    norms = torch.linalg.vector_norm(V, dim=-1, keepdim=True)
    scale = torch.clamp(C / norms.clamp_min_(1e-300), max=1.0)
    return V.mul_(scale) if inplace else V * scale


def smoothed_normalize(V: torch.Tensor, alpha: float) -> torch.Tensor:
    """Norm_alpha(v) = v / (alpha + ||v||) for every row v of V (alpha >= 0; alpha = 0 and v = 0
    give 0): Shulgin, Khirirat, Richtárik (2025), alpha-NormEC; every row has norm below 1."""
    norms = torch.linalg.vector_norm(V, dim=-1, keepdim=True)
    return V / (alpha + norms).clamp_min(1e-300)
