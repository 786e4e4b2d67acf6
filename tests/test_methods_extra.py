"""SGD, EF, EF21-PP, EF21-BC, EF21-P + DIANA, MARINA / PP-MARINA and PAGE: what their theory predicts.

Each test builds a small synthetic problem (5 clients, 20 samples each, d = 10) and checks a
prediction that a wrong implementation would miss: exact reductions (EF21-BC -> EF21, EF21-P ->
DIANA, EF21 with the full sampler unchanged), convergence with the theoretical stepsize, the
invariants of the estimators, and the bits charged per round.
"""
from __future__ import annotations

import copy
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
from optsim.methods.baselines.error_feedback import ef21_pp_stepsize, ef21_stepsize
from optsim.methods.baselines.gd import sgd_expected_smoothness
from optsim.problems import LeastSquares, LogisticRegression, NonconvexLogisticRegression, Quadratic

from _glm_data import D, M, N, heterogeneous_glm_data as _data  # noqa: E402
FLOAT_BITS = 32
TOPK_BITS = 2 * (FLOAT_BITS + math.ceil(math.log2(D)))  # top_k / rand_k with k = 2: values + indices


@pytest.fixture
def logreg():
    return LogisticRegression(*_data(), lam=0.1)


@pytest.fixture
def nonconvex():
    return NonconvexLogisticRegression(*_data(), lam=0.1)


def _cfg(rounds, tol=None, log_every=1):
    return parse_config({"problem": {"name": "quadratic"}, "methods": ["gd"],
                         "stop": {"max_rounds": rounds, "tol": tol}, "log_every": log_every})


def _run(problem, spec, rounds, tol=None, log_every=1):
    trace = run_method(problem, spec, _cfg(rounds, tol, log_every), progress=False)
    assert trace.status == "finished", trace.meta.get("message")
    return trace


def _drive(problem, spec, rounds, seed=0):
    """Run ``rounds`` steps by hand; returns the method, iterates (rounds, d) and per-round
    usage (round 0 = init) as lists of RoundUsage."""
    meter = Meter(problem.n)
    problem.attach(meter)
    try:
        method = build_method(spec, problem, Channel(meter, problem.d, FLOAT_BITS), seed)
        method.init(torch.zeros(problem.d, dtype=problem.dtype))
        usage, xs, extra = [meter.close_round()], [], []
        for _ in range(rounds):
            method.step()
            usage.append(meter.close_round())
            xs.append(method.x.clone())
            extra.append(getattr(method, "last_full", None))
    finally:
        problem.attach(None)
    return method, torch.stack(xs), usage, extra


# ---- SGD ------------------------------------------------------------------------------------------
def test_sgd_expected_smoothness_is_a_tight_bound_for_the_oracle():
    """Monte Carlo check of E||g(x) - g(x*)||^2 <= 2 L_exp (f(x) - f*) with the problem's own
    minibatch oracle (the same draws at x and x*). Least squares with one large sample per client
    along e_1 and x - x* along e_1 makes the derivation's inequalities (nearly) equalities, so the
    check also fails if L_exp were too large by more than a few percent."""
    rng = np.random.default_rng(3)
    n, m, d = 5, 8, 6
    feats, targets = [], []
    for _ in range(n):
        A = 0.1 * rng.standard_normal((m, d))
        A[0] = 0.0
        A[0, 0] = 5.0
        feats.append(A)
        targets.append(rng.standard_normal(m))
    ls = LeastSquares(feats, targets, lam=0.01)
    x = ls.x_star + 0.7 * torch.eye(d, dtype=torch.float64)[0]
    gap = ls.loss(x) - ls.f_star
    draws = 40000
    for b, tau in [(1, n), (4, n), (1, 2), (4, 2)]:
        L_exp = sgd_expected_smoothness(ls, b, tau=tau)
        gen = torch.Generator().manual_seed(b * 10 + tau)
        S = torch.rand(draws, n, generator=gen).argsort(1)[:, :tau].reshape(-1)
        Gx = ls.minibatch_grads(x.expand(draws * tau, d), b, torch.Generator().manual_seed(7), clients=S)
        Gs = ls.minibatch_grads(ls.x_star.expand(draws * tau, d), b, torch.Generator().manual_seed(7), clients=S)
        lhs = float((Gx - Gs).reshape(draws, tau, d).mean(1).pow(2).sum(1).mean())
        assert 0.9 < lhs / (2 * L_exp * gap) < 1.05, (b, tau)
    # the limits quoted in the docstring
    assert sgd_expected_smoothness(ls, 10**9) == pytest.approx(ls.L, rel=1e-6)
    single = LeastSquares(feats[:1], targets[:1], lam=0.01)
    assert sgd_expected_smoothness(single, 1) == pytest.approx(single.L_sample_max)
    assert sgd_expected_smoothness(ls, 10**9, tau=2) == pytest.approx(0.625 * ls.L + 0.375 * ls.L_max, rel=1e-6)


def test_sgd_quadratic_additive_noise_uses_L():
    q = Quadratic.generate(4, 6, L=2.0, mu=0.1, heterogeneity=0.2, noise=0.5, seed=1)
    spec = {"name": "sgd", "batch_size": 3}
    method = build_method(spec, q, Channel(Meter(q.n), q.d))
    assert method.gamma == pytest.approx(1 / (2 * q.L))


def test_sgd_neighbourhood_shrinks_with_batch_and_obeys_theorem(logreg):
    """Gower et al. Thm 3.1: E||x^k - x*||^2 <= (1 - gamma mu)^k ||x^0 - x*||^2 + 2 gamma sigma^2 / mu
    with sigma^2 = E||g(x*)||^2 = (1/(n^2 b)) sum_i Var_j grad f_ij(x*)."""
    xs = logreg.x_star
    z = torch.einsum("nmd,d->nm", logreg.A, xs)
    per_sample = (-logreg.b * torch.sigmoid(-logreg.b * z))[..., None] * logreg.A + logreg.lam * xs
    var = sum(float(per_sample[i].var(0, unbiased=False).sum()) for i in range(N))
    tails = {}
    for b in (1, 32):
        tr = _run(logreg, {"name": "sgd", "batch_size": b}, 3000)
        gamma = tr.meta["stepsize"]
        assert (1 - gamma * logreg.mu) ** 1500 < 1e-3  # the transient is over in the tail
        tail = float(tr["dist_sq"][1500:].mean())
        assert tail <= 2 * gamma * var / (N**2 * b) / logreg.mu
        tails[b] = tail
    assert tails[32] < 0.3 * tails[1]


def test_sgd_partial_participation_is_unbiased():
    """Independent sampling with unequal p_i: the step reweights by 1/(n p_i), so the mean step is
    gamma grad f(x); the unweighted (1/n) sum over S would average to (1/n) sum_i p_i grad f_i(x)."""
    q = Quadratic.generate(N, 6, L=1.0, mu=0.1, heterogeneity=0.4, seed=2)
    p = torch.tensor([0.3, 0.5, 0.7, 0.9, 0.6], dtype=torch.float64)
    spec = {"name": "sgd", "sampler": {"name": "independent", "p": p.tolist()}, "stepsize": 1.0}
    meter = Meter(N)
    method = build_method(spec, q, Channel(meter, 6))
    x = torch.ones(6, dtype=torch.float64)
    method.init(x)
    mean, draws = torch.zeros(6, dtype=torch.float64), 20000
    for _ in range(draws):
        method.x = x
        method.step()
        mean += (x - method.x) / draws
    grad, G = q.full_grad(x), q.grads(x.expand(N, 6))
    assert float((mean - grad).norm()) < 0.03 * float(grad.norm())
    assert float(((p[:, None] * G).mean(0) - grad).norm()) > 0.2 * float(grad.norm())  # the test can tell
    # the sampled clients got the model and sent one dense vector each
    usage = meter.close_round()
    assert torch.allclose(usage.bits_up / (6 * FLOAT_BITS) / draws, p, atol=0.02)
    assert torch.equal(usage.bits_up, usage.bits_down)
    # default stepsize: 1 / (2 L_exp) with the independent-sampling constant
    L_exp = q.L + float(((1 - p) * q.L_i / p).max()) / N
    assert build_method({k: v for k, v in spec.items() if k != "stepsize"}, q, Channel(Meter(N), 6)).gamma == \
        pytest.approx(1 / (2 * L_exp))


# ---- classic EF --------------------------------------------------------------------------------
def test_ef_topk_converges_linearly_on_identical_clients():
    A, y = _data(n=1, m=40)
    same = LogisticRegression(A * 4, y * 4, lam=0.1)
    tr = _run(same, {"name": "ef", "compressor": {"name": "top_k", "k": 2}}, 3000, tol=1e-10)
    assert tr.meta.get("reached_tol")


def test_ef_topk_heterogeneous_neighbourhood_shrinks_with_stepsize(logreg):
    comp = {"name": "top_k", "k": 2}
    full = _run(logreg, {"name": "ef", "compressor": comp}, 4000, log_every=10)
    small = _run(logreg, {"name": "ef", "compressor": comp, "stepsize_mult": 0.25}, 8000, log_every=10)
    gamma = full.meta["stepsize"]
    assert gamma == pytest.approx(0.2 / (4 * logreg.L_max))  # alpha / (4 L_max), alpha = k/d
    naive = _run(logreg, {"name": "dcgd", "compressor": comp, "stepsize": gamma}, 4000, log_every=10)
    tail_full = float(full["f_gap"][-100:].mean())
    tail_small = float(small["f_gap"][-100:].mean())
    assert tail_full < 1e-3 * full["f_gap"][0]
    assert tail_full < 1e-2 * float(naive["f_gap"][-100:].mean())  # error feedback fixes biased top-k
    assert tail_small < tail_full / 8  # neighbourhood ~ gamma^2


# ---- EF21-PP (EF21 with a sampler) -------------------------------------------------------------
def test_ef21_full_sampler_is_unchanged(logreg):
    comp = {"name": "top_k", "k": 2}
    a, xa, ua, _ = _drive(logreg, {"name": "ef21", "compressor": comp}, 100)
    b, xb, ub, _ = _drive(logreg, {"name": "ef21", "compressor": comp, "sampler": "full"}, 100)
    c, xc, uc, _ = _drive(logreg, {"name": "ef21", "compressor": comp, "sampler": {"name": "nice", "tau": N}}, 100)
    assert a.gamma == b.gamma == c.gamma == ef21_stepsize(0.2, logreg.L, logreg.L_tilde, logreg.mu)
    assert torch.equal(xa, xb) and torch.equal(xa, xc)
    assert all(torch.equal(u.bits_up, v.bits_up) and torch.equal(u.bits_down, v.bits_down) for u, v in zip(ua, ub))


def test_ef21_pp_stepsize_tends_to_ef21():
    for mu in (None, 0.1):
        full = ef21_stepsize(0.2, 1.3, 2.0, mu)
        almost = ef21_pp_stepsize(0.2, 1 - 1e-7, 1 - 1e-7, 1.3, 2.0, mu, grid=400)
        assert almost <= full and almost == pytest.approx(full, rel=0.05)
    half = ef21_pp_stepsize(0.2, 0.5, 0.5, 1.3, 2.0, None)
    assert half < 0.6 * ef21_stepsize(0.2, 1.3, 2.0, None)
    with pytest.raises(ValueError, match="uneven"):
        ef21_pp_stepsize(0.2, 0.05, 1.0, 1.3, 2.0, None)


def test_ef21_pp_nice_converges_linearly_and_keeps_invariants(logreg):
    spec = {"name": "ef21", "compressor": {"name": "top_k", "k": 2}, "sampler": {"name": "nice", "tau": 2}}
    method, _, usage, _ = _drive(logreg, spec, 30)
    # g is the plain mean of the clients' states (1/n, no reweighting of the sampled ones)
    torch.testing.assert_close(method.fb.g, method.fb.H.mean(0), rtol=1e-12, atol=1e-14)
    for u in usage[1:]:
        assert int((u.bits_up > 0).sum()) == 2 and set(u.bits_up.unique().tolist()) <= {0.0, TOPK_BITS}
        assert int((u.bits_down > 0).sum()) == 2 and set(u.bits_down.unique().tolist()) <= {0.0, D * FLOAT_BITS}
    tr = _run(logreg, spec, 4000, tol=1e-10, log_every=25)
    assert tr.meta.get("reached_tol")
    f = tr["f_gap"]
    windows = f[:: 400 // 25]
    assert np.all(windows[1:] < 0.1 * windows[:-1])  # geometric decrease, window after window


# ---- EF21-BC ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("comp", [{"name": "top_k", "k": 2}, {"name": "rand_k", "k": 3, "scaled": False}])
def test_ef21_bc_identity_downlink_is_ef21(nonconvex, comp):
    a, xa, ua, _ = _drive(nonconvex, {"name": "ef21", "compressor": comp}, 200)
    b, xb, ub, _ = _drive(nonconvex, {"name": "ef21_bc", "compressor": comp}, 200)
    assert a.gamma == b.gamma
    torch.testing.assert_close(xb, xa, rtol=1e-13, atol=1e-15)
    assert all(torch.equal(u.bits_up, v.bits_up) for u, v in zip(ua, ub))
    # per round: EF21 broadcasts x+, EF21-BC the (here uncompressed) b: d floats each;
    # EF21-BC also broadcasts g^0 at initialization
    assert all(torch.equal(u.bits_down, v.bits_down) for u, v in zip(ua[1:], ub[1:]))
    assert torch.all(ub[0].bits_down == D * FLOAT_BITS) and torch.all(ua[0].bits_down == 0)


def test_ef21_bc_compressed_both_ways(logreg):
    spec = {"name": "ef21_bc", "compressor": {"name": "top_k", "k": 2}, "down_compressor": {"name": "top_k", "k": 2}}
    method, _, usage, _ = _drive(logreg, spec, 5)
    assert method.gamma == pytest.approx(ef21_stepsize(0.04, logreg.L, logreg.L_tilde, logreg.mu))
    for u in usage[1:]:
        assert torch.all(u.bits_up == TOPK_BITS) and torch.all(u.bits_down == TOPK_BITS)
    tr = _run(logreg, spec, 15000, tol=1e-10, log_every=50)
    assert tr.meta.get("reached_tol")


def _top_k(v, k):
    out = torch.zeros_like(v)
    idx = v.abs().topk(k).indices
    out[idx] = v[idx]
    return out


def test_ef21_bc_matches_a_reference_loop(logreg):
    """Algorithm 5 written out client by client (top-2 up, top-3 down) against the batched method."""
    spec = {"name": "ef21_bc", "compressor": {"name": "top_k", "k": 2}, "down_compressor": {"name": "top_k", "k": 3}}
    method, xs, _, _ = _drive(logreg, spec, 60)
    gamma = method.gamma
    x = torch.zeros(D, dtype=torch.float64)
    gt_i = [logreg.grads(x[None], clients=[i])[0] for i in range(N)]
    gt = sum(gt_i) / N
    g = _top_k(gt, 3)
    for t in range(60):
        x = x - gamma * g
        for i in range(N):
            gt_i[i] = gt_i[i] + _top_k(logreg.grads(x[None], clients=[i])[0] - gt_i[i], 2)
        gt = sum(gt_i) / N
        g = g + _top_k(gt - g, 3)
        torch.testing.assert_close(xs[t], x, rtol=1e-10, atol=1e-13)


# ---- EF21-P + DIANA ---------------------------------------------------------------------------------
@pytest.mark.parametrize("comp", [{"name": "rand_k", "k": 2}, "natural"])
@pytest.mark.parametrize("kind", ["logreg", "nonconvex"])
def test_ef21_p_identity_downlink_is_diana(kind, comp, request):
    problem = request.getfixturevalue(kind)
    a, xa, ua, _ = _drive(problem, {"name": "diana", "compressor": comp}, 200)
    b, xb, ub, _ = _drive(problem, {"name": "ef21_p", "compressor": comp}, 200)
    assert a.gamma == b.gamma
    torch.testing.assert_close(xb, xa, rtol=1e-13, atol=1e-15)
    assert all(torch.equal(u.bits_up, v.bits_up) and torch.equal(u.bits_down, v.bits_down) for u, v in zip(ua, ub))


def test_ef21_p_topk_downlink_converges_and_charges_compressed_model(logreg):
    spec = {"name": "ef21_p", "compressor": {"name": "rand_k", "k": 2}, "down_compressor": {"name": "top_k", "k": 3}}
    method, _, usage, _ = _drive(logreg, spec, 5)
    rand2 = 2 * (FLOAT_BITS + math.ceil(math.log2(D)))
    top3 = 3 * (FLOAT_BITS + math.ceil(math.log2(D)))
    assert all(torch.all(u.bits_up == rand2) and torch.all(u.bits_down == top3) for u in usage[1:])
    diana = build_method({"name": "diana", "compressor": {"name": "rand_k", "k": 2}}, logreg, Channel(Meter(N), D))
    assert method.gamma == pytest.approx(min(diana.gamma, 0.3 / (16 * logreg.L)))
    tr = _run(logreg, spec, 8000, tol=1e-10, log_every=50)
    assert tr.meta.get("reached_tol")


def test_ef21_p_matches_a_reference_loop(logreg):
    """EF21-P + DIANA with an exact uplink (identity, omega = 0: shift stepsize 1) and a top-3
    downlink, written out: gradients at w, x+ = x - gamma g, w += top3(x+ - w)."""
    spec = {"name": "ef21_p", "down_compressor": {"name": "top_k", "k": 3}}
    method, xs, _, _ = _drive(logreg, spec, 60)
    gamma = method.gamma
    x = w = torch.zeros(D, dtype=torch.float64)
    h = torch.zeros(N, D, dtype=torch.float64)
    for t in range(60):
        G = logreg.grads(w.expand(N, D))
        g = h.mean(0) + (G - h).mean(0)
        h = G.clone()
        x = x - gamma * g
        w = w + _top_k(x - w, 3)
        torch.testing.assert_close(xs[t], x, rtol=1e-10, atol=1e-13)


# ---- MARINA / PP-MARINA ------------------------------------------------------------------------------
def test_expected_density_and_default_p(logreg):
    assert make_compressor({"name": "rand_k", "k": 3}, D).density == 3
    assert make_compressor(["natural", {"name": "rand_k", "k": 4}], D).density == 4
    lazy = {"name": "bernoulli", "p": 0.5, "inner": {"name": "rand_k", "k": 2}}
    assert make_compressor(lazy, D).density == 1
    assert make_compressor("natural", D).density == D
    ch = Channel(Meter(N), D)
    m = build_method({"name": "marina", "compressor": {"name": "rand_k", "k": 2}}, logreg, ch)
    assert m.p == pytest.approx(2 / D)
    pp = build_method({"name": "marina", "compressor": {"name": "rand_k", "k": 2},
                       "sampler": {"name": "nice", "tau": 2}}, logreg, ch)
    assert pp.p == pytest.approx(2 * 2 / (D * N))
    with pytest.raises(ValueError, match="nice"):
        build_method({"name": "marina", "compressor": {"name": "rand_k", "k": 2},
                      "sampler": {"name": "independent", "p": 0.5}}, logreg, ch)


def test_marina_theory_stepsize_reaches_stationarity(nonconvex):
    spec = {"name": "marina", "compressor": {"name": "rand_k", "k": 2}}
    tr = _run(nonconvex, spec, 3000, tol=1e-10)
    assert tr.meta.get("reached_tol") and tr.last("grad_norm_sq") <= 1e-10
    omega, p = D / 2 - 1, 2 / D
    assert tr.meta["stepsize"] == pytest.approx(1 / (nonconvex.L_tilde * (1 + math.sqrt((1 - p) * omega / (p * N)))))


def test_marina_bits_and_estimator(nonconvex):
    spec = {"name": "marina", "compressor": {"name": "rand_k", "k": 2}}
    method, xs, usage, full = _drive(nonconvex, spec, 600)
    assert torch.all(usage[0].bits_up == D * FLOAT_BITS)  # g^0 = grad f(x^0), sent in full
    for u, f in zip(usage[1:], full):
        assert torch.all(u.bits_up == (D * FLOAT_BITS if f else TOPK_BITS))
        assert torch.all(u.bits_down == D * FLOAT_BITS)
        assert torch.all(u.oracle["grad"] == 1.0)  # clients reuse their previous gradient
    frac = sum(full) / len(full)
    assert 0.14 < frac < 0.26  # p = k/d = 0.2
    # right after a full round the estimator is the exact gradient
    method, _, _, full = _drive(nonconvex, spec, 1)
    k = 1
    while not method.last_full:
        method.step()
        k += 1
    torch.testing.assert_close(method.est.g, nonconvex.full_grad(method.x), rtol=1e-12, atol=1e-15)


def test_pp_marina_converges_and_charges_sampled_clients(nonconvex):
    spec = {"name": "marina", "compressor": {"name": "rand_k", "k": 2}, "sampler": {"name": "nice", "tau": 2}}
    method, _, usage, full = _drive(nonconvex, spec, 300)
    omega, p, r = D / 2 - 1, 2 * 2 / (D * N), 2
    assert method.gamma == pytest.approx(1 / (nonconvex.L_tilde * (1 + math.sqrt((1 - p) * (1 + omega) / (p * r)))))
    for u, f in zip(usage[1:], full):
        if f:
            assert torch.all(u.bits_up == D * FLOAT_BITS)
        else:
            assert int((u.bits_up > 0).sum()) == r and set(u.bits_up.unique().tolist()) == {0.0, TOPK_BITS}
            assert set(u.oracle["grad"].unique().tolist()) == {0.0, 2.0}  # gradients at x+ and x
        assert torch.all(u.bits_down == D * FLOAT_BITS)
    tr = _run(nonconvex, spec, 5000, tol=1e-10)
    assert tr.meta.get("reached_tol")


@pytest.mark.parametrize("sampler", [None, {"name": "nice", "tau": 2}])
def test_marina_compressed_round_is_unbiased(nonconvex, sampler):
    """E[g+ - g | no sync] = grad f(x+) - grad f(x) (Alg. 1 and Alg. 4): average many rounds from
    the same state with a coin that never syncs."""
    spec = {"name": "marina", "compressor": {"name": "rand_k", "k": 2}, "p": 1e-12, "stepsize": 0.5}
    if sampler:
        spec["sampler"] = sampler
    method = build_method(spec, nonconvex, Channel(Meter(N), D))
    x0 = 0.5 * torch.ones(D, dtype=torch.float64)
    method.init(x0)
    start = copy.deepcopy(method.state_dict())  # every draw from the same declared state
    g0 = method.est.g.clone()
    x1 = x0 - 0.5 * g0
    mean, draws = torch.zeros(D, dtype=torch.float64), 4000
    for _ in range(draws):
        method.load_state_dict(copy.deepcopy(start))
        method.step()
        assert not method.last_full
        mean += (method.est.g - g0) / draws
    diff = nonconvex.full_grad(x1) - nonconvex.full_grad(x0)
    assert float((mean - diff).norm()) < 0.05 * float(diff.norm())


# ---- PAGE --------------------------------------------------------------------------------------------
def test_page_converges_on_finite_sum(nonconvex):
    tr = _run(nonconvex, {"name": "page"}, 3000, tol=1e-10)
    assert tr.meta.get("reached_tol")
    Lc = math.sqrt(float(nonconvex.L_samples.pow(2).sum(1).div(M).mean()))
    bs = math.isqrt(M)
    p = bs / (M + bs)
    assert tr.meta["stepsize"] == pytest.approx(1 / (nonconvex.L + Lc * math.sqrt((1 - p) / (p * N * bs))))
    # with small batches only (p small), still the full-gradient accuracy, unlike SGD
    sgd = _run(nonconvex, {"name": "sgd", "batch_size": bs}, 1500)
    assert tr.last("grad_norm_sq") < 1e-4 * sgd["grad_norm_sq"][-200:].mean()


def test_page_oracle_calls_bits_and_estimator(nonconvex):
    method, _, usage, full = _drive(nonconvex, {"name": "page"}, 400)
    bs = math.isqrt(M)
    for u, f in zip(usage[1:], full):
        assert torch.all(u.bits_up == D * FLOAT_BITS) and torch.all(u.bits_down == D * FLOAT_BITS)
        expected = 1.0 if f else 2 * bs / M  # full local gradient, or b' samples at x+ and x
        torch.testing.assert_close(u.oracle["grad"], torch.full((N,), expected, dtype=torch.float64))
    assert 0.08 < sum(full) / len(full) < 0.25  # p = b'/(b + b') = 4/24
    while not method.last_full:
        method.step()
    torch.testing.assert_close(method.est.g, nonconvex.full_grad(method.x), rtol=1e-12, atol=1e-15)


def test_page_small_batch_difference_is_unbiased(nonconvex):
    """E[g+ - g | small round] = grad f(x+) - grad f(x): average many small-batch updates."""
    method = build_method({"name": "page", "p": 1e-9, "stepsize": 0.5}, nonconvex, Channel(Meter(N), D))
    x0 = 0.5 * torch.ones(D, dtype=torch.float64)
    method.init(x0)
    start = copy.deepcopy(method.state_dict())
    g0 = method.est.g.clone()
    x1 = x0 - 0.5 * g0
    mean, draws = torch.zeros(D, dtype=torch.float64), 3000
    for _ in range(draws):
        method.load_state_dict(copy.deepcopy(start))
        method.step()
        mean += (method.est.g - g0) / draws
    diff = nonconvex.full_grad(x1) - nonconvex.full_grad(x0)
    assert float((mean - diff).norm()) < 0.05 * float(diff.norm())
