"""Explicit, split randomness.

One run seed; every component (data, partition, sampler, compressor, noise, clock, ...) gets
its own ``torch.Generator`` derived from ``(seed, component name)``, so changing one component
(say the compressor) never changes the random stream of another (which clients are sampled).
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["derive_seed", "generator", "numpy_rng", "random_k_mask"]


def derive_seed(seed: int, component: str) -> int:
    """A 63-bit seed that depends only on the run seed and the component's name."""
    digest = hashlib.sha256(f"{int(seed)}/{component}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, component: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` for ``component`` of the run with seed ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, component))
    return g


def numpy_rng(seed: int, component: str) -> np.random.Generator:
    """The NumPy counterpart of :func:`generator` (used by data generation and partitions)."""
    return np.random.default_rng(derive_seed(seed, component))


def random_k_mask(m: int, d: int, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """Boolean CPU mask (m, d) of k coordinates per row, each row's set uniformly random among the
    k-subsets and independent of the others: the k smallest of d random integer keys per row.

    A key's low ceil(log2 d) bits are replaced by its column, so that the keys of a row are
    distinct (exactly k smallest; the subset is uniform up to ties of the random high bits, at least
    24 of them as in a float32 uniform). Keys are int32 for d <= 256 (two keys from each 64-bit
    draw), int64 beyond (at least 36 random bits for d < 2^27). The k-th smallest key of each row
    by numpy's introselect on the keys, then ``keys <= it`` (bench/RESULTS.md: 2 x faster than
    float keys and an index selection)."""
    b = (d - 1).bit_length()  # ceil(log2 d): the bits of a column index
    if b <= 8:
        draw = torch.randint(-2 ** 63, 2 ** 63 - 1, (m, (d + 1) // 2), generator=generator, dtype=torch.int64)
        keys, kind = draw.numpy().view(np.int32)[:, :d], np.int32
    else:
        keys = torch.randint(-2 ** 63, 2 ** 63 - 1, (m, d), generator=generator, dtype=torch.int64).numpy()
        kind = np.int64
    keys = (keys & kind(-(1 << b))) | np.arange(d, dtype=kind)
    return torch.from_numpy(keys <= np.partition(keys, k - 1, axis=1)[:, k - 1:k])
