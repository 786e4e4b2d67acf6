"""Federated and distributed training with any optimizer: FedOpt, Local SGD with an optimizer, distributed minibatch training.

Neural networks have no computable smoothness constants, so these methods take an explicit
``stepsize`` (the optimizer's ``lr``).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import PositiveFloat, PositiveInt

from ...sampling import Independent
from ..base import Method, MethodParams, register_method
from .optimizers import (
    BatchedOptimizer,
    OptSpec,
    _lr_conflict,
    _optimizer_stepsize,
    _split_spec,
    _validate_spec,
    draw_indices,
    layout_of,
)

__all__ = ["FedOptParams", "FedOpt", "LocalOptParams", "LocalOpt", "DistOptParams", "DistOpt"]


# ---- FedOpt / Local SGD with any optimizer ----------------------------------------------------------------
class FedOptParams(MethodParams):
    #: client optimizer: a name (``sgd``, ``adam``, ``muon``, ``gluon``, ...) or ``{name: ..., <arguments>}``;
    #: its ``lr`` is the method's ``stepsize``
    client_optimizer: OptSpec = "sgd"
    #: server optimizer on the pseudo-gradient -(mean client update); ``sgd`` with server_stepsize 1 is FedAvg
    server_optimizer: OptSpec = "sgd"
    server_stepsize: PositiveFloat = 1.0
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
    steps its optimizer on the pseudo-gradient -Delta with ``server_stepsize``. Client SGD with server
    SGD and server_stepsize 1 is FedAvg (McMahan et al. 2017, Alg. 1); with one local step it is
    minibatch SGD (or GD with full local gradients).

    Any :mod:`optsim.optim` or ``torch.optim`` optimizer can be the client or server optimizer
    (see the module docstring for how they are batched over clients). Stepsize: the client
    optimizer's lr, given as ``stepsize`` (no theorem covers neural networks; the paper tunes it).
    """

    name = "fedopt"
    stepsize_source = "explicit"
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
            raise ValueError(f"{self.name}: give the server learning rate as 'server_stepsize'")

    def theory_stepsize(self):
        return _optimizer_stepsize(self.params.client_optimizer, self.name)

    def init(self, x0):
        self.layout = layout_of(self.problem)
        self.x = x0.clone()
        self.server = BatchedOptimizer(self.params.server_optimizer, self.x.view(1, self.d), self.layout,
                                       self.params.server_stepsize, self.params.vector_optimizer)

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
    server_stepsize: Literal[1.0] = 1.0


@register_method
class LocalOpt(FedOpt):
    """Local SGD with any client optimizer: FedOpt whose server averages the clients' models
    (server SGD with lr 1). Stich (2019), "Local SGD converges fast and communicates little"
    (arXiv:1805.09767) for the SGD case; the client optimizer may be any optimizer."""

    name = "local_opt"
    stepsize_source = "explicit"
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
    stepsize_source = "explicit"
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
