"""Shared fixtures: every test runs with its own cache and data folders (never the user's home)."""
from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Point OPTSIM_CACHE (solved optima) and OPTSIM_DATA (LibSVM files) at fresh tmp folders."""
    cache, data = tmp_path / "optsim_cache", tmp_path / "optsim_data"
    data.mkdir()
    monkeypatch.setenv("OPTSIM_CACHE", str(cache))
    monkeypatch.setenv("OPTSIM_DATA", str(data))
    return {"cache": cache, "data": data}


@pytest.fixture
def gen():
    """A seeded torch generator (tests are deterministic)."""
    g = torch.Generator()
    g.manual_seed(1234)
    return g


@pytest.fixture
def glm_data():
    """Three clients with unequal sample counts (7, 5, 9), d = 4, labels +-1, float64 arrays."""
    rng = np.random.default_rng(0)
    sizes = (7, 5, 9)
    features = [rng.standard_normal((m, 4)) * (1 + i) for i, m in enumerate(sizes)]
    labels = [np.where(rng.random(m) < 0.5, 1.0, -1.0) for m in sizes]
    return features, labels


@pytest.fixture(scope="session")
def tiny_logreg():
    """Logistic regression with 6 clients x 20 samples, d = 8, lambda = 0.1 (runs every method in a blink)."""
    from optsim.problems import LogisticRegression

    rng = np.random.default_rng(0)
    n, m, d = 6, 20, 8
    A = rng.standard_normal((n * m, d))
    y = np.where(A @ rng.standard_normal(d) > 0, 1.0, -1.0)
    return LogisticRegression([A[i * m:(i + 1) * m] for i in range(n)], [y[i * m:(i + 1) * m] for i in range(n)],
                              lam=0.1)
