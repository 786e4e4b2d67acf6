"""Optimizers for client rows: any torch optimizer (or one of :mod:`optsim.optim`) on many models at once.

Structure: the problem's :class:`~optsim.problems.neural.Layout` gives the blocks (weight matrices,
conv kernels viewed as ``(out, in * kh * kw)``, vectors); problems without one are a single
vector block. LMOs run on all clients' blocks of one shape in one batched call
(:func:`layout_lmo`). Optimizers see per-client parameters: elementwise ``torch.optim``
optimizers (SGD, Adam, ...) step on the whole ``(m, d)`` client matrix at once (exactly
per-client, since they act coordinate by coordinate); layer-wise optimizers (Muon, Scion,
Gluon, ...) get one view per client and block, and batch their LMOs by shape across clients;
optimizers with a ``batched`` mode (MicroAdam: per-tensor Top-K and error feedback) get one
``(m, numel)`` view per block and treat each row as its own tensor.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable

import torch

from ...optim import OPTIMIZERS
from ...optim.lmo import LMOS, MATRIX_NORMS, apply_lmo
from ...problems.neural import Layout

__all__ = ["layout_of", "layout_lmo", "optimizer_class", "BatchedOptimizer", "draw_indices", "OptSpec"]


# ---- layout and LMOs -----------------------------------------------------------------------------------
def layout_of(problem) -> Layout:
    """The problem's layout, or one vector block of length d."""
    return problem.layout if problem.layout is not None else Layout.vector(problem.d)


def layout_lmo(V: torch.Tensor, layout: Layout, matrix_norm: str = "spectral", vector_norm: str = "l2",
               **spectral) -> torch.Tensor:
    """Block-wise unit-ball LMO of every row of ``V`` (m, d): each block of each row is its own
    ball (``matrix_norm`` for matrices, ``vector_norm`` for vectors; see :mod:`optsim.optim.lmo`).
    Blocks of one shape are stacked over rows and blocks into one batched LMO call.

    ``spectral``: ``method`` ("newton_schulz" or "svd"), ``ns_steps``, ``ns_coefficients``.
    """
    m = V.shape[0]
    out = torch.empty_like(V)
    groups: dict[tuple, list] = {}
    for b in layout:
        norm = matrix_norm if b.is_matrix else vector_norm
        shape = b.matrix_shape if (b.is_matrix and norm in MATRIX_NORMS) else (b.numel,)
        groups.setdefault((norm, shape), []).append(b)
    for (norm, shape), blocks in groups.items():
        S = torch.stack([V[:, b.start:b.stop].reshape(m, *shape) for b in blocks], dim=1)  # (m, k, *shape)
        L = apply_lmo(S, norm, 1.0, batch_dims=2, **(spectral if norm == "spectral" else {}))
        for j, b in enumerate(blocks):
            out[:, b.start:b.stop] = L[:, j].reshape(m, b.numel)
    return out


def _check_norms(matrix_norm: str, vector_norm: str) -> None:
    for nm, what in ((matrix_norm, "matrix_norm"), (vector_norm, "vector_norm")):
        if nm not in LMOS:
            close = difflib.get_close_matches(nm, list(LMOS), n=1)
            raise ValueError(f"{what} '{nm}' is not a known LMO ({', '.join(LMOS)})"
                             + (f"; did you mean '{close[0]}'?" if close else ""))
    if vector_norm in MATRIX_NORMS:
        raise ValueError(f"vector_norm '{vector_norm}' is a matrix norm; use l2, sign or l1 for vectors")


# ---- optimizers for client rows --------------------------------------------------------------------------
_TORCH_OPTIMIZERS = {c.__name__.lower(): c for c in vars(torch.optim).values()
                     if isinstance(c, type) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer}


#: torch optimizers that act coordinate by coordinate (one (m, d) tensor = m independent models)
_ELEMENTWISE = {"sgd", "adam", "adamw", "adagrad", "adadelta", "adamax", "nadam", "radam", "rmsprop", "rprop", "asgd"}


#: optimizers that take matrices only: vector blocks go to ``vector_optimizer``
_MATRIX_ONLY = {"muon", "distance_adaptive_muon", "scale_calibrated_muon", "distance_free_muon", "torch:muon"}


#: optimizers with a ``batched`` mode (dim 0 = independent models): one (m, numel) view per block
_ROW_WISE = {"microadam"}


#: step(closure) re-evaluating gradients at other points (same minibatch)
_CLOSURE_GRAD = {"gluon_mvr"}


#: step(closure) returning the loss and coupling all parameters: one optimizer per client
_PER_CLIENT = {"distance_free_muon"}


_UNSUPPORTED = {
    "lmo_hcm": "needs a differentiable loss for Hessian-vector products",
    "stops": "needs per-sample losses", "stop": "needs per-sample losses", "grads": "needs per-sample losses",
    "grad": "needs per-sample losses", "torch:lbfgs": "needs line-search closures", "torch:sparseadam": "needs sparse gradients",
    "rpt": "samples one prefix of one model's layers per step", "rcd": "samples blocks of one model's layers per step",
    **dict.fromkeys(("lora", "asymmetric_lora", "chain_of_lora", "rac_lora"),
                    "needs each model's weight matrices as 2-D parameters (adapters)"),
}


_PARAMETER_FREE = {"distance_adaptive_muon"}  # lr is a unitless multiplier (default 1)


def optimizer_class(name: str) -> tuple[str, type]:
    """(key, class) of an optimizer name: optsim's (:data:`optsim.optim.OPTIMIZERS`) first, then
    ``torch.optim``'s by lower-case class name; ``torch:NAME`` picks torch's (e.g. ``torch:muon``)."""
    raw = str(name).lower()
    if raw.startswith("torch:"):
        key = raw[6:]
        if key in _TORCH_OPTIMIZERS:
            return raw, _TORCH_OPTIMIZERS[key]
    elif raw in OPTIMIZERS:
        return raw, OPTIMIZERS[raw]
    elif raw in _TORCH_OPTIMIZERS:
        return ("torch:" + raw if raw in ("muon", "lbfgs", "sparseadam") else raw), _TORCH_OPTIMIZERS[raw]
    known = sorted(OPTIMIZERS) + sorted(k for k in _TORCH_OPTIMIZERS if k not in OPTIMIZERS)
    close = difflib.get_close_matches(raw.removeprefix("torch:"), known, n=2)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown optimizer '{name}'{hint} (optsim.optim: {', '.join(sorted(OPTIMIZERS))}; or any "
                     f"torch.optim class by lower-case name)")


def _split_spec(spec) -> tuple[str, dict]:
    if isinstance(spec, str):
        return spec, {}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"an optimizer is a name or a mapping with 'name' (and its arguments), got {spec!r}")
    spec = dict(spec)
    return spec.pop("name"), spec


def _validate_spec(spec, where: str) -> None:
    name, kw = _split_spec(spec)
    key, cls = optimizer_class(name)
    if key in _UNSUPPORTED:
        raise ValueError(f"{where}: optimizer '{name}' {_UNSUPPORTED[key]}, which the simulator's gradient oracles do "
                         f"not provide; use it in a torch training loop (optsim.optim)")
    try:
        cls([torch.zeros(2, 2)], **kw)
    except TypeError as e:
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")]
        raise ValueError(f"{where}: bad arguments for optimizer '{name}' ({e}); it takes {', '.join(allowed)}") from None
    except ValueError as e:
        if "feasible" not in str(e):  # (a constrained optimizer's check of the probe point, not of the arguments)
            raise ValueError(f"{where}: optimizer '{name}': {e}") from None


class _Part:
    """One optimizer and the parameters it owns: the whole (m, d) tensor, or views (row, block)."""

    def __init__(self, key: str, opt, params: list, rows: list | None, blocks: list | None):
        self.key, self.opt, self.params, self.rows, self.blocks = key, opt, params, rows, blocks

    def assign(self, G: torch.Tensor, rows: list | None = None) -> None:
        if self.rows is None:
            if self.blocks is None:
                self.params[0].grad = G
            else:  # row-wise: one (m, numel) view per block
                for p, b in zip(self.params, self.blocks):
                    p.grad = G[:, b.start:b.stop]
            return
        for p, i, b in zip(self.params, self.rows, self.blocks):
            p.grad = G[i, b.start:b.stop].view(b.shape)


class BatchedOptimizer:
    """Optimizer(s) for the rows of ``Y`` (m, d), each row an independent model (in place on Y).

    ``step(grad_fn)`` with ``grad_fn() -> (G (m, d), losses (m,) or None)`` evaluated at the
    current ``Y`` on a fixed minibatch; optimizers that re-evaluate gradients (Gluon-MVR) call it
    again at their other points (each call is an oracle call, counted by the problem).

    ``vector_spec`` optimizes the vector blocks (biases, gains) when ``spec``'s optimizer takes
    matrices only (the Muon family), or always with ``split`` (e.g. Gluon with one norm for matrices
    and another for vectors).
    """

    def __init__(self, spec, Y: torch.Tensor, layout: Layout, lr: float | None = None, vector_spec=None,
                 split: bool = False):
        self.Y, self.layout = Y, layout
        name, kw = _split_spec(spec)
        key, cls = optimizer_class(name)
        if key in _UNSUPPORTED:
            raise ValueError(f"optimizer '{name}' {_UNSUPPORTED[key]}; use it in a torch training loop")
        if lr is not None:
            kw["lr"] = lr
        m = Y.shape[0]
        blocks = list(layout)
        main = [b for b in blocks if b.is_matrix] if (key in _MATRIX_ONLY or split) else blocks
        rest = [b for b in blocks if b not in main]
        self.parts: list[_Part] = []
        self.needs_loss = key in _PER_CLIENT
        self.parts += self._build(key, cls, kw, main, m, len(main) == len(blocks))
        if rest:
            vname, vkw = _split_spec(vector_spec or {"name": "gluon", "norm": "l2"})
            vkey, vcls = optimizer_class(vname)
            if lr is not None and "lr" not in vkw:
                vkw["lr"] = lr
            self.parts += self._build(vkey, vcls, vkw, rest, m, False)

    def _build(self, key, cls, kw, blocks, m, whole) -> list[_Part]:
        Y = self.Y
        if key.removeprefix("torch:") in _ELEMENTWISE and whole:
            return [_Part(key, cls([Y], **kw), [Y], None, None)]
        if key in _ROW_WISE:  # one (m, numel) view per block, every row its own model (no loop over clients)
            views = [Y[:, b.start:b.stop].requires_grad_() for b in blocks]
            return [_Part(key, cls(views, **{**kw, "batched": True}), views, None, blocks)]
        # one leaf view per (client, block); requires_grad marks them as trainable for optimizers that filter on it
        views = [(Y[i, b.start:b.stop].view(b.shape).requires_grad_(), i, b) for i in range(m) for b in blocks]
        if key in _PER_CLIENT:
            parts = []
            for i in range(m):
                mine = [v for v in views if v[1] == i]
                parts.append(_Part(key, cls([v[0] for v in mine], **kw), [v[0] for v in mine],
                                   [v[1] for v in mine], [v[2] for v in mine]))
            return parts
        return [_Part(key, cls([v[0] for v in views], **kw), [v[0] for v in views], [v[1] for v in views],
                      [v[2] for v in views])]

    @property
    def needs_correction(self) -> bool:
        """Whether a part needs a second, independent minibatch (Gluon-MVR variant 2)."""
        return any(p.key in _CLOSURE_GRAD and p.opt.param_groups[0].get("variant") == 2 for p in self.parts)

    def step(self, grad_fn: Callable[[], tuple[torch.Tensor, torch.Tensor | None]],
             correction_fn: Callable[[], tuple[torch.Tensor, torch.Tensor | None]] | None = None) -> None:
        G, losses = grad_fn()
        for part in self.parts:
            if part.key in _CLOSURE_GRAD:
                cache = {"G": G}

                def closure(part=part, cache=cache):
                    g = cache.pop("G", None)  # the first call is at the current point: reuse G
                    part.assign(grad_fn()[0] if g is None else g)

                def correction(part=part):
                    part.assign(correction_fn()[0])

                part.opt.step(closure, correction if correction_fn is not None else None)
            elif part.key in _PER_CLIENT:
                if losses is None:
                    raise RuntimeError(f"optimizer {part.key} needs the losses from the gradient function")
                part.assign(G)
                i = part.rows[0]
                part.opt.step(lambda i=i: losses[i])
            else:
                part.assign(G)
                part.opt.step()


def draw_indices(problem, batch_size: int, generator: torch.Generator, clients=None) -> torch.Tensor:
    """Local sample indices (m, b), uniform with replacement -- the same draw as
    :meth:`Problem.minibatch_grads` (so methods that need the indices twice follow its stream)."""
    m = problem.m if clients is None else problem.m[torch.as_tensor(clients, device=problem.m.device)]
    m = m.cpu()
    u = torch.rand(m.shape[0], int(batch_size), generator=generator, dtype=torch.float64)
    return (u * m.to(torch.float64)[:, None]).long().clamp_max_(m[:, None] - 1).to(problem.device)


OptSpec = str | dict[str, Any]


def _optimizer_stepsize(spec, what: str) -> float:
    """The stepsize of a method whose steps are an optimizer's: its ``lr`` when the spec sets it,
    1 for parameter-free rules (Distance-Adaptive Muon's unitless multiplier), else an error."""
    name, kw = _split_spec(spec)
    if "lr" in kw:
        return float(kw["lr"])
    if optimizer_class(name)[0] in _PARAMETER_FREE:
        return 1.0
    raise NotImplementedError(f"{what}: no theoretical stepsize for '{name}' on this problem: set 'stepsize' "
                              f"(the optimizer's lr)")


def _lr_conflict(spec, params, what: str) -> None:
    if params.stepsize is not None and "lr" in _split_spec(spec)[1]:
        raise ValueError(f"{what}: give the learning rate once, as 'stepsize' or as the optimizer's 'lr'")
