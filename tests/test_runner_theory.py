"""The core methods against their theory, and the runner's accounting, stop rules and errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optsim.cli import main
from optsim.experiment import ConfigError, parse_config, run, run_method
from optsim.experiment.runner import validate_methods
from optsim.methods import build_method
from optsim.methods.base import Context
from optsim.problems import LogisticRegression, Quadratic

N, M, D, K = 10, 40, 12, 3


@pytest.fixture(scope="module")
def logreg():
    """Strongly convex logistic regression, 10 clients x 40 samples x 12 features, lambda = 0.1."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((N * M, D))
    y = np.where(A @ rng.standard_normal(D) + rng.standard_normal(N * M) > 0, 1.0, -1.0)
    return LogisticRegression([A[i * M:(i + 1) * M] for i in range(N)], [y[i * M:(i + 1) * M] for i in range(N)],
                              lam=0.1)


def cfg(rounds=3000, tol=None, **extra):
    stop = {"max_rounds": rounds, **({"tol": tol} if tol else {})}
    stop.update(extra.pop("stop", {}))
    return parse_config({"problem": {"name": "logreg"}, "methods": ["gd"], "stop": stop, "log_every": 10, **extra})


RANDK = {"name": "rand_k", "k": K}
TOPK = {"name": "top_k", "k": K}


@pytest.mark.parametrize("spec", [{"name": "gd"}, {"name": "diana", "compressor": RANDK},
                                  {"name": "ef21", "compressor": TOPK}], ids=["gd", "diana", "ef21"])
def test_theory_stepsize_reaches_1e_10(logreg, spec):
    trace = run_method(logreg, spec, cfg(5000, tol=1e-11), progress=False)
    assert trace.status == "finished" and trace.meta.get("reached_tol")
    assert trace.last("f_gap") <= 1e-10
    assert trace.last("dist_sq") <= 1e-8


def test_dcgd_plateaus_where_diana_converges(logreg):
    diana = run_method(logreg, {"name": "diana", "compressor": RANDK}, cfg(3000), progress=False)
    same = {"name": "dcgd", "compressor": RANDK, "stepsize": diana.meta["stepsize"]}
    dcgd = run_method(logreg, same, cfg(3000), progress=False)
    assert diana.last("f_gap") < 1e-12
    tail = dcgd["f_gap"][len(dcgd) // 2:]
    assert tail.min() > 1e-6, "DCGD with rand-k should stall in a neighbourhood, far above DIANA"


def test_gd_follows_the_linear_rate(logreg):
    """f(x_k) - f* <= (1 - mu/L)^k (f(x_0) - f*) for GD with stepsize 1/L."""
    t = run_method(logreg, {"name": "gd"}, cfg(200), progress=False)
    rate = 1 - logreg.mu / logreg.L
    bound = t["f_gap"][0] * rate ** t["round"]
    ok = t["f_gap"] <= bound * (1 + 1e-9) + 1e-15
    assert ok.all()


def test_bits_in_trace_equal_the_formula(logreg):
    idx = math.ceil(math.log2(D))
    t = run_method(logreg, {"name": "diana", "compressor": RANDK}, cfg(50), progress=False)
    r = t["round"]
    assert np.array_equal(t["bits_up"], r * K * (32 + idx))
    assert np.array_equal(t["bits_down"], r * D * 32)
    assert np.array_equal(t["grad_evals"], r)
    t = run_method(logreg, {"name": "ef21", "compressor": TOPK}, cfg(50), progress=False)
    assert np.array_equal(t["bits_up"], D * 32 + t["round"] * K * (32 + idx))  # g_i^0 sent in full
    t = run_method(logreg, {"name": "diana", "compressor": RANDK}, cfg(50, float_bits=64), progress=False)
    assert t.last("bits_up") == 50 * K * (64 + idx)


def test_same_seed_same_trace_and_component_seeds_are_independent(logreg):
    spec = {"name": "diana", "compressor": RANDK}
    a = run_method(logreg, spec, cfg(100), progress=False)
    b = run_method(logreg, spec, cfg(100), progress=False)
    assert a.rows["f_gap"] == b.rows["f_gap"] and a.rows["bits_up"] == b.rows["bits_up"]
    c = run_method(logreg, spec, cfg(100, seeds={"compressor": 123}), progress=False)
    assert c.rows["f_gap"] != a.rows["f_gap"]
    # the sampler's stream does not depend on the compressor's seed or on compressor draws
    ctx1 = Context(logreg, None, seed=0)
    ctx2 = Context(logreg, None, seed=0, seeds={"compressor": 123})
    torch.rand(100, generator=ctx2.generator("compressor"))
    s1 = torch.randperm(N, generator=ctx1.generator("sampler"))
    s2 = torch.randperm(N, generator=ctx2.generator("sampler"))
    assert torch.equal(s1, s2)


def test_divergence_is_recorded_with_partial_trace(logreg):
    t = run_method(logreg, {"name": "gd", "stepsize_mult": 50}, cfg(2000), progress=False)
    assert t.status == "diverged"
    assert len(t) >= 1 and ("blew up" in t.meta["message"] or "non-finite" in t.meta["message"])


def test_stop_rules_bits_and_time(logreg):
    idx = math.ceil(math.log2(D))
    per_round = K * (32 + idx)
    t = run_method(logreg, {"name": "diana", "compressor": RANDK},
                   cfg(1000, stop={"max_bits": 10 * per_round}), progress=False)
    assert t.last("round") == 10 and t.last("bits_up") == 10 * per_round
    # tau_i = i seconds per gradient: a synchronous round waits for the slowest client (n seconds)
    t = run_method(logreg, {"name": "gd"}, cfg(1000, time={"compute": "linear"}, stop={"max_sim_time": 55}),
                   progress=False)
    assert t.last("sim_time") == pytest.approx(N * t.last("round"))
    assert t.last("round") == 6
    # links: latency + bits / bandwidth are added to the slowest client's compute time
    t = run_method(logreg, {"name": "gd"}, cfg(4, time={"compute": 0.0, "latency_up": 1.0, "bandwidth_up": D * 32,
                                                       "latency_down": 0.5, "bandwidth_down": D * 32 / 2}),
                   progress=False)
    assert t.last("sim_time") == pytest.approx(4 * (1 + 1 + 0.5 + 2))


def test_quadratic_gd_exact_solution():
    q = Quadratic.generate(5, 8, L=1.0, mu=0.1, heterogeneity=0.3, seed=1)
    c = parse_config({"problem": {"name": "quadratic"}, "methods": ["gd"], "stop": {"max_rounds": 1000, "tol": 1e-14}})
    t = run_method(q, {"name": "gd"}, c, progress=False)
    assert t.meta.get("reached_tol") and t.last("dist_sq") < 1e-12


def test_clear_errors(logreg):
    with pytest.raises(ConfigError, match="did you mean 'diana'"):
        parse_config({"problem": {"name": "logreg"}, "methods": ["dianna"]})
    with pytest.raises(ConfigError, match="unknown key; did you mean 'stepsize'"):
        parse_config({"problem": {"name": "logreg"}, "methods": [{"name": "gd", "stepsze": 1}]})
    with pytest.raises(ConfigError, match="greater than 0"):
        parse_config({"problem": {"name": "logreg"}, "methods": [{"name": "gd", "stepsize": -1}]})
    with pytest.raises(ConfigError, match=r"stop.max_round.*did you mean 'max_rounds'"):
        parse_config({"problem": {"name": "logreg"}, "methods": ["gd"], "stop": {"max_round": 5}})
    with pytest.raises(ConfigError, match="unknown key; did you mean 'clients'"):
        parse_config({"problem": {"name": "logreg", "client": 5}, "methods": ["gd"]})
    for name, typo, fix in (("sphere_pca", "dimm", "dim"), ("stiefel_pca", "pp", "p"), ("karcher_spd", "kk", "k"),
                            ("quadratic_game", "muu", "mu"), ("linear_system", "roww", "rows")):
        # every problem kind names its own fields (the union's tag is not part of the key's path)
        with pytest.raises(ConfigError, match=rf"^config error: problem\.{typo}: unknown key; did you mean '{fix}'\? "
                                              rf"\(allowed: .*\b{fix}\b"):
            parse_config({"problem": {"name": name, typo: 3}, "methods": ["gd"]})
    bad_k = parse_config({"problem": {"name": "logreg"}, "methods": [{"name": "diana", "compressor": {"name": "rand_k", "k": 99}}]})
    with pytest.raises(ConfigError, match="k = 99 but the dimension is d = 12"):
        validate_methods(bad_k, logreg)
    biased = parse_config({"problem": {"name": "logreg"}, "methods": [{"name": "diana", "compressor": TOPK}]})
    with pytest.raises(ConfigError, match="needs an unbiased compressor"):
        validate_methods(biased, logreg)
    with pytest.raises(ConfigError, match="takes no compressor"):
        parse_config({"problem": {"name": "logreg"}, "methods": [{"name": "gd", "compressor": TOPK}]})


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("problem: {name: logreg, data: 'libsvm:a9a'}\nmethods: [gd]\n")
    monkeypatch.setenv("OPTSIM_DATA", str(tmp_path / "data"))
    assert main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path / "data" / "a9a") in err


def test_run_writes_traces_and_figures(tmp_path):
    c = parse_config({"name": "t", "problem": {"name": "logreg", "data": "synthetic:logreg", "size": 200, "dim": 6,
                                               "clients": 4},
                      "methods": ["gd", {"name": "diana", "compressor": {"name": "rand_k", "k": 2}}],
                      "stop": {"max_rounds": 30}})
    traces = run(c, tmp_path, progress=False)
    assert [t.status for t in traces] == ["finished", "finished"]
    assert (tmp_path / "traces" / "gd.json").exists() and (tmp_path / "traces" / "diana.json").exists()
    assert (tmp_path / "t_f_gap.png").stat().st_size > 1000 and (tmp_path / "t_f_gap.pdf").exists()


@pytest.mark.parametrize("what", ["methods", "compressors", "problems", "datasets", "samplers"])
def test_cli_list_and_info(what, capsys, tmp_path):
    assert main(["list", what]) == 0
    out = capsys.readouterr().out
    assert {"methods": "diana", "compressors": "top_k", "problems": "logreg", "datasets": "libsvm:a9a",
            "samplers": "nice"}[what] in out
    if what == "problems":
        cfg = tmp_path / "c.yaml"
        cfg.write_text("problem: {name: logreg, data: 'synthetic:logreg', size: 100, dim: 4, clients: 5}\nmethods: [gd]\n")
        assert main(["info", str(cfg)]) == 0
        info = capsys.readouterr().out
        for key in ("L_tilde", "kappa", "f*", "L_i max", "mu"):
            assert key in info
