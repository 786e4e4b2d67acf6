r"""LoRA, Asymmetric LoRA, Chain of LoRA (COLA) and RAC-LoRA on 2-D weights, and the projection view.

A 2-D weight ``W`` (m x n) is trained through a low-rank adapter,

.. math::  W = W^t + s\, B A, \qquad B \in R^{m\times r},\ A \in R^{r\times n},\ s = \alpha / r,

with the gradients of the factors from the chain rule, ``dL/dB = s G A^T`` and ``dL/dA = s B^T G``
(``G = dL/dW``). The four methods differ only in which factor is trained and when the adapter is
merged into ``W^t`` (``W^{t+1} = W^t + s B A``) and restarted:

=================== ============================ ================================ ==================
method              trained factor(s)            merge / restart                  frozen factor
=================== ============================ ================================ ==================
LoRA                A and B (A random, B = 0)    never                            none
Chain of LoRA       A and B                      every ``chain`` steps, re-init   none
Asymmetric LoRA     B (A random, frozen)         never                            fixed
RAC-LoRA            B (or A, ``train="A"``)      every ``chain`` steps            resampled per link
=================== ============================ ================================ ==================

The trainable factor starts at zero, so a link starts at ``W^t`` (the loss is unchanged by a
restart).

**Projection view** (``sketch_projector``, ``rac_lora_step``). In a link of RAC-LoRA with the frozen
right factor ``A_S`` the weight moves inside ``W^t + R^{m x r} A_S``. Minimizing the ``L``-smooth
upper bound ``f(W^t) + <G, s B A_S> + (L/2)||s B A_S||^2`` exactly in ``B`` gives
``s B = -(1/L) G A_S^T (A_S A_S^T)^{-1}``, i.e.

.. math::  W^{t+1} = W^t - \tfrac1L\, \nabla f(W^t)\, H_A,\qquad H_A = A_S^T (A_S A_S^T)^{-1} A_S

(the orthogonal projector onto the row space of ``A_S``); the left-sketch mirror (``B_S`` frozen,
``A`` trained) is ``W^{t+1} = W^t - (1/L) H_B \nabla f(W^t)``, ``H_B = B_S (B_S^T B_S)^{-1} B_S^T``.
This is randomized subspace gradient descent. The optimizer realizes it exactly with
``precondition=True`` (the trained factor's gradient step is preconditioned by
``(A_S A_S^T)^{-1} / s^2``, resp. ``(B_S^T B_S)^{-1} / s^2``), one step per link
(``chain=1``) and ``lr = 1/L``; with ``precondition=False`` and orthonormal frozen rows / columns
(``init="orthonormal"``) and ``s = 1`` plain gradient steps on the factor are the same thing.

For a Gaussian frozen factor ``E[H] = (r/k) I`` (``k = n`` for ``H_A``, ``k = m`` for ``H_B``;
rotation invariance and ``tr H = r``), so ``lambda_min(E[H]) = r/k`` and, for an ``L``-smooth
``mu``-PL loss, ``E[f(W^T) - f*] <= (1 - mu r / (L k))^T (f(W^0) - f*)`` with ``gamma = 1/L``
(``rac_lora_rate``): convergence to the full-parameter solution, ``k/r`` times slower than
gradient descent. One-line proof: with ``Delta = -gamma H G``, L-smoothness and ``H^2 = H`` give
``f(W + Delta) <= f(W) - (1/(2L)) ||H G||^2`` and ``E||H G||^2 = (r/k)||G||^2``.

LoRA cannot leave ``W^0 + {rank <= r}`` and Asymmetric LoRA cannot leave ``W^0 + R^{m x r} A``:
when the full-parameter solution is outside that set they stall at a point that is not the minimizer
(``tests/test_lora.py`` checks the exact lower bound / the exact subspace minimizer).

Status: the method definitions (which factor is trained, zero-initialized trainable factor, a fresh
random frozen factor at every link, merge) and the projection form with ``lambda_min(E[H])`` follow
the paper's Algorithm 1 and its PL / non-convex theorems as described in secondary sources (the
project's research notes); the exact theorem numbers, constants and the paper's default
distribution of the frozen factor could not be read from the paper itself and are unconfirmed. The
rate above is our derivation of the standard sketched-gradient bound (checked by the tests). The
default factor initialization (Gaussian with standard deviation ``1/r``) follows PEFT's
``init_lora_weights="gaussian"``; PEFT's default is Kaiming-uniform.

References:
    Malinovsky, Michieli, Hammoud, Ceritli, Elesedy, Ozay, Richtárik (2024), "Randomized Asymmetric
    Chain of LoRA: The First Meaningful Theoretical Framework for Low-Rank Adaptation",
    arXiv:2410.08305 (RAC-LoRA, Algorithm 1; the PL and non-convex theorems).
    Hu et al. (2022), "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685.
    Zhu et al. (2024), "Asymmetry in Low-Rank Adapters of Foundation Models", arXiv:2402.16842.
    Xia, Qin, Hazan (2024), "Chain of LoRA", arXiv:2401.04151.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .closure import closure_loss
from .randomized import RandomizedOptimizer

__all__ = ["AsymmetricLoRA", "ChainOfLoRA", "LoRA", "LoRAChain", "RACLoRA", "rac_lora_rate", "rac_lora_step",
           "sample_factor", "sketch_projector"]

_TRAIN = ("both", "A", "B")
_INIT = ("gaussian", "orthonormal")


def sample_factor(shape: tuple[int, ...], side: str, init: str = "gaussian", generator: torch.Generator | None = None,
                  dtype=torch.float64, device=None) -> Tensor:
    """Random factor(s) of shape ``(..., k, r)`` (``side="left"``, a ``B``) or ``(..., r, k)``
    (``side="right"``, an ``A``): Gaussian entries with standard deviation ``1/r``, or orthonormal
    columns / rows (Haar)."""
    if init not in _INIT:
        raise ValueError(f"init must be one of {_INIT}, got {init!r}")
    r = shape[-1] if side == "left" else shape[-2]
    X = torch.randn(*shape, generator=generator, dtype=dtype, device=device if device is not None else "cpu")
    if init == "gaussian":
        return X / r
    if side == "right":
        return torch.linalg.qr(X.transpose(-1, -2))[0].transpose(-1, -2)
    return torch.linalg.qr(X)[0]


def sketch_projector(F: Tensor, side: str) -> Tensor:
    """The orthogonal projector of a frozen factor, batched over leading dimensions:
    ``H_B = B (B^T B)^+ B^T`` (``side="left"``, ``F = B`` (..., m, r)) or ``H_A = A^T (A A^T)^+ A``
    (``side="right"``, ``F = A`` (..., r, n))."""
    if side == "left":
        return F @ torch.linalg.pinv(F.transpose(-1, -2) @ F) @ F.transpose(-1, -2)
    if side == "right":
        return F.transpose(-1, -2) @ torch.linalg.pinv(F @ F.transpose(-1, -2)) @ F
    raise ValueError(f"side must be 'left' or 'right', got {side!r}")


def rac_lora_step(W: Tensor, G: Tensor, F: Tensor, side: str, lr: float) -> Tensor:
    """One RAC-LoRA link in the projection view (batched): ``W - lr H_B G`` or ``W - lr G H_A``."""
    H = sketch_projector(F, side)
    return W - lr * (H @ G if side == "left" else G @ H)


def rac_lora_rate(mu: float, L: float, r: int, k: int) -> float:
    """``1 - mu r / (L k)``: the per-link contraction of ``E[f - f*]`` with ``lr = 1/L`` and a Gaussian
    frozen factor (``lambda_min(E[H]) = r/k``; ``k = m`` left, ``k = n`` right)."""
    return 1.0 - mu * min(r, k) / (L * k)


class LoRAChain(RandomizedOptimizer):
    r"""Low-rank adapters on every 2-D parameter, trained by gradient steps on the factors.

    The model keeps using its parameters ``W`` as they are: after each step the optimizer writes
    ``W = W^t + s B A`` into them, with ``B``, ``A`` and ``W^t`` held in its state; ``step`` needs
    ``W.grad = dL/dW`` and forms the factors' gradients by the chain rule. Parameters that are not
    2-D are frozen (``others="freeze"``, the usual LoRA setting) or trained by plain gradient
    descent with the same ``lr`` (``others="sgd"``).

    Args:
        params: parameters or param groups.
        lr: stepsize on the factors (``1/L`` with ``precondition=True`` is the theory stepsize).
        rank: ``r``, clipped per weight to the trained side's size (``n`` when only ``B`` is
            trained, ``m`` when only ``A`` is, ``min(m, n)`` for both).
        alpha: the scaling ``s = alpha / r`` (default ``alpha = r``, ``s = 1``).
        train: ``"both"`` (LoRA / COLA), ``"B"`` (A frozen, the right sketch) or ``"A"`` (B frozen,
            the left sketch).
        chain: steps per chain link (merge and restart after each); ``None``: never merge.
        resample: draw a fresh frozen factor at every link (RAC-LoRA); otherwise the frozen factor
            is drawn once (Asymmetric LoRA). With ``train="both"`` the random factor ``A`` is
            always redrawn at a restart (COLA).
        init: the random factor: ``"gaussian"`` (std ``1/r``) or ``"orthonormal"``.
        precondition: precondition the trained factor's step so that each step is the projected
            gradient step ``W <- W - lr H_B G`` / ``W <- W - lr G H_A`` (needs ``train`` ``"A"`` or
            ``"B"``).
        generator / seed: the random factors (the generator state is saved in ``state_dict``).

    References: Malinovsky et al. (2024), arXiv:2410.08305, Algorithm 1 (RAC-LoRA); Hu et al.
    (2022) (LoRA); Zhu et al. (2024) (Asymmetric LoRA); Xia et al. (2024) (Chain of LoRA).
    See the module docstring for the projection view and the rate.
    """

    def __init__(self, params, lr: float, rank: int, alpha: float | None = None, train: str = "B",
                 chain: int | None = None, resample: bool = False, init: str = "gaussian",
                 precondition: bool = False, others: str = "freeze",
                 generator: torch.Generator | None = None, seed: int = 0):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not (isinstance(rank, int) and rank >= 1):
            raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
        if train not in _TRAIN:
            raise ValueError(f"train must be one of {_TRAIN}, got {train!r}")
        if chain is not None and not (isinstance(chain, int) and chain >= 1):
            raise ValueError(f"chain must be None (never merge) or an integer >= 1, got {chain!r}")
        if init not in _INIT:
            raise ValueError(f"init must be one of {_INIT}, got {init!r}")
        if precondition and train == "both":
            raise ValueError("precondition=True needs one frozen factor: give train='A' or train='B'")
        if others not in ("freeze", "sgd"):
            raise ValueError(f"others must be 'freeze' or 'sgd', got {others!r}")
        if alpha is not None and not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        super().__init__(params, dict(lr=lr))
        self.rank, self.alpha, self.train, self.chain = rank, alpha, train, chain
        self.resample, self.init, self.precondition, self.others = resample, init, precondition, others
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self.steps = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() == 2:
                    self._start(p, first=True)

    _EXTRA = ("rank", "alpha", "train", "chain", "resample", "init", "precondition", "others", "generator", "steps")

    def __getstate__(self):  # torch's keeps defaults, state and param_groups only
        return {**super().__getstate__(), **{k: getattr(self, k) for k in self._EXTRA if hasattr(self, k)}}

    def scaling(self, p: Tensor) -> float:
        r = self.state[p]["A"].shape[0]
        return (self.alpha if self.alpha is not None else r) / r

    def _draw(self, shape, side, like: Tensor) -> Tensor:
        F = sample_factor(shape, side, self.init, self.generator, dtype=like.dtype)
        return F.to(like.device)

    def _start(self, p: Tensor, first: bool) -> None:
        """Begin a link: the trainable factor at zero, the random one drawn (or kept)."""
        st = self.state[p]
        m, n = p.shape
        r = min(self.rank, n if self.train == "B" else m if self.train == "A" else min(m, n))
        if first:
            st["base"] = p.detach().clone()
        zero_A, zero_B = torch.zeros(r, n, dtype=p.dtype, device=p.device), torch.zeros(m, r, dtype=p.dtype,
                                                                                          device=p.device)
        if self.train == "A":
            st["A"] = zero_A
            if first or self.resample:
                st["B"] = self._draw((m, r), "left", p)
        else:
            st["B"] = zero_B
            if first or self.resample or self.train == "both":
                st["A"] = self._draw((r, n), "right", p)

    def merge(self) -> None:
        """End the current link: ``W^t <- W^t + s B A`` (the parameters' current values) and restart."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() == 2:
                    self.state[p]["base"] = p.detach().clone()
                    self._start(p, first=False)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                if p.dim() != 2:
                    if self.others == "sgd" and p.grad is not None:
                        p.add_(p.grad, alpha=-lr)
                    continue
                if p.grad is None:
                    raise ValueError(f"{type(self).__name__}: a 2-D parameter has no gradient")
                st, G = self.state[p], p.grad
                A, B = st["A"], st["B"]
                s = self.scaling(p)
                gB = s * G @ A.T if self.train in ("both", "B") else None
                gA = s * B.T @ G if self.train in ("both", "A") else None
                if gB is not None:
                    if self.precondition:
                        gB = gB @ torch.linalg.pinv(A @ A.T) / s ** 2
                    B.sub_(gB, alpha=lr)
                if gA is not None:
                    if self.precondition:
                        gA = torch.linalg.pinv(B.T @ B) @ gA / s ** 2
                    A.sub_(gA, alpha=lr)
                p.copy_(st["base"] + s * B @ A)
        self.steps += 1
        if self.chain is not None and self.steps % self.chain == 0:
            self.merge()
        return loss

    def trainable_numel(self) -> int:
        """Number of trained entries per step (the adapters' trained factors)."""
        n = 0
        for st in self.state.values():
            if "A" in st:
                n += (st["A"].numel() if self.train in ("both", "A") else 0) + \
                     (st["B"].numel() if self.train in ("both", "B") else 0)
        return n

    def _extra_state(self):
        return {"steps": self.steps}

    def _load_extra_state(self, extra) -> None:
        for st_p in self.state.values():      # own copies: the factors are updated in place
            for k, v in st_p.items():
                if torch.is_tensor(v):
                    st_p[k] = v.clone()
        self.steps = extra.get("steps", 0)


class LoRA(LoRAChain):
    """LoRA (Hu et al. 2022, arXiv:2106.09685): ``A`` random, ``B = 0``, both trained, never merged."""

    def __init__(self, params, lr: float, rank: int, **kw):
        super().__init__(params, lr, rank, train="both", chain=None, **kw)


class ChainOfLoRA(LoRAChain):
    """Chain of LoRA (COLA, Xia et al. 2024, arXiv:2401.04151): LoRA merged and re-initialized every
    ``chain`` steps."""

    def __init__(self, params, lr: float, rank: int, chain: int, **kw):
        super().__init__(params, lr, rank, train="both", chain=chain, **kw)


class AsymmetricLoRA(LoRAChain):
    """Asymmetric LoRA (Zhu et al. 2024, arXiv:2402.16842): ``A`` random and frozen once, only ``B`` trained."""

    def __init__(self, params, lr: float, rank: int, **kw):
        kw.setdefault("train", "B")
        super().__init__(params, lr, rank, chain=None, resample=False, **kw)


class RACLoRA(LoRAChain):
    """RAC-LoRA (Malinovsky et al. 2024, arXiv:2410.08305, Algorithm 1): every link of ``chain``
    steps draws a fresh random frozen factor, trains the other from zero, then merges.
    ``precondition=True, chain=1, lr=1/L`` is the theory's projected step (module docstring)."""

    def __init__(self, params, lr: float, rank: int, chain: int = 1, **kw):
        kw.setdefault("train", "B")
        super().__init__(params, lr, rank, chain=chain, resample=True, **kw)
