"""The Stiefel manifold St(n, p) with the embedded metric (polar retraction, its inverse, projection
vector transport) and PCA on it (StiefelPCA): the retraction's defining properties, exactness of the
inverse, the curvature bound, the p = 1 reduction to the sphere, the problem's gradients and
constants, and the Riemannian methods' convergence with iterates on the manifold."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optsim.manifolds import SPD, Euclidean, Sphere, Stiefel
from optsim.problems.riemannian import SpherePCA, StiefelPCA

from _methods import session_iterates


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(params=[(7, 3), (5, 1), (4, 4), (9, 2)], ids=lambda s: f"St{s}")
def batch(request):
    """St(n, p) with a (4, 3) batch of points x and tangents u (norm ~ 1), v at x."""
    n, p = request.param
    M, g = Stiefel(n, p), _gen(sum(request.param))
    x = M.random_point(4, 3, generator=g)
    u = M.random_tangent(x, g)
    u = u / M.norm(x, u).unsqueeze(-1) * torch.rand(4, 3, 1, generator=g, dtype=torch.float64)
    return M, x, u, M.random_tangent(x, g)


def _tangency(M, x, u):
    """||X^T U + U^T X||_F (0 for tangent U)."""
    X, U = M.mat(x), M.mat(u)
    A = X.transpose(-1, -2) @ U
    return float(torch.linalg.matrix_norm(A + A.transpose(-1, -2)).max())


# ---- the manifold ---------------------------------------------------------------------------------
def test_random_points_and_projection(batch):
    M, x, _, v = batch
    assert M.contains(x, 1e-13) and x.shape == (4, 3, M.D)
    w = torch.randn(x.shape, generator=_gen(1), dtype=torch.float64)
    Pw = M.proj(x, w)
    assert _tangency(M, x, Pw) < 1e-13
    torch.testing.assert_close(M.proj(x, Pw), Pw, atol=1e-14, rtol=0)  # idempotent
    # orthogonal: w - P w is normal (X S, S symmetric), so <w - P w, t> = 0 for tangent t
    torch.testing.assert_close(M.inner(x, w - Pw, v), torch.zeros(4, 3, dtype=torch.float64), atol=1e-13, rtol=0)


def test_polar_retraction_is_a_retraction(batch):
    M, x, u, _ = batch
    torch.testing.assert_close(M.exp(x, torch.zeros_like(u)), x, atol=1e-14, rtol=0)  # R_X(0) = X
    h = 1e-5  # d/dt R_X(t U) at t = 0 equals U (central differences: O(h^2) error)
    fd = (M.exp(x, h * u) - M.exp(x, -h * u)) / (2 * h)
    torch.testing.assert_close(fd, u, atol=1e-6, rtol=0)
    big = M.random_tangent(x, _gen(2)) * 1e3
    assert float(M.orthonormality_error(M.exp(x, big)).max()) < 1e-12
    assert M.contains(M.exp(x, u), 1e-13)
    # the polar factor of X + U: R_X(U) = (X + U)(I + U^T U)^{-1/2} written out for tangent U
    X, U = M.mat(x), M.mat(u)
    w, V = torch.linalg.eigh(torch.eye(M.p, dtype=torch.float64) + U.transpose(-1, -2) @ U)
    torch.testing.assert_close(M.mat(M.exp(x, u)), (X + U) @ V @ torch.diag_embed(w.rsqrt()) @ V.transpose(-1, -2),
                               atol=1e-14, rtol=0)


def test_inverse_retraction_is_exact(batch):
    M, x, u, _ = batch
    y = M.exp(x, u)
    r = M.log(x, y)
    torch.testing.assert_close(r, u, atol=1e-10, rtol=0)
    assert _tangency(M, x, r) < 1e-12
    torch.testing.assert_close(M.dist(x, y), M.norm(x, u), atol=1e-10, rtol=0)  # the retraction distance
    torch.testing.assert_close(M.log(x, x), torch.zeros_like(x), atol=1e-14, rtol=0)


def test_inverse_retraction_closed_form_when_xty_is_symmetric():
    """U with X^T U = 0: X^T Y = (I + U^T U)^{-1/2} is symmetric, and the Lyapunov solution is S = (X^T Y)^{-1}."""
    M, g = Stiefel(8, 3), _gen(3)
    x = M.random_point(5, generator=g)
    X = M.mat(x)
    W = torch.randn(5, 8, 3, generator=g, dtype=torch.float64)
    U = W - X @ (X.transpose(-1, -2) @ W)
    y = M.exp(x, M.flat(U))
    A = X.transpose(-1, -2) @ M.mat(y)
    torch.testing.assert_close(A, A.transpose(-1, -2), atol=1e-14, rtol=0)
    torch.testing.assert_close(M.mat(M.log(x, y)), M.mat(y) @ torch.linalg.inv(A) - X, atol=1e-12, rtol=0)
    torch.testing.assert_close(M.mat(M.log(x, y)), U, atol=1e-12, rtol=0)


def test_projection_vector_transport(batch):
    M, x, u, v = batch
    y = M.exp(x, u)
    Tv = M.transport(x, u, v)
    assert _tangency(M, y, Tv) < 1e-13
    torch.testing.assert_close(Tv, M.proj(y, v), atol=0, rtol=0)
    torch.testing.assert_close(M.transport_to(x, y, v), Tv, atol=1e-12, rtol=0)
    assert bool((M.norm(y, Tv) <= M.norm(x, v) + 1e-12).all())  # a projection: never longer


def test_transporter_is_the_transport_along_the_step():
    """transporter(x, y, u) with y = exp(x, u), and transporter(x, y) alone, equal transport(x, u, .):
    on Stiefel the projection onto the tangent space at y, on the sphere and SPD the same arithmetic."""
    g = _gen(10)
    M = Stiefel(6, 2)
    x = M.random_point(3, generator=g)
    u = 0.5 * M.random_tangent(x, g)
    y = M.exp(x, u)
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(M.transporter(x, y, u)(v), M.transport(x, u, v), atol=1e-13, rtol=0)
    torch.testing.assert_close(M.transporter(x, y)(v), M.transport(x, M.log(x, y), v), atol=1e-13, rtol=0)
    S = Sphere(5)
    xs = torch.nn.functional.normalize(torch.randn(3, 5, generator=g, dtype=torch.float64), dim=-1)
    us = S.proj(xs, 0.3 * torch.randn(3, 5, generator=g, dtype=torch.float64))
    vs = S.proj(xs, torch.randn(3, 5, generator=g, dtype=torch.float64))
    assert torch.equal(S.transporter(xs, S.exp(xs, us), us)(vs), S.transport(xs, us, vs))


def test_p1_is_the_sphere_with_its_normalization_retraction():
    S, M, g = Sphere(6), Stiefel(6, 1), _gen(4)
    x = S.random_point(20, generator=g)
    u = S.random_tangent(x, g) * 3
    torch.testing.assert_close(M.exp(x, u), (x + u) / (x + u).norm(dim=-1, keepdim=True), atol=1e-14, rtol=0)
    y = S.random_point(20, generator=g)
    y = torch.where((x * y).sum(-1, keepdim=True) > 0, y, -y)  # the inverse exists for <x, y> > 0
    torch.testing.assert_close(M.log(x, y), y / (x * y).sum(-1, keepdim=True) - x, atol=1e-12, rtol=0)
    torch.testing.assert_close(M.proj(x, u + x), S.proj(x, u + x), atol=1e-15, rtol=0)
    assert M.kappa_min == S.kappa_min == 1.0 and M.zeta(M.diameter) == 1.0 and M.diameter == math.pi


def test_sectional_curvature_bounds():
    """Gauss equation: K in [-1/2, 1] on random planes for 2 <= p < n, the value -1/2 on the plane
    spanned by e_{p+1} e_1^T and e_{p+1} e_2^T at [I; 0], 1 for p = 1 and >= 0 for p = n (O(n) with
    a bi-invariant metric)."""
    g = _gen(5)
    for n, p in ((3, 2), (6, 3), (10, 4), (5, 1), (4, 4)):
        M = Stiefel(n, p)
        x = M.random_point(2000, generator=g)
        K = M.sectional_curvature(x, M.random_tangent(x, g), M.random_tangent(x, g))
        assert float(K.min()) >= M.kappa_min - 1e-12 and float(K.max()) <= 1 + 1e-12, (n, p)
        if p == 1:
            torch.testing.assert_close(K, torch.ones_like(K), atol=1e-12, rtol=0)
    M = Stiefel(5, 2)
    E = torch.zeros(3, 5, 2, dtype=torch.float64)
    E[0, :2] = torch.eye(2, dtype=torch.float64)
    E[1, 2, 0] = E[2, 2, 1] = 1.0
    x, u, v = M.flat(E)
    assert abs(float(M.sectional_curvature(x, u, v)) + 0.5) < 1e-15
    assert (Stiefel(5, 2).kappa_min, Stiefel(5, 5).kappa_min) == (-0.5, 0.0)
    c = math.pi * math.sqrt(3 / 2)
    assert Stiefel(9, 3).zeta(Stiefel(9, 3).diameter) == pytest.approx(c / math.tanh(c), abs=1e-14)


def test_exact_maps_flag_and_errors():
    assert Sphere(3).exact_maps and SPD(2).exact_maps and Euclidean(3).exact_maps
    assert not Stiefel(4, 2).exact_maps and Stiefel(4, 2).name == "stiefel" and Stiefel(4, 2).D == 8
    with pytest.raises(ValueError, match=r"1 <= p <= n"):
        Stiefel(3, 4)
    with pytest.raises(ValueError, match="p must be in"):
        StiefelPCA(torch.randn(1, 5, 3, dtype=torch.float64), 3)
    with pytest.raises(ValueError, match="orthonormal columns"):
        StiefelPCA(torch.randn(1, 5, 3, dtype=torch.float64), 2, x0=torch.ones(6, dtype=torch.float64))
    with pytest.raises(ValueError, match="gap"):
        StiefelPCA.generate(gap=0.0)


# ---- the problem ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spca():
    return StiefelPCA.generate(n=3, m=40, d=8, p=3, gap=0.4, seed=1)


def test_p1_agrees_with_sphere_pca():
    sp = SpherePCA.generate(n=2, m=30, d=6, gap=0.3, seed=2)
    st = StiefelPCA.generate(n=2, m=30, d=6, p=1, gap=0.3, seed=2)
    assert torch.equal(sp.Z, st.Z) and torch.allclose(sp.initial_point(), st.initial_point(), atol=1e-15, rtol=0)
    X = Sphere(6).random_point(2, generator=_gen(6))
    torch.testing.assert_close(st._losses(X, None), sp._losses(X, None), atol=1e-12, rtol=0)
    torch.testing.assert_close(st._grads(X, None), sp._grads(X, None), atol=1e-12, rtol=0)
    idx = torch.randint(0, 30, (2, 4), generator=_gen(7))
    torch.testing.assert_close(st._sample_grads(X, None, idx), sp._sample_grads(X, None, idx), atol=1e-12, rtol=0)
    assert st.f_star == pytest.approx(sp.f_star, abs=1e-14) and st.L == pytest.approx(sp.L, abs=1e-14)
    torch.testing.assert_close(st.x_star, sp.x_star, atol=1e-12, rtol=0)
    assert st.zeta == 1.0 and st.mu_at_solution == pytest.approx(sp.mu_at_solution, abs=1e-14)
    assert st.extra_metrics(X[0])["subspace_error"] == pytest.approx(sp.extra_metrics(X[0])["eig_error"], abs=1e-13)


def test_losses_and_gradients_by_hand(spca):
    pr, M, g = spca, spca.manifold, _gen(8)
    X = M.random_point(pr.n, generator=g)
    Xm = M.mat(X)
    C = torch.einsum("nmi,nmj->nij", pr.Z, pr.Z) / pr.Z.shape[1]  # the clients' covariances
    f = -torch.einsum("nip,nij,njp->n", Xm, C, Xm)  # -tr(X^T C_i X)
    torch.testing.assert_close(pr._losses(X, None), f, atol=1e-13, rtol=0)
    eg = -2 * C @ Xm
    G = eg - Xm @ (0.5 * (Xm.transpose(1, 2) @ eg + eg.transpose(1, 2) @ Xm))
    torch.testing.assert_close(pr._grads(X, None), M.flat(G), atol=1e-13, rtol=0)
    idx = torch.arange(40).expand(pr.n, -1)
    torch.testing.assert_close(pr._sample_grads(X, None, idx), M.flat(G), atol=1e-13, rtol=0)
    rows = torch.tensor([2, 0])
    torch.testing.assert_close(pr._grads(X[[2, 0]], rows), M.flat(G[[2, 0]]), atol=1e-13, rtol=0)
    # <grad f(X), U> = d/dt f(R_X(t U)) at t = 0
    u = M.random_tangent(X, g)
    t = 1e-5
    fd = (pr._losses(M.exp(X, t * u), None) - pr._losses(M.exp(X, -t * u), None)) / (2 * t)
    torch.testing.assert_close(M.inner(X, pr._grads(X, None), u), fd, atol=1e-8, rtol=0)


def test_constants_solution_and_hessian(spca):
    pr, M = spca, spca.manifold
    Z = pr.Z.reshape(-1, pr.dim).numpy()
    w, V = np.linalg.eigh(Z.T @ Z / Z.shape[0])
    assert abs(pr.f_star + w[-3:].sum()) < 1e-13 and abs(pr.L - 2 * w[-1]) < 1e-12
    assert pr.mu_at_solution == pytest.approx(2 * (w[-3] - w[-4]), abs=1e-12) and pr.mu is None
    assert pr.zeta == pytest.approx(M.zeta(math.pi * math.sqrt(3))) and pr.zeta > 3
    assert M.contains(pr.x_star, 1e-13) and float(pr.full_grad(pr.x_star).norm()) < 1e-13
    assert abs(pr.loss(pr.x_star) - pr.f_star) < 1e-13
    Vp = torch.as_tensor(V[:, -3:].copy())
    assert float(pr.subspace_error(M.flat(Vp))) < 1e-13  # another basis of the same subspace
    assert pr.extra_metrics(pr.x_star)["stiefel_error"] < 1e-14
    assert pr.subspace_error(pr.initial_point()) > 0.1
    # L bounds the Riemannian Hessian, which is <U, Hess f(X)[U]> = -2 tr(U^T C U) + 2 tr(U^T U X^T C X)
    # and the second derivative along the (second-order) polar retraction
    g = _gen(9)
    C = torch.as_tensor(Z.T @ Z / Z.shape[0])
    x = M.random_point(300, generator=g)
    u = M.random_tangent(x, g)
    u = u / M.norm(x, u).unsqueeze(-1)
    f = lambda t: -(M.mat(M.exp(x, t * u)) * (C @ M.mat(M.exp(x, t * u)))).sum((-1, -2))
    h = 1e-4
    second = (f(h) - 2 * f(0.0) + f(-h)) / h ** 2
    X, U = M.mat(x), M.mat(u)
    hess = (-2 * (U * (C @ U)).sum((-1, -2))
            + 2 * ((U.transpose(-1, -2) @ U) * (X.transpose(-1, -2) @ C @ X)).sum((-1, -2)))
    torch.testing.assert_close(second, hess, atol=1e-6, rtol=0)
    assert float(second.abs().max()) <= pr.L * (1 + 1e-4)
    # f is constant along X* Q: every basis of the top eigenspace is a minimizer
    Q = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))[0]
    rot = M.flat(M.mat(pr.x_star) @ Q)
    assert abs(pr.loss(rot) - pr.f_star) < 1e-13 and float(pr.subspace_error(rot)) < 1e-13


# ---- methods on St(20, 3) -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spca20():
    return StiefelPCA.generate(n=1, m=100, d=20, p=3, gap=0.5, seed=0)


def _iterates(problem, spec, rounds, tol=None):
    return session_iterates(problem, spec, rounds, tol)


@pytest.mark.parametrize("spec", [{"name": "r_lsvrg", "batch_size": 10}, {"name": "r_page"}])
def test_loopless_methods_converge_linearly_on_stiefel_pca(spca20, spec):
    xs, s = _iterates(spca20, spec, rounds=4000, tol=1e-11)
    t = s.trace
    assert t["f_gap"][0] > 1.0 and t["f_gap"][-1] < 1e-10 and t["subspace_error"][-1] < 1e-9
    M = spca20.manifold
    assert float(M.orthonormality_error(torch.stack(xs)).max()) < 1e-12
    first = lambda lev: next(k for k, v in enumerate(t["f_gap"]) if v <= lev)
    a, b = first(1e-6) - first(1e-3), first(1e-9) - first(1e-6)
    print(f"{spec['name']}: rounds 1e-3 -> 1e-6: {a}, 1e-6 -> 1e-9: {b}, total {len(xs) - 1}")
    assert 0.5 <= b / a <= 1.6, (a, b)  # linear: as many rounds per decade late as early


@pytest.mark.parametrize("spec", [{"name": "r_sgd", "batch_size": 5}, {"name": "r_svrg", "batch_size": 10},
                                  {"name": "r_marina", "compressor": {"name": "rand_k", "k": 6}}])
def test_iterates_stay_on_the_stiefel_manifold(spca20, spec):
    xs, s = _iterates(spca20, spec, rounds=300)
    assert float(spca20.manifold.orthonormality_error(torch.stack(xs)).max()) < 1e-12
    assert s.trace["f_gap"][-1] < 0.5 * s.trace["f_gap"][0]


def test_config_runs_stiefel_pca_and_refuses_euclidean_methods():
    from optsim.experiment import ConfigError, build_problem, parse_config, run_method
    from optsim.experiment.runner import validate_methods

    spec = {"name": "r_page"}
    cfg = parse_config({"problem": {"name": "stiefel_pca", "clients": 2, "samples": 50, "dim": 8, "p": 2,
                                    "gap": 0.5},
                        "methods": [spec], "stop": {"max_rounds": 1500, "tol": 1e-11}, "log_every": 50})
    pr = build_problem(cfg)
    assert (pr.n, pr.d, pr.p, pr.manifold.name) == (2, 16, 2, "stiefel")
    tr = run_method(pr, spec, cfg, progress=False)
    assert tr.rows["f_gap"][0] > 0.1 and tr.rows["f_gap"][-1] <= 1e-11
    assert tr.rows["subspace_error"][-1] < 1e-9 and max(tr.rows["stiefel_error"]) < 1e-12
    with pytest.raises(ValueError, match="lives on the stiefel manifold: use a Riemannian method"):
        validate_methods(parse_config({"problem": {"name": "stiefel_pca"}, "methods": [{"name": "gd"}]}), pr)
    with pytest.raises(ConfigError, match="p must be below dim"):
        parse_config({"problem": {"name": "stiefel_pca", "dim": 3, "p": 3}, "methods": [spec]})


def test_dist_sq_is_the_distance_to_the_set_of_minimizers():
    """dist_sq of the eigenvector / eigenspace problems is invariant to the basis of the solution: 0 at
    every rotated basis X* Q (and at -v on the sphere), and equal to the minimum of ||X - X* Q||^2 over
    many random orthogonal Q (never below it: the Procrustes optimum)."""
    from optsim.experiment.runner import evaluate
    g = torch.Generator().manual_seed(3)
    st = StiefelPCA.generate(n=2, m=60, d=8, p=3, seed=1)
    Xs = st.x_star.reshape(8, 3)
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    assert float(st.dist_sq((Xs @ Q).reshape(-1))) == pytest.approx(0.0, abs=1e-12)
    assert evaluate(st, (Xs @ Q).reshape(-1))["dist_sq"] == pytest.approx(0.0, abs=1e-12)
    X = st.manifold.random_point(generator=g)
    Qs, _ = torch.linalg.qr(torch.randn(20000, 3, 3, generator=g, dtype=torch.float64))
    brute = (X.reshape(8, 3) - Xs @ Qs).pow(2).sum((-1, -2)).min()
    d = float(st.dist_sq(X))
    assert d <= float(brute) + 1e-12 and d == pytest.approx(float(brute), rel=0.05)
    Xb = torch.stack([X, (Xs @ Q).reshape(-1)])
    assert torch.allclose(st.dist_sq(Xb), torch.tensor([d, 0.0], dtype=torch.float64), atol=1e-12)
    sp = SpherePCA.generate(n=2, m=60, d=8, seed=1)
    v = sp.x_star
    assert float(sp.dist_sq(-v)) == pytest.approx(0.0, abs=1e-14) and float(sp.dist_sq(v)) == pytest.approx(0.0, abs=1e-14)
    x = torch.nn.functional.normalize(torch.randn(8, generator=g, dtype=torch.float64), dim=0)
    assert float(sp.dist_sq(x)) == pytest.approx(min(float((x - v).pow(2).sum()), float((x + v).pow(2).sum())), abs=1e-14)
