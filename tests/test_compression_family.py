"""EF-BV, DCGD-SHIFT, 3PC (EF21 / LAG / CLAG), DASHA (gradient, PAGE, MVR), DASHA-PP and
VR-MARINA against what their theory predicts.

Small synthetic problems (5 clients x 20 samples, d = 10). The checks: the (eta, omega) and 3PC
inequalities hold for the constants we assign (Monte Carlo), special cases reproduce existing
methods iterate for iterate (EF-BV -> DIANA / EF21, DCGD-SHIFT -> DCGD / DIANA, 3PC -> EF21,
CLAG -> EF21 / LAG, DASHA-PP -> DASHA, DASHA-PP-PAGE -> DASHA-PAGE, DASHA-PP-MVR -> DASHA-MVR,
DASHA-PAGE -> DASHA), convergence to 1e-10 with theory
defaults where the theory promises it, a plateau where it does not, and exact bit / oracle counts.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optsim.channel import Channel
from optsim.compress import make_compressor
from optsim.experiment.config import parse_config
from optsim.experiment.runner import run_method
from optsim.meter import Meter
from optsim.methods.base import build_method
from optsim.methods.compression.dasha_pp import participation
from optsim.methods.compression.shifted import efbv_parameters, efbv_stepsize, eta_omega, omega_average
from optsim.mechanisms import Feedback, make_three_pc, three_pc_stepsize
from optsim.problems import LogisticRegression, NonconvexLogisticRegression, Quadratic
from optsim.sampling import Independent, Nice

from _glm_data import D, M, N, heterogeneous_glm_data as _data  # noqa: E402
IDX = math.ceil(math.log2(D))
RANDK = {"name": "rand_k", "k": 2}
TOPK = {"name": "top_k", "k": 2}
RANDK_U = {"name": "rand_k", "k": 3, "scaled": False}


@pytest.fixture
def logreg():
    return LogisticRegression(*_data(), lam=0.1)


@pytest.fixture
def nonconvex():
    return NonconvexLogisticRegression(*_data(), lam=0.1)


def _cfg(rounds, tol=None, log_every=10, metric="auto"):
    return parse_config({"problem": {"name": "quadratic"}, "methods": ["gd"],
                         "stop": {"max_rounds": rounds, "tol": tol, "metric": metric}, "log_every": log_every})


def _run(problem, spec, rounds, tol=None, log_every=10, metric="auto"):
    trace = run_method(problem, spec, _cfg(rounds, tol, log_every, metric), progress=False)
    assert trace.status in ("finished",), trace.meta.get("message")
    return trace


def _build(problem, spec, seed=0):
    meter = Meter(problem.n)
    problem.attach(meter)
    return build_method(spec, problem, Channel(meter, problem.d), seed), meter


def _lockstep(problem, spec_a, spec_b, rounds=40):
    """Largest coordinate difference of the two methods' iterates over ``rounds`` rounds."""
    a, _ = _build(problem, spec_a)
    b, _ = _build(problem, spec_b)
    x0 = torch.zeros(problem.d, dtype=problem.dtype)
    a.init(x0.clone())
    b.init(x0.clone())
    diff = 0.0
    for _ in range(rounds):
        a.step()
        b.step()
        diff = max(diff, float((a.x - b.x).abs().max()))
    problem.attach(None)
    return diff, float(a.x.norm())


# ---- the (eta, omega) class -------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    (TOPK, (math.sqrt(1 - 2 / D), 0.0)),
    (RANDK, (0.0, D / 2 - 1)),
    (RANDK_U, (1 - 3 / D, 0.3 * 0.7)),
    ({"name": "bernoulli", "p": 0.3, "scaled": False}, (0.7, 0.3 * 0.7)),
    ({"name": "compose", "outer": "natural", "inner": {"name": "top_k", "k": 4}}, (math.sqrt(1 - 4 / D), 1 / 8)),
], ids=["top_k", "rand_k", "rand_k_unscaled", "bernoulli_unscaled", "natural_of_top_k"])
def test_eta_omega_values(spec, expected):
    eta, omega = eta_omega(make_compressor(spec, D))
    assert eta == pytest.approx(expected[0], rel=1e-12, abs=1e-15)
    assert omega == pytest.approx(expected[1], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("spec", [TOPK, RANDK, RANDK_U, {"name": "bernoulli", "p": 0.4, "scaled": False, "inner": TOPK},
                                  {"name": "compose", "outer": {"name": "qsgd", "s": 1}, "inner": {"name": "top_k", "k": 5}},
                                  {"name": "compose", "outer": "natural", "inner": RANDK_U}])
def test_eta_omega_bound_the_bias_and_variance(spec):
    """Monte Carlo: ||E C(x) - x|| <= eta ||x|| and E||C(x) - E C(x)||^2 <= omega ||x||^2 for random x."""
    c = make_compressor(spec, D)
    eta, omega = eta_omega(c)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(6, D, generator=g, dtype=torch.float64) * torch.logspace(0, 2, D, dtype=torch.float64)
    draws = torch.stack([c(X, g).values for _ in range(6000)])
    mean = draws.mean(0)
    var = (draws - mean).pow(2).sum(-1).mean(0)
    nx = X.norm(dim=1)
    mc = 4 * (var / draws.shape[0]).sqrt()  # Monte Carlo error of the mean
    assert ((mean - X).norm(dim=1) <= eta * nx * 1.02 + mc + 1e-12).all()
    assert (var <= omega * nx.pow(2) * 1.05 + 1e-12).all()


def test_sign_is_refused_by_ef_bv(logreg):
    with pytest.raises(ValueError, match="not in the"):
        _build(logreg, {"name": "ef_bv", "compressor": "sign"})


# ---- EF-BV ------------------------------------------------------------------------------------------

def test_ef_bv_with_diana_parameters_is_diana(logreg):
    diff, size = _lockstep(logreg, {"name": "ef_bv", "compressor": RANDK, "nu": 1.0, "stepsize": 0.05},
                           {"name": "diana", "compressor": RANDK, "stepsize": 0.05})
    assert diff == 0.0 and size > 0.1


@pytest.mark.parametrize("comp", [TOPK, RANDK_U], ids=["top_k", "rand_k_unscaled"])
def test_ef_bv_with_lambda_nu_one_is_ef21(logreg, comp):
    diff, size = _lockstep(logreg, {"name": "ef_bv", "compressor": comp, "lam": 1.0, "nu": 1.0, "stepsize": 0.05},
                           {"name": "ef21", "compressor": comp, "stepsize": 0.05, "init_full": False})
    assert diff == 0.0 and size > 0.1


def test_ef_bv_theory_parameters(logreg):
    m, _ = _build(logreg, {"name": "ef_bv", "compressor": RANDK})
    w = D / 2 - 1
    assert m.constants["lam"] == pytest.approx(1 / (1 + w)) and m.constants["nu"] == pytest.approx(1 / (1 + w / N))
    m, _ = _build(logreg, {"name": "ef_bv", "compressor": TOPK})
    assert m.constants["lam"] == 1.0 and m.constants["nu"] == 1.0
    # a random biased compressor: the stepsize grows with the number of workers (omega_av = omega / n)
    c = make_compressor({"name": "compose", "outer": {"name": "qsgd", "s": 1}, "inner": {"name": "top_k", "k": 5}}, D)
    eta, omega = eta_omega(c)
    steps = []
    for n in (1, 4, 16, 64):
        k = efbv_parameters(eta, omega, omega_average(c, n))
        steps.append(efbv_stepsize(1.0, 1.0, k["r"], k["r_av"]))
    assert all(a < b for a, b in zip(steps, steps[1:]))
    assert steps[-1] > 1.3 * steps[0]


def test_ef_bv_biased_random_compressor_converges_linearly(logreg):
    """Unscaled Bernoulli(0.5): biased (eta = 1/2) and random (omega = 1/4); theory defaults reach 1e-10."""
    t = _run(logreg, {"name": "ef_bv", "compressor": {"name": "bernoulli", "p": 0.5, "scaled": False}}, 3000, tol=1e-10)
    assert t.meta.get("reached_tol") and t.last("dist_sq") < 1e-8


# ---- DCGD-SHIFT -------------------------------------------------------------------------------------

def test_dcgd_shift_special_cases_are_dcgd_and_diana(logreg):
    assert _lockstep(logreg, {"name": "dcgd_shift", "shift": "zero", "compressor": RANDK},
                     {"name": "dcgd", "compressor": RANDK})[0] == 0.0
    assert _lockstep(logreg, {"name": "dcgd_shift", "shift": "diana", "compressor": RANDK},
                     {"name": "diana", "compressor": RANDK})[0] == 0.0
    a, _ = _build(logreg, {"name": "dcgd_shift", "shift": "diana", "compressor": RANDK})
    b, _ = _build(logreg, {"name": "diana", "compressor": RANDK})
    assert a.gamma == b.gamma


def test_optimal_shift_converges_where_dcgd_plateaus(logreg):
    star = _run(logreg, {"name": "dcgd_shift", "shift": "star", "compressor": RANDK}, 1500, tol=1e-11)
    gamma = star.meta["stepsize"]
    zero = _run(logreg, {"name": "dcgd_shift", "shift": "zero", "compressor": RANDK, "stepsize": gamma}, 1500)
    assert star.meta.get("reached_tol") and star.last("dist_sq") < 1e-9
    assert zero["f_gap"][len(zero) // 2:].min() > 1e-5  # the neighbourhood of DCGD


@pytest.mark.parametrize("spec", [{"shift": "rand_diana"}, {"shift": "ef21", "shift_compressor": {"name": "top_k", "k": 8}}],
                         ids=["rand_diana", "ef21"])
def test_learned_shifts_converge_linearly(spec):
    q = Quadratic.generate(N, D, L=1.0, mu=0.25, heterogeneity=0.3, seed=0)
    t = _run(q, {"name": "dcgd_shift", "compressor": {"name": "rand_k", "k": 5}, **spec}, 2000, tol=1e-20, metric="dist_sq")
    assert t.meta.get("reached_tol")


def test_rand_diana_bits(logreg):
    """Each round: the rand-k message of every client plus d floats from each client that refreshes."""
    m, meter = _build(logreg, {"name": "dcgd_shift", "shift": "rand_diana", "compressor": RANDK, "p": 0.3})
    m.init(torch.zeros(D, dtype=torch.float64))
    meter.close_round()
    refreshed = 0
    for _ in range(30):
        H_before = m.shifts.H.clone()
        m.step()
        usage = meter.close_round()
        fresh = (m.shifts.H != H_before).any(1)
        refreshed += int(fresh.sum())
        expected = 2 * (32 + IDX) + fresh.to(torch.float64) * 32 * D
        assert torch.equal(usage.bits_up, expected)
    assert 0 < refreshed < 30 * N
    logreg.attach(None)


def test_model_compression_needs_the_model_shift():
    """Shifted model compression (DIANA-type model shift) converges to x*; compressing the model itself
    (model_shift: zero) stalls."""
    q = Quadratic.generate(N, D, L=1.0, mu=0.25, heterogeneity=0.3, seed=0)
    spec = {"name": "dcgd_shift", "shift": "diana", "compressor": {"name": "rand_k", "k": 5}, "down_compressor": "natural"}
    t = _run(q, spec, 2500, tol=1e-18, metric="dist_sq")
    assert t.meta.get("reached_tol")
    assert t["bits_down"][-1] == t["round"][-1] * 9 * D  # natural compression: 9 bits a coordinate
    z = _run(q, {**spec, "model_shift": "zero"}, 1500, metric="dist_sq")
    assert z["dist_sq"][len(z) // 2:].min() > 1e-5


# ---- 3PC ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, comp, zeta", [("ef21", TOPK, 0.0), ("ef21", RANDK_U, 0.0), ("lag", None, 0.7),
                                              ("clag", TOPK, 0.7), ("clag", RANDK_U, 3.0)])
def test_three_point_compressor_inequality(name, comp, zeta):
    """E||C_{h,y}(x) - x||^2 <= (1 - A)||h - y||^2 + B||x - y||^2 for every (A, B) the mechanism lists."""
    mech = make_three_pc(name, make_compressor(comp, D) if comp else None, zeta)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(40, D, generator=g, dtype=torch.float64)
    H = X + torch.randn(40, D, generator=g, dtype=torch.float64) * torch.rand(40, 1, generator=g, dtype=torch.float64) * 3
    Y = X + torch.randn(40, D, generator=g, dtype=torch.float64) * torch.rand(40, 1, generator=g, dtype=torch.float64) * 3
    err = torch.stack([(H + mech(H, Y, X, g).values - X).pow(2).sum(1) for _ in range(3000)]).mean(0)
    hy, xy = (H - Y).pow(2).sum(1), (X - Y).pow(2).sum(1)
    pairs = mech.constants()
    assert pairs
    for A, B in pairs[:: max(1, len(pairs) // 25)]:
        assert (err <= ((1 - A) * hy + B * xy) * 1.03 + 1e-12).all(), (A, B)


def test_three_pc_ef21_mechanism_is_ef21(logreg):
    for comp in (TOPK, RANDK_U):
        assert _lockstep(logreg, {"name": "three_pc", "compressor": comp, "stepsize": 0.05},
                         {"name": "ef21", "compressor": comp, "stepsize": 0.05})[0] == 0.0
    a, _ = _build(logreg, {"name": "three_pc", "compressor": TOPK})
    b, _ = _build(logreg, {"name": "ef21", "compressor": TOPK})
    assert a.gamma >= b.gamma * (1 - 1e-12)  # the best (A, B) pair is at least EF21's choice


def test_clag_special_cases(logreg):
    assert _lockstep(logreg, {"name": "three_pc", "mechanism": "clag", "zeta": 0.0, "compressor": TOPK, "stepsize": 0.05},
                     {"name": "three_pc", "compressor": TOPK, "stepsize": 0.05})[0] == 0.0
    assert _lockstep(logreg, {"name": "three_pc", "mechanism": "clag", "zeta": 2.0, "stepsize": 0.05},
                     {"name": "three_pc", "mechanism": "lag", "zeta": 2.0, "stepsize": 0.05})[0] == 0.0


def test_lag_converges_with_fewer_messages_than_gd(logreg):
    lag = _run(logreg, {"name": "three_pc", "mechanism": "lag", "zeta": 4.0}, 3000, tol=1e-11, log_every=1)
    assert lag.meta.get("reached_tol")
    rounds = lag["round"][-1]
    full = D * 32 * (rounds + 1)  # what sending every round would cost (g_i^0 included)
    assert lag["bits_up"][-1] < 0.8 * full
    assert lag.meta["stepsize"] == pytest.approx(1 / (logreg.L + logreg.L_tilde * math.sqrt(2 * 4.0)))


def test_feedback_on_client_subsets():
    """Only the sending clients' estimates and previous inputs change; the server adds their changes
    with the given weight."""
    mech = make_three_pc("clag", make_compressor(TOPK, D), 0.5)
    g = torch.Generator().manual_seed(3)
    H0 = torch.randn(N, D, generator=g, dtype=torch.float64)
    ch = Channel(Meter(N), D)
    fb = Feedback(mech)
    h0 = fb.start(ch.dense(H0), ch).clone()
    X = torch.randn(2, D, generator=g, dtype=torch.float64)
    S = torch.tensor([1, 3])
    h = fb.send(X, ch, generator=g, clients=S, weights=1.0 / N)
    assert torch.equal(fb.H[[0, 2, 4]], H0[[0, 2, 4]])
    assert torch.equal(fb.Y[[1, 3]], X) and torch.equal(fb.Y[[0, 2, 4]], H0[[0, 2, 4]])
    torch.testing.assert_close(h, h0 + (fb.H[S] - H0[S]).sum(0) / N, rtol=0, atol=1e-15)
    torch.testing.assert_close(h, fb.H.mean(0), rtol=0, atol=1e-15)
    assert three_pc_stepsize(mech, 1.0, 1.0) > 0


# ---- DASHA family ---------------------------------------------------------------------------------------

def test_dasha_reaches_1e_10_with_theory_parameters(nonconvex):
    t = _run(nonconvex, {"name": "dasha", "compressor": RANDK}, 2000, tol=1e-10)
    assert t.meta.get("reached_tol")
    w = D / 2 - 1
    assert t.meta["stepsize"] == pytest.approx(1 / (nonconvex.L + math.sqrt(16 * w * (2 * w + 1) / N) * nonconvex.L_tilde))
    # every round after the first: one local gradient and one rand-k message per client
    assert t["grad_evals"][-1] == t["round"][-1] + 1
    assert t["bits_up"][-1] == D * 32 + t["round"][-1] * 2 * (32 + IDX)


def test_dasha_pp_with_full_participation_is_dasha(nonconvex):
    diff, size = _lockstep(nonconvex, {"name": "dasha_pp", "compressor": RANDK}, {"name": "dasha", "compressor": RANDK}, 200)
    assert diff < 1e-12 and size > 0.1
    a, _ = _build(nonconvex, {"name": "dasha_pp", "compressor": RANDK})
    b, _ = _build(nonconvex, {"name": "dasha", "compressor": RANDK})
    assert a.gamma == b.gamma and a.a == b.a and a.b == 1.0


@pytest.mark.parametrize("sampler", [{"name": "nice", "tau": 2}, {"name": "independent", "p": 0.5}], ids=["nice", "independent"])
def test_dasha_pp_partial_participation_converges(nonconvex, sampler):
    t = _run(nonconvex, {"name": "dasha_pp", "compressor": RANDK, "sampler": sampler}, 6000, tol=1e-10)
    assert t.meta.get("reached_tol")


def test_dasha_pp_parameters_and_costs(nonconvex):
    assert participation(Nice(N, 2), N) == (0.4, pytest.approx(2 / 20))
    assert participation(Independent(N, 0.3), N) == (0.3, pytest.approx(0.09))
    m, meter = _build(nonconvex, {"name": "dasha_pp", "compressor": RANDK, "sampler": {"name": "nice", "tau": 2}})
    w = D / 2 - 1
    assert m.a == pytest.approx(0.4 / (2 * w + 1)) and m.b == pytest.approx(0.4 / 1.6)
    m.init(torch.zeros(D, dtype=torch.float64))
    meter.close_round()
    prev = set(range(N))
    for _ in range(25):
        m.step()
        usage = meter.close_round()
        S = set(torch.nonzero(usage.bits_up).flatten().tolist())
        assert len(S) == 2
        for i in range(N):
            stale = i in S and i not in prev
            assert usage.oracle["grad"][i] == (2.0 if stale else 1.0 if i in S else 0.0)
            assert usage.bits_down[i] == (64 * D if stale else 32 * D if i in S else 0.0)
            assert usage.bits_up[i] == (2 * (32 + IDX) if i in S else 0.0)
        prev = S
    nonconvex.attach(None)


def _lockstep_costs(problem, spec_a, spec_b, rounds):
    """Largest iterate difference over ``rounds`` rounds, and the per-client oracle calls and bits of
    the two methods' meters (round 0 included)."""
    (a, ma), (b, mb) = _build(problem, spec_a), _build(problem, spec_b)
    x0 = torch.zeros(problem.d, dtype=problem.dtype)
    diff = 0.0
    for k in range(rounds + 1):
        for method, meter in ((a, ma), (b, mb)):
            problem.attach(meter)
            method.init(x0.clone()) if k == 0 else method.step()
            meter.close_round()
        diff = max(diff, float((a.x - b.x).abs().max()))
    problem.attach(None)
    costs = [(m.oracle["grad"], m.bits_up, m.bits_down) for m in (ma, mb)]
    return diff, float(a.x.norm()), costs, (a, b)


@pytest.mark.parametrize("variant, base, extra", [
    ("dasha_pp_page", "dasha_page", {"batch_size": 2}),
    ("dasha_pp_mvr", "dasha_mvr", {"batch_size": 2}),
    ("dasha_pp_mvr", "dasha_mvr", {"batch_size": 2, "init_batch_size": 4, "b": 0.3})], ids=["page", "mvr", "mvr-init-minibatch"])
def test_dasha_pp_estimators_with_full_participation_are_dasha(nonconvex, variant, base, extra):
    """Full participation (p_a = 1): DASHA-PP-PAGE is DASHA-PAGE (b / p = 1) and DASHA-PP-MVR is
    DASHA-MVR, iterate for iterate with the theory defaults, and they cost the same."""
    diff, size, costs, (a, b) = _lockstep_costs(nonconvex, {"name": variant, "compressor": RANDK, **extra},
                                                {"name": base, "compressor": RANDK, **extra}, 300)
    assert diff < 1e-12 * size and size > 1e-2  # the iterates moved (MVR's theory stepsize is small)
    assert a.gamma == b.gamma and a.a == b.a
    if variant == "dasha_pp_page":
        assert a.p == b.p and a.b == a.p
    else:
        assert a.b == b.b
    (ga, ua, da), (gb, ub, db) = costs
    assert torch.allclose(ga, gb, rtol=1e-12) and torch.equal(ua, ub) and torch.equal(da, db)
    assert bool((ga > 1).all()) and bool((ua > 300 * 2 * 32).all())


@pytest.mark.parametrize("sampler", [{"name": "nice", "tau": 2}, {"name": "independent", "p": 0.5}], ids=["nice", "independent"])
def test_dasha_pp_page_reaches_1e_10_with_theory_parameters(nonconvex, sampler):
    """Finite sums: the PAGE estimator has no noise floor, DASHA-PP-PAGE converges to 1e-10 with a
    fraction of the full local gradients per round."""
    t = _run(nonconvex, {"name": "dasha_pp_page", "compressor": RANDK, "sampler": sampler, "batch_size": 5}, 10000,
             tol=1e-10)
    assert t.meta.get("reached_tol")
    p_a = participation(Nice(N, 2) if sampler["name"] == "nice" else Independent(N, 0.5), N)[0]
    # per round at most p_a (2 gradients in full rounds (prob. p = 5/25), 2 x 5 of 20 samples otherwise) per client
    assert t["grad_evals"][-1] < 1 + t["round"][-1] * p_a * (0.2 * 2 + 0.8 * 0.5) * 1.15


def test_dasha_pp_page_parameters_and_costs(nonconvex):
    """a = p_a / (2 omega + 1), b = p p_a / (2 - p_a); only the tau sampled clients compute and send:
    full rounds 1 gradient (2 for a client whose grad f_i(x) is not known from the previous round),
    minibatch rounds 2 B / m; x goes down again to the clients that missed the previous round."""
    B = 5
    m, meter = _build(nonconvex, {"name": "dasha_pp_page", "compressor": RANDK, "sampler": {"name": "nice", "tau": 2},
                                  "batch_size": B})
    w, p = D / 2 - 1, B / (M + B)
    assert m.p == pytest.approx(p) and m.a == pytest.approx(0.4 / (2 * w + 1)) and m.b == pytest.approx(p * 0.4 / 1.6)
    Lm2 = float((nonconvex.L_samples.pow(2).sum(1) / M).max())
    s = (48 * w * (2 * w + 1) + 16 * (w + 1) * (1 - (2 / 20) / 0.4)) / (N * 0.16) * (nonconvex.L_tilde ** 2 + (1 - p) * Lm2 / B)
    assert m.gamma == pytest.approx(1 / (nonconvex.L + math.sqrt(s + 2 * (1 - p) * Lm2 / (p * N * B) / 0.16)))
    m.init(torch.zeros(D, dtype=torch.float64))
    meter.close_round()
    prev, fulls, known = set(range(N)), 0, set(range(N))
    for _ in range(200):
        m.step()
        usage = meter.close_round()
        S = set(torch.nonzero(usage.bits_up).flatten().tolist())
        assert len(S) == 2
        fulls += m.last_full
        for i in range(N):
            stale = i in S and i not in prev
            if i not in S:
                want = 0.0
            elif m.last_full:
                want = 1.0 if i in known else 2.0
            else:
                want = 2 * B / M
            assert usage.oracle["grad"][i] == pytest.approx(want)
            assert usage.bits_down[i] == (64 * D if stale else 32 * D if i in S else 0.0)
            assert usage.bits_up[i] == (2 * (32 + IDX) if i in S else 0.0)
        known = S if m.last_full else set()
        prev = S
    assert 20 <= fulls <= 70  # p = 0.2 of 200 rounds
    nonconvex.attach(None)


def test_dasha_pp_mvr_estimator_error_matches_theory(nonconvex):
    """MVR under partial participation: with e_i = h_i - grad f_i(x), a client takes part with
    probability p_a and then e_i+ = (1 - b / p_a) e_i + (b / p_a) (noise of one minibatch), so
    E||e_i||^2 settles at b sigma_i^2 / (B (2 p_a - b)) (small steps). Checked for three b, with the
    measured one-sample variance sigma_i^2 at the iterates; the noise floor of ||grad f||^2 falls with b."""
    p_a, B = 0.4, 1

    def variance(x):  # mean over clients of the one-sample gradient variance at x
        X = x.reshape(1, -1).expand(N, D)
        per = nonconvex._dphi(torch.bmm(nonconvex.A, X.unsqueeze(-1)).squeeze(-1), nonconvex.b).unsqueeze(-1) * nonconvex.A
        mean = (nonconvex.w.unsqueeze(-1) * per).sum(1, keepdim=True)
        return float((nonconvex.w * (per - mean).pow(2).sum(-1)).sum(1).mean())

    floor = {}
    for b in (0.25, 0.05, 0.01):
        m, meter = _build(nonconvex, {"name": "dasha_pp_mvr", "compressor": "identity", "b": b, "stepsize": 0.02,
                                      "sampler": {"name": "nice", "tau": 2}})
        m.init(torch.zeros(D, dtype=torch.float64))
        meter.close_round()
        err, pred, g = [], [], []
        for k in range(3000):
            m.step()
            usage = meter.close_round()
            S = torch.nonzero(usage.bits_up).flatten()
            assert torch.equal(usage.oracle["grad"][S], torch.full((2,), 2 * B / M, dtype=torch.float64))
            assert int((usage.oracle["grad"] > 0).sum()) == 2
            if k >= 1000 and k % 5 == 0:
                err.append(float((m.H - nonconvex._grads(m.x.expand(N, D), None)).pow(2).sum(1).mean()))
                pred.append(variance(m.x) * b / (B * (2 * p_a - b)))
                g.append(float(nonconvex.full_grad(m.x).pow(2).sum()))
        assert 0.8 < np.mean(err) / np.mean(pred) < 1.25, (b, np.mean(err), np.mean(pred))
        floor[b] = np.median(g)
        nonconvex.attach(None)
    assert floor[0.01] < 0.5 * floor[0.25]
    m, _ = _build(nonconvex, {"name": "dasha_pp_mvr", "compressor": RANDK, "sampler": {"name": "nice", "tau": 2}})
    assert m.b <= p_a / (2 - p_a) and m.a == pytest.approx(p_a / (2 * (D / 2 - 1) + 1))
    nonconvex.attach(None)


def test_dasha_page_with_p_one_is_dasha_and_converges(nonconvex):
    assert _lockstep(nonconvex, {"name": "dasha_page", "compressor": RANDK, "p": 1.0, "stepsize": 0.04},
                     {"name": "dasha", "compressor": RANDK, "stepsize": 0.04}, 100)[0] == 0.0
    t = _run(nonconvex, {"name": "dasha_page", "compressor": RANDK, "batch_size": 5}, 4000, tol=1e-10)
    assert t.meta.get("reached_tol")
    assert t["grad_evals"][-1] < 0.7 * (t["round"][-1] + 1)  # most rounds use 2 x 5 of 20 samples


def test_dasha_mvr_momentum_reduces_the_estimator_error(nonconvex):
    """MVR: E||h_i - grad f_i(x)||^2 settles near b sigma^2 / (2B) (b = 1: the plain minibatch
    gradient, error sigma^2 / B), and the noise floor of ||grad f||^2 falls with b."""
    err, floor = {}, {}
    for b in (1.0, 0.05, 0.01):
        m, _ = _build(nonconvex, {"name": "dasha_mvr", "compressor": "identity", "b": b, "stepsize": 0.02})
        m.init(torch.zeros(D, dtype=torch.float64))
        e, g = [], []
        for k in range(1500):
            m.step()
            if k >= 500 and k % 5 == 0:
                exact = nonconvex.full_grad(m.x)
                e.append(float((m.H - nonconvex._grads(m.x.expand(N, D), None)).pow(2).sum(1).mean()))
                g.append(float(exact.pow(2).sum()))
        err[b], floor[b] = np.mean(e), np.median(g)
        nonconvex.attach(None)
    assert err[0.05] < 0.1 * err[1.0] and err[0.01] < 0.3 * err[0.05]
    assert floor[0.01] < 0.6 * floor[1.0]


def test_vr_marina_converges_and_counts(nonconvex):
    t = _run(nonconvex, {"name": "vr_marina", "compressor": RANDK}, 3000, tol=1e-10, log_every=1)
    assert t.meta.get("reached_tol")
    m, meter = _build(nonconvex, {"name": "vr_marina", "compressor": RANDK, "small_batch_size": 2})
    m.init(torch.zeros(D, dtype=torch.float64))
    meter.close_round()
    seen = set()
    for _ in range(60):
        m.step()
        u = meter.close_round()
        seen.add(m.last_full)
        if m.last_full:
            assert (u.bits_up == 32 * D).all() and (u.oracle["grad"] == 1.0).all()
        else:
            assert (u.bits_up == 2 * (32 + IDX)).all() and torch.allclose(u.oracle["grad"], torch.full((N,), 4 / M, dtype=torch.float64))
    assert seen == {True, False}
    nonconvex.attach(None)


# ---- recipes (fast mode) ---------------------------------------------------------------------------

@pytest.mark.parametrize("rid", ["C2", "C4"])
def test_recipe_fast_passes(rid, tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe(rid, tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert all(p.exists() for p in outcome.figures) and outcome.figures


@pytest.mark.slow
def test_recipe_c1_fast_passes(tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe("C1", tmp_path, fast=True)
    assert outcome.passed, outcome.measured
