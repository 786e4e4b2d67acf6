"""A damaged results store fails loudly in one line naming the file and the fix, is never written
into, and what can still be read is exported by `optsim runs export --salvage`."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from optsim.cli import main
from optsim.experiment import parse_config
from optsim.experiment.store import ResultStore, StoreDamaged, run_stored

CFG = {"name": "dmg", "problem": {"name": "logreg"}, "stop": {"max_rounds": 30}, "log_every": 5}


def _fill(path, problem, runs=12):
    store = ResultStore(path)
    for k in range(runs):
        spec = {"name": "gd", "stepsize_mult": 0.5 + 0.01 * k}
        run_stored(store, problem, spec, parse_config({**CFG, "methods": [spec]}), progress=False)
    store.close()


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _overwrite_header(p):
    with open(p, "r+b") as f:
        f.write(b"this is not sqlite" * 4)


def _truncate(p):
    size = p.stat().st_size
    with open(p, "r+b") as f:
        f.truncate(size // 3)


def _garbage_in_the_middle(p):
    size = p.stat().st_size
    with open(p, "r+b") as f:
        f.seek(size // 3)
        f.write(os.urandom(min(200_000, size // 3)))


@pytest.mark.parametrize("damage", [_overwrite_header, _truncate, _garbage_in_the_middle])
def test_damaged_store_fails_in_one_line_and_is_not_written(damage, tmp_path, tiny_logreg, capsys):
    path = tmp_path / "runs.db"
    _fill(path, tiny_logreg)
    damage(path)
    before = _digest(path)
    with pytest.raises(StoreDamaged) as e:
        ResultStore(path).runs()
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg and "move it aside" in msg and "--salvage" in msg
    # the command line: one line, exit code 2, the file untouched
    assert main(["runs", "ls", "--store", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "damaged" in err[0]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: dmg\nproblem: {name: quadratic, clients: 3, dim: 3}\nmethods: [gd]\nstop: {max_rounds: 5}\n")
    assert main(["run", str(cfg), "--store", str(path), "--out", str(tmp_path / "out"), "--no-plot", "-q"]) == 2
    assert _digest(path) == before


def test_salvage_exports_what_can_be_read(tmp_path, tiny_logreg, capsys):
    path = tmp_path / "runs.db"
    _fill(path, tiny_logreg)
    _garbage_in_the_middle(path)
    out = tmp_path / "salvaged.csv"
    before = _digest(path)
    assert main(["runs", "export", "--store", str(path), "--salvage", "--out", str(out)]) == 0
    assert _digest(path) == before
    text = capsys.readouterr().out
    assert "wrote" in text and out.exists()


def test_healthy_store_is_checked_once_per_process(tmp_path):
    path = tmp_path / "runs.db"
    ResultStore(path).runs()
    code = ("import sys; from optsim.experiment.store import ResultStore; s = ResultStore(sys.argv[1]); "
            "s.runs(); s.runs(); print('ok')")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "ok", r.stderr
