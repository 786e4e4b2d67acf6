"""Per-client losses and gradients of a multilayer perceptron with the clients as a batch
dimension, written out by hand: two batched matrix products per layer and direction, the
gradients copied once into the (clients, d) buffer (no ``cat`` of blocks).

:class:`NeuralProblem` uses it for the MLPs :func:`~optsim.problems.neural.make_model` builds
(``Flatten``, then ``Linear`` layers separated by ReLU or tanh, cross-entropy on the logits) and
keeps the generic ``torch.func`` path for every other module. Both give the same gradients to
floating-point rounding (tests); this one avoids vmap's overhead and the ``cat`` / ``reshape``
between the flat layout and the model's blocks (``bench/bench_neural_round.py``).

Forward, row i (client i) with parameters read as views of X[i]: A_0 = inputs flattened,
Z_k = A_{k-1} W_k^T + b_k, A_k = act(Z_k); losses_i = sum_j w_ij CE(Z_L[i, j], t_ij).
Backward: dZ_L = w (softmax(Z_L) - onehot(t)); dW_k = dZ_k^T A_{k-1}, db_k = sum_j dZ_k,
dZ_{k-1} = (dZ_k W_k) * act'(Z_{k-1}) with act' = 1[A > 0] (ReLU) or 1 - A^2 (tanh).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

__all__ = ["BatchedMLP"]


@dataclass(frozen=True)
class _Linear:
    weight: tuple[int, int]  # [start, stop) of W (out, in) in x
    bias: tuple[int, int] | None
    out: int
    inp: int


class BatchedMLP:
    """The hand-batched oracles of one MLP (module docstring); :meth:`of` recognizes the module."""

    def __init__(self, linears: list[_Linear], activation: str, d: int):
        self.linears, self.activation, self.d = linears, activation, d

    @classmethod
    def of(cls, module: nn.Module, layout) -> "BatchedMLP | None":
        """The batched form of ``module`` (an ``nn.Sequential``: optional ``Flatten``, ``Linear``
        layers with one kind of activation, ReLU or tanh, between them), or None for any other."""
        if not isinstance(module, nn.Sequential):
            return None
        children = list(module.named_children())
        if children and isinstance(children[0][1], nn.Flatten):
            if children[0][1].start_dim != 1 or children[0][1].end_dim != -1:
                return None
            children = children[1:]
        if not children or len(children) % 2 != 1:
            return None
        blocks = {b.name: b for b in layout}
        linears, kinds = [], set()
        for k, (name, child) in enumerate(children):
            if k % 2 == 1:
                if type(child) is nn.ReLU:
                    kinds.add("relu")
                elif type(child) is nn.Tanh:
                    kinds.add("tanh")
                else:
                    return None
                continue
            if type(child) is not nn.Linear:
                return None
            w = blocks.get(f"{name}.weight")
            b = blocks.get(f"{name}.bias")
            if w is None or (child.bias is not None) != (b is not None):
                return None
            linears.append(_Linear((w.start, w.stop), None if b is None else (b.start, b.stop), child.out_features,
                                   child.in_features))
        if len(kinds) > 1 or len(blocks) != sum(1 + (lin.bias is not None) for lin in linears):
            return None
        return cls(linears, kinds.pop() if kinds else "relu", layout.d)

    def _forward(self, X: torch.Tensor, inputs: torch.Tensor):
        """The activations A_0 .. A_{L-1} and the logits (m, b, C)."""
        m, b = inputs.shape[:2]
        A = inputs.reshape(m, b, -1)
        acts = [A]
        last = len(self.linears) - 1
        for k, lin in enumerate(self.linears):
            W = X[:, lin.weight[0]:lin.weight[1]].view(m, lin.out, lin.inp)
            if lin.bias is None:
                Z = torch.bmm(A, W.transpose(1, 2))
            else:
                Z = torch.baddbmm(X[:, lin.bias[0]:lin.bias[1]].unsqueeze(1), A, W.transpose(1, 2))
            if k < last:
                A = torch.relu(Z) if self.activation == "relu" else torch.tanh(Z)
                acts.append(A)
        return acts, Z

    @staticmethod
    def _ce(Z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return Z.logsumexp(-1) - Z.gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    def compile(self) -> None:
        """Replace the oracles by their ``torch.compile``-compiled versions (same arithmetic; compiled once
        per input shape, about 12 s for the benchmark's MLP on this CPU)."""
        self.losses = torch.compile(self.losses)
        self.loss_grads = torch.compile(self.loss_grads)

    def losses(self, X: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(m,) losses sum_j w_ij CE_ij of the rows X (m, d) on their inputs (m, b, ...)."""
        with torch.no_grad():
            _, Z = self._forward(X, inputs)
            return (self._ce(Z, targets) * w).sum(1)

    def loss_grads(self, X: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, w: torch.Tensor,
                   with_losses: bool = True) -> torch.Tensor:
        """[G | losses] (m, d + 1), or G (m, d) without losses: the rows' gradients."""
        m = X.shape[0]
        with torch.no_grad():
            acts, Z = self._forward(X, inputs)
            out = X.new_empty(m, self.d + (1 if with_losses else 0))
            if with_losses:
                out[:, -1] = (self._ce(Z, targets) * w).sum(1)
            dZ = torch.softmax(Z, -1)
            dZ.scatter_add_(-1, targets.unsqueeze(-1), torch.full_like(dZ[..., :1], -1.0))
            dZ.mul_(w.unsqueeze(-1))
            for k in range(len(self.linears) - 1, -1, -1):
                lin = self.linears[k]
                # into a fresh product, then one copy: bmm with the strided block as out= is slower
                out[:, lin.weight[0]:lin.weight[1]].view(m, lin.out, lin.inp).copy_(torch.bmm(dZ.transpose(1, 2), acts[k]))
                if lin.bias is not None:
                    torch.sum(dZ, 1, out=out[:, lin.bias[0]:lin.bias[1]])
                if k:
                    W = X[:, lin.weight[0]:lin.weight[1]].view(m, lin.out, lin.inp)
                    dA = torch.bmm(dZ, W)
                    A = acts[k]
                    dZ = dA.mul_(A > 0) if self.activation == "relu" else dA.mul_(1 - A * A)
            return out
