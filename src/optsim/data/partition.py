"""Splitting a dataset's samples among clients (all seeded).

* ``iid``: a random permutation cut into equal parts (the remainder is dropped, so every
  client holds exactly ``N // n`` samples);
* ``sorted``: samples sorted by label, then cut into equal contiguous parts (maximal label skew);
* ``dirichlet``: for each label, the shares of the clients are drawn from Dirichlet(alpha)
  (small alpha = strong label skew), every client keeps at least one sample;
* ``unbalanced``: client sizes proportional to ``i ** -power`` (power-law imbalance), random samples;
* ``full``: every client holds the whole dataset (the homogeneous setting of the Byzantine papers).
"""
from __future__ import annotations

import numpy as np

from ..rng import numpy_rng

__all__ = ["partition", "PARTITIONS"]

PARTITIONS = ("iid", "sorted", "dirichlet", "unbalanced", "full")


def _check(N: int, n: int) -> None:
    if n < 1:
        raise ValueError(f"number of clients must be >= 1, got {n}")
    if n > N:
        raise ValueError(f"cannot split {N} samples among {n} clients: use at most {N} clients")


def partition(y: np.ndarray, n: int, kind: str = "iid", *, seed: int = 0, alpha: float = 0.5,
              power: float = 1.0) -> list[np.ndarray]:
    """Index arrays, one per client, of the samples each client holds."""
    N = len(y)
    if kind == "full":
        _check(N, min(n, N))
        return [np.arange(N) for _ in range(n)]
    _check(N, n)
    rng = numpy_rng(seed, "partition")
    if kind == "iid":
        per = N // n
        return list(rng.permutation(N)[: per * n].reshape(n, per))
    if kind == "sorted":
        per = N // n
        order = np.argsort(y, kind="stable")
        return list(order[: per * n].reshape(n, per))
    if kind == "dirichlet":
        if alpha <= 0:
            raise ValueError(f"dirichlet alpha must be > 0, got {alpha}")
        parts: list[list[int]] = [[] for _ in range(n)]
        for label in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == label))
            shares = rng.dirichlet(alpha * np.ones(n))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].extend(chunk.tolist())
        # every client needs data: move one sample from the largest client to each empty one
        for i in range(n):
            if not parts[i]:
                donor = max(range(n), key=lambda j: len(parts[j]))
                parts[i].append(parts[donor].pop())
        return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    if kind == "unbalanced":
        weights = np.arange(1, n + 1, dtype=np.float64) ** -float(power)
        sizes = np.maximum(1, np.floor(weights / weights.sum() * N).astype(int))
        while sizes.sum() > N:
            sizes[np.flatnonzero(sizes == sizes.max())[-1]] -= 1  # last of the largest: sizes stay non-increasing
        perm = rng.permutation(N)
        return [np.sort(p) for p in np.split(perm[: sizes.sum()], np.cumsum(sizes)[:-1])]
    raise ValueError(f"unknown partition '{kind}'; choose one of {', '.join(PARTITIONS)}")
