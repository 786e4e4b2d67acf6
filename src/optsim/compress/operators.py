"""The built-in compression operators (all batched over client rows)."""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ..bounds import clip_rows
from ..rng import random_k_mask
from .base import Compressor, index_bits, make_compressor, register_compressor

__all__ = ["Identity", "RandK", "TopK", "PermK", "Natural", "QSGD", "Sign", "ScaledSign",
           "Bernoulli", "Compose"]


def _check_k(k, d: int, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int) and not (isinstance(k, float) and k.is_integer()):
        raise ValueError(f"{name}: k must be an integer, got {k!r}")
    k = int(k)
    if not 1 <= k <= d:
        raise ValueError(f"{name}: k = {k} but the dimension is d = {d}: choose 1 <= k <= d")
    return k


def _scatter(X: torch.Tensor, idx: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    kept = X.gather(1, idx)
    return torch.zeros_like(X).scatter_(1, idx, kept if scale == 1.0 else kept * scale)


def _numpy_ok(X: torch.Tensor) -> bool:
    """Whether X can be worked on as a numpy array (small CPU arrays: numpy's per-call cost is a
    third of torch's)."""
    return X.device.type == "cpu" and X.dtype in (torch.float32, torch.float64) and not X.requires_grad


def _keep(X: torch.Tensor, mask: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale`` * X where ``mask`` holds, 0 elsewhere (whatever X holds there, inf and NaN included)."""
    if _numpy_ok(X):
        Xn = X.numpy()
        return torch.from_numpy(np.where(mask.numpy(), Xn if scale == 1.0 else Xn * scale, 0))
    V = torch.where(mask.to(X.device), X, 0.0)
    return V if scale == 1.0 else V.mul_(scale)


def largest_k(V: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (m, k), in no particular order, of the k largest entries of each row of V (m, d).

    On the CPU numpy's per-row introselect is about twice as fast as ``torch.topk`` on rows of
    ~100 entries (62 vs 137 us for 100 x 123 float32 rows that change from call to call,
    bench/RESULTS.md); ties may be broken differently."""
    d = V.shape[1]
    if _numpy_ok(V) and k < d:
        return torch.from_numpy(np.argpartition(V.numpy(), d - k, axis=1)[:, d - k:])
    return V.topk(k, dim=1, sorted=False).indices


def _mask_of(idx: torch.Tensor, shape) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.bool, device=idx.device).scatter_(1, idx, True)


def largest_k_mask(V: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask (m, d) of the k largest entries of each row of V (m, d) >= 0 (ties broken
    toward lower columns; NaN counts as the largest, as in ``np.argpartition``).

    On the CPU each row's k-th largest key is found by numpy's introselect on the keys, not an
    index array (2 x faster, bench/RESULTS.md), and the mask is ``keys >= it``. float32: the key of
    an entry is its bit pattern (ordered as the value for V >= 0) with the reversed column in the
    low bits, so keys never tie. float64: the values themselves, then, in rows where more than k
    entries reach the threshold, the first ones equal to it are kept; rows with NaN are selected by
    index."""
    m, d = V.shape
    if not _numpy_ok(V) or k >= d:
        return _mask_of(largest_k(V, k), V.shape)
    Vn = V.numpy()
    if Vn.dtype == np.float32:
        keys = (Vn.view(np.int32).astype(np.int64) << index_bits(d)) | _columns(d, np.int64, reverse=True)
        return torch.from_numpy(keys >= np.partition(keys, d - k, axis=1)[:, d - k:d - k + 1])
    kth = np.partition(Vn, d - k, axis=1)[:, d - k:d - k + 1]
    mask = Vn >= kth
    count = np.count_nonzero(mask, axis=1)
    if (count > k).any():
        at = Vn == kth
        room = k - count + np.count_nonzero(at, axis=1)
        mask &= ~at | (np.cumsum(at, axis=1) <= room[:, None])
    nan = np.flatnonzero(count < k)
    if nan.size:
        redo = np.zeros((nan.size, d), dtype=bool)
        np.put_along_axis(redo, np.argpartition(Vn[nan], d - k, axis=1)[:, d - k:], True, axis=1)
        mask[nan] = redo
    return torch.from_numpy(mask)


@functools.lru_cache(maxsize=64)
def _columns(d: int, kind, reverse: bool = False) -> np.ndarray:
    """0, ..., d - 1 (or reversed) as a read-only array of integer type ``kind`` (shared)."""
    cols = np.arange(d - 1, -1, -1, dtype=kind) if reverse else np.arange(d, dtype=kind)
    cols.flags.writeable = False
    return cols


@register_compressor
class Identity(Compressor):
    """No compression: d floats, d*b bits. omega = 0, alpha = 1."""

    name = "identity"
    randomized = False
    unbiased = True
    omega = 0.0
    alpha = 1.0

    def compress(self, X, generator, clients):
        return X, self.dense_bits(self.d)

    def dense_bits(self, dim):
        return dim * self.float_bits


class _Sparsifier(Compressor):
    """Sends k (value, index) pairs: k * (b + ceil(log2 d)) bits."""

    def __init__(self, d, n=1, float_bits=32, *, k: int):
        super().__init__(d, n, float_bits)
        self.k = _check_k(k, self.d, self.name)

    def params(self):
        return {"k": self.k}

    @property
    def support(self) -> int:
        return self.k

    @property
    def density(self) -> float:
        return float(self.support)

    def bits_with(self, values: Compressor) -> float:
        """Bits when the k kept values are themselves encoded by ``values``."""
        return self.support * index_bits(self.d) + values.dense_bits(self.support)

    def _bits(self) -> float:
        return self.support * (self.float_bits + index_bits(self.d))


@register_compressor
class RandK(_Sparsifier):
    """Rand-k: k coordinates uniformly at random, scaled by d/k (unbiased, omega = d/k - 1).
    With ``scaled: false`` it is the biased, contractive variant (alpha = k/d)."""

    name = "rand_k"

    def __init__(self, d, n=1, float_bits=32, *, k: int, scaled: bool = True):
        super().__init__(d, n, float_bits, k=k)
        self.scaled = bool(scaled)
        self.unbiased = self.scaled

    def params(self):
        return {"k": self.k} if self.scaled else {"k": self.k, "scaled": False}

    @property
    def omega(self):
        return self.d / self.k - 1 if self.scaled else None

    @property
    def alpha(self):
        return None if self.scaled else self.k / self.d

    def compress(self, X, generator, clients):
        mask = random_k_mask(X.shape[0], self.d, self.k, generator)
        return _keep(X, mask, self.d / self.k if self.scaled else 1.0), self._bits()

    def _compress_replicas(self, X, generators, clients):
        # each replica's coordinates from its own generator (as its separate run draws them)
        R, m, d = X.shape
        mask = torch.stack([random_k_mask(m, d, self.k, g) for g in generators])
        values = _keep(X, mask, self.d / self.k if self.scaled else 1.0)
        return values, torch.full((R, m), float(self._bits()), dtype=torch.float64)


@register_compressor
class TopK(_Sparsifier):
    """Top-k: the k largest coordinates in magnitude (biased, contractive, alpha = k/d)."""

    name = "top_k"
    randomized = False

    @property
    def alpha(self):
        return self.k / self.d

    def compress(self, X, generator, clients):
        return _keep(X, largest_k_mask(X.abs(), self.k)), self._bits()


@register_compressor
class PermK(_Sparsifier):
    """Perm-K (Szlendak, Tyurin, Richtárik 2022, "Permutation compressors for provably faster
    distributed nonconvex optimization", Def. 2): one random permutation shared by all clients;
    client i keeps block i of it, scaled by n (d >= n, d divisible by n; omega = n - 1), or, when
    n >= d (n divisible by d), the one coordinate pi(i mod d) scaled by d (omega = d - 1). The
    compressed gradients of all clients are correlated so that their mean has no variance when
    all inputs agree. Bits: (d/n) * (b + ceil(log2 d)) (one pair when n >= d)."""

    name = "perm_k"
    unbiased = True

    def __init__(self, d, n=1, float_bits=32):
        Compressor.__init__(self, d, n, float_bits)
        if d >= n and d % n:
            raise ValueError(f"perm_k needs d divisible by n (d = {d}, n = {n}): pad the features or change n")
        if n > d and n % d:
            raise ValueError(f"perm_k needs n divisible by d when n > d (n = {n}, d = {d})")
        self.k = d // n if d >= n else 1

    def params(self):
        return {}

    @property
    def omega(self):
        return float(min(self.n, self.d) - 1)

    def compress(self, X, generator, clients):
        perm = torch.randperm(self.d, generator=generator).to(X.device)
        rows = torch.arange(self.n, device=X.device) if clients is None else torch.as_tensor(clients, device=X.device)
        if rows.shape[0] != X.shape[0]:
            raise ValueError("perm_k: pass the clients whose rows these are")
        if self.d >= self.n:
            idx = perm.view(self.n, self.k)[rows]
            scale = self.n
        else:
            idx = perm[rows % self.d][:, None]
            scale = self.d
        return _scatter(X, idx, scale), self._bits()


@register_compressor
class Natural(Compressor):
    """Natural compression (Horváth et al. 2019, "Natural compression for distributed deep
    learning", Def. 1): each coordinate randomly rounded to one of the two nearest powers of two,
    unbiased, omega = 1/8. Bits: 9 per coordinate (sign and 8 exponent bits)."""

    name = "natural"
    unbiased = True
    omega = 1.0 / 8.0

    def compress(self, X, generator, clients):
        mant, exp = torch.frexp(X.abs())  # |x| = mant * 2^exp, mant in [0.5, 1)
        low = torch.ldexp(torch.ones_like(X), exp - 1)
        p_up = 2 * mant - 1
        u = torch.rand(X.shape, generator=generator, dtype=X.dtype, device="cpu").to(X.device)
        mag = torch.where(u < p_up, 2 * low, low)
        return torch.where(X == 0, torch.zeros_like(X), torch.sign(X) * mag), self.dense_bits(self.d)

    def dense_bits(self, dim):
        return 9 * dim


@register_compressor
class QSGD(Compressor):
    """Random dithering / QSGD with s levels (Alistarh et al. 2017, "QSGD", Sec. 3.1):
    C(x)_j = ||x||_2 sign(x_j) xi_j / s with xi_j the randomized rounding of s|x_j|/||x||_2;
    unbiased, omega = min(d/s^2, sqrt(d)/s) (Lemma 3.1). Bits: b (the norm) + d * (1 + ceil(log2(s+1)))
    (sign and level per coordinate, no entropy coding)."""

    name = "qsgd"
    unbiased = True

    def __init__(self, d, n=1, float_bits=32, s: int = 1):
        super().__init__(d, n, float_bits)
        if not isinstance(s, int) or s < 1:
            raise ValueError(f"qsgd: s (number of levels) must be an integer >= 1, got {s!r}")
        self.s = s

    def params(self):
        return {"s": self.s}

    def omega_for(self, dim):
        return min(dim / self.s**2, math.sqrt(dim) / self.s)

    @property
    def omega(self):
        return self.omega_for(self.d)

    def compress(self, X, generator, clients):
        norm = X.norm(dim=1, keepdim=True)
        level = X.abs() / norm.clamp_min(torch.finfo(X.dtype).tiny) * self.s
        low = level.floor()
        u = torch.rand(X.shape, generator=generator, dtype=X.dtype, device="cpu").to(X.device)
        xi = low + (u < level - low).to(X.dtype)
        return norm * torch.sign(X) * xi / self.s, self.dense_bits(self.d)

    def dense_bits(self, dim):
        return self.float_bits + dim * (1 + math.ceil(math.log2(self.s + 1)))


@register_compressor
class Sign(Compressor):
    """sign(x) (signSGD, Bernstein et al. 2018): biased and not contractive. Bits: d."""

    name = "sign"
    randomized = False

    def compress(self, X, generator, clients):
        return torch.sign(X), self.dense_bits(self.d)

    def dense_bits(self, dim):
        return dim


@register_compressor
class Clip(Compressor):
    """Clipping clip_tau(x) = min(1, tau / ||x||) x: the operator of Clip21 (Khirirat, Gorbunov,
    Horváth, Islamov, Karray, Richtárik (2023), "Clip21: error feedback for gradient clipping",
    Algorithm 1 is EF21 with it: ``ef21`` with ``compressor: {name: clip, tau: ...}``). Biased,
    deterministic and not contractive uniformly (no alpha): Clip21's analysis uses that it is the
    identity on the ball of radius tau. Bits: d floats."""

    name = "clip"
    randomized = False

    def __init__(self, d, n=1, float_bits=32, *, tau: float):
        super().__init__(d, n, float_bits)
        if not (float(tau) > 0):
            raise ValueError(f"clip: tau must be a positive clipping radius, got {tau!r}")
        self.tau = float(tau)

    def params(self):
        return {"tau": self.tau}

    def compress(self, X, generator, clients):
        return clip_rows(X, self.tau), self.uncompressed_bits


@register_compressor
class ScaledSign(Compressor):
    """(||x||_1 / d) sign(x) (Karimireddy et al. 2019, "Error feedback fixes SignSGD"):
    contractive with alpha = 1/d (in the worst case). Bits: b + d."""

    name = "scaled_sign"
    randomized = False

    @property
    def alpha(self):
        return 1.0 / self.d

    def compress(self, X, generator, clients):
        return X.abs().mean(1, keepdim=True) * torch.sign(X), self.dense_bits(self.d)

    def dense_bits(self, dim):
        return self.float_bits + dim


@register_compressor
class Bernoulli(Compressor):
    """Bernoulli (lazy) compressor: with probability p send ``inner``(x) (scaled by 1/p when
    ``scaled``, making it unbiased with omega = (1 + omega_inner)/p - 1), otherwise send nothing
    (0 bits). Unscaled, it is contractive with alpha = p * alpha_inner (the Bernoulli aggregation
    of the 3PC paper)."""

    name = "bernoulli"

    def __init__(self, d, n=1, float_bits=32, p: float = 0.5, inner="identity", scaled: bool = True):
        super().__init__(d, n, float_bits)
        if not 0 < p <= 1:
            raise ValueError(f"bernoulli: p must be in (0, 1], got {p}")
        self.p, self.scaled = float(p), bool(scaled)
        self.inner = make_compressor(inner, d, n, float_bits)
        self.unbiased = self.scaled and self.inner.unbiased

    def params(self):
        return {"p": self.p, "inner": self.inner.describe(), "scaled": self.scaled}

    @property
    def density(self) -> float:
        """p zeta(inner): the inner message is sent with probability p."""
        return self.p * self.inner.density

    @property
    def omega(self):
        if not self.unbiased:
            return None
        return (1 + self.inner.omega) / self.p - 1

    @property
    def alpha(self):
        if self.scaled or self.inner.alpha is None:
            return None
        return self.p * self.inner.alpha

    def compress(self, X, generator, clients):
        msg = self.inner(X, generator, clients)
        send = torch.rand(X.shape[0], generator=generator, dtype=torch.float64) < self.p
        keep = send.to(X.device, X.dtype)[:, None] / (self.p if self.scaled else 1.0)
        return msg.values * keep, msg.bits * send


@register_compressor
class Compose(Compressor):
    """outer(inner(x)) for a sparsifier ``inner`` (rand_k, top_k, perm_k) and a quantizer ``outer``
    (natural, qsgd, sign, scaled_sign, identity): the k kept values are quantized. Bits: k indices
    plus the quantizer's bits for a k-vector. Unbiased when both are, with
    omega = (1 + omega_outer(k)) (1 + omega_inner) - 1."""

    name = "compose"

    def __init__(self, d, n=1, float_bits=32, *, outer, inner):
        super().__init__(d, n, float_bits)
        self.outer = make_compressor(outer, d, n, float_bits)
        self.inner = make_compressor(inner, d, n, float_bits)
        if not isinstance(self.inner, _Sparsifier):
            raise ValueError(f"compose: inner must be a sparsifier (rand_k, top_k, perm_k), got {self.inner.name}")
        try:
            self.outer.dense_bits(1)
        except TypeError:
            raise ValueError(f"compose: outer must be a quantizer (natural, qsgd, sign, scaled_sign), got {self.outer.name}") from None
        self.unbiased = self.outer.unbiased and self.inner.unbiased

    def params(self):
        return {"outer": self.outer.describe(), "inner": self.inner.describe()}

    @property
    def density(self) -> float:
        return self.inner.density

    @property
    def omega(self):
        if not self.unbiased:
            return None
        return (1 + self.outer.omega_for(self.inner.support)) * (1 + self.inner.omega) - 1

    def compress(self, X, generator, clients):
        sparse = self.inner(X, generator, clients).values
        return self.outer(sparse, generator, clients).values, self.inner.bits_with(self.outer)
