"""BiasedSGD: x+ = x - gamma g(x) with a possibly biased stochastic gradient estimator g.

Demidovich, Malinovsky, Sokolov, Richtárik (2023), "A guide through the zoo of biased SGD", NeurIPS
2023 (arXiv 2305.16296). Only the paper's first page was readable here; what is below comes from the
authors' experiment code (IgorSokoloff/guide-biased-sgd-experiments, ``sgd-ind.py``) [CODE] and, where
marked, from the research notes' recollection of the paper [not confirmed].

Estimator (each client i, each round): **independent sampling** of its samples -- sample j is in the
batch S_i with probability p_ij, independently -- and either

* ``weighting: unbiased``: g_i = sum_{j in S_i} grad f_ij(x) / (m_i p_ij)  (E g_i = grad f_i(x)), or
* ``weighting: biased``: g_i = (1/|S_i|) sum_{j in S_i} grad f_ij(x)  (0 if S_i is empty): the plain
  mean of the drawn samples, biased whenever the p_ij differ (importance sampling without
  reweighting) or |S_i| is random;

with p_ij = ``prob`` for all samples (``sampling: uniform``) or p_ij = min(1, prob m_i L_ij / sum_j L_ij)
(``sampling: importance``: expected batch about prob m_i, proportional to the samples' smoothness
constants L_ij). Here f_ij = phi_ij + r, so the regularizer enters each sample's gradient. Optionally a
``compressor`` (the project's: ``top_k``, ``rand_k`` with ``scaled: false`` -- random sparsification
without rescaling --, ``clip``, ...) is applied to each g_i before it is sent: top-k / unscaled rand-k /
clipping of a stochastic gradient, the paper's further biased examples. The server averages and steps.

The paper's assumption (biased ABC, recalled, **not confirmed**): there are A, B, C, b, c >= 0 with
<grad f(x), E g(x)> >= b ||grad f(x)||^2 - c and E||g(x)||^2 <= 2 A (f(x) - f^inf) + B ||grad f(x)||^2 + C;
the nonconvex theorem's stepsize gamma <= min{b / (L B), 1 / sqrt(L A K)} for K iterations. The
constants the authors' code uses for the independent-sampling example [CODE] (L = smoothness of f,
L_j of the samples, K = ``horizon``):

* unbiased: A = max_j (1 - p_j) L_j / (p_j m), B = 1, gamma = min(1 / (L B), 1 / sqrt(L A K));
* biased:   A = max_j L_j / min_j p_j,                gamma = 1 / sqrt(L A K).

These are the default stepsizes (with several clients: the worst client's A); with a compressor no
default is known here and ``stepsize`` must be set. Oracle calls: the drawn samples only (|S_i| / m_i
local gradients per client and round).
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import Literal

import torch
from pydantic import Field, PositiveInt

from ..base import Method, MethodParams, register_method

__all__ = ["BiasedSGD", "independent_sampling"]


def independent_sampling(p: torch.Tensor, m: torch.Tensor, weighting: str, generator: torch.Generator):
    """Draw S_i (sample j in S_i with probability p[i, j], independently; p = 0 on padding) for every
    client; returns (idx, weights) of shape (n, b_max) for :meth:`Problem.weighted_sample_grads`
    (weight 0 on padding): 1 / (m_i p_ij) (``unbiased``) or 1 / |S_i| (``biased``)."""
    n, M = p.shape
    mask = torch.rand(n, M, generator=generator, dtype=torch.float64) < p
    counts = mask.sum(1)
    b = max(int(counts.max()), 1)
    rows, cols = mask.nonzero(as_tuple=True)  # row-major: each client's drawn samples in increasing order
    first = torch.cumsum(counts, 0).sub_(counts)  # where each client's draws start in (rows, cols)
    at = torch.arange(rows.numel()).add_(rows * b - first[rows])  # drawn samples first, without a sort
    idx = torch.zeros(n * b, dtype=torch.long).index_put_((at,), cols)  # padding: sample 0, weight 0
    if weighting == "unbiased":
        w_drawn = 1.0 / (m.to(torch.float64)[rows] * p[rows, cols].clamp_min(1e-300))
    else:
        w_drawn = (1.0 / counts.clamp_min(1).to(torch.float64))[rows]
    w = torch.zeros(n * b, dtype=torch.float64).index_put_((at,), w_drawn)
    return idx.view(n, b), w.view(n, b)


class BiasedSGDParams(MethodParams):
    #: uniform (p = prob) | importance (p_ij = min(1, prob m_i L_ij / sum_j L_ij))
    sampling: Literal["uniform", "importance"] = "uniform"
    #: inclusion probability of a sample (uniform), or the expected fraction of samples (importance)
    prob: float = Field(0.1, gt=0, le=1)
    #: unbiased (1 / (m p_ij)) | biased (mean of the drawn samples)
    weighting: Literal["unbiased", "biased"] = "biased"
    #: iterations K of the theory's stepsize 1 / sqrt(L A K)
    horizon: PositiveInt = 1000


@register_method
class BiasedSGD(Method):
    """SGD with the biased (or unbiased) estimators of the biased-SGD zoo paper; see the module
    docstring for the estimator, the assumption and where each constant comes from. Default stepsize
    only without a compressor (the authors' code's constants), hence ``explicit``."""

    name = "biased_sgd"
    stepsize_source = "explicit"
    paper = ("Demidovich, Malinovsky, Sokolov, Richtárik (2023), A guide through the zoo of biased SGD, BiasedSGD "
             "(independent sampling example; constants from the authors' code)")
    uses = ("compressor",)
    Params = BiasedSGDParams

    def check(self):
        if self.problem.L_samples is None:
            raise ValueError("biased_sgd needs a finite-sum problem with per-sample smoothness constants (e.g. logreg)")

    @cached_property
    def probs(self) -> torch.Tensor:
        """(n, M) inclusion probabilities p_ij (0 on padding; computed once: the problem and the
        parameters are fixed for the method's life)."""
        Ls = self.problem.L_samples.to(torch.float64)
        real = Ls > 0
        if self.params.sampling == "uniform":
            return torch.where(real, torch.full_like(Ls, self.params.prob), torch.zeros_like(Ls))
        m = self.problem.m.cpu().to(torch.float64)[:, None]
        return (self.params.prob * m * Ls / Ls.sum(1, keepdim=True)).clamp(max=1.0)

    def abc_constants(self) -> dict:
        """The constants of the authors' code for this estimator (A, B; None where the code has none)."""
        p, Ls = self.probs, self.problem.L_samples.to(torch.float64)
        real = Ls > 0
        m = self.problem.m.cpu().to(torch.float64)[:, None]
        if self.params.weighting == "unbiased":
            A = float(torch.where(real, (1 - p) * Ls / (p.clamp_min(1e-300) * m), torch.zeros_like(Ls)).max())
            return {"A": A, "B": 1.0}
        return {"A": float(Ls.max() / p[real].min()), "B": None}

    @property
    def _compressed(self) -> bool:
        return self.compressor is not None and self.compressor.name != "identity"

    def theory_stepsize(self):
        if self._compressed:
            raise NotImplementedError("biased_sgd with a compressor: set 'stepsize' (the paper's constants for "
                                      "compressed estimators are not confirmed)")
        c, L, K = self.abc_constants(), self.problem.L, self.params.horizon
        root = 1.0 / math.sqrt(L * c["A"] * K) if c["A"] > 0 else math.inf
        return min(1.0 / (L * c["B"]), root) if c["B"] is not None else root

    @cached_property
    def _m(self) -> torch.Tensor:
        return self.problem.m.cpu()

    def init(self, x0):
        self.x = x0

    def step(self):
        idx, w = independent_sampling(self.probs, self._m, self.params.weighting,
                                      self.ctx.generator("noise"))
        dev, dt = self.problem.device, self.problem.dtype
        G = self.problem.weighted_sample_grads(self.at_clients(self.x), idx.to(dev), w.to(dev, dt))
        msg = self.compress(G) if self._compressed else G
        self.x = self.channel.broadcast(self.x - self.gamma * self.channel.uplink(msg))
