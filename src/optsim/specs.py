"""Components given in a config by name or by a mapping: ``"cm"`` or ``{"name": "gm", "T": 3}``.

One reading of such a spec for every registry (compressors, aggregators, attacks), with one
message for a malformed spec and one for an unknown name (the close matches, then every name).
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

__all__ = ["close_matches", "unknown_name", "split_spec"]


def close_matches(name: str, known) -> str:
    """``"; did you mean 'a' or 'b'?"`` for the names of ``known`` close to ``name`` (else "")."""
    close = difflib.get_close_matches(str(name), list(known), n=3)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def unknown_name(kind: str, name: Any, known) -> ValueError:
    """The error for a ``kind`` named ``name`` that is not among ``known``."""
    return ValueError(f"unknown {kind} '{name}'{close_matches(str(name), known)} (available: {', '.join(sorted(known))})")


def split_spec(spec: Any, kind: str, registry: Mapping) -> tuple[str, dict]:
    """(name, parameters) of a ``kind`` given as a name or a mapping with 'name'; the name must be a
    key of ``registry``."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or "name" not in spec:
        article = "an" if kind[:1] in "aeiou" else "a"
        raise ValueError(f"{article} {kind} is a name or a mapping with 'name', got {spec!r}")
    params = dict(spec)
    name = params.pop("name")
    if name not in registry:
        raise unknown_name(kind, name, registry)
    return name, params
