"""The glossary of parameter names (docs/glossary.md) lists every parameter of every method."""
from __future__ import annotations

import re
from pathlib import Path

from optsim.methods import METHODS

GLOSSARY = Path(__file__).resolve().parents[1] / "docs" / "glossary.md"


def test_every_method_parameter_is_in_the_glossary():
    listed = set()
    for line in GLOSSARY.read_text().splitlines():
        if line.startswith("| `"):
            listed.update(re.findall(r"`([A-Za-z_0-9]+)`", line.split("|")[1]))
    missing = {f: sorted(n for n, c in METHODS.items() if f in c.Params.model_fields)
               for cls in METHODS.values() for f in cls.Params.model_fields if f not in listed}
    assert not missing, f"parameters missing from docs/glossary.md: {missing}"


def test_momentum_means_the_weight_of_the_previous_value():
    """``momentum`` is the weight of the old value wherever it appears (the MVR weight of the new
    gradient is ``mvr_a``)."""
    for name, cls in METHODS.items():
        f = cls.Params.model_fields.get("momentum")
        if f is not None:
            assert f.default < 1.0 and any(m.__class__.__name__ == "Lt" and m.lt == 1.0 for m in f.metadata), name
