"""The Byzantine threat model (channel, attacks, honest metrics) and the robust methods of B1-B3:
exact special cases (no Byzantines + the mean = the non-robust method), the theorems' stepsizes, and
the convergence the theory predicts (linear to f* in the homogeneous setting, B3's clipping)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optsim.channel import Channel
from optsim.experiment.build import build_problem
from optsim.experiment.config import ConfigError, parse_config
from optsim.experiment.runner import run_method
from optsim.meter import Meter
from optsim.methods import build_method
from optsim.methods.byzantine.base import honest_sampling_probabilities
from optsim.problems import LogisticRegression
from optsim.robust import Threat, alie_z, make_attack


@pytest.fixture(scope="module")
def homogeneous():
    """Logistic regression, 6 clients holding the same 40 samples (d = 6, lambda = 0.05): zeta = 0."""
    rng = np.random.default_rng(3)
    A = rng.standard_normal((40, 6))
    y = np.where(A @ rng.standard_normal(6) + 0.3 * rng.standard_normal(40) > 0, 1.0, -1.0)
    return LogisticRegression([A] * 6, [y] * 6, lam=0.05)


def _threat(n, byz, attack="none", **kw):
    mask = torch.zeros(n, dtype=torch.bool)
    mask[list(byz)] = True
    return Threat(mask, make_attack(dict(name=attack, **kw), n, len(byz)), torch.Generator().manual_seed(5))


def _build(problem, spec, threat=None, seed=0):
    meter = Meter(problem.n)
    problem.attach(meter)
    ch = Channel(meter, problem.d)
    ch.threat = threat
    return build_method(spec, problem, ch, seed), meter


def _lockstep(problem, a_spec, b_spec, rounds=60):
    a, _ = _build(problem, a_spec)
    b, _ = _build(problem, b_spec)
    x0 = torch.zeros(problem.d, dtype=problem.dtype)
    a.init(x0.clone())
    b.init(x0.clone())
    diff = 0.0
    for _ in range(rounds):
        a.step()
        b.step()
        diff = max(diff, float((a.x - b.x).abs().max()))
    problem.attach(None)
    return diff, float((a.x - x0).abs().max())


RANDK = {"name": "rand_k", "k": 2}
TOPK = {"name": "top_k", "k": 2}
MEAN = {"name": "mean"}

# (robust method, the method it reduces to with no Byzantines and the mean aggregator)
SPECIAL_CASES = {
    "byz_vr_marina": ({"name": "byz_vr_marina", "compressor": RANDK, "aggregator": MEAN, "batch_size": 3, "p": 0.3,
                       "stepsize": 0.4},
                      {"name": "vr_marina", "compressor": RANDK, "small_batch_size": 3, "p": 0.3, "stepsize": 0.4}),
    "byz_vr_marina_pp": ({"name": "byz_vr_marina_pp", "compressor": RANDK, "aggregator": {"name": "cm"},
                          "batch_size": 3, "p": 0.3, "stepsize": 0.4, "clip_mult": 0},
                         {"name": "byz_vr_marina", "compressor": RANDK, "aggregator": {"name": "cm"}, "batch_size": 3,
                          "p": 0.3, "stepsize": 0.4}),
    "byz_ef21": ({"name": "byz_ef21", "compressor": TOPK, "aggregator": MEAN, "stepsize": 0.3},
                 {"name": "ef21", "compressor": TOPK, "stepsize": 0.3}),
    "byz_ef21_bc": ({"name": "byz_ef21_bc", "compressor": TOPK, "down_compressor": {"name": "top_k", "k": 3},
                     "aggregator": MEAN, "stepsize": 0.2},
                    {"name": "ef21_bc", "compressor": TOPK, "down_compressor": {"name": "top_k", "k": 3},
                     "stepsize": 0.2}),
    "byz_dasha_page": ({"name": "byz_dasha_page", "compressor": RANDK, "aggregator": MEAN, "batch_size": 2,
                        "p": 0.25, "stepsize": 0.1},
                       {"name": "dasha_page", "compressor": RANDK, "batch_size": 2, "p": 0.25, "stepsize": 0.1}),
    "br_diana": ({"name": "br_diana", "compressor": RANDK, "aggregator": MEAN, "stepsize": 0.2},
                 {"name": "diana", "compressor": RANDK, "stepsize": 0.2}),
    "br_sgdm": ({"name": "br_sgdm", "aggregator": MEAN, "momentum": 0.0, "batch_size": 2, "stepsize": 0.3},
                {"name": "sgd", "batch_size": 2, "stepsize": 0.3}),
}


@pytest.mark.parametrize("name", list(SPECIAL_CASES))
def test_no_byzantines_and_the_mean_is_the_plain_method(name, tiny_logreg):
    robust, plain = SPECIAL_CASES[name]
    diff, moved = _lockstep(tiny_logreg, robust, plain)
    assert moved > 1e-2 and diff < 1e-12, (diff, moved)


def test_worker_momentum_scaling_is_b1s_accumulated_momentum(tiny_logreg):
    """m = beta m + (1 - beta) g with gamma equals B1's code m = beta m + g with gamma (1 - beta)."""
    a, _ = _build(tiny_logreg, {"name": "br_sgdm", "aggregator": MEAN, "momentum": 0.9, "batch_size": 2,
                                "stepsize": 0.5})
    x = torch.zeros(tiny_logreg.d, dtype=torch.float64)
    a.init(x.clone())
    m = torch.zeros(tiny_logreg.n, tiny_logreg.d, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    gen.set_state(a.ctx.generator("noise").get_state())
    for _ in range(20):
        G = tiny_logreg.minibatch_grads(x.expand(tiny_logreg.n, -1), 2, gen)
        m = 0.9 * m + G
        x = x - 0.5 * (1 - 0.9) * m.mean(0)
        a.step()
    tiny_logreg.attach(None)
    assert torch.allclose(a.x, x, atol=1e-13, rtol=0)


# ---- the threat model in the channel ---------------------------------------------------------------

def test_byzantine_rows_are_replaced_and_charged_like_honest_ones():
    meter = Meter(5)
    ch = Channel(meter, 3)
    ch.threat = _threat(5, [1, 4], "bit_flip")
    V = torch.arange(15, dtype=torch.float64).reshape(5, 3)
    R = ch.receive(V, context={})
    assert torch.equal(R[[0, 2, 3]], V[[0, 2, 3]]) and torch.equal(R[[1, 4]], -V[[1, 4]])
    u = meter.close_round()
    assert torch.equal(torch.as_tensor(u.bits_up), torch.full((5,), 3 * 32.0, dtype=torch.float64))
    # a subset of senders: rows follow `clients`
    R = ch.receive(V[:2], clients=torch.tensor([4, 0]))
    assert torch.equal(R[0], -V[0]) and torch.equal(R[1], V[1])
    # messages that are changes of what the server holds: the attack sees base + message
    R = ch.receive(V, base=torch.ones(3, dtype=torch.float64))
    assert torch.equal(R[1], -(V[1] + 1)) and torch.equal(R[0], V[0] + 1)
    # the mean the non-robust uplink computes is corrupted the same way
    assert torch.allclose(ch.uplink(V), torch.cat([V[[0, 2, 3]], -V[[1, 4]]]).mean(0))


def test_attacks_follow_their_definitions():
    H = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], dtype=torch.float64)
    own = torch.zeros(2, 3, dtype=torch.float64)
    mu, s = H.mean(0), H.std(0)
    assert torch.equal(make_attack("sign_flip", 5, 2)(H, own), (-mu).expand(2, 3))
    assert torch.allclose(make_attack({"name": "ipm", "eps": 2.0}, 5, 2)(H, own), (-2 * mu).expand(2, 3))
    assert torch.allclose(make_attack({"name": "alie", "z": 1.5}, 5, 2)(H, own), (mu - 1.5 * s).expand(2, 3))
    assert torch.equal(make_attack({"name": "mimic", "target": 1}, 5, 2)(H, own), H[1].expand(2, 3))
    assert torch.isinf(make_attack("inf", 5, 2)(H, own)).all()
    g = make_attack({"name": "gaussian", "sigma": 2.0}, 5, 2)(H, torch.zeros(4000, 3, dtype=torch.float64),
                                                           torch.Generator().manual_seed(0))
    assert abs(float(g.std()) - 2.0) < 0.05
    sb = make_attack("shift_back", 5, 2)
    ctx = {"x": torch.tensor([1.0, 1.0, 1.0]), "x0": torch.tensor([0.0, 2.0, 0.0])}
    assert torch.equal(sb(H[:1], own, None, ctx), torch.tensor([[1.0, -1.0, 1.0]] * 2, dtype=torch.float64))
    assert torch.equal(sb(H, own, None, ctx), mu.expand(2, 3))  # a minority behaves


def test_alie_z_formulas():
    assert alie_z(20, 5) == pytest.approx(0.2533471031357997, abs=1e-12)
    assert alie_z(5, 1) == 0.0
    assert alie_z(16, 3) == pytest.approx(0.09655861528963908, abs=1e-12)
    assert alie_z(20, 5, "baruch") == pytest.approx(0.5244005127080407, abs=1e-12)
    assert alie_z(5, 1, "baruch") == pytest.approx(0.2533471031357997, abs=1e-12)


def _cfg(method, byz=None, rounds=300, clients=6, partition="full", data="synthetic:logreg", **extra):
    return parse_config({"name": "byz", "dtype": "float64", "seed": 0,
                         "problem": {"name": "logreg", "data": data, "clients": clients, "size": 120, "dim": 6,
                                     "partition": partition, "lam": 0.05},
                         "methods": [method], "stop": {"max_rounds": rounds}, "byzantine": byz, **extra})


def test_label_flip_corrupts_the_byzantine_clients_data_and_metrics_are_the_honest_objective():
    cfg = _cfg("gd", {"count": 2, "attack": "label_flip"}, partition="iid")
    flipped = build_problem(cfg)
    clean = build_problem(_cfg("gd", None, partition="iid"))
    x = torch.randn(clean.d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    X = x.expand(clean.n, -1)
    Gf, Gc = flipped.grads(X), clean.grads(X)
    assert torch.allclose(Gf[:4], Gc[:4]) and not torch.allclose(Gf[4:], Gc[4:])
    t = run_method(flipped, {"name": "gd"}, cfg, progress=False)
    honest = clean.subset(torch.arange(4))
    assert t.meta["byzantine"].startswith("2 Byzantine")
    x0 = torch.zeros(clean.d, dtype=torch.float64)
    assert t["f_gap"][0] == pytest.approx(honest.loss(x0) - honest.f_star, rel=1e-9)
    # GD averages the flipped clients in: it converges to another point, a gap of the honest objective stays
    assert t["f_gap"][-1] > 1e-3


def test_config_refuses_impossible_threats():
    with pytest.raises(ConfigError, match="did you mean 'alie'"):
        _cfg("gd", {"count": 1, "attack": "alei"})
    with pytest.raises(ConfigError, match="count or as fraction"):
        _cfg("gd", {"attack": "ipm"})
    cfg = _cfg({"name": "byz_vr_marina", "aggregator": "cm", "stepsize": 0.1}, {"count": 3, "attack": "ipm"})
    t = run_method(build_problem(cfg), cfg.methods[0], cfg, progress=False)
    assert t.status == "failed" and "strict honest majority" in t.meta["message"]


# ---- theory --------------------------------------------------------------------------------------

def test_b1_theorem_stepsize(homogeneous):
    m, _ = _build(homogeneous, {"name": "byz_vr_marina", "compressor": RANDK, "aggregator": MEAN, "batch_size": 4})
    p, w, b, G = m.p, m.omega, 4, 6
    assert p == pytest.approx(min(4 / 40, 1 / (1 + w)))
    L = math.sqrt(float(homogeneous.L_i.pow(2).mean()))
    Ll = math.sqrt(float((homogeneous.L_samples.pow(2).sum(1) / homogeneous.m).mean()))
    A = 6 * (1 - p) / p * (1 / (2 * G)) * (w * L ** 2 + (1 + w) * Ll ** 2 / b) + 6 * (1 - p) / p * (w / (2 * G)) * L ** 2
    mu = homogeneous.mu
    assert m.gamma == pytest.approx(min(1 / (L + math.sqrt(2 * A)), p / (4 * mu)), rel=1e-12)
    # with Byzantines the aggregator's c is needed; none of the implemented ones has a confirmed one
    byz, _ = _build(homogeneous, {"name": "byz_vr_marina", "compressor": RANDK, "aggregator": "cm", "batch_size": 4},
                    _threat(6, [5], "ipm"))
    with pytest.raises(NotImplementedError, match="aggregator_c"):
        byz.gamma
    byz, _ = _build(homogeneous, {"name": "byz_vr_marina", "compressor": RANDK, "aggregator": "cm", "batch_size": 4,
                                  "aggregator_c": 2.0}, _threat(6, [5], "ipm"))
    cd, G = 2.0 / 6, 5
    A = 6 * (1 - p) / p * (4 * cd / p + 1 / (2 * G)) * (w * L ** 2 + (1 + w) * Ll ** 2 / b) \
        + 6 * (1 - p) / p * (4 * cd * (1 + w) / p + w / (2 * G)) * L ** 2
    assert byz.gamma == pytest.approx(min(1 / (L + math.sqrt(2 * A)), p / (4 * mu)), rel=1e-12)
    homogeneous.attach(None)


def test_b3_sampling_probabilities_match_the_hypergeometric_values():
    assert honest_sampling_probabilities(20, 15, 4, 0.25) == pytest.approx((0.751289989680, 0.225), abs=1e-12)
    assert honest_sampling_probabilities(20, 15, 1, 0.25) == pytest.approx((0.75, 1 / 15), abs=1e-12)
    assert honest_sampling_probabilities(20, 15, 2, 0.25) == pytest.approx((0.552631578947, 2 / 15), abs=1e-12)
    assert honest_sampling_probabilities(20, 15, 20, 0.25) == pytest.approx((1.0, 1.0))
    assert honest_sampling_probabilities(10, 8, 5, 0.2) == pytest.approx((0.777777777778, 0.535714285714), abs=1e-12)
    # (1 - delta) C = 11 exactly: the float product rounds above 11
    assert honest_sampling_probabilities(40, 30, 20, 0.45)[0] == pytest.approx(
        sum(math.comb(30, t) * math.comb(10, 20 - t) for t in range(11, 21)) / math.comb(40, 20), rel=1e-12)


def test_b3_theorem_stepsize_full_participation(homogeneous):
    m, _ = _build(homogeneous, {"name": "byz_vr_marina_pp", "aggregator": MEAN, "batch_size": 4})
    Ls = float(homogeneous.L_samples.max())
    p = m.p
    A = 32 * 1 * 6 * 1 * 11 / (p ** 2 * 6)  # p_G = P_GC = 1, omega = 0, delta = 0, C = n = 6
    assert m.clip_mult == pytest.approx(2 * Ls)
    assert m.gamma == pytest.approx(1 / (Ls * (1 + math.sqrt(2 * A))), rel=1e-12)
    homogeneous.attach(None)


# ---- what the theory predicts ------------------------------------------------------------------------

@pytest.mark.parametrize("attack", ["bit_flip", "ipm", "alie", "label_flip", "sign_flip"])
def test_byz_vr_marina_converges_linearly_to_f_star_in_the_homogeneous_setting(attack):
    """B1 Theorem 2.2 with zeta = 0: linear convergence to the exact optimum under every attack,
    while robust SGD with momentum stalls at its noise floor."""
    agg = {"name": "cm", "bucketing": 2}
    byz = {"count": 1, "attack": attack}
    cfg = _cfg({"name": "byz_vr_marina", "aggregator": agg, "batch_size": 8, "stepsize": 0.5}, byz, rounds=500,
               clients=5)
    problem = build_problem(cfg)
    t = run_method(problem, cfg.methods[0], cfg, progress=False)
    assert t["f_gap"][-1] < 1e-10, t["f_gap"][-1]
    s = run_method(problem, {"name": "br_sgdm", "aggregator": agg, "batch_size": 8, "stepsize": 0.5}, cfg,
                   progress=False)
    assert s["f_gap"][-1] > 1e-5


def test_b3_clipping_survives_rounds_with_a_byzantine_majority():
    """B3: with partial participation (C = 2 of 10, 3 Byzantine) some rounds sample only Byzantine
    clients; under shift-back, clipped differences still converge, unclipped ones do not."""
    base = {"name": "byz_vr_marina_pp", "sampler": {"name": "nice", "tau": 2}, "aggregator": {"name": "cm"},
            "batch_size": 8, "stepsize": 0.5, "p": 0.1}
    cfg = _cfg(base, {"count": 3, "attack": "shift_back"}, rounds=600, clients=10)
    problem = build_problem(cfg)
    clipped = run_method(problem, dict(base, clip_mult=2.0), cfg, progress=False)
    plain = run_method(problem, dict(base, clip_mult=0), cfg, progress=False)
    assert clipped["f_gap"][-1] < 1e-8, clipped["f_gap"][-1]
    assert plain["f_gap"][-1] > 1e-2 * plain["f_gap"][0], (plain["f_gap"][-1], plain["f_gap"][0])


def test_threats_are_refused_before_the_run_and_on_processes():
    from optsim.distributed.launcher import launch
    from optsim.experiment.runner import validate_methods

    krum = _cfg({"name": "byz_ef21", "compressor": TOPK, "aggregator": "krum", "stepsize": 0.1},
                {"count": 3, "attack": "ipm"}, clients=7)
    with pytest.raises(ConfigError, match=r"krum"):
        validate_methods(krum, build_problem(krum))
    majority = _cfg({"name": "byz_ef21", "compressor": TOPK, "aggregator": "cm", "stepsize": 0.1},
                    {"count": 3, "attack": "ipm"})
    with pytest.raises(ConfigError, match="strict honest majority"):
        validate_methods(majority, build_problem(majority))
    everyone = _cfg("gd", {"count": 6, "attack": "ipm"})
    with pytest.raises(ConfigError, match="at least one client must be honest"):
        validate_methods(everyone, build_problem(_cfg("gd")))
    with pytest.raises(ValueError, match="simulated by `optsim run` only"):
        launch(_cfg("gd", {"count": 1, "attack": "ipm"}), 2)


def test_cli_lists_attacks_and_aggregators(capsys):
    from optsim.cli import main

    assert main(["list", "attacks"]) == 0
    out = capsys.readouterr().out
    assert all(a in out for a in ("alie", "ipm", "shift_back", "label_flip", "eps=0.1"))
    assert main(["list", "aggregators"]) == 0
    out = capsys.readouterr().out
    assert all(a in out for a in ("cm", "tm", "gm", "krum", "multi_krum", "cc", "bucketing"))


@pytest.mark.parametrize("rid", ["B1", "B2", "B3"])
def test_recipe_fast_passes(rid, tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe(rid, tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert outcome.figures and all(p.exists() for p in outcome.figures)


def test_readme_byzantine_example_parses():
    import re
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if b.startswith("byzantine:"))
    cfg = parse_config(yaml.safe_load(block))
    assert cfg.byzantine.count == 1 and [m["name"] for m in cfg.methods] == ["byz_vr_marina", "br_sgdm"]


def test_clipping_heuristic_is_b3_eq_10(tiny_logreg):
    """g^k = g^{k-1} + Agg(clip_{lambda_k}(v_i - g^{k-1})), lambda_k = lambda gamma ||g^{k-1}||."""
    m, _ = _build(tiny_logreg, {"name": "br_sgdm", "aggregator": MEAN, "stepsize": 0.5, "clip_heuristic": 2.0})
    m.init(torch.zeros(tiny_logreg.d, dtype=torch.float64))
    g = torch.Generator().manual_seed(1)
    V1 = torch.randn(6, tiny_logreg.d, dtype=torch.float64, generator=g)
    first = m.robust_aggregate(V1)
    assert torch.allclose(first, V1.mean(0))  # the first round aggregates plainly
    V2 = torch.randn(6, tiny_logreg.d, dtype=torch.float64, generator=g) * 5
    tau = 2.0 * 0.5 * float(first.norm())
    D = V2 - first
    expect = first + (D * torch.clamp(tau / D.norm(dim=1, keepdim=True), max=1.0)).mean(0)
    assert torch.allclose(m.robust_aggregate(V2), expect, atol=1e-14)
    tiny_logreg.attach(None)


def test_clipping_heuristic_helps_momentum_sgd_under_shift_back():
    """B3's heuristic on BR-SGDm with 4 of 20 clients sampled (5 Byzantine, shift-back)."""
    spec = {"name": "br_sgdm", "sampler": {"name": "nice", "tau": 4}, "aggregator": {"name": "cm", "bucketing": 2},
            "batch_size": 8, "stepsize": 0.5}
    cfg = _cfg(spec, {"count": 5, "attack": "shift_back"}, rounds=600, clients=20)
    with pytest.warns(UserWarning, match="bucketing theorem"):
        problem = build_problem(cfg)
        plain = run_method(problem, spec, cfg, progress=False)
        clipped = run_method(problem, {**spec, "clip_heuristic": 10.0}, cfg, progress=False)
    tail = lambda t: float(np.mean(t["f_gap"][len(t) // 2:]))  # noqa: E731  (SGD's noise floor)
    assert tail(clipped) < 0.5 * tail(plain), (tail(clipped), tail(plain))


def test_the_threat_model_is_part_of_a_runs_identity():
    from optsim.experiment.store import run_hash

    cfgs = [parse_config({"problem": {"name": "quadratic"}, "methods": ["gd"], "byzantine": b})
            for b in ({"count": 1, "attack": "ipm"}, {"count": 1, "attack": "alie"}, {"count": 2, "attack": "ipm"}, None)]
    assert len({run_hash(c, c.methods[0]) for c in cfgs}) == 4
