"""Stochastic matrix inversion and its accelerated version (S2, Gower, Hanzely, Richtárik & Stich 2018):
exact special cases (S = I inverts in one step; the symmetric update is the constrained projection and
couples exactly with S1), positive definite iterates, the exact expected iterate within Monte-Carlo
error, the rate 1 - mu of the slowest mean direction and of E||X_k - A^-1||^2, and acceleration."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from optsim.methods.linalg.accelerated import acceleration_parameters
from optsim.methods.linalg.matrix_inversion import (
    AcceleratedMatrixInversion,
    MatrixInversion,
)
from optsim.methods.linalg.sketch_project import (
    ColumnSketch,
    GaussianSketch,
    IndexSketch,
)
from optsim.problems.linear_system import MatrixInversionTarget

D = 5


@pytest.fixture(scope="module")
def target():
    return MatrixInversionTarget.generate(D, 0.05, 1.0, seed=1)


def _bonferroni(count, level=1e-3):
    return float(norm.isf(level / (2 * count)))


def test_target_inverse_and_metrics(target):
    assert torch.allclose(target.A @ target.inverse, torch.eye(D, dtype=torch.float64), atol=1e-12)
    E = torch.randn(3, D, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    X = target.inverse + E
    ref = torch.stack([torch.trace(target.A @ e @ target.A @ e.T) for e in E])
    assert torch.allclose(target.error(X), ref, rtol=1e-12)
    assert torch.allclose(target.column_error(X), torch.stack([torch.trace(e.T @ target.A @ e) for e in E]), rtol=1e-12)
    assert float(target.residual(target.inverse)) < 1e-12
    with pytest.raises(ValueError, match="positive definite"):
        MatrixInversionTarget(-torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="symmetric"):
        MatrixInversionTarget(torch.tensor([[2.0, 1.0], [0.0, 2.0]]))
    with pytest.raises(ValueError, match="IndexSketch"):
        MatrixInversion(target, ColumnSketch.columns(D))
    with pytest.raises(ValueError, match="symmetric X0"):
        MatrixInversion(target, IndexSketch.rows(D)).run(torch.triu(torch.ones(D, D, dtype=torch.float64)), 1)


@pytest.mark.parametrize("symmetric", [True, False])
def test_identity_and_full_gaussian_sketch_invert_in_one_step(target, symmetric):
    for sketch in (IndexSketch(torch.arange(D)[None, :]), GaussianSketch(D)):
        out = MatrixInversion(target, sketch, symmetric).run(None, 1, runs=3, seed=2)
        assert float(out.sq_error[-1].max()) < 1e-24 * float(out.sq_error[0].max())
        assert torch.allclose(out.X, target.inverse.expand(3, D, D), atol=1e-12)


def test_symmetric_update_is_the_projection_and_keeps_iterates_positive_definite(target):
    for sketch in (IndexSketch.rows(D), IndexSketch.subsets(D, 2), GaussianSketch(2)):
        inv = MatrixInversion(target, sketch)
        gen = torch.Generator().manual_seed(3)
        X = torch.eye(D, dtype=torch.float64).expand(4, D, D).clone()
        for _ in range(5):
            St = inv._draw(4, gen)
            Xn = inv._step(X, St)
            # the constraint S^T A X+ = S^T, symmetry, and the projection's optimality: for any symmetric
            # Delta with S^T A Delta = 0, <X+ - X, Delta>_F(A) = Tr(A (X+ - X) A Delta) = 0
            assert torch.allclose(St @ target.A @ Xn, St, atol=1e-10)
            assert torch.equal(Xn, Xn.transpose(1, 2))
            Pi = torch.linalg.solve(St @ target.A @ St.transpose(1, 2), St @ target.A)  # M^-1 S^T A
            N = torch.eye(D, dtype=torch.float64) - St.transpose(1, 2) @ Pi  # I - Pi: S^T A N = 0
            R = torch.randn(4, D, D, dtype=torch.float64, generator=gen)
            Delta = N @ (R + R.transpose(1, 2)) @ N.transpose(1, 2)
            inner = torch.einsum("ab,rbc,cd,rda->r", target.A, Xn - X, target.A, Delta)
            assert float(inner.abs().max()) < 1e-9
            X = Xn
        out = inv.run(None, 200, runs=50, seed=4)
        assert float(out.min_eig.min()) > 0
    acc = AcceleratedMatrixInversion(MatrixInversion(MatrixInversionTarget.generate(D, 1e-3, 1.0, seed=2),
                                                     IndexSketch.rows(D, "convenient")))
    out = acc.run(None, 1500, runs=50, seed=5)
    assert float(out.min_eig.min()) > 0  # measured for the accelerated iterates (the abstract's claim)


def test_symmetric_error_is_the_outer_product_of_the_S1_error(target):
    """X_0 = A^-1 + e e^T: with the same coordinates, X_k - A^-1 = e_k e_k^T, e_k the error of coordinate
    descent (S1 with B = A) on A x = b from x* + e."""
    inv = MatrixInversion(target, IndexSketch.rows(D))
    A = target.A
    e = torch.linspace(-1, 2, D, dtype=torch.float64)
    X = (target.inverse + torch.outer(e, e))[None]
    gen = torch.Generator().manual_seed(6)
    for i in torch.randint(D, (30,), generator=gen).tolist():
        St = torch.eye(D, dtype=torch.float64)[[i]][None]
        X = inv._step(X, St)
        e = e.clone()
        e[i] -= (A[i] @ e) / A[i, i]  # coordinate descent on A (x - x*) = 0
        assert torch.allclose(X[0] - target.inverse, torch.outer(e, e), atol=1e-11)


@pytest.mark.parametrize("case", ["symmetric", "column", "accelerated", "blocks"])
def test_monte_carlo_mean_matches_the_exact_expected_iterate(target, case):
    sketch = IndexSketch.subsets(D, 2) if case == "blocks" else IndexSketch.rows(D, "convenient")
    inv = MatrixInversion(target, sketch, symmetric=case != "column")
    solver = AcceleratedMatrixInversion(inv) if case == "accelerated" else inv
    X0 = torch.eye(D, dtype=torch.float64)
    out = solver.run(X0, 40, runs=3000, seed=7, every=8)
    exact = solver.expected_error(X0, out.steps)
    assert torch.allclose(exact[0], X0 - target.inverse)
    z = ((out.mean_error[1:] - exact[1:]) / out.sem_error[1:]).abs()
    assert float(z.max()) < _bonferroni(z.numel())
    # the mean moved well away from the start: the check is not vacuous
    assert float((exact[-1] - exact[0]).abs().max()) > 10 * float(out.sem_error[-1].max())


def test_mu_nu_of_the_inversion_and_the_rate(target):
    for sketch in (IndexSketch.rows(D), IndexSketch.rows(D, "convenient"), IndexSketch.subsets(D, 2)):
        inv = MatrixInversion(target, sketch)
        mu, nu = inv.parameters()
        mu_vec, _ = acceleration_parameters(inv.sp)
        assert mu >= mu_vec - 1e-12  # the symmetric projection contracts at least as fast as the vector one
        assert 1 - 1e-10 <= nu <= 1 / mu + 1e-8
        assert MatrixInversion(target, sketch, symmetric=False).parameters() == pytest.approx(
            acceleration_parameters(inv.sp), rel=1e-12)
    inv = MatrixInversion(target, IndexSketch.rows(D, "convenient"))
    rho = inv.rate()
    E0 = inv.slowest_direction()
    assert math.isclose(float(target.error(target.inverse + E0)), 1.0, rel_tol=1e-10)
    K = inv.mean_operator()
    assert torch.allclose((K @ E0.reshape(-1)).reshape(D, D), rho * E0, atol=1e-12)
    # Monte-Carlo: c_k = <E_0, X_k - A^-1>_F(A) has mean rho^k; E||X_k - A^-1||^2 <= rho^k ||E_0||^2
    Kit = math.ceil(math.log(0.3) / math.log(rho))
    runs = 6000
    out = inv.run(target.inverse + E0, Kit, runs=runs, seed=8, every=Kit)
    F0 = target.scaled(target.inverse + E0)
    c = (target.scaled(out.X) * F0).sum((-2, -1))
    z = (float(c.mean()) - rho ** Kit) / (float(c.std()) / math.sqrt(runs))
    assert abs(z) < 4
    measured = float(c.mean()) ** (1 / Kit)
    assert abs(measured - rho) < 0.01 * (1 - rho) + 4 * float(c.std()) / math.sqrt(runs) / Kit
    sq = out.sq_error[-1]
    assert float(sq.mean()) <= rho ** Kit + 3 * float(sq.std()) / math.sqrt(runs)


def test_acceleration_beats_plain_inversion_on_an_ill_conditioned_matrix():
    tgt = MatrixInversionTarget.generate(8, 1e-3, 1.0, seed=2)
    inv = MatrixInversion(tgt, IndexSketch.rows(8, "convenient"))
    acc = AcceleratedMatrixInversion(inv)
    assert acc.rate() < inv.rate()
    a = acc.run(None, 1200, runs=100, seed=1, every=1200).sq_error.mean(1)
    p = inv.run(None, 1200, runs=100, seed=1, every=1200).sq_error.mean(1)
    assert float(a[-1]) < 1e-3 * float(p[-1])
