"""The manifold interface and the flat case."""
from __future__ import annotations

import math

import torch

__all__ = ["Euclidean", "Manifold", "curvature_zeta"]


def curvature_zeta(kappa_min: float, diameter: float) -> float:
    """Zhang & Sra (2016), "First-order methods for geodesically convex optimization", Lemma 5 (the
    trigonometric distance bound): zeta = sqrt(|kappa|) D / tanh(sqrt(|kappa|) D) when the sectional
    curvature is bounded below by kappa_min < 0 on a domain of diameter D, and 1 when kappa_min >= 0."""
    if kappa_min >= 0:
        return 1.0
    c = math.sqrt(-kappa_min) * float(diameter)
    return 1.0 if c == 0 else c / math.tanh(c)


class Manifold:
    """A Riemannian manifold embedded in R^D (points and tangent vectors are (..., D) tensors; every
    operation broadcasts over the leading dimensions).

    * ``exp(x, u)`` -- the exponential map Exp_x(u) (u tangent at x);
    * ``log(x, y)`` -- its inverse Log_x(y) (the initial velocity of the minimizing geodesic x -> y);
    * ``transport(x, u, v)`` -- parallel transport of v (tangent at x) along t -> Exp_x(t u) to t = 1;
    * ``transport_to(x, y, v)`` -- the same along the minimizing geodesic from x to y;
      ``transporter(x, y)`` -- that map as a function of v, its shared work done once;
    * ``inner(x, u, v)``, ``norm(x, u)``, ``dist(x, y)``, ``proj(x, v)`` (orthogonal projection of an
      ambient vector onto the tangent space at x), ``contains(x, tol)``;
    * ``kappa_min`` -- a lower bound of the sectional curvature (the zeta of :func:`curvature_zeta`);
    * ``exact_maps`` -- True when ``exp``, ``log`` and ``transport`` are the exact exponential map, its
      inverse and parallel transport (the maps the S10 theorems are stated with); False when they are a
      retraction, its inverse and a vector transport in their place (:class:`~optsim.manifolds.Stiefel`).
    """

    name: str = ""
    #: exp / log / transport are the exact exponential map, logarithm and parallel transport
    exact_maps: bool = True
    #: lower bound of the sectional curvature
    kappa_min: float = 0.0
    D: int

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def transport(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def transport_to(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.transport(x, self.log(x, y), v)

    def transporter(self, x: torch.Tensor, y: torch.Tensor, u: torch.Tensor | None = None):
        """``v -> transport_to(x, y, v)`` with the work it shares across vectors (the geodesic's initial
        velocity ``log(x, y)``) done once: the variance-reduced methods move two vectors per step. ``u``:
        the tangent at x with ``exp(x, u) = y`` when the caller took that step (then no ``log``)."""
        if u is None:
            u = self.log(x, y)
        return lambda v: self.transport(x, u, v)

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def norm(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.inner(x, u, u).clamp_min(0).sqrt()

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.norm(x, self.log(x, y))

    def proj(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def contains(self, x: torch.Tensor, tol: float = 1e-10) -> bool:
        raise NotImplementedError

    def zeta(self, diameter: float) -> float:
        """The curvature constant for a domain of the given diameter."""
        return curvature_zeta(self.kappa_min, diameter)

    def describe(self) -> str:
        return self.name


class Euclidean(Manifold):
    """R^D with the dot product: Exp_x(u) = x + u, Log_x(y) = y - x, transport and projection are the
    identity (they return their argument itself, so a Riemannian method's arithmetic is its Euclidean
    counterpart's, bit for bit)."""

    name = "euclidean"

    def __init__(self, D: int | None = None):
        self.D = D

    def exp(self, x, u):
        return x + u

    def log(self, x, y):
        return y - x

    def transport(self, x, u, v):
        return v

    def transport_to(self, x, y, v):
        return v

    def transporter(self, x, y, u=None):
        return _identity

    def inner(self, x, u, v):
        return (u * v).sum(-1)

    def proj(self, x, v):
        return v

    def contains(self, x, tol=1e-10):
        return bool(torch.isfinite(x).all())


def _identity(v):
    return v
