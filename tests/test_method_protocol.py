"""The method protocol: every registered method declares the state it carries between rounds, and a
run resumed from a checkpoint of that state equals the uninterrupted run in every trace column but
wall time (round-based, event-driven and schedule-driven methods alike)."""
from __future__ import annotations

import math

import pytest

from optsim.experiment import build_problem, parse_config
from optsim.experiment.runner import Session
from optsim.methods import METHODS, EventMethod, Method, TimedMethod
from optsim.state import undeclared_state

#: methods that run on a noisy quadratic against simulated time
TIMED = {name for name, cls in METHODS.items() if issubclass(cls, TimedMethod)} | {"rpd"}
#: methods for neural problems (explicit optimizer stepsizes)
NEURAL = {"fedopt", "local_opt", "dist_opt", "cgluon"}

QUAD = {"name": "quadratic", "clients": 6, "dim": 5, "noise": 0.3}
TIME = {"compute": "sqrt", "jitter": "exponential", "latency_up": 0.05, "bandwidth_up": 1000.0}
NET = {"name": "neural", "clients": 3, "hidden": [5], "size": 90}
#: a game split over clients, heavy-tailed noise: the methods for variational inequalities
GAME = {"name": "quadratic_game", "dim": 3, "clients": 4, "noise": 0.5, "noise_law": {"kind": "student_t", "tail": 1.5}}


@pytest.fixture(scope="module")
def problems(tiny_logreg):
    return {"logreg": tiny_logreg,
            "quad": build_problem(parse_config({"problem": QUAD, "methods": ["gd"]})),
            "neural": build_problem(parse_config({"threads": 1, "problem": NET, "methods": ["gd"]})),
            "game": build_problem(parse_config({"problem": GAME, "methods": ["gd"]}))}


def _candidates(name):
    """Configurations to try, most demanding first (client sampling, a compressor)."""
    cls = METHODS[name]
    if name in TIMED:
        return [("quad", {"name": name, "stepsize": 0.05})]
    if "operator" in cls.handles:
        return [("game", {"name": name, "stepsize": 0.05, "clip_level": 1.0})]
    if name in NEURAL:
        return [("neural", {"name": name, "stepsize": 0.05, **({"compressor": {"name": "top_k", "k": 10}}
                                                                if "compressor" in cls.uses else {})})]
    comps = [{"name": "rand_k", "k": 3}, {"name": "top_k", "k": 3}] if "compressor" in cls.uses else [None]
    samplers = [{"name": "nice", "tau": 3}, None] if "sampler" in cls.uses else [None]
    out = []
    for s in samplers:
        for c in comps:
            spec = {"name": name}
            if cls.stepsize_source == "explicit" or "aggregator" in cls.uses:
                spec["stepsize"] = 0.05
            if "aggregator" in cls.uses:  # a stateful aggregator, under attack (see _cfg)
                spec["aggregator"] = {"name": "cc", "tau": 1.0}
            if c is not None:
                spec["compressor"] = c
            if s is not None:
                spec["sampler"] = s
            out.append(("logreg", spec))
    return out


def _cfg(kind, spec, rounds):
    base = {"problem": QUAD if kind == "quad" else NET if kind == "neural" else GAME if kind == "game" else {"name": "logreg"},
            "methods": [spec], "stop": {"max_rounds": rounds}, "log_every": 1}
    if kind == "quad":
        base["time"] = TIME
    if kind == "neural":
        base["threads"] = 1
    if "aggregator" in spec:
        base["byzantine"] = {"count": 1, "attack": "alie"}
    return parse_config(base)


def _session(problems, kind, spec, rounds):
    s = Session(problems[kind], spec, _cfg(kind, spec, rounds))
    s.attach()
    return s


def _run(s, until=None):
    while s.running and (until is None or s.k < until):
        s.step()
        s.end_round()


def _runnable(problems, name, rounds=8):
    """The first candidate configuration that runs without failing, with its finished session."""
    for kind, spec in _candidates(name):
        try:
            s = _session(problems, kind, spec, rounds)
        except (ValueError, NotImplementedError):
            continue
        before = set(vars(s.method))
        s.start()
        s.end_round()
        _run(s)
        if s.trace.status in ("finished", "diverged"):
            return kind, spec, s, before
    pytest.skip(f"{name}: no runnable configuration on the small problems")


def _rows(trace):
    return {c: v for c, v in trace.rows.items() if c != "wall_time"}


def _same(a, b):
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_state_is_declared_and_resume_is_exact(problems, name):
    kind, spec, whole, before = _runnable(problems, name)
    assert undeclared_state(whole.method, before) == [], \
        f"{name} sets attributes between rounds that its `state` does not declare"
    # interrupt after round 3, checkpoint, resume in a fresh session of the same run
    first = _session(problems, kind, spec, 8)
    first.start()
    first.end_round()
    _run(first, until=3)
    blob = first.state_bytes()
    resumed = _session(problems, kind, spec, 8)
    resumed.restore(blob)
    _run(resumed)
    assert resumed.trace.status == whole.trace.status
    a, b = _rows(whole.trace), _rows(resumed.trace)
    assert a.keys() == b.keys()
    for col in a:
        assert _same(a[col], b[col]), f"{name}: column {col} differs after resuming"
    assert resumed.trace.meta.pop("resumed_from") == 3
    assert {k: v for k, v in whole.trace.meta.items() if k != "wall_time"} == \
        {k: v for k, v in resumed.trace.meta.items() if k != "wall_time"}


def test_kinds_are_declared_base_classes():
    """Every method is round-based or owns simulated time through the declared kinds."""
    for name, cls in METHODS.items():
        if issubclass(cls, TimedMethod):
            assert cls.attach_timing is not TimedMethod.attach_timing, name
            assert cls.advance is not TimedMethod.advance, name
        else:
            assert cls.step is not Method.step, name
    assert issubclass(EventMethod, TimedMethod)
