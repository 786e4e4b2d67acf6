"""Malformed configs get one line naming the field (or the file) and the fix, before anything runs."""
from __future__ import annotations

import pytest

from optsim.experiment import ConfigError, load_config, parse_config

BASE = {"problem": {"name": "logreg"}, "methods": ["gd"]}


def _error(data) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    msg = str(e.value)
    assert "\n" not in msg and "Value error," not in msg
    return msg


@pytest.mark.parametrize("label", [0.5, ["a", "b"], {"x": 1}])
def test_a_label_that_is_not_text_is_refused_on_load(label):
    msg = _error({**BASE, "methods": [{"name": "gd", "label": label}, "diana"]})
    assert "methods[0]" in msg and "label" in msg and "quote" in msg


def test_misspelled_top_level_key_suggests_the_close_match():
    msg = _error({"problem": {"name": "logreg"}, "metods": ["gd"]})
    assert "metods" in msg and "did you mean 'methods'" in msg


def test_method_errors_name_the_method_and_do_not_echo_the_list():
    msg = _error({**BASE, "methods": ["gd", {"name": "gd", "compressor": {"name": "top_k", "k": 2}}, "dcgd"]})
    assert msg.startswith("config error: methods[1] (gd): gd takes no compressor")
    assert "dcgd" not in msg  # the whole methods list is not echoed
    msg = _error({**BASE, "methods": [{"name": "diana", "shift_stepsize": 7}]})
    assert "methods[0] (diana): shift_stepsize" in msg
    msg = _error({**BASE, "methods": [{"name": "dianna"}]})
    assert "unknown method 'dianna'" in msg and "did you mean 'diana'" in msg


def test_deeply_nested_yaml_names_the_file(tmp_path):
    p = tmp_path / "deep.yaml"
    p.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "nested" in str(e.value)


def test_non_utf8_file_names_the_file(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: caf\xe9\nproblem: {name: logreg}\nmethods: [gd]\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "UTF-8" in str(e.value)


def test_optsim_list_keeps_columns_and_whole_sentences(capsys):
    from optsim.cli import main

    assert main(["list", "methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    starts = {line.index(" derived ") if " derived " in line else None for line in lines} - {None}
    assert len(starts) == 1  # the stepsize column is aligned, whatever the name lengths
    assert any(line.startswith("newton_3pc_bc ") for line in lines)
    assert main(["list", "compressors"]) == 0
    out = capsys.readouterr().out
    assert "provably faster distributed nonconvex optimization\", Def. 2): one random permutation" in out
    assert all(line.rstrip().endswith((".", ")")) for line in out.splitlines())


def test_run_never_overwrites_another_configs_results(tmp_path, capsys, monkeypatch):
    from optsim.cli import main

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "q.yaml"
    cfg.write_text("name: q\nproblem: {name: quadratic, clients: 3, dim: 3}\nmethods: [gd]\nstop: {max_rounds: 20}\n")
    assert main(["run", str(cfg), "--no-store", "--no-plot", "-q"]) == 0
    first = (tmp_path / "results" / "q" / "traces" / "gd.json").read_text()
    # --set makes another config: its results go to a folder named after the overrides
    assert main(["run", str(cfg), "--no-store", "--no-plot", "-q", "--set", "stop.max_rounds=5"]) == 0
    assert (tmp_path / "results" / "q--stop.max_rounds_5" / "traces" / "gd.json").exists()
    assert (tmp_path / "results" / "q" / "traces" / "gd.json").read_text() == first
    # the same folder for another config is refused in one line, --force overwrites
    cfg.write_text(cfg.read_text().replace("max_rounds: 20", "max_rounds: 7"))
    capsys.readouterr()
    assert main(["run", str(cfg), "--no-store", "--no-plot", "-q"]) == 2
    err = capsys.readouterr().err
    assert "holds the results of another config" in err and "stop" in err and "--force" in err
    assert (tmp_path / "results" / "q" / "traces" / "gd.json").read_text() == first
    assert main(["run", str(cfg), "--no-store", "--no-plot", "-q", "--force"]) == 0
    assert (tmp_path / "results" / "q" / "traces" / "gd.json").read_text() != first


def test_plot_y_takes_the_columns_problems_add():
    """plot.y (and ``optsim plot --y``) accept the problem-specific trace columns, from one list."""
    from optsim.cli import main  # noqa: F401  (the CLI's choices are the same tuple)
    from optsim.experiment import parse_config
    from optsim.trace import PLOT_METRICS

    for y in ("residual_sq", "eig_error", "riem_dist_sq", "epsilon", "test_accuracy"):
        assert y in PLOT_METRICS
        assert parse_config({"problem": {"name": "quadratic"}, "methods": ["gd"], "plot": {"y": y}}).plot.y == y
    with pytest.raises(Exception, match="residual_sq"):
        parse_config({"problem": {"name": "quadratic"}, "methods": ["gd"], "plot": {"y": "residual"}})


def test_a_folder_recorded_before_new_config_fields_is_still_its_configs(tmp_path):
    """A results folder whose config.json was written before a field was added to the schema (here a
    record without the quadratic's ``heterogeneity``, at its default) still belongs to the same config; a real
    difference is refused."""
    import json

    from optsim.experiment import parse_config
    from optsim.experiment.runs import claim_output

    cfg = parse_config({"problem": {"name": "quadratic"}, "methods": ["gd"]})
    claim_output(tmp_path, cfg)
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["problem"].pop("heterogeneity") == 0.0
    (tmp_path / "config.json").write_text(json.dumps(record))
    claim_output(tmp_path, cfg)  # accepted: the same config as an earlier version recorded it
    other = parse_config({"problem": {"name": "quadratic", "dim": 7}, "methods": ["gd"]})
    with pytest.raises(ValueError, match="differs in 'problem'"):
        claim_output(tmp_path, other)
