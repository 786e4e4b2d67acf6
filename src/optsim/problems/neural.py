"""Neural networks as federated problems: parameters flattened to one row per client.

A :class:`NeuralProblem` wraps a ``torch.nn.Module`` (an MLP, a small CNN or a small decoder-only
transformer language model, see :func:`make_model`) and the clients' data. The model's
parameters are flattened into a vector of length ``d``; client state is ``(n, d)`` as for every
other problem, and a :class:`Layout` (name, shape, slice of every parameter block) lets
structure-aware methods (LMO / Muon, rank-k compression) see the weight matrices again.

Per-client gradients come from ``torch.func``: the loss of one client is a pure function of its
row ``x`` (``functional_call`` with the blocks of ``x`` as the module's parameters), ``vmap``
evaluates all clients' losses in one batched forward pass, and one backward pass of their sum
gives every client's gradient (no Python loop over clients; ``bench/bench_neural.py`` measures
it against a loop). Oracle calls are counted as in
:class:`~optsim.problems.base.Problem` (``grads``, ``sample_grads``, ``minibatch_grads`` with
per-client minibatches, ``losses``), plus :meth:`NeuralProblem.sample_loss_grads` (values and
gradients of a minibatch in one call).

Objective: client i holds samples (a_ij, b_ij), j = 1..m_i, and
``f_i(x) = (1/m_i) sum_j loss(model_x(a_ij), b_ij)`` (cross-entropy; for the language model the
mean over the positions of a window), ``f = (1/n) sum_i f_i``. The problem is not convex: there
is no ``x_star``; the runner logs ``loss`` and ``grad_norm_sq`` and, through
:meth:`NeuralProblem.extra_metrics`, the held-out ``test_loss`` and ``test_accuracy``
(classifiers) or ``test_perplexity`` (language model). Smoothness constants are unknown (NaN):
methods need an explicit stepsize.

Defaults: float32, CPU or CUDA (``device``). The initial point is the module's own seeded
initialization (:meth:`NeuralProblem.initial_point`, used by the runner instead of zeros).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call, vmap

from .base import Problem
from .batched_cnn import BatchedCNN
from .batched_mlp import BatchedMLP

__all__ = ["Block", "Layout", "NeuralProblem", "MODELS", "make_model", "TinyGPT", "neural_problem"]


# ---- the layout of a flattened model --------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    """One parameter of the model inside the flat vector: ``x[start:stop].reshape(shape)``."""

    name: str
    shape: tuple[int, ...]
    start: int
    stop: int

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def numel(self) -> int:
        return self.stop - self.start

    @property
    def is_matrix(self) -> bool:
        """Weights with >= 2 dimensions (conv kernels are viewed as ``(out, in * kh * kw)``)."""
        return len(self.shape) >= 2

    @property
    def matrix_shape(self) -> tuple[int, ...]:
        """``(shape[0], prod(shape[1:]))`` for matrices, ``(numel,)`` for vectors."""
        return (self.shape[0], self.numel // self.shape[0]) if self.is_matrix else (self.numel,)


class Layout:
    """The blocks of a flat parameter vector, in order, covering ``[0, d)`` exactly.

    ``unflatten(X)`` turns ``(..., d)`` into a dict of views ``(..., *shape)`` (any leading batch
    dimensions, e.g. clients); ``flatten`` is its inverse; ``matrix(X, b)`` views block ``b`` of
    ``(..., d)`` as ``(..., *b.matrix_shape)``.
    """

    def __init__(self, blocks: Sequence[Block]):
        self.blocks = tuple(blocks)
        pos = 0
        for b in self.blocks:
            if b.start != pos or b.stop - b.start != math.prod(b.shape):
                raise ValueError(f"layout block {b.name} {b.shape} at [{b.start}, {b.stop}) does not continue at {pos}")
            pos = b.stop
        self.d = pos

    @classmethod
    def from_shapes(cls, shapes: Sequence[tuple[str, Sequence[int]]]) -> "Layout":
        blocks, pos = [], 0
        for name, shape in shapes:
            shape = tuple(int(s) for s in shape)
            k = math.prod(shape)
            blocks.append(Block(name, shape, pos, pos + k))
            pos += k
        return cls(blocks)

    @classmethod
    def from_module(cls, module: nn.Module) -> "Layout":
        return cls.from_shapes([(name, tuple(p.shape)) for name, p in module.named_parameters()])

    @classmethod
    def vector(cls, d: int) -> "Layout":
        """One vector block ``x`` of length d (problems without structure)."""
        return cls.from_shapes([("x", (int(d),))])

    def __iter__(self) -> Iterator[Block]:
        return iter(self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def __eq__(self, other) -> bool:
        return isinstance(other, Layout) and self.blocks == other.blocks

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.blocks]

    def unflatten(self, X: torch.Tensor) -> dict[str, torch.Tensor]:
        if X.shape[-1] != self.d:
            raise ValueError(f"expected (..., {self.d}) for this layout, got {tuple(X.shape)}")
        lead = X.shape[:-1]
        return {b.name: X[..., b.start:b.stop].reshape(*lead, *b.shape) for b in self.blocks}

    def flatten(self, tensors) -> torch.Tensor:
        """Inverse of :meth:`unflatten`: a dict (or sequence in block order) of ``(..., *shape)``."""
        if isinstance(tensors, dict):
            tensors = [tensors[b.name] for b in self.blocks]
        tensors = list(tensors)
        if len(tensors) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} tensors, got {len(tensors)}")
        lead = tensors[0].shape[:tensors[0].ndim - len(self.blocks[0].shape)]
        return torch.cat([t.reshape(*lead, b.numel) for t, b in zip(tensors, self.blocks)], dim=-1)

    def matrix(self, X: torch.Tensor, block: Block) -> torch.Tensor:
        return X[..., block.start:block.stop].reshape(*X.shape[:-1], *block.matrix_shape)

    def describe(self) -> str:
        return ", ".join(f"{b.name}{list(b.shape)}" for b in self.blocks)


# ---- models -----------------------------------------------------------------------------------------
_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def _mlp(in_shape, classes: int, hidden: Sequence[int], activation: str, bias: bool) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(in_shape)
    for h in hidden:
        layers += [nn.Linear(width, h, bias=bias), _ACTIVATIONS[activation]()]
        width = h
    layers.append(nn.Linear(width, classes, bias=bias))
    return nn.Sequential(*layers)


def _cnn(in_shape, classes: int, channels: Sequence[int], activation: str, bias: bool) -> nn.Module:
    c, h, w = in_shape
    layers: list[nn.Module] = []
    for ch in channels:
        layers += [nn.Conv2d(c, ch, 3, padding=1, bias=bias), _ACTIVATIONS[activation]()]
        if h >= 2 and w >= 2:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        c = ch
    layers += [nn.Flatten(), nn.Linear(c * h * w, classes, bias=bias)]
    return nn.Sequential(*layers)


class _Attention(nn.Module):
    def __init__(self, d_model: int, heads: int, seq_len: int, bias: bool):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} must be divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.register_buffer("causal", torch.ones(seq_len, seq_len, dtype=torch.bool).tril(), persistent=False)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=-1)
        q, k, v = (t.reshape(B, T, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        a = (q @ k.transpose(-2, -1)) / math.sqrt(D // self.heads)
        a = a.masked_fill(~self.causal[:T, :T], float("-inf")).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(B, T, D))


class _DecoderBlock(nn.Module):
    def __init__(self, d_model: int, heads: int, seq_len: int, bias: bool):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = _Attention(d_model, heads, seq_len, bias)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model, bias=bias), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model, bias=bias))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """A small decoder-only transformer language model (pre-LayerNorm GPT): token and learned
    position embeddings, ``layers`` blocks of causal multi-head self-attention and a 4x MLP,
    a final LayerNorm and a linear head to the vocabulary. Input ``(B, T)`` token ids, output
    ``(B, T, vocab)`` logits. Attention is written with plain matmuls (vmap-friendly)."""

    def __init__(self, vocab: int, seq_len: int, d_model: int = 32, heads: int = 2, layers: int = 1, bias: bool = True):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(seq_len, d_model))
        self.blocks = nn.ModuleList([_DecoderBlock(d_model, heads, seq_len, bias) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, idx):
        x = self.tok(idx) + self.pos[: idx.shape[-1]]
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))


MODELS = ("mlp", "cnn", "transformer")


def make_model(kind: str, *, in_shape=None, classes: int | None = None, vocab: int | None = None,
               seq_len: int = 32, hidden: Sequence[int] = (32,), activation: str = "relu", bias: bool = True,
               d_model: int = 32, heads: int = 2, layers: int = 1, seed: int = 0) -> nn.Module:
    """A model with seeded initialization: ``mlp`` (widths ``hidden``), ``cnn`` (3x3 convolutions
    with ``hidden`` channels, each followed by 2x2 max-pooling, then a linear classifier) or
    ``transformer`` (:class:`TinyGPT`)."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation '{activation}' (choose {', '.join(_ACTIVATIONS)})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if kind == "mlp":
            return _mlp(in_shape, classes, hidden, activation, bias)
        if kind == "cnn":
            if len(in_shape) != 3:
                raise ValueError(f"the cnn needs images (C, H, W), got inputs of shape {tuple(in_shape)}")
            return _cnn(in_shape, classes, hidden, activation, bias)
        if kind == "transformer":
            return TinyGPT(vocab, seq_len, d_model, heads, layers, bias)
    raise ValueError(f"unknown model '{kind}' (choose {', '.join(MODELS)})")


# ---- the problem ---------------------------------------------------------------------------------------
def _per_sample_ce(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample: (B, C) logits and (B,) labels, or (B, T, V) and (B, T) (mean over T).
    Written with logsumexp and gather (cheaper than cross_entropy under vmap)."""
    ce = out.logsumexp(-1) - out.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return ce if ce.ndim == 1 else ce.reshape(ce.shape[0], -1).mean(-1)


def _pack(arrays: Sequence, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-client arrays (m_i, ...) padded to (n, M, ...) and the weights 1/m_i (0 on padding)."""
    m = [len(a) for a in arrays]
    M = max(m)
    first = torch.as_tensor(np.asarray(arrays[0]))
    out = torch.zeros(len(arrays), M, *first.shape[1:], dtype=dtype if first.is_floating_point() else torch.long)
    w = torch.zeros(len(arrays), M, dtype=dtype)
    for i, a in enumerate(arrays):
        out[i, : m[i]] = torch.as_tensor(np.asarray(a)).to(out.dtype)
        w[i, : m[i]] = 1.0 / m[i]
    return out.to(device), w.to(device)


class NeuralProblem(Problem):
    """A model and the clients' samples (module docstring).

    Args:
        module: the model (its parameters are the initial point; no buffers that training changes,
            e.g. no BatchNorm).
        inputs, targets: one array per client, ``(m_i, ...)`` (float images or int64 tokens) and
            ``(m_i,)`` int64 labels or ``(m_i, T)`` next-token targets.
        test_inputs, test_targets: held-out data for :meth:`extra_metrics` (optional).
        task: ``"classify"`` or ``"lm"`` (language model: perplexity instead of accuracy).
        batch_rows: samples per batched evaluation (clients x samples); larger local datasets are
            processed in chunks of samples (a loop over chunks, never over clients).
        compile: ``torch.compile`` the batched MLP / CNN oracles (compiled once per input shape).
    """

    name = "neural"
    convex = False

    def __init__(self, module: nn.Module, inputs: Sequence, targets: Sequence, test_inputs=None, test_targets=None,
                 *, task: str = "classify", dtype: torch.dtype = torch.float32, device="cpu", batch_rows: int = 8192,
                 description: str = "", compile: bool = False):
        super().__init__(dtype, device)
        if task not in ("classify", "lm"):
            raise ValueError(f"task must be 'classify' or 'lm', got '{task}'")
        if len(inputs) != len(targets) or not len(inputs):
            raise ValueError(f"need one input and one target array per client, got {len(inputs)} and {len(targets)}")
        self.task, self.description = task, description
        self.module = module.to(device=self.device, dtype=dtype)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.layout = Layout.from_module(self.module)
        self.n, self.d = len(inputs), self.layout.d
        self.inputs, self.w = _pack(inputs, dtype, self.device)
        self.targets, _ = _pack(targets, dtype, self.device)
        self.m = torch.tensor([len(t) for t in targets], dtype=torch.long, device=self.device)
        self.batch_rows = int(batch_rows)
        self._x0 = self.layout.flatten({k: v.detach() for k, v in self.module.named_parameters()}).to(dtype)
        # all training samples at once (metrics): sample j of client i weighs 1 / (n m_i)
        keep = self.w > 0
        self._all = (self.inputs[keep], self.targets[keep], self.w[keep] / self.n)
        self._test = None
        if test_inputs is not None and len(test_inputs):
            ti = torch.as_tensor(np.asarray(test_inputs))
            ti = ti.to(self.device, dtype if ti.is_floating_point() else torch.long)
            tt = torch.as_tensor(np.asarray(test_targets)).to(self.device, torch.long)
            self._test = (ti, tt, torch.full((len(tt),), 1.0 / len(tt), dtype=dtype, device=self.device))
        self._vloss = vmap(self._loss_of)
        self._vloss_blocks = vmap(self._loss_blocks)
        #: the hand-batched oracles of an MLP or a small CNN (None: the generic torch.func path)
        self._batched = None if task != "classify" else (BatchedMLP.of(self.module, self.layout)
                                                        or BatchedCNN.of(self.module, self.layout))
        if compile:
            if self._batched is None:
                raise ValueError("compile: true needs an MLP or CNN of make_model (the batched oracles); "
                                 "set compile: false for this model")
            self._batched.compile()

    # ---- the model as a pure function of the flat parameters -------------------------------------------
    def forward(self, x: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The model's output at flat parameters ``x`` (d,) on a batch of inputs."""
        return functional_call(self.module, self.layout.unflatten(x), (inputs,))

    def _loss_of(self, x, inputs, targets, w):
        """sum_j w_j loss_j at x (d,) -- one client's f_i when w = 1/m_i."""
        return (_per_sample_ce(self.forward(x, inputs), targets) * w).sum()

    def _loss_blocks(self, blocks, inputs, targets, w):
        """As :meth:`_loss_of`, with the parameters given as a dict of blocks."""
        return (_per_sample_ce(functional_call(self.module, blocks, (inputs,)), targets) * w).sum()

    def _loss_grads(self, X, inputs, targets, w, with_losses: bool = True):
        """Per-row losses (m,) and gradients (m, d), as one (m, d + 1) tensor [G | losses]
        (``with_losses=False``: the contiguous (m, d) gradients only).

        MLPs and CNNs of :func:`make_model` take the batched paths (:mod:`.batched_mlp`,
        :mod:`.batched_cnn`). Otherwise the
        forward pass is vmapped over the rows (``torch.func.vmap`` of ``functional_call``);
        the backward is one ``torch.autograd.grad`` of the sum of the rows' losses (row i's loss
        depends on row i only, so its gradient is the row's own), taken with respect to the
        blocks of X as leaves -- 3x faster on the CPU than ``vmap(grad(loss))`` for small MLPs
        (``bench/bench_neural.py``)."""
        if self._batched is not None:
            return self._batched.loss_grads(X, inputs, targets, w, with_losses)
        m = X.shape[0]
        with torch.enable_grad():
            leaves = {b.name: X[:, b.start:b.stop].detach().reshape(m, *b.shape).requires_grad_()
                      for b in self.layout}
            losses = self._vloss_blocks(leaves, inputs, targets, w)
            grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
        tail = [losses.detach()[:, None]] if with_losses else []
        return torch.cat([g.reshape(m, -1) for g in grads] + tail, dim=1)

    def _grads_rows(self, X, inputs, targets, w):
        return self._loss_grads(X, inputs, targets, w, with_losses=False)

    def initial_point(self) -> torch.Tensor:
        """The module's (seeded) initialization, flattened."""
        return self._x0.clone()

    # ---- batched row oracles (uncounted) ----------------------------------------------------------------
    def _data(self, rows):
        if rows is None:
            return self.inputs, self.targets, self.w
        return self.inputs[rows], self.targets[rows], self.w[rows]

    def _chunked(self, fn, X, inputs, targets, w):
        """sum over chunks of samples of fn(X, inputs[:, s], targets[:, s], w[:, s])."""
        M = inputs.shape[1]
        step = max(1, self.batch_rows // max(1, X.shape[0]))
        out = None
        for s in range(0, M, step):
            part = fn(X, inputs[:, s:s + step], targets[:, s:s + step], w[:, s:s + step])
            out = part if out is None else out + part
        return out

    def _grads(self, X, rows):
        return self._chunked(self._grads_rows, X, *self._data(rows))

    def _losses(self, X, rows):
        with torch.no_grad():
            return self._chunked(self._vloss if self._batched is None else self._batched.losses, X, *self._data(rows))

    def _sample_data(self, rows, idx):
        r = torch.arange(self.n, device=self.device) if rows is None else rows
        r = r[:, None]
        idx = idx.to(self.device)
        w = torch.full(idx.shape, 1.0 / idx.shape[1], dtype=self.dtype, device=self.device)
        return self.inputs[r, idx], self.targets[r, idx], w

    def _sample_grads(self, X, rows, idx):
        return self._chunked(self._grads_rows, X, *self._sample_data(rows, idx))

    def sample_loss_grads(self, X: torch.Tensor, idx: torch.Tensor, clients=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Minibatch losses (m,) and gradients (m, d) of the samples ``idx`` (m, b) in one call;
        counted as one minibatch gradient and one minibatch function evaluation."""
        rows = None if clients is None else torch.as_tensor(clients, dtype=torch.long, device=self.device)
        self._check_X(X, rows)
        m = self.m if rows is None else self.m[rows]
        amount = (idx.shape[1] / m.to(torch.float64)).cpu()
        self._count("grad", rows, amount)
        self._count("func", rows, amount)

        out = self._chunked(self._loss_grads, X, *self._sample_data(rows, idx))
        return out[:, -1], out[:, :-1]

    # ---- metrics (uncounted) ----------------------------------------------------------------------------------
    def _total(self, x, data, fn):
        inputs, targets, w = data
        out = None
        for s in range(0, len(w), self.batch_rows):
            part = fn(x, inputs[s:s + self.batch_rows], targets[s:s + self.batch_rows], w[s:s + self.batch_rows])
            out = part if out is None else out + part
        return out

    def loss(self, x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(self._total(x.to(self.dtype), self._all, self._loss_of))

    def full_grad(self, x: torch.Tensor) -> torch.Tensor:
        return self._total(x.to(self.dtype), self._all, self._grad_one)

    def _grad_one(self, x, inputs, targets, w):
        with torch.enable_grad():
            xl = x.detach().requires_grad_()
            return torch.autograd.grad(self._loss_of(xl, inputs, targets, w), xl)[0]

    def _accuracy_terms(self, x, inputs, targets, w):
        out = self.forward(x, inputs)
        loss = (_per_sample_ce(out, targets) * w).sum()
        correct = (out.argmax(-1) == targets).to(self.dtype)
        correct = correct if correct.ndim == 1 else correct.reshape(correct.shape[0], -1).mean(-1)
        return torch.stack([loss, (correct * w).sum()])

    def extra_metrics(self, x: torch.Tensor) -> dict[str, float]:
        """Held-out metrics of model x: ``test_loss`` and ``test_accuracy`` (for the language
        model: accuracy of the next character and ``test_perplexity`` = exp(test loss))."""
        if self._test is None:
            return {}
        with torch.no_grad():
            loss, acc = self._total(x.to(self.dtype), self._test, self._accuracy_terms).tolist()
        out = {"test_loss": loss, "test_accuracy": acc}
        if self.task == "lm":
            out["test_perplexity"] = math.exp(min(loss, 700.0))
        return out

    # ---- constants: unknown for neural networks ----------------------------------------------------------------
    def _smoothness(self):
        return torch.full((self.n,), math.nan, dtype=torch.float64)

    def _global_smoothness(self):
        return math.nan

    def _fingerprint_parts(self):
        return [self.task, self.layout.describe(), self.inputs, self.targets, self.w, self._x0]

    @property
    def gradient_flops(self) -> float:
        """~6 flops per parameter and sample (forward + backward) over all clients' samples."""
        return 6.0 * self.d * float(self.m.sum())

    def info(self) -> dict:
        out = {"problem": f"neural ({self.description or self.task})", "n": self.n, "d": self.d,
               "samples per client (min/max)": (int(self.m.min()), int(self.m.max())),
               "test samples": 0 if self._test is None else len(self._test[1]),
               "layout": self.layout.describe(), "dtype": str(self.dtype).replace("torch.", ""),
               "device": str(self.device)}
        return out


# ---- building a problem from a data source -------------------------------------------------------------------
def neural_problem(data: str = "sklearn:digits", model: str = "mlp", clients: int = 10, *, partition: str = "iid",
                   alpha: float = 0.5, power: float = 1.0, hidden: Sequence[int] = (32,), activation: str = "relu",
                   bias: bool = True, size: int | None = None, test_size: int | None = None,
                   test_fraction: float = 0.2, seq_len: int = 32, d_model: int = 32, heads: int = 2, layers: int = 1,
                   seed: int = 0, init_seed: int | None = None, dtype: torch.dtype = torch.float32, device="cpu",
                   batch_rows: int = 8192, compile: bool = False) -> NeuralProblem:
    """Load ``data``, keep ``size`` training samples (seeded subset), split them among ``clients``
    with :func:`optsim.data.partition` and build the model (seeded by ``init_seed``, default ``seed``).

    Image sources (``sklearn:digits``, ``mnist``, ``cifar10``) go with ``mlp`` or ``cnn``; ``text:PATH``
    goes with ``transformer`` (character-level next-token prediction on windows of ``seq_len``).
    """
    from ..data.partition import partition as split
    from ..data.vision import load_text, load_vision
    from ..rng import numpy_rng

    rng = numpy_rng(seed, "data")
    text = data.startswith("text:")
    if text != (model == "transformer"):
        raise ValueError(f"model '{model}' does not fit data '{data}': use 'transformer' with 'text:PATH' and "
                         f"'mlp'/'cnn' with image data")
    if text:
        td = load_text(data, seq_len, test_fraction=min(test_fraction, 0.5))
        W, Wt = td.windows, td.test_windows
        X, y, Xt, yt = W[:, :-1], W[:, 1:], Wt[:, :-1], Wt[:, 1:]
        labels = np.arange(len(X)) if partition != "dirichlet" else X[:, 0]
        desc = f"transformer LM on {data} (vocab {td.vocab_size}, windows of {seq_len})"
    else:
        vd = load_vision(data, test_fraction=test_fraction, seed=seed)
        X, y, Xt, yt = vd.X, vd.y, vd.X_test, vd.y_test
        labels = y
        desc = f"{model} on {data}"
    if size is not None and size < len(X):
        keep = np.sort(rng.permutation(len(X))[:size])
        X, y, labels = X[keep], y[keep], labels[keep]
    if test_size is not None and test_size < len(Xt):
        keep = np.sort(rng.permutation(len(Xt))[:test_size])
        Xt, yt = Xt[keep], yt[keep]
    parts = split(labels, clients, partition, seed=seed, alpha=alpha, power=power)
    init = seed if init_seed is None else init_seed
    if text:
        net = make_model("transformer", vocab=td.vocab_size, seq_len=seq_len, d_model=d_model, heads=heads,
                         layers=layers, bias=bias, seed=init)
    else:
        net = make_model(model, in_shape=X.shape[1:], classes=int(max(y.max(), yt.max() if len(yt) else 0)) + 1,
                         hidden=hidden, activation=activation, bias=bias, seed=init)
    return NeuralProblem(net, [X[p] for p in parts], [y[p] for p in parts], Xt, yt, task="lm" if text else "classify",
                         dtype=dtype, device=device, batch_rows=batch_rows, description=desc, compile=compile)
