"""Robust aggregators (optsim.robust.aggregators): the exact test vectors of the research notes,
every rule against an independent brute-force implementation (plain loops over NumPy rows and
columns, written here from the definitions), robustness to outliers, centered clipping's state,
seeded bucketing and the refusal messages."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optsim.robust import AGGREGATORS, make_aggregator, nearest_neighbor_mixing
from optsim.robust.aggregators import bucket_means
from optsim.state import undeclared_state

# the brute force meets inf - inf in NumPy sums on purpose (rows of inf and -inf)
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

INF, NAN = math.inf, math.nan
X3 = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]


def _t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# brute force (loops; NumPy only for sorting a column and summing a few numbers)


def bf_finite(X):
    """Indices of the rows whose entries are all finite."""
    return [i for i in range(X.shape[0]) if all(math.isfinite(v) for v in X[i])]


def bf_norm(v):
    return math.sqrt(sum(float(a) * float(a) for a in v))


def bf_sq(a, b):
    return sum((float(x) - float(y)) ** 2 for x, y in zip(a, b))


def bf_cm(X):
    m, d = X.shape
    out = np.empty(d)
    for j in range(d):
        s = np.sort(X[:, j])  # NaN last
        out[j] = s[m // 2] if m % 2 else 0.5 * s[m // 2 - 1] + 0.5 * s[m // 2]
    return out


def bf_tm(X, f):
    m, d = X.shape
    out = np.empty(d)
    for j in range(d):
        s = np.sort(X[:, j])
        out[j] = np.mean(s[f:m - f])
    return out


def bf_gm(X, T=8, nu=0.1):
    good = bf_finite(X)
    if not good:
        return np.full(X.shape[1], NAN)
    z = np.zeros(X.shape[1])
    for _ in range(T):
        beta = [(1.0 / len(good)) / max(math.sqrt(bf_sq(X[i], z)), nu) for i in good]
        z = sum(b * X[i] for b, i in zip(beta, good)) / sum(beta)
    return z


def bf_krum_scores(X, f):
    """(finite row indices, their scores): sum of squared distances to the m' - f' - 2 nearest
    other finite rows, f' = max(f - #non-finite rows, 0)."""
    good = bf_finite(X)
    fg = max(f - (X.shape[0] - len(good)), 0)
    k = max(len(good) - fg - 2, 0)
    scores = []
    for i in good:
        dists = sorted(bf_sq(X[i], X[j]) for j in good if j != i)
        scores.append(sum(dists[:k]))
    return good, scores


def bf_krum(X, f):
    good, scores = bf_krum_scores(X, f)
    if not good:
        return np.full(X.shape[1], NAN)
    best = min(range(len(good)), key=lambda a: (scores[a], a))
    return X[good[best]]


def bf_multi_krum(X, f, m_best=None):
    good, scores = bf_krum_scores(X, f)
    if not good:
        return np.full(X.shape[1], NAN)
    fg = max(f - (X.shape[0] - len(good)), 0)
    k = min(m_best if m_best is not None else len(good) - fg, len(good))
    order = sorted(range(len(good)), key=lambda a: (scores[a], a))[:k]
    return sum(X[good[a]] for a in order) / k


def bf_clip_row(v, tau):
    nrm = bf_norm(v)
    return v * min(1.0, tau / nrm) if nrm > 0 else v


def bf_cc(X, tau=10.0, L=3, v0=None):
    m, d = X.shape
    v = np.zeros(d) if v0 is None else np.array(v0, dtype=np.float64)
    good = bf_finite(X)
    for _ in range(L):
        v = v + sum((bf_clip_row(X[i] - v, tau) for i in good), np.zeros(d)) / m
    return v


def bf_clip(X, tau=2.0):
    m, d = X.shape
    return sum((bf_clip_row(X[i], tau) for i in bf_finite(X)), np.zeros(d)) / m


def bf_nnm(X, f):
    good = bf_finite(X)
    fg = max(f - (X.shape[0] - len(good)), 0)
    k = len(good) - fg
    out = X.copy()
    for i in good:
        others = sorted((j for j in good if j != i), key=lambda j: (bf_sq(X[i], X[j]), j))
        chosen = [i] + others[:k - 1]
        out[i] = sum(X[j] for j in chosen) / k
    return out


def bf_buckets(X, s, perm):
    rows = [perm[a:a + s] for a in range(0, len(perm), s)]
    return np.stack([sum(X[i] for i in b) / len(b) for b in rows])


RULES = {
    "mean": lambda X, f, **p: X.mean(0),
    "cm": lambda X, f, **p: bf_cm(X),
    "tm": lambda X, f, **p: bf_tm(X, f),
    "gm": lambda X, f, **p: bf_gm(X, **p),
    "krum": lambda X, f, **p: bf_krum(X, f),
    "multi_krum": lambda X, f, **p: bf_multi_krum(X, f, **p),
    "cc": lambda X, f, **p: bf_cc(X, **p),
    "clip": lambda X, f, **p: bf_clip(X, **p),
}


def test_every_rule_has_a_reference():
    assert sorted(AGGREGATORS) == sorted(RULES)


# ----------------------------------------------------------------------------------------------
# (1) the exact test vectors of the research notes


def test_notes_vectors():
    X = _t(X3)
    assert make_aggregator("cm", 3, 1)(X).tolist() == [4, 5, 6]
    assert make_aggregator("tm", 3, 1)(X).tolist() == [4, 5, 6]
    gm3 = make_aggregator({"name": "gm", "nu": 0.1, "T": 3}, 3, 1)(X)
    torch.testing.assert_close(gm3, _t([3.7878876412, 4.7878876412, 5.7878876412]), rtol=0, atol=1e-10)
    gm8 = make_aggregator({"name": "gm", "nu": 0.1, "T": 8}, 3, 1)(X)
    torch.testing.assert_close(gm8, _t([3.99999995, 4.99999995, 5.99999995]), rtol=0, atol=1e-8)
    assert torch.equal(make_aggregator("gm", 3, 1)(X), gm8)  # T = 8, nu = 0.1 are the defaults
    cc = make_aggregator({"name": "cc", "tau": 100, "L": 1}, 3, 1)
    assert cc(X).tolist() == [4, 5, 6]
    assert nearest_neighbor_mixing(X, 1).tolist() == [[2.5, 3.5, 4.5], [2.5, 3.5, 4.5], [5.5, 6.5, 7.5]]
    # static clipping of row 1 to norm 2 (one received vector: the clipped row itself)
    torch.testing.assert_close(make_aggregator({"name": "clip", "tau": 2.0}, 1, 0)(X[:1]),
                               _t([0.5345224838, 1.0690449676, 1.6035674515]), rtol=0, atol=1e-10)
    # clip(2.0) of all three: the mean of the three rows scaled to norm 2
    want = sum(2 * np.array(r) / np.linalg.norm(r) for r in X3) / 3
    torch.testing.assert_close(make_aggregator("clip", 3, 1)(X), torch.from_numpy(want), rtol=0, atol=1e-12)
    assert make_aggregator("mean", 3, 2)(X).tolist() == [4, 5, 6]


def test_krum_vectors():
    """Blanchard's rule by hand. X3, f = 0: one neighbour each, all squared distances to the nearest
    other row are 27, a three-way tie -> the lowest index, [1, 2, 3] (byzfl's Krum(1), with its
    m - f - 1 neighbours, also gives [1, 2, 3]); f = 1 needs n >= 4 and is refused.
    Multi-Krum on X3: f = 0 averages m - f = 3 rows -> [4, 5, 6]; m_best = 2 -> [2.5, 3.5, 4.5]
    (the notes' byzfl MultiKrum(1) value)."""
    X = _t(X3)
    assert make_aggregator("krum", 3, 0)(X).tolist() == [1, 2, 3]
    assert make_aggregator("multi_krum", 3, 0)(X).tolist() == [4, 5, 6]
    assert make_aggregator({"name": "multi_krum", "m_best": 2}, 3, 0)(X).tolist() == [2.5, 3.5, 4.5]
    with pytest.raises(ValueError, match="krum"):
        make_aggregator("krum", 3, 1)
    # five points, f = 1: two neighbours each. Squared distances
    # d01=1 d02=4 d03=18 d04=200 d12=5 d13=13 d14=181 d23=10 d24=164 d34=98
    # scores: x0 1+4=5, x1 1+5=6, x2 4+5=9, x3 10+13=23, x4 98+164=262
    X5 = _t([[0, 0], [1, 0], [0, 2], [3, 3], [10, 10]])
    assert make_aggregator("krum", 5, 1)(X5).tolist() == [0, 0]
    assert make_aggregator("multi_krum", 5, 1)(X5).tolist() == [1.0, 1.25]  # x0..x3
    assert make_aggregator({"name": "multi_krum", "m_best": 2}, 5, 1)(X5).tolist() == [0.5, 0.0]


def test_even_median_is_the_mean_of_the_two_middle_values():
    X = _t([[1.0, 5.0], [2.0, 5.0], [10.0, 5.0], [3.0, 7.0]])
    assert make_aggregator("cm", 4, 1)(X).tolist() == [2.5, 5.0]  # torch.median would give [2, 5]
    assert make_aggregator("tm", 4, 1)(X).tolist() == [2.5, 5.0]


# ----------------------------------------------------------------------------------------------
# (2) every rule against the brute force


SHAPES = [(1, 4), (2, 3), (3, 3), (4, 1), (5, 3), (6, 7), (9, 2), (12, 20), (16, 5)]


def _data(m, d, kind, seed, dtype):
    rng = np.random.default_rng(seed)
    if kind == "gauss":
        X = rng.standard_normal((m, d)) * rng.uniform(0.5, 3.0)
    elif kind == "offset":  # a large common component (cancellation in Gram-matrix distances)
        X = 100.0 + rng.standard_normal((m, d))
    elif kind == "ties":  # few distinct values and duplicated rows
        X = rng.integers(-2, 3, size=(m, d)).astype(np.float64)
        if m >= 3:
            X[m - 1] = X[0]
            X[m // 2] = X[1]
    else:  # "inf": rows with +inf, -inf, NaN, or a single infinite entry
        X = rng.standard_normal((m, d))
        bad = [(0, INF), (m - 1, -INF), (m // 2, NAN)] if m >= 4 else [(0, INF)]
        for b, (i, v) in enumerate(bad):
            if b == 1 and d > 1:
                X[i, 0] = v  # one infinite entry only
            else:
                X[i, :] = v
        if m >= 6:
            X[1, d - 1] = INF
    return torch.tensor(X, dtype=dtype)


def _fs(rule, m):
    """f values to try: 0 and the largest the rule accepts for n = m."""
    if rule in ("mean", "clip"):
        top = m - 1
    elif rule in ("krum", "multi_krum"):
        if m < 2:
            return []
        top = (m - 2) // 2
    else:
        top = (m - 1) // 2
    return sorted({0, top, top // 2})


PARAMS = {"gm": [{}, {"T": 3, "nu": 0.5}], "cc": [{}, {"tau": 0.7, "L": 2}], "clip": [{}, {"tau": 0.5}],
          "multi_krum": [{}, {"m_best": 1}]}


def _assert_matches(got, want, dtype, what):
    want = torch.as_tensor(np.asarray(want, dtype=np.float64))
    got64 = got.to(torch.float64)
    assert got.dtype == dtype, what
    finite = torch.isfinite(want)
    assert torch.equal(finite, torch.isfinite(got64)), f"{what}: non-finite entries differ: {got} vs {want}"
    assert torch.equal(torch.isnan(want), torch.isnan(got64)), f"{what}: NaN entries differ: {got} vs {want}"
    assert torch.equal(want[~finite & ~torch.isnan(want)], got64[~finite & ~torch.isnan(want)]), what
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    torch.testing.assert_close(got64[finite], want[finite], **tol, msg=what)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("rule", sorted(RULES))
def test_rule_against_brute_force(rule, dtype):
    checked = 0
    for m, d in SHAPES:
        for kind in ("gauss", "offset", "ties", "inf"):
            for f in _fs(rule, m):
                for params in PARAMS.get(rule, [{}]):
                    if rule == "multi_krum" and params.get("m_best", 0) > m:
                        continue
                    X = _data(m, d, kind, seed=100 * m + d, dtype=dtype)
                    what = f"{rule}{params} f={f} m={m} d={d} {kind} {dtype}"
                    agg = make_aggregator({"name": rule, **params}, m, f)
                    got = agg(X)
                    Xn = X.numpy().astype(np.float64)
                    if dtype == torch.float32 and rule == "krum" and kind != "inf":
                        # float32 distances may reorder near-ties: the choice must be a row of X whose
                        # exact score is minimal up to float32 rounding
                        good, scores = bf_krum_scores(Xn, f)
                        hit = [a for a in range(len(good)) if np.array_equal(Xn[good[a]], got.numpy())]
                        assert hit, what
                        assert scores[hit[0]] <= min(scores) * (1 + 1e-4) + 1e-4, what
                    else:
                        _assert_matches(got, RULES[rule](Xn, f, **params), dtype, what)
                    checked += 1
    assert checked > 50


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_nnm_against_brute_force(dtype):
    for m, d in SHAPES:
        for kind in ("gauss", "offset", "ties", "inf"):
            for f in sorted({0, (m - 1) // 2}):
                X = _data(m, d, kind, seed=7 * m + d, dtype=dtype)
                what = f"nnm f={f} m={m} d={d} {kind}"
                got = nearest_neighbor_mixing(X, f)
                want = bf_nnm(X.numpy().astype(np.float64), f)
                for i in range(m):
                    _assert_matches(got[i], want[i], dtype, f"{what} row {i}")
                # composed: nnm then the rule
                agg = make_aggregator({"name": "cm", "nnm": True}, m, f)
                _assert_matches(agg(X), bf_cm(want), dtype, what + " + cm")


@pytest.mark.parametrize("rule", ["cm", "tm", "gm", "krum", "multi_krum", "cc", "mean"])
def test_bucketing_against_brute_force(rule):
    for (m, d), s in [((5, 3), 2), ((12, 4), 3), ((16, 5), 2), ((9, 2), 4), ((7, 3), 7)]:
        for kind in ("gauss", "ties", "inf"):
            nb = -(-m // s)
            if rule in ("krum", "multi_krum") and nb < 2:
                continue  # one bucket mean: nothing to score
            f = 1 if (rule not in ("krum", "multi_krum") and nb >= 3) or nb >= 4 else 0
            if rule == "mean":
                f = 2
            X = _data(m, d, kind, seed=m * d + s, dtype=torch.float64)
            agg = make_aggregator({"name": rule, "bucketing": s}, m, f)
            got = agg(X, torch.Generator().manual_seed(5))
            perm = torch.randperm(m, generator=torch.Generator().manual_seed(5)).tolist()
            means = bf_buckets(X.numpy(), s, perm)
            _assert_matches(got, RULES[rule](means, f), torch.float64, f"bucketing({s}) {rule} m={m} {kind}")


# ----------------------------------------------------------------------------------------------
# (3) robustness sanity


ROBUST_SPECS = ["cm", "tm", "gm", "krum", "multi_krum", "cc", "clip",
                {"name": "cm", "bucketing": 2}, {"name": "gm", "bucketing": 2}, {"name": "krum", "bucketing": 2},
                {"name": "tm", "nnm": True}, {"name": "gm", "nnm": True}, {"name": "cc", "nnm": True},
                {"name": "cm", "nnm": True, "bucketing": 2}, {"name": "multi_krum", "nnm": True, "bucketing": 2}]


@pytest.mark.parametrize("outlier", [1e6, INF, -1e30], ids=["1e6", "inf", "-1e30"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_outliers_do_not_move_robust_rules(outlier, dtype):
    m, f, d = 20, 4, 10
    g = torch.Generator().manual_seed(0)
    X = 0.1 * torch.randn(m, d, generator=g, dtype=dtype)
    X[3:3 + f] = outlier
    mean = make_aggregator("mean", m, f)(X)
    assert not bool(torch.isfinite(mean).all()) or float(mean.norm()) > 1e5
    for spec in ROBUST_SPECS:
        agg = make_aggregator(spec, m, f)
        out = agg(X, torch.Generator().manual_seed(1))
        name = spec if isinstance(spec, str) else spec["name"]
        # cc moves at most tau f/m per iteration toward the outliers, clip at most tau f/m in all
        bound = {"cc": 3 * 10.0 * f / m, "clip": 2.0 * f / m}.get(name, 0.0) + 0.5
        assert bool(torch.isfinite(out).all()) and float(out.norm()) < bound, (agg.describe(), out)


def test_huge_finite_rows_are_clipped_not_dropped():
    """A finite row whose squared norm overflows still counts: its clipped version has norm tau."""
    X = torch.zeros(4, 3, dtype=torch.float32)
    X[0] = torch.tensor([1e30, 0.0, 0.0])
    out = make_aggregator({"name": "clip", "tau": 2.0}, 4, 1)(X)
    torch.testing.assert_close(out, torch.tensor([0.5, 0.0, 0.0]))
    cc = make_aggregator({"name": "cc", "tau": 2.0, "L": 1}, 4, 1)(X)
    torch.testing.assert_close(cc, torch.tensor([0.5, 0.0, 0.0]))
    for rule in ("gm", "krum", "multi_krum", "cm", "tm"):
        assert bool(torch.isfinite(make_aggregator(rule, 4, 1)(X)).all()), rule


def test_all_rows_non_finite_do_not_crash():
    X = torch.full((4, 3), INF, dtype=torch.float64)
    X[1] = NAN
    for rule in sorted(AGGREGATORS):
        f = 1
        out = make_aggregator(rule, 4, f)(X)
        assert out.shape == (3,), rule
    assert make_aggregator("clip", 4, 1)(X).tolist() == [0, 0, 0]
    assert bool(torch.isnan(make_aggregator("gm", 4, 1)(X)).all())
    assert bool(torch.isnan(make_aggregator("krum", 4, 1)(X)).all())


# ----------------------------------------------------------------------------------------------
# (4) centered clipping keeps and uses its state


def test_centered_clipping_state():
    g = torch.Generator().manual_seed(3)
    X1, X2, X3_ = (torch.randn(6, 4, generator=g, dtype=torch.float64) + 2 for _ in range(3))
    agg = make_aggregator({"name": "cc", "tau": 0.5, "L": 2}, 6, 2)
    before = set(vars(agg))
    assert agg.state == ("v",) and agg.v is None
    out1 = agg(X1)
    torch.testing.assert_close(out1, torch.from_numpy(bf_cc(X1.numpy(), 0.5, 2)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(agg.v, out1, rtol=0, atol=0)
    out2 = agg(X2)  # starts from out1
    torch.testing.assert_close(out2, torch.from_numpy(bf_cc(X2.numpy(), 0.5, 2, v0=out1.numpy())),
                               rtol=1e-12, atol=1e-12)
    fresh = make_aggregator({"name": "cc", "tau": 0.5, "L": 2}, 6, 2)
    assert not torch.allclose(fresh(X2), out2)  # the state matters
    assert undeclared_state(agg, before) == []
    saved = agg.state_dict()
    resumed = make_aggregator({"name": "cc", "tau": 0.5, "L": 2}, 6, 2)
    resumed.load_state_dict(saved)
    torch.testing.assert_close(resumed(X3_), agg(X3_), rtol=0, atol=0)
    # the returned vector is a copy: changing it leaves the state alone
    out = agg(X1)
    out.zero_()
    assert float(agg.v.abs().sum()) > 0


def test_wrapped_state_is_nested():
    agg = make_aggregator({"name": "cc", "bucketing": 2, "nnm": True}, 8, 1)
    X = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    agg(X, torch.Generator().manual_seed(0))
    bucketing = agg.state_dict()["inner"]
    assert bucketing.state_dict()["inner"].state_dict()["v"] is not None


# ----------------------------------------------------------------------------------------------
# (5) bucketing


def test_bucketing_is_seeded_and_s1_is_the_rule():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(11, 5, generator=g, dtype=torch.float64)
    for rule in ("cm", "gm", "krum", "tm"):
        b = make_aggregator({"name": rule, "bucketing": 2}, 11, 1)
        a1 = b(X, torch.Generator().manual_seed(42))
        a2 = b(X, torch.Generator().manual_seed(42))
        assert torch.equal(a1, a2), rule
        others = [b(X, torch.Generator().manual_seed(s)) for s in range(5)]
        assert any(not torch.equal(a1, o) for o in others), rule
        assert b.inner.n == 6 and b.inner.f == 1  # ceil(11/2) buckets, at most f contaminated
        one = make_aggregator({"name": rule, "bucketing": 1}, 11, 1)(X, torch.Generator().manual_seed(42))
        assert torch.equal(one, make_aggregator(rule, 11, 1)(X)), rule
    torch.manual_seed(0)
    make_aggregator({"name": "cm", "bucketing": 3}, 11, 1)(X)  # no generator: the global one


def test_last_bucket_divided_by_its_real_size():
    X = torch.arange(15, dtype=torch.float64).reshape(5, 3)
    g = torch.Generator().manual_seed(9)
    means = bucket_means(X, 2, g)
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(9))
    assert means.shape == (3, 3)
    torch.testing.assert_close(means[2], X[perm[4]])  # a bucket of one: the row itself
    torch.testing.assert_close(means[0], X[perm[:2]].mean(0))


# ----------------------------------------------------------------------------------------------
# (6) refusals


@pytest.mark.parametrize("spec,n,f,pattern", [
    ("cm", 10, 5, r"aggregator 'cm' needs a strict honest majority.*f <= 4"),
    ("tm", 4, 2, r"aggregator 'tm' needs a strict honest majority"),
    ("gm", 2, 1, r"'gm' needs a strict honest majority"),
    ("cc", 6, 3, r"'cc' needs a strict honest majority"),
    ("krum", 5, 2, r"'krum'.*n >= 2f \+ 2.*f <= 1"),
    ("multi_krum", 7, 3, r"'multi_krum'.*n >= 2f \+ 2"),
    ({"name": "cm", "bucketing": 0}, 10, 1, r"bucket size must be an integer >= 1, got bucketing = 0"),
    ({"name": "cm", "bucketing": 1.5}, 10, 1, r"bucket size must be an integer >= 1"),
    ({"name": "tm", "bucketing": 4}, 20, 3, r"'tm' after bucketing\(s=4\) sees ceil\(n/s\) = 5 .*use bucketing <= 3"),
    ({"name": "krum", "bucketing": 2}, 10, 2, r"'krum' after bucketing\(s=2\).*drop bucketing"),
    ({"name": "gm", "nuu": 0.2}, 10, 1, r"'gm' has no parameter 'nuu'; did you mean 'nu'\?"),
    ({"name": "cc", "tua": 1.0}, 10, 1, r"'cc' has no parameter 'tua'; did you mean 'tau'\?"),
    ({"name": "cm", "buckting": 2}, 10, 1, r"no parameter 'buckting'; did you mean 'bucketing'\?"),
    ("krun", 10, 1, r"unknown aggregator 'krun'; did you mean 'krum'"),
    ("median", 10, 1, r"unknown aggregator 'median'.*available: cc, clip, cm"),
    ({"name": "gm", "T": 0}, 10, 1, r"'gm': T must be an integer >= 1"),
    ({"name": "cc", "tau": -1}, 10, 1, r"'cc': tau must be a positive number"),
    ({"name": "multi_krum", "m_best": 11}, 10, 1, r"m_best must be an integer in \[1, n = 10\]"),
    ({"name": "mean", "nnm": True}, 4, 2, r"nnm: mixing needs a strict honest majority"),
    ({"name": "cm", "nnm": "yes"}, 4, 1, r"nnm must be true or false"),
    ({"T": 3}, 4, 1, r"a name or a mapping with 'name'"),
    ("cm", 0, 0, r"n .* must be an integer >= 1"),
    ("cm", 5, -1, r"f .* must be an integer >= 0"),
])
def test_refusals(spec, n, f, pattern):
    with pytest.raises(ValueError, match=pattern) as e:
        make_aggregator(spec, n, f)
    assert "\n" not in str(e.value)


def test_rules_without_majority_accept_any_f():
    X = torch.ones(4, 2)
    assert make_aggregator("mean", 4, 3)(X).tolist() == [1, 1]
    assert make_aggregator("clip", 4, 4)(X).tolist() == [1, 1]


def test_call_time_refusals():
    with pytest.raises(ValueError, match="built for at most n = 3 vectors, got 4"):
        make_aggregator("cm", 3, 1)(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"needs m > 2f"):
        make_aggregator("tm", 9, 2)(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"at least f \+ 2 = 4"):
        make_aggregator("krum", 9, 2)(torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"\(clients, d\)"):
        make_aggregator("cm", 3, 1)(torch.zeros(3))
    with pytest.raises(ValueError, match="floating-point"):
        make_aggregator("cm", 3, 1)(torch.zeros(3, 2, dtype=torch.long))


def test_describe():
    assert make_aggregator("cm", 5, 1).describe() == "cm"
    assert make_aggregator({"name": "gm", "T": 3}, 5, 1).describe() == "gm(T=3, nu=0.1)"
    assert make_aggregator("krum", 5, 1).describe() == "krum(f=1)"
    assert (make_aggregator({"name": "tm", "bucketing": 2, "nnm": True}, 9, 1).describe()
            == "nnm(f=1)+bucketing(s=2)+tm(f=1)")
    for name, cls in AGGREGATORS.items():
        assert cls.c is None and isinstance(cls.needs_majority, bool), name
    assert not AGGREGATORS["mean"].needs_majority and AGGREGATORS["cm"].needs_majority


def test_bucketing_beyond_the_theorem_runs_with_a_warning_for_rules_that_do_not_use_f():
    """B3's own setting (n = 20, f = 5, s = 2: up to 5 of 10 bucket means Byzantine) runs for cm, gm, cc,
    with a warning; the rule still refuses a Byzantine majority of the clients themselves."""
    with pytest.warns(UserWarning, match="outside the bucketing theorem's range"):
        agg = make_aggregator({"name": "cm", "bucketing": 2}, 20, 5)
    X = torch.zeros(20, 3, dtype=torch.float64)
    X[:5] = 1e6  # the 5 Byzantine rows, in at most 5 of the 10 buckets
    out = agg(X, torch.Generator().manual_seed(0))
    assert out.shape == (3,) and bool(torch.isfinite(out).all())
    assert agg.randomized and agg.bound(9) == 3.0
    with pytest.raises(ValueError, match="strict honest majority"):
        make_aggregator({"name": "cm", "bucketing": 2}, 10, 5)
