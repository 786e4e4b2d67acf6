"""RPT and RCD (optsim.optim.progressive): unbiased sketches by enumeration, the sketch's second
moment, the exact one-step expected decrease on a quadratic (Monte Carlo), the linear rate with the
theory stepsize over many independent runs (a batch dimension), GD as the special case, and the
optimizer's step."""
from __future__ import annotations

import math

import pytest
import torch

from optsim.optim import RCD, RPT
from optsim.optim.progressive import (
    prefix_inclusion,
    rcd_scales,
    rpt_scales,
    rpt_sketch_second_moment,
    sketch_stepsize,
)

DT = torch.float64
SIZES = (2, 3, 3, 4)
PROBS = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=DT)


def _quadratic(seed=0, mu=0.1, L=4.0):
    g = torch.Generator().manual_seed(seed)
    d = sum(SIZES)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DT))
    A = Q @ torch.diag(torch.linspace(mu, L, d, dtype=DT)) @ Q.T
    A = 0.5 * (A + A.T)
    b = torch.randn(d, generator=g, dtype=DT)
    return A, b, torch.linalg.solve(A, b)


def _f(A, b, X):
    return 0.5 * ((X @ A) * X).sum(-1) - X @ b


def _expand(C):
    return torch.repeat_interleave(C, torch.tensor(SIZES), dim=-1)


def test_prefix_sketch_is_unbiased_and_its_second_moment_by_enumeration():
    q = prefix_inclusion(PROBS)
    torch.testing.assert_close(q, torch.tensor([1.0, 0.6, 0.3, 0.1], dtype=DT))
    B = len(SIZES)
    mean = torch.zeros(B, dtype=DT)
    second = torch.zeros(sum(SIZES), sum(SIZES), dtype=DT)
    for s in range(B):                       # prefix = blocks 0..s with probability p_s
        c = torch.where(torch.arange(B) <= s, 1.0 / q, torch.zeros(B, dtype=DT))
        mean += PROBS[s] * c
        cc = _expand(c)
        second += PROBS[s] * torch.outer(cc, cc)
    torch.testing.assert_close(mean, torch.ones(B, dtype=DT), atol=1e-15, rtol=0)
    torch.testing.assert_close(second, rpt_sketch_second_moment(q, SIZES), atol=1e-13, rtol=0)


def test_sampled_sketches_match_their_moments():
    n = 200_000
    C = rpt_scales(PROBS, n, torch.Generator().manual_seed(1))
    q = prefix_inclusion(PROBS)
    se = torch.sqrt((1 / q - 1) / n)          # sd of the mean of c_j (c_j = 1/q_j w.p. q_j)
    assert torch.all((C.mean(0) - 1).abs() <= 5 * se)
    W = rpt_sketch_second_moment(q, [1] * 4)
    emp = (C[:, :, None] * C[:, None, :]).mean(0)
    assert torch.allclose(emp, W, rtol=0.05, atol=0)
    # RCD: single block and independent blocks, by their own draws
    for sampling, probs in (("single", [0.1, 0.2, 0.3, 0.4]), ("independent", [0.5, 0.8, 0.3, 1.0])):
        opt = RCD([torch.zeros(s, requires_grad=True) for s in (1, 1, 1, 1)], lr=1.0, probs=probs, sampling=sampling,
                  seed=2)
        draws = rcd_scales(opt.probs, 40_000, sampling, opt.generator)
        assert torch.allclose(draws.mean(0), torch.ones(4, dtype=DT), atol=0.06)
        assert torch.allclose((draws[:, :, None] * draws[:, None, :]).mean(0), opt.second_moment([1] * 4),
                              rtol=0.08, atol=0.02)


@pytest.mark.parametrize("method", ["rpt", "rcd"])
def test_one_step_expected_value_is_exact_and_the_theory_step_descends(method):
    A, b, _ = _quadratic()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(sum(SIZES), generator=g, dtype=DT)
    grad = A @ x - b
    if method == "rpt":
        W = rpt_sketch_second_moment(prefix_inclusion(PROBS), SIZES)
        C = _expand(rpt_scales(PROBS, 100_000, g))
    else:
        opt = RCD([torch.zeros(s) for s in SIZES], lr=1.0, probs=PROBS.tolist(), seed=4)
        W = opt.second_moment(SIZES)
        C = _expand(rcd_scales(opt.probs, 100_000, "single", g))
    gamma = sketch_stepsize(A, W)
    vals = _f(A, b, x - gamma * C * grad)
    exact = float(_f(A, b, x) - gamma * grad @ grad + 0.5 * gamma ** 2 * grad @ ((A * W) @ grad))
    se = float(vals.std()) / math.sqrt(vals.numel())
    assert abs(float(vals.mean()) - exact) <= 5 * se
    assert exact <= float(_f(A, b, x)) - 0.5 * gamma * float(grad @ grad) + 1e-12


def test_theory_stepsize_gives_the_linear_rate_over_independent_runs():
    """E[f(x^K) - f*] <= (1 - gamma mu)^K (f(x^0) - f*), on 2,000 runs at once (a batch dimension)."""
    mu = 0.1
    A, b, xs = _quadratic(mu=mu)
    probs = torch.tensor([0.1, 0.1, 0.2, 0.6], dtype=DT)
    q = prefix_inclusion(probs)
    gamma = sketch_stepsize(A, rpt_sketch_second_moment(q, SIZES))
    R, K = 2000, 300
    g = torch.Generator().manual_seed(5)
    X = torch.zeros(R, sum(SIZES), dtype=DT) + torch.randn(sum(SIZES), generator=g, dtype=DT)
    fs = float(_f(A, b, xs))
    gap0 = float(_f(A, b, X[0])) - fs
    for _ in range(K):
        X = X - gamma * _expand(rpt_scales(probs, R, g)) * (X @ A - b)
    gaps = _f(A, b, X) - fs
    bound = (1 - gamma * mu) ** K * gap0
    assert float(gaps.mean()) <= bound + 5 * float(gaps.std()) / math.sqrt(R)
    assert float(gaps.mean()) < 1e-2 * gap0          # and it did converge (not a vacuous bound)
    # block-diagonal smoothness: gamma = min_j q_j / L_j
    Ls = torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=DT)
    Ld = torch.diag(_expand(Ls))
    assert sketch_stepsize(Ld, rpt_sketch_second_moment(q, SIZES)) == pytest.approx(float((q / Ls).min()), rel=1e-12)


def _params(seed=6):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=DT).requires_grad_() for s in SIZES]


def test_prefix_of_all_blocks_is_gradient_descent():
    A, b, _ = _quadratic()
    ps, ref = _params(), _params()
    opt = RPT(ps, lr=0.1, probs=[0, 0, 0, 1])
    sgd = torch.optim.SGD(ref, lr=0.1)
    for _ in range(10):
        for params, o in ((ps, opt), (ref, sgd)):
            o.zero_grad()
            _f(A, b, torch.cat(params)).backward()
            o.step()
    for p, r in zip(ps, ref):
        assert torch.equal(p, r)


def test_step_moves_the_drawn_prefix_by_the_rescaled_gradient():
    A, b, _ = _quadratic()
    ps = _params()
    groups = [{"params": [p]} for p in ps]                 # several groups: one block each
    opt = RPT(groups, lr=0.05, probs=PROBS.tolist(), seed=7)
    q = prefix_inclusion(PROBS)
    for _ in range(20):
        before = torch.cat([p.detach() for p in ps])
        active = opt.active()                               # drawn before the gradients
        assert active == list(range(len(active)))           # a prefix
        for j, p in enumerate(ps):
            p.requires_grad_(j in active)
            p.grad = None
        loss = _f(A, b, torch.cat(ps))
        loss.backward()                                     # gradients of the prefix only
        grad = torch.cat([A[sum(SIZES[:j]):sum(SIZES[:j + 1])] @ before - b[sum(SIZES[:j]):sum(SIZES[:j + 1])]
                          for j in range(4)])
        opt.step()
        c = _expand(torch.where(torch.arange(4) < len(active), 1 / q, torch.zeros(4, dtype=DT)))
        torch.testing.assert_close(torch.cat([p.detach() for p in ps]), before - 0.05 * c * grad, atol=1e-14, rtol=0)
        torch.testing.assert_close(opt.state["step_scales"], c[[0, 2, 5, 8]], atol=0, rtol=1e-14)


def test_bad_arguments_fail_at_construction():
    ps = _params()
    with pytest.raises(ValueError, match="p_B"):
        RPT(ps, lr=0.1, probs=[1, 0, 0, 0])
    with pytest.raises(ValueError, match="one entry per block"):
        RPT(ps, lr=0.1, probs=[0.5, 0.5])
    with pytest.raises(ValueError, match="lr"):
        RCD(ps, lr=0.0)
    with pytest.raises(ValueError, match="sampling"):
        RCD(ps, lr=0.1, sampling="cyclic")
    with pytest.raises(ValueError, match="probability"):
        RCD(ps, lr=0.1, sampling="independent", probs=[0.5, 1.5, 0.5, 0.5])


def test_recipe_m9_passes_fast(tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe("M9", tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert "RPT uniform: gamma 0.125, cost/step 0.625 d" in outcome.measured    # q = (1, 3/4, 1/2, 1/4)
    assert outcome.figures and all(f.exists() for f in outcome.figures)


def test_pickled_optimizer_resumes_identically_and_the_simulator_refuses_it():
    import io

    from optsim.methods.neural.optimizers import BatchedOptimizer
    from optsim.problems.neural import Layout

    A, b, _ = _quadratic()
    ps = _params()
    opt = RPT(ps, lr=0.05, probs=PROBS.tolist(), seed=8)

    def step(o, params):
        o.zero_grad()
        _f(A, b, torch.cat(params)).backward()
        o.step()

    for _ in range(3):
        step(opt, ps)
    buf = io.BytesIO()
    torch.save({"opt": opt, "params": ps}, buf)      # as a checkpoint of a method holding it
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    for _ in range(5):
        step(opt, ps)
        step(saved["opt"], saved["params"])
    for p, q in zip(ps, saved["params"]):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="prefix"):
        BatchedOptimizer("rpt", torch.zeros(3, 12, dtype=DT), Layout.vector(12), lr=0.1)
