"""Gradient descent, the uncompressed baseline, and distributed minibatch SGD."""
from __future__ import annotations

import torch
from pydantic import PositiveInt

from ...sampling import Nice
from ..base import Method, MethodParams, register_method

__all__ = ["GD", "SGD", "sgd_expected_smoothness"]


@register_method
class GD(Method):
    """Distributed gradient descent: x+ = x - gamma * (1/n) sum_i grad f_i(x).

    Each round every client sends its full local gradient (d floats) and the server broadcasts
    the new model. Default stepsize 1/L (Nesterov 2004, "Introductory Lectures on Convex
    Optimization", Thm. 2.1.15: linear rate (1 - mu/L) for strongly convex f).
    """

    name = "gd"
    stepsize_source = "theorem"
    paper = "Nesterov (2004), Introductory Lectures on Convex Optimization, Sec. 2.1.5 (gradient method)"
    replica_batched = True

    def theory_stepsize(self):
        return 1.0 / self.problem.L

    def init(self, x0):
        self.x = x0

    def step(self):
        g = self.channel.uplink(self.problem.grads(self.at_clients(self.x)))
        self.x = self.channel.broadcast(self.x - self.gamma * g)


class SGDParams(MethodParams):
    #: samples each participating client draws (uniformly, with replacement) per round
    batch_size: PositiveInt = 1


def sgd_expected_smoothness(problem, batch_size: int, probs: torch.Tensor | None = None,
                            tau: int | None = None) -> float:
    """Expected-smoothness constant L_exp of distributed minibatch SGD (see :class:`SGD`).

    ``tau``: nice sampling of tau clients; ``probs``: independent client sampling with these
    inclusion probabilities; neither: every client takes part.
    """
    n, b, L, L_max = problem.n, int(batch_size), problem.L, problem.L_max
    if problem.additive_noise:  # g_i(x) - g_i(x*) = grad f_i(x) - grad f_i(x*)
        per_client = torch.zeros(n, dtype=torch.float64)
    else:
        Ls = problem.L_samples
        if Ls is None:
            raise NotImplementedError(f"sgd: no per-sample smoothness constants for {problem.name}: set 'stepsize'")
        per_client = Ls.max(1).values  # max_j L_ij for each client
    if probs is not None:  # independent sampling, reweighted by 1/(n p_i)
        p = probs.to(torch.float64)
        return L + float((((1 - p) * problem.L_i + per_client / b) / p).max()) / n
    t = n if tau is None else int(tau)
    c = (n - t) / (t * (n - 1)) if t < n else 0.0  # variance factor of tau-nice sampling
    s = 1.0 / (t * b) if bool((per_client > 0).any()) else 0.0
    Ls_max = float(per_client.max())
    if c >= s:
        return (1 - c) * L + (c - s) * L_max + s * Ls_max
    return (1 - s) * L + s * Ls_max


@register_method
class SGD(Method):
    """Distributed minibatch SGD: each participating client i draws ``batch_size`` of its m_i
    samples uniformly with replacement, the server averages (with partial participation:
    g = sum_{i in S} g_i / (n p_i), the mean over S for nice sampling) and steps x+ = x - gamma g.

    Gower, Loizou, Qian, Sailanbayev, Shulgin, Richtárik (2019), "SGD: general analysis and
    improved rates": SGD with an arbitrary sampling vector v (x+ = x - gamma grad f_v(x), Sec. 2;
    here v is the product of the client sampling and the clients' minibatches); default stepsize
    gamma = 1 / (2 L_exp) from Theorem 3.1 (mu-strongly quasi-convex f, each f_ij convex):
    E||x^k - x*||^2 <= (1 - gamma mu)^k ||x^0 - x*||^2 + 2 gamma sigma^2 / mu, sigma^2 = E||g(x*)||^2.
    The theorem does not cover nonconvex f; we use the same default there (heuristic).

    Expected smoothness (E||g(x) - g(x*)||^2 <= 2 L_exp (f(x) - f(x*))), derived here for our
    oracle. Write D_ij = grad f_ij(x) - grad f_ij(x*), D_i = mean_j D_ij, Y_i the client's minibatch
    mean of b draws of D_ij, and use ||D_ij||^2 <= 2 L_ij D_{f_ij}(x, x*) (convex, L_ij-smooth f_ij),
    ||D_i||^2 <= 2 L_i D_{f_i}, ||mean_i D_i||^2 <= 2 L D_f with D_f = f(x) - f(x*).
    With tau-nice client sampling (tau = n: all clients), c = (n - tau) / (tau (n - 1)):

        E||g - g*||^2 = (1 - c) ||mean D_i||^2 + (c - 1/(tau b)) mean_i ||D_i||^2 + 1/(tau b) mean_i E_j||D_ij||^2,

    so, with L_s = max_ij L_ij (:attr:`GLMProblem.L_sample_max`) and s = 1 / (tau b),

        L_exp = (1 - c) L + (c - s) L_max + s L_s   if c >= s,   else   (1 - s) L + s L_s

    (the second case bounds the negative middle term with mean_i ||D_i||^2 >= ||mean D_i||^2).
    Checks: one client, b = 1 gives L_s (single-sample SGD); b -> infinity with all clients
    gives L (gradient descent, gamma = 1/(2L)); b -> infinity with tau-nice sampling gives
    Gower et al.'s tau-nice constant (1 - c) L + c L_max. For independent sampling with
    probabilities p_i (looser, negative terms dropped):
    L_exp = L + max_i [((1 - p_i) L_i + max_j L_ij / b) / p_i] / n. For the Quadratic problem the
    noise is additive (the same draw at x and x*), so the sample term vanishes: L_exp = L with
    all clients.
    """

    name = "sgd"
    stepsize_source = "derived"
    paper = "Gower, Loizou, Qian, Sailanbayev, Shulgin, Richtárik (2019), SGD: general analysis and improved rates, Thm. 3.1"
    uses = ("sampler",)
    Params = SGDParams
    state = ("x", "_weights")

    def expected_smoothness(self) -> float:
        s = self.sampler
        if s is None or s.is_full:
            return sgd_expected_smoothness(self.problem, self.params.batch_size)
        if isinstance(s, Nice):
            return sgd_expected_smoothness(self.problem, self.params.batch_size, tau=s.tau)
        return sgd_expected_smoothness(self.problem, self.params.batch_size, probs=s.probs)

    def theory_stepsize(self):
        return 1.0 / (2.0 * self.expected_smoothness())

    def init(self, x0):
        self.x = x0
        if self.sampler is not None and not self.sampler.is_full:
            p = self.sampler.probs.to(self.problem.dtype).to(self.problem.device)
            self._weights = 1.0 / (self.n * p)

    def step(self):
        b, gen = self.params.batch_size, self.ctx.generator("noise")
        if self.sampler is None or self.sampler.is_full:
            G = self.problem.minibatch_grads(self.x.expand(self.n, self.d), b, gen)
            g = self.channel.uplink(G)
            self.x = self.channel.broadcast(self.x - self.gamma * g)
            return
        S = self.sample_clients()
        x = self.channel.broadcast(self.x, clients=S)  # the participants get the current model
        G = self.problem.minibatch_grads(x.expand(S.shape[0], self.d), b, gen, clients=S)
        g = self.channel.uplink(G, clients=S, weights=self._weights[S])
        self.x = self.x - self.gamma * g
