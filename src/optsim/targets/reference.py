"""Reference samples for targets without an exact sampler: the Metropolis-adjusted Langevin
algorithm (MALA; Roberts & Tweedie 1996), exact in the limit of many steps, with many chains
advanced together as one batched computation."""
from __future__ import annotations

import torch

from .base import Target

__all__ = ["mala"]


def mala(target: Target, X0: torch.Tensor, step: float, steps: int, generator: torch.Generator,
         ) -> tuple[torch.Tensor, float]:
    """Run ``len(X0)`` MALA chains for ``steps`` steps of size ``step`` (proposal
    ``y = x - step grad F(x) + sqrt(2 step) xi``, accepted with the Metropolis-Hastings ratio);
    returns the final states and the mean acceptance rate."""
    if not step > 0 or steps < 0:
        raise ValueError("mala needs step > 0 and steps >= 0")
    X = X0.clone()
    F, G = target.potential(X), target.grad_potential(X)
    accepted = 0.0
    for _ in range(steps):
        Y = X - step * G + (2 * step) ** 0.5 * torch.randn(X.shape, generator=generator, dtype=X.dtype)
        ok_dom = target.contains(Y)
        Yc = torch.where(ok_dom[:, None], Y, X)
        FY, GY = target.potential(Yc), target.grad_potential(Yc)
        fwd = ((Y - X + step * G) ** 2).sum(1) / (4 * step)   # -log q(y | x)
        bwd = ((X - Y + step * GY) ** 2).sum(1) / (4 * step)  # -log q(x | y)
        log_ratio = F - FY + fwd - bwd
        u = torch.rand(len(X), generator=generator, dtype=X.dtype)
        acc = ok_dom & (torch.log(u) < log_ratio)
        X = torch.where(acc[:, None], Y, X)
        F = torch.where(acc, FY, F)
        G = torch.where(acc[:, None], GY, G)
        accepted += float(acc.double().mean())
    return X, accepted / max(steps, 1)
