"""Resuming an interrupted run gives the uninterrupted run: every trace column but wall time, for
round-based and event-driven methods, whether Ctrl-C arrives inside a round (deferred to the end of
the round) or an exception stops a round half-way (the last complete checkpoint is kept)."""
from __future__ import annotations

import math
import os
import signal

import pytest

from optsim.experiment import build_problem, parse_config
from optsim.experiment.runs import summary_line
from optsim.experiment.store import ResultStore, run_stored

CASES = {
    "diana": ({"problem": {"name": "logreg"}, "stop": {"max_rounds": 40}, "log_every": 3, "checkpoint_every": 7},
              {"name": "diana", "compressor": {"name": "rand_k", "k": 2}}),
    "gd": ({"problem": {"name": "logreg"}, "stop": {"max_rounds": 40}, "log_every": 4, "checkpoint_every": 10,
            "time": {"compute": "sqrt", "latency_up": 0.1, "bandwidth_up": 1000.0}}, {"name": "gd"}),
    "asgd": ({"problem": {"name": "quadratic", "clients": 6, "dim": 5, "noise": 0.3}, "stop": {"max_rounds": 60},
              "log_every": 6, "checkpoint_every": 6, "time": {"compute": "sqrt", "jitter": "exponential"}},
             {"name": "asgd", "stepsize": 0.05}),
}


def _problem(cfg, tiny_logreg):
    return tiny_logreg if cfg.problem.name == "logreg" else build_problem(cfg)


def _rows(trace):
    return {c: v for c, v in trace.rows.items() if c != "wall_time"}


def _assert_same(a, b):
    ra, rb = _rows(a), _rows(b)
    assert ra.keys() == rb.keys()
    for c in ra:
        assert len(ra[c]) == len(rb[c]) and all(x == y or (math.isnan(x) and math.isnan(y))
                                                for x, y in zip(ra[c], rb[c])), c


def _interrupt_at(problem, call: int, how: str):
    """Make the problem's ``call``-th oracle call interrupt the run: ``signal`` sends SIGINT to this
    process (Ctrl-C), ``raise`` raises KeyboardInterrupt on the spot (half a round done)."""
    counter = {"n": 0}
    names = ("_grads", "_sample_grads") if hasattr(problem, "_sample_grads") else ("_grads",)
    originals = {n: getattr(problem, n) for n in names}

    def wrap(fn):
        def f(*args):
            counter["n"] += 1
            if counter["n"] == call:
                if how == "signal":
                    os.kill(os.getpid(), signal.SIGINT)
                else:
                    raise KeyboardInterrupt
            return fn(*args)
        return f

    for n, fn in originals.items():
        setattr(problem, n, wrap(fn))
    return lambda: [setattr(problem, n, fn) for n, fn in originals.items()]


@pytest.fixture
def ctrl_c():
    """SIGINT delivered as Ctrl-C (Python's default handler) for the test, whatever this process
    inherited: a shell starts background jobs with SIGINT ignored, and a run then (rightly) leaves it
    ignored."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("how", ["signal", "raise"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_resumed_run_equals_the_uninterrupted_run(case, how, tmp_path, tiny_logreg, capsys, ctrl_c):
    cfg_dict, spec = CASES[case]
    cfg = parse_config({**cfg_dict, "methods": [spec]})
    problem = _problem(cfg, tiny_logreg)
    whole = run_stored(ResultStore(tmp_path / "a.db"), problem, spec, cfg, progress=False)
    assert whole.status == "finished"

    store = ResultStore(tmp_path / "b.db")
    restore = _interrupt_at(problem, 30, how)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_stored(store, problem, spec, cfg, progress=False)
    finally:
        restore()
    capsys.readouterr()
    again = run_stored(store, problem, spec, cfg, progress=False)
    assert again.status == "finished"
    _assert_same(whole, again)
    resumed = again.meta.get("resumed_from")
    assert resumed is not None and 0 < resumed < whole.last("round")
    assert f"resumed from round {resumed:g}" in summary_line(again)
    if how == "signal":  # Ctrl-C waits for the round to end, and the run checkpoints there
        assert resumed >= 1
