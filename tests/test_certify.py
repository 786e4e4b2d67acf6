"""Randomized-smoothing certification (Cohen, Rosenfeld, Kolter 2019): the statistics against
SciPy, the exact radius of a linear classifier, the certificate's coverage, batching invariance,
PREDICT's abstention, certified accuracy, refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from optsim.robust import (ABSTAIN, average_certified_radius, binomial_p_value, certified_accuracy, certify,
                           lower_confidence_bound, predict, sample_counts)


def halfspace(batch: torch.Tensor) -> torch.Tensor:
    """f(x) = 1[x_0 > 0]: smoothed, P(f(x + sigma eps) = 1) = Phi(x_0 / sigma), so g's exact l2
    radius at x is |x_0|, the distance to the boundary."""
    return (batch[:, 0] > 0).long()


@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_lower_bound_is_clopper_pearson(alpha):
    for k, n in [(0, 10), (1, 10), (7, 10), (10, 10), (990, 1000), (51234, 100000)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
        assert lower_confidence_bound(k, n, alpha) == pytest.approx(ci.low, abs=1e-12)


def test_p_value_is_scipys_binomial_test():
    for k, n in [(0, 1), (5, 10), (9, 10), (60, 100), (40, 100), (520, 1000)]:
        assert binomial_p_value(k, n) == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-10)


def test_linear_classifier_radius_is_the_distance_to_the_boundary():
    sigma, x0 = 0.5, torch.tensor([0.3, 0.6, -0.9, 1.2], dtype=torch.float64)
    X = torch.zeros(4, 3, dtype=torch.float64)
    X[:, 0] = x0
    pred, radius = certify(halfspace, X, sigma, n0=100, n=200_000, alpha=0.001, seed=1)
    assert pred.tolist() == [1, 1, 0, 1]
    exact = x0.abs()
    assert bool((radius <= exact).all())  # a lower bound (holds with probability 1 - alpha each)
    assert bool((radius >= exact - 0.03).all())  # n = 2e5: the Clopper-Pearson gap is small


def test_certificates_hold_with_probability_at_least_one_minus_alpha():
    """400 independent certifications of the same input at n = 200: a certificate is wrong when
    its radius exceeds the exact one; the rate of wrong ones is at most alpha (3 sigma slack)."""
    sigma, alpha, reps = 1.0, 0.1, 400
    X = torch.zeros(reps, 2, dtype=torch.float64)
    X[:, 0] = 0.7
    pred, radius = certify(halfspace, X, sigma, n0=50, n=200, alpha=alpha, seed=3)
    wrong = ((pred == 1) & (radius > 0.7)).double().mean().item()
    assert wrong <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / reps)
    # and the bound is not vacuous: most certificates are returned with a positive radius
    assert (pred == 1).double().mean().item() > 0.8


def test_counts_do_not_depend_on_batching_and_sum_to_the_draws():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    X = torch.randn(7, 5, dtype=torch.float64)
    ref = sample_counts(net, X, 0.8, 1000, seed=4)
    for bs in (1, 13, 999, 7000):
        assert torch.equal(sample_counts(net, X, 0.8, 1000, seed=4, batch_size=bs), ref)
    assert torch.equal(sample_counts(net, X, 0.8, 1000, seed=4, max_bytes=4096), ref)
    assert ref.shape == (7, 3) and bool((ref.sum(1) == 1000).all())
    net.train()  # a module's mode is restored after counting
    sample_counts(net, X, 0.8, 10, seed=4)
    assert net.training


def test_counts_match_a_loop_over_inputs_of_the_same_noise():
    """Input-major noise: with one block per input the draws of input i are rows [i num, (i+1) num)
    of one stream, so a direct loop with the same generator reproduces the counts."""
    torch.manual_seed(1)
    W = torch.randn(4, 3, dtype=torch.float64)
    X = torch.randn(5, 4, dtype=torch.float64)
    num = 2 ** 16 // 4  # exactly one noise block per input
    counts = sample_counts(lambda b: b @ W, X, 0.5, num, seed=9)
    g = torch.Generator().manual_seed(9)
    for i in range(5):
        eps = torch.empty(num, 4, dtype=torch.float64).normal_(generator=g)
        ids = ((X[i] + 0.5 * eps) @ W).argmax(1)
        assert torch.equal(counts[i], torch.bincount(ids, minlength=3))


def test_predict_abstains_on_the_boundary_and_answers_off_it():
    X = torch.tensor([[0.0, 0.0], [2.0, 0.0], [-2.0, 0.0]], dtype=torch.float64)
    out = predict(halfspace, X, 1.0, n=20_000, alpha=0.001, seed=0)
    assert out.tolist() == [ABSTAIN, 1, 0]
    pred, radius = certify(halfspace, X[:1], 1.0, n0=100, n=20_000, alpha=0.001, seed=0)
    assert pred.item() == ABSTAIN and radius.item() == 0.0


def test_certified_accuracy_and_average_radius():
    pred = [1, 0, ABSTAIN, 2, 1]
    rad = [0.5, 1.0, 0.0, 0.2, 2.0]
    lab = [1, 1, 0, 2, 1]
    acc = certified_accuracy(pred, rad, lab, [0.0, 0.2, 0.5, 1.0, 3.0])
    assert acc.tolist() == pytest.approx([0.6, 0.6, 0.4, 0.2, 0.0])
    assert average_certified_radius(pred, rad, lab) == pytest.approx((0.5 + 0.2 + 2.0) / 5)
    # the certified-accuracy curve integrates to the average certified radius
    grid = np.linspace(0, 3, 30001)
    curve = certified_accuracy(pred, rad, lab, grid).numpy()
    assert np.trapezoid(curve, grid) == pytest.approx(average_certified_radius(pred, rad, lab), abs=1e-3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(sigma=0.0), "sigma must be a positive"), (dict(n=0), "n must be an integer >= 1"),
    (dict(n0=2.5), "n0 must be an integer"), (dict(alpha=1.0), r"alpha must lie in \(0, 1\)")])
def test_refusals(kwargs, match):
    args = dict(sigma=1.0, n0=10, n=10, alpha=0.01) | kwargs
    with pytest.raises(ValueError, match=match):
        certify(halfspace, torch.zeros(2, 2, dtype=torch.float64), **args)
    with pytest.raises(ValueError, match="class ids"):
        certify(lambda b: b[:, 0], torch.zeros(2, 2, dtype=torch.float64), 1.0, n0=5, n=5)


def test_b5_recipe_fast(tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe("B5", tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert all(f.exists() for f in outcome.figures)
