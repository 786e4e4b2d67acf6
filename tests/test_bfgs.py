"""BFGS and accelerated BFGS in a full-batch optimizer (S2): the update satisfies the secant equation
exactly and equals its product form, mu = nu = 1 reduces accelerated BFGS to BFGS iterate for iterate,
the minimizer agrees with SciPy's BFGS and the problem's x*, and the stepsize grid runs as one batch."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optsim.methods.linalg.accelerated import acceleration_coefficients
from optsim.methods.linalg.bfgs import BFGS, PAPER_KNOBS, bfgs_update, grid_stepsizes
from optsim.problems.glm import LogisticRegression
from optsim.problems.linear_system import LinearSystem


@pytest.fixture(scope="module")
def logreg():
    g = np.random.default_rng(0)
    N, d = 300, 8
    X = g.standard_normal((N, d)) * np.geomspace(1, 10, d)
    y = np.where(g.random(N) < 1 / (1 + np.exp(-X @ g.standard_normal(d) / 3)), 1.0, -1.0)
    X = X / np.abs(X).max(0)  # column scaling, as the authors' data
    return LogisticRegression([X], [y], lam=1 / (2 * N))


def test_update_is_the_product_form_and_satisfies_the_secant_equation():
    g = torch.Generator().manual_seed(1)
    R, d = 6, 7
    M = torch.randn(R, d, d, generator=g, dtype=torch.float64)
    H = M @ M.transpose(1, 2) + 0.1 * torch.eye(d, dtype=torch.float64)
    s = torch.randn(R, d, generator=g, dtype=torch.float64)
    Q = torch.randn(d, d, generator=g, dtype=torch.float64)
    Q = Q @ Q.T + torch.eye(d, dtype=torch.float64)
    y = s @ Q  # a quadratic's gradient difference: s^T y > 0
    Hn = bfgs_update(H, s, y)
    assert torch.allclose((Hn @ y[..., None])[..., 0], s, atol=1e-10)  # secant equation H+ y = s
    sy = (s * y).sum(-1)[:, None, None]
    I = torch.eye(d, dtype=torch.float64)
    left = I - s[:, :, None] * y[:, None, :] / sy
    prod = s[:, :, None] * s[:, None, :] / sy + left @ H @ left.transpose(1, 2)
    assert torch.allclose(Hn, prod, rtol=1e-10, atol=1e-10)
    assert bool((torch.linalg.eigvalsh(Hn) > 0).all())
    # a pair with s^T y <= 0 leaves H unchanged
    assert torch.equal(bfgs_update(H, s, -y), H)


def test_secant_equation_along_a_run_on_a_quadratic():
    system = LinearSystem.generate(12, 6, 0.3, 1.0, seed=3)  # f = ||A x - b||^2 / 2, Hessian A^T A
    Q = system.A.T @ system.A
    for iters in (2, 5, 9):
        run = BFGS(system, [0.5, 1.0]).run(iters)
        assert torch.allclose(run.y, run.s @ Q, atol=1e-12)
        assert torch.allclose((run.H @ run.y[..., None])[..., 0], run.s, atol=1e-10)
    run = BFGS(system, [1.0]).run(60)  # unit steps: the quasi-Newton method converges on the quadratic
    assert float(run.loss[-1, 0]) < 1e-20 * float(run.loss[0, 0])


def test_mu_nu_one_reduces_accelerated_bfgs_to_bfgs(logreg):
    a, b, g = acceleration_coefficients(1.0, 1.0)
    assert (a, b, g) == (0.5, 0.0, 1.0)  # V+ = Y - (Y - H+) = H+, so Y = H at every step
    steps = grid_stepsizes(1.0)[-6:]
    plain = BFGS(logreg, steps).run(25)
    acc = BFGS(logreg, steps, 1.0, 1.0).run(25)
    finite = torch.isfinite(plain.loss[-1])
    assert bool(finite.any())
    assert torch.allclose(acc.x[finite], plain.x[finite], rtol=1e-10, atol=1e-12)
    assert torch.allclose(acc.H[finite], plain.H[finite], rtol=1e-9, atol=1e-11)
    assert torch.allclose(acc.loss[:, finite], plain.loss[:, finite], rtol=1e-12)
    # other knobs give other iterates (the accelerated rule is not a relabelling)
    other = BFGS(logreg, steps, *PAPER_KNOBS["australian"](300, 8)).run(25)
    assert not torch.allclose(other.x[finite], plain.x[finite], rtol=1e-6)


def test_minimizer_matches_scipy_bfgs_and_the_solved_optimum(logreg):
    from scipy.optimize import minimize

    f = lambda w: logreg.loss(torch.from_numpy(w))
    gr = lambda w: logreg.full_grad(torch.from_numpy(w)).numpy()
    ref = minimize(f, np.zeros(logreg.d), jac=gr, method="BFGS", options={"gtol": 1e-11, "maxiter": 1000})
    L_mean = float(logreg.A[0].pow(2).sum(1).mean()) / 4 + logreg.lam
    for mu_nu in (None, PAPER_KNOBS["splice"](300, 8)):
        run = BFGS(logreg, grid_stepsizes(L_mean), *(mu_nu or (None, None))).run(120, every=20)
        i = run.best()
        x = run.x[i].numpy()
        assert np.linalg.norm(x - ref.x) < 1e-6 * max(1.0, np.linalg.norm(ref.x))
        assert torch.allclose(run.x[i], logreg.x_star, atol=1e-7)
        assert float(run.grad_norm_sq[-1, i]) < 1e-16
        assert bool(torch.isfinite(run.loss[-1]).sum() < len(run.stepsizes))  # the grid's large steps diverge


def test_bad_arguments(logreg):
    with pytest.raises(ValueError, match="both mu and nu"):
        BFGS(logreg, [1.0], mu=1.0)
    with pytest.raises(ValueError, match="positive"):
        BFGS(logreg, [0.0, 1.0])
    with pytest.raises(ValueError, match="mu, nu > 0"):
        BFGS(logreg, [1.0], mu=-1.0, nu=1.0)
    assert math.isclose(float(grid_stepsizes(2.0)[0]), 2.0 ** 20)
