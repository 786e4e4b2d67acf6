"""Local LMO: projection-free constrained gradient method with a local linear minimization oracle.

The method (Local LMO) minimizes ``f`` over a closed convex set ``X`` by

    x_{k+1} in argmin_{z in X ∩ B(x_k, t_k)} <∇f(x_k), z>,       x_0 in X,

with ``B(x, t)`` the Euclidean ball of radius ``t`` (the effective stepsize). Unconstrained, it
is normalized gradient descent ``x - t g / ||g||``; with ``t_k = gamma ||∇f(x_k)||`` it is gradient
descent with stepsize ``gamma`` (restricted to the affine hull for affine ``X``).

This module gives the local LMO of five sets as batched functions over ``(..., d)`` (every
leading dimension is a batch dimension, e.g. clients) and an optimizer:

* ``local_lmo_unconstrained`` (X = R^d), ``local_lmo_affine`` (X = {z : A z = b}) — closed form;
* ``local_lmo_l2_ball`` (X = B(c, R)) — closed form via the intersection of the two spheres;
* ``local_lmo_box`` (X = [lo, hi]) — exact, by sorting the coordinates' breakpoints;
* ``local_lmo_simplex`` (X = probability simplex) — bisection on the scalar ``s`` below.

For any closed convex ``X`` and ``x in X`` the KKT conditions give the solution as a point of
the projected-gradient path ``z(s) = P_X(x - s g)`` with ``||z(s) - x|| = t`` (``||z(s) - x||`` is
non-decreasing in ``s``), or the end of the path when the whole path stays inside the ball; the
box and simplex oracles use this characterization.

Reference:
    Richtárik, Gruntkowska, Li (2026), "Local LMO: Constrained Gradient Optimization via a Local
    Linear Minimization Oracle", arXiv:2605.08850 (the Local LMO iteration, as stated in the
    abstract). The paper's theorems give several radius schedules; we could read only the
    abstract, so the two rules offered here (``t_k = gamma ||∇f(x_k)||``, which makes the method
    GD when the constraint is inactive, and constant ``t_k``) are our choice, not its theorems.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from .closure import closure_loss

__all__ = [
    "local_lmo_unconstrained",
    "local_lmo_affine",
    "local_lmo_l2_ball",
    "local_lmo_box",
    "local_lmo_simplex",
    "project_simplex",
    "LocalLMO",
    "CONSTRAINTS",
]


def _as_t(t, x: Tensor) -> Tensor:
    """Radius as a tensor broadcastable against (..., 1)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.unsqueeze(-1) if t.ndim and t.shape == x.shape[:-1] else t


def _unit(v: Tensor) -> Tensor:
    n = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    return torch.where(n > 0, v / torch.where(n > 0, n, torch.ones_like(n)), torch.zeros_like(v))


def local_lmo_unconstrained(x: Tensor, g: Tensor, t) -> Tensor:
    """``argmin_{||z - x|| <= t} <g, z> = x - t g / ||g||`` (x if g = 0)."""
    return x - _as_t(t, x) * _unit(g)


def local_lmo_affine(x: Tensor, g: Tensor, t, A: Tensor | None = None, basis: Tensor | None = None) -> Tensor:
    """Local LMO of ``{z : A z = b}`` (``x`` feasible): ``x - t P g / ||P g||``.

    ``P`` projects onto the null space of ``A`` (``(k, d)``); pass ``basis`` = an orthonormal basis
    of the row space of ``A`` as a ``(d, r)`` matrix (``affine_row_basis(A)``) to reuse it.
    """
    if basis is None:
        if A is None:
            raise ValueError("local_lmo_affine needs A or basis")
        basis = affine_row_basis(A)
    Pg = g - (g @ basis) @ basis.mT
    return x - _as_t(t, x) * _unit(Pg)


def affine_row_basis(A: Tensor, rtol: float = 1e-10) -> Tensor:
    """Orthonormal basis ``(d, r)`` of the row space of ``A`` (``(k, d)``), by SVD."""
    _, S, Vh = torch.linalg.svd(A, full_matrices=False)
    keep = S > rtol * S.max().clamp_min(torch.finfo(A.dtype).tiny)
    return Vh[keep].mT


def local_lmo_l2_ball(x: Tensor, g: Tensor, t, center, R) -> Tensor:
    """Local LMO of the Euclidean ball ``B(c, R)`` (``x`` inside it), in closed form.

    If ``x - t g/||g||`` is in ``B(c, R)`` it is the answer; else if ``c - R g/||g||`` is in
    ``B(x, t)`` that is; otherwise both constraints are active and the answer is the point of the
    intersection sphere of ``S(x, t)`` and ``S(c, R)`` that minimizes ``<g, z>``.
    """
    t = _as_t(t, x)
    c = torch.as_tensor(center, dtype=x.dtype, device=x.device).expand_as(x)
    R = _as_t(R, x)
    u_g = _unit(g)
    z1 = x - t * u_g
    z2 = c - R * u_g
    ok1 = torch.linalg.vector_norm(z1 - c, dim=-1, keepdim=True) <= R * (1 + 1e-12)
    ok2 = torch.linalg.vector_norm(z2 - x, dim=-1, keepdim=True) <= t * (1 + 1e-12)
    # both active: z = x + a u + rho w, u = (c - x)/delta, w ⊥ u the unit direction of -g_perp
    diff = c - x
    delta = torch.linalg.vector_norm(diff, dim=-1, keepdim=True)
    u = _unit(diff)
    a = (t**2 - R**2 + delta**2) / (2 * delta.clamp_min(torch.finfo(x.dtype).tiny))
    rho = (t**2 - a**2).clamp_min(0.0).sqrt()
    g_perp = g - (g * u).sum(-1, keepdim=True) * u
    w = -_unit(g_perp)
    z3 = x + a * u + rho * w
    return torch.where(ok1, z1, torch.where(ok2, z2, z3))


def local_lmo_box(x: Tensor, g: Tensor, t, lo, hi) -> Tensor:
    """Exact local LMO of the box ``[lo, hi]`` (``x`` inside it), batched over ``(..., d)``.

    The answer is ``clip(x - lam g, lo, hi)`` for the ``lam >= 0`` at which its distance to ``x``
    is ``t`` (or ``lam = inf`` if the whole path is within ``t``). The squared distance is
    piecewise quadratic in ``lam`` with breakpoints where coordinates hit a bound; they are
    sorted and the right piece is solved in closed form (no iteration).
    """
    t = _as_t(t, x)
    lo = torch.as_tensor(lo, dtype=x.dtype, device=x.device).expand_as(x)
    hi = torch.as_tensor(hi, dtype=x.dtype, device=x.device).expand_as(x)
    cap = torch.where(g > 0, x - lo, torch.where(g < 0, hi - x, torch.zeros_like(x))).clamp_min(0.0)
    ag = g.abs()
    moving = ag > 0
    bp = torch.where(moving, cap / torch.where(moving, ag, torch.ones_like(ag)), torch.zeros_like(x))
    order = bp.argsort(dim=-1)
    bp_s, cap_s, ag_s = bp.gather(-1, order), cap.gather(-1, order), ag.gather(-1, order)
    S = (cap_s**2).cumsum(-1)                         # saturated part up to and including j
    Grem = (ag_s**2).sum(-1, keepdim=True) - (ag_s**2).cumsum(-1)  # free part after j
    D = S + bp_s**2 * Grem                            # squared distance at breakpoint j
    j0 = (D < t**2).sum(-1, keepdim=True)             # pieces fully inside the ball
    zero = torch.zeros_like(t.expand(*x.shape[:-1], 1))
    S_prev = torch.where(j0 > 0, S.gather(-1, (j0 - 1).clamp_min(0)), zero)
    G_prev = torch.where(j0 > 0, Grem.gather(-1, (j0 - 1).clamp_min(0)), (ag_s**2).sum(-1, keepdim=True))
    finite = (j0 < x.shape[-1]) & (G_prev > 0)
    lam = torch.where(finite, ((t**2 - S_prev).clamp_min(0.0) / torch.where(G_prev > 0, G_prev, torch.ones_like(G_prev))).sqrt(),
                      torch.full_like(zero, float("inf")))
    step = torch.where(moving, torch.minimum(lam * ag, cap), torch.zeros_like(x))
    return x - torch.sign(g) * step


def project_simplex(y: Tensor) -> Tensor:
    """Euclidean projection of each row of ``(..., d)`` onto the probability simplex (by sorting)."""
    u, _ = torch.sort(y, dim=-1, descending=True)
    css = u.cumsum(-1) - 1.0
    k = torch.arange(1, y.shape[-1] + 1, device=y.device, dtype=y.dtype)
    rho = ((u - css / k) > 0).sum(-1, keepdim=True).clamp_min(1)
    theta = css.gather(-1, rho - 1) / rho.to(y.dtype)
    return (y - theta).clamp_min(0.0)


def local_lmo_simplex(x: Tensor, g: Tensor, t, iters: int = 100) -> Tensor:
    """Local LMO of the probability simplex (``x`` in it): ``P(x - s g)`` with ``||. - x|| = t``.

    The end of the path (``s -> inf``) is the projection of ``x`` onto the face of the simplex
    spanned by the coordinates where ``g`` is smallest; if it is within ``t`` of ``x`` it is the
    answer. Otherwise ``s`` is found by doubling and then ``iters`` bisection steps, all batched
    (the loop runs over iterations, never over rows); the result is feasible and within the
    bisection tolerance of the exact answer.
    """
    t = _as_t(t, x)
    gmin = g.amin(-1, keepdim=True)
    face = g <= gmin + 1e-12 * g.abs().amax(-1, keepdim=True)
    # off-face coordinates far below the projection threshold (which is >= -1 for x_J, sum <= 1)
    low = -2.0 - x.abs().amax(-1, keepdim=True)
    z_end = project_simplex(torch.where(face, x, low.expand_as(x)))
    end_inside = torch.linalg.vector_norm(z_end - x, dim=-1, keepdim=True) <= t

    def dist(s: Tensor) -> Tensor:
        return torch.linalg.vector_norm(project_simplex(x - s * g) - x, dim=-1, keepdim=True)

    gn = torch.linalg.vector_norm(g, dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    hi = (t / gn).expand(*x.shape[:-1], 1).clone()    # dist(s) <= s ||g||, so s >= t/||g||
    lo = torch.zeros_like(hi)
    for _ in range(200):                              # doubling until dist(hi) >= t (or end)
        need = (dist(hi) < t) & ~end_inside
        if not bool(need.any()):
            break
        lo = torch.where(need, hi, lo)
        hi = torch.where(need, hi * 2, hi)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        inside = dist(mid) <= t
        lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
    return torch.where(end_inside, z_end, project_simplex(x - lo * g))


CONSTRAINTS = ("none", "l2_ball", "box", "simplex", "affine")


class LocalLMO(Optimizer):
    r"""Local LMO as a ``torch.optim.Optimizer``: each parameter is a vector constrained to ``X``.

    ``x_{k+1} = argmin_{z in X ∩ B(x_k, t_k)} <∇f(x_k), z>`` with ``t_k = lr * ||∇f(x_k)||_2``
    (``radius_rule="gradient"``: gradient descent with stepsize ``lr`` when the constraint is
    inactive; ``lr = 1/L`` for an L-smooth objective) or ``t_k = lr`` (``radius_rule="constant"``).

    Each param group sets its constraint (applied to every parameter of the group, flattened):

    * ``constraint="none"``;
    * ``constraint="l2_ball"``, ``center`` (scalar or tensor), ``R``;
    * ``constraint="box"``, ``lo``, ``hi`` (scalars or tensors of the parameter's shape);
    * ``constraint="simplex"`` (entries >= 0 summing to 1);
    * ``constraint="affine"``, ``A`` (``(k, numel)``), ``b`` (``(k,)``): ``{z : A z = b}``.

    The initial point must be feasible (checked at construction, with the violation in the
    error message).

    Reference:
        Richtárik, Gruntkowska, Li (2026), "Local LMO: Constrained Gradient Optimization via a
        Local Linear Minimization Oracle", arXiv:2605.08850.
    """

    def __init__(self, params, lr: float = 1e-2, constraint: str = "none", radius_rule: str = "gradient",
                 center=0.0, R: float = 1.0, lo=0.0, hi=1.0, A: Tensor | None = None, b: Tensor | None = None,
                 simplex_iters: int = 100, feasibility_tol: float = 1e-6) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if radius_rule not in ("gradient", "constant"):
            raise ValueError(f"radius_rule must be 'gradient' or 'constant', got {radius_rule!r}")
        super().__init__(params, dict(lr=lr, constraint=constraint, radius_rule=radius_rule, center=center, R=R,
                                      lo=lo, hi=hi, A=A, b=b, simplex_iters=simplex_iters,
                                      feasibility_tol=feasibility_tol))
        for group in self.param_groups:
            if group["constraint"] not in CONSTRAINTS:
                import difflib

                close = difflib.get_close_matches(str(group["constraint"]), CONSTRAINTS, n=2)
                raise ValueError(f"unknown constraint {group['constraint']!r} (known: {', '.join(CONSTRAINTS)})"
                                 + (f"; did you mean {close[0]}?" if close else ""))
            if group["constraint"] == "affine" and (group["A"] is None or group["b"] is None):
                raise ValueError("constraint 'affine' needs A (k, numel) and b (k,)")
            for p in group["params"]:
                self._check_feasible(group, p.detach().reshape(-1))

    @staticmethod
    def _violation(group, x: Tensor) -> tuple[float, str]:
        c = group["constraint"]
        if c == "l2_ball":
            v = float(torch.linalg.vector_norm(x - torch.as_tensor(group["center"], dtype=x.dtype, device=x.device).reshape(-1)) - group["R"])
            return v, f"||x - center|| - R = {v:.3g}"
        if c == "box":
            lo = torch.as_tensor(group["lo"], dtype=x.dtype, device=x.device).reshape(-1)
            hi = torch.as_tensor(group["hi"], dtype=x.dtype, device=x.device).reshape(-1)
            v = float(torch.maximum(lo - x, x - hi).max())
            return v, f"largest bound violation {v:.3g}"
        if c == "simplex":
            v = max(float((-x).max()), abs(float(x.sum()) - 1.0))
            return v, f"min entry {float(x.min()):.3g}, sum {float(x.sum()):.6g}"
        if c == "affine":
            A = torch.as_tensor(group["A"], dtype=x.dtype, device=x.device)
            v = float(torch.linalg.vector_norm(A @ x - torch.as_tensor(group["b"], dtype=x.dtype, device=x.device)))
            return v, f"||A x - b|| = {v:.3g}"
        return 0.0, ""

    def _check_feasible(self, group, x: Tensor) -> None:
        v, msg = self._violation(group, x)
        if v > group["feasibility_tol"]:
            raise ValueError(f"LocalLMO needs a feasible starting point for constraint {group['constraint']!r}: {msg}")

    def _oracle(self, group, x: Tensor, g: Tensor, t: Tensor) -> Tensor:
        c = group["constraint"]
        if c == "none":
            return local_lmo_unconstrained(x, g, t)
        if c == "l2_ball":
            return local_lmo_l2_ball(x, g, t, torch.as_tensor(group["center"], dtype=x.dtype, device=x.device).reshape(-1)
                                     if torch.as_tensor(group["center"]).ndim else group["center"], group["R"])
        if c == "box":
            cast = lambda v: torch.as_tensor(v, dtype=x.dtype, device=x.device).reshape(-1) if torch.as_tensor(v).ndim else v
            return local_lmo_box(x, g, t, cast(group["lo"]), cast(group["hi"]))
        if c == "simplex":
            return local_lmo_simplex(x, g, t, group["simplex_iters"])
        key = "_affine_basis"
        if key not in group or group[key].device != x.device or group[key].dtype != x.dtype:
            group[key] = affine_row_basis(torch.as_tensor(group["A"], dtype=x.dtype, device=x.device))
        return local_lmo_affine(x, g, t, basis=group[key])

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                x, g = p.detach().reshape(-1), p.grad.reshape(-1)
                t = group["lr"] * (torch.linalg.vector_norm(g) if group["radius_rule"] == "gradient" else 1.0)
                p.copy_(self._oracle(group, x, g, torch.as_tensor(t, dtype=x.dtype, device=x.device)).reshape(p.shape))
        return loss
