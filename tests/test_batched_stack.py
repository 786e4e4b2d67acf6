"""Replica-stacked batched runs: a stepsize/seed grid of a deterministic method as one computation,
each replica equal to its separate run (traces, accounting, stop rules, checkpoints)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from optsim.experiment import parse_config, run_method
from optsim.compress import ReplicaMismatch
from optsim.experiment.batched import _StackedProblem, run_batched
from optsim.experiment.build import build_problem
from optsim.experiment.runner import evaluate, evaluate_many
from optsim.methods import METHODS
from optsim.methods.base import build_method
from optsim.channel import Channel
from optsim.meter import Meter

LOGREG = {"name": "logreg", "data": "synthetic:logreg", "size": 300, "dim": 10, "clients": 6, "lam": 0.05,
          "data_seed": 0}
QUADRATIC = {"name": "quadratic", "dim": 12, "clients": 5}


def _cfg(problem=LOGREG, rounds=60, **over):
    d = {"problem": dict(problem), "methods": ["gd"], "stop": {"max_rounds": rounds}, "log_every": 5}
    d.update(over)
    return parse_config(json.loads(json.dumps(d)))


def _grid(spec, mults, seeds=(0,), **over):
    specs, cfgs = [], []
    for seed in seeds:
        for m in mults:
            specs.append(dict(spec, stepsize_mult=m))
            cfgs.append(_cfg(seed=seed, **over))
    return specs, cfgs


def _assert_same(batched, separate):
    for b, u in zip(batched, separate):
        assert b.status == u.status, (b.label, b.meta.get("message"), u.meta.get("message"))
        assert b.rows["round"] == u.rows["round"]
        for key in ("bits_up", "bits_down", "grad_evals", "comm_rounds", "sim_time"):
            assert b.rows[key] == u.rows[key], key
        for key in ("f_gap", "grad_norm_sq", "dist_sq", "loss"):
            np.testing.assert_allclose(b.rows[key], u.rows[key], rtol=1e-9, atol=1e-13)


EF21_TOPK = {"name": "ef21", "compressor": {"name": "top_k", "k": 3}}


def test_stacked_grid_equals_separate_runs():
    problem = build_problem(_cfg())
    specs, cfgs = _grid(EF21_TOPK, [0.5, 1.0, 2.0, 4.0], seeds=(0, 1))
    specs += [{"name": "gd"}, {"name": "gd", "stepsize": 0.3},
              {"name": "diana", "compressor": {"name": "rand_k", "k": 3}}]
    cfgs += [_cfg(), _cfg(), _cfg()]
    batched = run_batched(problem, specs, cfgs)
    separate = [run_method(problem, s, c, progress=False) for s, c in zip(specs, cfgs)]
    _assert_same(batched, separate)
    # two seeds of a deterministic method are one run: 4 rows for the 8 EF21 runs
    assert [t.meta.get("replica_stack") for t in batched] == [4] * 8 + [2, 2, None]
    assert [t.meta.get("replica_runs") for t in batched] == [8] * 8 + [2, 2, None]
    assert batched[0].last("f_gap") > batched[3].last("f_gap")  # the grid really differs


def test_stack_unchanged_by_forcing_lock_step():
    problem = build_problem(_cfg())
    specs, cfgs = _grid(EF21_TOPK, [1.0, 2.0])
    stacked = run_batched(problem, specs, cfgs)
    lock = run_batched(problem, specs, cfgs, stack=False)
    _assert_same(stacked, lock)
    assert lock[0].meta.get("replica_stack") is None


def test_replicas_leave_the_stack_on_divergence_and_tolerance():
    problem = build_problem(_cfg())
    # 64 x the theory stepsize diverges; a loose tolerance is reached at different rounds
    specs, cfgs = _grid({"name": "gd"}, [1.0, 1.9, 64.0], rounds=300, stop={"max_rounds": 300, "tol": 1e-6})
    batched = run_batched(problem, specs, cfgs)
    separate = [run_method(problem, s, c, progress=False) for s, c in zip(specs, cfgs)]
    _assert_same(batched, separate)
    assert [t.status for t in batched] == ["finished", "finished", "diverged"]
    assert batched[0].last("round") != batched[1].last("round")  # left the stack at different rounds


@pytest.mark.parametrize("name", sorted(n for n, c in METHODS.items() if c.replica_batched))
@pytest.mark.parametrize("compressor", ["top_k", "rand_k"])
@pytest.mark.parametrize("problem_cfg", [LOGREG, QUADRATIC], ids=["logreg", "quadratic"])
def test_every_replica_batched_method_stacks_exactly(name, compressor, problem_cfg):
    problem = build_problem(_cfg(problem_cfg))
    spec = {"name": name}
    if "compressor" in METHODS[name].uses:
        spec["compressor"] = {"name": compressor, "k": 2}
        try:
            build_method(spec, problem, Channel(Meter(problem.n), problem.d)).gamma
        except ValueError:
            pytest.skip(f"{name} is not defined with {compressor}")
    elif compressor == "rand_k":
        pytest.skip("no compressor")
    # two seeds: a randomized compressor makes them two runs (own rows, own generators)
    specs, cfgs = _grid(spec, [0.5, 1.0, 1.5], seeds=(0, 1), problem=problem_cfg, rounds=40)
    if METHODS[name].stepsize_source == "explicit":  # no theory stepsize to multiply: a grid of stepsizes
        specs = [{**s, "stepsize": 0.1 * s.pop("stepsize_mult")} for s in specs]
    batched = run_batched(problem, specs, cfgs)
    # coins: one stack per seed; otherwise a randomized compressor makes each seed its own row
    rows = 6 if compressor == "rand_k" and "compressor" in METHODS[name].uses and not METHODS[name].draws_coins else 3
    assert all(t.meta.get("replica_stack") == rows for t in batched)
    _assert_same(batched, [run_method(problem, s, c, progress=False) for s, c in zip(specs, cfgs)])


def test_replicable_and_deterministic():
    problem = build_problem(_cfg())

    def method(spec):
        return build_method(spec, problem, Channel(Meter(problem.n), problem.d))

    top = method({"name": "ef21", "compressor": {"name": "top_k", "k": 2}})
    assert top.replicable() and top.deterministic()
    rand = method({"name": "ef21", "compressor": {"name": "rand_k", "k": 2}})
    assert rand.replicable() and not rand.deterministic()
    pp = method({"name": "ef21", "compressor": {"name": "top_k", "k": 2}, "sampler": {"name": "nice", "tau": 2}})
    assert pp.replicable() and not pp.deterministic()
    marina = method({"name": "marina", "compressor": {"name": "rand_k", "k": 2}})
    assert marina.replicable() and not marina.deterministic()  # coins: replicas share the method's seed
    assert not method({"name": "marina", "compressor": {"name": "rand_k", "k": 2},
                       "sampler": {"name": "nice", "tau": 2}}).replicable()
    assert not method({"name": "page"}).replicable()


def test_variable_bits_fall_back_to_lock_step():
    """Bernoulli (lazy) compression sends a random subset of the clients' messages: the replicas
    differ in bits, the stack gives up and the runs go the lock-step way, each equal to its
    separate run."""
    problem = build_problem(_cfg())
    spec = {"name": "dcgd", "compressor": {"name": "bernoulli", "p": 0.5}}
    specs, cfgs = _grid(spec, [0.5, 1.0], seeds=(0, 1), rounds=20)
    batched = run_batched(problem, specs, cfgs)
    assert all(t.meta.get("replica_stack") is None for t in batched)
    _assert_same(batched, [run_method(problem, s, c, progress=False) for s, c in zip(specs, cfgs)])


def test_stacked_problem_counts_once_per_client():
    problem = build_problem(_cfg())
    meter = Meter(problem.n)
    problem.attach(meter)
    try:
        stacked = _StackedProblem(problem, 3)
        X = torch.randn(3, problem.n, problem.d, dtype=problem.dtype)
        G = stacked.grads(X)
        for r in range(3):
            assert torch.allclose(G[r], problem._grads(X[r], None), rtol=1e-12, atol=1e-14)
        assert meter.close_round().oracle["grad"].tolist() == [1.0] * problem.n
        rows = torch.tensor([4, 1])
        G = stacked.grads(X[:, :2], clients=rows)
        for r in range(3):
            assert torch.allclose(G[r], problem._grads(X[r, :2], rows), rtol=1e-12, atol=1e-14)
        assert meter.close_round().oracle["grad"].tolist() == [0, 1, 0, 0, 1, 0]
        with pytest.raises(ReplicaMismatch):
            stacked.grads(X[:, :2], clients=torch.tensor([1, 1]))
        with pytest.raises(ValueError, match="replica-stacked"):
            stacked.grads(X[:, :3], clients=rows)
    finally:
        problem.attach(None)


def test_partial_participation_stacks_per_sampler_seed():
    """EF21-PP: replicas sharing the sampler's seed sample the same clients and stack; other seeds
    make other stacks; each replica equals its separate run."""
    problem = build_problem(_cfg())
    spec = dict(EF21_TOPK, sampler={"name": "nice", "tau": 3})
    specs, cfgs = _grid(spec, [0.5, 1.0, 2.0], seeds=(0, 1), rounds=40)
    batched = run_batched(problem, specs, cfgs)
    assert [t.meta.get("replica_stack") for t in batched] == [3] * 6
    _assert_same(batched, [run_method(problem, s, c, progress=False) for s, c in zip(specs, cfgs)])


@pytest.mark.parametrize("problem_cfg", [LOGREG, QUADRATIC], ids=["logreg", "quadratic"])
def test_evaluate_many_equals_evaluate(problem_cfg):
    problem = build_problem(_cfg(problem_cfg))
    X = torch.randn(4, problem.d, dtype=problem.dtype)
    X[0] = problem.x_star
    for row, x in zip(evaluate_many(problem, X), X):
        one = evaluate(problem, x)
        assert row.keys() == one.keys()
        for k in one:
            assert row[k] == pytest.approx(one[k], rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("spec", [EF21_TOPK, {"name": "diana", "compressor": {"name": "rand_k", "k": 3}}],
                         ids=["ef21-top_k", "diana-rand_k"])
def test_stack_checkpoints_and_interrupt_resume_to_the_separate_result(spec):
    problem = build_problem(_cfg())
    specs, cfgs = _grid(spec, [1.0, 2.0, 4.0], seeds=(0, 1), rounds=60)  # 6 runs (on 3 rows when deterministic)
    blobs: dict[int, bytes] = {}
    interrupted = []

    def checkpoint(i, session):
        blobs[i] = session.state_bytes()
        if session.k == 30 and not interrupted:  # the second checkpoint round: Ctrl-C
            interrupted.append(i)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batched(problem, specs, cfgs, on_checkpoint=checkpoint, checkpoint_every=15)
    assert set(blobs) == set(range(6))
    resumed = run_batched(problem, specs, cfgs, resume=[blobs[i] for i in range(6)])
    separate = [run_method(problem, s, c, progress=False) for s, c in zip(specs, cfgs)]
    _assert_same(resumed, separate)
    solo = run_method(problem, specs[1], cfgs[1], progress=False, resume=blobs[1])
    _assert_same([solo], separate[1:2])
