"""PAGE with arbitrary client and data sampling.

Tyurin, Sun, Burlachenko, Richtárik (2022), "Sharper rates and flexible framework for nonconvex
SGD with client and data sampling", arXiv 2206.02275 (TMLR 2023): PAGE (Li, Bao, Zhang,
Richtárik 2021, Algorithm 1) whose cheap rounds estimate grad f(x+) - grad f(x) with any
unbiased sampling -- here the composition of a client sampling (the ``sampler``: full, nice,
independent, importance) and a data sampling inside each sampled client (``data_sampling``:
nice, uniform with replacement, importance with replacement).

The estimator of Delta = grad f(x+) - grad f(x), with f = (1/n) sum_i f_i and
f_i = (1/m_i) sum_j f_ij, client inclusion probabilities p_i and Delta_ij = grad f_ij(x+) -
grad f_ij(x):

    g = (1/n) sum_{i in S} D_i / p_i,   D_i = sum_{k=1..b} w_ik Delta_{i j_k},

w_ik = 1/b for nice / uniform data sampling, w_ik = 1 / (b m_i q_{i j_k}) for importance sampling
with q_ij = L_ij / sum_l L_il. It is unbiased, and its variance is at most Lc^2 ||x+ - x||^2 with
(derived here for each combination, using ||Delta_ij|| <= L_ij ||x+ - x||, the clients' data
samplings independent of each other and of S):

    Lc^2 = C_clients + (1/n^2) sum_i v_i / p_i,
    C_clients = 0 (full),   (n - tau) / (tau (n - 1)) (1/n) sum_i L_i^2 (tau-nice),
                (1/n^2) sum_i (1 - p_i) L_i^2 / p_i (independent / importance),
    v_i = (m_i - b) / (b (m_i - 1)) (1/m_i) sum_j L_ij^2 (nice),   (1/b) (1/m_i) sum_j L_ij^2 (uniform),
          (1/b) ((1/m_i) sum_j L_ij)^2 (importance).

Importance sampling of data (q_ij ~ L_ij) replaces the mean square of the L_ij by the square of
their mean, and importance sampling of clients (p_i ~ L_i, the ``importance`` sampler) replaces
(1/n) sum L_i^2 by ((1/n) sum L_i)^2 / tau-type terms: this is the paper's point that better
samplings give sharper constants, and the combination importance x importance is what our
recipe C3 compares with the simple nice x nice sampling. The paper's own sampling constants (its
weighted "AB" inequality, Hessian-variance L_+-) could not be re-read here; the bound above is
derived directly and is never smaller than the truth.

Stepsize: PAGE's theorem (Li et al. 2021, Thm. 1; the same form in Tyurin et al.'s general
theorem) with E||g - Delta||^2 <= Lc^2 ||x+ - x||^2: gamma = 1 / (L + Lc sqrt((1 - p) / p)).
Default p = c_small / (c_large + c_small) with c_small = sum_i p_i b (expected samples of a cheap
round) and c_large = sum_i m_i (a full-gradient round), PAGE's p = b' / (b + b').
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, PositiveInt

from ...sampling import Nice
from ..base import Method, MethodParams, register_method

__all__ = ["PAGEAS", "page_sampling_constant"]


def _data_variance(Ls: torch.Tensor, m: torch.Tensor, b: int, kind: str) -> torch.Tensor:
    """(n,) v_i of the module docstring, from the per-sample constants Ls (n, M) (0 on padding)."""
    m = m.to(torch.float64)
    mean_sq = Ls.pow(2).sum(1) / m
    if kind == "nice":
        c = torch.where(m > 1, (m - b) / (b * (m - 1).clamp_min(1)), torch.zeros_like(m)).clamp_min(0)
        return c * mean_sq
    if kind == "uniform":
        return mean_sq / b
    return (Ls.sum(1) / m).pow(2) / b


def page_sampling_constant(problem, probs: torch.Tensor | None, tau: int | None, b: int,
                           data_sampling: str) -> float:
    """Lc of the module docstring: E||g - Delta||^2 <= Lc^2 ||x+ - x||^2 for the sampling
    ``probs`` (independent client sampling with these inclusion probabilities), ``tau`` (tau-nice)
    or neither (all clients), with ``b`` samples per sampled client drawn by ``data_sampling``."""
    n = problem.n
    Li = problem.L_i.to(torch.float64)
    v = _data_variance(problem.L_samples.to(torch.float64), problem.m.cpu(), b, data_sampling)
    if probs is not None:
        p = probs.to(torch.float64)
        client = float(((1 - p) * Li.pow(2) / p).sum()) / n**2
    else:
        p = torch.full((n,), (tau or n) / n, dtype=torch.float64)
        t = tau or n
        client = (n - t) / (t * (n - 1)) * float(Li.pow(2).mean()) if t < n else 0.0
    return math.sqrt(client + float((v / p).sum()) / n**2)


class PAGEASParams(MethodParams):
    #: samples b each sampled client uses in a cheap round
    batch_size: PositiveInt = 1
    #: how a sampled client picks its b samples: without replacement (nice), with replacement
    #: uniformly (uniform), or with replacement with probabilities proportional to L_ij (importance)
    data_sampling: Literal["nice", "uniform", "importance"] = "nice"
    #: probability of a full-gradient round; default c_small / (c_large + c_small)
    p: float | None = Field(None, gt=0, le=1)


@register_method
class PAGEAS(Method):
    """PAGE with client and data sampling: Tyurin, Sun, Burlachenko, Richtárik (2022), "Sharper
    rates and flexible framework for nonconvex SGD with client and data sampling", arXiv
    2206.02275 (PAGE, Li et al. 2021, Algorithm 1, with an arbitrary unbiased sampling). After
    x+ = x - gamma g (broadcast), one shared coin c ~ Be(p):

        c = 1:  every client sends grad f_i(x+) (d floats), g = (1/n) sum_i grad f_i(x+);
        c = 0:  clients S ~ ``sampler`` each draw b samples and send D_i (d floats, both points,
                the same samples), g += (1/n) sum_{i in S} D_i / p_i.

    Sampling constants, stepsize gamma = 1 / (L + Lc sqrt((1 - p) / p)) (PAGE's Thm. 1 with the
    sampling's variance constant Lc, see the module docstring) and default p: module docstring.
    With every client and b = m_i nice samples the estimator is exact and the method is GD.
    Each sample gradient counts 1 / m_i of a local gradient (two per drawn sample: x+ and x).
    """

    name = "page_as"
    stepsize_source = "reading"
    paper = ("Tyurin, Sun, Burlachenko, Richtárik (2022), Sharper rates and flexible framework for nonconvex SGD "
             "with client and data sampling (PAGE with arbitrary sampling)")
    uses = ("sampler",)
    Params = PAGEASParams
    state = ("x", "g", "last_full", "_inv_np", "_pad", "_q")

    def check(self):
        if self.problem.L_samples is None:
            raise ValueError(f"page_as needs a finite-sum problem with per-sample gradients, got {self.problem.name}")
        b, m_min = self.params.batch_size, int(self.problem.m.min())
        if self.params.data_sampling == "nice" and b > m_min:
            raise ValueError(f"page_as: nice data sampling draws b distinct samples; b = {b} > smallest client's {m_min}")

    @property
    def partial(self) -> bool:
        return self.sampler is not None and not self.sampler.is_full

    @property
    def probs(self) -> torch.Tensor:
        return self.sampler.probs if self.partial else torch.ones(self.n, dtype=torch.float64)

    @property
    def p(self) -> float:
        if self.params.p is not None:
            return float(self.params.p)
        small = float(self.probs.sum()) * self.params.batch_size
        return small / (float(self.problem.m.sum()) + small)

    def sampling_constant(self) -> float:
        s = self.sampler
        if not self.partial:
            return page_sampling_constant(self.problem, None, None, self.params.batch_size, self.params.data_sampling)
        if isinstance(s, Nice):
            return page_sampling_constant(self.problem, None, s.tau, self.params.batch_size, self.params.data_sampling)
        return page_sampling_constant(self.problem, s.probs, None, self.params.batch_size, self.params.data_sampling)

    def theory_stepsize(self):
        p = self.p
        return 1.0 / (self.problem.L + self.sampling_constant() * math.sqrt((1 - p) / p))

    def init(self, x0):
        self.x = x0
        dev = self.problem.device
        m = self.problem.m.cpu()
        Ls = self.problem.L_samples.to(torch.float64)
        self._q = Ls / Ls.sum(1, keepdim=True)  # importance probabilities (0 on padding)
        self._pad = torch.arange(Ls.shape[1])[None, :] >= m[:, None]
        self._inv_np = (1.0 / (self.n * self.probs)).to(self.problem.dtype).to(dev)
        self.g = self.channel.uplink(self.problem.grads(x0.expand(self.n, self.d)))
        self.last_full = True

    def _draw(self, S: torch.Tensor):
        """(|S|, b) local sample indices and weights w_ik of the clients S."""
        gen, b = self.ctx.generator("noise"), self.params.batch_size
        m = self.problem.m.cpu()[S].to(torch.float64)
        kind = self.params.data_sampling
        if kind == "nice":
            keys = torch.rand(S.shape[0], self._pad.shape[1], generator=gen, dtype=torch.float64)
            keys[self._pad[S]] = math.inf
            idx = keys.topk(b, dim=1, largest=False).indices
            w = torch.full(idx.shape, 1.0 / b, dtype=torch.float64)
        elif kind == "uniform":
            u = torch.rand(S.shape[0], b, generator=gen, dtype=torch.float64)
            idx = (u * m[:, None]).long().clamp_max_(m.long()[:, None] - 1)
            w = torch.full(idx.shape, 1.0 / b, dtype=torch.float64)
        else:
            q = self._q[S]
            idx = torch.multinomial(q, b, replacement=True, generator=gen)
            w = 1.0 / (b * m[:, None] * q.gather(1, idx))
        return idx, w

    def step(self):
        x_old = self.x
        self.x = self.channel.broadcast(self.x - self.gamma * self.g)
        self.last_full = self.coin(self.p)
        if self.last_full:
            self.g = self.channel.uplink(self.problem.grads(self.x.expand(self.n, self.d)))
            return
        self.g = self.g + self.estimate(self.x, x_old)

    def estimate(self, x_new: torch.Tensor, x_old: torch.Tensor) -> torch.Tensor:
        """One draw of the sampled estimator of grad f(x_new) - grad f(x_old), communicated by the
        sampled clients (one dense vector each)."""
        dev = self.problem.device
        S = self.sample_clients() if self.partial else torch.arange(self.n)
        r, b = S.shape[0], self.params.batch_size
        if r == 0:
            return torch.zeros_like(x_new)
        idx, w = self._draw(S)
        rows = S.repeat_interleave(b).to(dev)
        X = torch.cat([x_new.expand(r * b, self.d), x_old.expand(r * b, self.d)])
        flat = idx.reshape(-1, 1).to(dev)
        G = self.problem.sample_grads(X, torch.cat([flat, flat]), clients=torch.cat([rows, rows]))
        diffs = (G[: r * b] - G[r * b:]) * w.reshape(-1, 1).to(G)
        D = diffs.reshape(r, b, self.d).sum(1)
        S = S.to(dev)
        return self.channel.uplink(D, clients=S, weights=self._inv_np[S])
