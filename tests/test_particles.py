"""Particle samplers (optsim.particles): SVGD's batched field equals the double sum of its
definition, the fixed points theory predicts, beta-SVGD's importance weights and its beta = 0
case, mirrored SVGD's push-forward scores and its constraint."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optsim import targets as T
from optsim.particles import (
    SVGD,
    BetaSVGD,
    EntropicBox,
    EntropicSimplex,
    EuclideanMirror,
    MirroredSVGD,
    kernel_importance_weights,
    run_particles,
    svgd_direction,
)

DT = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def reference_direction(X, S, f):
    """phi(x_i) = (1/N) sum_j [k(x_j, x_i) s_j + grad_{x_j} k(x_j, x_i)], a double loop with autograd."""
    N = X.shape[0]
    phi = torch.zeros_like(X)
    for i in range(N):
        for j in range(N):
            xj = X[j].clone().requires_grad_(True)
            k = f(xj, X[i])
            (gk,) = torch.autograd.grad(k, xj)
            phi[i] += k.detach() * S[j] + gk
    return phi / N


@pytest.mark.parametrize("kernel", ["rbf", "rbf_fixed", "imq", "linear"])
def test_svgd_field_equals_the_double_sum(kernel):
    g = gen(1)
    X = torch.randn(7, 3, generator=g, dtype=DT)
    S = torch.randn(7, 3, generator=g, dtype=DT)
    if kernel == "rbf":
        h = float(np.median(T.sq_distances(X).numpy())) / math.log(8)  # Liu & Wang's code: med / log(N + 1)
        k, f = T.RBF(), lambda x, y: torch.exp(-((x - y) ** 2).sum() / h)
    elif kernel == "rbf_fixed":
        k, f = T.RBF(0.7), lambda x, y: torch.exp(-((x - y) ** 2).sum() / 0.7)
    elif kernel == "imq":
        k, f = T.IMQ(), lambda x, y: (1.0 + ((x - y) ** 2).sum()) ** -0.5
    else:
        k, f = T.Linear(), lambda x, y: x @ y + 1.0
    phi, _, _ = svgd_direction(X, S, k)
    assert torch.allclose(phi, reference_direction(X, S, f), rtol=1e-12, atol=1e-13)


def test_linear_kernel_fixed_point_matches_gaussian_moments_exactly():
    """Liu & Wang (2018): with k = x^T y + 1, SVGD's fixed points have the target's mean and
    covariance (the 1/N covariance of the particles) exactly, for a Gaussian target."""
    P = T.Gaussian([1.0, -2.0, 0.5], [[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.7]])
    s = SVGD(P, 0.1, kernel="linear")
    trace = run_particles(s, torch.randn(40, 3, generator=gen(2), dtype=DT), 1500, log_every=1500)
    assert trace.status == "finished"
    mean_err, cov_err = T.moment_errors(s.X, P.mean, P.cov)
    assert mean_err < 1e-10 and cov_err < 1e-10


def test_two_particle_rbf_fixed_point():
    """Target N(m, 1) in 1-D, fixed bandwidth h, two particles: phi's fixed point is m -+ a with
    exp(-4 a^2 / h) (1 + 4 / h) = 1, i.e. a^2 = (h / 4) log(1 + 4 / h); the mean converges to m."""
    h, m = 1.0, 0.7
    s = SVGD(T.Gaussian([m], 1.0), 0.3, kernel=T.RBF(h))
    run_particles(s, torch.tensor([[0.9], [0.1]], dtype=DT), 600)
    a = math.sqrt(h / 4 * math.log(1 + 4 / h))
    assert torch.allclose(torch.sort(s.X[:, 0]).values, torch.tensor([m - a, m + a], dtype=DT), atol=1e-12)


def test_svgd_moves_toward_a_gaussian_target():
    P = T.Gaussian([0.0, 0.0], [[1.0, 0.6], [0.6, 2.0]])
    ref = P.sample(100, gen(3))
    s = SVGD(P, 0.4)
    tr = run_particles(s, torch.randn(100, 2, generator=gen(4), dtype=DT) + 5.0, 400,
                       {"w2": lambda X: T.w2_particles(X, ref)}, log_every=100)
    w2_exact = T.w2_particles(P.sample(100, gen(5)), ref)  # two exact samples of the same size
    assert tr["w2"][0] > 5 and tr["w2"][-1] < 1.5 * w2_exact


def test_importance_weights_solve_the_kernel_qp():
    """Entropic mirror descent with stepsize 1 / L, L = max|K_pi| (the smoothness constant of
    f(w) = w^T K_pi w / 2 in the l1 norm), from uniform weights: f(w_k) - f* <= L KL(w* | w_0) / k
    <= L log(N) / k (the Bregman gradient method's rate), against SLSQP's minimum."""
    from scipy.optimize import minimize

    P = T.Gaussian([0.0, 0.0], 1.0)
    for shift in (0.0, 3.0):
        X = 0.5 * torch.randn(40, 2, generator=gen(6), dtype=DT) + shift
        Kp = T.stein_kernel_matrix(X, P.score(X), T.RBF())
        w = kernel_importance_weights(Kp, 200, 1.0)
        assert abs(float(w.sum()) - 1) < 1e-12 and bool((w >= 0).all())
        K = Kp.numpy()
        res = minimize(lambda v, K=K: 0.5 * v @ K @ v, np.full(40, 1 / 40), jac=lambda v, K=K: K @ v, method="SLSQP",
                       bounds=[(0, 1)] * 40, constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1}],
                       options={"maxiter": 500, "ftol": 1e-15})
        best = 0.5 * float(w @ Kp @ w)
        L = float(Kp.abs().max())
        assert res.fun - 1e-12 <= best <= res.fun + L * math.log(40) / 200
        w20 = kernel_importance_weights(Kp, 20, 1.0)
        assert 0.5 * float(w20 @ Kp @ w20) <= res.fun + L * math.log(40) / 20
        assert best < 0.5 * float(w20 @ Kp @ w20)


def test_beta_zero_is_svgd_and_beta_scales_the_svgd_field():
    P = T.GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 1.0]], 0.5)
    X0 = torch.randn(30, 2, generator=gen(7), dtype=DT)
    a, b = SVGD(P, 0.1), BetaSVGD(P, 0.1, beta=0.0)
    run_particles(a, X0, 20)
    run_particles(b, X0, 20)
    assert torch.equal(a.X, b.X)
    c = BetaSVGD(P, 0.1, beta=-0.5, tau=0.1)
    c.init(X0)
    c.step()
    S = P.score(X0)
    w = c.weights(X0, S)
    factor = torch.clamp(30 * w, min=0.1) ** -0.5
    assert torch.allclose(c.X, X0 + 0.1 * factor[:, None] * svgd_direction(X0, S, c.kernel)[0], rtol=1e-12)
    assert float(factor.min()) < 1.0 < float(factor.max())  # particles are moved at different speeds


def test_msvgd_with_the_euclidean_mirror_is_svgd():
    P = T.Gaussian([1.0, 0.0], [[1.0, 0.3], [0.3, 0.5]])
    X0 = torch.randn(25, 2, generator=gen(8), dtype=DT)
    a, b = SVGD(P, 0.1), MirroredSVGD(P, EuclideanMirror(), 0.1)
    run_particles(a, X0, 30)
    run_particles(b, X0, 30)
    assert torch.equal(a.X, b.X)


@pytest.mark.parametrize("which", ["simplex", "box"])
def test_dual_score_is_the_push_forward_score(which):
    """grad log nu(eta), nu(eta) = pi(grad psi*(eta)) |det grad^2 psi*(eta)|, by autograd."""
    if which == "simplex":
        P, mirror = T.Dirichlet([2.0, 0.7, 3.0, 1.5]), EntropicSimplex()
    else:
        P, mirror = T.TruncatedGaussianBox([0.2, 0.5, 1.5], 0.7, -1.0, 2.0), EntropicBox(-1.0, 2.0)
    E = torch.randn(5, 3, generator=gen(9), dtype=DT)

    def log_nu(e):
        t = mirror.to_primal(e[None])
        J = torch.autograd.functional.jacobian(lambda v: mirror.to_primal(v[None])[0], e, create_graph=True)
        return -P.potential(t)[0] + torch.logdet(J)

    expect = torch.stack([torch.func.grad(log_nu)(e) for e in E])
    Tm = mirror.to_primal(E)
    assert torch.allclose(mirror.to_dual(Tm), E, atol=1e-12)
    got = mirror.dual_score(E, Tm, P.score(Tm))
    assert torch.allclose(got, expect, rtol=1e-9, atol=1e-10)
    if which == "simplex":  # closed form for a Dirichlet target: alpha_{1..d} - theta sum(alpha)
        assert torch.allclose(got, P.alpha[:-1] - Tm * P.alpha.sum(), rtol=1e-10, atol=1e-12)


def test_msvgd_stays_in_the_simplex_and_reaches_the_dirichlet_moments():
    P = T.Dirichlet([2.0, 3.0, 4.0, 1.5])
    X0 = torch.tensor([0.01, 0.01, 0.01], dtype=DT) + 1e-3 * torch.rand(100, 3, generator=gen(10), dtype=DT)
    s = MirroredSVGD(P, EntropicSimplex(), 0.05)
    ref = P.sample(100, gen(11))
    tr = run_particles(s, X0, 1000, {"inside": lambda X: float(P.contains(X).all()),
                                     "w2": lambda X: T.w2_particles(X, ref)}, log_every=50)
    assert tr["inside"].min() == 1.0
    w2_exact = T.w2_particles(P.sample(100, gen(12)), ref)
    assert tr["w2"][0] > 5 * w2_exact and tr["w2"][-1] < 1.5 * w2_exact
    mean_err, _ = T.moment_errors(s.X, P.mean, P.cov)
    assert mean_err < 3 * float(torch.sqrt(torch.diagonal(P.cov).sum() / 100))


def test_bad_inputs_are_refused_at_construction():
    P = T.Gaussian([0.0], 1.0)
    with pytest.raises(ValueError, match="stepsize"):
        SVGD(P, 0.0)
    with pytest.raises(ValueError, match="beta"):
        BetaSVGD(P, 0.1, beta=-1.0)
    with pytest.raises(ValueError, match="radial"):
        BetaSVGD(P, 0.1, kernel="linear")
    with pytest.raises(ValueError, match="unknown kernel"):
        SVGD(P, 0.1, kernel="laplace")
    with pytest.raises(ValueError, match="domain"):
        MirroredSVGD(T.Dirichlet([1.0, 1.0, 1.0]), EntropicSimplex(), 0.1).init(torch.tensor([[0.7, 0.5], [0.1, 0.1]]))


@pytest.mark.parametrize("rid", ["P1", "P2"])
def test_recipe_fast_passes(rid, tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe(rid, tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert outcome.figures and all(f.exists() for f in outcome.figures)
