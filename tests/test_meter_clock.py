"""The meter (bits and oracle calls per client) and the clock (simulated time of rounds)."""
from __future__ import annotations

import math

import pytest
import numpy as np
import torch

from optsim.clock import Clock, TimeModel, compute_times
from optsim.meter import ORACLES, Meter, RoundUsage

F64 = torch.float64


def test_meter_rounds_accumulate():
    m = Meter(4)
    m.add_up([0, 2], torch.tensor([10.0, 20.0]))
    m.add_up([2], 5.0)
    m.add_up(None, 1.0)
    m.add_down(None, 7.0)
    m.add_down(torch.tensor([3, 3]), 2.0)  # repeated ids add up
    m.add_oracle("grad", [1, 3], 0.5)
    m.add_oracle("grad", None, 1.0)
    m.add_oracle("hess", [0], 1.0)
    u = m.close_round()
    assert isinstance(u, RoundUsage) and u.communicated
    assert u.bits_up.tolist() == [11.0, 1.0, 26.0, 1.0]
    assert u.bits_down.tolist() == [7.0, 7.0, 7.0, 11.0]
    assert u.oracle["grad"].tolist() == [1.0, 1.5, 1.0, 1.5]
    assert u.oracle["hess"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert u.oracle["func"].tolist() == [0.0] * 4
    assert m.comm_rounds == 1

    # a round without communication: counted oracle calls, no communication round
    m.add_oracle("grad", [2], 2.0)
    u2 = m.close_round()
    assert not u2.communicated and u2.bits_up.sum() == 0 and u2.oracle["grad"].tolist() == [0, 0, 2.0, 0]
    assert m.comm_rounds == 1
    # the usage returned earlier is a copy, not a view of live counters
    assert u.bits_up.tolist() == [11.0, 1.0, 26.0, 1.0]

    m.add_up([1], 4.0)
    m.close_round()
    assert m.bits_up.tolist() == [11.0, 5.0, 26.0, 1.0]
    assert m.bits_down.tolist() == [7.0, 7.0, 7.0, 11.0]
    assert m.oracle["grad"].tolist() == [1.0, 1.5, 3.0, 1.5]
    assert m.comm_rounds == 2
    snap = m.snapshot()
    assert snap["bits_up"] == pytest.approx(43 / 4) and snap["bits_down"] == pytest.approx(8.0)
    assert snap["grad_evals"] == pytest.approx(7 / 4) and snap["hess_evals"] == pytest.approx(0.25)
    assert snap["comm_rounds"] == 2.0
    assert set(ORACLES) == {"grad", "hess", "func"}
    for t in (m.bits_up, m.bits_down, *m.oracle.values()):
        assert t.dtype == F64 and t.shape == (4,)


def test_meter_common_amounts_need_no_per_client_tensor():
    """Amounts every client is charged alike (a float, or a shared constant-bits tensor) are kept as one
    number: the round's usage has no per-client part, and the counters are the same as if they had
    been added client by client."""
    from optsim.meter import constant_bits

    m, ref = Meter(3), Meter(3)
    m.add_up(None, constant_bits(3, 40.0))
    ref.add_up(None, torch.full((3,), 40.0, dtype=F64))  # a plain tensor: per client
    for meter in (m, ref):
        meter.add_down(None, 8.0)
        meter.add_oracle("grad", None, 1.0)
    u, u_ref = m.close_round(), ref.close_round()
    assert u.per_client is None and u_ref.per_client is not None and u.communicated and u_ref.communicated
    for a, b in ((u.bits_up, u_ref.bits_up), (u.bits_down, u_ref.bits_down), (u.oracle["grad"], u_ref.oracle["grad"])):
        assert a.tolist() == b.tolist()
    m.add_oracle("grad", [1], 0.5)  # then a client-dependent amount on top
    m.close_round()
    assert m.oracle["grad"].tolist() == [1.0, 1.5, 1.0] and m.bits_up.tolist() == [40.0] * 3
    assert m.snapshot()["grad_evals"] == pytest.approx(3.5 / 3) and m.comm_rounds == 1


def test_uniform_round_time_equals_per_client_formula():
    tm = TimeModel(torch.tensor([1.0, 2.5, 3.0]), latency_up=0.1, bandwidth_up=100.0,
                   latency_down=0.2, bandwidth_down=10.0)
    for up, down, g in ((100.0, 10.0, 1.0), (0.0, 10.0, 2.0), (50.0, 0.0, 0.0), (0.0, 0.0, 0.0)):
        uniform = RoundUsage(3, (up, down, g, 0.0, 0.0), None, up > 0 or down > 0)
        assert tm.round_time(uniform) == tm.round_time(_usage([up] * 3, [down] * 3, [g] * 3))


def test_meter_per_client_amounts_with_subset():
    m = Meter(5)
    m.add_oracle("grad", torch.tensor([4, 1]), torch.tensor([0.25, 0.5], dtype=F64))
    assert m.close_round().oracle["grad"].tolist() == [0.0, 0.5, 0.0, 0.0, 0.25]


def _usage(up, down, grads):
    """A round's usage with per-client amounts (as a meter gives it for client-dependent amounts)."""
    z = [0.0] * len(up)
    rows = np.array([up, down, grads, z, z], dtype=np.float64)
    return RoundUsage(len(up), (0.0,) * 5, rows, bool((rows[:2] > 0).any()))


def test_round_time_hand_example():
    """compute (1, 2, 3) s per gradient; up: latency 0.1 s, 100 bit/s; down: latency 0.2 s, 10 bit/s.
    client 0: 1*1 + (0.1 + 100/100) + (0.2 + 10/10) = 3.3
    client 1: 2*0.5 + 0 (sends nothing)  + (0.2 + 10/10) = 2.2
    client 2: 0 (no gradient) + (0.1 + 50/100) + 0     = 0.6     -> round time 3.3"""
    tm = TimeModel(torch.tensor([1.0, 2.0, 3.0]), latency_up=0.1, bandwidth_up=100.0,
                   latency_down=0.2, bandwidth_down=10.0)
    u = _usage([100.0, 0.0, 50.0], [10.0, 10.0, 0.0], [1.0, 0.5, 0.0])
    assert tm.round_time(u) == pytest.approx(3.3, rel=1e-14)
    # the slowest client decides: make client 2 compute 2 gradients -> 3*2 + 0.6 = 6.6
    u = _usage([100.0, 0.0, 50.0], [10.0, 10.0, 0.0], [1.0, 0.5, 2.0])
    assert tm.round_time(u) == pytest.approx(6.6, rel=1e-14)
    # latency is paid only by clients that send / receive
    u = _usage([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    assert tm.round_time(u) == 0.0


def test_round_time_defaults_are_compute_only():
    tm = TimeModel(compute_times("linear", 3, base=0.5))
    u = _usage([1e9, 1e9, 1e9], [1e9, 0, 0], [1.0, 1.0, 1.0])
    assert tm.round_time(u) == pytest.approx(1.5)  # infinite bandwidth, zero latency


def test_clock_advances():
    tm = TimeModel(torch.tensor([2.0, 1.0]), latency_up=1.0)
    clock = Clock(tm)
    assert clock.now == 0.0
    assert clock.advance(_usage([8.0, 8.0], [0, 0], [1.0, 1.0])) == pytest.approx(3.0)
    assert clock.advance(_usage([0.0, 8.0], [0, 0], [0.0, 3.0])) == pytest.approx(7.0)
    assert clock.now == pytest.approx(7.0)


def test_compute_times():
    assert compute_times("linear", 4).tolist() == [1.0, 2.0, 3.0, 4.0]
    assert compute_times("linear", 3, base=0.5).tolist() == [0.5, 1.0, 1.5]
    assert torch.allclose(compute_times("sqrt", 4, base=2.0),
                          torch.tensor([2.0, 2 * math.sqrt(2), 2 * math.sqrt(3), 4.0], dtype=F64))
    assert compute_times(0.25, 3).tolist() == [0.25] * 3
    assert compute_times([1, 2, 0], 3).tolist() == [1.0, 2.0, 0.0]
    assert compute_times("linear", 2).dtype == F64
    with pytest.raises(ValueError, match="'linear' or 'sqrt'"):
        compute_times("quadratic", 3)
    with pytest.raises(ValueError, match="expected one value or 3 values"):
        compute_times([1.0, 2.0], 3)
    with pytest.raises(ValueError, match=">= 0"):
        compute_times([1.0, -2.0, 1.0], 3)
