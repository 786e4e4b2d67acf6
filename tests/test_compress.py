"""Compressors: unbiasedness and variance (omega), contraction (alpha), exact bits, errors."""
from __future__ import annotations

import math

import pytest
import torch

from optsim.compress import COMPRESSORS, Message, make_compressor
from optsim.compress.base import index_bits

D = 12
N_DRAWS = 20000


def _x(d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=g, dtype=torch.float64)


def _draws(comp, x, gen, N=N_DRAWS):
    """N independent draws of C(x), one per row (all rows hold x)."""
    return comp(x.expand(N, -1).clone(), gen).values


def _draws_perm(comp, x, gen, N=N_DRAWS // 4):
    """Draws of a correlated compressor: one call per draw over all n clients holding x.
    Returns (N, n, d)."""
    X = x.expand(comp.n, -1).clone()
    return torch.stack([comp(X, gen).values for _ in range(N)])


def _assert_unbiased(V, x):
    """Mean of the draws (rows of V) equals x within 5 standard errors per coordinate."""
    mean = V.mean(0)
    se = V.std(0) / math.sqrt(V.shape[0])
    assert torch.all((mean - x).abs() <= 5 * se + 1e-12), (mean, x, se)


UNBIASED = [
    ("identity", "identity"),
    ("rand_k1", {"name": "rand_k", "k": 1}),
    ("rand_k4", {"name": "rand_k", "k": 4}),
    ("natural", "natural"),
    ("qsgd1", {"name": "qsgd", "s": 1}),
    ("qsgd2", {"name": "qsgd", "s": 2}),
    ("qsgd4", {"name": "qsgd", "s": 4}),
    ("qsgd16", {"name": "qsgd", "s": 16}),
    ("bernoulli_identity", {"name": "bernoulli", "p": 0.3}),
    ("bernoulli_randk", {"name": "bernoulli", "p": 0.5, "inner": {"name": "rand_k", "k": 3}}),
    ("natural_randk", ["natural", {"name": "rand_k", "k": 3}]),
    ("qsgd_randk", [{"name": "qsgd", "s": 2}, {"name": "rand_k", "k": 6}]),
]


@pytest.mark.parametrize("spec", [s for _, s in UNBIASED], ids=[i for i, _ in UNBIASED])
def test_unbiased_mean_and_variance(spec, gen):
    comp = make_compressor(spec, D)
    assert comp.unbiased and comp.omega is not None
    x = _x()
    V = _draws(comp, x, gen)
    _assert_unbiased(V, x)
    err = (V - x).pow(2).sum(1)
    emp = float(err.mean())
    se = float(err.std()) / math.sqrt(N_DRAWS)
    bound = comp.omega * float(x.pow(2).sum())
    assert emp <= bound * 1.01 + 4 * se + 1e-12, (emp, bound)


@pytest.mark.parametrize("spec,omega", [
    ({"name": "rand_k", "k": 3}, D / 3 - 1),
    ({"name": "bernoulli", "p": 0.25}, 3.0),
    ({"name": "bernoulli", "p": 0.5, "inner": {"name": "rand_k", "k": 4}}, 2 * D / 4 - 1),
    (["natural", {"name": "rand_k", "k": 3}], (1 + 1 / 8) * D / 3 - 1),
    ({"name": "qsgd", "s": 2}, min(D / 4, math.sqrt(D) / 2)),
])
def test_omega_values_and_tightness(spec, omega, gen):
    """omega is the documented formula; for rand_k and Bernoulli(identity) the bound is an equality."""
    comp = make_compressor(spec, D)
    assert comp.omega == pytest.approx(omega, rel=1e-12)
    if isinstance(spec, dict) and spec["name"] in ("rand_k", "bernoulli"):
        x = _x(seed=3)
        err = (_draws(comp, x, gen) - x).pow(2).sum(1)
        ratio = float(err.mean()) / float(x.pow(2).sum())
        assert ratio == pytest.approx(omega, rel=0.05)


def test_natural_rounds_to_powers_of_two(gen):
    comp = make_compressor("natural", 6)
    X = torch.tensor([[0.0, 1.0, -2.0, 0.75, -3.0, 1e-3]], dtype=torch.float64).expand(1000, -1).clone()
    V = comp(X, gen).values
    assert torch.all(V[:, 0] == 0)
    assert torch.all(V[:, 1] == 1) and torch.all(V[:, 2] == -2)  # powers of two are kept exactly
    assert set(V[:, 3].tolist()) == {0.5, 1.0}
    assert set(V[:, 4].tolist()) == {-2.0, -4.0}
    mant, _ = torch.frexp(V[:, 5].abs())
    assert torch.all(mant == 0.5) and torch.all(V[:, 5] > 0)


def test_rand_k_support(gen):
    comp = make_compressor({"name": "rand_k", "k": 5}, D)
    X = torch.randn(300, D, generator=gen, dtype=torch.float64)
    V = comp(X, gen).values
    nz = V != 0
    assert torch.all(nz.sum(1) == 5)
    assert torch.allclose(V[nz], X[nz] * D / 5, rtol=1e-15, atol=0)
    # composed with a quantizer: the same support size, values are signed powers of two
    comp = make_compressor(["natural", {"name": "rand_k", "k": 5}], D)
    V = comp(X, gen).values
    assert torch.all((V != 0).sum(1) == 5)
    assert torch.all(torch.frexp(V[V != 0].abs())[0] == 0.5)
    assert torch.all(torch.sign(V[V != 0]) == torch.sign(X[V != 0]))


# ---- perm_k ---------------------------------------------------------------------------------

@pytest.mark.parametrize("d,n", [(12, 3), (12, 4), (12, 12), (4, 8)])
def test_perm_k_mean_over_clients_is_exact(d, n, gen):
    comp = make_compressor("perm_k", d, n=n)
    x = _x(d, seed=1)
    X = x.expand(n, -1).clone()
    for _ in range(20):
        V = comp(X, gen).values
        assert torch.allclose(V.mean(0), x, rtol=1e-14, atol=1e-15)
        nz = (V != 0).sum(1)
        assert torch.all(nz == (d // n if d >= n else 1))
        if d >= n:  # the clients' supports partition the coordinates
            assert torch.all((V != 0).sum(0) == 1)


@pytest.mark.parametrize("d,n", [(12, 3), (4, 8)])
def test_perm_k_each_client_unbiased(d, n, gen):
    comp = make_compressor("perm_k", d, n=n)
    assert comp.unbiased and comp.omega == min(d, n) - 1
    x = _x(d, seed=2)
    V = _draws_perm(comp, x, gen)  # (N, n, d)
    for i in range(n):
        _assert_unbiased(V[:, i], x)
        emp = float((V[:, i] - x).pow(2).sum(1).mean())
        assert emp == pytest.approx(comp.omega * float(x.pow(2).sum()), rel=0.06)


def test_perm_k_subset_of_clients(gen):
    comp = make_compressor("perm_k", 12, n=4)
    x = _x(12)
    V = comp(x.expand(2, -1).clone(), gen, clients=[1, 3]).values
    assert torch.all((V != 0).sum(1) == 3)
    with pytest.raises(ValueError, match="clients"):
        comp(x.expand(2, -1).clone(), gen)


# ---- contractive ----------------------------------------------------------------------------

def test_top_k_contraction_and_selection(gen):
    k = 4
    comp = make_compressor({"name": "top_k", "k": k}, D)
    assert comp.alpha == k / D and not comp.unbiased
    X = torch.randn(2000, D, generator=gen, dtype=torch.float64) * torch.rand(2000, D, generator=gen, dtype=torch.float64)
    V = comp(X, gen).values
    err = (V - X).pow(2).sum(1)
    assert torch.all(err <= (1 - comp.alpha) * X.pow(2).sum(1) + 1e-12)
    # the kept coordinates are exactly the k largest in magnitude, unchanged
    kept = V != 0
    assert torch.all(kept.sum(1) == k)
    assert torch.equal(V[kept], X[kept])
    thresh = X.abs().sort(1, descending=True).values[:, k - 1 : k]
    assert torch.all(X.abs()[kept.logical_not()].reshape(2000, D - k) <= thresh)


def test_scaled_sign_contraction(gen):
    comp = make_compressor("scaled_sign", D)
    assert comp.alpha == 1 / D
    X = torch.randn(2000, D, generator=gen, dtype=torch.float64)
    X[:5] = 0.0
    X[5] = torch.zeros(D, dtype=torch.float64).index_fill_(0, torch.tensor([3]), 2.0)  # worst case: one spike
    V = comp(X, gen).values
    err = (V - X).pow(2).sum(1)
    assert torch.all(err <= (1 - comp.alpha) * X.pow(2).sum(1) + 1e-12)
    # ||C(x) - x||^2 = ||x||^2 - 2 ||x||_1^2 / d + nnz(x) ||x||_1^2 / d^2
    l1, nnz = X.abs().sum(1), (X != 0).sum(1)
    assert torch.allclose(err, X.pow(2).sum(1) - 2 * l1**2 / D + nnz * l1**2 / D**2, rtol=1e-12, atol=1e-14)
    # near a spike the ratio approaches 1 - 1/d: alpha = 1/d cannot be improved
    spike = torch.full((1, D), 1e-4, dtype=torch.float64)
    spike[0, 0] = 1.0
    e = (comp(spike, gen).values - spike).pow(2).sum() / spike.pow(2).sum()
    assert float(e) == pytest.approx(1 - 1 / D, rel=1e-2)
    assert torch.all(V[:5] == 0)


@pytest.mark.parametrize("spec,alpha", [
    ({"name": "rand_k", "k": 3, "scaled": False}, 3 / D),
    ({"name": "bernoulli", "p": 0.4, "scaled": False, "inner": {"name": "top_k", "k": 3}}, 0.4 * 3 / D),
    ({"name": "bernoulli", "p": 0.7, "scaled": False}, 0.7),
])
def test_random_contractive_in_expectation(spec, alpha, gen):
    comp = make_compressor(spec, D)
    assert not comp.unbiased and comp.omega is None
    assert comp.alpha == pytest.approx(alpha, rel=1e-12)
    for seed in range(3):
        x = _x(seed=seed)
        err = (_draws(comp, x, gen) - x).pow(2).sum(1)
        se = float(err.std()) / math.sqrt(N_DRAWS)
        assert float(err.mean()) <= (1 - comp.alpha) * float(x.pow(2).sum()) * 1.005 + 4 * se


def test_rand_k_unscaled_keeps_values(gen):
    comp = make_compressor({"name": "rand_k", "k": 3, "scaled": False}, D)
    X = torch.randn(50, D, generator=gen, dtype=torch.float64)
    V = comp(X, gen).values
    nz = V != 0
    assert torch.all(nz.sum(1) == 3) and torch.equal(V[nz], X[nz])


# ---- bits -----------------------------------------------------------------------------------

def _bits(spec, d, n=1, float_bits=32, m=None, gen=None):
    comp = make_compressor(spec, d, n=n, float_bits=float_bits)
    m = comp.n if spec == "perm_k" else (m or 3)
    X = torch.randn(m, d, dtype=torch.float64)
    msg = comp(X, gen)
    assert isinstance(msg, Message) and msg.bits.shape == (m,) and msg.bits.dtype == torch.float64
    return msg.bits


@pytest.mark.parametrize("b", [32, 64])
@pytest.mark.parametrize("d", [64, 100])
def test_bits_formulas(b, d, gen):
    idx = math.ceil(math.log2(d))
    k = 5
    cases = {
        "identity": d * b,
        "top_k": k * (b + idx),
        "rand_k": k * (b + idx),
        "rand_k_unscaled": k * (b + idx),
        "natural": 9 * d,
        "sign": d,
        "scaled_sign": b + d,
        "qsgd1": b + d * 2,
        "qsgd3": b + d * 3,
        "qsgd4": b + d * 4,
        "qsgd255": b + d * 9,
        "natural_randk": k * idx + 9 * k,
        "qsgd_topk": k * idx + b + k * (1 + 2),
        "sign_topk": k * idx + k,
        "identity_randk": k * (idx + b),
    }
    specs = {
        "identity": "identity", "top_k": {"name": "top_k", "k": k}, "rand_k": {"name": "rand_k", "k": k},
        "rand_k_unscaled": {"name": "rand_k", "k": k, "scaled": False}, "natural": "natural",
        "sign": "sign", "scaled_sign": "scaled_sign", "qsgd1": {"name": "qsgd", "s": 1},
        "qsgd3": {"name": "qsgd", "s": 3}, "qsgd4": {"name": "qsgd", "s": 4},
        "qsgd255": {"name": "qsgd", "s": 255},
        "natural_randk": ["natural", {"name": "rand_k", "k": k}],
        "qsgd_topk": [{"name": "qsgd", "s": 2}, {"name": "top_k", "k": k}],
        "sign_topk": ["sign", {"name": "top_k", "k": k}],
        "identity_randk": ["identity", {"name": "rand_k", "k": k}],
    }
    for name, expected in cases.items():
        bits = _bits(specs[name], d, float_bits=b, gen=gen)
        assert torch.all(bits == expected), (name, bits, expected)


@pytest.mark.parametrize("b", [32, 64])
def test_perm_k_bits(b, gen):
    assert torch.all(_bits("perm_k", 100, n=4, float_bits=b, gen=gen) == 25 * (b + 7))
    assert torch.all(_bits("perm_k", 4, n=8, float_bits=b, gen=gen) == 1 * (b + 2))


def test_index_bits():
    assert [index_bits(d) for d in (1, 2, 3, 4, 5, 64, 65, 1024, 1025)] == [0, 1, 2, 2, 3, 6, 7, 10, 11]


@pytest.mark.parametrize("b", [32, 64])
def test_bernoulli_bits_zero_when_silent(b, gen):
    p, d, m = 0.3, 16, 4000
    comp = make_compressor({"name": "bernoulli", "p": p, "inner": {"name": "top_k", "k": 2}}, d, float_bits=b)
    X = torch.randn(m, d, generator=gen, dtype=torch.float64)
    msg = comp(X, gen)
    sent = msg.bits > 0
    assert torch.all(msg.bits[sent] == 2 * (b + 4))
    assert torch.all(msg.bits[~sent] == 0)
    assert torch.all(msg.values[~sent] == 0) and torch.all((msg.values[sent] != 0).sum(1) == 2)
    assert torch.allclose(msg.values[sent][msg.values[sent] != 0] * p,
                          X[sent][msg.values[sent] != 0], rtol=1e-14)  # scaled by 1/p
    frac = float(sent.double().mean())
    assert abs(frac - p) <= 5 * math.sqrt(p * (1 - p) / m)


# ---- errors and the registry ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["rand_k", "top_k"])
def test_k_errors(name):
    with pytest.raises(ValueError, match=r"k = 11 but the dimension is d = 10"):
        make_compressor({"name": name, "k": 11}, 10)
    with pytest.raises(ValueError, match="1 <= k <= d"):
        make_compressor({"name": name, "k": 0}, 10)
    with pytest.raises(ValueError, match="integer"):
        make_compressor({"name": name, "k": 2.5}, 10)
    with pytest.raises(ValueError, match=f"compressor '{name}' needs k"):
        make_compressor(name, 10)  # k has no default: a bare name is refused
    assert make_compressor({"name": name, "k": 10}, 10).k == 10  # k = d is allowed


def test_unknown_compressor_lists_close_matches():
    with pytest.raises(ValueError) as e:
        make_compressor("topk", 10)
    msg = str(e.value)
    assert "unknown compressor 'topk'" in msg and "did you mean 'top_k'" in msg
    for name in COMPRESSORS:
        assert name in msg  # the available ones are listed


def test_unknown_parameter():
    with pytest.raises(ValueError, match=r"has no parameter 'kk'; did you mean 'k'"):
        make_compressor({"name": "rand_k", "kk": 3}, 10)
    with pytest.raises(ValueError, match="has no parameter 'k'"):
        make_compressor({"name": "natural", "k": 3}, 10)


def test_perm_k_divisibility_errors():
    with pytest.raises(ValueError, match="divisible"):
        make_compressor("perm_k", 10, n=3)
    with pytest.raises(ValueError, match="divisible"):
        make_compressor("perm_k", 4, n=6)


@pytest.mark.parametrize("spec", [{"name": "bernoulli", "p": 0.0}, {"name": "bernoulli", "p": 1.5},
                                  {"name": "qsgd", "s": 0}, ["natural", "natural"], ["rand_k", {"name": "top_k", "k": 2}]])
def test_invalid_parameters(spec):
    with pytest.raises(ValueError):
        make_compressor(spec, 10)


def test_input_shape_checked(gen):
    comp = make_compressor("natural", 5)
    with pytest.raises(ValueError, match=r"expected \(clients, 5\)"):
        comp(torch.zeros(3, 4, dtype=torch.float64), gen)
    with pytest.raises(ValueError):
        comp(torch.zeros(5, dtype=torch.float64), gen)


def test_same_generator_state_same_output():
    comp = make_compressor({"name": "rand_k", "k": 2}, 8)
    X = torch.randn(6, 8, dtype=torch.float64)
    a = comp(X, torch.Generator().manual_seed(5)).values
    b = comp(X, torch.Generator().manual_seed(5)).values
    c = comp(X, torch.Generator().manual_seed(6)).values
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_zero_rows_compress_to_zero(gen):
    for spec in ("identity", "natural", {"name": "qsgd", "s": 3}, "scaled_sign", {"name": "top_k", "k": 2},
                 {"name": "rand_k", "k": 2}, ["natural", {"name": "rand_k", "k": 2}]):
        V = make_compressor(spec, 6)(torch.zeros(4, 6, dtype=torch.float64), gen).values
        assert torch.all(V == 0) and not torch.isnan(V).any(), spec


def test_float32_inputs_keep_dtype(gen):
    for spec in ("natural", {"name": "qsgd", "s": 2}, {"name": "rand_k", "k": 3}, "scaled_sign"):
        X = torch.randn(5, 8, dtype=torch.float32)
        assert make_compressor(spec, 8)(X, gen).values.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 5, 17, 40])
def test_largest_k_selects_what_topk_selects(dtype, k):
    from optsim.compress.operators import largest_k

    g = torch.Generator().manual_seed(k)
    V = torch.randn(30, 40, generator=g, dtype=dtype)
    got = largest_k(V, k)
    assert got.shape == (30, k) and got.dtype == torch.long
    want = V.topk(k, dim=1).indices
    assert torch.equal(got.sort(1).values, want.sort(1).values)


@pytest.mark.parametrize("d,k", [(7, 3), (300, 4)])  # int32 keys (d <= 256) and int64 keys
def test_random_k_mask_is_a_uniform_k_subset(d, k):
    """Exactly k coordinates per row; every coordinate kept with probability k/d and, for d = 7, every
    pair with k(k-1)/(d(d-1)) (frequencies within 5 standard deviations over 40,000 rows)."""
    from optsim.compress.operators import random_k_mask

    g = torch.Generator().manual_seed(3)
    rows = 40_000
    M = random_k_mask(rows, d, k, g)
    assert M.shape == (rows, d) and M.dtype == torch.bool and torch.all(M.sum(1) == k)
    p = k / d
    freq = M.double().mean(0)
    assert torch.all((freq - p).abs() < 5 * math.sqrt(p * (1 - p) / rows))
    if d == 7:
        F = M.double()
        pairs = (F.T @ F / rows)[~torch.eye(d, dtype=torch.bool)]
        q = k * (k - 1) / (d * (d - 1))
        assert torch.all((pairs - q).abs() < 5 * math.sqrt(q * (1 - q) / rows))
    assert not torch.equal(M[:100], random_k_mask(100, d, k, g))  # fresh draws


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_largest_k_mask_with_ties_and_nan(dtype):
    """Exactly k per row whatever the ties; the kept entries are the k largest (NaN first, as
    np.argpartition orders it)."""
    from optsim.compress.operators import largest_k_mask

    g = torch.Generator().manual_seed(0)
    V = torch.randn(12, 30, generator=g, dtype=dtype).abs()
    V[0] = 1.0                      # all tied
    V[1, :25] = 0.0                 # fewer than k nonzeros: ties at 0
    V[2, 3] = float("nan")          # one NaN
    V[3, :8] = float("nan")         # more NaN than k
    V[4, ::2] = 2.0                 # ties straddling the threshold
    for k in (1, 6, 29):
        M = largest_k_mask(V, k)
        assert torch.all(M.sum(1) == k)
        key = V.nan_to_num(float("inf"))
        kept = torch.where(M, key, -1.0).sort(1, descending=True).values[:, :k]
        assert torch.equal(kept, key.topk(k, dim=1).values)
    assert torch.equal(largest_k_mask(V[5:], 4), largest_k_mask(V[5:].clone(), 4))


@pytest.mark.parametrize("spec", [{"name": "rand_k", "k": 3}, {"name": "top_k", "k": 3}, {"name": "natural"},
                                  {"name": "qsgd", "s": 4}], ids=lambda s: s["name"])
def test_compress_replicas_equals_each_replica_with_its_generator(spec):
    from optsim.rng import generator

    comp = make_compressor(spec, 12, 5)
    X = torch.randn(4, 5, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    gens = [generator(seed, "compressor") for seed in range(4)]
    stacked = comp.compress_replicas(X, gens if comp.randomized else None)
    for r in range(4):
        one = comp(X[r], generator(r, "compressor"))
        assert torch.equal(stacked.values[r], one.values)
        assert torch.equal(stacked.bits, one.bits)


def test_mask_selection_off_the_numpy_path_agrees():
    """Inputs numpy cannot take (here: requiring grad; on a GPU the same path) select with torch:
    the same top-k set as the numpy path, and the kept values carry the gradient."""
    from optsim.compress.operators import _keep, largest_k_mask

    g = torch.Generator().manual_seed(1)
    V = torch.randn(20, 31, generator=g, dtype=torch.float64)
    W = V.clone().requires_grad_()
    for k in (1, 7, 30):
        assert torch.equal(largest_k_mask(W.abs(), k), largest_k_mask(V.abs(), k))
    out = _keep(W, largest_k_mask(W.detach().abs(), 7), 2.0)
    out.sum().backward()
    assert torch.equal(W.grad, 2.0 * largest_k_mask(V.abs(), 7).double())
