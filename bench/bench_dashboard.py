"""The dashboard at scale: the run list of a store of 10,000 runs and a plot of 100 traces of 10,000 points.

Targets (the issue's): the run list loads in under 1 s; a plot of 100 traces of 10,000 points each
in under 2 s.

The store is built directly through the store API (``ResultStore.claim`` / ``save_result``; no run is
computed): ``--runs`` short runs (experiment "many": gd at 4 stepsize multipliers, one seed per run,
20-row synthetic traces) and ``--traces`` long runs (experiment "long": gd at as many stepsize
multipliers, one seed each, so each is its own curve, ``--points`` rows each; the experiment name
is not part of a run's identity, so their configs differ in ``stop.max_rounds``). It is served by
:func:`optsim.dashboard.make_server` on 127.0.0.1 and timed three ways, each the median of
``--repeats`` after a warm-up call:

* server side, over HTTP (request to last byte, JSON included): ``/api/runs`` (every run) and
  ``/api/curves?experiment=long`` (100 curves, at most 1000 points each, as the page asks); the first
  request of a fresh server (configs parsed, traces decoded) apart from the median of the next ones
  (the server keeps parsed configs and decoded trace columns);
* the floor, hand-written in the same run: the same work done plainly, without the dashboard --
  for the run list, one SQLite query of the same columns with the configs parsed, serialized to
  JSON; for the plot, reading the 100 stored traces and parsing them with ``json.loads`` (what a
  plot of them costs without the dashboard's column-wise decoding); the ratio is the first
  request's (which parses as much) to it;
* in the browser (headless Chromium, where chromium and chromedriver are installed): the page's
  own ``loadRuns()`` (fetch + table render) and ``loadPlot()`` with experiment "long" (fetch +
  plotly render), timed with ``performance.now()`` inside the page, and the first page load (no
  target: every view over every run -- the plot of all 10,100 runs, the sweep, the recipes).

Run: ``python bench/bench_dashboard.py`` (``--runs 300 --traces 10 --points 1000 --repeats 1`` for a
smoke run; ``--no-browser`` skips the browser).
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from optsim.dashboard import make_server
from optsim.dashboard.browser import headless_chromium
from optsim.experiment import parse_config
from optsim.experiment.store import ResultStore, run_hash
from optsim.trace import COLUMNS, Trace

BASE = {"name": "many", "problem": {"name": "logreg", "data": "synthetic:logreg", "size": 1000, "dim": 20,
                                    "clients": 10, "lam": 0.01},
        "methods": [{"name": "gd"}], "stop": {"max_rounds": 20}, "log_every": 1}


def synthetic_trace(label: str, mult: float, points: int, rng: np.random.Generator) -> Trace:
    """A trace of ``points`` rows that looks like a linearly converging run (nothing is computed)."""
    t = Trace(label, "gd", status="finished", meta={"metric": "f_gap", "stepsize_mult": mult})
    k = np.arange(points, dtype=np.float64)
    rate = 1 - min(0.5, 0.01 * mult)
    f_gap = rate ** k * (1 + 0.05 * rng.random(points))
    cols = {"round": k, "comm_rounds": k, "bits_up": 640.0 * k, "bits_down": 640.0 * k, "grad_evals": k,
            "hess_evals": np.zeros(points), "func_evals": np.zeros(points), "sim_time": k, "wall_time": 1e-4 * k,
            "loss": 0.3 + f_gap, "f_gap": f_gap, "grad_norm_sq": 0.1 * f_gap, "dist_sq": 10 * f_gap}
    t.rows = {c: cols[c].tolist() for c in COLUMNS}
    t.meta["wall_time"] = float(cols["wall_time"][-1])
    return t


def build(path: Path, runs: int, traces: int, points: int) -> float:
    """Fill the store; returns the seconds it took."""
    t0 = time.perf_counter()
    store = ResultStore(path)
    rng = np.random.default_rng(0)
    many = parse_config(BASE)
    for i in range(runs):
        mult = (0.5, 1.0, 2.0, 4.0)[i % 4]
        cfg = many.model_copy(update={"seed": i // 4})
        spec = {"name": "gd", "stepsize_mult": mult, "label": f"gd x{mult}"}
        h = run_hash(cfg, spec)
        store.claim(h, cfg, spec)
        store.save_result(h, synthetic_trace(spec["label"], mult, 20, rng))
    long = parse_config({**BASE, "name": "long", "stop": {"max_rounds": points}})
    for i in range(traces):
        mult = float(2 ** (i / 10))
        spec = {"name": "gd", "stepsize_mult": mult, "label": f"gd x{mult:.4g}"}
        h = run_hash(long, spec)
        store.claim(h, long, spec)
        store.save_result(h, synthetic_trace(spec["label"], mult, points, rng))
    store.close()
    return time.perf_counter() - t0


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=600) as r:
        return r.read()


def first_and_median(fn, repeats: int) -> tuple[float, float]:
    """(seconds of the first call, median seconds of ``repeats`` calls after it)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    return first, median_time(fn, repeats, warm=False)


def median_time(fn, repeats: int, warm: bool = True) -> float:
    if warm:
        fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def floor_runs(path: Path) -> bytes:
    """The run list without the dashboard: one query of the same columns, configs parsed, to JSON."""
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT id, hash, experiment, label, method, seed, config, version, status, owner, created,"
                            " updated, wall_time, rounds, final_metric, message FROM runs ORDER BY id").fetchall()
    finally:
        conn.close()
    keys = ("id", "hash", "experiment", "label", "method", "seed", "config", "version", "status", "owner", "created",
            "updated", "wall_time", "rounds", "final_metric", "message")
    out = []
    for r in rows:
        d = dict(zip(keys, r))
        d["config"] = json.loads(d["config"])
        out.append(d)
    return json.dumps(out).encode()


def floor_plot(path: Path) -> int:
    """The plot's traces without the dashboard: read and parse the stored traces of experiment "long"."""
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        blobs = [r[0] for r in conn.execute("SELECT trace FROM runs WHERE experiment = 'long' ORDER BY id")]
    finally:
        conn.close()
    return sum(len(json.loads(b)["rows"]["round"]) for b in blobs)


def browser_times(base: str, repeats: int) -> tuple[float, float, float] | None:
    """(seconds of loadRuns(), of loadPlot() with experiment "long", of the first page load: every view
    of every run, the server already warm) in headless Chromium, or None."""
    b = headless_chromium()
    if b is None:
        return None
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        b.set_script_timeout(600)
        t0 = time.perf_counter()
        b.get(base + "/?")
        WebDriverWait(b, 600, poll_frequency=0.05).until(
            lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        page = time.perf_counter() - t0
        timed = ("const done = arguments[arguments.length - 1]; const t0 = performance.now();"
                 "%s.then(() => done(performance.now() - t0), (e) => done('error: ' + e.message));")
        runs, plots = [], []
        for _ in range(repeats + 1):
            runs.append(b.execute_async_script(timed % "loadRuns()"))
        b.execute_script("const s = document.getElementById('f-experiment'); s.value = 'long';")
        for _ in range(repeats + 1):
            plots.append(b.execute_async_script(timed % "loadPlot()"))
        n = b.execute_script("return document.getElementById('plot').data.filter(t => t.meta === 'mean').length")
        bad = [v for v in runs + plots if isinstance(v, str)]
        if bad:
            raise RuntimeError(bad[0])
        print(f"  (browser: {b.execute_script('return document.body.dataset.runs')} runs listed, {n} lines plotted)")
        return statistics.median(runs[1:]) / 1e3, statistics.median(plots[1:]) / 1e3, page
    finally:
        b.quit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000, help="short runs in the store (default 10,000)")
    ap.add_argument("--traces", type=int, default=100, help="long runs plotted together (default 100)")
    ap.add_argument("--points", type=int, default=10_000, help="rows of each long trace (default 10,000)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-browser", action="store_true", help="skip the timings in headless Chromium")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.db"
        seconds = build(path, args.runs, args.traces, args.points)
        size = path.stat().st_size + sum(p.stat().st_size for p in Path(tmp).glob("runs.db-*"))
        print(f"store: {args.runs:,} runs + {args.traces} traces x {args.points:,} points, {size / 1e6:.0f} MB, "
              f"built in {seconds:.1f} s through the store API")
        srv = make_server(path, port=0)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        try:
            c_runs, t_runs = first_and_median(lambda: fetch(base + "/api/runs"), args.repeats)
            c_plot, t_plot = first_and_median(lambda: fetch(base + "/api/curves?experiment=long&max_points=1000"),
                                              args.repeats)
            listed = len(json.loads(fetch(base + "/api/runs"))["runs"])
            curves = json.loads(fetch(base + "/api/curves?experiment=long&max_points=1000"))["curves"]
            assert listed == args.runs + args.traces and len(curves) == args.traces, (listed, len(curves))
            f_runs = median_time(lambda: floor_runs(path), args.repeats)
            f_plot = median_time(lambda: floor_plot(path), args.repeats)
            shown = None if args.no_browser else browser_times(base, args.repeats)
        finally:
            srv.shutdown()
            srv.server_close()
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'':44}{'first s':>9}{'median s':>9}{'floor s':>9}{'first/floor':>12}{'target s':>10}")
    print(f"{'run list, server (/api/runs, ' + format(listed, ',') + ' runs)':44}{c_runs:9.3f}{t_runs:9.3f}"
          f"{f_runs:9.3f}{c_runs / f_runs:12.2f}{1.0:10.1f}")
    print(f"{'plot, server (/api/curves, ' + str(len(curves)) + ' curves)':44}{c_plot:9.3f}{t_plot:9.3f}"
          f"{f_plot:9.3f}{c_plot / f_plot:12.2f}{2.0:10.1f}")
    if shown is not None:
        print(f"{'run list, browser (loadRuns: fetch + table)':44}{'':9}{shown[0]:9.3f}{'':9}{'':12}{1.0:10.1f}")
        print(f"{'plot, browser (loadPlot: fetch + plotly)':44}{'':9}{shown[1]:9.3f}{'':9}{'':12}{2.0:10.1f}")
        print(f"{'page load, browser (all views, all runs)':44}{shown[2]:9.3f}")
    else:
        print("browser: skipped (--no-browser, or no chromium / chromedriver / selenium)")
    ok = t_runs < 1.0 and t_plot < 2.0 and (shown is None or (shown[0] < 1.0 and shown[1] < 2.0))
    cold = c_runs < 1.0 and c_plot < 2.0
    print(f"targets (run list < 1 s, plot < 2 s): {'met' if ok else 'NOT met'} (median); "
          f"{'met' if cold else 'NOT met'} by the first requests of a fresh server")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
