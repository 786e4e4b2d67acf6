"""Distances between distributions, for targets with known ground truth and for particle sets.

* :func:`gaussian_w2`, :func:`gaussian_kl`: exact between Gaussians,
  ``W2^2 = ||m1 - m2||^2 + tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2)`` and
  ``KL = (tr(C2^-1 C1) + (m2 - m1)^T C2^-1 (m2 - m1) - d + log det C2 - log det C1) / 2``.
* :func:`w2_particles`: exact W2 between two equal-size, equally weighted point sets (optimal
  transport between them is an assignment: SciPy's ``linear_sum_assignment``).
* :func:`ksd`: kernelized Stein discrepancy of points against a target's score, IMQ kernel
  ``(1 + r^2)^(-1/2)`` by default (Gorham & Mackey 2017); the V-statistic (>= 0) or U-statistic
  (unbiased for KSD^2, which is 0 exactly when the points are drawn from the target).
* :func:`mmd2`: squared maximum mean discrepancy with the kernel ``exp(-r^2 / (2 l^2))``,
  unbiased (U) or biased (V) estimate; :func:`gaussian_mmd2` its closed form between isotropic Gaussians.
* :func:`moment_errors`: errors of the sample mean and covariance.
"""
from __future__ import annotations

import math

import torch

from .kernels import IMQ, make_kernel, sq_distances, stein_kernel_matrix

__all__ = [
    "gaussian_kl",
    "gaussian_mmd2",
    "gaussian_w2",
    "ksd",
    "mmd2",
    "moment_errors",
    "sample_cov",
    "w2_particles",
]


def _sqrtm_psd(C: torch.Tensor) -> torch.Tensor:
    w, V = torch.linalg.eigh(0.5 * (C + C.T))
    return (V * w.clamp_min(0).sqrt()) @ V.T


def gaussian_w2(m1, C1, m2, C2) -> float:
    """Wasserstein-2 distance between N(m1, C1) and N(m2, C2)."""
    r2 = _sqrtm_psd(C2)
    cross = _sqrtm_psd(r2 @ C1 @ r2)
    w2 = float(((m1 - m2) ** 2).sum() + torch.trace(C1 + C2 - 2 * cross))
    return math.sqrt(max(w2, 0.0))


def gaussian_kl(m1, C1, m2, C2) -> float:
    """KL(N(m1, C1) || N(m2, C2))."""
    d = m1.numel()
    L2 = torch.linalg.cholesky(C2)
    L1 = torch.linalg.cholesky(C1)
    M = torch.cholesky_solve(C1, L2)
    diff = (m2 - m1)[:, None]
    quad = float((diff * torch.cholesky_solve(diff, L2)).sum())
    logdet = 2 * float(torch.log(torch.diagonal(L2)).sum() - torch.log(torch.diagonal(L1)).sum())
    return 0.5 * (float(torch.trace(M)) + quad - d + logdet)


def w2_particles(X: torch.Tensor, Y: torch.Tensor) -> float:
    """Exact W2 between the empirical measures of X and Y (same number of points, uniform weights)."""
    if X.shape != Y.shape:
        raise ValueError(f"w2_particles needs two point sets of the same shape, got {tuple(X.shape)} and {tuple(Y.shape)}; "
                         "subsample the larger one")
    from scipy.optimize import linear_sum_assignment

    C = sq_distances(X.double(), Y.double()).cpu().numpy()
    r, c = linear_sum_assignment(C)
    return math.sqrt(max(float(C[r, c].mean()), 0.0))


def ksd(X: torch.Tensor, score: torch.Tensor, kernel=None, unbiased: bool = False) -> float:
    """Kernelized Stein discrepancy of the points ``X`` (N, d) with target scores ``score`` =
    grad log pi(X): ``sqrt(mean_ij k_pi(x_i, x_j))`` (V-statistic), or with ``unbiased`` the
    U-statistic of KSD^2 (mean over i != j; may be negative)."""
    kernel = IMQ() if kernel is None else make_kernel(kernel)
    Kp = stein_kernel_matrix(X, score, kernel)
    N = X.shape[0]
    if unbiased:
        return float((Kp.sum() - torch.diagonal(Kp).sum()) / (N * (N - 1)))
    return math.sqrt(max(float(Kp.mean()), 0.0))


def mmd2(X: torch.Tensor, Y: torch.Tensor, lengthscale: float = 1.0, unbiased: bool = True) -> float:
    """Squared MMD between the samples X and Y with ``k = exp(-r^2 / (2 lengthscale^2))``."""
    if not lengthscale > 0:
        raise ValueError(f"mmd lengthscale must be > 0, got {lengthscale}")
    g = 1.0 / (2 * lengthscale ** 2)
    Kxx, Kyy, Kxy = (torch.exp(-g * sq_distances(X)), torch.exp(-g * sq_distances(Y)), torch.exp(-g * sq_distances(X, Y)))
    n, m = len(X), len(Y)
    if unbiased:
        return float((Kxx.sum() - n) / (n * (n - 1)) + (Kyy.sum() - m) / (m * (m - 1)) - 2 * Kxy.mean())
    return float(Kxx.mean() + Kyy.mean() - 2 * Kxy.mean())


def gaussian_mmd2(m1, s1: float, m2, s2: float, lengthscale: float = 1.0) -> float:
    """Closed-form squared MMD between N(m1, s1^2 I) and N(m2, s2^2 I) for the kernel of :func:`mmd2`:
    ``E k(x, y) = (l^2 / (l^2 + s_x^2 + s_y^2))^(d/2) exp(-||m_x - m_y||^2 / (2 (l^2 + s_x^2 + s_y^2)))``."""
    m1, m2 = torch.as_tensor(m1, dtype=torch.float64), torch.as_tensor(m2, dtype=torch.float64)
    d, l2 = m1.numel(), lengthscale ** 2

    def e(a, sa, b, sb):
        v = l2 + sa ** 2 + sb ** 2
        return (l2 / v) ** (d / 2) * math.exp(-float(((a - b) ** 2).sum()) / (2 * v))

    return e(m1, s1, m1, s1) + e(m2, s2, m2, s2) - 2 * e(m1, s1, m2, s2)


def sample_cov(X: torch.Tensor) -> torch.Tensor:
    """Covariance of the rows of X with 1/N (the empirical measure's covariance)."""
    Z = X - X.mean(0)
    return Z.T @ Z / len(X)


def moment_errors(X: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> tuple[float, float]:
    """(||mean(X) - mean||, ||cov(X) - cov||_F) with the empirical (1/N) covariance."""
    return float((X.mean(0) - mean).norm()), float((sample_cov(X) - cov).norm())
