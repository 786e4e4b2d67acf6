"""Regularizers Psi of composite objectives f(x) + Psi(x), with their proximal operators.

prox_{gamma Psi}(v) = argmin_x { gamma Psi(x) + ||x - v||^2 / 2 }, applied to the last dimension of
a tensor of any leading (batch) shape: R runs or n clients advance as one computation.

* ``none``: Psi = 0, prox = identity.
* ``l1``: Psi(x) = s ||x||_1 (``strength`` s >= 0), prox = soft thresholding at gamma s:
  sign(v) max(|v| - gamma s, 0).
* ``box``: Psi = indicator of {||x||_inf <= r} (``radius`` r > 0), prox = projection, clamp(v, -r, r)
  (for every gamma).

:func:`composite_solution` solves min f + Psi in float64 by the proximal gradient method with stepsize
1/L to a fixed-point residual ||x - prox_{Psi/L}(x - grad f(x)/L)|| <= ``tol`` (a linear rate on a
strongly convex f). At the solution grad f(x*) is in -dPsi(x*), in general nonzero: the reason naive
clipping of grad f moves the fixed point (Gorbunov et al. 2023, arXiv 2310.01860).
"""
from __future__ import annotations

import math

import torch

__all__ = ["KINDS", "Regularizer", "as_regularizer", "composite_solution"]

KINDS = ("none", "l1", "box")


class Regularizer:
    """Psi of one of :data:`KINDS` (module docstring); ``strength`` (l1) or ``radius`` (box)."""

    def __init__(self, kind: str = "none", strength: float | None = None, radius: float | None = None):
        if kind not in KINDS:
            raise ValueError(f"regularizer '{kind}' is unknown: use one of {', '.join(KINDS)}")
        if kind == "l1" and (strength is None or not float(strength) >= 0 or radius is not None):
            raise ValueError("regularizer 'l1' needs 'strength' >= 0 (and no 'radius')")
        if kind == "box" and (radius is None or not float(radius) > 0 or strength is not None):
            raise ValueError("regularizer 'box' needs 'radius' > 0 (and no 'strength')")
        if kind == "none" and (strength is not None or radius is not None):
            raise ValueError("regularizer 'none' has no parameters: leave 'strength' and 'radius' unset")
        self.kind = kind
        self.strength = None if strength is None else float(strength)
        self.radius = None if radius is None else float(radius)

    def __repr__(self) -> str:
        arg = (f", strength={self.strength!r}" if self.kind == "l1" else
               f", radius={self.radius!r}" if self.kind == "box" else "")
        return f"Regularizer({self.kind!r}{arg})"

    @property
    def trivial(self) -> bool:
        """Whether Psi = 0 (prox is the identity)."""
        return self.kind == "none" or (self.kind == "l1" and self.strength == 0.0)

    def value(self, X: torch.Tensor) -> torch.Tensor:
        """Psi of every row (last dimension) of X (inf outside the box)."""
        if self.kind == "l1":
            return self.strength * X.abs().sum(-1)
        if self.kind == "box":
            out = torch.zeros(X.shape[:-1], dtype=X.dtype, device=X.device)
            return out.masked_fill(X.abs().amax(-1) > self.radius * (1 + 1e-12), math.inf)
        return torch.zeros(X.shape[:-1], dtype=X.dtype, device=X.device)

    def prox(self, V: torch.Tensor, gamma) -> torch.Tensor:
        """prox_{gamma Psi} of every row of V (``gamma`` a number, or a tensor broadcasting against V)."""
        if self.kind == "l1":
            if self.strength == 0.0:
                return V
            return torch.sign(V) * torch.clamp(V.abs() - gamma * self.strength, min=0.0)
        if self.kind == "box":
            return V.clamp(-self.radius, self.radius)
        return V


def as_regularizer(spec) -> Regularizer:
    """A :class:`Regularizer` from None (Psi = 0), a kind name, a mapping {kind, strength | radius}, or one."""
    if spec is None:
        return Regularizer()
    if isinstance(spec, Regularizer):
        return spec
    if isinstance(spec, str):
        return Regularizer(spec)
    if isinstance(spec, dict):
        extra = set(spec) - {"kind", "strength", "radius"}
        if extra:
            raise ValueError(f"regularizer: unknown keys {sorted(extra)}: use 'kind' and 'strength' (l1) or 'radius' (box)")
        return Regularizer(spec.get("kind", "none"), spec.get("strength"), spec.get("radius"))
    raise ValueError(f"regularizer: expected a kind name, {{kind, strength | radius}} or a Regularizer, "
                     f"got {type(spec).__name__}")


def composite_solution(problem, reg: Regularizer, tol: float = 1e-14, max_iter: int = 1_000_000,
                       x0: torch.Tensor | None = None) -> torch.Tensor:
    """argmin f + Psi of a convex ``problem`` (float64; f = its smooth part), by proximal gradient steps
    1/L from ``x0`` (default: f's minimizer) to ||x - prox_{Psi/L}(x - grad f(x)/L)|| <= tol (module
    docstring). A problem with Psi (:meth:`Problem.with_nonsmooth`) has this point as its ``x_star``."""
    reg = as_regularizer(reg)
    if x0 is None:
        x0 = problem.x_star if problem.nonsmooth is None else problem.solve()
    x = x0.to(torch.float64).clone()
    if reg.trivial:
        return x
    step = 1.0 / problem.L
    for _ in range(max_iter):
        x_new = reg.prox(x - step * problem.full_grad(x).to(torch.float64), step)
        if float((x_new - x).norm()) <= tol:
            return x_new
        x = x_new
    raise RuntimeError(f"composite_solution: no fixed point to {tol:g} in {max_iter} proximal gradient steps")
