"""The unit sphere S^{D-1} in R^D with the round metric (sectional curvature 1)."""
from __future__ import annotations

import math

import torch

from .base import Manifold

__all__ = ["Sphere"]


def _sinc(t: torch.Tensor) -> torch.Tensor:
    """sin(t) / t, 1 at t = 0."""
    return torch.sinc(t / math.pi)


class Sphere(Manifold):
    """S^{D-1} = {x : ||x|| = 1}; tangent space at x: {u : <x, u> = 0}; metric: the dot product.

    For a tangent u with theta = ||u|| (closed forms, derived from the great circle through x with
    velocity u; every coefficient is written with sinc so that theta = 0 needs no case):

    * Exp_x(u) = cos(theta) x + (sin(theta) / theta) u (renormalized, so that ||x|| = 1 holds to
      rounding however many steps are taken);
    * Log_x(y) = (theta / ||y - <x, y> x||) (y - <x, y> x), theta = atan2(||y - <x, y> x||, <x, y>)
      (y != -x);
    * parallel transport of v along t -> Exp_x(t u), t in [0, 1]: the component of v along u turns
      with the geodesic, the rest stays:
      Gamma(v) = v + ((cos(theta) - 1) / theta^2) <u, v> u - (sin(theta) / theta) <u, v> x.
      It is an isometry onto the tangent space at Exp_x(u) and maps u to the geodesic's velocity there.
    * dist(x, y) = arccos <x, y> (computed as the atan2 above).
    """

    name = "sphere"
    kappa_min = 1.0

    def __init__(self, D: int):
        if D < 2:
            raise ValueError(f"a sphere needs an ambient dimension of at least 2, got {D}")
        self.D = int(D)

    def exp(self, x, u):
        theta = u.norm(dim=-1, keepdim=True)
        y = torch.cos(theta) * x + _sinc(theta) * u
        return y / y.norm(dim=-1, keepdim=True)

    def log(self, x, y):
        c = (x * y).sum(-1, keepdim=True)
        v = y - c * x
        s = v.norm(dim=-1, keepdim=True)
        theta = torch.atan2(s, c)
        ratio = torch.where(s > 0, theta / torch.where(s > 0, s, torch.ones_like(s)), torch.ones_like(s))
        return ratio * v

    def transport(self, x, u, v):
        theta = u.norm(dim=-1, keepdim=True)
        uv = (u * v).sum(-1, keepdim=True)
        half = _sinc(theta / 2)
        return v - 0.5 * half * half * uv * u - _sinc(theta) * uv * x

    def inner(self, x, u, v):
        return (u * v).sum(-1)

    def dist(self, x, y):
        c = (x * y).sum(-1)
        s = (y - c.unsqueeze(-1) * x).norm(dim=-1)
        return torch.atan2(s, c)

    def proj(self, x, v):
        return v - (x * v).sum(-1, keepdim=True) * x

    def contains(self, x, tol=1e-10):
        return bool(((x.norm(dim=-1) - 1).abs() <= tol).all())

    def random_point(self, *shape, generator=None, dtype=torch.float64) -> torch.Tensor:
        x = torch.randn(*shape, self.D, generator=generator, dtype=dtype)
        return x / x.norm(dim=-1, keepdim=True)

    def random_tangent(self, x, generator=None) -> torch.Tensor:
        return self.proj(x, torch.randn(x.shape, generator=generator, dtype=x.dtype))

    def describe(self):
        return f"sphere S^{self.D - 1}"
