"""Methods for neural problems: any torch optimizer in federated training, compressed Gluon, Ringmaster LMO.

* ``fedopt`` / ``local_opt`` -- FedAvg / Local SGD with any optimizer of :mod:`optsim.optim` or
  ``torch.optim`` as the client optimizer and (FedOpt) as the server optimizer;
* ``dist_opt`` -- distributed minibatch training: the clients' stochastic gradients are averaged
  and one optimizer steps on the server (uncompressed distributed Muon, Scion, Gluon, Gluon-MVR,
  Distance-Aware Muon, Adam, ...);
* ``cgluon`` -- communication-efficient (compressed) Gluon: unbiased (MARINA-type) or contractive
  (EF21-type) compression of SARAH, MVR or plain stochastic-gradient estimators, with the
  layer-wise LMO step on the layout's blocks (C8);
* ``ringmaster_lmo`` / ``minibatch_lmo`` -- asynchronous LMO momentum with a delay threshold
  (A4), and its synchronous counterpart, on the event simulator of
  :mod:`optsim.methods.asynchronous`.

Structure: the problem's :class:`~optsim.problems.neural.Layout` gives the blocks (weight matrices,
conv kernels viewed as ``(out, in * kh * kw)``, vectors); problems without one are a single
vector block. LMOs run on all clients' blocks of one shape in one batched call
(:func:`layout_lmo`). Optimizers see per-client parameters: elementwise ``torch.optim``
optimizers (SGD, Adam, ...) step on the whole ``(m, d)`` client matrix at once (exactly
per-client, since they act coordinate by coordinate); layer-wise optimizers (Muon, Scion,
Gluon, ...) get one view per client and block, and batch their LMOs by shape across clients.

Stepsizes: neural networks have no computable smoothness constants, so these methods take an
explicit ``stepsize`` (the optimizer's ``lr``), except where noted.
"""
from __future__ import annotations

import difflib
import inspect
import math
from typing import Any, Callable, Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_validator, model_validator

from ..estimators import mvr, sarah
from ..mechanisms import Feedback, MarinaEstimate, make_three_pc
from ..optim import OPTIMIZERS
from ..optim.lmo import LMOS, MATRIX_NORMS, apply_lmo
from ..problems.neural import Layout
from ..sampling import Independent
from .event import AsyncParams, EventMethod
from .base import Method, MethodParams, register_method

__all__ = ["layout_of", "layout_lmo", "optimizer_class", "BatchedOptimizer", "draw_indices", "FedOpt", "LocalOpt",
           "DistOpt", "CompressedGluon", "RingmasterLMO", "MinibatchLMO"]


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
#: step(closure) re-evaluating gradients at other points (same minibatch)
_CLOSURE_GRAD = {"gluon_mvr"}
#: step(closure) returning the loss and coupling all parameters: one optimizer per client
_PER_CLIENT = {"distance_free_muon"}
_UNSUPPORTED = {
    "lmo_hcm": "needs a differentiable loss for Hessian-vector products",
    "stops": "needs per-sample losses", "stop": "needs per-sample losses", "grads": "needs per-sample losses",
    "grad": "needs per-sample losses", "torch:lbfgs": "needs line-search closures", "torch:sparseadam": "needs sparse gradients",
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
            self.params[0].grad = G
            return
        for p, i, b in zip(self.params, self.rows, self.blocks):
            p.grad = G[i, b.start:b.stop].view(b.shape)


class BatchedOptimizer:
    """Optimizer(s) for the rows of ``Y`` (m, d), each row an independent model (in place on Y).

    ``step(grad_fn)`` with ``grad_fn() -> (G (m, d), losses (m,) or None)`` evaluated at the
    current ``Y`` on a fixed minibatch; optimizers that re-evaluate gradients (Gluon-MVR) call it
    again at their other points (each call is an oracle call, counted by the problem).
    """

    def __init__(self, spec, Y: torch.Tensor, layout: Layout, lr: float | None = None, vector_spec=None):
        self.Y, self.layout = Y, layout
        name, kw = _split_spec(spec)
        key, cls = optimizer_class(name)
        if key in _UNSUPPORTED:
            raise ValueError(f"optimizer '{name}' {_UNSUPPORTED[key]}; use it in a torch training loop")
        if lr is not None:
            kw["lr"] = lr
        m = Y.shape[0]
        blocks = list(layout)
        main = [b for b in blocks if b.is_matrix] if key in _MATRIX_ONLY else blocks
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


# ---- FedOpt / Local SGD with any optimizer ----------------------------------------------------------------
class FedOptParams(MethodParams):
    #: client optimizer: a name (``sgd``, ``adam``, ``muon``, ``gluon``, ...) or ``{name: ..., <arguments>}``;
    #: its ``lr`` is the method's ``stepsize``
    client_optimizer: OptSpec = "sgd"
    #: server optimizer on the pseudo-gradient -(mean client update); ``sgd`` with server_lr 1 is FedAvg
    server_optimizer: OptSpec = "sgd"
    server_lr: PositiveFloat = 1.0
    #: local steps per round
    local_steps: PositiveInt = 1
    #: samples per local step (uniform with replacement); None: full local gradients
    batch_size: PositiveInt | None = None
    #: optimizer of the vector blocks (biases, gains) when the client optimizer takes matrices only
    #: (the Muon family); default Gluon with the l2 ball (normalized momentum) at the same lr
    vector_optimizer: OptSpec | None = None


@register_method
class FedOpt(Method):
    """FedOpt: federated averaging with a client optimizer and a server optimizer.

    Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar, McMahan (2021), "Adaptive Federated
    Optimization" (arXiv:2003.00295), Algorithm 1 (FedOpt). Each round the sampled clients S get
    x, each runs ``local_steps`` steps of the client optimizer (state reset every round) on its
    minibatch (or full local) gradients from y = x, and sends Delta_i = y_i - x (d floats); the
    server forms Delta = mean_{i in S} Delta_i (weights 1/(n p_i) for independent sampling) and
    steps its optimizer on the pseudo-gradient -Delta with ``server_lr``. Client SGD with server
    SGD and server_lr 1 is FedAvg (McMahan et al. 2017, Alg. 1); with one local step it is
    minibatch SGD (or GD with full local gradients).

    Any :mod:`optsim.optim` or ``torch.optim`` optimizer can be the client or server optimizer
    (see the module docstring for how they are batched over clients). Stepsize: the client
    optimizer's lr, given as ``stepsize`` (no theorem covers neural networks; the paper tunes it).
    """

    name = "fedopt"
    paper = "Reddi et al. (2021), Adaptive Federated Optimization, Alg. 1 (FedOpt)"
    Params = FedOptParams
    uses = ("sampler",)
    state = ("x", "layout", "server")

    def check(self):
        _validate_spec(self.params.client_optimizer, f"{self.name}.client_optimizer")
        _validate_spec(self.params.server_optimizer, f"{self.name}.server_optimizer")
        if self.params.vector_optimizer is not None:
            _validate_spec(self.params.vector_optimizer, f"{self.name}.vector_optimizer")
        _lr_conflict(self.params.client_optimizer, self.params, self.name)
        if "lr" in _split_spec(self.params.server_optimizer)[1]:
            raise ValueError(f"{self.name}: give the server learning rate as 'server_lr'")

    def theory_stepsize(self):
        return _optimizer_stepsize(self.params.client_optimizer, self.name)

    def init(self, x0):
        self.layout = layout_of(self.problem)
        self.x = x0.clone()
        self.server = BatchedOptimizer(self.params.server_optimizer, self.x.view(1, self.d), self.layout,
                                       self.params.server_lr, self.params.vector_optimizer)

    def _participants(self):
        if self.sampler is None or self.sampler.is_full:
            return None, None
        S = self.sample_clients()
        w = None
        if isinstance(self.sampler, Independent):
            p = self.sampler.probs[S].to(self.problem.dtype)
            w = (1.0 / (self.n * p)).to(self.problem.device)
        return S, w

    def local_training(self, Y: torch.Tensor, S) -> torch.Tensor:
        """``local_steps`` client-optimizer steps on the rows Y of the clients S (in place)."""
        prm, pr = self.params, self.problem
        opt = BatchedOptimizer(prm.client_optimizer, Y, self.layout, self.gamma, prm.vector_optimizer)
        gen = self.ctx.generator("noise")
        for _ in range(prm.local_steps):
            if prm.batch_size is None:
                if opt.needs_loss:
                    fn = lambda: (pr.grads(Y, S), pr.losses(Y, S))  # noqa: E731
                else:
                    fn = lambda: (pr.grads(Y, S), None)  # noqa: E731
            else:
                idx = draw_indices(pr, prm.batch_size, gen, S)
                if opt.needs_loss:
                    fn = lambda idx=idx: pr.sample_loss_grads(Y, idx, S)[::-1]  # noqa: E731
                else:
                    fn = lambda idx=idx: (pr.sample_grads(Y, idx, S), None)  # noqa: E731
            corr = None
            if opt.needs_correction:  # Gluon-MVR variant 2: an independent minibatch for the correction
                idx2 = None if prm.batch_size is None else draw_indices(pr, prm.batch_size, gen, S)
                corr = (lambda: (pr.grads(Y, S), None)) if idx2 is None else (lambda idx2=idx2: (pr.sample_grads(Y, idx2, S), None))
            opt.step(fn, corr)
        return Y

    def step(self):
        if not bool(torch.isfinite(self.x).all()):  # diverged: leave x as it is, the runner ends the run
            return
        S, w = self._participants()
        x = self.channel.broadcast(self.x, clients=S)
        m = self.n if S is None else S.shape[0]
        Y = self.local_training(x.expand(m, self.d).clone(), S)
        delta = self.channel.uplink(Y - x, clients=S, weights=w)
        self.server.step(lambda: ((-delta).view(1, self.d), None))


class LocalOptParams(FedOptParams):
    server_optimizer: Literal["sgd"] = "sgd"
    server_lr: Literal[1.0] = 1.0


@register_method
class LocalOpt(FedOpt):
    """Local SGD with any client optimizer: FedOpt whose server averages the clients' models
    (server SGD with lr 1). Stich (2019), "Local SGD converges fast and communicates little"
    (arXiv:1805.09767) for the SGD case; the client optimizer may be any optimizer."""

    name = "local_opt"
    paper = "Stich (2019), Local SGD converges fast and communicates little (model averaging), any client optimizer"
    Params = LocalOptParams


# ---- distributed minibatch training with a server optimizer --------------------------------------------------
class DistOptParams(MethodParams):
    #: the server's optimizer (``gluon``, ``muon``, ``scion``, ``gluon_mvr``, ``adam``, ...); its lr = stepsize
    optimizer: OptSpec = "gluon"
    #: samples per client per round (uniform with replacement); None: full local gradients
    batch_size: PositiveInt | None = None
    vector_optimizer: OptSpec | None = None


@register_method
class DistOpt(Method):
    """Distributed minibatch training with a server-side optimizer.

    Every round each client computes a stochastic gradient at the server's model x (``batch_size``
    samples; full local gradient if None) and sends it (d floats); the server averages them,
    g = (1/n) sum_i g_i, and takes one step of its optimizer with g. With ``gluon`` this is
    distributed (uncompressed) Gluon: Riabinin, Shulgin, Gruntkowska, Richtárik (2025), "Gluon:
    Making Muon & Scion Great Again!" (arXiv:2505.13416), Algorithm 1 with the averaged
    stochastic gradient; with ``muon``/``scion``/``distance_*_muon`` the corresponding method
    (papers in :mod:`optsim.optim`). Optimizers that re-evaluate gradients (``gluon_mvr``) get a
    closure: the clients recompute their gradients at the requested point on the same samples
    (an extra oracle call and uplink each). ``distance_free_muon`` also receives the averaged
    minibatch loss (one float per client up).

    Stepsize: the optimizer's lr as ``stepsize`` (no theorem gives it for neural networks), or
    the optimizer's unitless default for parameter-free rules (Distance-Adaptive Muon: 1).
    """

    name = "dist_opt"
    paper = "Distributed minibatch training with a server optimizer (e.g. Gluon: Riabinin et al. 2025, Alg. 1)"
    Params = DistOptParams
    state = ("x", "layout", "server")

    def check(self):
        _validate_spec(self.params.optimizer, f"{self.name}.optimizer")
        if self.params.vector_optimizer is not None:
            _validate_spec(self.params.vector_optimizer, f"{self.name}.vector_optimizer")
        _lr_conflict(self.params.optimizer, self.params, self.name)

    def theory_stepsize(self):
        return _optimizer_stepsize(self.params.optimizer, self.name)

    def init(self, x0):
        self.layout = layout_of(self.problem)
        self.x = x0.clone()
        self.server = BatchedOptimizer(self.params.optimizer, self.x.view(1, self.d), self.layout, self.gamma,
                                       self.params.vector_optimizer)

    def _gradient(self, idx, need_loss: bool):
        """The clients' gradients (and losses) at the server's current x, averaged through the channel."""
        pr = self.problem
        X = self.x.view(1, self.d).expand(self.n, self.d)
        if idx is None:
            G = pr.grads(X)
            L = pr.losses(X) if need_loss else None
        elif need_loss:
            L, G = pr.sample_loss_grads(X, idx)
        else:
            G, L = pr.sample_grads(X, idx), None
        g = self.channel.uplink(G).view(1, self.d)
        if L is not None:
            L = self.channel.uplink(self.channel.dense(L.reshape(-1, 1))).reshape(1)
        return g, L

    def step(self):
        if not bool(torch.isfinite(self.x).all()):  # diverged: leave x as it is, the runner ends the run
            return
        self.channel.broadcast(self.x)
        b = self.params.batch_size
        gen = self.ctx.generator("noise")
        idx = None if b is None else draw_indices(self.problem, b, gen)
        corr = None
        if self.server.needs_correction:  # Gluon-MVR variant 2: an independent minibatch for the correction
            idx2 = None if b is None else draw_indices(self.problem, b, gen)
            corr = lambda: self._gradient(idx2, False)  # noqa: E731
        self.server.step(lambda: self._gradient(idx, self.server.needs_loss), corr)


# ---- compressed Gluon (C8) ------------------------------------------------------------------------------
class CompressedGluonParams(MethodParams):
    #: the clients' gradient estimator: ``sgd`` (stochastic gradient), ``sarah`` (recursive:
    #: v += g(x_k; xi) - g(x_{k-1}; xi), restarted with a full local gradient on MARINA's dense
    #: rounds) or ``mvr`` (momentum variance reduction, weight ``mvr_a`` on the new gradient)
    estimator: Literal["sgd", "sarah", "mvr"] = "sarah"
    #: how compressed messages are aggregated: ``marina`` (unbiased compressors: compressed
    #: differences, dense with probability p), ``ef21`` (contractive compressors: error feedback)
    feedback: Literal["auto", "marina", "ef21"] = "auto"
    #: probability of a dense (uncompressed) round with marina; default compressed/dense bits
    p: float | None = Field(None, gt=0.0, le=1.0)
    #: Gluon's momentum beta on the aggregated estimate (M <- beta M + (1 - beta) g); 0: none
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    mvr_a: float = Field(0.1, gt=0.0, le=1.0)
    #: samples per client per round; None: full local gradients
    batch_size: PositiveInt | None = None
    matrix_norm: str = "spectral"
    vector_norm: str = "l2"
    spectral_method: Literal["newton_schulz", "svd"] = "newton_schulz"


@register_method
class CompressedGluon(Method):
    """Communication-efficient (compressed) Gluon: layer-wise LMO steps on a compressed,
    variance-reduced gradient estimate.

    Qian, Gaponov, Malinovsky, Richtárik (2026), "Communication-Efficient Gluon in Federated
    Learning" (arXiv:2604.10689): Gluon with unbiased and contractive compressors, SARAH-type
    variance reduction of the compression error, and an MVR variant. Round k:

    1. the server broadcasts x_k (d floats); client i updates its estimator v_i at x_k
       (``sgd``: v_i = g_i(x_k; xi); ``sarah``: v_i += g_i(x_k; xi) - g_i(x_{k-1}; xi);
       ``mvr``: v_i = g_i(x_k; xi) + (1 - a)(v_i - g_i(x_{k-1}; xi)), same samples xi at both
       points; round 0: v_i = the local full gradient for sarah, g_i(x_0; xi) otherwise, sent dense;
       sarah restarts at the local full gradient with probability p, one coin shared by all);
    2. ``marina`` (unbiased C): with probability p (one shared coin) every client sends v_i
       dense and g = mean v_i (sarah restarts at the local full gradient there); otherwise it
       sends C(v_i^k - v_i^{k-1}) and g += mean of them (MARINA, Gorbunov et al. 2021, Alg. 1);
       ``ef21`` (contractive C): c_i = C(v_i - h_i), h_i += c_i, g += mean c_i (EF21,
       Richtárik et al. 2021, Alg. 1);
    3. Gluon's step on the server: M = beta M + (1 - beta) g (``momentum``; 0 gives M = g),
       x_{k+1} = x_k + gamma lmo(M) block by block (spectral ball for matrices, l2 ball for
       vectors by default; ``gamma`` = stepsize = the radius of every block).

    Identity compressor, ``sgd`` estimator, p = 1 and momentum beta is distributed Gluon
    (``dist_opt`` with ``gluon``); identity + ``sarah`` is the uncompressed variance-reduced
    Gluon of the paper's by-product.

    Status: the paper's algorithm listings, its layer-wise radii t_i = ||g_i||_* / (L0_i +
    L1_i ||g_i||_*) and its theorems' parameters (p, momentum, radius) could not be read; the
    rounds above are our reconstruction from the abstract (SARAH-type VR of the compression
    error with unbiased / contractive compressors, MVR variant) with the standard MARINA / EF21
    mechanisms, constant radius gamma (explicit stepsize) and MARINA's communication-balancing
    default p = (compressed bits) / (dense bits) (Gorbunov et al. 2021, Cor. 2.1: p = zeta/d).
    """

    name = "cgluon"
    paper = "Qian, Gaponov, Malinovsky, Richtárik (2026), Communication-Efficient Gluon in FL (reconstructed rounds)"
    Params = CompressedGluonParams
    uses = ("compressor",)
    state = ("x", "x_prev", "M", "v", "comm", "layout", "_fb", "_p")

    def check(self):
        _check_norms(self.params.matrix_norm, self.params.vector_norm)
        fb = self.feedback
        if fb == "marina" and self.compressor.omega is None:
            raise ValueError(f"{self.name}: marina feedback needs an unbiased compressor, got {self.compressor.describe()} "
                             f"(use feedback: ef21 for contractive ones)")
        if fb == "ef21" and self.compressor.alpha is None:
            raise ValueError(f"{self.name}: ef21 feedback needs a contractive compressor (e.g. top_k), got "
                             f"{self.compressor.describe()}")

    @property
    def feedback(self) -> str:
        fb = self.params.feedback
        if fb != "auto":
            return fb
        return "marina" if self.compressor.unbiased else "ef21"

    @property
    def p(self) -> float:
        if self.params.p is not None:
            return float(self.params.p)
        c = self.compressor
        ratio = c.mean_bits(self.n, self.problem.dtype, self.problem.device) / c.uncompressed_bits
        return float(min(1.0, max(ratio, 1e-6)))

    def theory_stepsize(self):
        raise NotImplementedError(f"{self.name}: the paper's radius needs layer-wise (L0, L1) constants: set 'stepsize'")

    def init(self, x0):
        self.layout = layout_of(self.problem)
        self.x = x0.clone()
        self.M = torch.zeros_like(self.x)
        self.v = None  # (n, d) client estimators
        self._p = self.p
        self._fb = self.feedback
        if self._fb == "marina":
            self.comm = MarinaEstimate()
        else:
            self.comm = Feedback(make_three_pc("ef21", self.compressor, float_bits=self.channel.float_bits))
        self.x_prev = None

    def _grads_at(self, X, idx):
        pr = self.problem
        return pr.grads(X) if idx is None else pr.sample_grads(X, idx)

    def step(self):
        if not bool(torch.isfinite(self.x).all()):  # diverged: leave x as it is, the runner ends the run
            return
        pr, prm, n, d = self.problem, self.params, self.n, self.d
        self.channel.broadcast(self.x)
        X = self.x.view(1, d).expand(n, d)
        gen = self.ctx.generator("noise")
        idx = None if prm.batch_size is None else draw_indices(pr, prm.batch_size, gen)
        marina = self._fb == "marina"
        if self.v is None:  # round 0: dense estimators
            self.v = pr.grads(X) if (prm.estimator == "sarah" or idx is None) else self._grads_at(X, idx)
            if marina:
                self.comm.refresh(self.v, self.channel)
            else:
                self.comm.start(self.channel.dense(self.v), self.channel)
        else:
            coin = self.coin(self._p) if (marina or prm.estimator == "sarah") else False
            v_old = self.v
            if prm.estimator == "sgd":
                v = self._grads_at(X, idx)
            elif prm.estimator == "sarah" and coin:
                v = pr.grads(X)  # restart at the local full gradient (PAGE-type, probability p)
            else:
                Xp = self.x_prev.view(1, d).expand(n, d)
                g_new, g_old = self._grads_at(X, idx), self._grads_at(Xp, idx)
                v = sarah(v_old, g_new, g_old) if prm.estimator == "sarah" else mvr(v_old, g_new, g_old, prm.mvr_a)
            if not marina:
                self.comm.send(v, self.channel, self.compress)
            elif coin:
                self.comm.refresh(v, self.channel)
            else:
                self.comm.move(self.compress(v - v_old), self.channel)
            self.v = v
        self.M.lerp_(self.comm.g, 1.0 - prm.momentum)
        step = layout_lmo(self.M.view(1, d), self.layout, prm.matrix_norm, prm.vector_norm,
                          method=prm.spectral_method).view(d)
        self.x_prev = self.x
        self.x = self.x + self.gamma * step


# ---- Ringmaster LMO (A4) on the event simulator ----------------------------------------------------------
class LMOAsyncParams(AsyncParams):
    #: momentum alpha: weight of the new gradient, m <- (1 - alpha) m + alpha g (schedule "constant")
    alpha: float = Field(0.1, gt=0.0, le=1.0)
    #: "constant": gamma and alpha fixed; "parameter_agnostic": the decreasing schedules of
    #: Sadiev et al. (2026), alpha_0 = 1, alpha_k = k^(-1/2), gamma_k = eta (k + 1)^(-3/4) with
    #: eta = the stepsize (any eta > 0; default 1), and (Ringmaster LMO) R_k = floor(1 / alpha_k)
    schedule: Literal["constant", "parameter_agnostic"] = "constant"
    matrix_norm: str = "spectral"
    vector_norm: str = "l2"
    spectral_method: Literal["newton_schulz", "svd"] = "newton_schulz"


class _LMOEvent(EventMethod):
    Params = LMOAsyncParams
    state = EventMethod.state + ("_layout", "_m", "_vec_l2")

    def check(self):
        _check_norms(self.params.matrix_norm, self.params.vector_norm)

    @property
    def agnostic(self) -> bool:
        return self.params.schedule == "parameter_agnostic"

    def theory_stepsize(self):
        if self.agnostic:  # the theorem holds for every eta > 0 (Psi = Delta_0 / eta + rho sigma + L_0 eta)
            return 1.0
        raise NotImplementedError(f"{self.name}: the stepsize of the (L0, L1) analysis needs constants the problem "
                                  f"does not know: set 'stepsize' (or schedule: parameter_agnostic)")

    def alpha_k(self, k: int) -> float:
        """Momentum weight of iteration k: constant, or alpha_0 = 1, alpha_k = k^(-1/2) (parameter-agnostic)."""
        if not self.agnostic:
            return self.params.alpha
        return 1.0 if k == 0 else 1.0 / math.sqrt(k)

    def gamma_k(self, k: int) -> float:
        """Stepsize (LMO radius) of iteration k: constant, or eta (k + 1)^(-3/4) (parameter-agnostic)."""
        return self.gamma * (k + 1) ** -0.75 if self.agnostic else self.gamma

    def _lmo_step(self, g) -> None:
        """m <- (1 - alpha_k) m + alpha_k g; x <- x + gamma_k lmo(m) (a new x: the server never updates in place)."""
        e = self.engine
        a, gamma = self.alpha_k(e.k), self.gamma_k(e.k)
        if self._vec_l2:  # one l2 block on the CPU (e.g. a quadratic): lmo(m) = -m / ||m||, in NumPy
            self._m = g * a if self._m is None else self._m * (1 - a) + g * a
            nrm = float(np.linalg.norm(self._m))
            self.update(e.x - (gamma / nrm) * self._m if nrm > 0 else e.x)
            return
        gt = torch.from_numpy(g) if e.numpy else g
        self._m = gt * a if self._m is None else self._m * (1 - a) + gt * a
        lmo = layout_lmo(self._m.view(1, self.d), self._layout, self.params.matrix_norm, self.params.vector_norm,
                         method=self.params.spectral_method).view(self.d)
        x = e.model() + gamma * lmo
        self.update(x.numpy() if e.numpy else x)

    def begin(self):
        self._layout = layout_of(self.problem)
        self._m = None
        self._vec_l2 = self.engine.numpy and len(self._layout) == 1 and not next(iter(self._layout)).is_matrix \
            and self.params.vector_norm == "l2"
        self._start()

    def _start(self):
        self.launch_all(0.0)


class RingmasterLMOParams(LMOAsyncParams):
    #: delay threshold R: gradients with delay >= R are discarded; default as Ringmaster ASGD,
    #: max{1, ceil(sigma^2 / eps)} when the problem knows sigma^2, else n. Under the
    #: parameter-agnostic schedule the threshold is R_k = floor(1 / alpha_k) = max{1, floor(sqrt(k))}
    #: and R must not be set.
    R: PositiveInt | None = None

    @model_validator(mode="after")
    def _agnostic_threshold(self):
        if self.schedule == "parameter_agnostic" and self.R is not None:
            raise ValueError("the parameter-agnostic schedule sets its own threshold R_k = floor(sqrt(k)): "
                             "remove 'R' (or use schedule: constant)")
        return self


@register_method
class RingmasterLMO(_LMOEvent):
    """Ringmaster LMO: asynchronous LMO-based momentum with a delay threshold.

    Sadiev, Maranjyan, Ilin, Richtárik (2026), "Ringmaster LMO: Asynchronous Linear Minimization
    Oracle Momentum Method" (arXiv:2605.18174), Algorithm 1 (the variant without calculation
    stops). Workers compute stochastic gradients at the model they received and send them when
    done; at an arrival of g computed at x_{k - delta}, the server ignores it if delta >= R_k
    (Ringmaster ASGD's rule; the worker restarts at x_k), otherwise

        m_{k+1} = (1 - alpha_k) m_k + alpha_k g,     x_{k+1} = x_k + gamma_k lmo(m_{k+1}),

    and the worker restarts at x_{k+1}. lmo is the block-wise unit-ball LMO of the layout
    (spectral for matrices, l2 for vectors; a problem without layout is one l2 block: normalized
    SGD with momentum). ``R = inf`` (a huge R) is plain asynchronous LMO momentum.

    Schedules (``schedule``):

    * ``constant``: gamma_k = gamma (explicit), alpha_k = alpha (default 0.1), R_k = R (default
      Ringmaster ASGD's max{1, ceil(sigma^2/eps)}, Maranjyan, Tyurin, Richtárik 2025, Thm. 4.1, or n).
      The constants of the paper's (L0, L1) theorem need L0, L1, sigma: gamma is explicit.
    * ``parameter_agnostic``: the paper's parameter-agnostic variant (its iteration-complexity
      theorem for the decreasing schedules): alpha_0 = 1, alpha_k = 1/sqrt(k), R_k =
      floor(1/alpha_k) = max{1, floor(sqrt(k))}, gamma_k = eta / (k + 1)^(3/4) for any eta > 0
      (``stepsize``, default 1): min_k E||grad f(x_k)||_* = O(Psi log K / K^(1/4)) with
      Psi = Delta_0/eta + rho sigma + L_0 eta, no problem constant needed; with the square-root
      threshold K iterations take O(min_m H_m (sqrt(K) + K/m)) seconds under fixed compute times
      (H_m the harmonic mean of tau_1..tau_m; the paper's time lemma), i.e. Ringmaster ASGD's
      time complexity up to the Psi and log factors. With one worker (every delay 0) it is the
      synchronous parameter-agnostic LMO momentum method (``minibatch_lmo`` with n = 1 and the
      same schedule) iterate for iterate.

    Source of the schedules: the authors' LaTeX and code (github.com/vectozavr/ringmaster-lmo:
    Algorithm 1, the iteration-complexity theorem and the square-root-threshold lemma; their
    ``ParameterAgnosticRingmasterMuonASGD`` uses the same alpha_k, R_k, gamma_k).
    """

    name = "ringmaster_lmo"
    paper = "Sadiev, Maranjyan, Ilin, Richtárik (2026), Ringmaster LMO, Alg. 1 (constant or parameter-agnostic schedules)"
    Params = RingmasterLMOParams
    state = _LMOEvent.state + ("_R",)

    @property
    def R(self) -> int:
        if self.params.R is not None:
            return int(self.params.R)
        try:
            return max(1, math.ceil(self.sigma2 / self.params.eps))
        except NotImplementedError:
            return self.n

    def R_k(self, k: int) -> int:
        """Delay threshold of iteration k: constant R, or floor(1 / alpha_k) = max{1, floor(sqrt(k))}."""
        return max(1, math.isqrt(k)) if self.agnostic else self._R

    def _start(self):
        self._R = None if self.agnostic else self.R
        self.launch_all(0.0)

    def on_arrival(self, i, t):
        fresh = self.k - self.engine.version[i] < self.R_k(self.k)
        self.record(i, fresh)
        if fresh:
            self._lmo_step(self.gradient(i))
        self.launch(i, t)


@register_method
class MinibatchLMO(_LMOEvent):
    """Synchronous LMO momentum against simulated time (the baseline of Ringmaster LMO): every
    worker computes a stochastic gradient at x_k, the server waits for all n, averages them,
    m_{k+1} = (1 - alpha_k) m_k + alpha_k mean_i g_i, x_{k+1} = x_k + gamma_k lmo(m_{k+1}) (Gluon /
    Muon-type step with a minibatch of n gradients; Riabinin et al. 2025, Alg. 1). An iteration
    lasts as long as the slowest worker. ``schedule: constant``: gamma explicit, alpha fixed;
    ``schedule: parameter_agnostic``: alpha_0 = 1, alpha_k = k^(-1/2), gamma_k = eta (k + 1)^(-3/4)
    (the schedules of parameter-agnostic Ringmaster LMO, Sadiev et al. 2026, with every delay 0)."""

    name = "minibatch_lmo"
    paper = "Synchronous LMO momentum (Gluon, Riabinin et al. 2025, Alg. 1) with n workers"
    state = _LMOEvent.state + ("_acc", "_count")

    def _start(self):
        self._acc, self._count = None, 0
        self.launch_all(0.0)

    def on_arrival(self, i, t):
        g = self.gather_all(i)
        if g is not None:
            self._lmo_step(g)
            self.launch_all(t)
