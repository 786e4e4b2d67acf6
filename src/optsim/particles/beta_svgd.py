"""beta-SVGD: SVGD with importance weights (Sun & Richtárik 2022, "Improved Stein Variational
Gradient Descent with Importance Weights", arXiv 2210.00462; PAPERS.md P1).

The flow is SVGD's field multiplied by a power of the density ratio,
``v_t(x) = (pi(x) / rho_t(x))^beta * E_{y ~ rho_t}[k(y, x) grad log pi(y) + grad_y k(y, x)]``;
for beta in (-1, 0) the paper's continuous-time bound on the averaged Stein Fisher information,
``1 / (-beta (beta + 1) T)``, does not depend on KL(rho_0 | pi) (SVGD's, beta = 0, is KL(rho_0 | pi) / T).

The particle algorithm estimates the ratio at the particles by kernel importance weights: ``w``
on the simplex minimizing the squared KSD of the weighted particles ``w^T K_pi w / 2``
(``K_pi`` the Stein kernel matrix, :func:`optsim.targets.kernels.stein_kernel_matrix`), found by
``weight_steps`` steps of entropic mirror descent ``w <- w exp(-r K_pi w) / Z`` from uniform
weights; then, with ``N w_i`` as the estimate of ``pi / rho`` at ``x_i``,

    x_i <- x_i + eps * max(N w_i, tau)^beta * phi(x_i),      phi = SVGD's field (optsim.particles.svgd),

the truncation ``tau`` keeping the factor finite for beta < 0. beta = 0 is SVGD exactly.

What is not confirmed against the paper (its body was not readable here; the algorithm is taken
from a third-party summary, see ../shared/research/linalg-stochastic-sampling.md, P1): the values of
tau, of the mirror-descent stepsize r and of the number of weight steps, and whether the weights are
refreshed every iteration. Our choices: beta = -0.5 (the value shown in the summary's example),
tau = 0.1, r = weight_lr / max|K_pi| with weight_lr = 1 (scale-free), 20 weight steps, weights
recomputed from uniform at every iteration (``refresh`` = 1). The Stein kernel uses the same kernel
and bandwidth as the SVGD step.
"""
from __future__ import annotations

import torch

from ..targets import Target
from ..targets.kernels import Linear, sq_distances, stein_kernel_matrix
from .svgd import SVGD, svgd_direction

__all__ = ["BetaSVGD", "kernel_importance_weights"]


def kernel_importance_weights(Kp: torch.Tensor, steps: int = 20, lr: float = 1.0,
                              w0: torch.Tensor | None = None) -> torch.Tensor:
    """Weights w on the simplex approximately minimizing ``w^T Kp w / 2`` by ``steps`` steps of
    entropic mirror descent with stepsize ``lr / max|Kp|`` (in log space), from ``w0`` or uniform."""
    N = Kp.shape[0]
    r = lr / float(Kp.abs().max().clamp_min(1e-300))
    logw = torch.full((N,), -float(torch.log(torch.tensor(float(N)))), dtype=Kp.dtype) if w0 is None else torch.log(w0)
    w = torch.exp(logw)
    for _ in range(steps):  # iterations of the optimizer, not a loop over particles
        logw = torch.log_softmax(logw - r * (Kp @ w), 0)
        w = torch.exp(logw)
    return w


class BetaSVGD(SVGD):
    """beta-SVGD (P1); see the module docstring for the update and the unconfirmed constants."""

    name = "beta_svgd"
    paper = "Sun & Richtárik (2022), Improved SVGD with Importance Weights, arXiv 2210.00462 (beta-SVGD)"

    def __init__(self, target: Target, stepsize: float, beta: float = -0.5, tau: float = 0.1,
                 weight_steps: int = 200, weight_lr: float = 1.0, refresh: int = 1, kernel="rbf"):
        super().__init__(target, stepsize, kernel)
        if isinstance(self.kernel, Linear):
            raise ValueError("beta_svgd needs a radial kernel for its Stein kernel: use 'rbf' or 'imq'")
        if not -1.0 < beta <= 0.0:
            raise ValueError(f"beta_svgd: beta must be in (-1, 0] (the paper's range with a KL-free bound), got {beta}")
        if not tau > 0:
            raise ValueError(f"beta_svgd: the truncation tau must be > 0, got {tau}")
        if weight_steps < 1 or refresh < 1 or not weight_lr > 0:
            raise ValueError("beta_svgd: weight_steps >= 1, refresh >= 1 and weight_lr > 0 are needed")
        self.beta, self.tau, self.weight_steps, self.weight_lr, self.refresh = beta, tau, weight_steps, weight_lr, refresh
        self.w: torch.Tensor | None = None

    def weights(self, X: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        D2 = sq_distances(X)
        Kp = stein_kernel_matrix(X, S, self.kernel, D2=D2, scale=self.kernel.scale(D2))
        return kernel_importance_weights(Kp, self.weight_steps, self.weight_lr)

    def step(self) -> None:
        X = self.X
        S = self.target.score(X)
        if self.w is None or self.iteration % self.refresh == 0:
            self.w = self.weights(X, S)
        phi = svgd_direction(X, S, self.kernel)[0]
        factor = torch.clamp(len(X) * self.w, min=self.tau) ** self.beta
        self.X = X + self.stepsize * factor[:, None] * phi
        self.iteration += 1
