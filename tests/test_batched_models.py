"""The batched MLP and CNN oracles equal the generic torch.func path (per-client autograd) to
float32 rounding, on clients of unequal sizes (padded samples weigh 0), and other modules keep the
generic path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from optsim.problems.batched_cnn import BatchedCNN
from optsim.problems.batched_mlp import BatchedMLP
from optsim.problems.neural import NeuralProblem, make_model


def _problem(activation="relu", bias=True, hidden=(16, 8), model="mlp"):
    rng = np.random.default_rng(0)
    sizes = [5, 9, 7]
    inputs = [rng.standard_normal((s, 1, 4, 4)).astype(np.float32) for s in sizes]
    targets = [rng.integers(0, 3, s) for s in sizes]
    net = make_model(model, in_shape=(1, 4, 4), classes=3, hidden=hidden, activation=activation, bias=bias, seed=1)
    return NeuralProblem(net, inputs, targets)


@pytest.mark.parametrize("activation, bias, hidden", [("relu", True, (16, 8)), ("tanh", False, (16,)),
                                                       ("relu", False, ())])
def test_gradients_and_losses_equal_the_generic_path(activation, bias, hidden):
    p = _problem(activation, bias, hidden)
    assert p._batched is not None
    X = p.initial_point().expand(3, -1) + 0.3 * torch.randn(3, p.d, generator=torch.Generator().manual_seed(2))
    fast = (p.grads(X), p.losses(X), p.sample_loss_grads(X, torch.tensor([[0, 1], [8, 3], [2, 2]])))
    p._batched = None
    slow = (p.grads(X), p.losses(X), p.sample_loss_grads(X, torch.tensor([[0, 1], [8, 3], [2, 2]])))
    torch.testing.assert_close(fast[0], slow[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast[1], slow[1], rtol=1e-6, atol=1e-6)
    for a, b in zip(fast[2], slow[2]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation, bias, hidden", [("relu", True, (8, 16)), ("tanh", False, (4,)),
                                                       ("relu", True, (4, 4, 4))])
def test_cnn_gradients_and_losses_equal_the_generic_path(activation, bias, hidden):
    p = _problem(activation, bias, hidden, model="cnn")
    assert isinstance(p._batched, BatchedCNN)
    X = p.initial_point().expand(3, -1) + 0.3 * torch.randn(3, p.d, generator=torch.Generator().manual_seed(2))
    idx = torch.tensor([[0, 1], [8, 3], [2, 2]])
    fast = (p.grads(X), p.losses(X), *p.sample_loss_grads(X, idx))
    p._batched = None
    slow = (p.grads(X), p.losses(X), *p.sample_loss_grads(X, idx))
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_other_modules_keep_the_generic_path():
    gelu_cnn = make_model("cnn", in_shape=(1, 4, 4), classes=3, hidden=(4,), activation="gelu")
    assert NeuralProblem(gelu_cnn, [np.zeros((2, 1, 4, 4), np.float32)], [np.zeros(2, int)])._batched is None
    gelu = make_model("mlp", in_shape=(1, 4, 4), classes=3, hidden=(8,), activation="gelu")
    assert BatchedMLP.of(gelu, NeuralProblem(gelu, [np.zeros((2, 1, 4, 4), np.float32)], [np.zeros(2, int)]).layout) is None
    mixed = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4), torch.nn.Tanh(),
                                torch.nn.Linear(4, 2))
    assert BatchedMLP.of(mixed, NeuralProblem(mixed, [np.zeros((2, 4), np.float32)], [np.zeros(2, int)]).layout) is None


def test_compiled_oracles_equal_the_eager_ones():
    from optsim.experiment import build_problem, parse_config

    cfg = {"problem": {"name": "neural", "clients": 3, "hidden": [8], "size": 60}, "methods": ["gd"]}
    eager = build_problem(parse_config(cfg))
    compiled = build_problem(parse_config({**cfg, "problem": {**cfg["problem"], "compile": True}}))
    X = eager.initial_point().expand(3, -1) + 0.1 * torch.randn(3, eager.d, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(compiled.grads(X), eager.grads(X), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled.losses(X), eager.losses(X), rtol=1e-5, atol=1e-6)
    gelu = {**cfg, "problem": {**cfg["problem"], "activation": "gelu", "compile": True}}
    with pytest.raises(ValueError, match="compile: true needs an MLP or CNN"):
        build_problem(parse_config(gelu))
