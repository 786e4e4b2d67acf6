"""Muon and its distance-aware step-scale rules, as ``torch.optim.Optimizer``s.

``Muon`` follows the definition of ``torch.optim.Muon`` (PyTorch >= 2.9) line for line: EMA
momentum ``B <- mu B + (1 - mu) g`` (``lerp``), optional Nesterov look-ahead ``g + mu (B - g)``,
Newton–Schulz orthogonalization with Muon's quintic coefficients, decoupled weight decay and the
same ``adjust_lr_fn`` rules. It differs in three documented ways, which is why it is kept rather
than delegating to torch (tests check that both give the same iterates when configured alike):

1. parameters of equal shape are orthogonalized together in one batched ``bmm`` call
   (``apply_batched`` + ``newton_schulz``), instead of one call per parameter;
2. the orthogonalization runs in the parameter's dtype by default (``ns_dtype=None``); torch
   always uses bfloat16 (pass ``ns_dtype=torch.bfloat16`` to reproduce it exactly);
3. parameters with more than two dimensions (convolution kernels) are accepted and viewed as
   ``(shape[0], prod(shape[1:]))`` matrices; torch refuses them.

The three distance-aware variants (``DistanceAdaptiveMuon``, ``ScaleCalibratedMuon``,
``DistanceFreeMuon``) keep Muon's direction and replace the fixed step scale.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from .closure import closure_loss
from .lmo import (
    MUON_NS_COEFFICIENTS,
    apply_batched,
    as_matrix,
    newton_schulz,
    norm_many,
)

__all__ = ["Muon", "DistanceAdaptiveMuon", "ScaleCalibratedMuon", "DistanceFreeMuon"]


def _adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """torch.optim.Muon's shape-dependent learning-rate adjustment (same names, same values)."""
    A, B = shape[0], math.prod(shape[1:])
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1.0, A / B))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(A, B))
    return lr  # "none"


class Muon(Optimizer):
    r"""Muon: momentum orthogonalized by Newton–Schulz (steepest descent in the spectral norm).

    For every matrix parameter ``W`` with gradient ``G``:

    .. math::
        B \leftarrow \mu B + (1-\mu) G,\quad
        \tilde B = \begin{cases} G + \mu (B - G) & \text{nesterov} \\ B & \text{otherwise}\end{cases},\quad
        W \leftarrow (1 - \gamma\lambda) W - \gamma' \,\mathrm{NS}_k(\tilde B),

    with ``NS_k`` the Newton–Schulz orthogonalization (``optsim.optim.lmo.newton_schulz``),
    ``gamma' = adjust(gamma, shape)``. Defaults are torch.optim.Muon's. The Newton–Schulz step
    is the spectral-norm LMO up to sign and the tolerance documented in ``newton_schulz``.

    Args:
        params: parameters or param groups; every parameter must have >= 2 dimensions (use
            ``Gluon``/``Scion`` with another norm, or AdamW, for biases and gains).
        lr: learning rate ``gamma`` (default 1e-3).
        weight_decay: decoupled weight decay ``lambda`` (default 0.1, torch's default).
        momentum: ``mu`` (default 0.95).
        nesterov: Nesterov look-ahead (default True).
        ns_coefficients: ``(a, b, c)`` or a per-step schedule (default Muon's quintic).
        eps: Frobenius-norm floor in the normalization (default 1e-7).
        ns_steps: Newton–Schulz iterations (default 5).
        adjust_lr_fn: ``None``/``"original"`` (``sqrt(max(1, A/B))``), ``"match_rms_adamw"``
            (``0.2 sqrt(max(A, B))``) or ``"none"``.
        ns_dtype: dtype of the orthogonalization (default: the parameter's dtype).

    Example:
        >>> model = torch.nn.Linear(8, 4, bias=False)
        >>> opt = Muon(model.parameters(), lr=0.02)
        >>> model(torch.randn(16, 8)).square().mean().backward(); opt.step()

    References:
        Jordan, Jin, Boza, You, Cesista, Newhouse, Bernstein (2024), "Muon: An optimizer for
        hidden layers in neural networks" (blog post; the algorithm box there).
        Liu et al. (2025), "Muon is Scalable for LLM Training", arXiv:2502.16982
        (``match_rms_adamw`` adjustment and decoupled weight decay).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients=MUON_NS_COEFFICIENTS,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        ns_dtype: torch.dtype | None = None,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if adjust_lr_fn not in (None, "original", "match_rms_adamw", "none"):
            raise ValueError(f"adjust_lr_fn must be None, 'original', 'match_rms_adamw' or 'none', got {adjust_lr_fn!r}")
        if ns_steps < 0:
            raise ValueError(f"ns_steps must be >= 0, got {ns_steps}")
        defaults = dict(
            lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
            ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn, ns_dtype=ns_dtype,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim < 2:
                    raise ValueError(
                        f"{type(self).__name__} needs parameters with >= 2 dimensions, found shape "
                        f"{tuple(p.shape)}; optimize biases/gains with Gluon(norm='l2'|'sign') or AdamW"
                    )

    # -- shared machinery ----------------------------------------------------------------------
    def _orthogonalized_momentum(self, group) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Update the momentum buffers of a group; return (params, grads, NS(update)) lists."""
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return [], [], []
        grads = []
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            grads.append(p.grad)
        bufs = []
        for p in params:
            st = self.state[p]
            if "momentum_buffer" not in st:
                st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            bufs.append(st["momentum_buffer"])
        mu = group["momentum"]
        torch._foreach_lerp_(bufs, grads, 1.0 - mu)
        updates = [g.lerp(b, mu) for g, b in zip(grads, bufs)] if group["nesterov"] else bufs
        ortho = apply_batched(
            lambda X: newton_schulz(X, group["ns_steps"], group["ns_coefficients"], group["eps"], group["ns_dtype"]),
            updates, matrix=True,
        )
        return params, grads, ortho

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        """One Muon step. ``closure`` (optional) re-evaluates the loss and its gradient."""
        loss = closure_loss(closure)
        for group in self.param_groups:
            params, _, ortho = self._orthogonalized_momentum(group)
            lr, wd = group["lr"], group["weight_decay"]
            for p, o in zip(params, ortho):
                if wd:
                    p.mul_(1.0 - lr * wd)
                p.add_(o, alpha=-_adjusted_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


def _inner(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum()


class DistanceAdaptiveMuon(Muon):
    r"""Distance-Adaptive Muon: the step radius is set from the distance the trajectory explored.

    Each matrix (layer-wise) moves along Muon's direction ``-O_k`` (``O_k = NS(B~_k)``) by

    .. math::
        \bar r_k = \max\big(r_\epsilon,\ \max_{j \le k} \|W_j - W_0\|\big),\qquad
        t_k = \gamma\, \bar r_k\, \frac{s_k}{\sqrt{\sum_{j \le k} s_j^2}},\qquad
        s_k = \langle \tilde B_k, O_k \rangle \approx \|\tilde B_k\|_*,

    i.e. DoG's distance-over-gradients rule applied to the non-Euclidean steepest-descent step
    ``s_k O_k`` (``s_k`` the nuclear norm of the momentum, as measured by the Newton–Schulz
    direction). ``||.||`` is the spectral norm (``distance_norm``; ``"l2"`` = Frobenius is
    cheaper) and ``r_eps = r_eps_rel * (1 + ||W_0||)``. ``lr`` is a unitless multiplier (1).

    Status of the rule: read from the abstract of the paper below ("trust-region radius is set
    from the radius explored by the trajectory", stationarity under a bounded trajectory); the
    paper's exact radius schedule and constants could not be consulted. The DoG normalization
    (Ivgi, Hinder, Carmon 2023, "DoG is SGD's best friend", arXiv:2302.12022) is our choice: with
    unit steps ``r_k / sqrt(k+1)`` the radius can grow without bound, while this normalization
    shrinks the step as the momentum's dual norm decays.

    Reference:
        Demidovich, Chakraborty, Malinovsky, Nedić, Richtárik (2026), "Distance-Aware Muon:
        Adaptive Step Scaling for Normalized Optimization", arXiv:2605.18999 (Distance-Adaptive
        Muon, for smooth non-convex objectives).
    """

    def __init__(self, params, lr: float = 1.0, momentum: float = 0.95, nesterov: bool = True,
                 r_eps_rel: float = 1e-3, distance_norm: str = "spectral", **kwargs) -> None:
        if r_eps_rel <= 0:
            raise ValueError(f"r_eps_rel must be > 0, got {r_eps_rel}")
        if distance_norm not in ("spectral", "l2"):
            raise ValueError(f"distance_norm must be 'spectral' or 'l2', got {distance_norm!r}")
        kwargs.setdefault("weight_decay", 0.0)
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, **kwargs)
        for g in self.param_groups:
            g.setdefault("r_eps_rel", r_eps_rel)
            g.setdefault("distance_norm", distance_norm)

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            params, _, ortho = self._orthogonalized_momentum(group)
            if not params:
                continue
            for p in params:
                st = self.state[p]
                if "x0" not in st:
                    st["x0"] = p.detach().clone()
                    st["sum_sq"] = torch.zeros((), dtype=p.dtype, device=p.device)
            nm = group["distance_norm"]
            x0n = norm_many([as_matrix(self.state[p]["x0"]) for p in params], nm)
            dist = norm_many([as_matrix(p - self.state[p]["x0"]) for p in params], nm)
            mu = group["momentum"]
            for p, o, n0, d in zip(params, ortho, x0n, dist):
                st = self.state[p]
                r_eps = group["r_eps_rel"] * (1.0 + n0)
                rbar = torch.maximum(torch.maximum(r_eps, d), st.get("rbar", r_eps))
                st["rbar"] = rbar
                upd = p.grad.lerp(st["momentum_buffer"], mu) if group["nesterov"] else st["momentum_buffer"]
                s_k = _inner(upd, o).clamp_min(0.0)
                st["sum_sq"] += s_k**2
                t = group["lr"] * rbar * s_k / st["sum_sq"].sqrt().clamp_min(torch.finfo(p.dtype).tiny)
                p.sub_(o * t.to(p.dtype))
        return loss


class ScaleCalibratedMuon(Muon):
    r"""Scale-Calibrated Muon: Muon's EMA direction, step length from a local descent certificate.

    With ``O_k = NS(B~_k)`` (so ``-O_k`` is the spectral-ball LMO of the momentum, spectral norm
    about 1) and the fresh gradient ``G_k``, the certificate ``c_k = <G_k, O_k>`` bounds the
    first-order decrease along ``-O_k``; the step minimizes the quadratic model
    ``-t c_k + (L/2) t^2``, layer-wise:

    .. math:: W_{k+1} = W_k - t_k O_k, \qquad t_k = \gamma\, \max(c_k, 0), \quad \gamma = 1/L.

    A negative certificate (momentum disagrees with the gradient) gives no step for that layer.

    Status of the rule: read from the abstract of the paper below ("keeps Muon's exponential
    moving average but sets the step length from a local descent certificate computed from the
    current gradient and momentum"); the exact certificate and constants in the paper could not
    be consulted; ``lr`` plays the role of ``1/L`` here (our assumption).

    Reference:
        Demidovich, Chakraborty, Malinovsky, Nedić, Richtárik (2026), "Distance-Aware Muon:
        Adaptive Step Scaling for Normalized Optimization", arXiv:2605.18999 (Scale-Calibrated
        Muon, star-convex objectives).
    """

    def __init__(self, params, lr: float = 1.0, momentum: float = 0.95, nesterov: bool = True, **kwargs) -> None:
        kwargs.setdefault("weight_decay", 0.0)
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, **kwargs)

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            params, grads, ortho = self._orthogonalized_momentum(group)
            for p, g, o in zip(params, grads, ortho):
                t = group["lr"] * _inner(g, o).clamp_min(0.0)
                p.sub_(o * t)
        return loss


class DistanceFreeMuon(Muon):
    r"""Distance-Free Muon: trust region re-centred at the iterate, radius from a distance certificate.

    Needs the loss (``step(closure)``). With ``f_k`` the loss, ``f_low`` a known lower bound of
    ``f`` (0 for non-negative losses) and ``||G_k||_*`` the sum over layers of the nuclear norms
    of the gradients (the dual of the max-over-layers spectral norm), star-convexity gives
    ``f_k - f* <= ||G_k||_* ||W_k - W*||``, so

    .. math:: D_k = (f_k - f_{low})_+ / \|G_k\|_*

    is a scalar certificate (a lower bound on the distance to a minimizer). The radius of the
    ball around ``W_k`` is chosen by a majorized one-dimensional search, layer-wise:
    ``t_k = min(D_k, gamma * max(<G_k, O_k>, 0))`` (the minimizer of the quadratic majorant
    ``-t c_k + (L/2) t^2`` over ``[0, D_k]``, ``gamma = 1/L``), and ``W_{k+1} = W_k - t_k O_k``.

    Status of the rule: reconstructed from the abstract of the paper below ("recentered
    trust-region method that uses a scalar distance certificate and a majorized one-dimensional
    search"); the exact certificate, majorant and search in the paper could not be consulted.

    Reference:
        Demidovich, Chakraborty, Malinovsky, Nedić, Richtárik (2026), "Distance-Aware Muon:
        Adaptive Step Scaling for Normalized Optimization", arXiv:2605.18999 (Distance-Free Muon).
    """

    def __init__(self, params, lr: float = 1.0, momentum: float = 0.95, nesterov: bool = True,
                 f_low: float = 0.0, **kwargs) -> None:
        kwargs.setdefault("weight_decay", 0.0)
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, **kwargs)
        for g in self.param_groups:
            g.setdefault("f_low", f_low)

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        if closure is None:
            raise ValueError("DistanceFreeMuon needs the loss: call step(closure) with a closure that "
                             "zeroes the gradients, calls backward() and returns the loss")
        loss = closure_loss(closure)
        per_group = [self._orthogonalized_momentum(g) for g in self.param_groups]
        all_grads = [g for _, grads, _ in per_group for g in grads]
        if not all_grads:
            return loss
        dual = torch.stack([n.to(torch.float64) for n in norm_many([as_matrix(g) for g in all_grads], "spectral", dual=True)]).sum()
        f = torch.as_tensor(loss, dtype=torch.float64, device=dual.device).detach()
        for group, (params, grads, ortho) in zip(self.param_groups, per_group):
            D = (f - group["f_low"]).clamp_min(0.0) / dual.clamp_min(1e-30)
            for p, g, o in zip(params, grads, ortho):
                c = _inner(g, o).clamp_min(0.0).to(torch.float64)
                t = torch.minimum(D, group["lr"] * c)
                p.sub_(o * t.to(p.dtype))
        return loss
