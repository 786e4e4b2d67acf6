"""Every registered method runs a few rounds on a small logistic regression through the channel
(finite iterates, bits and oracle calls counted), or refuses it before running with a message
that says what to set."""
from __future__ import annotations

import math

import pytest

from optsim.experiment import ConfigError, parse_config, run_method
from optsim.experiment.runner import validate_methods
from optsim.methods import METHODS

#: methods whose theory needs constants this problem cannot give (noise level, (L0, L1)
#: constants, an optimizer's own theory): they must say so before running
NEEDS_MORE = {"asgd", "async_local_sgd", "minibatch_sgd", "rennala_sgd", "rennala_mvr", "rescaled_asgd",
              "ringmaster_asgd", "ringleader_asgd", "cgluon", "minibatch_lmo", "ringmaster_lmo", "dist_opt", "fedopt", "local_opt"}
NEEDS_MORE |= {name for name, cls in METHODS.items() if cls.stepsize_source == "explicit"}
#: pipeline-parallel simulations: stages pass activations, no client-server messages
NO_CHANNEL = {"pipedream", "rpd", "local_sgd_pipe"}


@pytest.fixture(scope="module")
def problem(tiny_logreg):
    return tiny_logreg


def _spec(name):
    cls = METHODS[name]
    if "compressor" not in cls.uses:
        return [{"name": name}]
    return [{"name": name, "compressor": {"name": "rand_k", "k": 2}}, {"name": name, "compressor": {"name": "top_k", "k": 2}}]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_runs_or_refuses_clearly(problem, name):
    specs = _spec(name)
    cfg = parse_config({"problem": {"name": "logreg"}, "methods": specs[:1], "stop": {"max_rounds": 40}, "log_every": 1})
    if name in NEEDS_MORE:
        with pytest.raises(ConfigError, match="set '"):
            validate_methods(cfg, problem)
        return
    trace = None
    for spec in specs:
        trace = run_method(problem, spec, cfg, progress=False)
        if trace.status != "failed":
            break
    assert trace.status in ("finished", "diverged"), trace.meta.get("message")
    assert trace.last("round") >= 1 and math.isfinite(trace.last("loss"))
    assert trace.last("grad_evals") > 0 or trace.last("hess_evals") > 0 or trace.last("func_evals") > 0
    if name not in NO_CHANNEL:  # probabilistic communication: 40 rounds communicate at least once
        assert trace.last("bits_up") > 0 or trace.last("bits_down") > 0
