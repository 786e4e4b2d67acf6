"""The dashboard over the results store: its JSON endpoints on a store filled by real runs, the
server-side downsampling, the seed mean and band equal to what the figure draws, the export equal
to ``optsim plot``'s figure, a Content-Security-Policy on every response, the store never written
(also while another process holds a write transaction), clear errors for an absent or damaged store
and a port in use; and, where Chromium and its driver are installed, the page in a headless browser."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from optsim.dashboard import CSP, make_server
from optsim.dashboard.browser import headless_chromium
from optsim.dashboard.data import Query, downsample_index
from optsim.experiment import parse_config
from optsim.experiment.build import build_problem
from optsim.experiment.report import group_curves
from optsim.experiment.store import ResultStore, run_stored

BASE = {"name": "dash", "problem": {"name": "logreg", "data": "synthetic:logreg", "size": 120, "dim": 6, "clients": 4,
                                    "lam": 0.1},
        "methods": [{"name": "gd"}, {"name": "diana", "compressor": {"name": "rand_k", "k": 2}}],
        "stop": {"max_rounds": 60}, "log_every": 1}
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """2 methods x 3 seeds of experiment "dash", one run of experiment "other"; run 6 made by another build
    (stale), and one orphaned row (running for a process that is gone)."""
    folder = tmp_path_factory.mktemp("dashboard")
    mp = pytest.MonkeyPatch()
    mp.setenv("OPTSIM_CACHE", str(folder / "cache"))
    path = folder / "runs.db"
    store = ResultStore(path)
    for seed in SEEDS:
        cfg = parse_config({**BASE, "seed": seed})
        problem = build_problem(cfg)
        for spec in cfg.methods:
            run_stored(store, problem, spec, cfg, progress=False)
    other = parse_config({**BASE, "name": "other", "methods": [{"name": "gd", "stepsize_mult": 0.5}]})
    run_stored(store, build_problem(other), other.methods[0], other, progress=False)
    gone = subprocess.Popen(["true"])
    gone.wait()
    with store._tx() as c:
        c.execute("UPDATE runs SET version = '0.0.1+oldbuild' WHERE id = 6")
        c.execute("INSERT INTO runs (hash, experiment, label, method, seed, config, version, status, owner, created,"
                  " updated) VALUES ('orphan', 'other', 'gd', 'gd', 9, '{}', 'x', 'running', ?, 0, 0)",
                  (f"{socket.gethostname()}:{gone.pid}",))
    store.close()
    mp.undo()
    return path


@pytest.fixture(scope="module")
def sweep_path(tmp_path_factory):
    """A stepsize sweep: gd at 5 multipliers (x1000 diverges) and diana at 2, 2 seeds each, 30 rounds."""
    folder = tmp_path_factory.mktemp("dashboard_sweep")
    mp = pytest.MonkeyPatch()
    mp.setenv("OPTSIM_CACHE", str(folder / "cache"))
    path = folder / "runs.db"
    store = ResultStore(path)
    for seed in (0, 1):
        cfg = parse_config({**BASE, "name": "sweep", "seed": seed, "stop": {"max_rounds": 30}, "methods":
                            [{"name": "gd", "stepsize_mult": m, "label": f"gd x{m}"} for m in SWEEP_GD] +
                            [{"name": "diana", "compressor": {"name": "rand_k", "k": 2}, "stepsize_mult": m,
                              "label": f"diana x{m}"} for m in SWEEP_DIANA]})
        problem = build_problem(cfg)
        for spec in cfg.methods:
            run_stored(store, problem, spec, cfg, progress=False)
    store.close()
    mp.undo()
    return path


SWEEP_GD = (0.25, 0.5, 1.0, 2.0, 1000.0)
SWEEP_DIANA = (0.5, 1.0)


@pytest.fixture(scope="module")
def reproduce_dir(tmp_path_factory):
    """Outcomes as `optsim reproduce` writes them: three recipes run through run_recipe, one verdict each."""
    from optsim.reproduce import registry

    folder = tmp_path_factory.mktemp("reproduce")
    mp = pytest.MonkeyPatch()
    for rid, passed, measured in (("T-PASS", True, "rate 0.5 as claimed"), ("T-FAIL", False, "rate 0.9 > 0.6"),
                                  ("T-NR", False, "rate 0.9: NOT REPRODUCED")):
        def fn(out, fast, passed=passed, measured=measured):
            out.mkdir(parents=True, exist_ok=True)
            fig = out / "figure.png"
            fig.write_bytes(PNG)
            return registry.Outcome(passed, measured, [fig])

        mp.setitem(registry.RECIPES, rid, registry.Recipe(rid, f"claim of {rid}", fn))
        registry.run_recipe(rid, folder, fast=True)
    mp.undo()
    return folder


def _png() -> bytes:
    """A 2x2 grey PNG."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x80\x80" for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


PNG = _png()


@pytest.fixture(scope="module")
def server(store_path, reproduce_dir):
    srv = make_server(store_path, port=0, reproduce=reproduce_dir)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def get(url: str):
    """(status, headers, body bytes) of a GET, also for error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get_json(url: str):
    status, _, body = get(url)
    assert status == 200, body
    return json.loads(body)


def stored_traces(path):
    store = ResultStore(path, salvage=True)
    try:
        return {row["id"]: (row["experiment"], t) for row, t in store.traces()}
    finally:
        store.close()


def test_every_response_carries_the_content_security_policy(server):
    paths = ["/", "/static/app.js", "/static/app.css", "/static/plotly.min.js", "/api/runs", "/api/run/1",
             "/api/trace/1", "/api/curves", "/api/export?format=csv", "/api/nothing", "/static/../data.py",
             "/api/run/999", "/api/curves?x=nonsense"]
    statuses = {}
    for p in paths:
        status, headers, _ = get(server + p)
        statuses[p] = status
        assert headers["Content-Security-Policy"] == CSP, p
    assert "default-src 'self'" in CSP and "http" not in CSP and "*" not in CSP
    assert statuses["/"] == statuses["/static/plotly.min.js"] == statuses["/api/export?format=csv"] == 200
    assert statuses["/api/nothing"] == statuses["/static/../data.py"] == statuses["/api/run/999"] == 404
    assert statuses["/api/curves?x=nonsense"] == 400
    # the page names nothing outside this server
    page = get(server + "/")[2].decode() + get(server + "/static/app.js")[2].decode()
    assert "http:" not in page and "https:" not in page and "//cdn" not in page


def test_an_unexpected_error_answers_500_in_one_line(server, monkeypatch, capsys):
    import optsim.dashboard.server as srv

    def broken(*a, **k):
        raise TypeError("something unforeseen")

    monkeypatch.setattr(srv, "list_runs", broken)
    status, headers, body = get(server + "/api/runs")
    assert status == 500 and json.loads(body) == {"error": "/api/runs: TypeError: something unforeseen"}
    assert headers["Content-Security-Policy"] == CSP
    assert "something unforeseen" in capsys.readouterr().err


def test_runs_are_listed_and_filtered_with_reader_statuses(server):
    data = get_json(server + "/api/runs")
    runs = data["runs"]
    assert len(runs) == 8 and data["experiments"] == ["dash", "other"] and data["methods"] == ["diana", "gd"]
    by_id = {r["id"]: r for r in runs}
    assert by_id[6]["stale"] == "0.0.1+oldbuild" and by_id[1]["stale"] is None  # as `optsim runs ls` flags them
    assert by_id[8]["status"] == "orphaned"
    assert all(by_id[i]["status"] == "finished" and by_id[i]["rounds"] == 60 for i in range(1, 8))
    assert [r["id"] for r in get_json(server + "/api/runs?method=gd&experiment=dash")["runs"]] == [1, 3, 5]
    assert [r["seed"] for r in get_json(server + "/api/runs?where=seed=1")["runs"]] == [1, 1]
    assert [r["id"] for r in get_json(server + "/api/runs?where=method.stepsize_mult=0.5")["runs"]] == [7]
    assert [r["id"] for r in get_json(server + "/api/runs?status=orphaned")["runs"]] == [8]
    assert len(get_json(server + "/api/runs?status=finished,orphaned")["runs"]) == 8
    status, _, body = get(server + "/api/runs?status=done")
    assert status == 400 and "use one of" in json.loads(body)["error"]


def test_run_page_data(server, store_path):
    run = get_json(server + "/api/run/2")
    assert run["method"] == "diana" and run["config"]["method"]["compressor"] == {"name": "rand_k", "k": 2}
    assert run["meta"]["metric"] == "f_gap" and run["length"] == 61 and run["checkpoint"] is None
    assert {"round", "bits_up", "f_gap"} <= set(run["columns"])
    assert get_json(server + "/api/run/" + run["hash"][:10])["id"] == 2  # a hash prefix, as `optsim runs show`


def test_trace_is_downsampled_on_the_server(server, store_path):
    full = stored_traces(store_path)[2][1]
    data = get_json(server + "/api/trace/2?columns=round,f_gap,bits_up&max_points=10")
    idx = data["index"]
    assert data["length"] == len(full) == 61 and len(idx) <= 10 and idx[0] == 0 and idx[-1] == 60
    assert np.all(np.diff(idx) > 0)
    for c in ("round", "f_gap", "bits_up"):
        np.testing.assert_array_equal(data["columns"][c], full[c][idx])
    whole = get_json(server + "/api/trace/2?columns=f_gap")
    assert whole["index"] == list(range(61)) and whole["columns"]["f_gap"] == full["f_gap"].tolist()
    assert get(server + "/api/trace/2?max_points=1")[0] == 400
    assert get(server + "/api/trace/2?columns=nope")[0] == 400
    # evenly spaced: a long trace keeps its first and last point and at most max_points
    for n, m in ((10_000, 1000), (1001, 1000), (5, 1000), (7, 2)):
        i = downsample_index(n, m)
        assert len(i) == min(n, m) and i[0] == 0 and i[-1] == n - 1


def test_curves_are_the_seed_mean_and_band_of_identical_configs(server, store_path):
    data = get_json(server + "/api/curves?experiment=dash&x=bits_up&y=f_gap&max_points=1000")
    assert data["runs"] == 6 and [c["seeds"] for c in data["curves"]] == [3, 3]
    assert [c["family"] for c in data["curves"]] == ["gd", "diana"]
    traces = stored_traces(store_path)
    for curve, method in zip(data["curves"], ("gd", "diana")):
        seeds = [t for exp, t in traces.values() if t.method == method and exp == "dash"]
        ys = np.array([t["f_gap"] for t in seeds])
        xs = np.mean([t["bits_up"] for t in seeds], axis=0)
        mean = ys.mean(axis=0)
        shown = np.array([np.nan if v is None else v for v in curve["mean"]])
        ok = mean > 0
        np.testing.assert_allclose(shown[ok], mean[ok], rtol=1e-12)
        assert np.isnan(shown[~ok]).all()  # what a log axis cannot show is left out, as in the figure
        np.testing.assert_allclose(curve["x"], xs, rtol=1e-12)
        lo = np.array([np.nan if v is None else v for v in curve["lo"]])
        band = ok & (ys.min(axis=0) > 0)
        np.testing.assert_allclose(lo[band], ys.min(axis=0)[band], rtol=1e-12)
        assert np.all(np.array(curve["hi"], dtype=float)[band] >= shown[band])
    small = get_json(server + "/api/curves?experiment=dash&x=rounds&max_points=7")
    assert small["y"] == "f_gap" and all(len(c["x"]) <= 7 and c["length"] == 61 for c in small["curves"])
    assert small["curves"][0]["x"][0] == 0 and small["curves"][0]["x"][-1] == 60
    assert len(get_json(server + "/api/curves?experiment=dash&method=diana")["curves"]) == 1
    assert get(server + "/api/curves?y=rounds")[0] == 400
    status, _, body = get(server + "/api/curves?y=test_accuracy")
    assert status == 400 and "choose y among" in json.loads(body)["error"] and "f_gap" in json.loads(body)["error"]
    # the best curve of each method, as `optsim plot --best`: of gd's two configs (stepsize x1 over 3 seeds, x0.5
    # in experiment "other") the one with the lower final metric (mean over seeds)
    runs = get_json(server + "/api/runs?method=gd&status=finished")["runs"]
    x1 = np.mean([r["final_metric"] for r in runs if r["experiment"] == "dash"])
    (x05,) = [r["final_metric"] for r in runs if r["experiment"] == "other"]
    best = get_json(server + "/api/curves?best=1")["curves"]
    assert len(get_json(server + "/api/curves")["curves"]) == 3 and sorted(c["family"] for c in best) == ["diana", "gd"]
    assert [c["seeds"] for c in best if c["family"] == "gd"] == [3 if x1 < x05 else 1]


def test_export_is_the_figure_of_optsim_plot(server, store_path, tmp_path):
    from optsim.cli import main
    from optsim.plots import _unit, draw_curves

    assert main(["plot", "--store", str(store_path), "--experiment", "dash", "--x", "bits_up", "--y", "f_gap",
                 "--out", str(tmp_path)]) == 0
    status, headers, png = get(server + "/api/export?experiment=dash&x=bits_up&y=f_gap&format=png")
    assert status == 200 and headers["Content-Type"] == "image/png" and "attachment" in headers["Content-Disposition"]
    assert png == (tmp_path / "plot_dash_f_gap.png").read_bytes()
    status, headers, pdf = get(server + "/api/export?experiment=dash&x=bits_up&y=f_gap&format=pdf")
    assert status == 200 and pdf.startswith(b"%PDF")
    # the CSV holds the lines of that figure, point for point
    status, _, body = get(server + "/api/export?experiment=dash&x=bits_up&y=f_gap&format=csv")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    store = ResultStore(store_path, salvage=True)
    curves = group_curves([(json.loads(row["config"]), t) for row, t in store.traces(experiment="dash")])
    store.close()
    fig = draw_curves(curves, ["bits_up"], "f_gap")
    scale = _unit(np.array([float(r["bits_up"]) for r in rows]), "bits_up")[0]  # kbit, from every curve's x
    assert scale == 1e3
    for line, curve in zip(fig.axes[0].get_lines(), curves):
        mine = [r for r in rows if r["method"] == curve.family]
        x = np.array([float(r["bits_up"]) for r in mine])
        y = np.array([float(r["f_gap_mean"]) for r in mine])
        keep = np.isfinite(y) & (y > 0)
        np.testing.assert_array_equal(line.get_ydata(), y[keep])
        np.testing.assert_allclose(line.get_xdata(), x[keep] / scale, rtol=1e-15)
    assert len(rows) == 2 * 61 and {r["seeds"] for r in rows} == {"3"}
    assert get(server + "/api/export?format=svg")[0] == 400


def test_the_store_is_never_written_and_is_read_while_a_writer_holds_it(server, store_path):
    before = hashlib.sha256(store_path.read_bytes()).hexdigest()
    for p in ("/api/runs", "/api/run/1", "/api/trace/1", "/api/curves", "/api/export?format=png"):
        assert get(server + p)[0] == 200
    writer = sqlite3.connect(store_path, isolation_level=None, timeout=1)
    try:
        writer.execute("BEGIN IMMEDIATE")  # a sweep in the middle of writing a result
        writer.execute("UPDATE runs SET message = 'being written' WHERE id = 1")
        t0 = time.perf_counter()
        runs = get_json(server + "/api/runs")["runs"]
        assert time.perf_counter() - t0 < 5 and runs[0]["message"] is None  # the last committed state
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    assert hashlib.sha256(store_path.read_bytes()).hexdigest() == before
    wal = store_path.with_name(store_path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # SQLite's read index only: no page was written


def test_absent_or_damaged_store_gives_a_clear_message(tmp_path):
    absent = tmp_path / "none" / "runs.db"
    damaged = tmp_path / "bad.db"
    damaged.write_bytes(b"this is not a database " * 200)
    for path, words in ((absent, "no results store"), (damaged, "damaged")):
        srv = make_server(path, port=0)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        try:
            status, headers, body = get(base + "/api/runs")
            assert status == 503 and words in json.loads(body)["error"], body
            assert headers["Content-Security-Policy"] == CSP
            assert get(base + "/")[0] == 200  # the page loads and shows the message
        finally:
            srv.shutdown()
            srv.server_close()
    assert not absent.parent.exists()  # nothing was created
    assert damaged.read_bytes() == b"this is not a database " * 200


def test_a_store_made_after_the_server_started_is_read(tmp_path):
    """The dashboard can start before the first sweep; each request opens the store anew and sees
    what was committed since."""
    path = tmp_path / "runs.db"
    srv = make_server(path, port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        assert get(base + "/api/runs")[0] == 503
        cfg = parse_config({**BASE, "methods": [{"name": "gd"}]})
        store = ResultStore(path)
        run_stored(store, build_problem(cfg), cfg.methods[0], cfg, progress=False)
        assert [r["method"] for r in get_json(base + "/api/runs")["runs"]] == ["gd"]
        other = parse_config({**BASE, "seed": 1, "methods": [{"name": "gd"}]})
        run_stored(store, build_problem(other), other.methods[0], other, progress=False)
        store.close()
        assert [r["seed"] for r in get_json(base + "/api/runs")["runs"]] == [0, 1]
        assert get_json(base + "/api/curves")["curves"][0]["seeds"] == 2
    finally:
        srv.shutdown()
        srv.server_close()


def test_port_in_use_names_a_free_one(store_path):
    srv = make_server(store_path, port=0)
    try:
        port = srv.server_address[1]
        with pytest.raises(RuntimeError, match=rf"port {port} on 127.0.0.1 is in use: use --port \d+"):
            make_server(store_path, port=port)
    finally:
        srv.server_close()


def test_cli_declares_the_dashboard():
    from optsim.cli import build_parser

    args = build_parser().parse_args(["dashboard", "--store", "x.db", "--port", "0"])
    assert args.store == "x.db" and args.port == 0 and args.host == "127.0.0.1"
    assert args.reproduce == "results/reproduce" and not args.no_launch
    assert build_parser().parse_args(["dashboard", "--no-launch", "--reproduce", "r"]).no_launch
    assert Query.from_params({"where": ["problem.clients=4"], "method": ["gd,diana"]}).method == ["gd", "diana"]


def test_runs_grouped_by_any_config_field(server, store_path):
    data = get_json(server + "/api/runs")
    # the fields set differently among the runs (gd leaves stepsize_mult at its default in experiment "dash")
    assert data["fields"] == ["method.compressor.k", "method.compressor.name", "method.name", "method.stepsize_mult",
                              "seed"] and data["groups"] == [] and data["group"] is None
    data = get_json(server + "/api/runs?group=method.stepsize_mult")  # gd's default x1 counts as 1.0
    groups = {g["value"]: g for g in data["groups"]}
    assert [g["value"] for g in data["groups"]] == [0.5, 1.0, None]  # numbers in order, the empty orphan row last
    assert groups[0.5]["ids"] == [7] and groups[1.0]["ids"] == [1, 2, 3, 4, 5, 6] and groups[None]["ids"] == [8]
    assert groups[None]["statuses"] == {"orphaned": 1} and groups[1.0]["statuses"] == {"finished": 6}
    finals = {r["id"]: r["final_metric"] for r in data["runs"]}
    assert groups[1.0]["final_metric_mean"] == pytest.approx(np.mean([finals[i] for i in range(1, 7)]), rel=1e-12)
    assert groups[1.0]["final_metric_min"] == min(finals[i] for i in range(1, 7))
    assert {r["id"]: r["group"] for r in data["runs"]} == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0, 6: 1.0, 7: 0.5, 8: None}
    # a filter on a method parameter counts runs that left it at its default
    assert [r["id"] for r in get_json(server + "/api/runs?where=method.stepsize_mult=1")["runs"]] == [1, 2, 3, 4, 5, 6]
    k = get_json(server + "/api/runs?experiment=dash&group=method.compressor.k")["groups"]
    assert [(g["value"], g["ids"]) for g in k] == [(2, [2, 4, 6]), (None, [1, 3, 5])]
    status, _, body = get(server + "/api/runs?group=method.stepsize_mul")
    assert status == 400 and "did you mean method.stepsize_mult" in json.loads(body)["error"]


def test_plot_lines_one_hue_per_value_of_the_group_field(server, tmp_path):
    data = get_json(server + "/api/curves?group=method.stepsize_mult")
    assert data["group"] == "method.stepsize_mult"
    assert [(c["label"], c["family"]) for c in data["curves"]] == [
        ("gd (3 seeds)", "stepsize_mult=1"), ("diana (3 seeds)", "stepsize_mult=1"), ("gd", "stepsize_mult=0.5")]
    # best per group value: of the two x1 curves the one of least final metric (gd reaches 0 in f_gap)
    best = get_json(server + "/api/curves?group=method.stepsize_mult&best=1")["curves"]
    assert [(c["label"], c["family"]) for c in best] == [("gd (3 seeds)", "stepsize_mult=1"), ("gd", "stepsize_mult=0.5")]
    by_method = get_json(server + "/api/curves?group=method.name&best=1")["curves"]
    assert sorted(c["family"] for c in by_method) == ["method.name=diana", "method.name=gd"]
    rows = list(csv.DictReader(io.StringIO(get(server + "/api/export?group=method.stepsize_mult&format=csv")[2].decode())))
    assert {r["method.stepsize_mult"] for r in rows} == {"stepsize_mult=1", "stepsize_mult=0.5"} and len(rows) == 3 * 61


def test_standard_error_band_over_seeds(server, store_path, tmp_path):
    from optsim.plots import plot_curves

    traces = stored_traces(store_path)
    data = get_json(server + "/api/curves?experiment=dash&x=rounds&y=f_gap&band=se")
    assert data["band"] == "se"
    for curve, method in zip(data["curves"], ("gd", "diana")):
        ys = np.array([t["f_gap"] for exp, t in traces.values() if t.method == method and exp == "dash"])
        mean, se = ys.mean(axis=0), ys.std(axis=0, ddof=1) / np.sqrt(3)  # SE = sample std / sqrt(n)
        lo, hi = (np.array([np.nan if v is None else v for v in curve[k]]) for k in ("lo", "hi"))
        shown = (mean > 0) & (mean - se > 0)  # what a log axis can show
        assert shown.sum() > 20
        np.testing.assert_allclose(lo[shown], (mean - se)[shown], rtol=1e-10)
        np.testing.assert_allclose(hi[shown], (mean + se)[shown], rtol=1e-10)
        assert np.isnan(lo[~shown]).all()
    minmax = get_json(server + "/api/curves?experiment=dash&x=rounds&y=f_gap")["curves"][1]
    assert minmax["lo"][10] < data["curves"][1]["lo"][10]  # 3 seeds: min < mean - SE
    # the CSV and the figure honour the band
    rows = list(csv.DictReader(io.StringIO(get(server + "/api/export?experiment=dash&y=f_gap&band=se&format=csv")[2].decode())))
    diana = [r for r in rows if r["method"] == "diana"]
    ys = np.array([t["f_gap"] for exp, t in traces.values() if t.method == "diana" and exp == "dash"])
    np.testing.assert_allclose([float(r["f_gap_mean+se"]) for r in diana],
                               ys.mean(axis=0) + ys.std(axis=0, ddof=1) / np.sqrt(3), rtol=1e-12)
    assert set(rows[0]) == {"curve", "method", "seeds", "rounds", "f_gap_mean", "f_gap_mean-se", "f_gap_mean+se"}
    png = get(server + "/api/export?experiment=dash&y=f_gap&band=se&format=png")[2]
    store = ResultStore(store_path, readonly=True)
    curves = group_curves([(json.loads(row["config"]), t) for row, t in store.traces(experiment="dash")])
    store.close()
    (mine,) = plot_curves(curves, ["rounds"], "f_gap", tmp_path / "se", title="dash", formats=("png",), band="se")
    assert png == mine.read_bytes() != get(server + "/api/export?experiment=dash&y=f_gap&format=png")[2]
    status, _, body = get(server + "/api/curves?band=std")
    assert status == 400 and "use minmax" in json.loads(body)["error"]


@pytest.fixture(scope="module")
def sweep_server(sweep_path):
    srv = make_server(sweep_path, port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_sweep_view_is_the_seed_mean_of_final_or_best_values(sweep_server, sweep_path):
    traces = stored_traces(sweep_path)
    by_key: dict = {}
    for _, t in traces.values():
        by_key.setdefault((t.method, float(t.meta["config"].get("stepsize_mult", 1.0))), []).append(t)
    for stat, band in (("final", "minmax"), ("best", "se")):
        data = get_json(sweep_server + f"/api/sweep?param=method.stepsize_mult&y=f_gap&stat={stat}&band={band}")
        assert data["runs"] == 14 and not data["categorical"] and [l["label"] for l in data["lines"]] == ["gd", "diana"]
        for line, mults in zip(data["lines"], (SWEEP_GD, SWEEP_DIANA)):
            assert [p["x"] for p in line["points"]] == list(mults) and all(p["seeds"] == 2 for p in line["points"])
            means = {}
            for p in line["points"]:
                ts = by_key[(line["family"], p["x"])]
                if any(t.status == "diverged" for t in ts):
                    assert p["mean"] is None and p["diverged"] == 2 and p["x"] == 1000.0
                    continue
                v = np.array([t["f_gap"][-1] if stat == "final" else np.nanmin(t["f_gap"]) for t in ts])
                assert p["mean"] == pytest.approx(v.mean(), rel=1e-12, abs=1e-300) and p["diverged"] == 0
                lo, hi = (v.min(), v.max()) if band == "minmax" else (v.mean() - v.std(ddof=1) / np.sqrt(2),
                                                                      v.mean() + v.std(ddof=1) / np.sqrt(2))
                assert p["lo"] == pytest.approx(lo, rel=1e-9, abs=1e-300) and p["hi"] == pytest.approx(hi, rel=1e-9)
                means[p["x"]] = v.mean()
            best = min(means, key=means.get)
            assert line["best"]["x"] == best and line["best"]["mean"] == pytest.approx(means[best], rel=1e-12, abs=1e-300)
    # the theory stepsize x1 is the best final value of both methods in this sweep
    assert [l["best"]["x"] for l in get_json(sweep_server + "/api/sweep?param=method.stepsize_mult")["lines"]] == [1, 1]
    assert get_json(sweep_server + "/api/sweep?param=method.stepsize_mult&method=gd")["lines"][0]["label"] == "gd"
    cat = get_json(sweep_server + "/api/sweep?param=method.name")
    assert cat["categorical"] and len(cat["lines"]) == 7  # no two configs differ only in the name: 7 one-point lines
    assert {l["points"][0]["x"] for l in cat["lines"]} == {"gd", "diana"}
    assert "gd stepsize_mult=0.25" in [l["label"] for l in cat["lines"]]
    k = get_json(sweep_server + "/api/sweep?param=method.compressor.k")  # gd has no compressor: left out
    assert k["skipped"] == 10 and k["runs"] == 4 and [l["label"] for l in k["lines"]] == ["diana stepsize_mult=0.5",
                                                                                        "diana stepsize_mult=1"]
    by = get_json(sweep_server + "/api/sweep?param=method.stepsize_mult&group=method.compressor.k")
    assert [l["family"] for l in by["lines"]] == ["compressor.k=none", "compressor.k=2"]
    for query, words in (("param=method.stepsize_mult&method=gd&where=method.stepsize_mult=0.5", "has one value"),
                         ("param=problem.clients", "has one value"), ("param=nope", "no selected run has"),
                         ("", "choose the swept config field"), ("param=method.stepsize_mult&stat=last", "final")):
        status, _, body = get(sweep_server + "/api/sweep?" + query)
        assert status == 400 and words in json.loads(body)["error"], (query, body)


def test_recipe_outcomes_are_persisted_and_listed(server, reproduce_dir, capsys):
    from optsim.cli import main

    saved = json.loads((reproduce_dir / "T-NR" / "outcome.json").read_text())
    assert saved["verdict"] == "NOT REPRODUCED" and saved["figures"] == ["figure.png"] and saved["fast"] is True
    data = get_json(server + "/api/recipes")
    assert [(r["id"], r["verdict"]) for r in data["recipes"]] == [("T-FAIL", "FAIL"), ("T-NR", "NOT REPRODUCED"),
                                                                  ("T-PASS", "PASS")]
    assert data["verdicts"] == {"FAIL": 1, "NOT REPRODUCED": 1, "PASS": 1}
    r = data["recipes"][2]
    assert r["claim"] == "claim of T-PASS" and r["measured"] == "rate 0.5 as claimed"
    status, headers, body = get(server + r["figures"][0]["url"])
    assert status == 200 and headers["Content-Type"] == "image/png" and body == PNG
    assert get(server + "/api/recipe-file/T-PASS/outcome.json")[0] == 400  # figures only
    assert get(server + "/api/recipe-file/T-PASS/..%2F..%2Fx.png")[0] == 400  # nothing outside the recipe's folder
    assert get(server + "/api/recipe-file/T-PASS/none.png")[0] == 404
    # the command line prints the same verdict
    from optsim.reproduce import registry

    mp = pytest.MonkeyPatch()
    mp.setitem(registry.RECIPES, "T-CLI", registry.Recipe("T-CLI", "c", lambda out, fast: registry.Outcome(
        False, "x NOT REPRODUCED")))
    try:
        assert main(["reproduce", "T-CLI", "--out", str(reproduce_dir)]) == 1
    finally:
        mp.undo()
    assert "T-CLI: NOT REPRODUCED (x NOT REPRODUCED)" in capsys.readouterr().out
    assert get_json(server + "/api/recipes")["verdicts"]["NOT REPRODUCED"] == 2
    (reproduce_dir / "T-CLI" / "outcome.json").unlink()
    empty = make_server(store_path_unused := reproduce_dir / "none.db", port=0, reproduce=reproduce_dir / "absent")
    threading.Thread(target=empty.serve_forever, daemon=True).start()
    try:
        assert get_json(f"http://127.0.0.1:{empty.server_address[1]}/api/recipes")["recipes"] == []
    finally:
        empty.shutdown()
        empty.server_close()
    assert not store_path_unused.exists()


def test_readonly_store_refuses_writes_and_leaves_the_file_unchanged(store_path, tmp_path):
    from optsim.experiment.store import StoreReadOnly

    before = hashlib.sha256(store_path.read_bytes()).hexdigest()
    store = ResultStore(store_path, readonly=True)
    try:
        assert len(store.runs()) == 8 and store.get(2)["method"] == "diana"
        cfg = parse_config(BASE)
        with pytest.raises(StoreReadOnly, match=r"opened read-only \(readonly=True\): nothing was written"):
            store.claim("new", cfg, {"name": "gd"})
        with pytest.raises(StoreReadOnly):
            store.remove([1])
        with pytest.raises(sqlite3.OperationalError, match="readonly"):  # SQLite refuses any other write
            store.conn.execute("UPDATE runs SET message = 'x' WHERE id = 1")
    finally:
        store.close()
    assert hashlib.sha256(store_path.read_bytes()).hexdigest() == before
    absent = tmp_path / "absent" / "runs.db"
    with pytest.raises(FileNotFoundError, match="no results store at"):
        ResultStore(absent, readonly=True).runs()
    assert not absent.parent.exists()
    import pickle

    assert pickle.loads(pickle.dumps(ResultStore(store_path, readonly=True))).readonly


def test_column_wise_trace_decoding_equals_the_full_parse(store_path):
    from optsim.dashboard.data import decode_trace
    from optsim.trace import Trace

    conn = sqlite3.connect(store_path.resolve().as_uri() + "?mode=ro", uri=True)
    texts = [r[0] for r in conn.execute("SELECT trace FROM runs WHERE trace IS NOT NULL")]
    conn.close()
    extra = Trace("x", "gd", "diverged", meta={"metric": "f_gap", "note": '"rows": {"round": [1]}'})
    for k in range(5):
        extra.append({"round": k, "f_gap": 2.0 ** -k, **({"test_accuracy": 0.5 + k / 10} if k >= 2 else {})})
    texts.append(json.dumps(extra.to_dict()))
    for text in texts:
        full, lazy = Trace.from_dict(json.loads(text)), decode_trace(text)
        assert type(lazy.rows).__name__ == "_Columns"  # the column-wise path, not the fallback
        assert (lazy.label, lazy.method, lazy.status, lazy.meta) == (full.label, full.method, full.status, full.meta)
        assert list(lazy.rows) == list(full.rows) and len(lazy) == len(full)
        for c in full.rows:
            np.testing.assert_array_equal(lazy[c], full[c])
        assert lazy.last("f_gap") == full.last("f_gap") and lazy.best("f_gap") == full.best("f_gap")
    assert decode_trace('{"label": "a", "method": "gd", "status": "finished", "rows": {"round": [0, 1]}}').rows[
        "round"].tolist() == [0, 1]
    odd = json.dumps({"rows": {"round": [0.0]}, "label": "a", "method": "gd", "status": "finished"})  # other order
    fallback = decode_trace(odd)
    assert isinstance(fallback.rows, dict) and len(fallback) == 1 and fallback.label == "a"


def post(url: str, body, headers=None):
    """(status, JSON) of a POST as the page sends it (its header included unless ``headers`` says otherwise)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "X-Optsim-Dashboard": "1",
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait_launch(base, until=("finished", "failed", "stopped"), timeout=180):
    t0 = time.time()
    while time.time() - t0 < timeout:
        s = get_json(base + "/api/launch")
        if s["state"] in until:
            return s
        time.sleep(0.3)
    raise AssertionError(f"launch still {s['state']} after {timeout} s: {s.get('output')}")


def test_launch_a_run_from_a_config_file_without_blocking_the_server(store_path, tmp_path):
    store = tmp_path / "runs.db"
    shutil.copy(store_path, store)
    cfg = {**BASE, "name": "launched", "out": str(tmp_path / "out"), "methods": [{"name": "gd"}],
           "problem": {**BASE["problem"], "clients": 5}, "stop": {"max_rounds": 30}}
    short, long_ = tmp_path / "short.yaml", tmp_path / "long.yaml"
    short.write_text(json.dumps(cfg))
    long_.write_text(json.dumps({**cfg, "name": "long", "out": str(tmp_path / "out_long"),  # its own folder: it may
                                 "stop": {"max_rounds": 10**7}, "log_every": 10**6}))       # record its config before the stop
    (tmp_path / "typo.yaml").write_text(json.dumps({**cfg, "stopp": {"max_rounds": 3}}))
    srv = make_server(store, port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        assert get_json(base + "/api/launch")["state"] == "none"
        # refused: another site's page (no header, or its Origin), a missing or invalid config (the CLI's one line)
        assert post(base + "/api/launch", {"path": str(short)}, {"X-Optsim-Dashboard": ""})[0] == 403
        assert post(base + "/api/launch", {"path": str(short)}, {"Origin": "http://evil.example"})[0] == 403
        status, body = post(base + "/api/launch", {"path": str(tmp_path / "none.yaml")})
        assert status == 400 and body["error"] == f"config file '{tmp_path / 'none.yaml'}' not found"
        status, body = post(base + "/api/launch", {"path": str(tmp_path / "typo.yaml")})
        assert status == 400 and "stopp" in body["error"] and "\n" not in body["error"]
        status, body = post(base + "/api/launch", {"path": str(short), "kind": "sweep"})
        assert status == 400 and "no 'sweep:' grid" in body["error"]
        assert post(base + "/api/launch", {"path": str(short), "kind": "train"})[0] == 400
        # a long run: the server answers meanwhile, refuses a second launch, and stops it on demand
        status, body = post(base + "/api/launch", {"path": str(long_)})
        assert status == 202 and body["state"] == "running" and body["command"].startswith("optsim run ")
        t0 = time.perf_counter()
        runs = get_json(base + "/api/runs")["runs"]
        assert time.perf_counter() - t0 < 5 and len(runs) == 8
        assert get_json(base + "/api/launch")["state"] == "running"
        status, body = post(base + "/api/launch", {"path": str(short)})
        assert status == 409 and "still running" in body["error"]
        status, body = post(base + "/api/launch/stop", {})
        assert status == 200 and body["state"] == "stopped" and body["stopped"] == "stopped from the dashboard"
        # a short run to its end: its result is in the store
        assert post(base + "/api/launch", {"path": str(short)})[0] == 202
        done = _wait_launch(base)
        assert done["state"] == "finished" and done["returncode"] == 0, done["output"]
        runs = get_json(base + "/api/runs?experiment=launched")["runs"]
        assert [(r["method"], r["status"], r["rounds"]) for r in runs] == [("gd", "finished", 30)]
    finally:
        srv.launcher.close()
        srv.shutdown()
        srv.server_close()
    off = make_server(store, host="127.0.0.1", port=0, launch=False)
    threading.Thread(target=off.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{off.server_address[1]}"
        assert get_json(base + "/api/launch") == {"state": "off"}
        assert post(base + "/api/launch", {"path": str(short)})[0] == 403
    finally:
        off.shutdown()
        off.server_close()


# ---- the page in a real browser ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    b = headless_chromium(console_log=True)
    if b is None:
        pytest.skip("no headless Chromium: apt-get install chromium chromium-driver and pip install selenium")
    yield b
    b.quit()


class _Counting(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):
        type(self).hits += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.mark.browser
def test_page_in_a_headless_browser(browser, server, tmp_path):
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server + "/")
    wait.until(lambda b: b.execute_script("return document.body.dataset.ready") == "1")
    assert browser.find_element("id", "error").get_attribute("hidden") is not None, \
        browser.find_element("id", "error").text
    assert len(browser.find_elements("css selector", "#runs tbody tr")) == 8
    # the plot: per curve a band (min and max) and the mean line
    data = browser.execute_script("return document.getElementById('plot').data.map(t => [t.meta, t.name])")
    assert [m for m, _ in data].count("mean") == 3 and [m for m, _ in data].count("band") == 4
    # the launch form: nothing launched yet
    assert browser.find_element("id", "l-state").text == "nothing launched yet"
    assert browser.find_element("id", "l-start").is_enabled() and not browser.find_element("id", "l-stop").is_enabled()
    # the recipe outcomes with their figures
    verdicts = [e.text for e in browser.find_elements("css selector", "#recipes tbody tr td:nth-child(2)")]
    assert verdicts == ["FAIL", "NOT REPRODUCED", "PASS"]
    assert browser.find_elements("css selector", "#recipes td.verdict-NOT-REPRODUCED")
    wait.until(lambda b: b.execute_script(
        "return [...document.querySelectorAll('#recipes img')].map(i => i.complete && i.naturalWidth)") == [2, 2, 2])
    # the sweep view: final f_gap against the stepsize multiplier, one line per method, each best point starred
    assert browser.execute_script("return document.body.dataset.sweep") == "2"
    assert Select(browser.find_element("id", "s-param")).first_selected_option.get_attribute("value") == \
        "method.stepsize_mult"
    sweep = browser.execute_script("return document.getElementById('sweep-plot').data.map(t => [t.meta, t.x, t.y])")
    assert [m for m, _, _ in sweep] == ["sweep", "best", "sweep", "best"] and sweep[0][1] == [0.5, 1]
    assert len(browser.find_elements("css selector", "#sweep-best tbody tr")) == 2
    assert browser.execute_script("return document.getElementById('sweep-plot').layout.xaxis.type") == "log"
    Select(browser.find_element("id", "s-stat")).select_by_value("best")
    wait.until(lambda b: b.execute_script("return document.getElementById('sweep-plot').data[2].y") != sweep[2][2])
    # the standard-error band: the band's edges move, the mean stays
    before = browser.execute_script("return document.getElementById('plot').data.map(t => t.y)")
    Select(browser.find_element("id", "p-band")).select_by_value("se")
    wait.until(lambda b: b.execute_script("return document.getElementById('plot').data.map(t => t.y)") != before)
    after = browser.execute_script("return document.getElementById('plot').data.map(t => [t.meta, t.y])")
    assert [y for m, y in after if m == "mean"] == [y for (m, _), y in zip(after, before) if m == "mean"]
    assert "standard error" in browser.find_element("id", "plot-note").text
    assert "mean-se" not in browser.find_element("id", "export-csv").get_attribute("href")
    assert "band=se" in browser.find_element("id", "export-csv").get_attribute("href")
    Select(browser.find_element("id", "p-band")).select_by_value("minmax")
    # grouped by a config field: a header row per value, one hue per value in the plot
    Select(browser.find_element("id", "f-group")).select_by_value("method.stepsize_mult")
    wait.until(lambda b: b.execute_script("return document.body.dataset.ready") == "1" and
               len(b.find_elements("css selector", "#runs tr.group-row")) == 3)
    heads = [e.text for e in browser.find_elements("css selector", "#runs tr.group-row")]
    assert heads[0].startswith("method.stepsize_mult = 0.5: 1 runs") and heads[1].startswith("method.stepsize_mult = 1: 6 runs")
    colours = browser.execute_script(
        "return document.getElementById('plot').data.filter(t => t.meta === 'mean').map(t => [t.name, t.line.color])")
    assert colours[0][1] == colours[1][1] != colours[2][1]  # gd x1 and diana x1 share the hue of stepsize_mult=1
    Select(browser.find_element("id", "f-group")).select_by_value("")
    wait.until(lambda b: b.execute_script("return document.body.dataset.ready") == "1" and
               not b.find_elements("css selector", "#runs tr.group-row"))
    # a filter changes the table and the plotted lines
    Select(browser.find_element("id", "f-method")).select_by_value("diana")
    wait.until(lambda b: b.execute_script("return document.body.dataset.ready") == "1" and
               len(b.find_elements("css selector", "#runs tbody tr")) == 3)
    data = browser.execute_script("return document.getElementById('plot').data.map(t => t.meta)")
    assert data == ["band", "band", "mean"]
    # a config field: one seed left, so the line has no band
    browser.find_element("id", "f-where").send_keys("seed=1\n")
    wait.until(lambda b: b.execute_script("return document.body.dataset.ready") == "1" and
               len(b.find_elements("css selector", "#runs tbody tr")) == 1)
    assert browser.execute_script("return document.getElementById('plot').data.map(t => t.meta)") == ["mean"]
    browser.find_element("id", "f-where").clear()
    browser.find_element("id", "apply").click()
    wait.until(lambda b: b.execute_script("return document.body.dataset.ready") == "1" and
               len(b.find_elements("css selector", "#runs tbody tr")) == 3)
    browser.find_element("id", "p-logx").click()
    wait.until(lambda b: b.execute_script("return document.getElementById('plot').layout.xaxis.type") == "log")
    assert browser.execute_script("return document.getElementById('plot').layout.yaxis.type") == "log"
    assert browser.execute_script("return document.getElementById('plot').layout.yaxis.title.text") == "f(x) − f*"
    # the export link downloads a PNG
    head = browser.execute_async_script(
        "const done = arguments[0]; fetch(document.getElementById('export-png').href)"
        ".then(r => r.arrayBuffer()).then(b => done(Array.from(new Uint8Array(b).slice(0, 8))))")
    assert bytes(head) == b"\x89PNG\r\n\x1a\n"
    # a run's page
    browser.find_elements("css selector", "#runs tbody tr")[0].click()
    wait.until(lambda b: b.execute_script("return document.body.dataset.run") == "2")
    assert '"rand_k"' in browser.find_element("id", "run-config").text
    paper = browser.find_element("id", "run-paper").text
    assert "Mishchenko" in paper and "stepsize: " in paper and "checkpoint: none" in paper
    wait.until(lambda b: b.execute_script("const p = document.getElementById('run-plot'); return p.data && p.data.length") == 1)
    browser.save_screenshot(str(tmp_path / "dashboard.png"))
    # no console errors, and every resource came from the server itself
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    origins = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert origins and set(origins) == {server}
    # the policy holds in the browser: a load from another origin (a counting server on this machine) is refused
    other = HTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{other.server_address[1]}/x.js"
        browser.set_script_timeout(20)
        outcome = browser.execute_async_script(
            "const done = arguments[1]; document.addEventListener('securitypolicyviolation',"
            " e => done('refused by ' + e.effectiveDirective), {once: true});"
            "fetch(arguments[0]).then(() => done('loaded'), () => {});", url)
        assert outcome == "refused by connect-src" and _Counting.hits == 0
        assert any("Content Security Policy" in e["message"] for e in browser.get_log("browser"))
    finally:
        other.shutdown()
        other.server_close()


def test_a_stop_interrupts_the_run_at_a_round_even_when_sigint_was_ignored_at_start(tmp_path):
    """A dashboard started in a shell's background has SIGINT ignored, and so would the runs it launches:
    the launcher's stop (SIGINT) must still end the run at a round's end, interrupted and checkpointed
    (not killed 10 s later with its row left 'running')."""
    from optsim.dashboard.launch import Launcher

    store = tmp_path / "runs.db"
    cfg = {**BASE, "name": "bg", "out": str(tmp_path / "out"), "methods": [{"name": "gd"}],
           "problem": {**BASE["problem"], "clients": 5}, "stop": {"max_rounds": 10**7}, "log_every": 10**6,
           "checkpoint_every": 50}
    (tmp_path / "long.yaml").write_text(json.dumps(cfg))
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # what the child inherits, as in a background job
    try:
        launcher = Launcher(store, logs=tmp_path / "logs", cwd=tmp_path)
        launcher.start(str(tmp_path / "long.yaml"))
    finally:
        signal.signal(signal.SIGINT, before)
    t0 = time.time()
    while time.time() - t0 < 120:  # the run is under way (its row is claimed)
        rows = ResultStore(store, readonly=True).runs() if store.exists() else []
        if rows and rows[0]["status"] == "running":
            break
        time.sleep(0.3)
    time.sleep(1.0)
    t1 = time.time()
    status = launcher.stop()
    assert status["state"] == "stopped" and time.time() - t1 < 9, status
    assert status["returncode"] == 130, status.get("output")  # optsim's exit status after Ctrl-C
    assert ResultStore(store, readonly=True).runs()[0]["status"] == "interrupted"
