"""Event-driven methods, compute-time models and the event queue (issue 6)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optsim.channel import Channel
from optsim.clock import EventQueue, FixedTimes, RandomTimes, Timing, TraceTimes, UniversalTimes, make_timing
from optsim.experiment import parse_config, run_method
from optsim.meter import Meter
from optsim.methods import build_method
from optsim.methods.asynchronous import ASGD
from optsim.problems import Quadratic

F64 = torch.float64


def make(problem, spec, tau=None, timing=None, seed=0):
    """A method on its own meter/channel with fixed times ``tau`` (default 1), initialized at 0."""
    meter = Meter(problem.n)
    problem.attach(meter)
    method = build_method(spec, problem, Channel(meter, problem.d), seed)
    if hasattr(method, "attach_timing"):
        method.attach_timing(timing or Timing(FixedTimes(np.ones(problem.n) if tau is None else tau)))
    method.init(torch.zeros(problem.d, dtype=F64))
    return method, meter


# ---- the event queue and the compute-time models ------------------------------------------------

def test_event_queue_time_order_ties_and_cancel():
    q = EventQueue(4)
    for w, t in [(0, 3.0), (1, 1.0), (2, 1.0), (3, 2.0)]:
        q.schedule(w, t)
    q.cancel(3)
    out = [q.pop() for _ in range(3)]
    assert out == [(1.0, 1), (1.0, 2), (3.0, 0)]  # time order, ties in scheduling order, 3 cancelled
    assert len(q) == 0 or q.peek_time() == math.inf
    assert q.now == 3.0
    with pytest.raises(ValueError, match="past"):
        q.schedule(0, 2.0)


def test_compute_models_are_seeded_per_worker():
    tau = np.array([1.0, 2.0, 3.0])
    a, b = RandomTimes(tau, "lognormal", 0.5, seed=1), RandomTimes(tau, "lognormal", 0.5, seed=1)
    # worker 2's job durations do not depend on how the other workers' jobs interleave
    da = [a.duration(2, 0.0) for _ in range(5)]
    for _ in range(7):
        b.duration(0, 0.0)
    assert [b.duration(2, 0.0) for _ in range(5)] == da
    assert RandomTimes(tau, "lognormal", 0.5, seed=2).duration(2, 0.0) != da[0]
    e = RandomTimes(tau, "exponential", 1.0, seed=0)
    assert np.mean([e.duration(1, 0.0) for _ in range(20000)]) == pytest.approx(2.0, rel=0.05)


def test_universal_model_integrates_speed_and_trace_cycles():
    # speed 1 on [0, 1), outage on [1, 3), speed 2 afterwards
    u = UniversalTimes(None, segments=[([0.0, 1.0, 3.0], [1.0, 0.0, 2.0])])
    assert u.duration(0, 0.0) == pytest.approx(1.0)
    assert u.duration(0, 0.5) == pytest.approx(2.75)  # 0.5 unit, wait 2 s, 0.5 unit at speed 2
    assert u.duration(0, 2.0, work=2.0) == pytest.approx(2.0)
    rnd = UniversalTimes(np.array([1.0, 2.0]), outage_rate=0.2, outage_length=2.0, speed_period=1.0,
                         speed_sigma=0.3, seed=3)
    t, durations = 0.0, []
    for _ in range(4000):
        d = rnd.duration(1, t)
        durations.append(d)
        t += d
    assert np.mean(durations) == pytest.approx(rnd.mean[1], rel=0.1)  # 2 * (1 + 0.2 * 2) = 2.8
    tr = TraceTimes([[1.0, 2.0], [5.0]])
    assert [tr.duration(0, 0.0) for _ in range(3)] == [1.0, 2.0, 1.0] and tr.mean.tolist() == [1.5, 5.0]


def test_time_config_builds_each_model():
    for extra, cls in [({}, FixedTimes), ({"jitter": "uniform", "jitter_scale": 0.2}, RandomTimes),
                       ({"outage_rate": 0.1}, UniversalTimes), ({"trace": [[1.0], [2.0]]}, TraceTimes)]:
        cfg = parse_config({"problem": {"name": "quadratic", "clients": 2}, "methods": ["asgd"],
                            "time": {"compute": "linear", **extra}})
        assert isinstance(make_timing(cfg.time, 2, seed=0).compute, cls)


# ---- delays, reductions, reproducibility --------------------------------------------------------

@pytest.fixture(scope="module")
def quad():
    return Quadratic.generate(8, 6, L=1.0, mu=0.1, noise=0.3, seed=0)


def test_asgd_delay_is_n_minus_1_with_equal_times(quad):
    m, _ = make(quad, {"name": "asgd", "stepsize": 0.01})
    m.advance(50 * quad.n)
    d = np.frombuffer(m.delays, dtype=np.int64)
    assert d[:quad.n].tolist() == list(range(quad.n))  # the first wave: 0, 1, ..., n-1
    assert (d[quad.n:] == quad.n - 1).all()
    assert m.now == pytest.approx(50.0)


ONE_WORKER = [{"name": "asgd"}, {"name": "rescaled_asgd"}, {"name": "ringmaster_asgd", "R": 3}, {"name": "ringleader_asgd"},
              {"name": "ringmaster_asgd", "R": 1, "stops": True}, {"name": "rennala_sgd", "B": 1},
              {"name": "minibatch_sgd"}, {"name": "rennala_mvr", "mvr_a": 1.0, "B": 1, "B_init": 1}]


@pytest.mark.parametrize("spec", ONE_WORKER, ids=lambda s: s["name"] + ("_stops" if s.get("stops") else ""))
def test_one_worker_is_sgd_iterate_for_iterate(spec):
    p = Quadratic.generate(1, 5, mu=0.1, noise=0.5, seed=3)
    sgd, _ = make(p, {"name": "sgd", "stepsize": 0.3})
    m, meter = make(p, {**spec, "stepsize": 0.3}, tau=np.array([0.7]))
    for k in range(30):
        sgd.step()
        assert m.advance(1) == 1
        assert torch.equal(m.x, sgd.x), f"iterate {k + 1} differs"
    assert m.now == pytest.approx(0.7 * 30 * (1 if spec["name"] != "rennala_mvr" else 2) - (0.7 if spec["name"] == "rennala_mvr" else 0))


def test_asgd_fast_path_matches_the_generic_loop():
    p = Quadratic.generate(30, 4, mu=0.1, noise=0.2, heterogeneity=0.3, seed=1)

    class Generic(ASGD):  # overriding on_arrival switches ASGD back to the generic event loop
        name = "asgd_generic_test"

        def on_arrival(self, i, t):
            super().on_arrival(i, t)

    tau = np.sqrt(np.arange(1, 31))
    fast, mf = make(p, {"name": "asgd", "stepsize": 0.02}, tau=tau)
    meter = Meter(p.n)
    p.attach(meter)
    slow = Generic(build_method({"name": "asgd", "stepsize": 0.02}, p, Channel(meter, p.d)).ctx,
                   ASGD.Params(stepsize=0.02))
    slow.attach_timing(Timing(FixedTimes(tau)))
    slow.init(torch.zeros(p.d, dtype=F64))
    for span in (1, 7, 50, 400):
        fast.advance(span)
        slow.advance(span)
        assert torch.equal(fast.x, slow.x) and fast.now == slow.now
    assert fast.delays == slow.delays and fast.arrivals == slow.arrivals


def test_seeded_runs_are_identical_and_the_clock_seed_matters():
    cfg = {"problem": {"name": "quadratic", "clients": 6, "dim": 4, "noise": 0.2}, "methods": ["asgd"],
           "stop": {"max_rounds": 300}, "log_every": 50, "time": {"compute": "sqrt", "jitter": "exponential"}}
    c = parse_config(cfg)
    from optsim.experiment import build_problem
    p = build_problem(c)
    a = run_method(p, {"name": "ringmaster_asgd", "R": 4}, c, progress=False)
    b = run_method(p, {"name": "ringmaster_asgd", "R": 4}, c, progress=False)
    same = [c for c in a.rows if c != "wall_time"]
    assert all(a.rows[c] == b.rows[c] for c in same) and a.meta["delays"] == b.meta["delays"]
    c2 = parse_config({**cfg, "seeds": {"clock": 5}})
    other = run_method(p, {"name": "ringmaster_asgd", "R": 4}, c2, progress=False)
    assert other.rows["sim_time"] != a.rows["sim_time"]


def test_runner_reports_sim_time_delays_and_respects_max_sim_time(quad):
    c = parse_config({"problem": {"name": "quadratic", "clients": 8}, "methods": ["asgd"],
                      "stop": {"max_rounds": 10**6, "max_sim_time": 40.0}, "log_every": 16,
                      "time": {"compute": 2.0, "latency_up": 0.5}})
    t = run_method(quad, {"name": "asgd", "stepsize": 0.01}, c, progress=False)
    assert t.status == "finished"
    assert t.last("sim_time") == pytest.approx(40.0)
    # jobs take 2 + 0.5 s: 8 arrivals per 2.5 s; the last logged window ends at the time limit
    assert t.last("round") == 8 * int(40.0 / 2.5)
    assert t.last("comm_rounds") == t.last("round")
    d = t.meta["delays"]
    assert d["steady_mean"] == pytest.approx(7.0) and len(d["per_worker_mean"]) == 8
    assert t.last("grad_evals") >= t.last("round") / 8
    assert t.last("bits_up") == pytest.approx(t.last("grad_evals") * 6 * 32)


def test_accounting_counts_every_gradient_and_message(quad):
    m, meter = make(quad, {"name": "rennala_sgd", "B": 3, "stepsize": 0.1}, tau=np.arange(1.0, 9.0))
    m.advance(40)
    meter.close_round()
    evaluated = float(meter.oracle["grad"].sum())
    assert evaluated >= m.arrivals - 0  # every delivered gradient was evaluated (and counted)
    assert float(meter.bits_up.sum()) == evaluated * quad.d * 32
    assert float(meter.bits_down.sum()) == evaluated * quad.d * 32
    assert m.trace_meta()["delays"]["discarded"] > 0  # Rennala ignores stale gradients


# ---- Rescaled ASGD removes the bias of ASGD toward fast workers ---------------------------------

def test_rescaled_asgd_converges_to_x_star_asgd_to_the_frequency_weighted_point():
    n = 6
    p = Quadratic.generate(n, 5, L=1.0, mu=0.2, heterogeneity=0.45, seed=2)
    tau = np.arange(1.0, n + 1)
    asgd, _ = make(p, {"name": "asgd", "stepsize": 0.02}, tau=tau)
    resc, _ = make(p, {"name": "rescaled_asgd", "stepsize": 0.02}, tau=tau)
    asgd.advance(20000)
    resc.advance(int(20000))
    x_star = p.x_star
    w = torch.tensor(1.0 / tau, dtype=F64)  # ASGD: worker i delivers at rate 1 / tau_i
    x_w = torch.linalg.solve((w[:, None, None] * p.A).sum(0), (w[:, None] * p.b).sum(0))
    far = float((asgd.x - x_star).norm())
    assert far > 0.3 * float((x_w - x_star).norm()) > 0
    assert float((asgd.x - x_w).norm()) < 0.3 * far  # near the frequency-weighted minimizer
    assert float((resc.x - x_star).norm()) < 0.05 * far


# ---- Ringleader ASGD: heterogeneous data ------------------------------------------------------------

def _ringleader_reference(p, tau, gamma, updates):
    """Ringleader ASGD written out plainly (own heap, exact gradients, per-worker sums): the phase
    logic of Maranjyan & Richtarik (2025) as in the authors' public simulator."""
    import heapq as hq
    n = p.n
    x = torch.zeros(p.d, dtype=F64)
    grad = lambda i, y: p._grads(y.reshape(1, -1), torch.tensor([i]))[0]
    heap = [(tau[i], i, x) for i in range(n)]
    hq.heapify(heap)
    cur, cur_b = torch.zeros(n, p.d, dtype=F64), [0] * n
    nxt, nxt_b = torch.zeros(n, p.d, dtype=F64), [0] * n
    k, phase1, needs = 0, True, [True] * n
    while k < updates:
        t, i, y = hq.heappop(heap)
        g = grad(i, y)
        if phase1 or needs[i]:
            cur[i] += g
            cur_b[i] += 1
            if phase1 and min(cur_b) == 0:
                hq.heappush(heap, (t + tau[i], i, x))
                continue
            if phase1:
                phase1, needs = False, [True] * n
            x = x - gamma * (cur / torch.tensor(cur_b, dtype=F64)[:, None]).mean(0)
            k += 1
            needs[i] = False
            hq.heappush(heap, (t + tau[i], i, x))
            if not any(needs):
                cur, cur_b, nxt, nxt_b = nxt, nxt_b, torch.zeros(n, p.d, dtype=F64), [0] * n
                phase1 = True
        else:
            nxt[i] += g
            nxt_b[i] += 1
            hq.heappush(heap, (t + tau[i], i, x))
    return x


def test_ringleader_matches_a_plain_reference_simulation():
    p = Quadratic.generate(5, 4, mu=0.2, heterogeneity=0.4, seed=7)
    tau = [1.0, math.sqrt(2), math.sqrt(5), math.pi, 2 * math.e]  # no two arrivals at the same time
    m, _ = make(p, {"name": "ringleader_asgd", "stepsize": 0.05}, tau=np.array(tau))
    for K in (1, 4, 5, 23, 60):
        m.advance(K - m.k)
        assert torch.allclose(m.x, _ringleader_reference(p, tau, 0.05, K), atol=1e-13), f"update {K}"
    assert m.trace_meta()["delays"]["discarded"] == 0  # no gradient is thrown away


@pytest.mark.parametrize("timing", ["fixed", "random"])
def test_ringleader_is_unbiased_under_data_heterogeneity_with_bounded_table_delay(timing):
    n = 6
    p = Quadratic.generate(n, 5, L=1.0, mu=0.2, heterogeneity=0.45, seed=2)
    tau = np.arange(1.0, n + 1)
    t = Timing(FixedTimes(tau)) if timing == "fixed" else Timing(RandomTimes(tau, "exponential", 1.0, seed=3))
    rl, _ = make(p, {"name": "ringleader_asgd", "stepsize": 0.05}, timing=t)
    rl.advance(8000)
    asgd, _ = make(p, {"name": "asgd", "stepsize": 0.05}, tau=tau)
    asgd.advance(8000)
    assert float((rl.x - p.x_star).norm()) <= 1e-10  # every update weighs every f_i by 1/n
    assert float((asgd.x - p.x_star).norm()) >= 0.1  # ASGD: pulled toward the fast workers' f_i
    assert 0 < rl.table_delay_max <= 2 * n - 2  # the paper's delay bound


def test_ringleader_theory_stepsize():
    p = Quadratic.generate(4, 5, L=1.0, mu=0.2, heterogeneity=0.3, noise=0.5, seed=1)
    tau = np.array([1.0, 1.0, 1.0, 9.0])
    m, _ = make(p, {"name": "ringleader_asgd", "eps": 1e-3}, tau=tau)
    B = 9.0 / (2 * 3.0)  # tau_n / (2 tau_avg)
    sigma2 = 0.5 ** 2 * 5
    assert m.B == pytest.approx(B)
    assert m.gamma == pytest.approx(min(1 / (8 * 4 * p.L_tilde), 1e-3 * B / (10 * p.L_tilde * sigma2)))


# ---- local training against time (L13) ------------------------------------------------------------

def test_async_local_sgd_with_one_step_is_asgd():
    p = Quadratic.generate(5, 4, mu=0.1, noise=0.3, seed=5)
    tau = np.array([1.0, 1.5, 2.0, 3.0, 5.0])
    a, _ = make(p, {"name": "asgd", "stepsize": 0.05}, tau=tau)
    b, _ = make(p, {"name": "async_local_sgd", "local_steps": 1, "stepsize": 0.05}, tau=tau)
    a.advance(200)
    b.advance(200)
    assert torch.equal(a.x, b.x) and a.delays == b.delays and a.now == b.now


def test_loscar_dense_without_overlap_is_local_sgd_rounds():
    p = Quadratic.generate(3, 4, mu=0.1, noise=0.0, seed=6)
    m, meter = make(p, {"name": "loscar_sgd", "overlap": False, "local_steps": 2, "stepsize": 0.1})
    m.advance(1)
    x = torch.zeros(3, 4, dtype=F64)
    for _ in range(2):  # equal times: every worker does 2 local GD steps, then the models are averaged
        x = x - 0.1 * p._grads(x, None)
    assert torch.allclose(m.x, x.mean(0), atol=1e-15)
    meter.close_round()
    assert float(meter.oracle["grad"].sum()) == 6 and float(meter.bits_up.sum()) == 3 * 4 * 32


# ---- pipelines (A1) -----------------------------------------------------------------------------

def test_pipedream_steady_state_delay_formula():
    from optsim.methods.asynchronous.pipeline import pipedream_delays, pipedream_schedule
    for S in range(2, 17):
        d = pipedream_delays(pipedream_schedule(S, 1.0, microbatches=6 * S + 20))
        assert d["max"] == S * S - (S + 1) // 2  # S^2 - S/2, rounded down for odd S
        assert d["local"] == [S - 1 - s for s in range(S)]  # each stage's own staleness
    # unequal stage times: the bottleneck stage sets the pace, delays stay O(S^2)
    d = pipedream_delays(pipedream_schedule(4, [1, 2, 1, 1], [2, 4, 2, 2], microbatches=60))
    assert d["max"] == max(d["delay"]) and d["delay"][0] >= d["delay"][-1]


@pytest.mark.parametrize("spec", [{"name": "pipedream", "stages": 1}, {"name": "rpd", "stages": 1, "delay": 0},
                                  {"name": "local_sgd_pipe", "stages": 1, "local_steps": 1}], ids=lambda s: s["name"])
def test_one_stage_pipelines_are_sgd(spec):
    p = Quadratic.generate(1, 6, mu=0.1, noise=0.5, seed=4)
    sgd, _ = make(p, {"name": "sgd", "stepsize": 0.2})
    m, _ = make(p, {**spec, "stepsize": 0.2})
    for _ in range(25):
        sgd.step()
        m.step()
        assert torch.equal(m.x, sgd.x)


def test_local_sgd_pipe_runs_replicas_through_the_1f1b_schedule_with_a_drain_per_round():
    from optsim.methods.asynchronous.pipeline import pipedream_schedule
    S, H = 4, 3
    for W in (1, 2, 4):  # in flight: the forward of m on stage s waits for the backward of m - W
        sch = pipedream_schedule(S, 1.0, microbatches=5 * W + 3, in_flight=W)
        assert (sch.start["F"][:, W:] >= sch.end["B"][:, :-W]).all()
    span = float(pipedream_schedule(S, 1.0, microbatches=S * H).end["B"].max())
    assert span == 2 * S * H + 2 * (S - 1)  # the fill/drain bubble of every round
    p = Quadratic.generate(1, 8, mu=0.1, noise=0.0, seed=0)
    m, meter = make(p, {"name": "local_sgd_pipe", "stages": S, "local_steps": H, "stepsize": 0.1})
    m.advance(2 * S * H * S)  # one iteration = one block update: S blocks of S H microbatches per round
    assert m.now == pytest.approx(2 * span)  # two rounds
    gd, _ = make(p, {"name": "gd", "stepsize": 0.1})
    for _ in range(2 * H):  # noiseless: every replica is gradient descent, so is their average
        gd.step()
    assert torch.allclose(m.x, gd.x, atol=1e-14)
    meter.close_round()
    assert float(meter.oracle["grad"].sum()) == 2 * H * S  # one gradient per replica and local step
    assert np.frombuffer(m.delays, dtype=np.int64).max() == 0  # no stale weights


def test_local_sgd_pipe_model_at_a_time_cutoff_has_every_finished_block_update():
    """At a simulated time inside a round, the averaged model holds exactly the block updates whose
    backward has ended (the authors' simulator evaluates it the same way)."""
    from optsim.methods.asynchronous.pipeline import pipedream_schedule
    S, H, gamma = 2, 2, 0.1
    p = Quadratic.generate(1, 6, mu=0.1, noise=0.0, seed=1)
    sch = pipedream_schedule(S, 1.0, microbatches=S * H, in_flight=S)
    g0 = p._grads(torch.zeros(1, 6, dtype=F64), None)[0]  # every replica's first gradient (at x0 = 0)
    last, first = slice(3, 6), slice(0, 3)  # stage 2 holds the last 3 coordinates, stage 1 the first 3
    m, _ = make(p, {"name": "local_sgd_pipe", "stages": S, "local_steps": H, "stepsize": gamma})
    m.advance(10 ** 6, until=float(sch.end["B"][1, 0]))  # B_2(0) done: replica 0 updated block 2 only
    want = torch.zeros(6, dtype=F64)
    want[last] = -gamma * g0[last] / S
    assert torch.allclose(m.x, want, atol=1e-15) and m.k == 1
    m.advance(10 ** 6, until=float(sch.end["B"][0, 1]))  # microbatches 0 and 1 done: both replicas stepped
    assert torch.allclose(m.x, -gamma * g0, atol=1e-15) and m.k == 2 * S
    assert float(sch.end["B"][0, 1]) < float(sch.end["B"].max())  # still inside the first round


def test_pipedream_method_has_the_schedule_delays():
    p = Quadratic.generate(1, 8, mu=0.1, noise=0.1, seed=0)
    m, meter = make(p, {"name": "pipedream", "stages": 4, "stepsize": 0.01})
    m.advance(4 * 200)
    d = np.frombuffer(m.delays, dtype=np.int64)
    assert d[d.size // 2:].max() == 14 and m.trace_meta()["delays"]["pipeline"]["max"] == 14  # steady state
    assert m.now == pytest.approx(2.0 * 200, rel=0.05)  # one microbatch per forward + backward
    meter.close_round()
    assert float(meter.oracle["grad"].sum()) == m.arrivals  # one gradient per microbatch


# ---- recipes (fast mode) --------------------------------------------------------------------------

def test_recipe_A1_delay_part(tmp_path):
    from optsim.reproduce import run_recipe
    outcome, _ = run_recipe("A1", tmp_path, fast=True)
    assert "delay formula holds" in outcome.measured and "PD better on the quadratic for every S: True" in outcome.measured
    assert outcome.figures[0].exists()


@pytest.mark.parametrize("rid", ["A2", "A3", "L13", pytest.param("baseline-ringleader", marks=pytest.mark.slow)])
def test_recipe_fast(rid, tmp_path):
    from optsim.reproduce import run_recipe
    outcome, _ = run_recipe(rid, tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert outcome.figures and all(f.exists() for f in outcome.figures)


def test_checkpoint_resume_is_exact_with_random_times():
    c = parse_config({"problem": {"name": "quadratic", "clients": 6, "dim": 4, "noise": 0.2}, "methods": ["asgd"],
                      "stop": {"max_rounds": 300}, "log_every": 50,
                      "time": {"compute": "sqrt", "jitter": "lognormal", "jitter_scale": 0.3}})
    from optsim.experiment import build_problem
    p = build_problem(c)
    spec = {"name": "ringmaster_asgd", "R": 3, "stops": True}
    full = run_method(p, spec, c, progress=False)
    blobs = []
    run_method(p, spec, c, progress=False, checkpoint=lambda s: blobs.append(s.state_bytes()), checkpoint_every=150)
    res = run_method(p, spec, c, progress=False, resume=blobs[0])
    assert all(full.rows[k] == res.rows[k] for k in full.rows if k != "wall_time")
    assert full.meta["delays"]["mean"] == res.meta["delays"]["mean"]
