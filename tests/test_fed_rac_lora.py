"""Fed-RAC-LoRA (Malinovsky et al., arXiv 2410.08305): one RAC-LoRA link per round over clients."""
from __future__ import annotations

import pytest
import torch
from _methods import make

from optsim.optim import RACLoRA
from optsim.optim.lora import rac_lora_rate, rac_lora_step, sample_factor
from optsim.problems import Quadratic
from optsim.rng import generator

F64 = torch.float64


@pytest.fixture(scope="module")
def het():
    return Quadratic.generate(4, 12, L=1.0, mu=0.2, heterogeneity=0.3, seed=1)


@pytest.mark.parametrize("side", ["left", "right"])
def test_one_local_step_is_the_projected_step_on_f(het, side):
    """With one local step the averaged factor merges into W - gamma H grad f(W) (the projection is linear)."""
    x0 = torch.randn(12, generator=torch.Generator().manual_seed(0), dtype=F64)
    m, meter = make(het, {"name": "fed_rac_lora", "rank": 2, "side": side, "stepsize": 0.7}, seed=3, x0=x0)
    m.step()
    shape = (3, 2) if side == "left" else (2, 4)
    Fs = sample_factor(shape, side, "gaussian", generator(3, "method"))
    want = rac_lora_step(x0.reshape(3, 4), het.full_grad(x0).reshape(3, 4), Fs, side, 0.7).reshape(12)
    assert torch.allclose(m.x, want, atol=1e-13)
    meter.close_round()
    floats = 2 * 4 if side == "left" else 3 * 2  # the trained factor, up and down
    assert float(meter.bits_up.sum()) == 4 * floats * 32
    assert float(meter.bits_down.sum()) == 4 * (12 + floats) * 32  # W^0 at init, then the average


def test_one_client_equals_the_rac_lora_optimizer():
    p = Quadratic.generate(1, 12, L=1.0, mu=0.2, seed=2)
    m, _ = make(p, {"name": "fed_rac_lora", "rank": 2, "shape": (3, 4)}, seed=5)
    W = torch.nn.Parameter(torch.zeros(3, 4, dtype=F64))
    opt = RACLoRA([W], lr=m.gamma, rank=2, train="A", precondition=True, chain=1, generator=generator(5, "method"))
    for _ in range(40):
        m.step()
        W.grad = p.full_grad(W.detach().reshape(12)).reshape(3, 4)
        opt.step()
        assert torch.allclose(m.x, W.detach().reshape(12), atol=1e-13, rtol=0)


def test_default_stepsize_converges_linearly_to_the_full_solution(het):
    """gamma = 1/L, one local step: E[f - f*] <= (1 - mu r/(L m))^t (f(x^0) - f*) (mean over 40 seeds at
    every round), and a run reaches the full-parameter solution x* to 1e-10 (no stall in a subspace)."""
    rate = rac_lora_rate(het.mu, het.L, 1, 3)
    K, R = 40, 40
    gaps = torch.zeros(R, K + 1, dtype=F64)
    for seed in range(R):
        m, _ = make(het, {"name": "fed_rac_lora", "rank": 1}, seed=seed, x0=torch.ones(12, dtype=F64))
        assert m.gamma == pytest.approx(1 / het.L)
        gaps[seed, 0] = het.loss(m.x) - het.f_star
        for t in range(K):
            m.step()
            gaps[seed, t + 1] = het.loss(m.x) - het.f_star
    bound = gaps[0, 0] * rate ** torch.arange(K + 1, dtype=F64)
    assert bool((gaps.mean(0) <= bound * (1 + 1e-12)).all())
    m, _ = make(het, {"name": "fed_rac_lora", "rank": 1})
    for _ in range(800):
        m.step()
    assert float((m.x - het.x_star).norm()) <= 1e-10


def test_errors(het):
    with pytest.raises(ValueError, match="m n = 12"):
        make(het, {"name": "fed_rac_lora", "shape": (5, 2)})
    with pytest.raises(ValueError, match="rank <= 3"):
        make(het, {"name": "fed_rac_lora", "rank": 4})
    with pytest.raises(NotImplementedError, match="set 'stepsize'"):
        make(het, {"name": "fed_rac_lora", "precondition": False})[0].theory_stepsize()
