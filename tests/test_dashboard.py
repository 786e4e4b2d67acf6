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
import os
import shutil
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
def server(store_path):
    srv = make_server(store_path, port=0)
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
    assert Query.from_params({"where": ["problem.clients=4"], "method": ["gd,diana"]}).method == ["gd", "diana"]


# ---- the page in a real browser ------------------------------------------------------------------------------------

def _browser():
    """A headless Chromium driven by Selenium, or None where it is not installed."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        return None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager never goes to the network
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
              "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(a)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


@pytest.fixture(scope="module")
def browser():
    b = _browser()
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
