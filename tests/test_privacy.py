"""Client-level differential privacy in the channel: the Gaussian mechanism (bound + noise), the
epsilon column from the accountant, the privacy budget, checkpoints, refusals, and alpha-NormEC."""
from __future__ import annotations

import math

import pytest
import torch

from optsim.experiment.build import build_problem
from optsim.experiment.config import ConfigError, parse_config
from optsim.experiment.runner import Session, run_method, validate_methods
from optsim.privacy import Privatizer, clip_rows, epsilon, smoothed_normalize


def test_bounds_are_exact():
    V = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(clip_rows(V, 1.0), torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]], dtype=torch.float64))
    N = smoothed_normalize(V, 0.5)
    assert torch.allclose(N[0], V[0] / 5.5) and torch.allclose(N[1], V[1] / 1.0) and torch.equal(N[2], V[2])
    assert bool((torch.linalg.vector_norm(smoothed_normalize(V * 1e6, 0.0), dim=1) <= 1 + 1e-12).all())


@pytest.mark.parametrize("where", ["central", "local"])
def test_noise_has_the_mechanisms_scale(where):
    """central: sum_i w_i b(v_i) + sigma C max(w) z; local: sum_i w_i (b(v_i) + sigma C z_i)."""
    m, d, sigma, C = 8, 20000, 1.5, 2.0
    V = torch.zeros(m, d, dtype=torch.float64)
    w = torch.full((m,), 1.0 / m, dtype=torch.float64)
    p = Privatizer(sigma, clip=C, where=where, generator=torch.Generator().manual_seed(0))
    out = p.release(V, w)
    expect = sigma * C / m if where == "central" else sigma * C / math.sqrt(m)
    assert out.std().item() == pytest.approx(expect, rel=0.03)
    assert p.releases == 1 and math.isinf(p.epsilon())


def _cfg(method, privacy, rounds=30, **stop):
    return parse_config({"name": "dp", "seed": 0,
                         "problem": {"name": "logreg", "clients": 10, "lam": 0.1, "normalize": "standardize"},
                         "methods": [method], "stop": {"max_rounds": rounds, **stop}, "log_every": 5,
                         "privacy": privacy})


DP = {"clip": 1.0, "noise_multiplier": 1.2, "delta": 1e-5}


def test_epsilon_column_is_the_accountants_value_for_the_rounds_released():
    spec = {"name": "sgd", "sampler": {"name": "nice", "tau": 4}, "batch_size": 4, "stepsize": 0.1}
    cfg = _cfg(spec, DP)
    t = run_method(build_problem(cfg), spec, cfg, progress=False)
    assert t.status == "finished" and "gaussian(sigma=1.2" in t.meta["privacy"]
    rounds, eps = t["round"], t["epsilon"]
    for k, e in zip(rounds, eps):
        if k == 0:
            continue
        assert e == pytest.approx(epsilon(1.2, 0.4, int(k), 1e-5, sampling="fixed", population=10), rel=1e-12)
    assert all(a < b for a, b in zip(eps[1:], eps[2:]))


def test_the_run_stops_at_its_privacy_budget():
    spec = {"name": "sgd", "sampler": {"name": "nice", "tau": 4}, "batch_size": 4, "stepsize": 0.1}
    budget = epsilon(1.2, 0.4, 17, 1e-5, sampling="fixed", population=10)
    cfg = _cfg(spec, DP, rounds=1000, max_epsilon=budget)
    t = run_method(build_problem(cfg), spec, cfg, progress=False)
    assert t.status == "finished" and t["round"][-1] == 17 and t.meta["privacy_budget_reached"] == 17
    assert t["epsilon"][-1] == pytest.approx(budget, rel=1e-12) and t["epsilon"][-2] < budget
    # a budget just below that: the 17th round would overspend it, so the run stops after 16
    cfg = _cfg(spec, DP, rounds=1000, max_epsilon=budget * (1 - 1e-9))
    t = run_method(build_problem(cfg), spec, cfg, progress=False)
    assert t["round"][-1] == 16 and t["epsilon"][-1] < budget * (1 - 1e-9)


def test_without_noise_and_with_a_loose_clip_the_run_is_the_plain_one():
    spec = {"name": "gd", "stepsize": 0.5}
    plain_cfg = _cfg(spec, None)
    problem = build_problem(plain_cfg)
    plain = run_method(problem, spec, plain_cfg, progress=False)
    loose = run_method(problem, spec, _cfg(spec, {"clip": 1e9, "noise_multiplier": 0.0, "delta": 1e-5}), progress=False)
    assert all(math.isinf(e) for e in loose["epsilon"])
    assert max(abs(a - b) / abs(a) for a, b in zip(plain["loss"], loose["loss"])) < 1e-12


def test_a_private_run_resumes_exactly():
    spec = {"name": "sgd", "sampler": {"name": "nice", "tau": 4}, "batch_size": 4, "stepsize": 0.1}
    cfg = _cfg(spec, {**DP, "where": "local"}, rounds=20)
    problem = build_problem(cfg)

    def run(session, until):
        while session.running and session.k < until:
            session.step()
            session.end_round()

    whole = Session(problem, spec, cfg)
    whole.attach()
    whole.start()
    whole.end_round()
    run(whole, 20)
    half = Session(problem, spec, cfg)
    half.attach()
    half.start()
    half.end_round()
    run(half, 10)
    blob = half.state_bytes()
    again = Session(problem, spec, cfg)
    again.attach()
    again.restore(blob)
    run(again, 20)
    problem.attach(None)
    for col in ("loss", "epsilon", "bits_up"):
        assert list(again.trace[col]) == list(whole.trace[col]), col


def test_privacy_refusals():
    with pytest.raises(ConfigError, match="delta"):
        _cfg("gd", {"clip": 1.0, "noise_multiplier": 1.0})
    with pytest.raises(ConfigError, match="one of them"):
        _cfg("gd", {"clip": 1.0, "normalize": 0.1, "noise_multiplier": 1.0, "delta": 1e-5})
    with pytest.raises(ConfigError, match="clip"):
        _cfg("gd", {"clip": 0.0, "noise_multiplier": 1.0, "delta": 1e-5})
    with pytest.raises(ConfigError, match="delta"):
        _cfg("gd", {"clip": 1.0, "noise_multiplier": 1.0, "delta": 1.5})
    with pytest.raises(ConfigError, match="positive noise_multiplier"):
        _cfg("gd", {"clip": 1.0, "noise_multiplier": 0.0, "delta": 1e-5}, max_epsilon=3.0)
    with pytest.raises(ConfigError, match="needs a privacy block"):
        _cfg("gd", None, max_epsilon=3.0)
    cfg = _cfg({"name": "alpha_normec", "stepsize": 0.1}, {"normalize": 0.1, "noise_multiplier": 1.0, "delta": 1e-5})
    with pytest.raises(ConfigError, match="give privacy clip: 1"):
        validate_methods(cfg, build_problem(cfg))


def test_alpha_normec_sends_messages_of_norm_below_one_and_converges():
    spec = {"name": "alpha_normec", "stepsize": 0.05, "alpha": 0.1, "beta": 0.5}
    plain = _cfg(spec, None, rounds=3000)
    problem = build_problem(plain)
    t = run_method(problem, spec, plain, progress=False)
    assert t["grad_norm_sq"][-1] < 1e-3 * t["grad_norm_sq"][0]
    # clip 1 without noise leaves every message as it is: the same run
    same = run_method(problem, spec, _cfg(spec, {"clip": 1.0, "noise_multiplier": 0.0, "delta": 1e-5}, rounds=3000),
                      progress=False)
    assert max(abs(a - b) / abs(a) for a, b in zip(t["loss"], same["loss"])) < 1e-12


def test_fed_alpha_normec_with_one_local_step_is_alpha_normec():
    """One full-gradient local step of stepsize eta: u_i = grad f_i(x), so Fed-alpha-NormEC with
    server stepsize gamma is alpha-NormEC with stepsize gamma (up to rounding in (x - y) / eta)."""
    fed = {"name": "fed_alpha_normec", "stepsize": 0.01, "server_stepsize": 0.05, "local_steps": 1, "alpha": 0.1,
           "beta": 0.5}
    one = {"name": "alpha_normec", "stepsize": 0.05, "alpha": 0.1, "beta": 0.5}
    cfg = _cfg(one, None, rounds=200)
    problem = build_problem(cfg)
    a, b = (run_method(problem, s, cfg, progress=False) for s in (fed, one))
    assert max(abs(u - v) / abs(v) for u, v in zip(a["loss"], b["loss"])) < 1e-10


def test_fed_alpha_normec_with_client_sampling_keeps_g_the_mean_of_the_clients_memory():
    spec = {"name": "fed_alpha_normec", "stepsize": 0.05, "server_stepsize": 0.05, "local_steps": 5,
            "sampler": {"name": "nice", "tau": 3}, "beta": 0.5}
    cfg = _cfg(spec, {"clip": 1.0, "noise_multiplier": 0.0, "delta": 1e-5}, rounds=1)
    session = Session(build_problem(cfg), spec, cfg)
    session.attach()
    session.start()
    session.end_round()
    for _ in range(100):
        session.step()
        session.end_round()
    m = session.method
    assert torch.allclose(m.g, m.H.mean(0), atol=1e-13)
    assert session.trace["bits_up"][-1] == 100 * 3 * m.channel.float_bits_of() / m.n  # per client on average
    # and it trains: the loss fell well below the start
    assert session.trace["grad_norm_sq"][-1] < 1e-2 * session.trace["grad_norm_sq"][0]


def test_clip21_converges_where_clipped_gradient_descent_stalls():
    """Clip21 (EF21 with the clipping operator) reaches the exact solution on heterogeneous data;
    plain clipped GD (each client's gradient clipped, then averaged) has a fixed point with
    nonzero gradient (Khirirat et al. 2023, the paper's motivating example)."""
    base = {"name": "logreg", "clients": 10, "lam": 0.1, "normalize": "standardize", "partition": "sorted"}
    cfg = parse_config({"name": "clip21", "seed": 0, "problem": base, "methods": ["gd"],
                        "stop": {"max_rounds": 1500}, "log_every": 50})
    problem = build_problem(cfg)
    tau = 0.05
    clip21 = run_method(problem, {"name": "ef21", "compressor": {"name": "clip", "tau": tau}, "stepsize": 0.5},
                        cfg, progress=False)
    clipped = run_method(problem, {"name": "gd", "stepsize": 0.5},
                         parse_config({**cfg.model_dump(exclude={"out"}), "privacy": {"clip": tau, "noise_multiplier": 0.0,
                                                                                    "delta": 1e-5}}),
                         progress=False)
    assert clip21["grad_norm_sq"][-1] < 1e-12 * clip21["grad_norm_sq"][0]
    assert clipped["grad_norm_sq"][-1] > 1e-6 * clipped["grad_norm_sq"][0]


def test_b4_recipe_fast(tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe("B4", tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert all(f.exists() for f in outcome.figures)


def test_readme_privacy_example_runs():
    import re
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if b.startswith("privacy:"))
    raw = yaml.safe_load(block)
    raw["stop"]["max_rounds"] = 5
    cfg = parse_config(raw)
    assert [m["name"] for m in cfg.methods] == ["fedavg", "fed_alpha_normec", "ef21"]
    problem = build_problem(cfg)
    validate_methods(cfg, problem)
    t = run_method(problem, cfg.methods[1], cfg, progress=False)
    assert t.status == "finished" and 0 < t["epsilon"][-1] < 2.0
