"""MAST: Double Sketched SGD for a model's parameters (sketched weights in the forward/backward pass).

Demidovich, Malinovsky, Shulgin, Richtárik (2023), "MAST: Model-Agnostic Sparsified Training",
arXiv 2311.16086 (ICLR 2025), Algorithm 1 ("Double Sketched (S)GD") on the objective
f_D(x) = E_S[f(v + S (x - v))]: each step draws a random diagonal sketch S of the parameters,
evaluates the loss and its gradient at the *sketched* parameters y = v + S (x - v) (the model is
sparsified around the shift v), and steps

    x <- x - lr * S grad f(y),

the gradient being sketched with the same S (its chain rule through y). With Bernoulli masks and
v = 0 this is DropConnect-style training (dropout on the weights, each kept weight scaled by 1/p);
``sketch="dropout"`` keeps the unscaled masks (E[S] = p I, outside the paper's E[S] = I). The
estimator is unbiased for grad f_D whatever the law (E_S[S grad f(v + S(x - v))] = grad f_D(x)).

Use (the masks must be in place for the forward pass)::

    opt = MAST(model.parameters(), lr=0.1, keep_prob=0.5)
    def closure():
        opt.zero_grad(); loss = loss_fn(model(X), Y); loss.backward(); return loss
    opt.step(closure)        # sparsify, closure at the sketched weights, restore, update

or without a closure: ``opt.sparsify()``, forward and backward, ``opt.step()``. Between steps the
parameters hold the dense model x (evaluate it as usual).

Laws (per parameter tensor, from :class:`optsim.problems.sketched.DiagonalSketch`): ``bernoulli``
(keep each coordinate with ``keep_prob``, scale 1/keep_prob), ``dropout`` (unscaled), ``rand_k``
(keep ``ceil(density * numel)`` coordinates of each tensor uniformly, scale numel/k), ``identity``
(plain SGD). The shift v is ``"zero"`` (default) or ``"initial"`` (the parameters when the
optimizer is built: the pre-trained model of the paper's setting). Stepsize: the user's ``lr``
(the method :class:`optsim.methods.sparsified.MAST` documents the derived default of the
distributed method; the paper's theorems' constants are not confirmed here).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..problems.sketched import SKETCH_KINDS, DiagonalSketch
from .closure import closure_loss
from .randomized import RandomizedOptimizer

__all__ = ["MAST"]


class MAST(RandomizedOptimizer):
    r"""Double Sketched SGD (MAST, arXiv 2311.16086, Alg. 1) on sketched parameters (module docstring).

    Args:
        params: parameters or param groups (each group may set its own ``lr``, ``sketch``,
            ``keep_prob``, ``density``).
        lr: stepsize gamma.
        sketch: ``bernoulli``, ``dropout``, ``rand_k`` or ``identity``.
        keep_prob: keep probability of the bernoulli / dropout masks, in (0, 1].
        density: fraction of each tensor's coordinates rand_k keeps, in (0, 1].
        shift: ``"zero"`` (v = 0) or ``"initial"`` (v = the parameters at construction).
        generator / seed: the masks' random numbers (the generator's state is saved in ``state_dict``).

    Reference: Demidovich, Malinovsky, Shulgin, Richtárik (2023), "MAST: Model-Agnostic Sparsified
    Training", arXiv:2311.16086, Algorithm 1 (option I with the closure's exact gradient at the
    sketched model; a minibatch loss gives option II).
    """

    def __init__(self, params, lr: float, sketch: str = "bernoulli", keep_prob: float = 0.5, density: float = 0.5,
                 shift: str = "zero", generator: torch.Generator | None = None, seed: int = 0):
        if not lr > 0:
            raise ValueError(f"MAST: lr must be > 0, got {lr}")
        if shift not in ("zero", "initial"):
            raise ValueError(f"MAST: shift must be 'zero' or 'initial', got {shift!r}")
        super().__init__(params, dict(lr=lr, sketch=sketch, keep_prob=keep_prob, density=density))
        for g in self.param_groups:
            self._law(g, 1)  # checks the group's sketch now
        self.shift = shift
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self._sparse = False
        for g in self.param_groups:
            for p in g["params"]:
                self.state[p]["shift"] = p.detach().clone() if shift == "initial" else None

    def __getstate__(self):  # torch's keeps defaults, state and param_groups only
        return {**super().__getstate__(), "shift": self.shift, "generator": self.generator, "_sparse": self._sparse}

    @staticmethod
    def _law(group: dict, numel: int) -> DiagonalSketch:
        kind = group["sketch"]
        if kind not in SKETCH_KINDS:
            raise ValueError(f"MAST: sketch must be one of {', '.join(SKETCH_KINDS)}, got {kind!r}")
        if kind in ("bernoulli", "dropout"):
            if not 0 < float(group["keep_prob"]) <= 1:
                raise ValueError(f"MAST: keep_prob must be in (0, 1], got {group['keep_prob']}")
            return DiagonalSketch(numel, kind, p=float(group["keep_prob"]))
        if kind == "rand_k":
            if not 0 < float(group["density"]) <= 1:
                raise ValueError(f"MAST: density must be in (0, 1], got {group['density']}")
            return DiagonalSketch(numel, kind, k=max(1, math.ceil(float(group["density"]) * numel)))
        return DiagonalSketch(numel, "identity")

    @torch.no_grad()
    def sparsify(self) -> None:
        """Draw a sketch s for every parameter and put the sketched model v + s (x - v) in place
        (the dense x is kept in the state); call it before the forward pass (``step(closure)`` does)."""
        if self._sparse:
            return
        for g in self.param_groups:
            for p in g["params"]:
                st = self.state[p]
                s = self._law(g, p.numel()).sample(1, self.generator, p.dtype, p.device).reshape(p.shape)
                v = st["shift"]
                st["x"], st["scale"] = p.detach().clone(), s
                p.copy_(s * p if v is None else v + s * (p - v))
        self._sparse = True

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        if closure is not None:
            self.sparsify()
        elif not self._sparse:
            raise ValueError("MAST: call sparsify() before the forward pass, or pass a closure to step()")
        loss = closure_loss(closure)
        for g in self.param_groups:
            lr = g["lr"]
            for p in g["params"]:
                st = self.state[p]
                x, s = st.pop("x"), st["scale"]
                if p.grad is None:
                    p.copy_(x)
                    continue
                p.copy_(x - lr * (s * p.grad))
        self._sparse = False
        return loss

    def _extra_state(self):
        return {"sparse": self._sparse}

    def _load_extra_state(self, extra) -> None:
        self._sparse = bool(extra.get("sparse", False))
