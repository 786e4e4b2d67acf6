"""Federated Langevin samplers (optsim.methods.langevin): exact equivalences (identity compressors,
p = 1), ULA's stationary law for a Gaussian target (its O(h) bias, in closed form), bits and oracle
calls counted by the meter like an optimization method's, and the P3/P4 recipes in fast mode."""
from __future__ import annotations

import pytest
import torch

from optsim import targets as T
from optsim.compress.base import index_bits
from optsim.methods.langevin import (
    ELF,
    ULA,
    CompressedULA,
    LangevinMARINA,
    run_langevin,
)

DT = torch.float64


def chains(C, d, seed=0, shift=2.0):
    return shift + 0.5 * torch.randn(C, d, generator=torch.Generator().manual_seed(seed), dtype=DT)


@pytest.fixture(scope="module")
def target():
    return T.GaussianClients.random(4, 5, spread=2.0, seed=3)


def test_elf_with_identity_compressors_is_ula(target):
    X0 = chains(50, 5)
    ula = ULA(target, 0.2)
    run_langevin(ula, X0, 30)
    for variant in ("P", "D", "B", "LMC"):
        s = ELF(target, 0.2, variant, compressor="identity")
        run_langevin(s, X0, 30)
        assert torch.equal(s.X, ula.X), variant


def test_langevin_marina_special_cases_are_ula(target):
    X0 = chains(50, 5)
    ula = ULA(target, 0.2)
    run_langevin(ula, X0, 30)
    full = LangevinMARINA(target, 0.2, {"name": "rand_k", "k": 2}, p=1.0)
    run_langevin(full, X0, 30)
    assert torch.equal(full.X, ula.X)  # p = 1: the gradient is recomputed every step
    ident = LangevinMARINA(target, 0.2, "identity", p=0.3)
    run_langevin(ident, X0, 30)  # identity differences telescope to the gradient
    assert torch.allclose(ident.X, ula.X, rtol=0, atol=1e-10)


def test_ula_stationary_law_has_the_closed_form_bias(target):
    """For a Gaussian target ULA with step h is stationary at N(m, P^-1 (I - hP/2)^-1)."""
    h = 0.8  # h L / 2 about 0.55: a bias far above the Monte Carlo error
    C = 10000
    s = ULA(target, h)
    run_langevin(s, target.sample(C, torch.Generator().manual_seed(1)), 60, log_every=60)
    cov_h = target.ula_stationary_cov(h)
    emp = T.sample_cov(s.X)
    se = torch.sqrt((torch.diagonal(cov_h)[:, None] * torch.diagonal(cov_h)[None, :] + cov_h ** 2) / C)
    assert (torch.abs(emp - cov_h) <= 5 * se).all()
    assert (torch.abs(s.X.mean(0) - target.mean) <= 5 * torch.sqrt(torch.diagonal(cov_h) / C)).all()
    assert float(torch.abs(torch.diagonal(emp - target.cov)).max()) > 20 * float(se.max())  # the O(h) bias


def test_bits_and_oracle_calls_are_counted_per_client_and_chain(target):
    d, K, k = 5, 12, 2
    sparse = k * (32 + index_bits(d))
    runs = {
        "ula": (ULA(target, 0.1), K * d * 32, K * d * 32, K),
        "d-elf": (ELF(target, 0.1, "D", {"name": "top_k", "k": k}), d * 32 + K * sparse, (K + 1) * d * 32, K + 1),
        "p-elf": (ELF(target, 0.1, "P", {"name": "top_k", "k": k}), (K + 1) * d * 32, d * 32 + K * sparse, K + 1),
        "b-elf": (ELF(target, 0.1, "B", {"name": "top_k", "k": k}), d * 32 + K * sparse, d * 32 + K * sparse, K + 1),
        "naive": (CompressedULA(target, 0.1, {"name": "top_k", "k": k}), K * sparse, K * d * 32, K),
        "marina p~0": (LangevinMARINA(target, 0.1, {"name": "rand_k", "k": k}, p=1e-12), d * 32 + K * sparse,
                       (K + 1) * d * 32, K + 1),
    }
    for name, (s, up, down, grads) in runs.items():
        tr = run_langevin(s, chains(30, d), K, log_every=K)  # 30 chains: the bits of one chain are counted
        assert tr["bits_up"][-1] == up and tr["bits_down"][-1] == down, name
        assert tr["grad_evals"][-1] == grads and tr["comm_rounds"][-1] == K + (grads > K), name


def test_bad_inputs_are_refused_at_construction(target):
    with pytest.raises(ValueError, match="unbiased"):
        LangevinMARINA(target, 0.1, {"name": "top_k", "k": 2})
    with pytest.raises(ValueError, match="variant"):
        ELF(target, 0.1, "X")
    with pytest.raises(ValueError, match="ClientTarget"):
        ULA(T.Gaussian([0.0], 1.0), 0.1)
    with pytest.raises(ValueError, match="step"):
        ULA(target, -1.0)


@pytest.mark.parametrize("rid", ["P3", "P4"])
def test_recipe_fast_passes(rid, tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe(rid, tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert outcome.figures and all(f.exists() for f in outcome.figures)
