"""The results store, checkpoints and sweeps: reuse, resume, concurrency, killed workers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest
import yaml

from optsim.experiment import parse_config, run_method
from optsim.experiment import runner as runner_mod
from optsim.experiment.build import build_problem
from optsim.experiment.store import ResultStore, run_hash, run_stored
from optsim.experiment.sweep import best_of_grid, expand_sweep, run_sweep
from optsim.trace import Trace

BASE = {"name": "st", "problem": {"name": "logreg", "data": "synthetic:logreg", "size": 240, "dim": 8, "clients": 6,
                                  "lam": 0.1},
        "methods": [{"name": "diana", "compressor": {"name": "rand_k", "k": 2}}], "stop": {"max_rounds": 120},
        "log_every": 5}


def cfg(**over):
    d = json.loads(json.dumps(BASE))
    d.update(over)
    return parse_config(d)


@pytest.fixture()
def problem():
    return build_problem(cfg())


def _rows(t: Trace):
    return {k: v for k, v in t.rows.items() if k != "wall_time"}


def test_hash_ignores_key_order_and_presentation():
    a = parse_config(BASE)
    b = parse_config(json.loads(json.dumps({k: BASE[k] for k in reversed(list(BASE))})))
    spec_b = dict(reversed(list(b.methods[0].items())))
    assert run_hash(a, a.methods[0]) == run_hash(b, spec_b)
    c = cfg(name="other", plot={"x": ["bits_up"]})
    assert run_hash(a, a.methods[0]) == run_hash(c, c.methods[0])
    d = cfg(seed=1)
    assert run_hash(a, a.methods[0]) != run_hash(d, d.methods[0])


def test_finished_run_is_reused(tmp_path, problem, monkeypatch):
    store = ResultStore(tmp_path / "runs.db")
    c = cfg()
    first = run_stored(store, problem, c.methods[0], c, progress=False)
    assert first.status == "finished"

    def boom(*a, **k):
        raise AssertionError("a finished run must not be recomputed")

    monkeypatch.setattr(runner_mod, "run_method", boom)
    again = run_stored(store, problem, c.methods[0], c, progress=False)
    assert again.meta["reused"] and _rows(again) == _rows(first)
    assert len(store.runs()) == 1


def test_diverged_run_is_stored_with_partial_trace(tmp_path, problem):
    store = ResultStore(tmp_path / "runs.db")
    c = cfg(methods=[{"name": "gd", "stepsize": 1e3}])
    t = run_stored(store, problem, c.methods[0], c, progress=False)
    row = store.runs()[0]
    assert t.status == row["status"] == "diverged"
    stored = store.trace(store.get(row["id"]))
    assert 1 <= len(stored) < 25 and "blew up" in stored.meta["message"] or "non-finite" in stored.meta["message"]


def test_checkpoint_resume_is_bit_identical(problem):
    c = cfg()
    spec = c.methods[0]
    full = run_method(problem, spec, c, progress=False)
    saved = {}

    def keep(session):
        if session.k == 40:
            saved["blob"] = session.state_bytes()

    run_method(problem, spec, c, progress=False, checkpoint=keep, checkpoint_every=20)
    resumed = run_method(problem, spec, c, progress=False, resume=saved["blob"])
    assert _rows(resumed) == _rows(full)


def test_interrupted_run_resumes_from_store(tmp_path, problem, monkeypatch):
    store = ResultStore(tmp_path / "runs.db")
    c = cfg(checkpoint_every=20)
    spec = c.methods[0]
    full = run_method(problem, spec, c, progress=False)
    real_step = runner_mod.Session.step

    def interrupting(self):
        if self.k == 50:
            raise KeyboardInterrupt
        real_step(self)

    monkeypatch.setattr(runner_mod.Session, "step", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run_stored(store, problem, spec, c, progress=False)
    row = store.runs()[0]
    assert row["status"] == "interrupted" and store.get(row["id"])["checkpoint"]
    monkeypatch.setattr(runner_mod.Session, "step", real_step)
    t = run_stored(store, problem, spec, c, progress=False)
    assert t.status == "finished" and _rows(t) == _rows(full)
    assert store.get(row["id"])["checkpoint"] is None


def _writer(path: str, worker: int, n: int) -> None:
    c = parse_config(BASE)
    store = ResultStore(path)
    for i in range(n):
        spec = dict(c.methods[0], stepsize=0.01 * (1 + worker * 100 + i))
        h = run_hash(c, spec)
        assert store.claim(h, c, spec)[0] == "claimed"
        t = Trace(f"w{worker}-{i}", "diana", status="finished")
        t.append({"round": 0, "f_gap": 1.0})
        store.save_result(h, t)


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "runs.db")
    ctx = get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = ResultStore(path)
    rows = store.runs()
    assert len(rows) == 60 and {r["status"] for r in rows} == {"finished"}
    assert store.integrity() == "ok"


def _sweep_dict(rounds=120):
    d = json.loads(json.dumps(BASE))
    d["stop"]["max_rounds"] = rounds
    d["sweep"] = {"grid": {"methods.*.stepsize_mult": "2^-2..2^1", "seed": [0, 1]},
                  "tune": ["methods.*.stepsize_mult"]}
    return d


def test_sweep_expands_runs_and_picks_best(tmp_path):
    d = _sweep_dict()
    base, jobs = expand_sweep(d)
    assert len(jobs) == 8 and len({j.hash for j in jobs}) == 8
    store = ResultStore(tmp_path / "runs.db")
    result = run_sweep(d, store, jobs=1, progress=False)
    assert set(result.status.values()) == {"finished"} and len(store.runs()) == 8
    best = best_of_grid(base, result)
    assert len(best) == 1 and best[0]["runs"] == 2
    # the best multiplier has the lowest median final error among the grid's values
    finals = {}
    for j in jobs:
        finals.setdefault(j.point["methods.*.stepsize_mult"], []).append(result.final[j.hash])
    assert best[0]["median_final"] == min(float(np.median(v)) for v in finals.values())
    again = run_sweep(d, store, jobs=1, progress=False)  # everything reused
    assert again.final == result.final and len(store.runs()) == 8


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().split(") ")[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _wait(store_path, predicate, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if Path(store_path).exists():
            try:
                rows = ResultStore(store_path).runs()
            except Exception:
                rows = []
            if predicate(rows):
                return rows
        time.sleep(0.2)
    raise TimeoutError("the sweep did not get there in time")


#: rounds of the sweeps whose workers are killed: long enough that runs are caught half-way
KILL_ROUNDS = 1500


def _start_sweep(tmp_path, store_path, *extra):
    cfg_path = tmp_path / "sweep.yaml"
    d = _sweep_dict(rounds=KILL_ROUNDS)
    d["checkpoint_every"] = 100
    cfg_path.write_text(yaml.safe_dump(d))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "optsim.cli", "sweep", str(cfg_path), "--jobs", "2", "--store", str(store_path), "-q",
           *extra]
    return cmd, env, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      start_new_session=True, preexec_fn=_ctrl_c_as_at_a_terminal)


def _ctrl_c_as_at_a_terminal():
    """SIGINT with its default action in the child, whatever this process inherited (a shell starts
    background jobs, and so their children, with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _check_complete(store_path):
    store = ResultStore(store_path)
    rows = store.runs()
    assert len(rows) == 8 and len({r["hash"] for r in rows}) == 8
    assert {r["status"] for r in rows} == {"finished"}
    for row, t in store.traces():
        assert len(t) > 0 and t.last("round") == KILL_ROUNDS
    assert store.integrity() == "ok"


def test_sweep_survives_a_killed_worker_and_sigint(tmp_path):
    store_path = tmp_path / "runs.db"
    cmd, env, proc = _start_sweep(tmp_path, store_path)
    _wait(store_path, lambda rows: any(r["status"] == "running" and (r["rounds"] or 0) > 0 for r in rows))
    _kill_a_worker(proc)
    _wait(store_path, lambda rows: sum(r["status"] == "finished" for r in rows) >= 3)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(120)
    rows = ResultStore(store_path).runs()
    assert sum(r["status"] == "finished" for r in rows) < 8, "interrupted before the end"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    _check_complete(store_path)


def _kill_a_worker(proc):
    workers = [c for c in _children(proc.pid) if "python" in Path(f"/proc/{c}/cmdline").read_text(errors="ignore")]
    victims = [w for w in workers if b"spawn_main" in Path(f"/proc/{w}/cmdline").read_bytes()]
    assert victims, "the sweep should run its jobs in worker processes"
    os.kill(victims[0], signal.SIGKILL)


def test_forced_sweep_redoes_every_run_despite_a_killed_worker(tmp_path):
    """``--force``: a worker's death breaks the pool; the restarted runs that this sweep had not
    written yet are still redone (not reused from their old rows), the others not twice."""
    store_path = tmp_path / "runs.db"
    cmd, env, proc = _start_sweep(tmp_path, store_path)
    assert proc.wait(300) == 0, proc.stderr.read()[-2000:]
    _check_complete(store_path)
    started = time.time()
    cmd, env, proc = _start_sweep(tmp_path, store_path, "--force")
    _wait(store_path, lambda rows: any(r["status"] == "running" and r["updated"] > started and (r["rounds"] or 0) > 0
                                       for r in rows))
    _kill_a_worker(proc)
    assert proc.wait(300) == 0, proc.stderr.read()[-2000:]
    assert b"a sweep worker died" in proc.stderr.read()
    _check_complete(store_path)
    assert all(r["updated"] > started and r["created"] < started for r in ResultStore(store_path).runs())


def test_batched_sweep_equals_unbatched(tmp_path):
    d = _sweep_dict()
    d["problem"]["data_seed"] = 0  # seeds vary the method's randomness only: one problem, one batch
    plain = run_sweep(d, ResultStore(tmp_path / "a.db"), jobs=1, progress=False, batch=1)
    batched = run_sweep(d, ResultStore(tmp_path / "b.db"), jobs=1, progress=False, batch=8)
    assert set(batched.status.values()) == {"finished"}
    for h, v in plain.final.items():
        assert batched.final[h] == pytest.approx(v, rel=1e-9, abs=1e-15)
    a = {t.label: t for _, t in ResultStore(tmp_path / "a.db").traces()}
    for _, t in ResultStore(tmp_path / "b.db").traces():
        np.testing.assert_allclose(t["f_gap"], a[t.label]["f_gap"], rtol=1e-9, atol=1e-14)
        assert t.rows["bits_up"] == a[t.label].rows["bits_up"]


def test_cli_runs_export_report_and_plot(tmp_path, capsys):
    import csv

    from optsim.cli import main

    cfg_path = tmp_path / "c.yaml"
    d = json.loads(json.dumps(BASE))
    d["methods"].append({"name": "gd"})
    cfg_path.write_text(yaml.safe_dump(d))
    db = str(tmp_path / "runs.db")
    assert main(["run", str(cfg_path), "--store", db, "--out", str(tmp_path / "out"), "-q", "--no-plot"]) == 0
    capsys.readouterr()
    assert main(["run", str(cfg_path), "--store", db, "--out", str(tmp_path / "out"), "-q", "--no-plot"]) == 0
    assert capsys.readouterr().err.count("reused from the results store") == 2
    assert main(["runs", "ls", "--store", db]) == 0
    listing = capsys.readouterr().out
    assert "diana" in listing and "gd" in listing and "finished" in listing
    assert main(["runs", "show", "1", "--store", db]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "finished" and shown["config"]["method"]["name"] == "diana"
    out_csv = tmp_path / "r.csv"
    assert main(["runs", "export", "--store", db, "--out", str(out_csv)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 2 * (120 // 5 + 1) and {r["method"] for r in rows} == {"diana", "gd"}
    report = tmp_path / "rep.html"
    assert main(["report", "--store", db, "--experiment", "st", "--out", str(report)]) == 0
    text = report.read_text()
    assert "data:image/png;base64," in text and "diana" in text and "<table>" in text
    assert main(["plot", "--store", db, "--experiment", "st", "--out", str(tmp_path / "fig")]) == 0
    assert list((tmp_path / "fig").glob("*.png"))
    assert main(["runs", "rm", "1", "--store", db]) == 0
    assert len(ResultStore(db).runs()) == 1


def test_run_made_by_another_build_is_flagged(tmp_path, problem, capsys):
    """A finished run stored by another optsim build is reused but reported as such (summary, sweep,
    ``runs ls``); one made by this build is not."""
    from optsim.cli import main
    from optsim.experiment.runs import summary_line
    from optsim.experiment.store import build_id

    store = ResultStore(tmp_path / "runs.db")
    c = cfg()
    first = run_stored(store, problem, c.methods[0], c, progress=False)
    assert store.runs()[0]["version"] == build_id() and build_id().startswith("0.")
    same = run_stored(store, problem, c.methods[0], c, progress=False)
    assert same.meta["reused"] and "stored_by" not in same.meta and "made by" not in summary_line(same)
    with store._tx() as conn:
        conn.execute("UPDATE runs SET version = '0.0.9+0123456789ab'")
    old = run_stored(store, problem, c.methods[0], c, progress=False)
    assert old.meta["reused"] and old.meta["stored_by"] == "0.0.9+0123456789ab"
    assert _rows(old) == _rows(first)
    assert "made by optsim 0.0.9+0123456789ab: --redo-stale recomputes it" in summary_line(old)
    assert main(["runs", "ls", "--store", str(tmp_path / "runs.db")]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("0.0.9+0123456789ab")
    redone = run_stored(store, problem, c.methods[0], c, progress=False, force="stale")
    assert not redone.meta.get("reused") and store.runs()[0]["version"] == build_id()
    assert _rows(redone) == _rows(first)  # same code path, same numbers
    kept = run_stored(store, problem, c.methods[0], c, progress=False, force="stale")  # this build's: reused
    assert kept.meta["reused"] and "stored_by" not in kept.meta

    data = dict(json.loads(json.dumps(BASE)), name="st_sweep", sweep={"grid": {"seed": [0, 1]}})
    store2 = ResultStore(tmp_path / "sweep.db")
    run_sweep(data, store2, jobs=1, progress=False)
    with store2._tx() as conn:
        conn.execute("UPDATE runs SET version = '0.0.9+0123456789ab' WHERE seed = 1")
    capsys.readouterr()
    again = run_sweep(data, store2, jobs=1, progress=False)
    assert list(again.stale.values()) == ["0.0.9+0123456789ab"]
    assert "1 of the sweep's stored runs were made by another optsim build" in capsys.readouterr().err
    sweep_yaml = tmp_path / "sweep.yaml"
    sweep_yaml.write_text(yaml.safe_dump(data))
    seed0 = [r["updated"] for r in store2.runs() if r["seed"] == 0]
    assert main(["sweep", str(sweep_yaml), "--store", str(tmp_path / "sweep.db"), "--jobs", "1", "-q",
                 "--redo-stale"]) == 0
    assert sorted(r["version"] for r in store2.runs()) == [build_id()] * 2
    assert [r["updated"] for r in store2.runs() if r["seed"] == 0] == seed0  # this build's run: kept
    updated = {r["seed"]: r["updated"] for r in store2.runs()}
    assert main(["sweep", str(sweep_yaml), "--store", str(tmp_path / "sweep.db"), "--jobs", "1", "-q",
                 "--redo-stale"]) == 0
    assert {r["seed"]: r["updated"] for r in store2.runs()} == updated  # nothing stale left: nothing redone


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_killed_sweep_leaves_no_orphans_and_resumes(tmp_path):
    """kill -9 of the sweep process: its workers and the multiprocessing resource tracker exit with
    it within seconds, and the same command finishes the sweep (nothing races with survivors)."""
    store_path = tmp_path / "runs.db"
    cmd, env, proc = _start_sweep(tmp_path, store_path)
    _wait(store_path, lambda rows: any(r["status"] == "running" and (r["rounds"] or 0) > 0 for r in rows))
    kids = _children(proc.pid)
    assert any(b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes() for k in kids)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.2)
    assert not [k for k in kids if _alive(k)], "processes of the killed sweep are still running"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    _check_complete(store_path)


def test_a_running_row_of_a_dead_process_is_shown_orphaned(tmp_path, capsys):
    import socket

    from optsim.cli import main

    store = ResultStore(tmp_path / "runs.db")
    cfg = parse_config({"name": "o", "problem": {"name": "quadratic", "clients": 2, "dim": 2}, "methods": ["gd"]})
    state, _ = store.claim(run_hash(cfg, cfg.methods[0]), cfg, cfg.methods[0])
    assert state == "claimed"
    store.conn.execute("UPDATE runs SET owner = ?", (f"{socket.gethostname()}:{2 ** 22 + 12345}",))
    (row,) = store.runs()
    assert row["status"] == "running" and store.status(row) == "orphaned"
    assert main(["runs", "ls", "--store", str(store.path)]) == 0
    assert "orphaned" in capsys.readouterr().out


def test_readme_sweep_example_is_complete_and_reuses_the_quickstart_runs():
    """examples/sweep.yaml (shown whole in the README) expands without errors, and its multiplier-1,
    seed-0 runs are the quickstart's own runs (the same identity in the store)."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "examples" / "sweep.yaml").read_text()
    assert text in (root / "README.md").read_text()
    base, jobs = expand_sweep(yaml.safe_load(text))
    assert len(jobs) == 128
    from optsim.experiment import load_config

    quick = load_config(root / "examples" / "quickstart.yaml")
    assert {run_hash(quick, m) for m in quick.methods} <= {j.hash for j in jobs}


def test_presentation_never_changes_a_runs_identity():
    cfg = parse_config({"problem": {"name": "quadratic"}, "methods": ["gd"]})
    same = [{"name": "gd"}, {"name": "gd", "stepsize_mult": 1.0}, {"name": "gd", "label": "GD"}]
    assert len({run_hash(cfg, s) for s in same}) == 1
    assert run_hash(cfg, {"name": "dcgd", "compressor": "natural"}) == \
        run_hash(cfg, {"name": "dcgd", "compressor": {"name": "natural"}})
    assert run_hash(cfg, {"name": "gd", "stepsize_mult": 2.0}) != run_hash(cfg, {"name": "gd"})


def test_sweep_reports_progress_without_a_terminal_and_the_edge_of_the_grid(tmp_path, capsys):
    d = _sweep_dict()
    result = run_sweep(d, ResultStore(tmp_path / "runs.db"), jobs=1, progress=True)
    err = capsys.readouterr().err
    assert f"/{len(result.jobs)} runs done" in err and "left" in err
    base, _ = expand_sweep(d)
    (row,) = best_of_grid(base, result)  # DIANA at its theory stepsize x 2^-2 .. 2^1: the largest is best
    assert row["methods.*.stepsize_mult"] == 2.0 and row["edge"] == ["methods.*.stepsize_mult"]
