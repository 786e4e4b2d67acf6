"""Layer-wise LMO optimizers: Scion, Gluon, Gluon-MVR and LMO with Hessian-corrected momentum.

All of them move every parameter (a "layer") inside its own norm ball around the current point:

    X_{k+1} = X_k + t_k * lmo_{||.|| <= 1}(M_k),

with a momentum-type estimator ``M_k`` of the gradient; they differ in ``M_k`` and ``t_k``. Each
param group chooses its ball with ``norm`` (see ``optsim.optim.lmo``: ``auto`` = spectral for
matrices and l2 for vectors, ``spectral``, ``colnorm``, ``rownorm``, ``sign``, ``l2``, ``l1``)
and its radius with ``lr * radius`` (or the adaptive ``L0``/``L1`` rule of Gluon). Parameters of
equal shape in a group share one batched LMO call.

Notation follows each paper: Scion's ``alpha`` is the weight of the *new* gradient
(``d <- (1 - alpha) d + alpha g``); Gluon's ``beta`` is the weight of the *old* momentum
(``M <- beta M + (1 - beta) g``). Scion (unconstrained) with ``alpha`` equals Gluon with
``beta = 1 - alpha`` and a constant radius.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from .closure import closure_loss
from .lmo import MATRIX_NORMS, MUON_NS_COEFFICIENTS, lmo_many, resolve_norm

__all__ = ["Scion", "Gluon", "GluonMVR", "LMOHessianCorrected"]


class _LayerwiseLMO(Optimizer):
    """Shared machinery: validation of per-group norms and the layer-wise LMO update."""

    def __init__(self, params, defaults: dict) -> None:
        if not defaults.get("lr", 0.0) >= 0.0:
            raise ValueError(f"lr must be >= 0, got {defaults['lr']}")
        if not defaults.get("radius", 1.0) > 0.0:
            raise ValueError(f"radius must be > 0, got {defaults['radius']}")
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                nm = resolve_norm(group["norm"], p.ndim)  # raises with close matches on a typo
                if nm in MATRIX_NORMS and p.ndim < 2:
                    raise ValueError(
                        f"norm {nm!r} needs parameters with >= 2 dimensions, found shape {tuple(p.shape)}; "
                        "put biases/gains in a param group with norm 'l2', 'sign' or 'auto'"
                    )
            if group.get("L0") is not None and not group["L0"] > 0:
                raise ValueError(f"L0 must be > 0 (or None for a constant radius), got {group['L0']}")
            if group.get("spectral_method", "newton_schulz") not in ("newton_schulz", "svd"):
                raise ValueError(f"spectral_method must be 'newton_schulz' or 'svd', got {group['spectral_method']!r}")

    @staticmethod
    def _lmo_options(group) -> dict:
        return dict(method=group["spectral_method"], ns_steps=group["ns_steps"], ns_coefficients=group["ns_coefficients"])

    def _directions(self, group, momenta: list[Tensor]) -> list[Tensor]:
        """Unit-ball LMO of every momentum tensor of the group (batched by shape)."""
        return lmo_many(momenta, group["norm"], 1.0, **self._lmo_options(group))

    def _radii(self, group, momenta: list[Tensor], dirs: list[Tensor]) -> list[Tensor | float]:
        """Layer radius ``t``: ``lr * radius``, or Gluon's ``||M||_* / (L0 + L1 ||M||_*)``."""
        if group.get("L0") is None:
            return [group["lr"] * group["radius"]] * len(momenta)
        # ||M||_* = -<M, lmo(M)>: exact for exact LMOs, the Newton–Schulz surrogate otherwise.
        duals = [-(m * d).sum() for m, d in zip(momenta, dirs)]
        return [s / (group["L0"] + group["L1"] * s) for s in duals]

    def _lmo_update(self, group, params: list[Tensor], momenta: list[Tensor]) -> None:
        if not params:
            return
        dirs = self._directions(group, momenta)
        for p, d, t in zip(params, dirs, self._radii(group, momenta, dirs)):
            if group.get("constrained", False):  # Scion's SCG: convex combination with lmo
                p.mul_(1.0 - group["lr"]).add_(d, alpha=group["lr"] * group["radius"])
            elif isinstance(t, Tensor):
                p.add_(d * t.to(p.dtype))
            else:
                p.add_(d, alpha=t)

    def _all_params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]


_LMO_DEFAULTS = dict(norm="auto", radius=1.0, spectral_method="newton_schulz", ns_steps=5,
                     ns_coefficients=MUON_NS_COEFFICIENTS)


class Scion(_LayerwiseLMO):
    r"""Scion: (unconstrained) stochastic conditional gradient with layer-wise norm-ball LMOs.

    .. math::
        d_k = (1 - \alpha) d_{k-1} + \alpha \nabla f(X_k; \xi_k), \qquad
        X_{k+1} = \begin{cases}
            X_k + \gamma\, \rho\, \mathrm{lmo}(d_k) & \text{uSCG (unconstrained, default)} \\
            (1 - \gamma) X_k + \gamma\, \rho\, \mathrm{lmo}(d_k) & \text{SCG (constrained=True)}
        \end{cases}

    with ``lmo`` the LMO of the unit ball of the group's norm and ``rho = radius``. SCG keeps the
    iterates in the ball of radius ``rho`` (the paper relates it to weight decay).

    Args:
        params: parameters or param groups; a group may set ``norm``, ``radius``, ``lr``,
            ``alpha``, ``constrained``, ``spectral_method``, ``ns_steps``, ``ns_coefficients``.
        lr: ``gamma`` (default 1e-2).
        alpha: momentum parameter, weight of the new gradient (default 0.1, the authors'
            recommended default; ``alpha = 1`` is no momentum).
        radius: ``rho`` (default 1).
        norm: layer norm (default ``"auto"``: spectral for matrices, l2 for vectors; the paper's
            ``ColNorm``/``RowNorm``/``Sign`` are ``"colnorm"``/``"rownorm"``/``"sign"``).
        constrained: SCG instead of uSCG (default False).
        spectral_method: ``"newton_schulz"`` (default) or ``"svd"`` (exact).

    Note: the per-norm dimension factors of the authors' code (e.g. ``sqrt(d_out/d_in)`` for the
    spectral norm) are not applied; put them in each group's ``radius``.

    Reference:
        Pethick, Xie, Antonakopoulos, Zhu, Silveti-Falls, Cevher (2025), "Training Deep Learning
        Models with Norm-Constrained LMOs", arXiv:2502.07529 (the uSCG and SCG algorithms and
        their layer-wise instance Scion; ``alpha = 0.1`` is the default the authors recommend).
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.1, radius: float = 1.0, norm: str = "auto",
                 constrained: bool = False, spectral_method: str = "newton_schulz", ns_steps: int = 5,
                 ns_coefficients=MUON_NS_COEFFICIENTS) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if constrained and not 0.0 <= lr <= 1.0:
            raise ValueError(f"constrained Scion (SCG) needs lr in [0, 1], got {lr}")
        super().__init__(params, dict(lr=lr, alpha=alpha, radius=radius, norm=norm, constrained=constrained,
                                      spectral_method=spectral_method, ns_steps=ns_steps,
                                      ns_coefficients=ns_coefficients, L0=None, L1=0.0))

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            bufs = []
            for p in params:
                st = self.state[p]
                if "d" not in st:
                    st["d"] = torch.zeros_like(p)
                bufs.append(st["d"])
            if params:
                torch._foreach_lerp_(bufs, [p.grad for p in params], group["alpha"])
            self._lmo_update(group, params, bufs)
        return loss


class Gluon(_LayerwiseLMO):
    r"""Gluon: layer-wise LMO method with momentum and layer-wise (adaptive) radii.

    .. math::
        M^i_k = \beta M^i_{k-1} + (1 - \beta) \nabla_i f(X_k; \xi_k), \qquad
        X^i_{k+1} = \arg\min_{\|X_i - X^i_k\|_{(i)} \le t^i_k} \langle M^i_k, X_i \rangle
                  = X^i_k + t^i_k\, \mathrm{lmo}_{(i)}(M^i_k),

    one norm ``||.||_(i)`` per param group. Radius: ``t = lr * radius`` (default), or, when the
    group sets ``L0`` (layer-wise (L0, L1)-smoothness constants),
    ``t = ||M||_* / (L0 + L1 ||M||_*)`` — with ``beta = 0`` and full gradients this is the
    deterministic stepsize of the paper's analysis; with momentum it uses ``M`` in place of the
    gradient (our choice; the stochastic theorems use constant radii).

    Args:
        params: parameters or param groups; a group may set ``norm``, ``radius``, ``lr``,
            ``beta``, ``L0``, ``L1``, ``spectral_method``, ``ns_steps``, ``ns_coefficients``.
        lr: radius multiplier (default 1e-2).
        beta: momentum (default 0.9).
        radius: per-group radius factor (default 1).
        norm: layer norm (default ``"auto"``).
        L0, L1: layer-wise smoothness constants for the adaptive radius (default None: constant).

    Reference:
        Riabinin, Shulgin, Gruntkowska, Richtárik (2025), "Gluon: Making Muon & Scion Great Again!
        (Bridging Theory and Practice of LMO-based Optimizers for LLMs)", arXiv:2505.13416,
        Algorithm 1; adaptive radius from the layer-wise (L0, L1)-smoothness analysis.
    """

    def __init__(self, params, lr: float = 1e-2, beta: float = 0.9, radius: float = 1.0, norm: str = "auto",
                 L0: float | None = None, L1: float = 0.0, spectral_method: str = "newton_schulz",
                 ns_steps: int = 5, ns_coefficients=MUON_NS_COEFFICIENTS, **extra) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if L1 < 0:
            raise ValueError(f"L1 must be >= 0, got {L1}")
        super().__init__(params, dict(lr=lr, beta=beta, radius=radius, norm=norm, L0=L0, L1=L1,
                                      spectral_method=spectral_method, ns_steps=ns_steps,
                                      ns_coefficients=ns_coefficients, **extra))

    def _momentum(self, p: Tensor) -> Tensor:
        st = self.state[p]
        if "M" not in st:
            st["M"] = torch.zeros_like(p)
        return st["M"]

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            bufs = [self._momentum(p) for p in params]
            if params:
                torch._foreach_lerp_(bufs, [p.grad for p in params], 1.0 - group["beta"])
            self._lmo_update(group, params, bufs)
        return loss


def _grads_at(params: list[Tensor], closure: Callable) -> tuple[object, list[Tensor]]:
    """Call a standard closure (zero_grad + backward + return loss); return (loss, grads)."""
    for p in params:
        p.grad = None
    with torch.enable_grad():
        loss = closure()
    return loss, [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


class _AtPoint:
    """Context manager: temporarily set the parameters to other values (restored on exit)."""

    def __init__(self, params: list[Tensor], values: list[Tensor]) -> None:
        self.params, self.values = params, values

    def __enter__(self):
        with torch.no_grad():
            self.saved = [p.detach().clone() for p in self.params]
            for p, v in zip(self.params, self.values):
                p.copy_(v)

    def __exit__(self, *exc):
        with torch.no_grad():
            for p, v in zip(self.params, self.saved):
                p.copy_(v)


class GluonMVR(Gluon):
    r"""Gluon with momentum variance reduction (MVR / STORM estimator), three variants.

    With ``h_k(X) = ∇f(X; ζ_k)`` the gradient on a correction minibatch ``ζ_k``:

    .. math::
        M_k = \beta \big(M_{k-1} + h_k(X_k) - h_k(X_{k-1})\big) + (1 - \beta) \nabla f(X_k; \xi_k),
        \qquad X_{k+1} = X_k + t_k\, \mathrm{lmo}(M_k),

    and ``M_0 = ∇f(X_0; ξ_0)``. The variants differ in the correction term:

    * ``variant=1``: ``ζ_k = ξ_k`` — the same minibatch at ``X_k`` and ``X_{k-1}`` (the classic
      STORM/MVR estimator; two gradient evaluations per step). ``step(closure)``.
    * ``variant=2``: ``ζ_k`` independent of ``ξ_k`` — ``step(closure, correction_closure)``,
      where ``correction_closure`` evaluates a second minibatch (it is called at ``X_k`` and at
      ``X_{k-1}`` on that same minibatch; three gradient evaluations per step).
    * ``variant=3``: single evaluation — ``h_k(X_{k-1})`` is replaced by the stored stochastic
      gradient of the previous step, ``∇f(X_{k-1}; ξ_{k-1})`` (one evaluation per step).

    Closures follow the torch convention (zero the gradients, ``backward()``, return the loss)
    and must use a fixed minibatch (they are called several times per step, like LBFGS's).
    Radius as in ``Gluon`` (``lr * radius`` or the ``L0``/``L1`` rule).

    Status: the estimator and its LMO step are those of the paper; the paper's numbering of its
    three MVR variants (Gluon-MVR-1/2/3) could not be confirmed from the text available to us, so
    the mapping of ``variant`` numbers above to the paper's algorithms is our assumption.

    Reference:
        Qian, Rammal, Kovalev, Richtárik (2025), "Muon is Provably Faster with Momentum Variance
        Reduction", arXiv:2512.16598 (Gluon-MVR algorithms). MVR/STORM: Cutkosky & Orabona
        (2019), "Momentum-Based Variance Reduction in Non-Convex SGD", arXiv:1905.10018.
    """

    def __init__(self, params, lr: float = 1e-2, beta: float = 0.9, variant: int = 1, **kwargs) -> None:
        if variant not in (1, 2, 3):
            raise ValueError(f"variant must be 1, 2 or 3, got {variant}")
        super().__init__(params, lr=lr, beta=beta, variant=variant, **kwargs)

    @torch.no_grad()
    def step(self, closure: Callable | None = None, correction_closure: Callable | None = None):
        if closure is None:
            raise ValueError("GluonMVR needs step(closure): the correction re-evaluates gradients")
        params = self._all_params()
        loss, g = _grads_at(params, closure)
        variants = {grp["variant"] for grp in self.param_groups}
        if len(variants) != 1:
            raise ValueError("all param groups of a GluonMVR must use the same variant")
        variant = variants.pop()
        first = "x_prev" not in self.state[params[0]]
        if not first:
            x_prev = [self.state[p]["x_prev"] for p in params]
            if variant == 1:
                h_cur = g
                with _AtPoint(params, x_prev):
                    _, h_prev = _grads_at(params, closure)
            elif variant == 2:
                if correction_closure is None:
                    raise ValueError("GluonMVR(variant=2) needs step(closure, correction_closure)")
                _, h_cur = _grads_at(params, correction_closure)
                with _AtPoint(params, x_prev):
                    _, h_prev = _grads_at(params, correction_closure)
            else:
                h_cur, h_prev = g, [self.state[p]["g_prev"] for p in params]
        for i, p in enumerate(params):
            st = self.state[p]
            beta = self._group_of(p)["beta"]
            if first:
                st["M"] = g[i].clone()
            else:
                st["M"].add_(h_cur[i]).sub_(h_prev[i]).mul_(beta).add_(g[i], alpha=1.0 - beta)
            st["x_prev"] = p.detach().clone()
            if variant == 3:
                st["g_prev"] = g[i]
            p.grad = g[i]
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.requires_grad]
            self._lmo_update(group, ps, [self.state[p]["M"] for p in ps])
        return loss

    def _group_of(self, p: Tensor) -> dict:
        for group in self.param_groups:
            if any(q is p for q in group["params"]):
                return group
        raise KeyError("parameter not in this optimizer")


def _hvp(grads, params: list[Tensor], vectors: list[Tensor]) -> list[Tensor]:
    """Hessian-vector products from gradients built with ``create_graph=True`` (zeros where unused)."""
    idx = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    out = [torch.zeros_like(p) for p in params]
    if idx:
        with torch.enable_grad():
            hv = torch.autograd.grad([grads[i] for i in idx], [params[i] for i in idx],
                                     grad_outputs=[vectors[i] for i in idx], allow_unused=True)
        for i, h in zip(idx, hv):
            if h is not None:
                out[i] = h.detach()
    return out


class LMOHessianCorrected(Gluon):
    r"""Layer-wise LMO method with Hessian-corrected momentum (HCM).

    .. math::
        M_k = \beta \big(M_{k-1} + \nabla^2 f(\hat X_k; \xi_k)(X_k - X_{k-1})\big)
              + (1 - \beta) \nabla f(X_k; \xi_k), \qquad
        X_{k+1} = X_k + t_k\, \mathrm{lmo}(M_k),

    ``M_0 = ∇f(X_0; ξ_0)``. The Hessian-vector product is computed with ``torch.autograd``
    (double backward) at ``X^_k = X_k`` (``hvp_point="current"``, one closure call per step) or
    at a uniformly random point of the segment ``[X_{k-1}, X_k]`` (``hvp_point="random"``, the
    variant whose analysis needs no Hessian smoothness; one more closure call). The random point
    uses a generator seeded by ``(seed, k)``, so runs and state_dict round trips are exact.
    Radius as in ``Gluon`` (``lr * radius`` or the ``L0``/``L1`` rule).

    The closure must return the loss *with its graph* and must not call ``backward()``
    (``optimizer.step(lambda: loss_fn(model(x), y))``).

    Status: the update is that of HCM (Tran & Cutkosky) placed in the layer-wise LMO framework
    as the paper describes; the paper's algorithm numbers and its exact point of the
    Hessian-vector product in each of its two variants could not be confirmed from the text
    available to us (the ``"random"`` option follows the usual construction without Hessian
    smoothness).

    Reference:
        Khirirat, Sadiev, Demidovich, Richtárik (2025), "Better LMO-based Momentum Methods with
        Second-Order Information", arXiv:2512.13227. HCM: Tran & Cutkosky (2022), "Better SGD
        using Second-order Momentum", arXiv:2103.03265.
    """

    def __init__(self, params, lr: float = 1e-2, beta: float = 0.9, hvp_point: str = "current", seed: int = 0,
                 **kwargs) -> None:
        if hvp_point not in ("current", "random"):
            raise ValueError(f"hvp_point must be 'current' or 'random', got {hvp_point!r}")
        super().__init__(params, lr=lr, beta=beta, **kwargs)
        self.defaults.update(hvp_point=hvp_point, seed=seed)
        for g in self.param_groups:
            g.setdefault("hvp_point", hvp_point)
            g.setdefault("seed", seed)

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        if closure is None:
            raise ValueError("LMOHessianCorrected needs step(closure) with a closure returning the loss (no backward)")
        params = self._all_params()
        first = "x_prev" not in self.state[params[0]]
        hvp_point = self.param_groups[0]["hvp_point"]
        with torch.enable_grad():
            loss = closure()
            grads = torch.autograd.grad(loss, params, create_graph=not first and hvp_point == "current",
                                        allow_unused=True)
        if not first:
            st0 = self.state[params[0]]
            deltas = [p.detach() - self.state[p]["x_prev"] for p in params]
            if hvp_point == "current":
                hv = _hvp(grads, params, deltas)
            else:
                gen = torch.Generator().manual_seed(int(self.param_groups[0]["seed"]) * 1_000_003 + st0["k"])
                u = float(torch.rand((), generator=gen, dtype=torch.float64))
                point = [self.state[p]["x_prev"] + u * d for p, d in zip(params, deltas)]
                with _AtPoint(params, point), torch.enable_grad():
                    loss_hat = closure()
                    g_hat = torch.autograd.grad(loss_hat, params, create_graph=True, allow_unused=True)
                    hv = _hvp(g_hat, params, deltas)
        grads = [None if g is None else g.detach() for g in grads]
        for i, p in enumerate(params):
            st = self.state[p]
            g = torch.zeros_like(p) if grads[i] is None else grads[i]
            beta = next(grp["beta"] for grp in self.param_groups if any(q is p for q in grp["params"]))
            if first:
                st["M"] = g.clone()
                st["k"] = 0
            else:
                st["M"].add_(hv[i]).mul_(beta).add_(g, alpha=1.0 - beta)
            st["k"] += 1
            st["x_prev"] = p.detach().clone()
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.requires_grad]
            self._lmo_update(group, ps, [self.state[p]["M"] for p in ps])
        return loss.detach() if isinstance(loss, Tensor) else loss
