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
