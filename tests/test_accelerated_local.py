"""Accelerated local training (APDA-Inexact, 5GCS, 5GCS-CC, CompressedScaffnew, TAMUNA), personalization
(L2GD), meta-learning on Moreau envelopes (FO-MAML and its multistep generalization), clipped local GD on
an (L0, L1)-smooth problem, and their recipes (L1, L3, L4, L5, L6, L10, L11, L12)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optsim.channel import Channel
from optsim.compress.base import index_bits
from optsim.experiment import parse_config, run_method
from optsim.meter import Meter
from optsim.methods import build_method
from optsim.methods.local.primal_dual import optimal_probabilities, primal_dual_parameters
from optsim.methods.local.scaffnew import pattern_mask
from optsim.methods.local.personalized import (_personalized_grad, moreau_prox, moreau_solution, personalized_solution)
from optsim.problems import LogisticRegression, Quadratic
from optsim.problems.l0l1 import CoshProblem
from optsim.reproduce import run_recipe
from optsim.rng import generator


def cfg(rounds, tol=None, log_every=1, seed=0):
    stop = {"max_rounds": rounds, **({"tol": tol} if tol else {})}
    return parse_config({"problem": {"name": "quadratic"}, "methods": ["gd"], "stop": stop, "log_every": log_every,
                         "seed": seed})


@pytest.fixture(scope="module")
def quad():
    """8 clients, d = 6, kappa = 30, heterogeneous Hessians and minimizers."""
    return Quadratic.generate(8, 6, L=1.0, mu=1.0 / 30, heterogeneity=0.3, seed=1)


def stepper(problem, spec, seed=3, x0=0.0):
    """A method wired to its own meter and channel, initialized at x0 (all coordinates)."""
    meter = Meter(problem.n)
    problem.attach(meter)
    m = build_method(spec, problem, Channel(meter, problem.d), seed=seed)
    m.init(torch.full((problem.d,), float(x0), dtype=problem.dtype))
    return m, meter


# ---- the sparsification pattern -----------------------------------------------------------------------------
@pytest.mark.parametrize("m,d,s", [(8, 6, 2), (5, 17, 3), (10, 3, 4), (6, 6, 6)])
def test_pattern_has_s_owners_per_coordinate_and_balanced_rows(m, d, s):
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        q = pattern_mask(m, d, s, g)
        assert q.shape == (m, d) and bool((q.sum(0) == s).all())
        rows = q.sum(1)
        assert int(rows.max()) - int(rows.min()) <= 1 and int(rows.sum()) == s * d


# ---- Scaffnew family: special cases, accounting, convergence -------------------------------------------------
def test_compressed_scaffnew_with_all_owners_is_proxskip(quad):
    a, _ = stepper(quad, {"name": "proxskip", "p": 0.3})
    b, _ = stepper(quad, {"name": "compressed_scaffnew", "p": 0.3, "s": quad.n, "chi": 1.0})
    for _ in range(150):
        a.step()
        b.step()
        assert a.last_comm == b.last_comm
    assert torch.allclose(a.X, b.X, atol=1e-12, rtol=0) and torch.allclose(a.H, b.H, atol=1e-12, rtol=0)


def test_tamuna_full_participation_is_proxskip_at_its_communications(quad):
    a, _ = stepper(quad, {"name": "proxskip", "p": 0.25})
    c, _ = stepper(quad, {"name": "tamuna", "p": 0.25, "s": quad.n, "chi": 1.0})
    for _ in range(25):
        c.step()
        while True:
            a.step()
            if a.last_comm:
                break
        assert torch.allclose(a.x, c.x, atol=1e-12, rtol=0) and torch.allclose(a.H, c.H, atol=1e-12, rtol=0)


def test_compressed_scaffnew_sends_only_when_communicating(quad):
    m, meter = stepper(quad, {"name": "compressed_scaffnew", "s": 2})
    per_coord = 32 + index_bits(quad.d)
    comms = 0
    for k in range(1, 301):
        m.step()
        usage = meter.close_round()
        comms += int(m.last_comm)
        assert usage.communicated == m.last_comm
        if m.last_comm:  # s d coordinates in total, d floats broadcast to each client
            assert float(usage.bits_up.sum()) == 2 * quad.d * per_coord
            assert bool((usage.bits_down == quad.d * 32).all())
        else:
            assert float(usage.bits_up.sum()) == 0 and float(usage.bits_down.sum()) == 0
    snap = meter.snapshot()
    assert snap["comm_rounds"] == comms > 0 and snap["grad_evals"] == 300


@pytest.mark.parametrize("spec", [{"name": "compressed_scaffnew"}, {"name": "compressed_scaffnew", "s": 4},
                                  {"name": "tamuna", "sampler": {"name": "nice", "tau": 3}},
                                  {"name": "tamuna", "sampler": {"name": "nice", "tau": 4}, "s": 3}],
                         ids=["cs-s2", "cs-s4", "tamuna-3of8", "tamuna-4of8-s3"])
def test_scaffnew_family_reaches_the_exact_solution(quad, spec):
    t = run_method(quad, spec, cfg(40000, 1e-11, 10), progress=False)
    assert t.meta.get("reached_tol"), (t.status, t.best("f_gap"))
    assert t.last("dist_sq") <= 1e-8


def test_tamuna_keeps_control_variates_summing_to_zero_and_idle_clients_compute_nothing(quad):
    m, meter = stepper(quad, {"name": "tamuna", "sampler": {"name": "nice", "tau": 3}})
    for _ in range(40):
        m.step()
        usage = meter.close_round()
        active = usage.oracle["grad"] > 0
        assert int(active.sum()) == 3 and bool((usage.bits_up[~active] == 0).all())
        assert float(usage.oracle["grad"][active][0]) == m.local_steps_done[-1]
    assert float(m.H.sum(0).abs().max()) <= 1e-10 * (1 + float(m.H.abs().max()))


def test_compressed_scaffnew_needs_fewer_bits_than_proxskip():
    pr = Quadratic.generate(16, 16, L=1.0, mu=1.0 / 100, heterogeneity=0.3, seed=0)
    bits = {}
    for name in ("compressed_scaffnew", "proxskip"):
        t = run_method(pr, {"name": name}, cfg(60000, 1e-9, 10), progress=False)
        assert t.meta.get("reached_tol")
        bits[name] = t.last("bits_up")
    assert bits["compressed_scaffnew"] < bits["proxskip"]


# ---- primal-dual family --------------------------------------------------------------------------------------
def test_apda_converges_linearly_with_deterministic_local_steps(quad):
    m, meter = stepper(quad, {"name": "apda_inexact"})
    K = m.K
    for _ in range(5):
        m.step()
        usage = meter.close_round()
        assert usage.communicated
        assert bool((usage.oracle["grad"] == K + 1).all())
        assert bool((usage.bits_up == quad.d * 32).all()) and bool((usage.bits_down == quad.d * 32).all())
    t = run_method(quad, {"name": "apda_inexact"}, cfg(3000, 1e-11), progress=False)
    assert t.meta.get("reached_tol") and t.last("dist_sq") <= 1e-8
    # the predicted rate bounds the measured one: rounds to 1e-11 within log(f0/1e-11)/rate
    assert t.last("round") <= math.log(t["f_gap"][0] / 1e-11) / m.rate


@pytest.mark.parametrize("solver", ["gd", "agd"])
def test_apda_local_steps_scale_with_the_subproblem(solver):
    """Fast GD needs ~sqrt(kappa_sub) steps, GD ~kappa_sub; kappa_sub ~ sqrt(2 kappa)."""
    Ks = []
    for kappa in (1e2, 1e4):
        pr = Quadratic.generate(4, 4, L=1.0, mu=1.0 / kappa, heterogeneity=0.0, seed=0)
        m = build_method({"name": "apda_inexact", "solver": solver}, pr, None)
        assert float(m.kappa_sub.max()) == pytest.approx(1 + (pr.L_max - m.mu) / float(m.taus.max()))
        Ks.append(m.K)
    slope = math.log(Ks[1] / Ks[0]) / math.log(100)
    assert slope == pytest.approx(0.25 if solver == "agd" else 0.5, abs=0.06)


def test_5gcs_without_sampling_is_apda_and_identity_compression_is_5gcs(quad):
    a, _ = stepper(quad, {"name": "apda_inexact"})
    b, _ = stepper(quad, {"name": "5gcs", "sampler": "full"})
    c, _ = stepper(quad, {"name": "5gcs", "sampler": {"name": "nice", "tau": 3}})
    e, _ = stepper(quad, {"name": "5gcs_cc", "sampler": {"name": "nice", "tau": 3}, "compressor": "identity"})
    for _ in range(30):
        for m in (a, b, c, e):
            m.step()
    assert torch.equal(a.x, b.x) and torch.equal(a.U, b.U)
    assert torch.allclose(c.x, e.x, atol=1e-13, rtol=0) and torch.allclose(c.U, e.U, atol=1e-13, rtol=0)


@pytest.mark.parametrize("spec", [{"name": "5gcs", "sampler": {"name": "nice", "tau": 2}},
                                  {"name": "5gcs_cc", "sampler": {"name": "independent", "p": 0.5},
                                   "compressor": {"name": "rand_k", "k": 2}},
                                  {"name": "5gcs_cc", "compressor": {"name": "natural"}, "sampling": "optimal",
                                   "sampler": {"name": "nice", "tau": 4}}],
                         ids=["5gcs-2of8", "5gcs_cc-randk", "5gcs_cc-optimal"])
def test_sampled_primal_dual_methods_reach_the_solution_within_the_predicted_rounds(quad, spec):
    m = build_method(spec, quad, None)
    t = run_method(quad, spec, cfg(20000, 1e-10, 5), progress=False)
    assert t.meta.get("reached_tol"), (t.status, t.best("f_gap"))
    assert t.last("round") <= math.log(t["f_gap"][0] / 1e-10) / m.rate


def test_primal_dual_parameters_balance_the_rates():
    LF = torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)
    q = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
    g, tau, rate = primal_dual_parameters(0.01, LF, q, 3)
    primal = g * 0.01 / (1 + g * 0.01)
    dual = float((q * tau / (LF + tau)).min())
    assert primal == pytest.approx(dual, rel=1e-6) and rate == pytest.approx(primal, rel=1e-6)
    assert torch.allclose(g * tau, torch.full_like(tau, 0.5))  # (n - 1) q / (1 - q) = 2 >= 1: a_i = 1/2
    g1, _, r1 = primal_dual_parameters(0.01, LF, torch.ones(3, dtype=torch.float64), 3)
    assert r1 > rate  # full participation is faster than sampling half the clients


def test_optimal_probabilities():
    p, r = optimal_probabilities(0.01, torch.full((6,), 5.0, dtype=torch.float64), 6, 2.0)
    assert torch.allclose(p, torch.full((6,), 1 / 3, dtype=torch.float64), atol=1e-6)
    LF = torch.logspace(0, 2, 8, dtype=torch.float64)
    p, r = optimal_probabilities(0.01, LF, 8, 3.0, theta=0.5)
    assert float(p.sum()) == pytest.approx(3.0, rel=1e-6) and bool((p <= 1).all())
    assert bool((p[1:] >= p[:-1]).all())  # smoother clients are sampled less
    _, _, r_uniform = primal_dual_parameters(0.01, LF, torch.full((8,), 3 / 8 * 0.5, dtype=torch.float64), 8)
    assert r >= r_uniform * 1.2


# ---- L2GD ---------------------------------------------------------------------------------------------------
def test_personalized_solution_is_stationary(quad):
    for lam in (0.1, 10.0):
        X = personalized_solution(quad, lam)
        assert float(_personalized_grad(quad, X, lam).norm()) <= 1e-10
    rng = np.random.default_rng(0)
    A = rng.standard_normal((60, 4))
    y = np.where(A @ rng.standard_normal(4) > 0, 1.0, -1.0)
    lr = LogisticRegression([A[i * 20:(i + 1) * 20] for i in range(3)], [y[i * 20:(i + 1) * 20] for i in range(3)],
                            lam=0.5)
    X = personalized_solution(lr, 1.0)
    assert float(_personalized_grad(lr, X, 1.0).norm()) <= 1e-10


def test_l2gd_with_identity_compressors_is_hanzely_richtarik_l2gd(quad):
    lam, seed = 0.5, 4
    m, meter = stepper(quad, {"name": "l2gd", "lam": lam}, seed=seed)
    a, p, n = m.gamma, m.p, quad.n
    assert p == pytest.approx(lam / (quad.L_max + lam))
    assert a == pytest.approx(n / (2 * (quad.L_max + lam)))  # 1/(2 calL), calL = (L + lam)/n at p*
    g = generator(seed, "method")
    X = torch.zeros(n, quad.d, dtype=torch.float64)
    comms = 0
    for _ in range(200):
        m.step()
        meter.close_round()
        if bool(torch.rand((), generator=g, dtype=torch.float64) < p):
            X = X - a * lam / (n * p) * (X - X.mean(0))
            comms += 1
        else:
            X = X - a / (n * (1 - p)) * quad._grads(X, None)
    assert torch.allclose(m.X, X, atol=1e-12, rtol=0)
    assert meter.comm_rounds == comms and meter.snapshot()["grad_evals"] == 200 - comms


def test_l2gd_compressed_keeps_the_rate_with_fewer_bits(quad):
    """From far away (x0 = 20) both contract the distance to X(lam) alike, until their noise floors."""
    lam = 0.2
    Xs = personalized_solution(quad, lam)
    d0 = float((20.0 - Xs).pow(2).sum(1).mean())
    out = {}
    for key, extra in {"plain": {}, "natural": {"compressor": "natural", "down_compressor": "natural"}}.items():
        dists, bits = [], []
        for seed in range(4):
            m, meter = stepper(quad, {"name": "l2gd", "lam": lam, **extra}, seed=seed, x0=20.0)
            curve = []
            for k in range(300):
                m.step()
                meter.close_round()
                if k % 50 == 49:
                    curve.append(float((m.X - Xs).pow(2).sum(1).mean()))
            dists.append(curve)
            bits.append(meter.snapshot()["bits_up"])
        out[key] = (np.mean(dists, axis=0), np.mean(bits), m.rate)
    (dp, bp, rp), (dn, bn, rn) = out["plain"], out["natural"]
    assert dp[-1] <= 1e-3 * d0 and dn[-1] <= 1e-3 * d0
    assert bool(np.all(dn[:3] <= 3 * dp[:3])) and bool(np.all(dp[:3] <= 3 * dn[:3]))  # same linear phase
    assert bn < 0.5 * bp and abs((1 - rn) / (1 - rp) - 1) < 0.1


# ---- meta-learning with Moreau envelopes ------------------------------------------------------------------------
def test_moreau_solution_is_stationary(quad):
    alpha = 0.5 / quad.L_max
    x = moreau_solution(quad, alpha)
    X = x.reshape(1, -1).expand(quad.n, quad.d)
    assert float(((X - moreau_prox(quad, X, alpha)) / alpha).mean(0).norm()) <= 1e-11
    assert float((x - quad.x_star).norm()) > 1e-4  # a different objective than f


def test_fomaml_neighbourhood_shrinks_geometrically_with_inner_steps(quad):
    alpha = 0.5 / quad.L_max
    xm = moreau_solution(quad, alpha)
    dist = {}
    for s in (1, 2, 3, 30):
        spec = {"name": "fo_maml", "alpha": alpha} if s == 1 else {"name": "fo_muml", "alpha": alpha, "inner_steps": s}
        m, meter = stepper(quad, spec)
        for _ in range(1500):
            m.step()
            meter.close_round()
        assert meter.snapshot()["grad_evals"] == 1500 * (s + 1)
        dist[s] = float((m.x - xm).norm())
    X = xm.reshape(1, -1).expand(quad.n, quad.d)
    sigma = float(((X - moreau_prox(quad, X, alpha)) / alpha).norm(dim=1).mean())
    mu_M = quad.mu / (1 + alpha * quad.mu)
    assert 1e-8 < dist[1] <= 0.25 * sigma / mu_M  # (alpha L)^2 = 1/4
    assert dist[2] < 0.75 * dist[1] and dist[3] < 0.75 * dist[2]
    assert dist[30] <= 1e-10


def test_fomaml_refuses_a_non_contracting_alpha(quad):
    with pytest.raises(ValueError, match="does not contract"):
        build_method({"name": "fo_maml", "alpha": 2.0 / quad.L_max}, quad, None).gamma


# ---- (L0, L1)-smooth problem and clipped local GD ------------------------------------------------------------------
@pytest.fixture(scope="module")
def cosh():
    return CoshProblem.generate(6, 5, m=3, seed=0)


def test_cosh_problem_oracles_and_l0l1_bound(cosh):
    X = 8 + 3 * torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    Xr = X.clone().requires_grad_(True)
    cosh._losses(Xr, None).sum().backward()
    assert torch.allclose(Xr.grad, cosh._grads(X, None), atol=1e-10)
    idx = torch.tensor([[0, 2]] * 6)
    assert torch.allclose(cosh._sample_grads(X, None, torch.arange(3).expand(6, 3)), cosh._grads(X, None))
    assert cosh._sample_grads(X, None, idx).shape == (6, 5)
    for scale in (0.5, 3.0, 10.0):
        Y = 8 + scale * torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        H = torch.linalg.matrix_norm(cosh._hessians(Y, None), ord=2)
        assert bool((H <= cosh.L0_i + cosh.L1 * cosh._grads(Y, None).norm(dim=1) + 1e-9).all())
        h = torch.linalg.matrix_norm(cosh.full_hessian(Y[0]), ord=2)
        assert float(h) <= cosh.L0 + cosh.L1 * float(cosh.full_grad(Y[0]).norm()) + 1e-9
    assert float(cosh.full_grad(cosh.x_star).norm()) <= 1e-10


def test_clipping_converges_where_unclipped_local_gd_diverges(cosh):
    clipped = run_method(cosh, {"name": "clip_local_gd", "local_steps": 4}, cfg(400, None, 10), progress=False)
    unclipped = run_method(cosh, {"name": "clip_local_gd", "local_steps": 4, "clip": math.inf}, cfg(400, None, 10),
                           progress=False)
    assert unclipped.status == "diverged"
    assert clipped.status == "finished" and clipped.last("f_gap") <= 1e-6 * clipped["f_gap"][0]
    exact = run_method(cosh, {"name": "clip_local_gd", "local_steps": 1}, cfg(3000, 1e-11, 10), progress=False)
    assert exact.meta.get("reached_tol")  # one local step: clipped GD, no local-drift neighbourhood


def test_clip_local_gd_without_l0l1_constants_is_fedavg_with_a_server_stepsize():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((60, 4))
    y = np.where(A @ rng.standard_normal(4) > 0, 1.0, -1.0)
    lr = LogisticRegression([A[i * 20:(i + 1) * 20] for i in range(3)], [y[i * 20:(i + 1) * 20] for i in range(3)],
                            lam=0.5)
    a, _ = stepper(lr, {"name": "clip_local_gd", "local_steps": 3})
    assert math.isinf(a.clip) and a.gamma == pytest.approx(1 / (2 * 4.0 * 3 * lr.L_max))
    b, _ = stepper(lr, {"name": "fedavg", "local_steps": 3, "stepsize": a.gamma, "server_stepsize": 4.0})
    for _ in range(20):
        a.step()
        b.step()
    assert torch.allclose(a.x, b.x, atol=1e-13, rtol=0)


# ---- recipes ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rid", ["L3", "L4", "L5", "L10", "L11", "L12"])
def test_recipe_passes_fast(rid, tmp_path):
    outcome, _ = run_recipe(rid, tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert outcome.figures and all(f.exists() for f in outcome.figures)


@pytest.mark.slow
@pytest.mark.parametrize("rid", ["L1", "L6"])
def test_slow_recipe_passes_fast(rid, tmp_path):
    outcome, _ = run_recipe(rid, tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert outcome.figures and all(f.exists() for f in outcome.figures)
