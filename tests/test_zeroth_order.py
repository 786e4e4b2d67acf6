"""Zeroth-order methods (S8): the function-value oracles and their counts, the direction laws' exact
constants, STP's decrease property, its linear rate (exact on an isotropic quadratic), the MiSTP
theorems' constants, and exact special cases (STP with coordinate directions = randomized coordinate
descent; MiSTP with full batches = STP with the constant rule)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optsim.experiment import parse_config, run_method
from optsim.meter import Meter
from optsim.methods.linalg._threads import threads_for
from optsim.methods.zeroth_order import (
    mu_D,
    norm_D,
    run_stp,
    sample_directions,
    stp_step,
    three_points,
)
from optsim.problems import LeastSquares, LogisticRegression, Quadratic
from optsim.problems.l0l1 import CoshProblem

ZERO = lambda R: torch.zeros(R, dtype=torch.long)


def _quadratic(d, L, mu, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    ev = torch.linspace(mu, L, d, dtype=torch.float64)
    A = (Q * ev) @ Q.T
    A = (A + A.T) / 2
    b = torch.randn(d, generator=g, dtype=torch.float64)
    return Quadratic(A[None], b[None])


# ---- oracles ------------------------------------------------------------------------------------------------
def test_point_losses_equal_losses_and_are_counted(glm_data):
    feats, labels = glm_data
    g = torch.Generator().manual_seed(0)
    probs = [LogisticRegression(feats, labels, lam=0.1), LeastSquares(feats, labels, lam=0.0),
             Quadratic.generate(3, 4, seed=1), CoshProblem.generate(3, 4, m=5, seed=2)]
    for p in probs:
        meter = Meter(p.n)
        p.attach(meter)
        P = torch.randn(p.n, 5, p.d, generator=g, dtype=torch.float64)
        V = p.point_losses(P)
        ref = torch.stack([p._losses(P[:, r], None) for r in range(5)], 1)
        assert torch.allclose(V, ref, rtol=1e-13, atol=1e-13), p.name
        clients = torch.tensor([2, 0])
        V2 = p.point_losses(P[clients][:, :3], clients)
        assert torch.allclose(V2, ref[clients][:, :3], rtol=1e-13, atol=1e-13)
        meter.close_round()
        assert meter.snapshot()["func_evals"] == pytest.approx((5 * p.n + 3 * 2) / p.n)
        assert meter.snapshot()["grad_evals"] == 0


def test_sample_point_losses_are_minibatch_means(glm_data):
    feats, labels = glm_data
    p = LogisticRegression(feats, labels, lam=0.3)
    meter = Meter(p.n)
    p.attach(meter)
    g = torch.Generator().manual_seed(1)
    P = torch.randn(p.n, 4, p.d, generator=g, dtype=torch.float64)
    idx = torch.tensor([[0, 3], [4, 1], [8, 2]])
    V = p.sample_point_losses(P, idx)
    for i in range(p.n):
        A = torch.as_tensor(feats[i])[idx[i]]
        y = torch.as_tensor(labels[i])[idx[i]]
        for r in range(4):
            x = P[i, r]
            ref = torch.log1p(torch.exp(-y * (A @ x))).mean() + 0.15 * x.dot(x)
            assert float(V[i, r]) == pytest.approx(float(ref), rel=1e-13)
    meter.close_round()
    m = np.array([7, 5, 9])
    assert meter.snapshot()["func_evals"] == pytest.approx(float(np.mean(4 * 2 / m)))


def test_point_losses_refuse_wrong_shape():
    p = Quadratic.generate(2, 3)
    with pytest.raises(ValueError, match=r"\(2, k, 3\)"):
        p.point_losses(torch.zeros(2, 3))


# ---- direction laws ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sphere", "normal", "coordinate"])
def test_direction_constants_are_exact(kind):
    """E||s||^2 = 1, E[s s^T] = I/d and E|<g, s>| = mu_D ||g||_D (equality), within Monte-Carlo error."""
    d, R = 7, 200_000
    g = torch.Generator().manual_seed(3)
    S = sample_directions(kind, R, d, g)
    v = torch.randn(d, generator=g, dtype=torch.float64)
    a = (S @ v).abs()
    se = float(a.std()) / math.sqrt(R)
    assert abs(float(a.mean()) - mu_D(kind, d) * float(norm_D(kind, v))) < 4 * se
    n2 = S.pow(2).sum(1)
    assert abs(float(n2.mean()) - 1) < 4 * float(n2.std()) / math.sqrt(R) + 1e-12
    C = S.T @ S / R
    assert torch.allclose(C, torch.eye(d, dtype=torch.float64) / d, atol=0.01)
    if kind != "normal":
        assert torch.allclose(n2, torch.ones(R, dtype=torch.float64))
    if kind == "sphere":  # the papers' lower bound 1/sqrt(2 pi d) and the asymptote sqrt(2/(pi d))
        assert 1 / math.sqrt(2 * math.pi * d) < mu_D(kind, d) < math.sqrt(2 / (math.pi * d)) * 1.08


# ---- STP -------------------------------------------------------------------------------------------------------
def test_three_points_picks_the_best_with_the_papers_tie_order():
    values = lambda P: P.sum(-1)
    X = torch.zeros(3, 2, dtype=torch.float64)
    S = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    Xn, F = three_points(values, X, S, torch.ones(3, dtype=torch.float64))
    assert torch.equal(Xn, torch.tensor([[-1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]], dtype=torch.float64))
    assert torch.equal(F, torch.tensor([-1.0, -1.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("directions", ["sphere", "normal", "coordinate"])
@pytest.mark.parametrize("rule", ["directional", "constant"])
def test_stp_never_increases_f(tiny_logreg, directions, rule):
    spec = {"name": "stp", "directions": directions, "step_rule": rule}
    if rule == "constant":
        spec["stepsize"] = 0.3
    cfg = parse_config({"problem": {"name": "logreg"}, "methods": [spec], "stop": {"max_rounds": 150}, "log_every": 1})
    tr = run_method(tiny_logreg, spec, cfg, progress=False)
    loss = tr["loss"]
    assert np.all(np.diff(loss) <= 0), np.diff(loss).max()
    assert loss[-1] < loss[0]
    per_round = 3 if rule == "directional" else 2  # f(x_k) is kept from the previous round
    assert tr["func_evals"][-1] == pytest.approx(1 + per_round * tr["round"][-1])
    assert tr["grad_evals"][-1] == 0


def test_stp_rate_is_exact_on_an_isotropic_quadratic():
    """f = (L/2)||x||^2, unit directions, gamma = 1/L: E f(x_K) = (1 - 1/d)^K f(x_0) exactly (the
    theorem's (1 - mu/(dL))^K with equality)."""
    d, R, K, L = 10, 3000, 20, 2.0
    q = Quadratic((L * torch.eye(d, dtype=torch.float64))[None], torch.zeros(1, d, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    X0 = torch.randn(R, d, generator=g, dtype=torch.float64)
    f = lambda X: q.point_losses(X[:, None], ZERO(R))[:, 0]
    for kind in ("sphere", "coordinate"):
        ratio = f(run_stp(q, X0, K, directions=kind, gamma=1 / L, fd=1e-7, generator=g)) / f(X0)
        se = float(ratio.std()) / math.sqrt(R)
        assert abs(float(ratio.mean()) - (1 - 1 / d) ** K) < 4 * se, kind


def test_stp_rate_bound_on_an_ill_conditioned_quadratic():
    """E[f(x_K) - f*] <= (1 - mu/(dL))^K (f(x_0) - f*) (within Monte-Carlo error), and not much
    slower than the bound's exponent suggests in the worst direction."""
    d, R, K = 8, 3000, 60
    q = _quadratic(d, L=4.0, mu=0.5)
    L, mu, fs = q.L, q.mu, q.f_star
    g = torch.Generator().manual_seed(5)
    X0 = q.x_star + torch.randn(R, d, generator=g, dtype=torch.float64)
    f = lambda X: q.point_losses(X[:, None], ZERO(R))[:, 0] - fs
    ratio = f(run_stp(q, X0, K, directions="sphere", gamma=1 / L, fd=1e-7, generator=g)) / f(X0)
    se = float(ratio.std()) / math.sqrt(R)
    bound = (1 - mu / (d * L)) ** K
    assert float(ratio.mean()) <= bound + 4 * se
    assert float(ratio.mean()) > (1 - 1 / d) ** K  # no faster than the isotropic (best) case


def test_stp_coordinate_directional_is_randomized_coordinate_descent():
    """Coordinate directions with the directional rule, gamma = 1/L >= max A_ii: the step is
    x_i -= (df/dx_i) / L, i.e. randomized coordinate descent with stepsize 1/L (up to the finite
    difference's O(t) error)."""
    d, R, K = 6, 5, 40
    q = _quadratic(d, L=3.0, mu=0.2, seed=2)
    A, b = q.A[0], q.b[0]
    X0 = torch.randn(R, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    X = run_stp(q, X0, K, directions="coordinate", gamma=1 / q.L, fd=1e-8, generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    Y = X0.clone()
    for _ in range(K):
        i = torch.randint(d, (R,), generator=g)
        G = Y @ A - b
        Y[torch.arange(R), i] -= G[torch.arange(R), i] / q.L
    assert torch.allclose(X, Y, atol=1e-6)


def test_stp_with_noisy_values_still_converges_to_a_neighbourhood(tiny_logreg):
    spec = {"name": "stp", "step_rule": "constant", "stepsize": 0.05, "value_noise": 1e-4}
    cfg = parse_config({"problem": {"name": "logreg"}, "methods": [spec], "stop": {"max_rounds": 600}, "log_every": 50})
    tr = run_method(tiny_logreg, spec, cfg, progress=False)
    assert tr["f_gap"][-1] < 0.05 * tr["f_gap"][0]


# ---- MiSTP -----------------------------------------------------------------------------------------------------
def test_mistp_full_batch_equals_stp_constant(tiny_logreg):
    """b = m_i: f_B = f_i, so MiSTP is STP with the constant rule (same directions, the method's
    generator), iterate for iterate; MiSTP pays 3 evaluations a round, STP 2."""
    out = {}
    for spec in ({"name": "stp", "step_rule": "constant", "stepsize": 0.2, "directions": "normal"},
                 {"name": "mistp", "stepsize": 0.2, "batch_size": 20}):
        cfg = parse_config({"problem": {"name": "logreg"}, "methods": [spec], "stop": {"max_rounds": 60}, "log_every": 1})
        out[spec["name"]] = run_method(tiny_logreg, spec, cfg, progress=False)
    assert np.allclose(out["stp"]["loss"], out["mistp"]["loss"], rtol=0, atol=1e-12)
    assert out["mistp"]["func_evals"][-1] == pytest.approx(3 * 60)
    assert out["stp"]["func_evals"][-1] == pytest.approx(1 + 2 * 60)


def test_mistp_minibatch_counts_and_progress(tiny_logreg):
    spec = {"name": "mistp", "stepsize": 0.1, "batch_size": 5}
    cfg = parse_config({"problem": {"name": "logreg"}, "methods": [spec], "stop": {"max_rounds": 400}, "log_every": 100})
    tr = run_method(tiny_logreg, spec, cfg, progress=False)
    assert tr["func_evals"][-1] == pytest.approx(400 * 3 * 5 / 20)
    assert tr["f_gap"][-1] < 0.2 * tr["f_gap"][0]


def test_mistp_refuses_oversized_batches_and_missing_stepsize(tiny_logreg):
    from optsim.experiment import ConfigError
    from optsim.experiment.runner import validate_methods
    for spec, msg in (({"name": "mistp", "stepsize": 0.1, "batch_size": 50}, "lower 'batch_size'"),
                      ({"name": "mistp"}, "set 'stepsize' or 'eps'")):
        cfg = parse_config({"problem": {"name": "logreg"}, "methods": [spec]})
        with pytest.raises(ConfigError, match=msg):
            validate_methods(cfg, tiny_logreg)


def test_mistp_lemma2_one_step_bound():
    """Lemma 2 with sigma = 0 (full batch): E f(x+) <= f(x) - alpha mu_D ||grad f(x)||_D + L alpha^2 / 2,
    checked at a fixed x over many directions for each law (and tight to within a few percent of the
    decrease for the sphere at small alpha, where the three-point choice is the sign of <g, s>)."""
    d, R = 6, 100_000
    q = _quadratic(d, L=2.0, mu=0.5, seed=4)
    x = torch.randn(d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    gx = q.full_grad(x)
    fx = q.loss(x)
    for kind in ("sphere", "normal", "coordinate"):
        for alpha in (1e-3, 0.3):
            S = sample_directions(kind, R, d, torch.Generator().manual_seed(7))
            X = x.expand(R, d).clone()
            with threads_for(0):
                _, F = stp_step(lambda P: q.point_losses(P, ZERO(R)), X, S, alpha)
            bound = fx - alpha * mu_D(kind, d) * float(norm_D(kind, gx)) + q.L * alpha ** 2 / 2
            se = float(F.std()) / math.sqrt(R)
            assert float(F.mean()) <= bound + 4 * se, (kind, alpha)


def test_mistp_theorem2_constant_stepsize_reaches_eps():
    """Theorem 2 (convex, sigma = 0): alpha = eps mu_D / (L R_0) and
    K = ceil(L R_0^2 / (mu_D^2 eps) log(4 (f(x_0) - f*) / eps)) give E f(x_K) - f* <= eps."""
    d, R, eps = 4, 400, 0.05
    q = _quadratic(d, L=1.0, mu=0.25, seed=6)
    x0 = q.x_star + torch.tensor([1.0, -0.5, 0.3, 0.8], dtype=torch.float64)
    gap0 = q.loss(x0) - q.f_star
    R0 = math.sqrt(2 * gap0 / q.mu)  # the level set {f <= f(x0)} lies in the ball ||x - x*|| <= R0
    m = mu_D("sphere", d)
    K = math.ceil(q.L * R0 ** 2 / (m ** 2 * eps) * math.log(4 * gap0 / eps))
    X = run_stp(q, x0.expand(R, d), K, directions="sphere", gamma=eps * m / (q.L * R0), batch_size=None,
                generator=torch.Generator().manual_seed(3))
    gaps = q.point_losses(X[:, None], ZERO(R))[:, 0] - q.f_star
    assert float(gaps.mean()) <= eps


# ---- recipe ------------------------------------------------------------------------------------------------------
def test_s8_recipe_fast(tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe("S8", tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert "queries to" in outcome.measured
    assert outcome.figures and all(f.exists() for f in outcome.figures)


def test_zo_svrg_first_inner_step_is_the_snapshot_estimate():
    """At the snapshot x = x~ the control variate cancels exactly: x+ = x - alpha g~."""
    from optsim.methods.zeroth_order import zo_svrg_step
    q = _quadratic(5, L=2.0, mu=0.5)
    R = 4
    X = torch.randn(R, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gs = torch.randn(R, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    S = sample_directions("sphere", R, 5, torch.Generator().manual_seed(2))
    Xn = zo_svrg_step(lambda P: q.point_losses(P, ZERO(R)), X, X.clone(), gs, S, 0.1, 1e-4)
    assert torch.allclose(Xn, X - 0.1 * gs, rtol=0, atol=1e-15)


def test_finite_difference_estimates_on_a_quadratic():
    """ZO-CD's central differences are exact on a quadratic (x+ = x - alpha grad f(x)); RSGF's forward
    difference is <grad f, s> + mu s^T A s / 2 along s."""
    from optsim.methods.zeroth_order import rsgf_step, zo_cd_step
    q = _quadratic(6, L=2.0, mu=0.5, seed=3)
    R = 3
    X = torch.randn(R, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    values = lambda P: q.point_losses(P, ZERO(R))
    G = X @ q.A[0] - q.b[0]
    assert torch.allclose(zo_cd_step(values, X, 0.1, 1e-3), X - 0.1 * G, atol=1e-10)
    S = sample_directions("sphere", R, 6, torch.Generator().manual_seed(4))
    mu = 1e-3
    c = (G * S).sum(1) + mu * ((S @ q.A[0]) * S).sum(1) / 2
    assert torch.allclose(rsgf_step(values, X, S, 0.1, mu), X - 0.1 * c[:, None] * S, atol=1e-10)


def test_zeroth_order_methods_count_only_function_values(tiny_logreg):
    """Per round: RSGF 2 minibatch values, ZO-CD 2 d, ZO-SVRG 4 (+ 2 full values per snapshot)."""
    d, b, m, K = tiny_logreg.d, 4, 20, 10
    expect = {"rsgf": K * 2 * b / m, "zo_cd": K * 2 * d * b / m, "zo_svrg": K * 4 * b / m + 2 * 2}
    for name, per in expect.items():
        spec = {"name": name, "stepsize": 0.01, "batch_size": b}
        if name == "zo_svrg":
            spec["epoch_length"] = 5
        cfg = parse_config({"problem": {"name": "logreg"}, "methods": [spec], "stop": {"max_rounds": K}, "log_every": 1})
        tr = run_method(tiny_logreg, spec, cfg, progress=False)
        assert tr["func_evals"][-1] == pytest.approx(per), name
        assert tr["grad_evals"][-1] == 0 and np.isfinite(tr["loss"][-1])


@pytest.mark.parametrize("m, b", [(400, 10), (30, 12)])
def test_minibatches_are_uniform_without_replacement(m, b):
    """Both draws (rejection when b^2 <= m, keys otherwise): distinct indices, each sample drawn with
    probability b / m, and pairs with probability b (b - 1) / (m (m - 1)) (within Monte-Carlo error)."""
    from optsim.methods.zeroth_order import draw_batches
    R = 20_000
    idx = draw_batches(torch.full((R,), m), b, torch.Generator().manual_seed(0))
    assert idx.shape == (R, b) and int(idx.min()) >= 0 and int(idx.max()) < m
    srt = idx.sort(1).values
    assert not bool((srt[:, 1:] == srt[:, :-1]).any())
    hits = torch.zeros(R, m).scatter_(1, idx, 1.0)
    freq = hits.mean(0)
    p = b / m
    assert float((freq - p).abs().max()) < 5 * math.sqrt(p * (1 - p) / R)
    pair = float((hits[:, 0] * hits[:, 1]).mean())
    q = b * (b - 1) / (m * (m - 1))
    assert abs(pair - q) < 5 * math.sqrt(q / R)
