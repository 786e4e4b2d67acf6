"""Problems: oracles against autograd, exact constants, x_star and its cache, oracle counting,
reshuffling."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optsim.meter import Meter
from optsim.problems import (PROBLEMS, LeastSquares, LogisticRegression, NonconvexLogisticRegression,
                             Quadratic, Reshuffler, cache_dir)

F64 = torch.float64
LAM = 0.1


# ---- independent reference losses (written from the math, not from the package) -------------

def _ref_loss(kind, Ai, bi, x, lam):
    z = Ai @ x
    if kind in ("logreg", "logreg_nonconvex"):
        data = torch.log1p(torch.exp(-bi * z)).mean()
    else:
        data = 0.5 * ((z - bi) ** 2).mean()
    if kind == "logreg_nonconvex":
        reg = lam * (x**2 / (1 + x**2)).sum()
    else:
        reg = 0.5 * lam * (x**2).sum()
    return data + reg


GLM_CLASSES = [LogisticRegression, NonconvexLogisticRegression, LeastSquares]


def _make(cls, glm_data, lam=LAM, **kw):
    features, labels = glm_data
    return cls(features, labels, lam=lam, **kw)


def _points(n, d, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, d, generator=g, dtype=F64)


def _rel_close(a, b, rel=1e-10):
    return float((a - b).abs().max()) <= rel * max(1.0, float(b.abs().max()))


@pytest.fixture
def quad():
    return Quadratic.generate(4, 5, L=2.0, mu=0.05, heterogeneity=0.3, seed=3)


@pytest.mark.parametrize("cls", GLM_CLASSES, ids=lambda c: c.name)
def test_glm_grads_losses_hessians_vs_autograd(cls, glm_data):
    prob = _make(cls, glm_data)
    features, labels = glm_data
    X = _points(prob.n, prob.d, scale=1.5)
    G, Lo, H = prob.grads(X), prob.losses(X), prob.hessians(X)
    assert G.shape == (3, 4) and Lo.shape == (3,) and H.shape == (3, 4, 4)
    for i in range(prob.n):
        Ai, bi = torch.as_tensor(features[i]), torch.as_tensor(labels[i])
        x = X[i].clone().requires_grad_(True)
        f = _ref_loss(cls.name, Ai, bi, x, LAM)
        (g,) = torch.autograd.grad(f, x)
        assert _rel_close(Lo[i], f.detach())
        assert _rel_close(G[i], g)
        h = torch.autograd.functional.hessian(lambda v: _ref_loss(cls.name, Ai, bi, v, LAM), X[i])
        assert _rel_close(H[i], h)
        assert torch.allclose(H[i], H[i].T, rtol=0, atol=1e-14)


def test_quadratic_oracles_vs_autograd(quad):
    X = _points(quad.n, quad.d, seed=1)
    G, Lo, H = quad.grads(X), quad.losses(X), quad.hessians(X)
    for i in range(quad.n):
        Ai, bi = quad.A[i], quad.b[i]
        ref = lambda v: 0.5 * v @ Ai @ v - bi @ v  # noqa: E731
        x = X[i].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(ref(x), x)
        assert _rel_close(G[i], g) and _rel_close(Lo[i], ref(X[i]))
        assert _rel_close(H[i], torch.autograd.functional.hessian(ref, X[i]))


@pytest.mark.parametrize("cls", GLM_CLASSES, ids=lambda c: c.name)
def test_subset_of_clients(cls, glm_data):
    prob = _make(cls, glm_data)
    X = _points(3, 4, seed=2)
    G = prob.grads(X)
    sub = prob.grads(X[[2, 0, 2]], clients=[2, 0, 2])
    assert torch.allclose(sub, G[[2, 0, 2]], rtol=1e-14, atol=1e-15)
    assert torch.allclose(prob.losses(X[[1]], clients=[1]), prob.losses(X)[[1]], rtol=1e-14)
    assert torch.allclose(prob.full_grad(X[0]), prob.grads(X[0].expand(3, -1)).mean(0), rtol=1e-14)
    assert prob.loss(X[0]) == pytest.approx(float(prob.losses(X[0].expand(3, -1)).mean()), rel=1e-14)
    with pytest.raises(ValueError, match="expected X of shape"):
        prob.grads(X[:2])
    with pytest.raises(ValueError, match="expected X of shape"):
        prob.grads(X, clients=[0, 1])


@pytest.mark.parametrize("cls", GLM_CLASSES, ids=lambda c: c.name)
def test_several_points_per_client(cls, glm_data):
    """Rows that repeat clients (x+ and x of the same clients, in any order) are the clients'
    gradients at their own points, whichever path computes them, and each row is one oracle call."""
    prob = _make(cls, glm_data)
    meter = Meter(3)
    prob.attach(meter)
    X = _points(6, 4, seed=5)
    clients = [2, 0, 1, 0, 2, 1]
    G = prob.grads(X, clients=clients)
    assert prob._spread(torch.tensor(clients)) is not None  # one pass over the data at 2 points per client
    for j, i in enumerate(clients):
        assert _rel_close(G[j], prob.grads(X[[j]], clients=[i])[0], 1e-13)
    assert meter.close_round().oracle["grad"].tolist() == [4.0, 4.0, 4.0]
    assert torch.allclose(prob.grads(X[[0, 4]], clients=[2, 2]), G[[0, 4]], rtol=1e-13)
    prob.attach(None)


@pytest.mark.parametrize("cls", GLM_CLASSES, ids=lambda c: c.name)
def test_sample_grads_all_samples_is_full_gradient(cls, glm_data):
    prob = _make(cls, glm_data)
    X = _points(3, 4, seed=4)
    G = prob.grads(X)
    for i in range(3):
        m = int(prob.m[i])
        idx = torch.arange(m)[None, :]
        assert _rel_close(prob.sample_grads(X[[i]], idx, clients=[i])[0], G[i], 1e-12)
        # and a permutation of the samples gives the same
        assert _rel_close(prob.sample_grads(X[[i]], torch.randperm(m)[None, :], clients=[i])[0], G[i], 1e-12)
    # a single sample j gives the gradient of that sample's loss
    features, labels = glm_data
    x = X[1].clone().requires_grad_(True)
    f = _ref_loss(cls.name, torch.as_tensor(features[1][3:4]), torch.as_tensor(labels[1][3:4]), x, LAM)
    (g,) = torch.autograd.grad(f, x)
    assert _rel_close(prob.sample_grads(X[[1]], torch.tensor([[3]]), clients=[1])[0], g)


@pytest.mark.parametrize("cls", GLM_CLASSES, ids=lambda c: c.name)
def test_minibatch_grads_unbiased(cls, glm_data, gen):
    prob = _make(cls, glm_data)
    x = _points(1, 4, seed=5)[0]
    G = prob.grads(x.expand(3, -1))
    N = 20000
    for i in range(3):
        S = prob.minibatch_grads(x.expand(N, -1), 2, gen, clients=[i] * N)
        mean, se = S.mean(0), S.std(0) / math.sqrt(N)
        assert torch.all((mean - G[i]).abs() <= 5 * se + 1e-12), (i, mean, G[i])
        assert float(se.max()) > 0  # really stochastic


def test_quadratic_minibatch_noise(quad, gen):
    noisy = Quadratic(quad.A, quad.b, noise=0.5)
    x = _points(1, quad.d, seed=6)[0]
    N = 20000
    S = noisy.minibatch_grads(x.expand(N, -1), 4, gen, clients=[1] * N)
    g = noisy.grads(x[None], clients=[1])[0]
    assert torch.all((S.mean(0) - g).abs() <= 5 * 0.25 / math.sqrt(N))
    assert torch.allclose(S.std(0), torch.full((quad.d,), 0.25, dtype=F64), rtol=0.03)
    exact = quad.minibatch_grads(x.expand(2, -1), 4, gen, clients=[1, 1])
    assert torch.equal(exact[0], g) and torch.equal(exact[1], g)


# ---- constants ------------------------------------------------------------------------------

def _gram(F):
    F = np.asarray(F)
    return F.T @ F / F.shape[0]


@pytest.mark.parametrize("cls,curv,reg", [(LogisticRegression, 0.25, LAM),
                                          (NonconvexLogisticRegression, 0.25, 2 * LAM),
                                          (LeastSquares, 1.0, LAM)], ids=lambda v: getattr(v, "name", str(v)))
def test_glm_constants_from_data(cls, curv, reg, glm_data):
    prob = _make(cls, glm_data)
    features, _ = glm_data
    grams = [_gram(F) for F in features]
    L_i = np.array([curv * np.linalg.eigvalsh(G)[-1] + reg for G in grams])
    assert np.allclose(prob.L_i.numpy(), L_i, rtol=1e-12)
    assert prob.L_i.dtype == F64
    L = curv * np.linalg.eigvalsh(np.mean(grams, 0))[-1] + reg
    assert prob.L == pytest.approx(L, rel=1e-12)
    assert prob.L_max == pytest.approx(L_i.max(), rel=1e-12)
    assert prob.L_tilde == pytest.approx(math.sqrt(np.mean(L_i**2)), rel=1e-12)
    assert prob.L <= prob.L_max * (1 + 1e-12)
    if cls is LeastSquares:
        assert prob.mu == pytest.approx(np.linalg.eigvalsh(np.mean(grams, 0))[0] + LAM, rel=1e-12)
    elif cls is LogisticRegression:
        assert prob.mu == LAM
    else:
        assert prob.mu is None and not prob.convex


@pytest.mark.parametrize("cls", GLM_CLASSES, ids=lambda c: c.name)
def test_hessians_bounded_by_constants(cls, glm_data):
    """The true Hessians at random points: |eig(H_i(x))| <= L_i, and for f: mu <= eig(H(x)) <= L."""
    prob = _make(cls, glm_data)
    for seed in range(5):
        X = _points(3, 4, seed=10 + seed, scale=[0.1, 1.0, 3.0, 0.0, 0.5][seed])
        H = prob.hessians(X)
        ev = torch.linalg.eigvalsh(H)
        assert torch.all(ev.abs().amax(1) <= prob.L_i * (1 + 1e-12))
        Hf = prob.full_hessian(X[0])
        evf = torch.linalg.eigvalsh(Hf)
        assert float(evf.abs().max()) <= prob.L * (1 + 1e-12)
        if prob.mu is not None:
            assert float(evf.min()) >= prob.mu * (1 - 1e-12)
    if cls is not NonconvexLogisticRegression:
        # L_i of the logistic loss is attained at x = 0 (sigma'(0) = 1/4); least squares everywhere
        ev0 = torch.linalg.eigvalsh(prob.hessians(torch.zeros(3, 4, dtype=F64)))[:, -1]
        assert torch.allclose(ev0, prob.L_i, rtol=1e-12)


def test_least_squares_constants_are_hessian_eigenvalues(glm_data):
    prob = _make(LeastSquares, glm_data, lam=0.0)
    H = prob.hessians(_points(3, 4))
    assert torch.allclose(torch.linalg.eigvalsh(H)[:, -1], prob.L_i, rtol=1e-12)
    evf = torch.linalg.eigvalsh(H.mean(0))
    assert prob.L == pytest.approx(float(evf[-1]), rel=1e-12)
    assert prob.mu == pytest.approx(float(evf[0]), rel=1e-10)
    assert prob.kappa == pytest.approx(prob.L / prob.mu)


def test_quadratic_constants(quad):
    ev = torch.linalg.eigvalsh(quad.A)
    assert torch.allclose(quad.L_i, ev[:, -1], rtol=1e-14)
    assert not torch.allclose(quad.A[0], quad.A[1])  # heterogeneous Hessians
    assert torch.all(ev > 0)


@pytest.mark.parametrize("L,mu,h", [(1.0, 1e-2, 0.0), (2.0, 0.05, 0.3), (3.7, 0.013, 0.49), (10.0, 10.0, 0.2),
                                    (1e3, 1e-4, 0.1)])
def test_quadratic_generate_exact_constants(L, mu, h):
    q = Quadratic.generate(6, 7, L=L, mu=mu, heterogeneity=h, seed=1)
    assert q.L == pytest.approx(L, rel=1e-12)
    assert q.mu == pytest.approx(mu, rel=1e-12)
    evf = torch.linalg.eigvalsh(q.A.mean(0))
    assert float(evf[0]) == pytest.approx(mu, rel=1e-12) and float(evf[-1]) == pytest.approx(L, rel=1e-12)


def test_quadratic_generate_seeded_and_errors():
    a, b, c = (Quadratic.generate(3, 4, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.A, b.A) and torch.equal(a.b, b.b)
    assert not torch.equal(a.A, c.A)
    with pytest.raises(ValueError, match="0 < mu <= L"):
        Quadratic.generate(3, 4, L=1.0, mu=2.0)
    with pytest.raises(ValueError, match="0 < mu <= L"):
        Quadratic.generate(3, 4, L=1.0, mu=0.0)
    with pytest.raises(ValueError, match="heterogeneity"):
        Quadratic.generate(3, 4, heterogeneity=0.5)


# ---- x_star and its cache -------------------------------------------------------------------

def _problems(glm_data):
    return [_make(LogisticRegression, glm_data), _make(LeastSquares, glm_data, lam=0.0),
            _make(LeastSquares, glm_data, lam=1e-3),
            Quadratic.generate(4, 5, L=1.0, mu=1e-3, heterogeneity=0.4, seed=2)]


def test_x_star_is_stationary(glm_data):
    for prob in _problems(glm_data):
        assert prob.convex
        x = prob.x_star
        assert x.shape == (prob.d,) and x.dtype == F64
        assert float(prob.full_grad(x).norm()) <= 1e-12, prob.name
        assert prob.f_star == pytest.approx(prob.loss(x), rel=1e-14, abs=1e-15)
        # a minimum: nearby points are not better
        for s in range(3):
            assert prob.loss(x + 1e-3 * _points(1, prob.d, seed=s)[0]) >= prob.f_star


def test_nonconvex_and_unregularized_logreg_have_no_x_star(glm_data):
    assert _make(NonconvexLogisticRegression, glm_data).x_star is None
    p = _make(LogisticRegression, glm_data, lam=0.0)
    assert p.x_star is None and p.f_star is None and p.mu is None


def test_solution_cache_written_and_reused(glm_data, isolated_dirs, monkeypatch):
    assert cache_dir() == isolated_dirs["cache"]
    p1 = _make(LogisticRegression, glm_data)
    x1, f1 = p1.x_star, p1.f_star
    files = list(isolated_dirs["cache"].iterdir())
    assert [f.name for f in files] == [f"{p1.fingerprint}.npz"]

    def boom(self, *a, **k):
        raise AssertionError("solve() called although the solution is cached")

    monkeypatch.setattr(LogisticRegression, "solve", boom)
    p2 = _make(LogisticRegression, glm_data)  # same data, new instance
    assert p2.fingerprint == p1.fingerprint
    assert torch.equal(p2.x_star, x1) and p2.f_star == f1
    # different data or lambda: a different key, so it is solved (and here refuses)
    p3 = _make(LogisticRegression, glm_data, lam=2 * LAM)
    assert p3.fingerprint != p1.fingerprint
    with pytest.raises(AssertionError, match="solve"):
        p3.x_star
    features, labels = glm_data
    p4 = LogisticRegression([f * 1.0001 for f in features], labels, lam=LAM)
    assert p4.fingerprint != p1.fingerprint
    assert LeastSquares(features, labels, lam=LAM).fingerprint != p1.fingerprint


def test_quadratic_cache_reused(monkeypatch, isolated_dirs):
    q1 = Quadratic.generate(3, 4, seed=5)
    x1 = q1.x_star
    monkeypatch.setattr(Quadratic, "solve", lambda self, *a, **k: (_ for _ in ()).throw(AssertionError("solve")))
    assert torch.equal(Quadratic.generate(3, 4, seed=5).x_star, x1)
    assert len(list(isolated_dirs["cache"].glob("*.npz"))) == 1


def test_corrupt_cache_entry_is_resolved(glm_data, isolated_dirs):
    p1 = _make(LogisticRegression, glm_data)
    path = isolated_dirs["cache"] / f"{p1.fingerprint}.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz file")
    assert float(p1.full_grad(p1.x_star).norm()) <= 1e-12
    with np.load(path) as z:
        assert np.array_equal(z["x"], p1.x_star.numpy())


def test_float32_problem_gets_float64_solution(glm_data):
    p32 = _make(LogisticRegression, glm_data, dtype=torch.float32)
    p64 = _make(LogisticRegression, glm_data)
    assert p32.x_star.dtype == torch.float32
    assert torch.allclose(p32.x_star.double(), p64.x_star, rtol=1e-6, atol=1e-7)
    assert p32.f_star == pytest.approx(p64.f_star, rel=1e-6)
    assert p32.grads(torch.zeros(3, 4)).dtype == torch.float32


# ---- oracle counting ------------------------------------------------------------------------

def test_meter_counts_oracle_calls(glm_data, gen):
    prob = _make(LogisticRegression, glm_data)
    meter = Meter(prob.n)
    assert prob.attach(meter) is prob
    X = _points(3, 4)
    prob.grads(X)
    prob.grads(X[[0, 2]], clients=[0, 2])
    prob.grads(X[[1]], clients=torch.tensor([1]))
    prob.losses(X[[2]], clients=[2])
    prob.hessians(X[[0]], clients=[0])
    prob.loss(X[0]), prob.full_grad(X[0]), prob.full_hessian(X[0])  # metrics are not counted
    u = meter.close_round()
    assert u.oracle["grad"].tolist() == [2.0, 2.0, 2.0]
    assert u.oracle["func"].tolist() == [0.0, 0.0, 1.0]
    assert u.oracle["hess"].tolist() == [1.0, 0.0, 0.0]
    # a minibatch of b out of m_i samples counts b / m_i (m = 7, 5, 9)
    prob.minibatch_grads(X, 2, gen)
    prob.sample_grads(X[[1, 1]], torch.tensor([[0, 1, 2], [3, 4, 0]]), clients=[1, 1])
    u = meter.close_round()
    assert torch.allclose(u.oracle["grad"], torch.tensor([2 / 7, 2 / 5 + 2 * 3 / 5, 2 / 9], dtype=F64), rtol=1e-14)
    assert torch.allclose(meter.oracle["grad"], torch.tensor([2 + 2 / 7, 2 + 2 / 5 + 6 / 5, 2 + 2 / 9], dtype=F64))
    prob.attach(None)
    prob.grads(X)
    assert meter.close_round().oracle["grad"].sum() == 0


def test_meter_counts_quadratic(quad, gen):
    meter = Meter(quad.n)
    quad.attach(meter)
    quad.grads(_points(2, quad.d), clients=[0, 3])
    quad.minibatch_grads(_points(1, quad.d), 8, gen, clients=[2])
    assert meter.close_round().oracle["grad"].tolist() == [1.0, 0.0, 1.0, 1.0]


# ---- reshuffling ----------------------------------------------------------------------------

@pytest.mark.parametrize("b", [1, 2, 3])
def test_reshuffler_visits_every_sample_once_per_epoch(glm_data, b):
    """m = (7, 5, 9): per client, each epoch is floor(m_i / b) batches of distinct samples; when b
    divides m_i every sample is visited exactly once per epoch."""
    features, labels = glm_data
    prob = LeastSquares(features, labels)
    g = torch.Generator().manual_seed(0)
    rs = Reshuffler(prob, b, g)
    m = prob.m.tolist()
    steps = rs.steps_per_epoch.tolist()
    assert steps == [mi // b for mi in m]
    seq = [[] for _ in m]
    T = 4 * max(m)
    for t in range(T):
        idx = rs.next()
        assert idx.shape == (3, b)
        for i in range(3):
            seq[i].append(idx[i].tolist())
            assert bool(rs.epoch_done[i]) == ((t + 1) % steps[i] == 0)
    for i, mi in enumerate(m):
        epochs = [sum(seq[i][e * steps[i]:(e + 1) * steps[i]], []) for e in range(T // steps[i])]
        assert len(epochs) >= 4
        for ep in epochs:
            assert len(ep) == steps[i] * b and len(set(ep)) == len(ep) and all(0 <= j < mi for j in ep)
            if mi % b == 0:
                assert sorted(ep) == list(range(mi))
        assert len({tuple(ep) for ep in epochs}) > 1  # reshuffled between epochs


def test_reshuffler_errors(glm_data):
    prob = LeastSquares(*glm_data)
    with pytest.raises(ValueError, match="batch_size"):
        Reshuffler(prob, 6, torch.Generator())  # smallest client has 5 samples
    with pytest.raises(ValueError, match="batch_size"):
        Reshuffler(prob, 0, torch.Generator())


def test_problem_registry_and_errors(glm_data):
    assert {"logreg", "logreg_nonconvex", "least_squares", "quadratic"} <= set(PROBLEMS)
    with pytest.raises(ValueError, match="lambda"):
        _make(LogisticRegression, glm_data, lam=-1.0)
    with pytest.raises(ValueError, match="quadratic"):
        Quadratic(torch.zeros(2, 3, 3), torch.zeros(2, 4))
