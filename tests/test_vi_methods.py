"""Variational inequalities as runnable problems (``quadratic_game``) with registered methods: the game's
oracles are its clients' operators and its payoff's players' gradients; the registered clipped-SEG / SGDA and
their shifted versions equal the batched step functions of ``methods/heavy_tailed/vi.py`` iterate for iterate
(same generator); without clipping and noise clipped-SEG is the extragradient method, whose iterates are the
closed-form powers of its iteration matrix; a config run drives ||z - z*||^2 to the float64 floor; methods for
minimization are refused on a game and VI methods on a minimization problem."""
from __future__ import annotations

import math

import pytest
import torch

from optsim.experiment import ConfigError, build_problem, parse_config, run_method
from optsim.experiment.runner import validate_methods
from optsim.meter import Meter
from optsim.methods.heavy_tailed import (
    clipped_seg_step,
    clipped_sgda_step,
    shifted_seg_step,
    shifted_sgda_step,
)
from optsim.problems.minmax import GameProblem, QuadraticMinMax
from optsim.rng import generator

HEAVY = {"kind": "student_t", "tail": 1.5}


def _game(**kw):
    return {"name": "quadratic_game", **kw}


def _run(problem, spec, K, seed=0, x0=None):
    cfg = parse_config({"problem": _game(), "methods": [spec], "log_every": 1, "seed": seed, "stop": {"max_rounds": K}})
    out = {}
    tr = run_method(problem, spec, cfg, progress=False, x0=x0,
                    on_end=lambda s: out.setdefault("x", s.method.x.clone()))
    return tr, out["x"]


# ---- the problem ---------------------------------------------------------------------------------------------------
def test_game_problem_operators_payoff_constants_and_noise():
    vi = QuadraticMinMax.strongly_monotone(3, mu=0.2, seed=4, noise=0.7, noise_law=HEAVY)
    p = GameProblem(vi, clients=4, spread=2.0, seed=1)
    assert p.operator is vi and p.n == 4 and p.d == 6
    assert p.L == pytest.approx(vi.L, rel=1e-15) and torch.equal(p.L_i, torch.full((4,), vi.L, dtype=torch.float64))
    assert p.mu == pytest.approx(0.2, rel=1e-12) and p.f_star is None
    assert torch.allclose(p.x_star, vi.z_star, rtol=0, atol=0)
    assert float(p.full_grad(p.x_star).norm()) <= 1e-13  # F(z*) = 0, each F_i(z*) = e_i != 0
    assert torch.allclose(p._grads(p.x_star.expand(4, 6), None), p.E, atol=1e-13) and float(p.E.norm()) > 1
    assert GameProblem(QuadraticMinMax.bilinear(3, seed=4), clients=2).mu is None
    # the operator rows are the players' gradients of the payoffs (grad_x f_i, -grad_y f_i); f = their mean
    Z = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    p._losses(Z, None).sum().backward()
    G = Z.grad.clone()
    G[:, 3:] *= -1
    assert torch.allclose(G, p._grads(Z.detach(), None), rtol=0, atol=1e-13)
    z = Z.detach()[0]
    assert p.loss(z) == pytest.approx(float(vi.M[:3, :3].mv(z[:3]) @ z[:3] / 2 + z[:3] @ vi.M[:3, 3:].mv(z[3:])
                                            - z[3:] @ vi.M[3:, 3:].mv(z[3:]) / 2 - vi.c[:3] @ z[:3] + vi.c[3:] @ z[3:]),
                                      rel=1e-13)
    # the stochastic oracle is the client operator's draw, row for row; counted b per client
    meter = Meter(4)
    p.attach(meter)
    X = z.expand(4, 6)
    got = p.minibatch_grads(X, 1, generator(3, "noise"))
    want = vi.client_operator(p.E)(z.unsqueeze(0), generator(3, "noise"))[0]
    assert torch.equal(got, want)
    p.minibatch_grads(X[:2], 5, generator(3, "noise"), clients=[0, 2])
    meter.close_round()
    assert meter.snapshot()["grad_evals"] == pytest.approx((4 + 2 * 5) / 4)
    assert math.isinf(p.noise_variance()) and p.noise_moment_bound(1.2) == pytest.approx(vi.noise_moment_bound(1.2))
    with pytest.raises(ValueError, match="kind must be bilinear or strongly_monotone"):
        GameProblem.generate("convex")


# ---- registered methods = the batched step functions ---------------------------------------------------------------
@pytest.mark.parametrize("name, step", [("clipped_seg", clipped_seg_step), ("clipped_sgda", clipped_sgda_step)])
def test_registered_clipped_methods_equal_the_step_functions(name, step):
    """One client, heavy-tailed noise (Student-t, nu = 1.5), lam active: the registered method's iterates are
    the step function's on a (1, D) batch with the method's noise generator, exactly; n = 3 clients: the step
    function on the clients' mean operator (the uplink's mean), up to rounding."""
    vi = QuadraticMinMax.strongly_monotone(3, mu=0.1, seed=0, noise=1.0, noise_law=HEAVY)
    gamma, lam, K, seed = 0.1 / vi.L, 1.5, 25, 7
    x0 = vi.z_star + 1.0
    tr, x = _run(GameProblem(vi, clients=1), {"name": name, "stepsize": gamma, "clip_level": lam}, K, seed, x0)
    gen, Z = generator(seed, "noise"), x0.unsqueeze(0).clone()
    for k in range(1, K + 1):
        Z = step(vi.stochastic_operator, Z, gamma, lam, gen)
        assert tr.rows["dist_sq"][k] == float(vi.distance_sq(Z)[0])
    assert torch.equal(x, Z[0])
    calls = 2 if name == "clipped_seg" else 1  # SEG: two operator calls, two messages each way per round
    assert tr.rows["grad_evals"][-1] == calls * K and tr.rows["bits_up"][-1] == tr.rows["bits_down"][-1] == calls * K * 6 * 32
    # n = 3 clients with offsets: the server clips the mean of the clients' operators
    p3 = GameProblem(vi, clients=3, spread=2.0, seed=1)
    _, x3 = _run(p3, {"name": name, "stepsize": gamma, "clip_level": lam}, K, seed, x0)
    op, gen, Z = vi.client_operator(p3.E), generator(seed, "noise"), x0.unsqueeze(0).clone()
    for _ in range(K):
        Z = step(lambda V, g: op(V, g).mean(-2), Z, gamma, lam, gen)
    assert torch.allclose(x3, Z[0], rtol=0, atol=1e-12) and float((x3 - x).norm()) > 1e-3


@pytest.mark.parametrize("name, step", [("prox_clipped_seg_shift", shifted_seg_step),
                                        ("prox_clipped_sgda_shift", shifted_sgda_step)])
def test_registered_shifted_methods_equal_the_step_functions(name, step):
    """n = 4 clients, heavy-tailed noise, lam active, nu = 0.5: the registered shifted method equals the batched
    shifted step with the clients' operators (same draws), up to the rounding of x - gamma (h + delta); bits:
    one D-float difference up and one model down per client and operator call."""
    vi = QuadraticMinMax.strongly_monotone(3, mu=0.3, seed=1, noise=0.5, noise_law=HEAVY)
    p = GameProblem(vi, clients=4, spread=3.0, seed=0)
    gamma, lam, nu, K, seed = 0.2 / vi.L, 0.5, 0.5, 40, 3
    x0 = vi.z_star + 1.0
    tr, x = _run(p, {"name": name, "stepsize": gamma, "clip_level": lam, "shift_stepsize": nu}, K, seed, x0)
    op, gen = vi.client_operator(p.E), generator(seed, "noise")
    Z, H, h = x0.unsqueeze(0).clone(), torch.zeros(1, 4, 6, dtype=torch.float64), torch.zeros(1, 6, dtype=torch.float64)
    for _ in range(K):
        Z, H, h = step(op, Z, H, h, gamma, lam, nu, gen)
    assert torch.allclose(x, Z[0], rtol=0, atol=1e-12)
    calls = 2 if "seg" in name else 1
    assert tr.rows["grad_evals"][-1] == calls * K and tr.rows["bits_up"][-1] == calls * K * 6 * 32
    # exact operators: the naive method (nu = 0) stops away from z*, the shifted one reaches it
    exact = GameProblem(QuadraticMinMax.strongly_monotone(3, mu=0.3, seed=1), clients=4, spread=3.0, seed=0)
    spec = {"name": name, "stepsize": gamma, "clip_level": lam}
    _, x_naive = _run(exact, {**spec, "shift_stepsize": 0.0}, 1500, 0, x0)
    _, x_shift = _run(exact, {**spec, "shift_stepsize": nu}, 1500, 0, x0)
    assert float((x_naive - vi.z_star).pow(2).sum()) > 1e-2
    assert float((x_shift - vi.z_star).pow(2).sum()) <= 1e-24


def test_one_client_without_shifts_the_shifted_methods_are_the_clipped_methods():
    """n = 1, shift stepsize 0 (shifts stay 0): the client clips its own operator, which is what the server
    clips in clipped-SEG / SGDA: the same iterates, draws and bits."""
    vi = QuadraticMinMax.bilinear(3, seed=2, noise=1.0, noise_law=HEAVY)
    p = GameProblem(vi)
    for plain, shifted in (("clipped_seg", "prox_clipped_seg_shift"), ("clipped_sgda", "prox_clipped_sgda_shift")):
        spec = {"stepsize": 0.3, "clip_level": 0.8}
        ta, xa = _run(p, {"name": plain, **spec}, 30, 4)
        tb, xb = _run(p, {"name": shifted, **spec, "shift_stepsize": 0.0}, 30, 4)
        assert torch.equal(xa, xb) and ta.rows["bits_up"] == tb.rows["bits_up"] and ta.rows["grad_evals"] == tb.rows["grad_evals"]


# ---- extragradient: the exact iteration ----------------------------------------------------------------------------
def test_unclipped_exact_clipped_seg_is_extragradient_at_its_exact_rate():
    """F(z) = M z - c, no noise, lam = inf: z+ - z* = T (z - z*) with T = I - gamma M + gamma^2 M^2 (the
    extragradient step on a linear operator). The registered method's iterates are T^k (z_0 - z*) to rounding at
    every k, and ||z_k - z*|| contracts at T's spectral radius rho < 1 (per-step ratio between k = 100 and 200)."""
    vi = QuadraticMinMax.strongly_monotone(4, mu=0.2, seed=2)
    p = GameProblem(vi, clients=1)
    gamma = 0.5 / vi.L
    x0 = torch.zeros(8, dtype=torch.float64)
    tr, x = _run(p, {"name": "clipped_seg", "stepsize": gamma}, 400, 0, x0)
    _, x_inf = _run(p, {"name": "clipped_seg", "stepsize": gamma, "clip_level": 1e300}, 400, 0, x0)
    assert torch.equal(x, x_inf)
    T = torch.eye(8, dtype=torch.float64) - gamma * vi.M + gamma ** 2 * vi.M @ vi.M
    e0 = x0 - vi.z_star
    e = e0.clone()
    for k in range(1, 401):
        e = T @ e
        if k in (1, 10, 100):
            assert tr.rows["dist_sq"][k] == pytest.approx(float(e @ e), rel=1e-10)
    rho = float(torch.linalg.eigvals(T).abs().max())
    assert rho < 1
    assert float(((x - vi.z_star) - torch.linalg.matrix_power(T, 400) @ e0).norm()) <= 1e-12 * float(e0.norm())
    measured = (tr.rows["dist_sq"][200] / tr.rows["dist_sq"][100]) ** (1 / 200)  # ||e_k|| ratio per step
    assert measured == pytest.approx(rho, rel=1e-3)
    assert tr.rows["dist_sq"][400] <= 1e-25 * tr.rows["dist_sq"][0]
    # gradient descent-ascent is z+ - z* = (I - gamma M)(z - z*)
    _, xg = _run(p, {"name": "clipped_sgda", "stepsize": gamma}, 50, 0, x0)
    assert torch.allclose(xg - vi.z_star, torch.linalg.matrix_power(torch.eye(8, dtype=torch.float64) - gamma * vi.M, 50) @ e0,
                          rtol=0, atol=1e-12)


# ---- configs, metrics, refusals ------------------------------------------------------------------------------------
def test_config_run_of_clipped_seg_on_a_bilinear_game_reaches_z_star():
    """A bilinear game (monotone, not strongly: mu None) from a config, exact operators: the trace's metric is
    dist_sq (no f_gap: the payoff has no gap), driven to the float64 floor; grad_norm_sq = ||F(z)||^2."""
    cfg = parse_config({"problem": _game(kind="bilinear", dim=4, clients=3, spread=1.0), "log_every": 100,
                        "methods": [{"name": "clipped_seg", "stepsize": 0.7, "clip_level": 10.0}],
                        "stop": {"max_rounds": 1000}})
    p = build_problem(cfg)
    assert p.mu is None and p.n == 3
    tr = run_method(p, cfg.methods[0], cfg, progress=False)
    assert tr.status == "finished" and tr.meta["metric"] == "dist_sq"
    assert tr.rows["dist_sq"][0] > 1 and tr.rows["dist_sq"][-1] <= 1e-20 and tr.rows["grad_norm_sq"][-1] <= 1e-20
    assert all(math.isnan(v) for v in tr.rows["f_gap"])
    assert tr.rows["grad_evals"][-1] == 2 * 1000
    # stop rules: dist_sq is known, f_gap is not
    ok = parse_config({"problem": _game(), "methods": [{"name": "clipped_sgda", "stepsize": 0.1}],
                       "stop": {"max_rounds": 5, "metric": "dist_sq"}})
    assert run_method(build_problem(ok), ok.methods[0], ok, progress=False).meta["metric"] == "dist_sq"
    bad = parse_config({"problem": _game(), "methods": [{"name": "clipped_sgda", "stepsize": 0.1}],
                        "stop": {"max_rounds": 5, "metric": "f_gap"}})
    tr = run_method(build_problem(bad), bad.methods[0], bad, progress=False)
    assert tr.status == "failed" and "needs a known optimum" in tr.meta["message"]


def test_heavy_tailed_game_from_a_config():
    cfg = parse_config({"problem": _game(dim=3, noise=2.0, noise_law=HEAVY, data_seed=5),
                        "methods": [{"name": "clipped_sgda", "stepsize": 0.05, "clip_level": 1.0}]})
    p = build_problem(cfg)
    assert p.noise_law.kind == "student_t" and p.noise_law.tail == 1.5 and p.noise == 2.0
    with pytest.raises(ConfigError, match="noise law 'cauchy' is unknown"):
        parse_config({"problem": _game(noise_law="cauchy"), "methods": [{"name": "clipped_seg", "stepsize": 1}]})
    with pytest.raises(ConfigError, match=r"problem\.kind"):
        parse_config({"problem": _game(kind="convex"), "methods": [{"name": "clipped_seg", "stepsize": 1}]})


def test_minimization_methods_refused_on_a_game_and_vi_methods_on_minimization(tiny_logreg):
    game = build_problem(parse_config({"problem": _game(), "methods": ["gd"]}))
    cfg = parse_config({"problem": _game(), "methods": ["gd"]})
    with pytest.raises(ConfigError, match=r"gd minimizes a function, and quadratic_game is a variational inequality") as e:
        validate_methods(cfg, game)
    assert "\n" not in str(e.value) and "clipped_seg" in str(e.value) and "prox_clipped_sgda_shift" in str(e.value)
    cfg = parse_config({"problem": {"name": "logreg"}, "methods": [{"name": "clipped_seg", "stepsize": 0.1}]})
    with pytest.raises(ConfigError, match="clipped_seg solves variational inequalities, and logreg is a minimization") as e:
        validate_methods(cfg, tiny_logreg)
    assert "\n" not in str(e.value)
