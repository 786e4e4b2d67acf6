"""Methods for convex (L0, L1)-smooth problems (S7): exact special cases and the properties the
analysis predicts ((L0, L1)-GD's guaranteed decrease, Polyak's halving on an isotropic quadratic,
AdGD's stepsize rule), and recipe S7's fast mode."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optsim.experiment import parse_config, run_method
from optsim.problems import Quadratic
from optsim.problems.l0l1 import CoshProblem


def _run(problem, spec, rounds, x0=None, **stop):
    cfg = parse_config({"problem": {"name": "logreg"}, "methods": [spec],
                        "stop": {"max_rounds": rounds, **stop}, "log_every": 1})
    return run_method(problem, spec, cfg, progress=False, x0=x0)


def _cosh_1d(a=2.0):
    return CoshProblem(torch.tensor([[[a]]], dtype=torch.float64), torch.zeros(1, 1, 1, dtype=torch.float64))


def test_l0l1_gd_with_L1_zero_is_gd():
    q = Quadratic.generate(4, 6, L=3.0, mu=0.1, seed=0)
    a = _run(q, {"name": "l0l1_gd", "L0": q.L, "L1": 0.0, "stepsize": 0.7}, 30)
    b = _run(q, {"name": "gd", "stepsize": 0.7 / q.L}, 30)
    assert np.array_equal(a["loss"], b["loss"])


def test_l0l1_gd_decreases_f_every_step_from_far_away():
    """eta = 1/2: f(x+) <= f(x) - t ||g||^2 (1 - eta e^eta / 2) (derived), from x0 = 30 on a cosh, where
    a step of GD with 1/L(x*) overshoots by a factor ~ sinh(30)."""
    p = _cosh_1d()
    x0 = torch.tensor([30.0], dtype=torch.float64)
    tr = _run(p, {"name": "l0l1_gd"}, 400, x0=x0)
    loss = tr["loss"]
    pos = loss[:-1] > 0
    assert np.all(np.diff(loss) <= 0) and np.all(np.diff(loss)[pos] < 0) and tr["f_gap"][-1] < 1e-12
    L0, L1 = p.L0, p.L1
    x = 30.0
    for k in range(5):  # the guaranteed decrease, step by step
        g = 2.0 * math.sinh(x)
        t = 0.5 / (L0 + L1 * abs(g))
        assert loss[k] - loss[k + 1] >= t * g * g * (1 - 0.5 * math.exp(0.5) / 2) * (1 - 1e-12)
        x -= t * g
    gd = _run(p, {"name": "gd"}, 5, x0=x0)
    assert gd.status == "diverged" or not np.isfinite(gd["loss"][-1]) or gd["loss"][-1] > loss[0]


def test_polyak_halves_the_error_on_an_isotropic_quadratic():
    d, L = 5, 3.0
    b = torch.arange(1.0, d + 1, dtype=torch.float64)[None]
    q = Quadratic((L * torch.eye(d, dtype=torch.float64))[None], b)
    tr = _run(q, {"name": "polyak_gd"}, 20)
    dist = tr["dist_sq"]
    assert np.allclose(dist[1:11] / dist[:10], 0.25, rtol=1e-9)
    assert tr["func_evals"][-1] == pytest.approx(20) and tr["grad_evals"][-1] == pytest.approx(20)


def test_adgd_follows_the_malitsky_mishchenko_rule():
    """A hand-written Algorithm 1 on a quadratic gives the same iterates; its stepsizes never exceed
    ||x_k - x_{k-1}|| / (2 ||grad f(x_k) - grad f(x_{k-1})||) and it converges."""
    q = Quadratic.generate(1, 6, L=4.0, mu=0.5, seed=3)
    A, b = q.A[0], q.b[0]
    tr = _run(q, {"name": "adgd", "initial_stepsize": 1e-3}, 60)
    x, lam, theta = torch.zeros(6, dtype=torch.float64), 1e-3, math.inf
    xp = gp = None
    losses = [float(0.5 * x @ A @ x - b @ x)]
    for _ in range(60):
        g = A @ x - b
        if xp is not None:
            local = float((x - xp).norm()) / (2 * float((g - gp).norm()))
            new = min(math.sqrt(1 + theta) * lam, local)
            assert new <= local
            theta, lam = new / lam, new
        xp, gp, x = x, g, x - lam * g
        losses.append(float(0.5 * x @ A @ x - b @ x))
    assert np.allclose(tr["loss"], losses, rtol=1e-12, atol=1e-14)
    assert tr["f_gap"][-1] < 1e-8 * tr["f_gap"][0]


def test_s7_recipe_fast(tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe("S7", tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert outcome.figures and all(f.exists() for f in outcome.figures)
