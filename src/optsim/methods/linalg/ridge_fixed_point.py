"""Primal-dual fixed-point methods for ridge regression (S3) and SciPy's conjugate gradients as baseline.

Ribeiro & Richtárik (2018), "The complexity of primal-dual fixed point methods for ridge regression",
Linear Algebra Appl. 556:342-372 (arXiv 1801.06354). The optimality conditions of ridge regression
(:class:`~optsim.problems.linear_system.RidgeSystem`: w = A alpha / (lam n), alpha = y - A^T w) are
written as fixed-point systems z = M z + c, solved by the relaxed iteration
z_{k+1} = (1 - theta) z_k + theta (M z_k + c). With a = sigma^2(A) / (lam n) over the singular values
of A (``a_max``, ``a_min``):

* ``primal``: w = A (y - A^T w) / (lam n), real spectrum -a in [-a_max, -a_min];
  theta* = 2 / (2 + a_max + a_min), rate (a_max - a_min) / (2 + a_max + a_min);
* ``dual``: alpha = y - A^T A alpha / (lam n) (w = A alpha / (lam n)), the same with the a of A^T A;
* ``primal_dual``: z = (w, alpha), M = [[0, A / (lam n)], [-A^T, 0]], purely imaginary spectrum
  +-i sqrt(a); theta* = 1 / (1 + a_max), rate sqrt(a_max / (1 + a_max));
* ``quartz``: deterministic Quartz (Qu, Richtárik & Zhang 2015, "Quartz: randomized dual coordinate
  ascent with arbitrary sampling", Algorithm 1 with every dual coordinate updated, p_i = 1, square loss
  so gamma = 1): w_{k+1} = (1 - theta) w_k + theta A alpha_k / (lam n), then
  alpha_{k+1} = (1 - theta) alpha_k + theta (y - A^T w_{k+1}) -- the primal-dual system taken in
  Gauss-Seidel order. Quartz's theorem uses theta = lam n / (v + lam n) with the full sampling's ESO
  constant v = sigma_max^2, i.e. theta = 1 / (1 + a_max) (rate a_max / (1 + a_max)). Each 2 x 2 block of
  its iteration matrix (one per singular value) has determinant (1 - theta)^2 and trace
  2 (1 - theta) - theta^2 a, so its eigenvalues have modulus exactly 1 - theta whenever
  theta^2 a_max <= 4 (1 - theta); the largest such theta is theta* = 2 / (1 + sqrt(1 + a_max)), with
  rate 1 - theta* = (sqrt(1 + a_max) - 1) / (sqrt(1 + a_max) + 1): an accelerated rate, the
  conjugate-gradient bound for condition number 1 + a_max.

Provenance: only the paper's abstract and first page could be read; it says the reformulations have
real, imaginary or unit-circle spectra, that their optimal relaxation parameters are computed, and that
deterministic Quartz has the best (accelerated) rate and is competitive with CG. The matrices and
the formulas above are our derivation (checked in tests/test_linear_systems.py against the spectral
radii of the exact iteration matrices); the paper's own parametrization and theorem numbers are not
confirmed. ``theta="optimal"`` (default) is the derived optimal relaxation; ``theta="theory"`` is
Quartz's theorem value for ``quartz``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ...problems.linear_system import RidgeSystem

__all__ = ["RIDGE_METHODS", "conjugate_gradients", "fixed_point", "iteration_matrix", "predicted_rate", "relaxation"]

RIDGE_METHODS = ("primal", "dual", "primal_dual", "quartz")


def _check(method):
    if method not in RIDGE_METHODS:
        raise ValueError(f"unknown fixed-point method '{method}': use one of {', '.join(RIDGE_METHODS)}")


def relaxation(system: RidgeSystem, method: str, theta="optimal") -> float:
    """The relaxation parameter: ``"optimal"`` (derived, see the module docstring), ``"theory"``
    (Quartz's theorem, ``quartz`` only) or a number in (0, 1]."""
    _check(method)
    a, lo_p, lo_d = system.a_max, system.a_min_primal, system.a_min
    if isinstance(theta, str):
        if theta == "theory":
            if method != "quartz":
                raise ValueError("theta='theory' is Quartz's theorem value: use it with method 'quartz'")
            return 1.0 / (1.0 + a)
        if theta != "optimal":
            raise ValueError(f"theta must be 'optimal', 'theory' or a number in (0, 1], got '{theta}'")
        return {"primal": 2 / (2 + a + lo_p), "dual": 2 / (2 + a + lo_d), "primal_dual": 1 / (1 + a),
                "quartz": 2 / (1 + math.sqrt(1 + a))}[method]
    theta = float(theta)
    if not 0 < theta <= 1:
        raise ValueError(f"theta must be in (0, 1], got {theta}")
    return theta


def predicted_rate(system: RidgeSystem, method: str, theta="optimal") -> float:
    """Spectral radius of the method's iteration matrix at relaxation ``theta`` (closed forms of the
    module docstring; for ``quartz`` valid when theta <= theta*)."""
    t = relaxation(system, method, theta)
    a = system.a_max
    if method in ("primal", "dual"):
        lo = system.a_min_primal if method == "primal" else system.a_min
        return max(abs(1 - t * (1 + a)), abs(1 - t * (1 + lo)))
    if method == "primal_dual":
        return math.sqrt((1 - t) ** 2 + t * t * a)
    if t * t * a > 4 * (1 - t) * (1 + 1e-12):
        raise ValueError("the closed form of quartz's rate holds for theta <= 2 / (1 + sqrt(1 + a_max))")
    return 1 - t


def _maps(system: RidgeSystem):
    A, y, lam, n = system.A, system.y, system.lam, system.n
    Abar = A / (lam * n)
    return A, y, Abar


def iteration_matrix(system: RidgeSystem, method: str, theta="optimal") -> torch.Tensor:
    """The exact (dense, float64) linear map of the error of one iteration (small systems; tests)."""
    t = relaxation(system, method, theta)
    A, _, Abar = _maps(system)
    d, N = A.shape
    I_d, I_N = torch.eye(d, dtype=torch.float64), torch.eye(N, dtype=torch.float64)
    if method == "primal":
        return (1 - t) * I_d - t * Abar @ A.T
    if method == "dual":
        return (1 - t) * I_N - t * A.T @ Abar
    if method == "primal_dual":
        top = torch.cat([(1 - t) * I_d, t * Abar], 1)
        bottom = torch.cat([-t * A.T, (1 - t) * I_N], 1)
        return torch.cat([top, bottom], 0)
    top = torch.cat([(1 - t) * I_d, t * Abar], 1)
    bottom = torch.cat([-t * (1 - t) * A.T, (1 - t) * I_N - t * t * A.T @ Abar], 1)
    return torch.cat([top, bottom], 0)


def fixed_point(system: RidgeSystem, method: str, iters: int, theta="optimal", w0=None, alpha0=None):
    """Run ``iters`` relaxed fixed-point iterations; returns (errors (iters + 1,) of ||w_k - w*||, w, alpha).

    The primal iterate of ``dual`` is w_k = A alpha_k / (lam n). Starts at zero by default.
    """
    t = relaxation(system, method, theta)
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    A, y, Abar = _maps(system)
    d, N = A.shape
    w = torch.zeros(d, dtype=torch.float64) if w0 is None else torch.as_tensor(w0, dtype=torch.float64).clone()
    al = torch.zeros(N, dtype=torch.float64) if alpha0 is None else torch.as_tensor(alpha0, dtype=torch.float64).clone()
    if method == "dual":
        w = Abar @ al
    errs = [float((w - system.w_star).norm())]
    for _ in range(iters):
        if method == "primal":
            w = (1 - t) * w + t * (Abar @ (y - A.T @ w))
        elif method == "dual":
            al = (1 - t) * al + t * (y - A.T @ w)
            w = Abar @ al
        elif method == "primal_dual":
            w, al = (1 - t) * w + t * (Abar @ al), (1 - t) * al + t * (y - A.T @ w)
        else:
            w = (1 - t) * w + t * (Abar @ al)
            al = (1 - t) * al + t * (y - A.T @ w)
        errs.append(float((w - system.w_star).norm()))
    return np.array(errs), w, al


def conjugate_gradients(system: RidgeSystem, iters: int, rtol: float = 1e-14):
    """SciPy's CG on the primal normal equations (A A^T / n + lam I) w = A y / n from w = 0 (one product
    with A and one with A^T per iteration, like one fixed-point iteration); errors ||w_k - w*|| for
    k = 0, 1, ... until ``iters`` iterations or the relative residual ``rtol`` (past float64 precision CG
    breaks down)."""
    from scipy.sparse.linalg import LinearOperator, cg

    A = system.A.numpy()
    n, lam = system.n, system.lam
    H = LinearOperator((system.d, system.d), matvec=lambda v: A @ (A.T @ v) / n + lam * v, dtype=np.float64)
    rhs = A @ system.y.numpy() / n
    ws = system.w_star.numpy()
    errs = [float(np.linalg.norm(ws))]
    cg(H, rhs, x0=np.zeros(system.d), rtol=rtol, atol=0.0, maxiter=iters,
       callback=lambda xk: errs.append(float(np.linalg.norm(xk - ws))))
    return np.array(errs)
