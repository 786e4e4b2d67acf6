"""Robust aggregators: the server's rule that turns the m received client vectors (m, d) into one
vector (d,) while up to ``f`` of them are Byzantine, and the two pre-aggregators that compose with
every rule (bucketing, nearest-neighbour mixing).

Every rule is batched over the rows of ``X`` (torch only, float32 or float64): order statistics
along the client dimension are torch reductions (``median``, ``topk``, ``sort``), distances are one
matrix product or one ``cdist`` per iteration; there is no Python loop over clients or
coordinates (only over the T / L iterations of the iterative rules).

Definitions (notation of Gorbunov, Horváth, Richtárik, Gidel 2023, "Variance reduction is an
antidote to Byzantines", Def. 2.1): a (delta, c)-robust aggregator guarantees, whenever a subset G
of at least (1 - delta) n inputs has average pairwise spread sigma^2,
E||hat x - mean_G||^2 <= c delta sigma^2. ``Aggregator.c`` is that constant where a paper states
it as a number. No source read for this module gives a number for these rules (the B1 appendix,
which would hold the constants of Krum, RFA and CM after bucketing, was not read), so every rule
here has ``c = None``.

Papers: Blanchard, El Mhamdi, Guerraoui, Stainer (2017), "Machine learning with adversaries:
Byzantine tolerant gradient descent", NeurIPS (Krum, Multi-Krum); Yin, Chen, Ramchandran, Bartlett
(2018), "Byzantine-robust distributed learning: towards optimal statistical rates", ICML (cm, tm);
Pillutla, Kakade, Harchaoui (2022), "Robust aggregation for federated learning", IEEE TSP (RFA,
gm); Karimireddy, He, Jaggi (2021), "Learning from history for Byzantine robust optimization",
ICML (cc); Karimireddy, He, Jaggi (2022), "Byzantine-robust learning on heterogeneous datasets via
bucketing", ICLR (bucketing); Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan (2023),
"Fixing by mixing: a recipe for optimal Byzantine ML under heterogeneity", AISTATS (nnm).

Non-finite inputs (inf or NaN in a row) never raise:

* ``cm`` and ``tm`` treat them as ordinary extreme values, in the order of :func:`torch.sort`
  (-inf first, then the numbers, +inf, NaN last);
* the distance-based rules (``gm``, ``krum``, ``multi_krum``, ``nnm``) treat such a row as
  infinitely far from every other row: it is removed and counted as one of the f faulty rows
  (with b such rows the rule runs on m - b rows with f' = max(f - b, 0); while b <= f this is
  exactly the rule with those rows at infinite distance, and when b > f the remaining rows are
  taken as honest). When no finite row is left the result is NaN;
* ``cc`` and ``clip`` give such a row a zero contribution (its clipped direction is undefined) and
  still divide by m;
* ``mean`` propagates them (it is not robust).

Row norms and distances to a point never overflow for finite rows: a norm that overflows the
dtype's range in the fused computation is recomputed with scaling (pairwise squared distances that
overflow are +inf, i.e. infinitely far).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import torch

from ..specs import close_matches, split_spec
from ..state import Stateful

__all__ = ["Aggregator", "AGGREGATORS", "register_aggregator", "make_aggregator",
           "Mean", "CoordinateMedian", "TrimmedMean", "GeometricMedian", "Krum", "MultiKrum",
           "CenteredClipping", "StaticClipping", "Bucketing", "NearestNeighborMixing",
           "coordinate_median", "trimmed_mean", "bucket_means", "nearest_neighbor_mixing"]

AGGREGATORS: dict[str, type["Aggregator"]] = {}

#: spec keys of :func:`make_aggregator` that wrap any rule (not parameters of the rule itself)
WRAPPER_KEYS = ("bucketing", "nnm")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ----------------------------------------------------------------------------------------------
# batched building blocks


def _finite_rows(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Row norms (m,) and the mask of rows whose entries are all finite (None when all are).

    One fused pass (``vector_norm``); only rows whose norm is not finite are inspected further.
    Finite rows whose fused norm overflowed get their norm recomputed with scaling (max |x| times
    the norm of x / max |x|); non-finite rows get norm +inf."""
    norms = torch.linalg.vector_norm(X, dim=1)
    suspect = ~torch.isfinite(norms)
    if not bool(suspect.any()):
        return norms, None
    rows = suspect.nonzero().squeeze(1)
    finite = torch.isfinite(X[rows]).all(1)
    if bool(finite.any()):
        big = rows[finite]
        norms[big] = _scaled_norms(X[big])
    norms[rows[~finite]] = math.inf
    good = torch.ones(X.shape[0], dtype=torch.bool, device=X.device)
    good[rows[~finite]] = False
    return norms, (None if bool(good.all()) else good)


def _scaled_norms(Y: torch.Tensor) -> torch.Tensor:
    """Euclidean norms of the finite rows of Y without overflow in the sum of squares."""
    a = Y.abs().amax(1)
    safe = torch.where(a > 0, a, torch.ones_like(a))
    return safe * torch.linalg.vector_norm(Y / safe[:, None], dim=1)


def _distances_to(X: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """||x_i - z|| for the (finite) rows of X, computed directly (no Gram-matrix cancellation; one
    pass over X, no (m, d) temporary), overflow-safe."""
    dist = torch.cdist(X, z[None], compute_mode="donot_use_mm_for_euclid_dist").squeeze(1)
    over = ~torch.isfinite(dist)
    if bool(over.any()):
        rows = over.nonzero().squeeze(1)
        dist[rows] = _scaled_norms(X[rows] - z)
    return dist


def _pairwise_sq(Y: torch.Tensor, f: int) -> torch.Tensor:
    """Squared Euclidean distances (m, m) between the finite rows of Y, zero diagonal.

    Computed as ||a||^2 + ||b||^2 - 2 a.b after centering at the coordinate-wise median of the
    first min(m, 2f + 1) rows: those rows hold an honest majority, so the center lies inside the
    honest rows' range in every coordinate and the cancellation error is relative to the honest
    spread, not to the norm of the common component (nor to an attacker's offset). Entries that
    overflow are +inf (infinitely far)."""
    m = Y.shape[0]
    r = min(m, 2 * f + 1)
    center = Y[0] if r == 1 else torch.median(Y[:r], dim=0).values
    Z = Y - center
    G = Z @ Z.T
    sq = G.diagonal()
    D = sq[:, None] + sq[None, :] - 2.0 * G
    D = 0.5 * (D + D.T)
    D = torch.nan_to_num(D, nan=math.inf).clamp_(min=0.0)
    D.fill_diagonal_(0.0)
    return D


def _nan_vector(X: torch.Tensor) -> torch.Tensor:
    return torch.full((X.shape[1],), math.nan, dtype=X.dtype, device=X.device)


def _sorted_median(Y: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median by a full sort along dim 0 (NaN last): the exact reference path."""
    m = Y.shape[0]
    S = torch.sort(Y, dim=0).values
    if m % 2:
        return S[m // 2]
    return 0.5 * S[m // 2 - 1] + 0.5 * S[m // 2]


def coordinate_median(X: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median of the rows of X (m, d) -> (d,); for even m the mean of the two
    middle values, each halved before the sum (no overflow).

    Fast path: ``torch.median`` along dim 0 gives the lower middle s_(m/2); for even m the upper
    middle s_(m/2+1) is the smallest value above it unless s_(m/2) is tied beyond position m/2.
    ``torch.median`` returns NaN for a column holding a NaN; such columns are recomputed by a sort
    (NaN ordered last, as :func:`torch.sort` and NumPy do), so a NaN is an extreme value like inf."""
    m = X.shape[0]
    if m == 1:
        return X[0].clone()
    lo = torch.median(X, dim=0).values
    if m % 2:
        out = lo.clone()
    else:
        above = X > lo
        n_above = above.sum(0, dtype=torch.int32)
        hi = torch.where(above, X, math.inf).amin(0)
        hi = torch.where(n_above >= m // 2, hi, lo)
        out = 0.5 * lo + 0.5 * hi
    nan_cols = torch.isnan(lo)
    if bool(nan_cols.any()):
        cols = nan_cols.nonzero().squeeze(1)
        out[cols] = _sorted_median(X[:, cols])
    return out


def trimmed_mean(X: torch.Tensor, f: int) -> torch.Tensor:
    """Coordinate-wise trimmed mean: per coordinate drop the f largest and the f smallest values
    and average the m - 2f others (needs m > 2f).

    Computed without sorting: with lo = s_(f+1) and hi = s_(m-f) (order statistics from two
    ``topk`` calls of size f + 1), sum of the kept values = sum_i clamp(x_i, lo, hi) - f lo - f hi
    (exactly f values are raised to lo and f lowered to hi, ties included), so an attacker's huge
    values are clamped before any sum (no cancellation). Columns where this is not finite (a NaN,
    or more than f infinite values) are recomputed by a sort (NaN last)."""
    m = X.shape[0]
    if m <= 2 * f:
        raise ValueError(f"trimmed mean: {m} vectors cannot lose f = {f} on each side (needs m > 2f)")
    if f == 0:
        return X.mean(0)
    lo = torch.topk(X, f + 1, dim=0, largest=False, sorted=False).values.amax(0)
    hi = torch.topk(X, f + 1, dim=0, largest=True, sorted=False).values.amin(0)
    total = torch.clamp(X, min=lo, max=hi).sum(0)
    out = (total - f * lo - f * hi) / (m - 2 * f)
    bad = ~torch.isfinite(out)
    if bool(bad.any()):
        cols = bad.nonzero().squeeze(1)
        out[cols] = torch.sort(X[:, cols], dim=0).values[f:m - f].mean(0)
    return out


def bucket_means(X: torch.Tensor, s: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bucketing (Karimireddy, He, Jaggi 2022): rows permuted by
    ``torch.randperm(m, generator=generator)``, cut into buckets of s consecutive rows, each
    bucket averaged: (ceil(m/s), d). The last bucket, when m is not a multiple of s, is divided by
    its real size (as byzfl and the epfml code do; B3's Alg. 2 and the B2 code divide by s, which
    shrinks that bucket toward 0). s = 1 returns X itself (no permutation drawn)."""
    m = X.shape[0]
    if s == 1:
        return X
    perm = torch.randperm(m, generator=generator, device="cpu").to(X.device)
    bucket = torch.empty(m, dtype=torch.long, device=X.device)
    bucket[perm] = torch.arange(m, device=X.device) // s
    nb = -(-m // s)
    sums = X.new_zeros(nb, X.shape[1]).index_add_(0, bucket, X)
    sizes = torch.bincount(bucket, minlength=nb).to(X.dtype)
    return sums / sizes[:, None]


def nearest_neighbor_mixing(X: torch.Tensor, f: int) -> torch.Tensor:
    """NNM (Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan 2023, "Fixing by mixing"):
    each row replaced by the mean of its m - f nearest rows in Euclidean distance, itself
    included (itself first, then the m - f - 1 nearest others; equal distances go to the lower
    index). Rows with a non-finite entry are infinitely far: they are left as they are (the rule
    after NNM sees them) and the finite rows mix among themselves with f' = max(f - b, 0)."""
    m = X.shape[0]
    if m - f < 1:
        raise ValueError(f"nnm: {m} vectors and f = {f} leave no neighbours (needs m > f)")
    _, good = _finite_rows(X)
    Y = X if good is None else X[good]
    mg = Y.shape[0]
    if mg == 0:
        return X.clone()
    fg = f if good is None else max(f - (m - mg), 0)
    k = mg - fg
    D = _pairwise_sq(Y, fg)
    D.fill_diagonal_(-1.0)  # itself first
    idx = torch.argsort(D, dim=1, stable=True)[:, :k]
    W = torch.zeros(mg, mg, dtype=X.dtype, device=X.device).scatter_(1, idx, 1.0 / k)
    mixed = W @ Y
    if good is None:
        return mixed
    out = X.clone()
    out[good] = mixed
    return out


# ----------------------------------------------------------------------------------------------
# the interface


class Aggregator(Stateful):
    """A robust aggregation rule: built for at most ``n`` received vectors of which up to ``f`` are
    Byzantine; called on X (m, d), m <= n, it returns (d,).

    Subclasses set ``name``, their parameters' ``defaults`` (accepted as keyword arguments, checked
    by name with close matches) and implement :meth:`aggregate`; :meth:`_check` validates values."""

    name: ClassVar[str] = ""
    #: True when the rule needs a strict honest majority (refuse B >= n/2)
    needs_majority: ClassVar[bool] = True
    #: the constant c of the (delta, c)-robust aggregator definition when a paper states it, else None
    c: float | None = None
    #: the rule's parameters and their defaults (attributes of the same names)
    defaults: ClassVar[dict[str, Any]] = {}
    #: whether f enters the computation (shown by :meth:`describe`)
    uses_f: ClassVar[bool] = False
    #: whether a call draws from its generator (bucketing's permutation)
    randomized: ClassVar[bool] = False
    #: F_A of the bounded-aggregator assumption ||A(x_1..x_m)|| <= F_A max_i ||x_i|| (Malinovsky et al.
    #: 2024, Assumption 2.3): a number, "sqrt_d" (coordinate-wise rules: sqrt(d)), or None (no such bound)
    bound_kind: ClassVar[float | str | None] = None

    def __init__(self, n: int, f: int, **params):
        if not _is_int(n) or n < 1:
            raise ValueError(f"aggregator '{self.name}': n (clients received at most) must be an integer >= 1, got {n!r}")
        if not _is_int(f) or f < 0:
            raise ValueError(f"aggregator '{self.name}': f (Byzantine clients) must be an integer >= 0, got {f!r}")
        if self.needs_majority and 2 * f >= n:
            raise ValueError(f"aggregator '{self.name}' needs a strict honest majority but f = {f} of n = {n} "
                             f"is not < n/2: use f <= {(n - 1) // 2}, more clients, or a rule without that need "
                             f"(mean, clip)")
        self.n, self.f = n, f
        for key in params:
            if key not in self.defaults:
                allowed = list(self.defaults)
                extra = (" (bucketing and nnm are spec keys of make_aggregator, which wraps the rule)"
                         if key in WRAPPER_KEYS else "")
                raise ValueError(f"aggregator '{self.name}' has no parameter '{key}'{close_matches(key, allowed + list(WRAPPER_KEYS))}"
                                 f"{extra} (parameters: {', '.join(allowed) or 'none'}; with any rule: "
                                 f"{', '.join(WRAPPER_KEYS)})")
        for key, default in self.defaults.items():
            setattr(self, key, params.get(key, default))
        self._check()

    def _check(self) -> None:
        """Validate parameter values (one-line ValueError naming the rule and the fix)."""

    def _fail(self, msg: str) -> ValueError:
        return ValueError(f"aggregator '{self.name}': {msg}")

    def _check_positive(self, key: str) -> None:
        v = getattr(self, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
            raise self._fail(f"{key} must be a positive number, got {v!r}")

    def _check_count(self, key: str, lo: int = 1) -> None:
        v = getattr(self, key)
        if not _is_int(v) or v < lo:
            raise self._fail(f"{key} must be an integer >= {lo}, got {v!r}")

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"f": self.f} if self.uses_f else {}
        out.update({k: getattr(self, k) for k in self.defaults})
        return out

    def bound(self, d: int) -> float | None:
        """F_A (see ``bound_kind``) for vectors of dimension d; None when the rule has no such bound."""
        b = self.bound_kind
        return math.sqrt(d) if b == "sqrt_d" else b

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.params().items()]
        return f"{self.name}({', '.join(parts)})" if parts else self.name

    def __repr__(self) -> str:
        return self.describe()

    def __call__(self, X: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not isinstance(X, torch.Tensor) or X.ndim != 2:
            raise ValueError(f"aggregator '{self.name}': expected a (clients, d) tensor, got "
                             f"{tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__}")
        if not X.is_floating_point():
            raise ValueError(f"aggregator '{self.name}': expected floating-point vectors, got {X.dtype}")
        m = X.shape[0]
        if not 1 <= m <= self.n:
            raise ValueError(f"aggregator '{self.name}' was built for at most n = {self.n} vectors, got {m}")
        return self.aggregate(X, generator)

    def aggregate(self, X: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError


def register_aggregator(cls: type[Aggregator]) -> type[Aggregator]:
    """Class decorator adding ``cls`` to :data:`AGGREGATORS` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    AGGREGATORS[cls.name] = cls
    return cls


# ----------------------------------------------------------------------------------------------
# the rules


@register_aggregator
class Mean(Aggregator):
    """The plain average (1/m) sum_i x_i: the non-robust baseline (one Byzantine vector moves it
    arbitrarily far; non-finite rows propagate). Needs no majority."""

    name = "mean"
    bound_kind = 1.0  # a convex combination
    needs_majority = False

    def aggregate(self, X, generator):
        return X.mean(0)


@register_aggregator
class CoordinateMedian(Aggregator):
    """Coordinate-wise median (Yin, Chen, Ramchandran, Bartlett 2018, "Byzantine-robust distributed
    learning: towards optimal statistical rates", ICML).

    Variant: for an even count the mean of the two middle values (NumPy's and ``quantile(0.5)``'s
    convention, used by the epfml / B1 code); ``torch.median`` alone would return the lower one.
    Robust in the (delta, c) sense only after bucketing (Karimireddy, He, Jaggi 2022); ``c = None``
    (no numeric constant in the sources read). f is not used beyond the majority check. Non-finite
    values are extremes in :func:`torch.sort` order (see :func:`coordinate_median`)."""

    name = "cm"
    bound_kind = "sqrt_d"  # B3 Appendix C: each coordinate within the inputs' range

    def aggregate(self, X, generator):
        return coordinate_median(X)


@register_aggregator
class TrimmedMean(Aggregator):
    """Coordinate-wise trimmed mean (Yin et al. 2018, ICML): per coordinate drop the f largest and
    the f smallest received values and average the m - 2f others (the trimming count is f itself,
    b = f, as in the epfml / byzfl code). Refuses 2f >= n. Robust in the (delta, c) sense (via
    Allouah et al. 2023, per the B1 discussion); ``c = None`` (no number in the sources read)."""

    name = "tm"
    bound_kind = "sqrt_d"
    uses_f = True

    def aggregate(self, X, generator):
        return trimmed_mean(X, self.f)


@register_aggregator
class GeometricMedian(Aggregator):
    """Geometric median by the smoothed Weiszfeld iteration of RFA (Pillutla, Kakade, Harchaoui
    2022, "Robust aggregation for federated learning", IEEE TSP; equal weights):
    z_0 = 0, weights alpha_i = 1/m, and T times
    beta_i = alpha_i / max(||z - x_i||, nu),  z <- sum_i beta_i x_i / sum_i beta_i.

    Variant: T = 8, nu = 0.1 (the epfml / B1 code); byzfl's GeometricMedian runs T = 3 (pass
    ``T=3``: on [[1,2,3],[4,5,6],[7,8,9]] it gives 3.7878876412..., T = 8 gives 3.99999995...).
    The alpha_i cancel in the ratio and are not multiplied in. Distances are computed directly
    (``cdist`` without the Gram trick), so a common offset of the inputs costs no precision.
    A row with a non-finite entry is infinitely far: its weight is 0 (it is dropped); no finite
    row -> NaN. Robust after bucketing (Karimireddy et al. 2022); ``c = None``."""

    name = "gm"
    bound_kind = 1.0  # in the convex hull of the inputs (B3 Appendix C)
    defaults = {"T": 8, "nu": 0.1}

    def _check(self):
        self._check_count("T")
        self._check_positive("nu")

    def aggregate(self, X, generator):
        norms, good = _finite_rows(X)
        if good is not None:
            X, norms = X[good], norms[good]
            if X.shape[0] == 0:
                return _nan_vector(X)
        dist = norms  # distances to z_0 = 0
        z = X.new_zeros(X.shape[1])
        for t in range(self.T):
            if t:
                dist = _distances_to(X, z)
            beta = 1.0 / dist.clamp(min=self.nu)
            z = (beta @ X) / beta.sum()
        return z


def _krum_scores(X: torch.Tensor, f: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(finite rows of X, Krum scores of those rows): score_i = sum of the squared distances from
    x_i to its m - f - 2 nearest other rows (Blanchard et al. 2017); non-finite rows are dropped
    and counted among the f (see the module docstring)."""
    m = X.shape[0]
    _, good = _finite_rows(X)
    Y = X if good is None else X[good]
    mg = Y.shape[0]
    if mg == 0:
        return Y, Y.new_zeros(0)
    fg = f if good is None else max(f - (m - mg), 0)
    k = max(mg - fg - 2, 0)
    D = _pairwise_sq(Y, fg)
    D.fill_diagonal_(math.inf)
    if k == 0:
        return Y, Y.new_zeros(mg)
    return Y, torch.topk(D, k, dim=1, largest=False, sorted=False).values.sum(1)


@register_aggregator
class Krum(Aggregator):
    """Krum (Blanchard, El Mhamdi, Guerraoui, Stainer 2017, "Machine learning with adversaries:
    Byzantine tolerant gradient descent", NeurIPS): score_i = sum of the squared distances from x_i
    to its m - f - 2 nearest other vectors; output the vector of smallest score (ties: the lower
    index). Needs n >= 2f + 2, refused otherwise (the bound the epfml / B1 code checks; at
    n = 2f + 2 each score sums f distances). byzfl's Krum sums over the m - f - 1 nearest instead (a different
    rule). Distances: one Gram matrix on the centered rows (:func:`_pairwise_sq`). Non-finite rows
    are infinitely far (never chosen while a finite row exists; no finite row -> NaN). Robust after
    bucketing (Karimireddy et al. 2022); ``c = None``."""

    name = "krum"
    bound_kind = 1.0  # one of the inputs (B3 Appendix C)
    uses_f = True

    def _check(self):
        if 2 * self.f + 2 > self.n:
            raise self._fail(f"Krum needs n >= 2f + 2 (Blanchard et al. 2017), got n = {self.n}, f = {self.f}: "
                             f"use f <= {(self.n - 2) // 2} or a rule needing only 2f < n (cm, tm, gm, cc)")

    def _scores(self, X):
        m = X.shape[0]
        if m < self.f + 2:
            raise self._fail(f"received {m} vectors; scoring with f = {self.f} needs at least f + 2 = {self.f + 2}")
        return _krum_scores(X, self.f)

    def aggregate(self, X, generator):
        Y, scores = self._scores(X)
        if Y.shape[0] == 0:
            return _nan_vector(X)
        return Y[torch.argmin(scores)].clone()


@register_aggregator
class MultiKrum(Krum):
    """Multi-Krum (Blanchard et al. 2017): the average
    of the ``m_best`` vectors of smallest Krum score (ties: lower index first); default
    m_best = m - f (byzfl's choice; the epfml code returns the *sum* of the chosen vectors, not
    their average). Same refusal and non-finite handling as :class:`Krum` (the default counts the
    dropped non-finite rows among the f; an explicit m_best is capped at the finite rows)."""

    name = "multi_krum"
    defaults = {"m_best": None}

    def _check(self):
        super()._check()
        if self.m_best is not None and (not _is_int(self.m_best) or not 1 <= self.m_best <= self.n):
            raise self._fail(f"m_best must be an integer in [1, n = {self.n}] or None (m - f), got {self.m_best!r}")

    def aggregate(self, X, generator):
        Y, scores = self._scores(X)
        mg = Y.shape[0]
        if mg == 0:
            return _nan_vector(X)
        fg = max(self.f - (X.shape[0] - mg), 0)
        k = min(self.m_best if self.m_best is not None else mg - fg, mg)
        order = torch.argsort(scores, stable=True)[:k]
        return Y[order].mean(0)


@register_aggregator
class CenteredClipping(Aggregator):
    """Centered clipping (Karimireddy, He, Jaggi 2021, "Learning from history for Byzantine robust
    optimization", ICML): L times
    v <- v + (1/m) sum_i clip_tau(x_i - v),  clip_tau(u) = min(1, tau/||u||) u,
    starting from the previous call's output, kept as the declared state ``v`` (0 before the first
    call). Defaults tau = 10, L = 3 (epfml / B1 code; byzfl uses tau = 100, L = 1). Rows with a
    non-finite entry contribute 0 (their clipped direction is undefined); the sum is still divided
    by m. A (delta, c)-robust aggregator (as B1 uses it); ``c = None`` (no number in the sources
    read). The update is computed as v + (sum_i s_i x_i - (sum_i s_i) v) / m (two passes over X,
    no (m, d) temporary), with s_i the clipping factors."""

    name = "cc"
    defaults = {"tau": 10.0, "L": 3}
    state = ("v",)

    def __init__(self, n: int, f: int, **params):
        super().__init__(n, f, **params)
        #: the center, carried between calls (None stands for 0 before the first call)
        self.v: torch.Tensor | None = None

    def _check(self):
        self._check_positive("tau")
        self._check_count("L")

    def aggregate(self, X, generator):
        m, d = X.shape
        v = self.v
        if v is None:
            v = X.new_zeros(d)
        elif v.shape != (d,):
            raise self._fail(f"its center v has shape {tuple(v.shape)} but the vectors have d = {d}")
        v = v.to(dtype=X.dtype, device=X.device)
        _, good = _finite_rows(X)
        Y = X if good is None else X[good]
        if Y.shape[0]:
            for _ in range(self.L):
                dist = _distances_to(Y, v)
                scale = torch.where(dist > self.tau, self.tau / dist, torch.ones_like(dist))
                v = v + (scale @ Y - scale.sum() * v) / m
        self.v = v
        return v.clone()


@register_aggregator
class StaticClipping(Aggregator):
    """Static clipping then averaging: (1/m) sum_i min(1, tau/||x_i||) x_i, tau = 2.0 by default
    (byzfl's Clipping pre-aggregator with its default c = 2.0, followed by the mean). Not robust
    in the (delta, c) sense, but each vector moves the result by at most tau/m, whatever the
    number of Byzantine vectors, so no majority is needed. Rows with a non-finite entry contribute
    0 and still count in m. ``c = None``."""

    name = "clip"
    bound_kind = 1.0
    needs_majority = False
    defaults = {"tau": 2.0}

    def _check(self):
        self._check_positive("tau")

    def aggregate(self, X, generator):
        m = X.shape[0]
        norms, good = _finite_rows(X)
        if good is not None:
            X, norms = X[good], norms[good]
        scale = torch.where(norms > self.tau, self.tau / norms, torch.ones_like(norms))
        return (scale @ X) / m


# ----------------------------------------------------------------------------------------------
# pre-aggregators (wrappers)


def _refusal_reason(build) -> str | None:
    try:
        build()
    except ValueError as e:
        return str(e)
    return None


class Bucketing(Aggregator):
    """Bucketing (Karimireddy, He, Jaggi 2022, "Byzantine-robust learning on heterogeneous datasets
    via bucketing", ICLR) in front of ``inner``: a random permutation drawn from the call's
    ``generator``, buckets of s consecutive vectors, each averaged (the last partial bucket divided
    by its real size, :func:`bucket_means`), and ``inner`` applied to the ceil(m/s) bucket means.

    The inner rule is built for n' = ceil(n/s) vectors and f' = f: each Byzantine vector lies in
    exactly one bucket, so at most f buckets are contaminated (the contaminated fraction grows
    from f/n to about s f/n); a majority rule therefore needs 2f < ceil(n/s) in the worst case. A
    rule whose computation uses f (krum, multi_krum, tm) is refused otherwise, with the largest s
    that works; a rule that does not (cm, gm, cc) runs with a warning, since B1-B3 run exactly such
    settings (n = 20, f = 5, s = 2), outside the bucketing theorem's range (s delta < 1/2).
    s = 1 is the identity (no permutation)."""

    name = "bucketing"

    def __init__(self, n: int, f: int, inner: Aggregator, s: int):
        if not _is_int(s) or s < 1:
            raise ValueError(f"bucketing: the bucket size must be an integer >= 1, got {s!r}")
        if inner.n < -(-n // s) or (inner.f < f and inner.uses_f):
            raise ValueError(f"bucketing(s={s}): the inner rule must be built for n >= ceil(n/s) = {-(-n // s)} "
                             f"and f >= {f}, got {inner.describe()} with n = {inner.n}, f = {inner.f}")
        self.inner, self.s = inner, s
        super().__init__(n, f)

    @property
    def needs_majority(self) -> bool:  # type: ignore[override]
        return self.inner.needs_majority

    @property
    def randomized(self) -> bool:  # type: ignore[override]
        return self.s > 1 or self.inner.randomized

    def bound(self, d: int) -> float | None:
        return self.inner.bound(d)  # bucket means are convex combinations

    state = ("inner",)

    def params(self):
        return {"s": self.s}

    def describe(self):
        return f"bucketing(s={self.s})+{self.inner.describe()}"

    def aggregate(self, X, generator):
        return self.inner(bucket_means(X, self.s, generator), generator)


class NearestNeighborMixing(Aggregator):
    """NNM (Allouah et al. 2023, "Fixing by mixing: a recipe for optimal Byzantine ML under
    heterogeneity", AISTATS) in front of ``inner``: each vector replaced by the mean of its
    m - f nearest vectors (itself included; :func:`nearest_neighbor_mixing`), then ``inner`` (which
    may be a :class:`Bucketing`) on the m mixed vectors. Refuses 2f >= n (mixing relies on an
    honest majority among each vector's m - f nearest)."""

    name = "nnm"
    needs_majority = True
    uses_f = True
    state = ("inner",)

    def __init__(self, n: int, f: int, inner: Aggregator):
        self.inner = inner
        super().__init__(n, f)

    def describe(self):
        return f"nnm(f={self.f})+{self.inner.describe()}"

    @property
    def randomized(self) -> bool:  # type: ignore[override]
        return self.inner.randomized

    def bound(self, d: int) -> float | None:
        return self.inner.bound(d)  # mixed vectors are convex combinations

    def mix(self, X: torch.Tensor) -> torch.Tensor:
        """The mixed rows (m, d)."""
        return nearest_neighbor_mixing(X, self.f)

    def aggregate(self, X, generator):
        return self.inner(self.mix(X), generator)


def make_aggregator(spec: Any, n: int, f: int) -> Aggregator:
    """Build an aggregator for at most ``n`` vectors with up to ``f`` Byzantine ones from a spec: a
    rule name (``"cm"``), a mapping ``{"name": "gm", "T": 3, "bucketing": 2, "nnm": True}`` (the
    rule's parameters plus the wrapper keys), or an :class:`Aggregator` (returned as it is).

    Order of application: NNM, then bucketing, then the rule."""
    if isinstance(spec, Aggregator):
        return spec
    name, params = split_spec(spec, "aggregator", AGGREGATORS)
    cls = AGGREGATORS[name]
    s = params.pop("bucketing", None)
    nnm = params.pop("nnm", False)
    if not isinstance(nnm, bool):
        raise ValueError(f"aggregator '{name}': nnm must be true or false, got {nnm!r}")
    if s is not None and (not _is_int(s) or s < 1):
        raise ValueError(f"aggregator '{name}': the bucket size must be an integer >= 1, got bucketing = {s!r}")
    agg: Aggregator
    if s is None or s == 1:
        agg = cls(n, f, **params)
        if s == 1:
            agg = Bucketing(n, f, agg, 1)
    else:
        nb = -(-n // s)
        reason = _refusal_reason(lambda: cls(nb, f, **params))
        if reason is not None and not cls.uses_f and _refusal_reason(lambda: cls(n, f, **params)) is None:
            warnings.warn(f"aggregator '{name}' after bucketing(s={s}): up to f = {f} of the {nb} bucket means may "
                          "hold a Byzantine vector, outside the bucketing theorem's range (s f < n/2)", stacklevel=2)
            agg = Bucketing(n, f, cls(nb, min(f, (nb - 1) // 2), **params), s)
        elif reason is not None:
            if _refusal_reason(lambda: cls(n, f, **params)) is not None:
                cls(n, f, **params)  # the rule is refused without bucketing too: its own message
            ok = [t for t in range(s - 1, 0, -1) if _refusal_reason(lambda: cls(-(-n // t), f, **params)) is None]
            raise ValueError(f"aggregator '{name}' after bucketing(s={s}) sees ceil(n/s) = {nb} bucket means, of "
                             f"which up to f = {f} may hold a Byzantine vector: too many for '{name}' "
                             f"(n = {nb}, f = {f}); " + (f"use bucketing <= {ok[0]}" if ok[0] > 1 else "drop bucketing"))
        else:
            agg = Bucketing(n, f, cls(nb, f, **params), s)
    if nnm:
        if 2 * f >= n:
            raise ValueError(f"aggregator '{name}' with nnm: mixing needs a strict honest majority, f = {f} of "
                             f"n = {n} is not < n/2 (Allouah et al. 2023): use f <= {(n - 1) // 2} or drop nnm")
        agg = NearestNeighborMixing(n, f, agg)
    return agg
