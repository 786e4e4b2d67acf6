"""Datasets (LibSVM files, scikit-learn, synthetic) and partitions among clients."""
from __future__ import annotations

import numpy as np
import pytest

from optsim.data import DATASETS, PARTITIONS, data_dir, load_dataset, partition

LIBSVM_TEXT = "+1 1:0.5 3:2\n-1 2:1.5\n+1 1:-1 2:0.25 3:4\n"
LIBSVM_X = np.array([[0.5, 0.0, 2.0], [0.0, 1.5, 0.0], [-1.0, 0.25, 4.0]])
LIBSVM_Y = np.array([1.0, -1.0, 1.0])


# ---- datasets -------------------------------------------------------------------------------

def test_libsvm_from_any_path(tmp_path):
    path = tmp_path / "sub dir" / "tiny.svm"
    path.parent.mkdir()
    path.write_text(LIBSVM_TEXT)
    ds = load_dataset(str(path))
    assert ds.X.dtype == np.float64 and ds.y.dtype == np.float64
    assert np.array_equal(ds.X, LIBSVM_X) and np.array_equal(ds.y, LIBSVM_Y)
    assert ds.shape == (3, 3) and ds.source == str(path)


def test_libsvm_name_from_optsim_data(isolated_dirs):
    assert data_dir() == isolated_dirs["data"]
    (isolated_dirs["data"] / "tiny").write_text(LIBSVM_TEXT)
    ds = load_dataset("libsvm:tiny")
    assert np.array_equal(ds.X, LIBSVM_X) and np.array_equal(ds.y, LIBSVM_Y)


def test_libsvm_known_name_gets_its_full_width(isolated_dirs):
    """A known set (a1a: 123 features) keeps its width even if the last features never occur."""
    (isolated_dirs["data"] / "a1a").write_text(LIBSVM_TEXT)
    ds = load_dataset("libsvm:a1a")
    assert ds.X.shape == (3, 123)
    assert np.array_equal(ds.X[:, :3], LIBSVM_X) and not ds.X[:, 3:].any()


def test_missing_libsvm_names_the_expected_path(isolated_dirs):
    expected = isolated_dirs["data"] / "a9a"
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("libsvm:a9a")
    assert str(expected) in str(e.value)
    assert "OPTSIM_DATA" in str(e.value)


def test_missing_libsvm_hints_at_similar_file(isolated_dirs):
    (isolated_dirs["data"] / "a9a.txt").write_text(LIBSVM_TEXT)
    with pytest.raises(FileNotFoundError, match=r"found a9a\.txt"):
        load_dataset("libsvm:a9a")


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_dataset(str(tmp_path / "nope.svm"))


def test_sklearn_breast_cancer():
    ds = load_dataset("sklearn:breast_cancer")
    assert ds.X.shape == (569, 30) and ds.y.shape == (569,)
    assert ds.X.dtype == np.float64 and set(np.unique(ds.y)) == {0.0, 1.0}
    with pytest.raises(ValueError, match="breast_cancer"):
        load_dataset("sklearn:nope")


@pytest.mark.parametrize("kind", ["logreg", "linreg"])
def test_synthetic_seeded(kind):
    a = load_dataset(f"synthetic:{kind}", size=200, dim=5, seed=3)
    b = load_dataset(f"synthetic:{kind}", size=200, dim=5, seed=3)
    c = load_dataset(f"synthetic:{kind}", size=200, dim=5, seed=4)
    assert a.X.shape == (200, 5) and a.y.shape == (200,)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.X, c.X)
    if kind == "logreg":
        assert set(np.unique(a.y)) == {-1.0, 1.0}
        assert 0.2 < (a.y == 1).mean() < 0.8
    else:
        assert len(np.unique(a.y)) == 200


def test_synthetic_condition():
    """Feature variances spread over [1, condition] (times 1/dim): the empirical covariance
    has a condition number of the requested order."""
    X = load_dataset("synthetic:linreg", size=20000, dim=4, condition=100.0).X
    ev = np.linalg.eigvalsh(X.T @ X / len(X))
    assert 50 < ev[-1] / ev[0] < 200
    with pytest.raises(ValueError, match="synthetic"):
        load_dataset("synthetic:nope")


def test_datasets_listing():
    assert "libsvm:a9a" in DATASETS and "sklearn:breast_cancer" in DATASETS and "synthetic:logreg" in DATASETS


# ---- partitions -----------------------------------------------------------------------------

def _labels(per_class=(40, 40, 40), seed=0):
    y = np.concatenate([np.full(c, float(k)) for k, c in enumerate(per_class)])
    return np.random.default_rng(seed).permutation(y)


def _check_disjoint(parts, N):
    allidx = np.concatenate(parts)
    assert allidx.dtype.kind == "i"
    assert len(np.unique(allidx)) == len(allidx), "clients share samples"
    assert allidx.min() >= 0 and allidx.max() < N
    assert all(len(p) >= 1 for p in parts)
    return allidx


@pytest.mark.parametrize("kind", [k for k in PARTITIONS if k != "full"])
def test_partitions_disjoint_in_range_seeded(kind):
    y = _labels((37, 50, 26))
    N = len(y)
    a = partition(y, 7, kind, seed=1)
    b = partition(y, 7, kind, seed=1)
    c = partition(y, 7, kind, seed=2)
    assert len(a) == 7
    _check_disjoint(a, N)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    if kind != "sorted":  # sorted is deterministic by design
        assert not all(np.array_equal(p, q) for p, q in zip(a, c))


def test_full_gives_every_client_the_whole_dataset():
    y = _labels((37, 50, 26))
    parts = partition(y, 4, "full", seed=3)
    assert len(parts) == 4 and all(np.array_equal(p, np.arange(len(y))) for p in parts)


def test_iid_sizes():
    y = _labels((40, 41, 42))
    parts = partition(y, 5, "iid")
    assert [len(p) for p in parts] == [123 // 5] * 5


def test_sorted_is_label_homogeneous():
    y = _labels((40, 40, 40))
    parts = partition(y, 6, "sorted")
    assert [len(p) for p in parts] == [20] * 6
    for p in parts:
        assert len(np.unique(y[p])) == 1
    assert [y[p][0] for p in parts] == [0, 0, 1, 1, 2, 2]
    # with uneven classes each client spans at most two consecutive labels
    y = _labels((25, 50, 45))
    for p in partition(y, 4, "sorted"):
        assert np.ptp(y[p]) <= 1


def _max_label_share(y, parts):
    return np.mean([np.bincount(y[p].astype(int)).max() / len(p) for p in parts])


def test_dirichlet_skew():
    y = _labels((200, 200, 200, 200))
    skewed = partition(y, 10, "dirichlet", alpha=0.05, seed=0)
    mixed = partition(y, 10, "dirichlet", alpha=100.0, seed=0)
    for parts in (skewed, mixed):
        assert len(_check_disjoint(parts, len(y))) == len(y)  # dirichlet keeps every sample
    assert _max_label_share(y, skewed) > 0.8
    assert _max_label_share(y, mixed) < 0.45
    assert _max_label_share(y, partition(y, 10, "iid")) < 0.45


def test_dirichlet_every_client_has_data():
    y = _labels((15, 15))
    for seed in range(20):
        parts = partition(y, 25, "dirichlet", alpha=0.01, seed=seed)
        assert len(_check_disjoint(parts, 30)) == 30


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
def test_unbalanced_sizes(power):
    N, n = 1000, 8
    parts = partition(np.zeros(N), n, "unbalanced", power=power)
    sizes = np.array([len(p) for p in parts])
    w = np.arange(1, n + 1, dtype=float) ** -power
    assert np.array_equal(sizes, np.maximum(1, np.floor(w / w.sum() * N)).astype(int))
    assert np.all(np.diff(sizes) < 0)
    assert sizes.sum() <= N and sizes.sum() > N - n


def test_unbalanced_sizes_never_increase():
    """Also when many clients get the minimum of one sample and sizes must be trimmed to N."""
    for N in range(5, 120, 3):
        for n in range(1, min(N, 40) + 1):
            for power in (0.5, 1.0, 2.0):
                parts = partition(np.zeros(N), n, "unbalanced", power=power)
                sizes = np.array([len(p) for p in parts])
                assert len(parts) == n and sizes.min() >= 1 and sizes.sum() <= N
                assert np.all(np.diff(sizes) <= 0), (N, n, power, sizes)
    _check_disjoint(partition(np.zeros(26), 22, "unbalanced"), 26)


def test_partition_errors():
    y = _labels((5, 5))
    for kind in PARTITIONS:
        if kind != "full":  # every client holds all samples: any number of clients
            with pytest.raises(ValueError, match="cannot split 10 samples among 11 clients"):
                partition(y, 11, kind)
        with pytest.raises(ValueError, match="clients must be >= 1"):
            partition(y, 0, kind)
    assert len(partition(y, 11, "full")) == 11
    assert len(partition(y, 10, "iid")) == 10  # as many clients as samples is fine
    with pytest.raises(ValueError, match="choose one of"):
        partition(y, 2, "nope")
    with pytest.raises(ValueError, match="alpha"):
        partition(y, 2, "dirichlet", alpha=0.0)
