"""Independent Subnetwork Training (Shulgin & Richtárik 2023, arXiv 2306.16484) on quadratics."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from _methods import make

from optsim.problems import Quadratic
from optsim.rng import generator

F64 = torch.float64


@pytest.fixture(scope="module")
def het():
    return Quadratic.generate(6, 6, L=1.0, mu=0.1, heterogeneity=0.3, seed=2)


def test_identity_sketch_is_gradient_descent(het):
    gd, _ = make(het, {"name": "gd"})
    ist, _ = make(het, {"name": "ist", "sketch": "identity"})
    assert ist.gamma == pytest.approx(1 / het.L)  # Theorem 1 with theta = lambda_max(Lbar)
    for _ in range(20):
        gd.step()
        ist.step()
        assert torch.equal(ist.x, gd.x)


@pytest.mark.parametrize("n,d", [(6, 6), (3, 7)])
def test_one_round_is_the_papers_biased_estimator(n, d):
    p = Quadratic.generate(n, d, L=1.0, mu=0.1, heterogeneity=0.3, seed=2)
    m, meter = make(p, {"name": "ist", "sketch": "perm", "stepsize": 0.1}, seed=3, x0=torch.ones(d, dtype=F64))
    m.step()
    perm = torch.randperm(d, generator=generator(3, "method"))  # client i gets perm[j] for j = i mod n
    x0, g = torch.ones(d, dtype=F64), torch.zeros(d, dtype=F64)
    for i in range(n):  # g = (1/n) sum_i C_i grad f_i(C_i x), C_i = n sum_{j in block i} e_j e_j^T (Def. 2)
        C = torch.zeros(d, d, dtype=F64)
        for j in range(i, d, n):
            C[perm[j], perm[j]] = float(n)
        g += C @ (p.A[i] @ (C @ x0) - p.b[i]) / n
    assert torch.allclose(m.x, x0 - 0.1 * g, atol=1e-14)
    meter.close_round()  # its coordinates down (values + indices), its values up, per client
    assert float(meter.bits_down.sum()) == d * (32 + math.ceil(math.log2(d))) and float(meter.bits_up.sum()) == d * 32


@pytest.mark.parametrize("sketch", ["perm", "perm_precond"])
def test_sketch_moments_match_exact_enumeration(sketch):
    p = Quadratic.generate(4, 4, L=1.0, mu=0.2, heterogeneity=0.4, seed=5)
    m, _ = make(p, {"name": "ist", "sketch": sketch, "stepsize": 0.1})
    EB, EBLB, ECb = m.sketch_moments()
    Lbar = p.A.mean(0)
    diag = torch.diagonal(p.A, dim1=1, dim2=2)
    acc = [torch.zeros(4, 4, dtype=F64), torch.zeros(4, 4, dtype=F64), torch.zeros(4, dtype=F64)]
    perms = list(itertools.permutations(range(4)))
    for perm in perms:  # client i gets coordinate perm[i]
        Cs = []
        for i, j in enumerate(perm):
            C = torch.zeros(4, 4, dtype=F64)
            C[j, j] = 4.0 if sketch == "perm" else 2.0 / math.sqrt(float(diag[i, j]))  # Def. 2 / eq. 23
            Cs.append(C)
        B = sum(C @ p.A[i] @ C for i, C in enumerate(Cs)) / 4
        acc[0] += B
        acc[1] += B @ Lbar @ B
        acc[2] += sum(C @ p.b[i] for i, C in enumerate(Cs)) / 4
    for got, ref in zip((EB, EBLB, ECb), acc):
        assert torch.allclose(got, ref / len(perms), atol=1e-12)
    if sketch == "perm_precond":
        assert torch.allclose(EB, torch.eye(4, dtype=F64), atol=1e-12) and m.theory_stepsize() == pytest.approx(1.0)


def test_interpolation_case_converges_linearly_to_the_solution(het):
    interp = Quadratic(het.A, torch.zeros_like(het.b))
    x0 = torch.ones(6, dtype=F64)
    Lbar = het.A.mean(0)
    e0 = float(x0 @ Lbar @ x0)
    m, _ = make(interp, {"name": "ist", "sketch": "perm_precond"}, x0=x0)
    m.step()  # Sec. 3.1.2: Bbar = I, gamma = 1 -> one step
    assert float(m.x.norm()) <= 1e-14
    EB, _, _ = make(interp, {"name": "ist", "sketch": "perm"})[0].sketch_moments()
    W = 0.5 * (EB @ Lbar + Lbar @ EB)
    ev, U = torch.linalg.eigh(Lbar)
    Lih = U @ torch.diag(ev.rsqrt()) @ U.T
    K, errs = 15, []
    for seed in range(8):
        m, _ = make(interp, {"name": "ist", "sketch": "perm"}, seed=seed, x0=x0)
        for _ in range(K):
            m.step()
        errs.append(float(m.x @ Lbar @ m.x) / e0)
    bound = (1 - m.gamma * float(torch.linalg.eigvalsh(Lih @ W @ Lih)[0])) ** K  # eq. 16
    assert 1e-30 < sum(errs) / len(errs) <= bound


def test_heterogeneous_fixed_point_is_biased_and_does_not_depend_on_gamma(het):
    x_star = het.x_star
    bias = None
    for mult in (1.0, 0.2):
        m, _ = make(het, {"name": "ist", "sketch": "perm_precond", "stepsize_mult": mult}, seed=1)
        x_inf = m.expected_fixed_point()
        # Sec. 4.1: x_inf = (1/(n sqrt(n))) sum_i D_i^{-1/2} b_i
        ref = (torch.diagonal(het.A, dim1=1, dim2=2).rsqrt() * het.b).sum(0) / 6 ** 1.5
        assert torch.allclose(x_inf, ref, atol=1e-14)
        bias = float((x_inf - x_star).norm())
        acc = torch.zeros(6, dtype=F64)
        for k in range(3000):
            m.step()
            if k >= 1000:
                acc += m.x
        avg = acc / 2000
        assert float((avg - x_inf).norm()) <= 0.05 * bias  # the iterates average to x_inf ...
        assert float((avg - x_star).norm()) >= 0.9 * bias  # ... not to x*, whatever the stepsize
    assert bias >= 0.3 * float(x_star.norm())


def test_homogeneous_case_fixed_point_and_its_exact_special_case():
    from optsim.reproduce.model_parallel import _homogeneous_quadratic

    for special in (False, True):
        p = _homogeneous_quadratic(6, 0, special)
        assert torch.allclose(torch.diagonal(p.A[0]), torch.ones(6, dtype=F64))
        m, _ = make(p, {"name": "ist", "sketch": "perm_precond", "stepsize_mult": 0.5})
        for _ in range(120):
            m.step()
        x_inf = p.b[0] / math.sqrt(6)  # Sec. 4.2: homogeneous fixed point b~ / sqrt(n)
        assert float((m.x - x_inf).norm()) <= 1e-12  # deterministic: linear convergence, no neighbourhood
        gap = float((x_inf - p.x_star).norm())
        assert (gap <= 1e-12) if special else (gap >= 0.1)


def test_local_steps_reassemble_the_submodels(het):
    m, _ = make(het, {"name": "ist", "sketch": "perm", "stepsize": 0.05, "local_steps": 3}, seed=4,
                x0=torch.ones(6, dtype=F64))
    m.step()
    perm = torch.randperm(6, generator=generator(4, "method"))
    x = torch.ones(6, dtype=F64)
    out = torch.zeros(6, dtype=F64)
    for i in range(6):  # Algorithm 1: z <- z - gamma C_i grad f_i(z) from w_i = C_i x, then x = mean z_i
        C = torch.zeros(6, 6, dtype=F64)
        C[perm[i], perm[i]] = 6.0
        z = C @ x
        for _ in range(3):
            z = z - 0.05 * C @ (het.A[i] @ z - het.b[i])
        out += z / 6
    assert torch.allclose(m.x, out, atol=1e-13)


def test_configurations_the_paper_does_not_cover_are_refused():
    with pytest.raises(NotImplementedError, match="set 'stepsize'"):  # Theorem 1's constant: Perm-1 only
        make(Quadratic.generate(4, 6, seed=0), {"name": "ist", "sketch": "perm"})[0].theory_stepsize()
    with pytest.raises(ValueError, match="d = n"):
        make(Quadratic.generate(3, 6, seed=0), {"name": "ist", "sketch": "perm_precond", "stepsize": 0.1})
    # Remark 1: homogeneous L = [[a, c], [c, b]] with c > 2ab/(a+b) makes Wbar indefinite
    L = torch.tensor([[1.0, 0.3], [0.3, 0.1]], dtype=F64)
    p = Quadratic(L.expand(2, 2, 2).clone(), torch.zeros(2, 2, dtype=F64))
    m, _ = make(p, {"name": "ist", "sketch": "perm", "stepsize": 0.1})
    with pytest.raises(ValueError, match="Remark 1"):
        m.theta()


def test_recipe_A5_fast(tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe("A5", tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert outcome.figures and all(f.exists() for f in outcome.figures)
