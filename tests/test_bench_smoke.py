"""Every benchmark script runs, at a tiny size, and prints its ratio-to-floor table (the figures
themselves are not checked: benchmarks are not timed tests; this keeps them from rotting)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

SCRIPTS = {
    "bench_neural_round.py": (["--clients", "4", "--repeats", "2"], r"optsim, torch\.func\s+[\d.]+\s+[\d.]+"),
    "bench_dashboard.py": (["--runs", "200", "--traces", "5", "--points", "500", "--repeats", "1", "--no-browser"],
                           r"run list, server \(/api/runs, 205 runs\)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+"),
    "bench_certify.py": (["--inputs", "20", "--draws", "200"], r"certify \(CERTIFY, batched\)\s+[\d.]+\s+[\d,]+\s+[\d.]+"),
    "bench_round.py": (["--rounds", "1", "--dtype", "float32"], r"diana by hand \(numpy\)\s+[\d.]+\s+[\d.]+"),
    "bench_async.py": (["--arrivals", "2000"], r"tau_i = 1\s+[\d,]+"),
    "bench_hessian.py": (["--rounds", "1", "--clients", "10", "--samples", "30", "--dim", "10"],
                         r"floor \(one batched Hessian\)\s+[\d.]+\s+1\.00"),
    "bench_local.py": (["--rounds", "1"], r"worst full-gradient local step / floor: [\d.]+"),
    "bench_muon.py": (["--clients", "4", "--layers", "2", "--dim", "16", "--repeats", "2"],
                      r"batched/loop\s+[\d.]+"),
    "bench_neural.py": (["--clients", "4", "--repeats", "2"], r"ratio loop / vmap =\s+[\d.]+"),
    "bench_sweep.py": (["--rounds", "3", "--repeat", "1"], r"32 runs, replica-stacked .*x one run"),
    "bench_distributed.py": (["--rounds", "5", "--nproc", "2", "--repeat", "1"], r"distributed, 2 procs\s+[\d.]+"),
    "bench_aggregators.py": (["--clients", "20", "--dim", "50", "--repeats", "1"], r"gm\(T=8, nu=0\.1\)\s+[\d.]+\s+[\d.]+"),
    "bench_microadam.py": (["--width", "64", "--hidden", "128", "--repeats", "2"],
                           r"MicroAdam step / AdamW step = [\d.]+"),
    "bench_svgd.py": (["--particles", "50", "--dim", "5", "--repeats", "2"], r"SVGD\.step\(\) \(score, median, update\)\s+[\d.]+\s+[\d.]+"),
    "bench_linear_systems.py": (["--rows", "200", "--dim", "20", "--iters", "2000", "--runs", "8", "--repeats", "1"],
                                r"kaczmarz / floor [\d.]+   cd least squares / floor [\d.]+"),
    "bench_sparse_systems.py": (["--rows", "2000", "--dim", "500", "--iters", "2000", "--runs", "8", "--repeats", "1"],
                                r"sparse kaczmarz / floor [\d.]+   by hand / floor [\d.]+"),
    "bench_zeroth_order.py": (["--samples", "200", "--dim", "10", "--runs", "4", "--repeats", "2"],
                              r"target: a round <= 1\.5 x its oracle calls: MiSTP [\d.]+ x  STP [\d.]+ x"),
    "bench_heavy_tailed.py": (["--dim", "10", "--runs", "4", "--repeats", "2"],
                              r"target: a round <= 1\.5 x its oracle calls: clipped-SGD [\d.]+ x  clipped-SSTM [\d.]+ x  "
                              r"DProx-clipped-SGD-shift [\d.]+ x(.|\n)*clipped-SGDA [\d.]+ x  clipped-SEG [\d.]+ x"),
    "bench_l0l1_biased.py": (["--clients", "4", "--samples", "30", "--repeats", "2"],
                             r"target: a round <= 1\.5 x its oracle calls: l0l1_gd [\d.]+ x  polyak_gd [\d.]+ x  "
                             r"adgd [\d.]+ x  biased_sgd [\d.]+ x  l0l1_stm [\d.]+ x"),
    "bench_mast.py": (["--clients", "4", "--samples", "50", "--dim", "10", "--repeats", "2"],
                      r"target: a round <= 1\.5 x its oracle calls: DSGD [\d.]+ x  L-SVRDSG [\d.]+ x"),
    "bench_riemannian.py": (["--clients", "2", "--samples", "100", "--dim", "10", "--spd-samples", "20", "--k", "3",
                             "--repeats", "2"], r"target: a round <= 1\.5 x its oracle calls: R-LSVRG [\d.]+ x \(sphere\)"),
}


def test_every_benchmark_is_smoke_tested():
    assert sorted(p.name for p in BENCH.glob("bench_*.py")) == sorted(SCRIPTS)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_benchmark_runs(script):
    args, expected = SCRIPTS[script]
    proc = subprocess.run([sys.executable, script, *args], cwd=BENCH, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(expected, proc.stdout), proc.stdout[-2000:]
