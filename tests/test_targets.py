"""Targets pi ∝ exp(-F) and distribution metrics (optsim.targets): gradients against autograd,
ground-truth moments against exact samples, the metrics against their closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optsim import targets as T

DT = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def autograd_grad(target, X):
    X = X.clone().requires_grad_(True)
    target.potential(X).sum().backward()
    return X.grad


def spd(d, seed):
    A = torch.randn(d, d, generator=gen(seed), dtype=DT)
    return A @ A.T / d + 0.5 * torch.eye(d, dtype=DT)


TARGETS = {
    "gaussian": lambda: T.Gaussian(torch.arange(3.0), spd(3, 1)),
    "mixture": lambda: T.GaussianMixture([0.3, 0.7], [[0.0, 0.0, 0.0], [2.0, -1.0, 0.5]], [spd(3, 2), spd(3, 3)]),
    "dirichlet": lambda: T.Dirichlet([2.0, 0.7, 3.0, 1.5]),
    "box": lambda: T.TruncatedGaussianBox([0.2, 0.5, 1.5], 0.7, -1.0, 1.0),
    "logistic": lambda: T.BayesianLogistic("sklearn:breast_cancer", clients=4, prior_var=2.0),
}


def inside_points(target, k=7):
    if isinstance(target, T.Dirichlet):
        return T.Dirichlet(torch.ones(target.d + 1)).sample(k, gen(5))
    if isinstance(target, T.TruncatedGaussianBox):
        return torch.rand(k, target.d, generator=gen(5), dtype=DT) * 1.8 - 0.9
    return torch.randn(k, target.d, generator=gen(5), dtype=DT) * 0.3


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_gradient_is_the_gradient_of_the_potential(name):
    t = TARGETS[name]()
    X = inside_points(t)
    assert torch.allclose(t.grad_potential(X), autograd_grad(t, X), rtol=1e-10, atol=1e-10)
    assert torch.equal(t.score(X), -t.grad_potential(X))


def test_logistic_is_the_sum_of_client_potentials_and_has_its_map():
    t = TARGETS["logistic"]()
    X = inside_points(t, 5)
    assert t.client_grad_potentials(X).shape == (4, 5, t.d)
    # F = sum_i F_i is the loss over the samples the split keeps plus the prior, computed directly
    from optsim.data import load_dataset, partition

    ds = load_dataset("sklearn:breast_cancer")
    A = (ds.X - ds.X.mean(0)) / ds.X.std(0)
    y = np.where(ds.y == ds.y.max(), 1.0, -1.0)
    kept = np.concatenate(partition(y, 4, "iid", seed=0))
    Z = (A[kept] @ X.numpy().T) * y[kept, None]
    direct = np.logaddexp(0.0, -Z).sum(0) + (X.numpy() ** 2).sum(1) / (2 * 2.0)
    assert np.allclose(t.potential(X).numpy(), direct, rtol=1e-12)
    assert torch.allclose(t.client_potentials(X).sum(0), t.potential(X))
    x = t.map_point()
    assert float(t.grad_potential(x[None]).norm()) <= 1e-9
    H = torch.autograd.functional.hessian(lambda v: t.potential(v[None])[0], x)
    assert torch.allclose(t.hessian(x), H, rtol=1e-9, atol=1e-9)


def test_logistic_refuses_a_multiclass_dataset():
    with pytest.raises(ValueError, match="binary"):
        T.BayesianLogistic("sklearn:iris", clients=2)


@pytest.mark.parametrize("name", ["gaussian", "mixture", "dirichlet", "box"])
def test_exact_moments_match_exact_samples(name):
    """The closed-form mean and covariance against 200,000 exact samples (5 standard errors)."""
    t = TARGETS[name]()
    n = 200_000
    X = t.sample(n, gen(7))
    assert bool(t.contains(X).all())
    se_mean = torch.sqrt(torch.diagonal(t.cov) / n)
    assert (torch.abs(X.mean(0) - t.mean) <= 5 * se_mean).all()
    Z = X - t.mean
    prod = Z[:, :, None] * Z[:, None, :]
    se_cov = prod.std(0) / math.sqrt(n)
    assert (torch.abs(prod.mean(0) - t.cov) <= 5 * se_cov + 1e-12).all()


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="positive definite"):
        T.Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="weights must be > 0"):
        T.GaussianMixture([1.0, 0.0], [[0.0], [1.0]])
    with pytest.raises(ValueError, match="alpha"):
        T.Dirichlet([1.0, -1.0])
    with pytest.raises(ValueError, match="same shape"):
        T.w2_particles(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="\\(k, 3\\)"):
        TARGETS["gaussian"]().potential(torch.zeros(2, 2, dtype=DT))


# -- metrics ---------------------------------------------------------------------------------------
def test_gaussian_w2_closed_forms():
    m1, m2 = torch.tensor([1.0, 2.0], dtype=DT), torch.tensor([-1.0, 0.5], dtype=DT)
    C = spd(2, 4)
    assert T.gaussian_w2(m1, C, m2, C) == pytest.approx(float((m1 - m2).norm()), rel=1e-9)
    a, b = torch.tensor([1.0, 4.0], dtype=DT), torch.tensor([9.0, 0.25], dtype=DT)  # commuting covariances
    expect = float(((m1 - m2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()) ** 0.5
    assert T.gaussian_w2(m1, torch.diag(a), m2, torch.diag(b)) == pytest.approx(expect, rel=1e-12)
    assert T.gaussian_w2(m1, C, m1, C) == pytest.approx(0.0, abs=1e-7)


def test_gaussian_kl_closed_form_and_monte_carlo():
    one = lambda v: torch.tensor([[v]], dtype=DT)
    m1, m2 = torch.tensor([0.3], dtype=DT), torch.tensor([-1.0], dtype=DT)
    s1, s2 = 0.8, 1.7
    expect = math.log(s2 / s1) + (s1 ** 2 + 1.3 ** 2) / (2 * s2 ** 2) - 0.5
    assert T.gaussian_kl(m1, one(s1 ** 2), m2, one(s2 ** 2)) == pytest.approx(expect, rel=1e-12)
    P, Q = T.Gaussian(torch.arange(3.0), spd(3, 1)), T.Gaussian(-torch.ones(3), spd(3, 2))
    X = P.sample(400_000, gen(2))
    lr = P.log_density(X) - Q.log_density(X)
    kl = T.gaussian_kl(P.mean, P.cov, Q.mean, Q.cov)
    assert abs(float(lr.mean()) - kl) <= 5 * float(lr.std()) / math.sqrt(len(X))
    assert T.gaussian_kl(P.mean, P.cov, P.mean, P.cov) == pytest.approx(0.0, abs=1e-12)


def test_w2_particles_is_exact_optimal_transport():
    g = gen(3)
    x, y = torch.randn(50, 1, generator=g, dtype=DT), torch.randn(50, 1, generator=g, dtype=DT) * 2 + 1
    sorted_w2 = float(((torch.sort(x[:, 0]).values - torch.sort(y[:, 0]).values) ** 2).mean()) ** 0.5
    assert T.w2_particles(x, y) == pytest.approx(sorted_w2, rel=1e-12)  # 1-D: monotone matching
    X = torch.randn(40, 3, generator=g, dtype=DT)
    c = torch.tensor([0.5, -1.0, 2.0], dtype=DT)
    assert T.w2_particles(X, X[torch.randperm(40, generator=g)] + c) == pytest.approx(float(c.norm()), rel=1e-9)


def test_median_matches_numpy():
    g = gen(1)
    for N, d in [(3, 2), (10, 1), (64, 3), (65, 3), (300, 5), (401, 2)]:
        X = torch.randn(N, d, generator=g, dtype=DT)
        for pts in (X, torch.cat([X[: N // 2], X[:1].expand(N - N // 2, d)])):  # with ties
            D2 = T.sq_distances(pts)
            assert T.median_sq_distance(D2) == float(np.median(D2.numpy()))


def _stein_reference(X, S, f):
    """k_pi(x_i, x_j) by autograd, a double loop over pairs: k s_i.s_j + s_i.grad_y k + s_j.grad_x k + tr."""
    N, d = X.shape
    out = torch.zeros(N, N, dtype=DT)
    for i in range(N):
        for j in range(N):
            x, y = X[i].clone().requires_grad_(True), X[j].clone().requires_grad_(True)
            k = f(((x - y) ** 2).sum())
            gx, gy = torch.autograd.grad(k, (x, y), create_graph=True)
            tr = sum(torch.autograd.grad(gx[a], y, retain_graph=True)[0][a] for a in range(d))
            out[i, j] = k.detach() * (S[i] @ S[j]) + S[i] @ gy.detach() + S[j] @ gx.detach() + tr.detach()
    return out


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_stein_kernel_matrix_equals_autograd_double_sum(kernel):
    g = gen(4)
    X = torch.randn(6, 3, generator=g, dtype=DT)
    S = torch.randn(6, 3, generator=g, dtype=DT)
    k = T.make_kernel(kernel)
    h = k.scale(T.sq_distances(X))
    f = (lambda r2: torch.exp(-r2 / h)) if kernel == "rbf" else (lambda r2: (1.0 + r2) ** -0.5)
    assert torch.allclose(T.stein_kernel_matrix(X, S, k), _stein_reference(X, S, f), rtol=1e-10, atol=1e-12)


def test_ksd_u_statistic_is_unbiased_zero_for_exact_samples():
    """E[KSD^2 U-statistic] = 0 when the points are drawn from the target (Stein's identity)."""
    P = T.GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.5, 0.5]], 0.6)
    vals = []
    for r in range(120):
        X = P.sample(50, gen(100 + r))
        vals.append(T.ksd(X, P.score(X), unbiased=True))
    vals = np.array(vals)
    assert abs(vals.mean()) <= 4 * vals.std() / math.sqrt(len(vals))
    X = P.sample(200, gen(9))
    assert T.ksd(X + 1.0, P.score(X + 1.0)) > 3 * T.ksd(X, P.score(X))


def test_mmd_unbiased_estimate_matches_closed_form():
    m1, m2 = torch.zeros(2, dtype=DT), torch.tensor([0.7, 0.0], dtype=DT)
    P, Q = T.Gaussian(m1, 1.0), T.Gaussian(m2, 1.5 ** 2)
    vals = np.array([T.mmd2(P.sample(60, gen(2 * r)), Q.sample(60, gen(2 * r + 1)), lengthscale=1.2)
                     for r in range(120)])
    exact = T.gaussian_mmd2(m1, 1.0, m2, 1.5, lengthscale=1.2)
    assert exact > 0.01
    assert abs(vals.mean() - exact) <= 4 * vals.std() / math.sqrt(len(vals))


def test_mala_samples_a_correlated_gaussian():
    P = T.Gaussian([1.0, -2.0], [[1.0, 0.8], [0.8, 1.0]])
    X, acc = T.mala(P, torch.zeros(2000, 2, dtype=DT), step=0.3, steps=80, generator=gen(11))
    assert 0.5 < acc < 1.0
    se = torch.sqrt(torch.diagonal(P.cov) / len(X))
    assert (torch.abs(X.mean(0) - P.mean) <= 5 * se).all()
    assert torch.allclose(T.sample_cov(X), P.cov, atol=0.08)
