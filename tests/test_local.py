"""Local training, client sampling and reshuffling (methods/local.py): what their theory predicts.

Tiny problems (5 clients, d <= 10). Each test checks a prediction a wrong implementation would
miss: exact reductions (ProxSkip with p = 1 is GD, GradSkip with q = 1 and GradSkip+ with the
identity are ProxSkip, FedAvg with one local step is GD, FedNova / FedShuffle with equal work are
FedAvg, FedShuffle-MVR with a = 1 is FedShuffle, FedProx with mu = 0 is FedAvg), linear
convergence with the theory defaults, the Lyapunov bound of ProxSkip's Thm. 3.6, GradSkip's
per-client gradient counts, the fixed points of FedAvg / FedNova / FedProx / Scaffold, FedRR's
gamma^2 neighbourhood, that rounds without communication send nothing, and the cyclic sampler.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from optsim.channel import Channel
from optsim.experiment import ConfigError, parse_config, run_method
from optsim.experiment.runner import validate_methods
from optsim.meter import Meter
from optsim.methods.base import build_method
from optsim.methods.local.gradskip import gradskip_probabilities, gradskip_stepsize
from optsim.problems import LogisticRegression, Quadratic
from optsim.reproduce.local import hetero_quadratic, weighted_minimizer
from optsim.sampling import SAMPLERS, Cyclic, make_sampler

D, BITS = 10, 32


@pytest.fixture(scope="module")
def quad():
    """Heterogeneous quadratic: 5 clients, d = 10, kappa = 100 (local kappa_i up to ~400)."""
    return Quadratic.generate(5, D, L=1.0, mu=1e-2, heterogeneity=0.3, seed=0)


@pytest.fixture(scope="module")
def easy():
    """Well-conditioned heterogeneous quadratic (kappa ~ 3) for the FedAvg-type fixed points."""
    return Quadratic.generate(5, D, L=1.0, mu=0.3, heterogeneity=0.4, seed=2)


def _logreg(sizes, d=5, lam=0.1, seed=0):
    rng = np.random.default_rng(seed)
    feats, labels = [], []
    for i, m in enumerate(sizes):
        A = rng.standard_normal((m, d)) * (1 + 0.3 * i)
        w = rng.standard_normal(d)
        feats.append(A)
        labels.append(np.where(A @ w + 0.5 * rng.standard_normal(m) > 0, 1.0, -1.0))
    return LogisticRegression(feats, labels, lam=lam)


def _cfg(rounds, tol=None, log_every=1, seeds=None):
    return parse_config({"problem": {"name": "quadratic"}, "methods": ["gd"], "seeds": seeds or {},
                         "stop": {"max_rounds": rounds, "tol": tol, "metric": "dist_sq"}, "log_every": log_every})


def _run(problem, spec, rounds, tol=None, log_every=1, seeds=None):
    t = run_method(problem, spec, _cfg(rounds, tol, log_every, seeds), progress=False)
    assert t.status == "finished", t.meta.get("message")
    return t


def _drive(problem, spec, rounds, seed=0, lyapunov_every=None):
    """Run by hand; returns (method, meter, per-round usages, Lyapunov values)."""
    meter = Meter(problem.n)
    problem.attach(meter)
    try:
        method = build_method(spec, problem, Channel(meter, problem.d, BITS), seed)
        method.init(torch.zeros(problem.d, dtype=problem.dtype))
        usage, psi = [meter.close_round()], []
        for k in range(1, rounds + 1):
            method.step()
            usage.append(meter.close_round())
            if lyapunov_every and k % lyapunov_every == 0:
                psi.append(method.lyapunov())
    finally:
        problem.attach(None)
    return method, meter, usage, psi


# ---- ProxSkip ---------------------------------------------------------------------------------------
def test_proxskip_defaults_converge_and_charge_only_communicating_rounds(quad):
    mu = float(quad.local_mu.min())
    t = _run(quad, {"name": "proxskip"}, 4000, tol=1e-10)
    assert t.meta["reached_tol"] and t.last("dist_sq") <= 1e-10
    assert t.meta["stepsize"] == pytest.approx(1 / quad.L_max)
    p = math.sqrt(mu / quad.L_max)
    T, C = t.last("round"), t.last("comm_rounds")
    assert abs(C - p * T) < 4 * math.sqrt(T * p * (1 - p)) and C < 0.2 * T  # a Binomial(T, p) count
    assert np.array_equal(t["bits_up"], t["comm_rounds"] * D * BITS)  # bits only when communicating
    assert np.array_equal(t["bits_down"], t["comm_rounds"] * D * BITS)
    assert np.array_equal(t["grad_evals"], t["round"])  # one local gradient per client per iteration
    # round by round: an iteration without communication sends nothing and is not a communication round
    method, meter, usage, _ = _drive(quad, {"name": "proxskip"}, 200)
    silent = [u for u in usage[1:] if not u.communicated]
    assert silent and all(float(u.bits_up.sum()) == 0 and float(u.bits_down.sum()) == 0 for u in silent)
    assert meter.comm_rounds == sum(u.communicated for u in usage)


def test_proxskip_with_p_one_is_gd(quad):
    g = 1 / quad.L_max
    a = _run(quad, {"name": "proxskip", "p": 1.0, "stepsize": g}, 150)
    b = _run(quad, {"name": "gd", "stepsize": g}, 150)
    np.testing.assert_allclose(a["dist_sq"], b["dist_sq"], rtol=1e-9, atol=1e-14)
    assert np.array_equal(a["comm_rounds"], b["comm_rounds"])


def test_proxskip_lyapunov_follows_theorem_3_6(quad):
    """E Psi_T <= (1 - min(gamma mu, p^2))^T Psi_0 (mean over 4 seeds)."""
    runs = [_drive(quad, {"name": "proxskip"}, 600, seed=s, lyapunov_every=100) for s in range(4)]
    m0 = build_method({"name": "proxskip"}, quad, Channel(Meter(quad.n), D))
    m0.init(torch.zeros(D, dtype=torch.float64))
    zeta = min(m0.gamma * m0.mu_min, m0.p ** 2)
    mean_psi = np.mean([r[3] for r in runs], axis=0)
    bound = m0.lyapunov() * (1 - zeta) ** (100 * np.arange(1, 7))
    assert np.all(mean_psi <= bound)
    assert mean_psi[-1] < 1e-3 * mean_psi[0]


# ---- GradSkip / GradSkip+ ------------------------------------------------------------------------------
def test_gradskip_with_q_one_and_gradskip_plus_identity_are_proxskip(quad):
    ref = _run(quad, {"name": "proxskip"}, 300)
    for spec in ({"name": "gradskip", "q": 1.0, "p": _p(quad)},
                 {"name": "gradskip_plus", "compressor": "identity", "p": _p(quad)}):
        t = _run(quad, spec, 300)
        assert t.meta["stepsize"] == pytest.approx(ref.meta["stepsize"])
        np.testing.assert_allclose(t["dist_sq"], ref["dist_sq"], rtol=1e-12)
        assert np.array_equal(t["comm_rounds"], ref["comm_rounds"])


def _p(problem):
    return math.sqrt(float(problem.local_mu.min()) / problem.L_max)


def test_gradskip_theory_defaults_and_gradient_counts():
    """Defaults: gamma = 1/L_max, p = 1/sqrt(kappa_max), q_i = (1 - 1/kappa_i)/(1 - 1/kappa_max); client i
    then computes p / (p + (1 - p)(1 - q_i)) gradients per iteration (1 for the worst-conditioned one)."""
    mu = 1e-3
    pr = hetero_quadratic([1.0, 0.01, 0.005, 0.002, 0.002], D, mu)
    p, q = gradskip_probabilities(pr.L_i, mu)
    assert p == pytest.approx(1 / math.sqrt(1000)) and float(q[0]) == pytest.approx(1.0)
    assert gradskip_stepsize(pr.L_i, p, q) == pytest.approx(1 / pr.L_max)
    T = 4000  # far from convergence (kappa_max = 1000): every moving client really needs new gradients
    method, meter, _, _ = _drive(pr, {"name": "gradskip"}, T)
    assert method.gamma == pytest.approx(1 / pr.L_max)
    per_iter = meter.oracle["grad"] / T
    predicted = p / (p + (1 - p) * (1 - q))
    assert float(per_iter[0]) == 1.0
    np.testing.assert_allclose(per_iter.numpy(), predicted.numpy(), rtol=0.35)
    assert float(per_iter.sum()) == pytest.approx(float(predicted.sum()), rel=0.12)
    # linear convergence to 1e-10 with the defaults (kappa_max = 100), as ProxSkip
    pr = hetero_quadratic([0.1, 0.01, 0.005, 0.002, 0.002], D, mu)
    t = _run(pr, {"name": "gradskip"}, 10000, tol=1e-10, log_every=20)
    assert t.meta["reached_tol"] and t.last("grad_evals") < 0.6 * t.last("round")


def test_gradskip_plus_with_a_random_operator_converges(quad):
    spec = {"name": "gradskip_plus", "compressor": {"name": "bernoulli", "p": 0.5}, "p": 0.5}
    t = _run(quad, spec, 20000, tol=1e-10, log_every=20)
    assert t.meta["reached_tol"]
    m = build_method(spec, quad, Channel(Meter(quad.n), D))
    W = 1.0  # omega of the scaled Bernoulli(1/2) with the identity inside
    assert m.gamma == pytest.approx(float((1 / (quad.L_i * (1 + (1 / m.p ** 2 - 1) * W / (1 + W)))).min()))


# ---- ProxSkip-VR ------------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ["lsvrg", "saga"])
def test_proxskip_vr_converges_linearly_at_the_predicted_cost(estimator):
    pr = _logreg([20] * 5)
    t = _run(pr, {"name": "proxskip_vr", "estimator": estimator}, 20000, tol=1e-10, log_every=20)
    assert t.meta["reached_tol"]
    assert t.meta["stepsize"] == pytest.approx(1 / (6 * pr.L_sample_max))
    T = t.last("round")
    method = build_method({"name": "proxskip_vr", "estimator": estimator}, pr, Channel(Meter(pr.n), pr.d))
    per_iter = 2 / 20 + method.q if estimator == "lsvrg" else 1 / 20
    start = 1.0  # g(y^0) / the SAGA table: one full local gradient at x^0
    assert t.last("grad_evals") - start == pytest.approx(per_iter * T, rel=0.1)
    assert t.last("grad_evals") < 0.5 * T  # far cheaper per iteration than ProxSkip's full gradients


# ---- FedAvg, Scaffold, FedProx, FedNova -----------------------------------------------------------------
def test_fedavg_with_one_local_step_is_gd(quad):
    a = _run(quad, {"name": "fedavg", "local_steps": 1, "stepsize": 0.5, "server_stepsize": 1.5}, 100)
    b = _run(quad, {"name": "gd", "stepsize": 0.75}, 100)
    np.testing.assert_allclose(a["dist_sq"], b["dist_sq"], rtol=1e-9, atol=1e-14)
    assert np.array_equal(a["grad_evals"], b["grad_evals"]) and np.array_equal(a["bits_up"], b["bits_up"])


def test_scaffold_is_exact_where_fedavg_stalls(easy):
    spec = {"local_steps": 5, "stepsize": 0.1}
    fedavg = _run(easy, {"name": "fedavg", **spec}, 600)
    assert fedavg["dist_sq"][-100:].min() > 1e-4  # client drift: a fixed point away from x*
    for option in ("I", "II"):
        t = _run(easy, {"name": "scaffold", "option": option, **spec}, 600, tol=1e-20)
        assert t.last("dist_sq") < 1e-20 or t.best("dist_sq") < 1e-20
        assert np.array_equal(t["bits_up"], t["round"] * 2 * D * BITS)  # (Delta y_i, Delta c_i)
        assert np.array_equal(t["grad_evals"], t["round"] * 5)  # option I reuses the first step's gradient
    method, _, _, _ = _drive(easy, {"name": "scaffold", **spec}, 20)
    torch.testing.assert_close(method.c, method.C.mean(0))  # c = mean_i c_i with full participation
    # partial participation (nice sampling): still the exact solution
    t = _run(easy, {"name": "scaffold", "sampler": {"name": "nice", "tau": 2}, **spec}, 3000, tol=1e-16, log_every=10)
    assert t.meta["reached_tol"]
    assert t.meta["stepsize"] == 0.1
    assert build_method({"name": "scaffold", "local_steps": 5}, easy, Channel(Meter(5), D)).gamma == pytest.approx(
        min(1 / (81 * easy.L_max * 5), 5 / (15 * easy.mu * 5 * 5)))


def test_fedavg_and_fednova_limits_under_heterogeneous_local_steps(easy):
    """tau = (1, 1, 2, 4, 8) local GD steps: FedAvg converges to argmin sum tau_i f_i, FedNova to x*."""
    tau = [1, 1, 2, 4, 8]
    x_tau = weighted_minimizer(easy, tau)
    gap = float((x_tau - easy.x_star).norm())
    eta = 0.1 / 8
    avg, _, _, _ = _drive(easy, {"name": "fedavg", "local_steps": tau, "stepsize": eta}, 400)
    nova, meter, _, _ = _drive(easy, {"name": "fednova", "local_steps": tau, "stepsize": eta}, 400)
    assert gap > 0.05
    assert float((avg.x - x_tau).norm()) < 0.05 * gap
    assert float((nova.x - easy.x_star).norm()) < 0.05 * gap
    assert meter.oracle["grad"].tolist() == [400.0 * k for k in tau]  # each client's own local steps
    # equal local steps: FedNova is FedAvg
    a = _run(easy, {"name": "fednova", "local_steps": 3, "stepsize": eta}, 50)
    b = _run(easy, {"name": "fedavg", "local_steps": 3, "stepsize": eta}, 50)
    np.testing.assert_allclose(a["dist_sq"], b["dist_sq"], rtol=1e-10)


def test_fedprox_converges_to_the_prox_fixed_point(easy):
    """With an (essentially) exact local prox, x+ = mean_i prox_{f_i/mu}(x): the fixed point
    x = (I - M)^{-1} c, M = mean_i mu (A_i + mu I)^{-1}, c = mean_i (A_i + mu I)^{-1} b_i (not x*)."""
    mu = 1.0
    eye = torch.eye(D, dtype=torch.float64)
    inv = torch.linalg.inv(easy.A + mu * eye)
    x_fix = torch.linalg.solve(eye - mu * inv.mean(0), torch.einsum("nij,nj->ni", inv, easy.b).mean(0))
    method, _, _, _ = _drive(easy, {"name": "fedprox", "mu": mu, "local_steps": 30}, 400)
    assert method.gamma == pytest.approx(1 / (easy.L_max + mu))
    assert float((method.x - x_fix).norm()) < 1e-8
    assert float((x_fix - easy.x_star).norm()) > 1e-2
    # mu = 0: FedAvg with the same local steps and stepsize
    a = _run(easy, {"name": "fedprox", "mu": 0.0, "local_steps": 3, "stepsize": 0.2}, 50)
    b = _run(easy, {"name": "fedavg", "local_steps": 3, "stepsize": 0.2}, 50)
    np.testing.assert_allclose(a["dist_sq"], b["dist_sq"], rtol=1e-10)


# ---- reshuffling: FedRR, FedShuffle ----------------------------------------------------------------------
def test_fedrr_neighbourhood_scales_like_gamma_squared():
    pr = _logreg([10] * 5)
    tails = {}
    for mult in (1.0, 0.5):
        t = _run(pr, {"name": "fedrr", "stepsize_mult": mult}, 400, log_every=2)
        assert t.meta["stepsize"] == pytest.approx(mult / pr.L_sample_max)
        np.testing.assert_allclose(t["grad_evals"], t["round"])  # one epoch = one local pass per round
        tails[mult] = float(t["dist_sq"][100:].mean())
    assert 2.5 < tails[1.0] / tails[0.5] < 6.5


def test_fedshuffle_removes_the_objective_inconsistency_of_fedavg():
    """Unequal data (m = 16, 8, 4, 4, 2), one local epoch with batch 2: FedAvg weights client i by its
    tau_i = m_i / 2 steps; FedShuffle scales the stepsizes by tau_max / tau_i and lands near x*."""
    pr = _logreg([16, 8, 4, 4, 2], lam=0.3)
    tau = pr.m // 2
    eta = 0.3 / (pr.L_max * 8)
    common = {"local_epochs": 1, "batch_size": 2, "stepsize": eta}
    avg = _run(pr, {"name": "fedavg", **common}, 300, log_every=3)
    shuf = _run(pr, {"name": "fedshuffle", **common}, 300, log_every=3)
    d_avg, d_shuf = (float(np.sqrt(t["dist_sq"][50:].mean())) for t in (avg, shuf))
    target = float((weighted_minimizer(pr, tau) - pr.x_star).norm())
    assert d_shuf < 0.3 * d_avg
    assert abs(d_avg - target) < 0.4 * target
    assert np.allclose(shuf["grad_evals"], shuf["round"])  # one local epoch per round


def test_fedshuffle_reductions():
    pr = _logreg([8] * 5)
    spec = {"local_epochs": 1, "batch_size": 2, "stepsize": 0.01}
    a = _run(pr, {"name": "fedshuffle", **spec}, 30)
    b = _run(pr, {"name": "fedavg", **spec}, 30)
    np.testing.assert_allclose(a["dist_sq"], b["dist_sq"], rtol=1e-12)  # equal sizes: FedAvg
    c = _run(pr, {"name": "fedshuffle_mvr", "mvr_a": 1.0, **spec}, 30)
    np.testing.assert_allclose(c["dist_sq"], a["dist_sq"], rtol=1e-12)  # a = 1: FedShuffle
    assert c.last("bits_up") == 30 * 2 * 5 * BITS + 5 * BITS  # (Delta_i, v_i) each round + grad f_i(x^0)
    mvr = _run(pr, {"name": "fedshuffle_mvr", **spec}, 300, log_every=10)
    assert mvr.last("dist_sq") < 1e-2 * mvr["dist_sq"][0]


# ---- client sampling ------------------------------------------------------------------------------------
def test_cyclic_sampler_visits_every_client_once_per_meta_epoch():
    s = make_sampler({"name": "cyclic", "groups": 3}, 7)
    assert isinstance(s, Cyclic) and "cyclic" in SAMPLERS
    assert torch.allclose(s.probs, torch.full((7,), 1 / 3, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    epochs = []
    for _ in range(4):
        groups = [s.sample(g) for _ in range(3)]
        assert sorted(torch.cat(groups).tolist()) == list(range(7))
        assert sorted(len(x) for x in groups) == [2, 2, 3]
        epochs.append([x.tolist() for x in groups])
    assert epochs[0] != epochs[1]  # reshuffled every meta-epoch
    fixed = make_sampler({"name": "cyclic", "groups": 3, "reshuffle": False}, 7)
    first = [fixed.sample(g).tolist() for _ in range(3)]
    assert [fixed.sample(g).tolist() for _ in range(3)] == first
    assert make_sampler({"name": "cyclic", "groups": 1}, 4).is_full
    with pytest.raises(ValueError, match="groups must be an integer"):
        make_sampler({"name": "cyclic", "groups": 9}, 7)
    with pytest.raises(ValueError, match="needs groups"):
        make_sampler({"name": "cyclic"}, 7)
    with pytest.raises(ValueError, match="did you mean 'cyclic'"):
        make_sampler({"name": "cyclc", "groups": 2}, 7)


def test_fedavg_with_cyclic_participation_charges_only_the_group(quad):
    t = _run(quad, {"name": "fedavg", "local_steps": 2, "sampler": {"name": "cyclic", "groups": 5}}, 50)
    # 1 of 5 clients per round: per-client means are a fifth of full participation
    assert t.last("bits_up") == pytest.approx(50 * D * BITS / 5)
    assert t.last("grad_evals") == pytest.approx(50 * 2 / 5)


# ---- configuration errors ----------------------------------------------------------------------------------
def test_clear_errors(quad):
    def check(spec, match, problem=quad):
        with pytest.raises(ConfigError, match=match):
            cfg = parse_config({"problem": {"name": "quadratic"}, "methods": [spec]})
            validate_methods(cfg, problem)

    check({"name": "fedavg", "local_steps": 2, "local_epochs": 1, "batch_size": 1}, "not both")
    check({"name": "fedavg", "local_epochs": 1}, "needs a batch_size")
    check({"name": "fedavg", "local_steps": [1, 2]}, "lists 2 values for 5 clients")
    check({"name": "fedavg", "local_epochs": 1, "batch_size": 1}, "per-sample gradients")
    check({"name": "proxskip_vr"}, "per-sample gradients")
    check({"name": "gradskip", "q": 1.5}, r"q: probabilities must be in \[0, 1\]")
    check({"name": "proxskip", "p": 0}, "greater than 0")
    check({"name": "gradskip_plus", "compressor": {"name": "top_k", "k": 2}}, "unbiased compressor")
    check({"name": "fedshuffle", "batch_size": 50}, "exceeds the smallest client", problem=_logreg([8] * 5))


# ---- recipes -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rid", ["L2", "L7", "L8", "L9"])
def test_recipe_fast(rid, tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe(rid, tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert outcome.figures and all(Path(f).exists() for f in outcome.figures)


@pytest.mark.slow
def test_recipe_baseline_proxskip_fast(tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe("baseline-proxskip", tmp_path, fast=True)
    assert outcome.passed, outcome.measured
