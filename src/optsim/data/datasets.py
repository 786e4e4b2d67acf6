"""Loading a dataset from a source string.

Sources:

* ``libsvm:NAME`` (a9a, w8a, mushrooms, phishing, ...): the LibSVM file ``NAME`` read from the
  cache folder :func:`data_dir` (``$OPTSIM_DATA`` or ``~/.cache/optsim/data``);
* a path to any LibSVM-format file (read with scikit-learn's reader);
* ``sklearn:NAME``: a dataset bundled with scikit-learn (no download);
* ``synthetic:logreg`` / ``synthetic:linreg``: a seeded generator with controlled size,
  dimension, conditioning and heterogeneity.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..rng import numpy_rng

__all__ = ["DATASETS", "LIBSVM_KNOWN", "Dataset", "data_dir", "load_dataset", "load_sparse"]

#: LibSVM binary classification sets commonly used in the seed papers, with (samples, features).
LIBSVM_KNOWN = {
    "a1a": (1605, 123), "a9a": (32561, 123), "w1a": (2477, 300), "w8a": (49749, 300),
    "mushrooms": (8124, 112), "phishing": (11055, 68), "madelon": (2000, 500),
    "ijcnn1": (49990, 22), "covtype": (581012, 54), "gisette": (6000, 5000),
    "duke": (44, 7129), "real-sim": (72309, 20958), "australian": (690, 14),
    "german.numer": (1000, 24), "splice": (1000, 60), "svmguide3": (1243, 22),
}
SKLEARN_SETS = ("breast_cancer", "digits", "iris", "wine", "diabetes")
SYNTHETIC = ("logreg", "linreg")
DATASETS = ([f"libsvm:{k}" for k in LIBSVM_KNOWN] + [f"sklearn:{k}" for k in SKLEARN_SETS]
            + [f"synthetic:{k}" for k in SYNTHETIC] + ["<path to a LibSVM file>"])


@dataclass
class Dataset:
    """Features ``X`` (N, d) float64 and targets ``y`` (N,), plus where they came from."""

    X: np.ndarray
    y: np.ndarray
    source: str

    @property
    def shape(self) -> tuple[int, int]:
        return self.X.shape


def data_dir() -> Path:
    """The folder ``libsvm:NAME`` files are read from."""
    return Path(os.environ.get("OPTSIM_DATA", Path.home() / ".cache" / "optsim" / "data")).expanduser()


def _read_libsvm(path: Path, n_features: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_svmlight_file

    X, y = load_svmlight_file(str(path), n_features=n_features)
    return np.asarray(X.todense(), dtype=np.float64), np.asarray(y, dtype=np.float64)


def _sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets as skd

    if name not in SKLEARN_SETS:
        raise ValueError(f"unknown scikit-learn dataset '{name}'; choose one of {', '.join(SKLEARN_SETS)}")
    X, y = getattr(skd, f"load_{name}")(return_X_y=True)
    return np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)


def _synthetic(kind: str, size: int, dim: int, condition: float, seed: int,
               noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features with singular values spread over [1, sqrt(condition)] and a planted model."""
    if kind not in SYNTHETIC:
        raise ValueError(f"unknown synthetic dataset '{kind}'; choose one of {', '.join(SYNTHETIC)}")
    rng = numpy_rng(seed, "data")
    G = rng.standard_normal((size, dim))
    scales = np.sqrt(np.geomspace(1.0, max(float(condition), 1.0), dim))
    X = G * scales / np.sqrt(dim)
    w = rng.standard_normal(dim)
    z = X @ w
    if kind == "linreg":
        return X, z + noise * rng.standard_normal(size)
    p = 1.0 / (1.0 + np.exp(-z / max(z.std(), 1e-12) * 2))
    y = np.where(rng.random(size) < p, 1.0, -1.0)
    return X, y


def load_dataset(source: str, *, size: int = 1000, dim: int = 20, condition: float = 10.0,
                 noise: float = 0.1, seed: int = 0) -> Dataset:
    """Load ``source`` (see the module docstring); size/dim/condition/noise/seed are for synthetic."""
    if source.startswith("libsvm:"):
        name = source.split(":", 1)[1]
        path = data_dir() / name
        if not path.exists():
            alt = sorted(p.name for p in path.parent.glob(name + "*")) if path.parent.exists() else []
            hint = f" (found {', '.join(alt)}: rename it to '{name}')" if alt else ""
            raise FileNotFoundError(
                f"LibSVM dataset '{name}' not found: put the file at {path} "
                f"(or set OPTSIM_DATA to the folder that holds it){hint}")
        X, y = _read_libsvm(path, LIBSVM_KNOWN.get(name, (None, None))[1])
    elif source.startswith("sklearn:"):
        X, y = _sklearn(source.split(":", 1)[1])
    elif source.startswith("synthetic:"):
        X, y = _synthetic(source.split(":", 1)[1], size, dim, condition, seed, noise)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"dataset file '{source}' not found; give an existing LibSVM file, "
                                    f"'libsvm:NAME', 'sklearn:NAME' or 'synthetic:KIND'")
        X, y = _read_libsvm(path)
    return Dataset(X, y, source)


def load_sparse(source: str):
    """The features of a LibSVM source (``libsvm:NAME`` from :func:`data_dir`, or a path to a LibSVM
    file) as a SciPy CSR matrix (float64, duplicates summed, explicit zeros dropped) without densifying,
    and the targets (N,)."""
    from sklearn.datasets import load_svmlight_file

    if source.startswith("libsvm:"):
        name = source.split(":", 1)[1]
        path = data_dir() / name
        n_features = LIBSVM_KNOWN.get(name, (None, None))[1]
        if not path.exists():
            raise FileNotFoundError(f"LibSVM dataset '{name}' not found: put the file at {path} "
                                    f"(or set OPTSIM_DATA to the folder that holds it)")
    else:
        path, n_features = Path(source).expanduser(), None
        if not path.exists():
            raise FileNotFoundError(f"dataset file '{source}' not found; give an existing LibSVM file or 'libsvm:NAME'")
    X, y = load_svmlight_file(str(path), n_features=n_features, dtype=np.float64)
    X = X.tocsr()
    X.sum_duplicates()
    X.eliminate_zeros()
    return X, np.asarray(y, dtype=np.float64)
