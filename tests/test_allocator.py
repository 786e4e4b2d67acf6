"""keep_freed_memory: glibc's thresholds raised once per process, skipped on request."""
from __future__ import annotations

import subprocess
import sys

import pytest

CODE = ("import optsim.allocator as a; first = a.keep_freed_memory(); print(first, a.keep_freed_memory() is first)")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_thresholds_set_once_and_opt_out():
    """A fresh process on glibc accepts both thresholds (mallopt returns 1) and a second call reuses the
    answer; OPTSIM_MALLOC=system leaves the C library's defaults (False, nothing called)."""
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True"]
    env = {"OPTSIM_MALLOC": "system", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True, env=env).stdout.split()
    assert out == ["False", "True"]


def test_a_session_sets_them(monkeypatch):
    """The round runner's Session calls it (the neural rounds' large buffers stay mapped)."""
    import optsim.experiment.runner as runner

    calls = []
    monkeypatch.setattr(runner, "keep_freed_memory", lambda: calls.append(1) or True)
    from optsim.experiment import parse_config
    from optsim.problems import Quadratic

    cfg = parse_config({"problem": {"name": "quadratic"}, "methods": ["gd"], "stop": {"max_rounds": 1}})
    runner.Session(Quadratic.generate(2, 3, seed=0), {"name": "gd"}, cfg)
    assert calls == [1]
