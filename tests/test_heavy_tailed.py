"""Heavy-tailed noise and clipped methods (S5): the noise laws' exact moments, zero mean and law,
the oracle's bounded alpha-th moment; norm clipping's bound; exact special cases (a huge clipping
level gives SGD and the similar-triangles method exactly); STM's deterministic bound
f(y_K) - f* <= R^2 / (2 A_K); clipped GD's linear rate on a strongly convex quadratic."""
from __future__ import annotations

import math

import pytest
import torch

from optsim.experiment import parse_config, run_method
from optsim.methods.heavy_tailed import (
    clip_rows,
    clipped_sgd_parameters,
    sstm_coefficient,
)
from optsim.problems.noise import NoiseLaw, as_noise_law
from optsim.problems.stochastic_quadratic import StochasticQuadratic


# ---- noise laws -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("law, p", [(NoiseLaw(), 1.5), (NoiseLaw("student_t", 3.0), 1.2), (NoiseLaw("pareto", 3.0), 1.2),
                                    (NoiseLaw("student_t", 5.0), 2.0)])
def test_abs_moment_and_mean_within_monte_carlo_error(law, p):
    """Empirical E|z|^p and E z within 5 standard errors (2p < tail: |z|^p has a finite variance)."""
    z = law.sample((400_000,), torch.Generator().manual_seed(1))
    zp = z.abs() ** p
    se = float(zp.std()) / math.sqrt(z.numel())
    assert abs(float(zp.mean()) - law.abs_moment(p)) < 5 * se
    assert abs(float(z.mean())) < 5 * float(z.std()) / math.sqrt(z.numel())


def test_student_t_law_and_infinite_variance_case():
    """nu = 1.5: the draws follow t_1.5 (Kolmogorov-Smirnov), are symmetric (P(z > 0) = 1/2 within 5
    binomial standard errors), E|z|^1.2 matches, and the variance and 1.5-th moment are infinite."""
    from scipy import stats

    law = NoiseLaw("student_t", 1.5)
    z = law.sample((200_000,), torch.Generator().manual_seed(2))
    assert stats.kstest(z[:20_000].numpy(), stats.t(1.5).cdf).pvalue > 1e-3
    pos = float((z > 0).double().mean())
    assert abs(pos - 0.5) < 5 * 0.5 / math.sqrt(z.numel())
    assert law.heavy_tailed and math.isinf(law.variance) and math.isinf(law.abs_moment(1.5))
    assert law.abs_moment(1.2) == pytest.approx(float(stats.t(1.5).expect(lambda x: abs(x) ** 1.2)), rel=1e-6)
    pareto = NoiseLaw("pareto", 1.8)
    zp = pareto.sample((20_000,), torch.Generator().manual_seed(3))
    assert stats.kstest(zp.abs().numpy(), stats.lomax(1.8).cdf).pvalue > 1e-3


def test_closed_form_moments_match_scipy():
    from scipy import stats

    assert NoiseLaw().abs_moment(1.7) == pytest.approx(float(stats.norm.expect(lambda x: abs(x) ** 1.7)), rel=1e-8)
    assert NoiseLaw("student_t", 4.0).abs_moment(2.0) == pytest.approx(2.0, rel=1e-12)  # nu / (nu - 2)
    assert NoiseLaw("pareto", 3.0).abs_moment(1.0) == pytest.approx(0.5, rel=1e-12)  # 1 / (a - 1)


def test_noise_law_errors_name_the_fix():
    with pytest.raises(ValueError, match="tail > 1"):
        NoiseLaw("student_t", 0.9)
    with pytest.raises(ValueError, match="use one of"):
        NoiseLaw("cauchy")
    with pytest.raises(ValueError, match="leave 'tail' unset"):
        NoiseLaw("gaussian", 2.0)
    with pytest.raises(ValueError, match="'kind' and 'tail'"):
        as_noise_law({"kind": "pareto", "nu": 2})


def test_stochastic_quadratic_heavy_tailed_oracle():
    """The oracle is unbiased (mean of many draws at one point within Monte-Carlo error, nu = 3), its
    empirical E||g - grad f||^1.2 is below the bound noise^1.2 d E|z|^1.2; infinite variance at nu = 1.5;
    the Gaussian law keeps its former draws."""
    d, sigma = 4, 0.5
    p = StochasticQuadratic.generate(1, d, noise=sigma, noise_law={"kind": "student_t", "tail": 3.0}, seed=0)
    x = torch.randn(1, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    R = 200_000
    G = p.minibatch_grads(x.expand(R, d), 1, torch.Generator().manual_seed(4), clients=torch.zeros(R, dtype=torch.long))
    E = G - p.full_grad(x[0])
    se = E.std(0) / math.sqrt(R)
    assert bool((E.mean(0).abs() < 5 * se).all())
    emp = float((E.norm(dim=1) ** 1.2).mean())
    assert emp <= p.noise_moment_bound(1.2)
    assert p.noise_variance() == pytest.approx(sigma ** 2 * d * 3.0)
    heavy = StochasticQuadratic.generate(1, d, noise=sigma, noise_law={"kind": "student_t", "tail": 1.5})
    assert math.isinf(heavy.noise_variance())
    gauss = StochasticQuadratic.generate(1, d, noise=sigma, seed=0)
    g1 = gauss.minibatch_grads(x, 3, torch.Generator().manual_seed(5))
    g2 = gauss.grads(x) + sigma / math.sqrt(3) * torch.randn(1, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.equal(g1, g2)


# ---- clipping ---------------------------------------------------------------------------------------------------
def test_clip_bound_direction_and_identity():
    G = torch.randn(500, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    lam = 2.0
    C = clip_rows(G, lam)
    n, nc = G.norm(dim=1), C.norm(dim=1)
    assert bool((nc <= lam * (1 + 1e-15)).all())
    big = n > lam
    assert torch.allclose(nc[big], torch.full_like(nc[big], lam), rtol=1e-14)
    assert torch.equal(C[~big], G[~big])
    cos = (C * G).sum(1) / (nc * n)
    assert torch.allclose(cos, torch.ones_like(cos), rtol=1e-14)
    lams = torch.linspace(0.5, 5.0, 500, dtype=torch.float64)  # one level per row
    assert bool((clip_rows(G, lams).norm(dim=1) <= lams * (1 + 1e-15)).all())
    assert clip_rows(G, math.inf) is G and torch.equal(clip_rows(G, 1e300), G)


# ---- methods -----------------------------------------------------------------------------------------------------
def _run(problem, spec, K, seed=0):
    cfg = parse_config({"problem": {"name": "logreg"}, "methods": [spec], "log_every": 1, "seed": seed,
                        "stop": {"max_rounds": K}})
    out = {}
    tr = run_method(problem, spec, cfg, progress=False, x0=torch.ones(problem.d, dtype=torch.float64),
                    on_end=lambda s: out.setdefault("x", s.method.x.clone()))
    return tr, out["x"]


@pytest.fixture(scope="module")
def heavy_problem():
    return StochasticQuadratic.generate(1, 6, L=1.0, mu=0.1, noise=0.3, noise_law={"kind": "student_t", "tail": 1.5}, seed=0)


def test_huge_clipping_level_is_sgd_exactly(heavy_problem):
    _, x_sgd = _run(heavy_problem, {"name": "sgd", "stepsize": 0.3}, 60)
    _, x_clip = _run(heavy_problem, {"name": "clipped_sgd", "stepsize": 0.3, "clip_level": 1e300}, 60)
    _, x_none = _run(heavy_problem, {"name": "clipped_sgd", "stepsize": 0.3}, 60)
    assert torch.equal(x_sgd, x_clip) and torch.equal(x_sgd, x_none)
    _, x_small = _run(heavy_problem, {"name": "clipped_sgd", "stepsize": 0.3, "clip_level": 0.5}, 60)
    assert not torch.equal(x_sgd, x_small)


def _stm_reference(problem, x0, K, a):
    """The similar-triangles method with exact gradients, written out."""
    L = problem.L
    y, z, A = x0.clone(), x0.clone(), 0.0
    for k in range(K):
        al = (k + 1) / (2 * a * L)
        x = (A * y + al * z) / (A + al)
        z = z - al * problem.full_grad(x)
        y = (A * y + al * z) / (A + al)
        A += al
    return y, A


def test_huge_clipping_sstm_is_stm_and_meets_its_bound():
    p = StochasticQuadratic.tridiagonal(1, 40, L=1.0)  # noiseless, ill-conditioned
    K, a = 80, 1.0
    _, y = _run(p, {"name": "clipped_sstm", "clip_B": 1e300}, K)
    y_ref, A_K = _stm_reference(p, torch.ones(p.d, dtype=torch.float64), K, a)
    assert torch.allclose(y, y_ref, rtol=1e-12, atol=1e-14)
    assert A_K == pytest.approx(K * (K + 1) / (4 * a * p.L), rel=1e-12)
    xs = p.solve()
    R2 = float((torch.ones(p.d, dtype=torch.float64) - xs).norm() ** 2)
    gap = p.loss(y) - p.loss(xs)
    assert 0 <= gap <= R2 / (2 * A_K)
    assert sstm_coefficient(K - 1, a, p.L) == pytest.approx(K / (2 * a * p.L))
    # a = 2 halves every coefficient: the bound holds with the halved A_K
    _, y2 = _run(p, {"name": "clipped_sstm", "a": 2.0}, K)
    assert p.loss(y2) - p.loss(xs) <= R2 / (2 * K * (K + 1) / (8 * p.L))


def test_clipped_gd_linear_rate_on_strongly_convex_quadratic():
    """Noiseless clipped GD with gamma = 1/L: steps of length <= gamma lam while ||grad f|| > lam, then
    GD, whose distance to x* contracts by at most (1 - mu/L) per step: it reaches the float64 floor."""
    p = StochasticQuadratic.generate(1, 6, L=1.0, mu=0.2, seed=1)
    xs, L, mu = p.solve(), p.L, p.mu
    spec = {"name": "clipped_sgd", "stepsize": 1.0 / L, "clip_level": 0.5}
    _, x30 = _run(p, spec, 30)
    _, x50 = _run(p, spec, 50)
    _, x400 = _run(p, spec, 400)
    assert float(p.full_grad(x30).norm()) <= 0.5  # unclipped from here on (||grad|| does not grow under GD)
    d30, d50 = float((x30 - xs).norm()), float((x50 - xs).norm())
    assert d50 <= (1 - mu / L) ** 20 * d30 * (1 + 1e-9)
    assert float((x400 - xs).norm()) <= 1e-13 * float(xs.norm())


def test_clipped_sgd_parameters_form():
    g, lam = clipped_sgd_parameters(L=2.0, R=1.0, sigma=0.0, alpha=1.5, K=100, beta=0.01, c=80.0)
    A = math.log(4 * 101 / 0.01)
    assert g == pytest.approx(1 / (80 * 2.0 * A)) and lam == pytest.approx(1.0 / (80 * g * A))
    g2, _ = clipped_sgd_parameters(L=2.0, R=1.0, sigma=10.0, alpha=1.5, K=100, beta=0.01, c=80.0)
    assert g2 == pytest.approx(1.0 / (80 * 10.0 * 100 ** (1 / 1.5) * A ** (0.5 / 1.5)))
    with pytest.raises(ValueError, match="alpha in"):
        clipped_sgd_parameters(1.0, 1.0, 1.0, 2.5, 10, 0.1)


def test_method_errors():
    p = StochasticQuadratic.generate(1, 3, seed=0)
    from optsim.experiment import ConfigError
    from optsim.experiment.runner import validate_methods

    cfg = parse_config({"problem": {"name": "logreg"}, "methods": [{"name": "clipped_sgd"}], "stop": {"max_rounds": 2}})
    with pytest.raises(ConfigError, match="set 'stepsize'"):
        validate_methods(cfg, p)
    with pytest.raises(Exception, match="clip_level"):
        parse_config({"problem": {"name": "logreg"}, "methods": [{"name": "clipped_sgd", "stepsize": 1, "clip_level": -1}],
                      "stop": {"max_rounds": 2}})


# ---- recipe ------------------------------------------------------------------------------------------------------
def test_s5_recipe_fast(tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe("S5", tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert "99th percentile" in outcome.measured
    assert outcome.figures and all(f.exists() for f in outcome.figures)


# ---- variational inequalities -------------------------------------------------------------------------------------
def test_minmax_constants_and_errors():
    from optsim.problems.minmax import QuadraticMinMax

    p = QuadraticMinMax.bilinear(4, seed=0)
    assert p.mu == pytest.approx(0.0, abs=1e-14) and math.isinf(p.star_cocoercivity) and p.L == pytest.approx(1.0)
    assert torch.allclose(p.operator(p.z_star), torch.zeros(8, dtype=torch.float64), atol=1e-12)
    q = QuadraticMinMax.strongly_monotone(4, mu=0.2, seed=1)
    assert q.mu == pytest.approx(0.2)
    ell = q.star_cocoercivity
    Z = torch.randn(1000, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    F = q.operator(Z)
    inner = (F * (Z - q.z_star)).sum(1)
    assert bool((inner >= (F ** 2).sum(1) / ell * (1 - 1e-12)).all())  # star-cocoercive with this ell
    Minv = torch.linalg.inv(q.M)
    v = torch.linalg.eigh(0.5 * (Minv + Minv.T)).eigenvectors[:, 0]
    z = q.z_star + Minv @ v  # F(z) = v: the bound is attained
    assert float(q.operator(z) @ (z - q.z_star)) == pytest.approx(float(v @ v) / ell, rel=1e-10)
    with pytest.raises(ValueError, match="positive semidefinite"):
        QuadraticMinMax(-torch.eye(2), torch.eye(2), torch.eye(2), torch.zeros(2), torch.zeros(2))


def test_sgda_grows_and_seg_contracts_exactly_on_a_bilinear_game():
    """Bilinear game (<F(z), z - z*> = 0): one exact GDA step has ||z+ - z*||^2 = ||z - z*||^2 + gamma^2
    ||F(z)||^2; extragradient multiplies the component of singular value s by 1 - i gamma s - gamma^2 s^2,
    so the squared distance contracts at rate rho = max_s (1 - gamma^2 s^2)^2 + gamma^2 s^2, attained
    asymptotically (s = 0.5 here); a huge clipping level changes nothing."""
    from optsim.methods.heavy_tailed import clipped_sgda_step, run_vi
    from optsim.problems.minmax import QuadraticMinMax

    p = QuadraticMinMax.bilinear(5, seed=0, spectrum=(0.5, 1.0))
    op = lambda Z, g: p.operator(Z)
    gen = torch.Generator()
    Z0 = torch.randn(4, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    gamma = 0.5
    Z1 = clipped_sgda_step(op, Z0, gamma, math.inf, gen)
    assert torch.allclose(p.distance_sq(Z1), p.distance_sq(Z0) + gamma ** 2 * (p.operator(Z0) ** 2).sum(1), rtol=1e-12)
    x = gamma ** 2 * 0.25
    rho = (1 - x) ** 2 + x
    d150 = p.distance_sq(run_vi(op, "seg", Z0, 150, gamma))
    d200 = p.distance_sq(run_vi(op, "seg", Z0, 200, gamma))
    assert bool((p.distance_sq(run_vi(op, "seg", Z0, 50, gamma)) <= rho ** 50 * p.distance_sq(Z0) * (1 + 1e-9)).all())
    assert torch.allclose(d200 / d150, torch.full((4,), rho ** 50, dtype=torch.float64), rtol=0.02)
    assert torch.equal(run_vi(op, "seg", Z0, 30, gamma, lam=1e300), run_vi(op, "seg", Z0, 30, gamma))


def test_clipped_seg_bounded_steps_and_heavy_tail_quantiles():
    """Each clipped SEG step moves at most 2 gamma lam; on a strongly monotone game with Student-t noise
    (nu = 1.5) the 99th percentile of ||z_K - z*||^2 over 2000 runs of clipped SEG is below a tenth of SEG's."""
    from optsim.methods.heavy_tailed import clipped_seg_step, run_vi
    from optsim.problems.minmax import QuadraticMinMax

    p = QuadraticMinMax.strongly_monotone(5, mu=0.1, seed=0, noise=1.0, noise_law={"kind": "student_t", "tail": 1.5})
    Z0 = (p.z_star + 1.0).expand(2000, 10).clone()
    gen = torch.Generator().manual_seed(0)
    Z1 = clipped_seg_step(p.stochastic_operator, Z0, 0.2, 0.7, gen)
    assert bool(((Z1 - Z0).norm(dim=1) <= 2 * 0.2 * 0.7 * (1 + 1e-12)).all())
    K, gamma = 300, 0.2
    lam = math.sqrt(float(p.distance_sq(Z0[0]))) / (gamma * math.log(4 * (K + 1) / 0.01))  # S5's form, constants 1
    q_seg = torch.quantile(p.distance_sq(run_vi(p.stochastic_operator, "seg", Z0, K, gamma, seed=1)), 0.99)
    q_clip = torch.quantile(p.distance_sq(run_vi(p.stochastic_operator, "seg", Z0, K, gamma, lam, seed=1)), 0.99)
    assert float(q_clip) <= float(q_seg) / 10
