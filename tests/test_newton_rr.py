"""Newton-3PC / FedNL, RR with compression (Q-RR, DIANA-RR, NASTYA, FedCRR) and PAGE with client and
data sampling, against what their theory predicts.

Small seeded logistic regressions (5-10 clients, d <= 12): exact reductions (identity compressor
-> Newton's method / GD / the uncompressed method), condition-number-independent local rates,
Bernoulli aggregation's bits and Hessian counts, the size of the RR neighbourhoods, the
unbiasedness and variance bound of the sampled PAGE estimator, and one smoke run of each recipe.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optsim.channel import Channel
from optsim.compress import make_compressor
from optsim.experiment import parse_config, run_method
from optsim.meter import Meter
from optsim.methods import build_method
from optsim.compress.matrix import SymPacking, packed_dim
from optsim.methods.compression.sampling_page import page_sampling_constant
from optsim.problems import Quadratic
from optsim.reproduce.newton_rr import a9a_like, heterogeneous_logreg, illconditioned_logreg
from optsim.sampling import make_sampler

FB = 32


def _cfg(rounds, tol=None, log_every=1, metric="auto"):
    stop = {"max_rounds": rounds, "metric": metric, **({"tol": tol} if tol else {})}
    return parse_config({"problem": {"name": "quadratic"}, "methods": ["gd"], "stop": stop, "log_every": log_every})


def _build(problem, spec, seed=0):
    meter = Meter(problem.n)
    problem.attach(meter)
    return build_method(spec, problem, Channel(meter, problem.d, FB), seed=seed), meter


def _iterates(problem, spec, rounds, x0=None, seed=0):
    method, _ = _build(problem, spec, seed)
    method.init(torch.zeros(problem.d, dtype=torch.float64) if x0 is None else x0.clone())
    xs = [method.x.clone()]
    for _ in range(rounds):
        method.step()
        xs.append(method.x.clone())
    problem.attach(None)
    return torch.stack(xs)


def _near_optimum(problem, decrement=0.1, seed=0):
    """x* + H*^{-1/2} u with ||u|| = decrement: the same local neighbourhood for every condition number."""
    ev, V = torch.linalg.eigh(problem.full_hessian(problem.x_star))
    u = torch.randn(problem.d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return problem.x_star + V @ (decrement * u / u.norm() / ev.sqrt())


@pytest.fixture(scope="module")
def small():
    return heterogeneous_logreg(n=5, m=10, d=5, lam=0.5)


# ---- Hessian packing and matrix compressors --------------------------------------------------------

def test_packing_is_an_isometry_and_matrix_compressors_contract(gen):
    d = 6
    pk = SymPacking(d)
    B = torch.randn(20, d, d, generator=gen, dtype=torch.float64)
    H = B + B.transpose(1, 2)
    V = pk.pack(H)
    assert V.shape == (20, packed_dim(d))
    assert torch.allclose(V.norm(dim=1), torch.linalg.matrix_norm(H))  # ||pack(H)||_2 = ||H||_F
    assert torch.allclose(pk.unpack(V), H)
    D = packed_dim(d)
    for spec in ({"name": "rank_r", "r": 2}, {"name": "threshold", "lam": 0.3}, {"name": "top_k", "k": 5}):
        c = make_compressor(spec, D)
        err = (c(V, gen).values - V).pow(2).sum(1)
        assert (err <= (1 - c.alpha) * V.pow(2).sum(1) + 1e-9).all(), spec
    # rank_r keeps exactly the r largest |eigenvalues|; full rank is exact
    out = pk.unpack(make_compressor({"name": "rank_r", "r": 2}, D)(V).values)
    ev_in = torch.linalg.eigvalsh(H).abs().sort(dim=1, descending=True).values
    ev_out = torch.linalg.eigvalsh(out).abs().sort(dim=1, descending=True).values
    assert torch.allclose(ev_out[:, :2], ev_in[:, :2]) and torch.allclose(ev_out[:, 2:], torch.zeros(20, d - 2, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(make_compressor({"name": "rank_r", "r": d}, D)(V).values, V)
    # adaptive thresholding: bits count the kept entries, the largest entry is always kept
    msg = make_compressor({"name": "threshold", "lam": 1.0}, D)(V)
    assert torch.equal(msg.bits, torch.full((20,), float(FB + math.ceil(math.log2(D))), dtype=torch.float64))
    with pytest.raises(ValueError, match="packed size"):
        make_compressor({"name": "rank_r", "r": 1}, 7)


# ---- Newton-3PC / FedNL ----------------------------------------------------------------------------

def test_exact_hessians_give_newtons_method():
    """Identity compressor: Newton-3PC, FedNL (Option 1) and Newton-3PC-PP (tau = n) are Newton's
    method x+ = x - H(x)^{-1} grad f(x) (H >= lambda I = mu I, so the projection is inactive)."""
    p = illconditioned_logreg(1e-3)
    x = torch.zeros(p.d, dtype=torch.float64)
    newton = [x]
    for _ in range(4):
        x = x - torch.linalg.solve(p.full_hessian(x), p.full_grad(x))
        newton.append(x)
    newton = torch.stack(newton)
    a = _iterates(p, {"name": "newton_3pc"}, 4)
    assert torch.allclose(a, newton, atol=1e-10, rtol=1e-9)
    b = _iterates(p, {"name": "newton_3pc_pp"}, 4)
    assert torch.allclose(b, newton, atol=1e-10, rtol=1e-9)
    # FedNL folds the Hessian learned at x^k in one round later: with H^0 = grad^2 f(x^0) it is
    # Newton's method with the Hessian of the previous iterate
    c = _iterates(p, {"name": "fednl"}, 3)
    y = [torch.zeros(p.d, dtype=torch.float64)]
    y.append(y[0] - torch.linalg.solve(p.full_hessian(y[0]), p.full_grad(y[0])))
    for k in range(1, 3):
        y.append(y[k] - torch.linalg.solve(p.full_hessian(y[k - 1]), p.full_grad(y[k])))
    assert torch.allclose(c, torch.stack(y), atol=1e-10, rtol=1e-9)
    # quadratic convergence of the exact method: ||x_{k+1} - x*|| <= C ||x_k - x*||^2
    e = (newton - p.x_star).norm(dim=1)
    assert e[-1] < 1e-10 and e[3] <= 10 * e[2] ** 2


def test_bidirectional_reduces_to_newton_3pc():
    """C_M = identity and gradient probability 1: Newton-3PC-BC's iterates are Newton-3PC's (same
    top-k compressor stream)."""
    p = illconditioned_logreg(1e-3)
    topk = {"name": "top_k", "k": 8}
    a = _iterates(p, {"name": "newton_3pc", "compressor": topk}, 8)
    b = _iterates(p, {"name": "newton_3pc_bc", "compressor": topk}, 8)
    assert torch.allclose(a, b, atol=1e-12, rtol=1e-10)


def test_local_rate_does_not_depend_on_the_condition_number():
    """From the same Newton-decrement neighbourhood, Newton-3PC (top-k Hessians) and FedNL (rank-1)
    reach f - f* <= 1e-12 in a handful of rounds for condition numbers from ~20 to ~1e4,
    while GD with 1/L is still far after 1000 rounds on the ill-conditioned problem."""
    rounds = {}
    for lam in (1e-2, 1e-6):
        p = illconditioned_logreg(lam)
        x0 = _near_optimum(p)
        for spec in ({"name": "newton_3pc", "compressor": {"name": "top_k", "k": p.d}},
                     {"name": "fednl", "compressor": {"name": "rank_r", "r": 1}},
                     {"name": "newton_3pc", "mechanism": "cbag", "compressor": {"name": "top_k", "k": p.d}}):
            t = run_method(p, spec, _cfg(60, 1e-12), progress=False, x0=x0)
            assert t.meta.get("reached_tol"), (lam, spec)
            rounds[(lam, spec["name"], spec.get("mechanism"))] = t.last("round")
    assert max(rounds.values()) <= 10
    for key in {k[1:] for k in rounds}:
        assert rounds[(1e-6,) + key] <= rounds[(1e-2,) + key] + 4
    p = illconditioned_logreg(1e-6)
    g = run_method(p, {"name": "gd"}, _cfg(1000, log_every=100), progress=False, x0=_near_optimum(p))
    assert g.last("f_gap") > 1e-6


def test_bernoulli_aggregation_computes_and_sends_hessians_only_when_its_coin_says_so():
    p = illconditioned_logreg(1e-3)
    d, D = p.d, packed_dim(p.d)
    method, meter = _build(p, {"name": "newton_3pc", "mechanism": "bag", "prob": 0.3})
    method.init(torch.zeros(d, dtype=torch.float64))
    u0 = meter.close_round()
    assert torch.equal(u0.bits_up, torch.full((p.n,), float((d + D) * FB), dtype=torch.float64))
    sends = []
    for _ in range(40):
        method.step()
        u = meter.close_round()
        send = u.oracle["hess"] > 0
        assert set(u.oracle["hess"].tolist()) <= {0.0, 1.0}
        # every round: the gradient (d floats); a client whose coin says skip computes no Hessian and sends none
        assert torch.equal(u.bits_up, d * FB + send.to(torch.float64) * D * FB)
        sends.append(send)
    frac = torch.stack(sends).double().mean()
    assert 0.15 < frac < 0.45
    p.attach(None)
    # bidirectional with Bernoulli gradients: a client that skips both sends nothing at all in that round
    method, meter = _build(p, {"name": "newton_3pc_bc", "mechanism": "bag", "prob": 0.3, "grad_prob": 0.4,
                               "down_compressor": {"name": "top_k", "k": 3}})
    method.init(torch.zeros(d, dtype=torch.float64))
    meter.close_round()
    silent = 0
    for _ in range(40):
        method.step()
        u = meter.close_round()
        quiet = u.oracle["hess"] == 0
        if not method.last_grad:
            assert torch.equal(u.bits_up[quiet], torch.zeros(int(quiet.sum()), dtype=torch.float64))
            assert (u.oracle["grad"] == 0).all()
            silent += int(quiet.sum())
        assert torch.equal(u.bits_down, torch.full((p.n,), 3.0 * (FB + math.ceil(math.log2(d))), dtype=torch.float64))
    assert silent > 0
    p.attach(None)


def test_newton_variants_need_fewer_bits_than_diana_to_1e_10():
    p = a9a_like(n=8, m=40, d=12, lam=1e-2)
    topk = {"name": "top_k", "k": p.d}
    need = {}
    for spec in ({"name": "newton_3pc", "compressor": topk},
                 {"name": "newton_3pc", "mechanism": "cbag", "prob": 0.5, "compressor": topk},
                 {"name": "newton_3pc", "mechanism": "lag", "zeta": 2.0},
                 {"name": "fednl", "compressor": {"name": "rank_r", "r": 1}}):
        t = run_method(p, spec, _cfg(100, 1e-10), progress=False)
        assert t.meta.get("reached_tol"), spec
        need[str(spec)] = t.last("bits_up")
    diana = run_method(p, {"name": "diana", "compressor": {"name": "rand_k", "k": 2}}, _cfg(4000, 1e-10, log_every=20),
                       progress=False)
    diana_bits = diana.last("bits_up")  # bits to 1e-10, or a lower bound if not reached in 4000 rounds
    assert max(need.values()) < diana_bits


def test_lag_sends_fewer_hessians_than_dense_updates_and_partial_participation_converges():
    p = a9a_like(n=8, m=40, d=12, lam=1e-2)
    dense = run_method(p, {"name": "newton_3pc"}, _cfg(100, 1e-12), progress=False)
    lag = run_method(p, {"name": "newton_3pc", "mechanism": "lag", "zeta": 4.0}, _cfg(100, 1e-12), progress=False)
    assert dense.meta.get("reached_tol") and lag.meta.get("reached_tol")
    assert lag.last("bits_up") < dense.last("bits_up")
    pp = run_method(p, {"name": "newton_3pc_pp", "compressor": {"name": "top_k", "k": p.d},
                        "sampler": {"name": "nice", "tau": 3}}, _cfg(200, 1e-12), progress=False)
    assert pp.meta.get("reached_tol")
    # partial participation: only tau clients receive the model each round
    assert pp["bits_down"][-1] == pytest.approx(pp.last("round") * 3 / p.n * p.d * FB)
    with pytest.raises(ValueError, match="cbag"):
        build_method({"name": "newton_3pc", "mechanism": "bag", "compressor": {"name": "top_k", "k": 3}}, p,
                     Channel(Meter(p.n), p.d), 0)


# ---- RR with compression ---------------------------------------------------------------------------

def test_full_batch_rr_methods_are_gradient_descent(small):
    """batch_size = m_i with the identity compressor: one local step is a full gradient step, so
    Q-RR and FedCRR are GD with stepsize gamma, Q-NASTYA is GD with the server stepsize eta."""
    m = int(small.m[0])
    gd = _iterates(small, {"name": "gd", "stepsize": 0.05}, 15)
    assert torch.allclose(_iterates(small, {"name": "q_rr", "batch_size": m, "stepsize": 0.05}, 15), gd, atol=1e-13)
    assert torch.allclose(_iterates(small, {"name": "fedcrr", "batch_size": m, "stepsize": 0.05}, 15), gd, atol=1e-13)
    nastya = _iterates(small, {"name": "q_nastya", "batch_size": m, "stepsize": 0.01, "server_stepsize": 0.05}, 15)
    assert torch.allclose(nastya, gd, atol=1e-13)


def test_uncompressed_fedcrr_and_nastya_are_fedrr(small):
    """The identity compressor turns FedCRR into FedRR (Mishchenko et al. 2021, the project's
    ``fedrr``) iterate by iterate, and Q-NASTYA with server stepsize eta = gamma m too."""
    m = int(small.m[0])
    fedrr = _iterates(small, {"name": "fedrr", "stepsize": 0.01}, 6)
    assert torch.allclose(_iterates(small, {"name": "fedcrr", "stepsize": 0.01}, 6), fedrr, atol=1e-14)
    nastya = _iterates(small, {"name": "q_nastya", "stepsize": 0.01, "server_stepsize": 0.01 * m}, 6)
    assert torch.allclose(nastya, fedrr, atol=1e-14)
    # with shifts and nothing compressed, the VR variant is FedRR as well (h + (u - h) = u)
    assert torch.allclose(_iterates(small, {"name": "fedcrr_vr", "stepsize": 0.01}, 6), fedrr, atol=1e-13)


def test_rr_visits_every_sample_once_per_epoch(small):
    m = int(small.m[0])
    method, meter = _build(small, {"name": "diana_rr", "compressor": {"name": "rand_k", "k": 2}})
    method.init(torch.zeros(small.d, dtype=torch.float64))
    for _ in range(m):
        method.step()
        meter.close_round()
    assert torch.allclose(meter.oracle["grad"], torch.ones(small.n, dtype=torch.float64))  # one local epoch each
    assert (method.h.abs().sum(-1) > 0).all()  # every per-sample shift was updated exactly in this epoch
    small.attach(None)


def test_rr_neighbourhood_shrinks_faster_than_sgds(small):
    """Without compression (DIANA-RR with the identity is distributed RR) the error floor at epoch
    ends shrinks at least quadratically in gamma, SGD's (with replacement) only linearly; Q-RR and
    DIANA-RR coincide when nothing is compressed."""
    m = int(small.m[0])
    floors = {}
    for name in ("diana_rr", "q_rr", "q_sgd"):
        for g in (0.02, 0.01):
            t = run_method(small, {"name": name, "stepsize": g}, _cfg(60 * m, log_every=m), progress=False,
                           x0=small.x_star.clone())
            floors[(name, g)] = float(np.mean(t["f_gap"][len(t) // 2:]))
    assert floors[("diana_rr", 0.02)] == pytest.approx(floors[("q_rr", 0.02)], rel=1e-9)
    assert floors[("diana_rr", 0.02)] / floors[("diana_rr", 0.01)] > 3.5
    assert 1.4 < floors[("q_sgd", 0.02)] / floors[("q_sgd", 0.01)] < 2.9


def test_diana_rr_removes_compression_noise_that_q_rr_keeps(small):
    m = int(small.m[0])
    comp = {"name": "rand_k", "k": 1}
    tails = {}
    for name in ("diana_rr", "q_rr", "diana_sgd"):
        t = run_method(small, {"name": name, "compressor": comp, "stepsize": 0.01}, _cfg(100 * m, log_every=m),
                       progress=False)
        tails[name] = float(np.mean(t["f_gap"][len(t) // 2:]))
    assert tails["diana_rr"] < 0.01 * tails["q_rr"] and tails["diana_rr"] < 0.01 * tails["diana_sgd"]


def test_fedcrr_vr_floor_does_not_grow_with_omega(small):
    floors = {}
    for k in (small.d, 1):
        for name in ("fedcrr", "fedcrr_vr"):
            t = run_method(small, {"name": name, "stepsize": 0.005, "compressor": {"name": "rand_k", "k": k}},
                           _cfg(300, log_every=5), progress=False)
            floors[(name, k)] = float(np.mean(t["f_gap"][len(t) // 2:]))
    assert floors[("fedcrr", 1)] > 50 * floors[("fedcrr", small.d)]
    assert floors[("fedcrr_vr", 1)] < 3 * floors[("fedcrr_vr", small.d)]


def test_rr_theory_stepsizes_follow_the_formulas(small):
    L_max, n = small.L_sample_max, small.n
    rk = {"name": "rand_k", "k": 1}
    omega = small.d - 1.0
    q, _ = _build(small, {"name": "q_rr", "compressor": rk})
    assert q.gamma == pytest.approx(1 / ((1 + 2 * omega / n) * L_max))
    dr, _ = _build(small, {"name": "diana_rr", "compressor": rk})
    alpha, m = 1 / (1 + omega), int(small.m.max())
    assert dr.gamma == pytest.approx(min(1 / ((1 + 6 * omega / n) * L_max), alpha / (2 * m * small.mu)))
    na, _ = _build(small, {"name": "q_nastya", "compressor": rk})
    assert na.gamma == pytest.approx(1 / (16 * m * L_max))
    assert na.server_stepsize == pytest.approx(1 / (16 * L_max * (1 + omega / n)))
    small.attach(None)
    with pytest.raises(ValueError, match="per-sample"):
        qp = Quadratic.generate(4, 3)
        build_method({"name": "q_rr"}, qp, Channel(Meter(4), 3), 0)


# ---- PAGE with client and data sampling ---------------------------------------------------------------

@pytest.fixture(scope="module")
def hetero():
    return heterogeneous_logreg(n=6, m=12, d=5, lam=0.1, nonconvex=True, sample_spread=1.0,
                                client_scales=[1 + 2 * (i % 3) for i in range(6)])


def test_page_with_exact_sampling_is_gd(hetero):
    m = int(hetero.m[0])
    gd = _iterates(hetero, {"name": "gd", "stepsize": 0.05}, 12)
    page = _iterates(hetero, {"name": "page_as", "batch_size": m, "data_sampling": "nice", "stepsize": 0.05, "p": 0.3}, 12)
    assert torch.allclose(page, gd, atol=1e-12)


@pytest.mark.parametrize("clients,data", [("nice", "nice"), ("importance", "importance"), ("independent", "uniform")])
def test_sampled_estimator_is_unbiased_within_its_variance_bound(hetero, clients, data):
    sampler = {"name": clients, "tau": 3} if clients != "independent" else {"name": "independent", "p": 0.5}
    method, _ = _build(hetero, {"name": "page_as", "sampler": sampler, "data_sampling": data, "batch_size": 2})
    x_old = torch.zeros(hetero.d, dtype=torch.float64)
    method.init(x_old)
    x_new = 0.3 * torch.ones(hetero.d, dtype=torch.float64)
    true = hetero.full_grad(x_new) - hetero.full_grad(x_old)
    draws = torch.stack([method.estimate(x_new, x_old) for _ in range(2000)])
    err = draws - true
    mse = float(err.pow(2).sum(1).mean())
    bound = method.sampling_constant() ** 2 * float((x_new - x_old).pow(2).sum())
    assert mse <= bound
    # the mean of 2000 draws is within 5 standard errors of the truth in every coordinate
    se = err.std(0) / math.sqrt(draws.shape[0])
    assert (err.mean(0).abs() <= 5 * se + 1e-12).all()
    hetero.attach(None)


def test_importance_sampling_has_a_smaller_constant_and_needs_fewer_gradients(hetero):
    simple = page_sampling_constant(hetero, None, 3, 1, "nice")
    imp = make_sampler({"name": "importance", "tau": 3}, hetero.n, hetero.L_i)
    new = page_sampling_constant(hetero, imp.probs, None, 1, "importance")
    assert new < 0.7 * simple
    evals = {}
    for cs, ds in (("nice", "nice"), ("importance", "importance")):
        t = run_method(hetero, {"name": "page_as", "sampler": {"name": cs, "tau": 3}, "data_sampling": ds},
                       _cfg(20000, 1e-4, log_every=10, metric="grad_norm_sq"), progress=False)
        assert t.meta.get("reached_tol")
        evals[cs] = t.last("grad_evals")
    assert evals["importance"] < 0.8 * evals["nice"]


# ---- recipes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("rid", ["C3", "C5", "C6", pytest.param("C7", marks=pytest.mark.slow)])  # C7: ~20 s
def test_recipe_fast_passes(rid, tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe(rid, tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert outcome.figures and all(f.exists() for f in outcome.figures)
