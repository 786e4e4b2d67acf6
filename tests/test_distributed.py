"""Real multi-process execution (torch.distributed, gloo on loopback) against the simulated backend.

The same config and seed must give the same trace to 1e-12 in float64 (bits, oracle calls and
rounds exactly), compressed messages must travel compactly (top-k: O(k) bytes per client), and a
worker that dies or hangs must end the run with status ``failed``, its trace kept, and no hang.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import yaml

from optsim import build_problem, parse_config, run_method
from optsim.channel.distributed import codec_for, shard_bounds
from optsim.cli import main
from optsim.compress import make_compressor
from optsim.distributed import DistributedRunError, launch, shard_problem
from optsim.trace import Trace
from optsim.meter import Meter

N, K_TOP = 10, 2  # 10 clients: 4 ranks own 2, 3, 2, 3 (uneven: rows are padded)
METHODS = [
    {"name": "gd", "label": "GD"},
    {"name": "diana", "compressor": {"name": "rand_k", "k": 3}, "label": "DIANA rand-3"},
    {"name": "ef21", "compressor": {"name": "top_k", "k": K_TOP}, "label": "EF21 top-2"},
    {"name": "marina", "compressor": {"name": "rand_k", "k": 3}, "label": "MARINA rand-3"},
    {"name": "ef21", "compressor": {"name": "top_k", "k": K_TOP}, "sampler": {"name": "nice", "tau": 4},
     "label": "EF21-PP top-2"},
    {"name": "diana", "compressor": ["natural", {"name": "rand_k", "k": 4}], "label": "DIANA natural(rand-4)"},
    {"name": "fednl", "compressor": {"name": "top_k", "k": 8}, "label": "FedNL top-8"},  # messages wider than d
]


def config_dict(out, methods=METHODS, rounds=30):
    return {"name": "dist", "out": str(out), "seed": 5,
            "problem": {"name": "logreg", "data": "synthetic:logreg", "clients": N, "lam": 0.05},
            "methods": methods, "stop": {"max_rounds": rounds, "tol": None}, "log_every": 1}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # its own solution cache, never the user's
        mp.setenv("OPTSIM_CACHE", str(tmp_path_factory.mktemp("cache")))
        cfg = parse_config(config_dict("unused"))
        problem = build_problem(cfg)
        return {t.label: t for t in (run_method(problem, s, cfg, progress=False) for s in cfg.methods)}


def assert_same_trace(sim: Trace, dist: Trace) -> None:
    assert dist.status == sim.status == "finished"
    assert len(dist) == len(sim) == 31
    for c in ("round", "comm_rounds", "bits_up", "bits_down", "grad_evals"):
        np.testing.assert_array_equal(dist[c], sim[c], err_msg=f"{sim.label}: {c}")
    for c in ("loss", "f_gap", "grad_norm_sq", "dist_sq"):
        np.testing.assert_allclose(dist[c], sim[c], rtol=1e-12, atol=1e-12, err_msg=f"{sim.label}: {c}")
    assert sim["f_gap"][-1] < 0.7 * sim["f_gap"][0]  # the runs move: equality is not trivial


def wire_per_round(t: Trace) -> float:
    w = t["wire_bytes"]
    return float(w[-1] - w[-2])


def test_cli_two_processes_match_simulated(tmp_path, simulated):
    cfg_path = tmp_path / "dist.yaml"
    cfg_path.write_text(yaml.safe_dump(config_dict(tmp_path / "out")))
    db = tmp_path / "runs.db"
    rc = main(["run", str(cfg_path), "--backend", "distributed", "--nproc", "2", "--store", str(db),
               "--no-plot", "-q"])
    assert rc == 0
    got = {t.label: t for t in (Trace.load(f) for f in (tmp_path / "out" / "traces").glob("*.json"))}
    assert set(got) == set(simulated)
    for label, sim in simulated.items():
        assert_same_trace(sim, got[label])
        assert got[label].meta["distributed"]["world_size"] == 2
    # top-k travels as k values + k int16 indices per client: O(k) bytes, not O(d)
    d = 20
    ef21 = got["EF21 top-2"]
    assert ef21.meta["distributed"]["formats"] == {"dense all_reduce": 1, "2 int16 indices + float": 30}
    assert wire_per_round(ef21) == N * K_TOP * (8 + 2) < N * d * 8 / 5
    assert wire_per_round(got["DIANA rand-3"]) == N * 3 * (8 + 2)
    assert wire_per_round(got["DIANA natural(rand-4)"]) == N * 4 * (2 + 2)  # int16 exponents + indices
    assert wire_per_round(got["GD"]) == 2 * d * 8  # one all_reduce of the owned rows' sum per rank
    # the model's bits for top-k: k (32 + ceil(log2 d)) per client and round
    assert ef21["bits_up"][-1] - ef21["bits_up"][-2] == K_TOP * (32 + 5)
    # the results store holds the runs, written by rank 0
    from optsim.experiment.store import ResultStore

    store = ResultStore(db)
    rows = store.runs()
    assert sorted(r["status"] for r in rows) == ["finished"] * len(METHODS)
    # run again: every run is reused; one stored by another optsim build is flagged as such
    with store._tx() as conn:
        conn.execute("UPDATE runs SET version = 'older' WHERE label = 'GD'")
    assert main(["run", str(cfg_path), "--backend", "distributed", "--nproc", "2", "--store", str(db),
                 "--no-plot", "-q"]) == 0
    again = {t.label: t for t in (Trace.load(f) for f in (tmp_path / "out" / "traces").glob("*.json"))}
    assert all(t.meta["reused"] for t in again.values())
    assert {label for label, t in again.items() if "stored_by" in t.meta} == {"GD"}
    assert again["GD"].meta["stored_by"] == "older"


def test_four_processes_match_simulated(tmp_path, simulated):
    cfg = parse_config(config_dict(tmp_path / "out"))
    traces = launch(cfg, 4, progress=False, plot=False)
    got = {t.label: t for t in traces}
    for label, sim in simulated.items():
        assert_same_trace(sim, got[label])
    assert got["GD"].meta["distributed"]["shards"] == shard_bounds(N, 4) == [0, 2, 5, 7, 10]
    # 4 ranks own 2, 3, 2, 3 clients: rows are padded to 3 per rank, still O(k) per client
    assert wire_per_round(got["EF21 top-2"]) == 4 * 3 * K_TOP * (8 + 2)


def test_dead_worker_ends_the_run_failed_and_keeps_the_trace(tmp_path):
    methods = [{"name": "diana", "compressor": {"name": "rand_k", "k": 3}, "label": "DIANA"}, {"name": "gd"}]
    cfg = parse_config(config_dict(tmp_path / "out", methods, rounds=10**7))
    t0 = time.perf_counter()
    with pytest.raises(DistributedRunError) as err:
        launch(cfg, 4, progress=False, plot=False, timeout=20, fault=(2, 6))
    assert time.perf_counter() - t0 < 60
    msg = str(err.value)
    assert "\n" not in msg and "'DIANA' failed at round 6" in msg and "Connection" in msg
    (t,) = err.value.traces  # GD never started
    saved = Trace.load(tmp_path / "out" / "traces" / "DIANA.json")
    for trace in (t, saved):
        assert trace.status == "failed"
        assert "DistributedError" in trace.meta["message"]
        np.testing.assert_array_equal(trace["round"], np.arange(7))  # everything logged up to the death


def test_a_survivor_stuck_in_a_wait_still_saves_the_run(tmp_path):
    """A rank dies while the others sit in a wait inside C++ (a store or socket wait, up to the
    collective timeout), where the launcher's SIGTERM cannot be handled: they are given longer than
    the agent's shutdown timeout (5 s) and :data:`STOP_GRACE` before a SIGKILL, and rank 0 saves the
    run when the wait returns."""
    cfg = parse_config(config_dict(tmp_path / "out", [{"name": "gd"}], rounds=10**7))
    with pytest.raises(DistributedRunError) as err:
        launch(cfg, 3, progress=False, plot=False, timeout=20, fault=(2, 4, "kill", 6))
    (t,) = err.value.traces
    assert t.status == "failed" and t.last("round") >= 4
    assert Trace.load(tmp_path / "out" / "traces" / "gd.json").status == "failed"


def test_a_taken_rendezvous_port_is_never_joined(tmp_path, monkeypatch):
    """The launcher's port can be taken between its choice and the store's bind (another launch or
    program). The agent must not join the store it finds there as a client: it hosts its own, on the
    next port tried."""
    import datetime
    import subprocess
    import sys

    import torch.distributed as tdist

    from optsim.distributed import launcher

    host = subprocess.Popen(  # another program's store on the port the launcher is about to pick
        [sys.executable, "-c", ("import datetime, time, torch.distributed as d; "
                                "s = d.TCPStore('127.0.0.1', 0, is_master=True, timeout=datetime.timedelta(seconds=60)); "
                                "s.set('owner', 'another program'); print(s.port, flush=True); time.sleep(300)")],
        stdout=subprocess.PIPE, text=True)
    try:
        port = int(host.stdout.readline())
        foreign = tdist.TCPStore("127.0.0.1", port, is_master=False, timeout=datetime.timedelta(seconds=30))
        keys = foreign.num_keys()
        ports = iter([port])
        real = launcher._free_port
        monkeypatch.setattr(launcher, "_free_port", lambda: next(ports, None) or real())
        cfg = parse_config(config_dict(tmp_path / "out", [{"name": "gd"}], rounds=5))
        (t,) = launch(cfg, 2, progress=False, plot=False, timeout=20)
        assert t.status == "finished" and t.last("round") == 5
        assert foreign.num_keys() == keys
    finally:
        host.kill()
        host.wait()


def test_hung_worker_times_out(tmp_path):
    cfg = parse_config(config_dict(tmp_path / "out", [{"name": "gd"}], rounds=10**7))
    t0 = time.perf_counter()
    with pytest.raises(DistributedRunError, match="Timed out") as err:
        launch(cfg, 2, progress=False, plot=False, timeout=3, fault=(1, 3, "hang"))
    assert time.perf_counter() - t0 < 40
    assert err.value.traces[0].status == "failed" and err.value.traces[0].last("round") == 3


def test_a_model_computed_outside_the_channel_is_refused(tmp_path):
    """ProxSkip's iterate between communications is the virtual average of the local models: it
    cannot exist on a rank that holds only its own clients, and the run says so."""
    cfg = parse_config(config_dict(tmp_path / "out", [{"name": "proxskip", "p": 0.2}], rounds=50))
    with pytest.raises(DistributedRunError, match="outside the channel"):
        launch(cfg, 2, progress=False, plot=False, timeout=20)


def test_nproc_needs_the_distributed_backend(tmp_path, capsys):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(config_dict(tmp_path / "out")))
    assert main(["run", str(cfg_path), "--nproc", "2", "--no-store"]) == 2
    assert "--backend distributed" in capsys.readouterr().err


# ---- the pieces, in this process ------------------------------------------------------------------------
COMPRESSORS = [
    ("identity", 20 * 8), ({"name": "rand_k", "k": 3}, 3 * 10), ({"name": "top_k", "k": 4}, 4 * 10),
    ("perm_k", 4 * 10), ("natural", 20 * 2), ({"name": "qsgd", "s": 3}, 8 + 20), ("sign", 20),
    ("scaled_sign", 8 + 20), ({"name": "bernoulli", "p": 0.5, "inner": {"name": "top_k", "k": 2}}, 2 * 10),
    (["natural", {"name": "rand_k", "k": 3}], 3 * 4), (["sign", {"name": "top_k", "k": 3}], 3 * 3),
    (["qsgd", {"name": "rand_k", "k": 5}], 5 * 10), (["scaled_sign", {"name": "top_k", "k": 5}], 8 + 5 * 3),
]


@pytest.mark.parametrize("spec,row_bytes", COMPRESSORS, ids=[json.dumps(s) for s, _ in COMPRESSORS])
def test_compact_forms_reproduce_the_compressed_values(spec, row_bytes, gen):
    d, n = 20, 5
    X = torch.randn(n, d, dtype=torch.float64, generator=gen) * torch.logspace(-3, 3, d, dtype=torch.float64)
    X[1] = 0.0
    msg = make_compressor(spec, d, n)(X, gen, torch.arange(n))
    codec = codec_for(msg)
    parts = codec.encode(msg.values, X)
    assert torch.equal(codec.decode(parts, d, X.dtype), msg.values)  # bit for bit
    assert sum(p[0].numel() * p.element_size() for p in parts) == row_bytes


def test_sharded_view_computes_owned_rows_and_counts_like_the_full_problem(gen):
    cfg = parse_config(config_dict("unused"))
    full = build_problem(cfg)
    view = shard_problem(full, 3, 7)
    assert isinstance(view, type(full)) and view.n == full.n and view.L == full.L and view.f_star == full.f_star
    X = torch.randn(full.n, full.d, dtype=torch.float64, generator=gen)
    G, Gv = full.grads(X), view.grads(X)
    torch.testing.assert_close(Gv[3:7], G[3:7], rtol=0, atol=1e-15)
    assert not Gv[:3].any() and not Gv[7:].any()
    rows = torch.tensor([8, 4, 4, 0, 6])  # partial participation, duplicates allowed
    Gr = view.grads(X[:5], clients=rows)
    torch.testing.assert_close(Gr[1:3], full.grads(X[:5], clients=rows)[1:3], rtol=0, atol=1e-15)
    assert not Gr[0].any() and not Gr[3].any()
    # minibatch oracles: the same generator draws for all rows, owned rows only computed
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    Sf, Sv = full.minibatch_grads(X, 3, g1), view.minibatch_grads(X, 3, g2)
    torch.testing.assert_close(Sv[3:7], Sf[3:7], rtol=0, atol=1e-15)
    assert torch.equal(g1.get_state(), g2.get_state())
    # counted as in the simulation: every requested row, on every rank
    mf, mv = Meter(full.n), Meter(full.n)
    full.attach(mf).grads(X[:5], clients=rows)
    view.attach(mv).grads(X[:5], clients=rows)
    assert torch.equal(mf.close_round().oracle["grad"], mv.close_round().oracle["grad"])
    full.attach(None)
    # uncounted global quantities stay global
    assert view.loss(X[0]) == full.loss(X[0])


def _descendants(pid: int) -> list[int]:
    from pathlib import Path

    kids = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text().rsplit(")", 1)[1].split()
                if stat[0] != "Z":
                    kids.setdefault(int(stat[1]), []).append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


@pytest.mark.parametrize("victim", [1, 0])
def test_a_stopped_worker_ends_the_command_within_the_timeout(tmp_path, victim):
    """A rank stopped by SIGSTOP (it can handle no signal): the run is marked failed at the collective
    timeout and the launcher returns a few seconds later, leaving no process behind."""
    cfg = parse_config(config_dict(tmp_path / "out", [{"name": "gd"}], rounds=10**7))
    t0 = time.perf_counter()
    with pytest.raises(DistributedRunError):
        launch(cfg, 2, progress=False, plot=False, timeout=3, fault=(victim, 3, "stop"))
    assert time.perf_counter() - t0 < 3 + 8
    assert _descendants(__import__("os").getpid()) == []


def test_rank_0_killed_ends_its_store_row_failed_with_what_was_logged(tmp_path, capsys):
    from optsim.experiment.store import ResultStore

    store = ResultStore(tmp_path / "runs.db")
    cfg = parse_config(config_dict(tmp_path / "out", [{"name": "gd", "label": "GD"}], rounds=10**7))
    with pytest.raises(DistributedRunError) as err:
        launch(cfg, 2, progress=False, plot=False, timeout=5, store=store, fault=(0, 4))
    (row,) = store.runs()
    assert row["status"] == "failed" and store.status(row) == "failed"
    t = store.trace(store.get(row["id"]))
    assert t.status == "failed" and t.last("round") >= 4 and "rank 0" in t.meta["message"]
    assert Trace.load(tmp_path / "out" / "traces" / "GD.json").last("round") == t.last("round")
    assert err.value.traces and err.value.traces[0].label == "GD"
    assert main(["runs", "ls", "--store", str(store.path)]) == 0
    assert "running" not in capsys.readouterr().out
