"""Stein variational gradient descent (Liu & Wang 2016, "Stein Variational Gradient Descent: A
General Purpose Bayesian Inference Algorithm", NeurIPS, Algorithm 1):

    x_i <- x_i + eps phi(x_i),   phi(x) = (1/N) sum_j [k(x_j, x) grad log pi(x_j) + grad_{x_j} k(x_j, x)].

Plain SVGD with a constant stepsize ``eps`` (the paper's Algorithm 1; its experiments and the
reference code use AdaGrad with momentum instead, not done here). Kernel: RBF ``exp(-r^2 / h)``
with the median bandwidth of Liu and Wang's reference code, ``h = median(r^2) / log(N + 1)``
(:mod:`optsim.targets.kernels` states the convention and how others differ), or IMQ, or the linear
kernel ``x^T y + 1`` (moment matching).

Batched: for a radial kernel ``k = f(r^2)``, ``grad_{x_j} k(x_j, x_i) = 2 f'(r^2) (x_j - x_i)``, so

    N phi = K S + 2 F' X - 2 X * rowsum(F'),    K = f(D2), F' = f'(D2), S = scores (N, d);

for the RBF kernel ``F' = -K / h`` and this is one matrix product:
``N phi = K (S - 2 X / h) + (2 / h) X * rowsum(K)``. One squared-distance matrix (one ``X X^T``
product), one ``exp``, one ``K @ (N, d)`` product: the floor of ``bench/bench_svgd.py``.
"""
from __future__ import annotations

import torch

from ..targets import Target
from ..targets.kernels import RBF, Linear, make_kernel, sq_distances
from .base import ParticleSampler

__all__ = ["SVGD", "svgd_direction"]


def svgd_direction(X: torch.Tensor, S: torch.Tensor, kernel) -> tuple[torch.Tensor, torch.Tensor, float]:
    """SVGD's field phi at the particles X (N, d) given their scores S = grad log pi(X):
    returns (phi (N, d), kernel matrix K (N, N), kernel scale h)."""
    N = X.shape[0]
    if isinstance(kernel, Linear):
        K = torch.addmm(torch.ones(N, N, dtype=X.dtype, device=X.device), X, X.T)
        return K @ S / N + X, K, 1.0
    D2 = sq_distances(X)
    h = kernel.scale(D2)
    if isinstance(kernel, RBF):
        K = D2.mul_(-1.0 / h).exp_()  # in place: D2 is not needed again
        G = torch.add(S, X, alpha=-2.0 / h)
        phi = torch.addmm(X * (K.sum(1, keepdim=True) * (2.0 / h)), K, G)
        return phi.div_(N), K, h
    K = kernel.f(D2, h)
    F1 = kernel.df(D2, h, K)
    phi = K @ S + 2.0 * (F1 @ X) - 2.0 * X * F1.sum(1, keepdim=True)
    return phi / N, K, h


class SVGD(ParticleSampler):
    """SVGD with a constant stepsize; ``kernel`` "rbf" (median bandwidth), "imq", "linear" or an instance."""

    name = "svgd"
    paper = "Liu & Wang (2016), Stein Variational Gradient Descent, NeurIPS, Alg. 1"

    def __init__(self, target: Target, stepsize: float, kernel="rbf"):
        super().__init__(target, stepsize)
        self.kernel = make_kernel(kernel)

    def direction(self, X: torch.Tensor) -> torch.Tensor:
        return svgd_direction(X, self.target.score(X), self.kernel)[0]

    def step(self) -> None:
        self.X = self.X + self.stepsize * self.direction(self.X)
        self.iteration += 1
