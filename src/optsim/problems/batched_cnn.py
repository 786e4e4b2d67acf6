"""Per-client losses and gradients of a small convolutional network with the clients as a batch
dimension: every convolution of the n clients' models is one grouped convolution (groups = n,
the clients' channels side by side), the final linear layer one batched matrix product, and the
backward pass one autograd call with the whole (clients, d) parameter matrix as the leaf, so the
gradient arrives in the flat layout with no per-block ``cat``.

:class:`NeuralProblem` uses it for the CNNs :func:`~optsim.problems.neural.make_model` builds
(``Conv2d`` layers, each followed by one activation, ReLU or tanh, and optionally a 2 x 2
``MaxPool2d``; then ``Flatten`` and one ``Linear``), and keeps the generic ``torch.func`` path for
any other module; both give the same gradients to floating-point rounding (tests).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .batched_mlp import BatchedMLP

__all__ = ["BatchedCNN"]


@dataclass(frozen=True)
class _Conv:
    weight: tuple[int, int]
    bias: tuple[int, int] | None
    shape: tuple[int, int, int, int]  # (out, in, kh, kw)
    padding: tuple[int, int]
    pool: bool


class BatchedCNN:
    """The grouped-convolution oracles of one CNN (module docstring); :meth:`of` recognizes it."""

    def __init__(self, convs: list[_Conv], head: tuple, activation: str, d: int):
        self.convs, self.head, self.activation, self.d = convs, head, activation, d

    @classmethod
    def of(cls, module: nn.Module, layout) -> "BatchedCNN | None":
        if not isinstance(module, nn.Sequential):
            return None
        blocks = {b.name: b for b in layout}
        children = list(module.named_children())
        convs, kinds, i = [], set(), 0
        while i < len(children) and isinstance(children[i][1], nn.Conv2d):
            name, conv = children[i]
            if (conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros"
                    or isinstance(conv.padding, str) or i + 1 >= len(children)):
                return None
            act = children[i + 1][1]
            if type(act) is nn.ReLU:
                kinds.add("relu")
            elif type(act) is nn.Tanh:
                kinds.add("tanh")
            else:
                return None
            i += 2
            pool = False
            if i < len(children) and isinstance(children[i][1], nn.MaxPool2d):
                mp = children[i][1]
                if not (mp.kernel_size in (2, (2, 2)) and mp.stride in (2, (2, 2)) and mp.padding in (0, (0, 0))
                        and mp.dilation in (1, (1, 1)) and not mp.ceil_mode):
                    return None
                pool, i = True, i + 1
            w, b = blocks.get(f"{name}.weight"), blocks.get(f"{name}.bias")
            if w is None or (conv.bias is not None) != (b is not None):
                return None
            convs.append(_Conv((w.start, w.stop), None if b is None else (b.start, b.stop), tuple(conv.weight.shape),
                               tuple(conv.padding), pool))
        rest = children[i:]
        if (not convs or len(rest) != 2 or type(rest[0][1]) is not nn.Flatten or type(rest[1][1]) is not nn.Linear
                or len(kinds) != 1):
            return None
        name, lin = rest[1]
        w, b = blocks.get(f"{name}.weight"), blocks.get(f"{name}.bias")
        if w is None or (lin.bias is not None) != (b is not None):
            return None
        if len(blocks) != sum(1 + (c.bias is not None) for c in convs) + 1 + (b is not None):
            return None
        head = ((w.start, w.stop), None if b is None else (b.start, b.stop), lin.out_features, lin.in_features)
        return cls(convs, head, kinds.pop(), layout.d)

    def _logits(self, X: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        m, b = inputs.shape[:2]
        h = inputs.reshape(m, b, *inputs.shape[2:]).transpose(0, 1)  # (b, m, C, H, W)
        h = h.reshape(b, m * inputs.shape[2], *inputs.shape[3:])  # the clients' channels side by side
        for c in self.convs:
            out, cin, kh, kw = c.shape
            W = X[:, c.weight[0]:c.weight[1]].reshape(m * out, cin, kh, kw)
            bias = None if c.bias is None else X[:, c.bias[0]:c.bias[1]].reshape(m * out)
            h = F.conv2d(h, W, bias, padding=c.padding, groups=m)
            h = torch.relu(h) if self.activation == "relu" else torch.tanh(h)
            if c.pool:
                h = F.max_pool2d(h, 2)
        (ws, we), bias, out, inp = self.head
        h = h.reshape(b, m, inp).transpose(0, 1)  # (m, b, features), in Flatten's order per client
        W = X[:, ws:we].view(m, out, inp)
        if bias is None:
            return torch.bmm(h, W.transpose(1, 2))
        return torch.baddbmm(X[:, bias[0]:bias[1]].unsqueeze(1), h, W.transpose(1, 2))

    @staticmethod
    def _losses(Z, targets, w):
        return (BatchedMLP._ce(Z, targets) * w).sum(1)

    def compile(self) -> None:
        """Replace the oracles by their ``torch.compile``-compiled versions (same arithmetic; compiled once
        per input shape, about 12 s for the benchmark's MLP on this CPU)."""
        self.losses = torch.compile(self.losses)
        self.loss_grads = torch.compile(self.loss_grads)

    def losses(self, X, inputs, targets, w) -> torch.Tensor:
        """(m,) losses sum_j w_ij CE_ij of the rows X (m, d) on their inputs (m, b, C, H, W)."""
        with torch.no_grad():
            return self._losses(self._logits(X, inputs), targets, w)

    def loss_grads(self, X, inputs, targets, w, with_losses: bool = True) -> torch.Tensor:
        """[G | losses] (m, d + 1), or G (m, d) without losses."""
        with torch.enable_grad():
            leaf = X.detach().requires_grad_()
            losses = self._losses(self._logits(leaf, inputs), targets, w)
            (G,) = torch.autograd.grad(losses.sum(), leaf)
        return torch.cat([G, losses.detach()[:, None]], 1) if with_losses else G
