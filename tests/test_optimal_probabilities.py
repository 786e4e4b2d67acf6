"""S1's optimal sketch probabilities (the semidefinite program for the best rate): a diagonal system's
optimum is uniform with rho = 1 - 1/d, the optimum beats uniform and convenient probabilities and every
probability vector of a random search, and the solved rate is the one the sketch-and-project theory
computes with those probabilities."""
from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("cvxpy")

from optsim.methods.linalg import (
    IndexSketch,
    SketchAndProject,
    coordinate_descent,
    kaczmarz,
)
from optsim.methods.linalg.accelerated import scaled_projections
from optsim.methods.linalg.optimal_probabilities import optimal_probabilities, rate_for
from optsim.problems.linear_system import LinearSystem


def test_diagonal_system_optimum_is_uniform():
    A = torch.diag(torch.tensor([1.0, 2.0, 5.0, 10.0], dtype=torch.float64))
    sp = coordinate_descent(LinearSystem(A, x_star=torch.ones(4, dtype=torch.float64)))
    p, rho = optimal_probabilities(sp)
    assert torch.allclose(p, torch.full((4,), 0.25, dtype=torch.float64), atol=1e-6)
    assert math.isclose(rho, 0.75, abs_tol=1e-7)


@pytest.mark.parametrize("which", ["kaczmarz", "blocks"])
def test_optimum_beats_uniform_convenient_and_random_probabilities(which):
    if which == "kaczmarz":
        system = LinearSystem.generate(12, 4, 0.2, 1.0, seed=3)
        make = lambda probs: kaczmarz(system, probs)
    else:
        system = LinearSystem.generate(6, 6, 0.1, 1.0, positive_definite=True, seed=4)
        make = lambda probs: SketchAndProject(system, IndexSketch.subsets(6, 2, probs), "A")
    sp = make("uniform")
    p, rho = optimal_probabilities(sp)
    best = make(p)
    assert math.isclose(best.rate(), rho, rel_tol=1e-9)  # the SDP's rate is S1's rate with those probabilities
    assert rho <= sp.rate() + 1e-9 and rho <= make("convenient").rate() + 1e-9
    r = p.shape[0]
    g = torch.Generator().manual_seed(5)
    W = -torch.log(torch.rand(3000, r, generator=g, dtype=torch.float64))  # Dirichlet(1) draws
    W = W / W.sum(1, keepdim=True)
    P = scaled_projections(sp)
    rates = 1 - torch.linalg.eigvalsh(torch.einsum("nr,rde->nde", W, P))[:, 0]
    assert math.isclose(float(rates[0]), rate_for(sp, W[0]), rel_tol=1e-12)
    assert float(rates.min()) >= rho - 1e-7
    with pytest.raises(ValueError, match="nonnegative"):
        rate_for(sp, -torch.ones(r))
