"""Tests of optsim.optim: LMOs against brute force / LP / SVD, Newton–Schulz tolerance, local LMOs
against a generic solver, each optimizer's descent and exact state_dict round trip, Muon against
torch.optim.Muon, and identities between the methods (Scion = Gluon, MVR/HCM = GD-type on
deterministic problems, StoPS = StoP under interpolation)."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize

import optsim.optim as oo
import optsim.optim.lmo as L
import optsim.optim.local_lmo as LL

DT = torch.float64


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny tensors: intra-op threading only adds overhead (see docs/architecture.md)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------
# LMOs
# ------------------------------------------------------------------------------------------------
def _random_ball_points(norm: str, shape, n: int, g: torch.Generator) -> torch.Tensor:
    """n random points of the unit ball of `norm` (on or inside the boundary)."""
    Z = torch.randn(n, *shape, generator=g, dtype=DT)
    scale = torch.rand(n, *([1] * len(shape)), generator=g, dtype=DT) ** 0.25
    nrm = L.primal_norm(Z, norm, batch_dims=1).reshape(n, *([1] * len(shape)))
    return Z / nrm * scale


@pytest.mark.parametrize("norm,shape", [("l2", (7,)), ("sign", (7,)), ("l1", (7,)), ("l2", (3, 4)),
                                        ("spectral", (5, 3)), ("spectral", (3, 6)), ("colnorm", (4, 5)),
                                        ("rownorm", (4, 5)), ("sign", (3, 4))])
def test_lmo_is_the_minimizer_over_the_ball(norm, shape):
    g = _gen(1)
    G = torch.randn(*shape, generator=g, dtype=DT)
    r = 2.5
    opts = {"method": "svd"} if norm == "spectral" else {}
    z = L.apply_lmo(G, norm, r, **opts)
    # feasible, on the boundary, and attains -r ||G||_*
    assert float(L.primal_norm(z, norm)) == pytest.approx(r, rel=1e-10)
    assert float((G * z).sum()) == pytest.approx(-r * float(L.dual_norm(G, norm)), rel=1e-10)
    # no random feasible point does better
    Z = r * _random_ball_points(norm, shape, 4000, g)
    vals = (Z * G).flatten(1).sum(1)
    assert float((G * z).sum()) <= float(vals.min()) + 1e-12


def test_lmo_linf_and_l1_match_linprog():
    g = _gen(2)
    for _ in range(3):
        G = torch.randn(6, generator=g, dtype=DT)
        r = 1.7
        # l-infinity ball: box [-r, r]^d
        res = linprog(G.numpy(), bounds=[(-r, r)] * 6, method="highs")
        assert float((G * L.lmo_sign(G, r)).sum()) == pytest.approx(res.fun, abs=1e-9)
        # l1 ball: z = p - q, p, q >= 0, sum(p + q) <= r
        c = np.concatenate([G.numpy(), -G.numpy()])
        res = linprog(c, A_ub=np.ones((1, 12)), b_ub=[r], bounds=[(0, None)] * 12, method="highs")
        z = L.lmo_l1(G, r)
        assert float((G * z).sum()) == pytest.approx(res.fun, abs=1e-9)
        assert float(z.abs().sum()) == pytest.approx(r)


def test_lmo_spectral_svd_is_orthogonal_polar_factor():
    G = torch.randn(6, 4, generator=_gen(3), dtype=DT)
    z = -L.lmo_spectral(G, method="svd")
    assert torch.allclose(z.mT @ z, torch.eye(4, dtype=DT), atol=1e-12)
    assert torch.allclose(z @ (z.mT @ G), G, atol=1e-12)   # same column space
    assert float((G * z).sum()) == pytest.approx(float(torch.linalg.matrix_norm(G, "nuc")))


@pytest.mark.parametrize("norm", ["l2", "sign", "l1"])
def test_vector_lmo_batched_equals_per_row(norm):
    G = torch.randn(5, 3, 4, generator=_gen(4), dtype=DT)
    batched = L.apply_lmo(G, norm, 1.3, batch_dims=1)
    rows = torch.stack([L.apply_lmo(G[i], norm, 1.3) for i in range(5)])
    assert torch.allclose(batched, rows)


@pytest.mark.parametrize("norm", ["spectral", "colnorm", "rownorm"])
def test_matrix_lmo_batched_equals_per_matrix(norm):
    G = torch.randn(2, 3, 5, 4, generator=_gen(5), dtype=DT)
    batched = L.apply_lmo(G, norm)
    per = torch.stack([torch.stack([L.apply_lmo(G[i, j], norm) for j in range(3)]) for i in range(2)])
    assert torch.allclose(batched, per, atol=1e-12)


def test_lmo_zero_input_and_errors():
    for norm in ["l2", "sign", "l1"]:
        assert torch.equal(L.apply_lmo(torch.zeros(4, dtype=DT), norm), torch.zeros(4, dtype=DT))
    assert torch.equal(L.lmo_colnorm(torch.zeros(3, 2)), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="did you mean spectral"):
        L.apply_lmo(torch.zeros(3, 3), "spectrl")
    with pytest.raises(ValueError, match="matrices"):
        L.lmo_spectral(torch.zeros(3))


def test_lmo_many_groups_by_shape_and_auto_norm():
    g = _gen(6)
    ts = [torch.randn(4, 3, generator=g, dtype=DT), torch.randn(5, generator=g, dtype=DT),
          torch.randn(4, 3, generator=g, dtype=DT), torch.randn(2, 3, 2, generator=g, dtype=DT)]
    out = L.lmo_many(ts, "auto", method="svd")
    assert torch.allclose(out[0], L.lmo_spectral(ts[0], method="svd"))
    assert torch.allclose(out[1], L.lmo_l2(ts[1]))
    assert torch.allclose(out[3], L.lmo_spectral(ts[3].reshape(2, 6), method="svd").reshape(2, 3, 2))


# ------------------------------------------------------------------------------------------------
# Newton–Schulz
# ------------------------------------------------------------------------------------------------
def _with_singular_values(s: torch.Tensor, m: int, n: int, g) -> torch.Tensor:
    U, _ = torch.linalg.qr(torch.randn(m, len(s), generator=g, dtype=DT))
    V, _ = torch.linalg.qr(torch.randn(n, len(s), generator=g, dtype=DT))
    return U @ torch.diag(s) @ V.mT


def test_newton_schulz_applies_the_scalar_map_to_singular_values():
    g = _gen(7)
    G = torch.randn(3, 7, 5, generator=g, dtype=DT)
    X = L.newton_schulz(G)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    expect = U @ torch.diag_embed(L.ns_scalar_map(S / torch.linalg.matrix_norm(G).unsqueeze(-1))) @ Vh
    assert torch.allclose(X, expect, atol=1e-10)


@pytest.mark.parametrize("m,n", [(16, 16), (24, 10), (10, 24)])
def test_newton_schulz_tolerance(m, n):
    """Documented tolerance: 5 quintic steps map normalized singular values in [1e-2, 1] into
    [0.68, 1.14]; the cubic iteration reaches U V^T to 1e-10 in 40 steps."""
    g = _gen(8)
    s = torch.logspace(-1, 0, min(m, n), dtype=DT)
    G = _with_singular_values(s, m, n, g)
    normalized = s / s.norm()
    assert float(normalized.min()) >= 1e-2 and float(normalized.max()) <= 1.0
    sv = torch.linalg.svdvals(L.newton_schulz(G.float()).double())
    assert float(sv.min()) >= 0.68 - 1e-4 and float(sv.max()) <= 1.14 + 1e-4
    exact = -L.lmo_spectral(G, method="svd")
    cubic = L.newton_schulz(G, steps=40, coefficients=L.CUBIC_NS_COEFFICIENTS)
    assert torch.allclose(cubic, exact, atol=1e-10)


def test_newton_schulz_scalar_map_range():
    s = torch.logspace(-2, 0, 20001, dtype=DT)
    y = L.ns_scalar_map(s)
    assert 0.68 <= float(y.min()) and float(y.max()) <= 1.14


@pytest.mark.parametrize("shape", [(37, 5, 8), (3, 4, 9, 6), (20, 64, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_newton_schulz_cpu_chunks_equal_one_batched_iteration(shape, dtype, monkeypatch):
    """The CPU path (cache-sized chunks, preallocated buffers) does the plain batched iteration's arithmetic."""
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype)

    def plain(G):  # the batched iteration written out (wide orientation, one chunk)
        X = G.mT if G.shape[-2] > G.shape[-1] else G
        X = X / X.norm(dim=(-2, -1), keepdim=True).clamp_min(1e-7)
        for a, b, c in L._schedule(L.MUON_NS_COEFFICIENTS, 5):
            A = X @ X.mT
            X = a * X + (b * A + c * A @ A) @ X
        return X.mT if G.shape[-2] > G.shape[-1] else X

    ref = plain(G)
    for budget in (1, 3000, L.NS_CPU_CHUNK_BYTES, 1 << 40):  # one matrix per chunk .. everything at once
        monkeypatch.setattr(L, "NS_CPU_CHUNK_BYTES", budget)
        out = L.newton_schulz(G)
        assert out.shape == G.shape and out.dtype == dtype
        torch.testing.assert_close(out, ref, atol=1e-5 if dtype == torch.float32 else 1e-12, rtol=0)
    Gr = G.clone().requires_grad_()  # autograd records the call: the differentiable batched iteration
    L.newton_schulz(Gr).sum().backward()
    assert Gr.grad is not None and torch.isfinite(Gr.grad).all()


def test_newton_schulz_batched_equals_loop_and_schedule():
    G = torch.randn(6, 8, 5, generator=_gen(9))
    assert torch.allclose(L.newton_schulz(G), torch.stack([L.newton_schulz(x) for x in G]), atol=1e-6)
    sched = [L.MUON_NS_COEFFICIENTS] * 5
    assert torch.equal(L.newton_schulz(G, coefficients=sched), L.newton_schulz(G))
    assert torch.equal(L.newton_schulz(torch.zeros(2, 3, 3)), torch.zeros(2, 3, 3))


# ------------------------------------------------------------------------------------------------
# Local LMO oracles
# ------------------------------------------------------------------------------------------------
def _slsqp(gv, xv, t, constraints, bounds=None):
    cons = [{"type": "ineq", "fun": lambda z: t**2 - np.sum((z - xv) ** 2),
             "jac": lambda z: -2 * (z - xv)}] + constraints
    best = None
    for start in [xv, xv - 0.5 * t * gv / np.linalg.norm(gv)]:
        res = minimize(lambda z: gv @ z, start, jac=lambda z: gv, constraints=cons, bounds=bounds,
                       method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
        if best is None or res.fun < best.fun:
            best = res
    return best.fun


def _check_local(z, x, g, t, feasible, ref_val):
    assert float(torch.linalg.vector_norm(z - x)) <= t * (1 + 1e-9) + 1e-12
    assert feasible(z)
    assert float(g @ z) <= ref_val + 1e-7


@pytest.mark.parametrize("t", [0.05, 0.3, 5.0])
def test_local_lmo_box(t):
    g_ = _gen(10)
    d = 6
    for _ in range(3):
        x = torch.rand(d, generator=g_, dtype=DT)
        g = torch.randn(d, generator=g_, dtype=DT)
        z = LL.local_lmo_box(x, g, t, 0.0, 1.0)
        ref = _slsqp(g.numpy(), x.numpy(), t, [], bounds=[(0, 1)] * d)
        _check_local(z, x, g, t, lambda v: bool(((v >= -1e-12) & (v <= 1 + 1e-12)).all()), ref)
        if t == 5.0:   # ball inactive: the global LMO of the box (linprog)
            assert float(g @ z) == pytest.approx(linprog(g.numpy(), bounds=[(0, 1)] * d, method="highs").fun)


@pytest.mark.parametrize("t", [0.05, 0.3, 5.0])
def test_local_lmo_simplex(t):
    g_ = _gen(11)
    d = 5
    for _ in range(3):
        x = torch.rand(d, generator=g_, dtype=DT)
        x = x / x.sum()
        g = torch.randn(d, generator=g_, dtype=DT)
        z = LL.local_lmo_simplex(x, g, t)
        ref = _slsqp(g.numpy(), x.numpy(), t, [{"type": "eq", "fun": lambda v: v.sum() - 1}], bounds=[(0, 1)] * d)
        _check_local(z, x, g, t, lambda v: bool((v >= -1e-12).all()) and abs(float(v.sum()) - 1) < 1e-10, ref)
        if t == 5.0:
            lp = linprog(g.numpy(), A_eq=np.ones((1, d)), b_eq=[1.0], bounds=[(0, None)] * d, method="highs")
            assert float(g @ z) == pytest.approx(lp.fun)


@pytest.mark.parametrize("t", [0.05, 0.4, 3.0])
def test_local_lmo_l2_ball(t):
    g_ = _gen(12)
    d, R = 4, 1.0
    c = torch.randn(d, generator=g_, dtype=DT)
    for _ in range(4):
        u = torch.randn(d, generator=g_, dtype=DT)
        x = c + 0.9 * R * u / u.norm() * float(torch.rand((), generator=g_, dtype=DT))
        g = torch.randn(d, generator=g_, dtype=DT)
        z = LL.local_lmo_l2_ball(x, g, t, c, R)
        cn = c.numpy()
        ref = _slsqp(g.numpy(), x.numpy(), t, [{"type": "ineq", "fun": lambda v: R**2 - np.sum((v - cn) ** 2)}])
        _check_local(z, x, g, t, lambda v: float((v - c).norm()) <= R * (1 + 1e-9), ref)


def test_local_lmo_affine_and_unconstrained():
    g_ = _gen(13)
    d = 5
    A = torch.randn(2, d, generator=g_, dtype=DT)
    x = torch.randn(d, generator=g_, dtype=DT)
    b = A @ x
    g = torch.randn(d, generator=g_, dtype=DT)
    z = LL.local_lmo_affine(x, g, 0.7, A)
    An, bn = A.numpy(), b.numpy()
    ref = _slsqp(g.numpy(), x.numpy(), 0.7, [{"type": "eq", "fun": lambda v: An @ v - bn}])
    _check_local(z, x, g, 0.7, lambda v: float((A @ v - b).norm()) < 1e-10, ref)
    assert torch.allclose(LL.local_lmo_unconstrained(x, g, 0.7), x - 0.7 * g / g.norm())


def test_local_lmo_batched_rows():
    g_ = _gen(14)
    X = torch.rand(8, 5, generator=g_, dtype=DT)
    G = torch.randn(8, 5, generator=g_, dtype=DT)
    T = torch.rand(8, generator=g_, dtype=DT)
    Zb = LL.local_lmo_box(X, G, T, 0.0, 1.0)
    assert torch.allclose(Zb, torch.stack([LL.local_lmo_box(X[i], G[i], T[i], 0.0, 1.0) for i in range(8)]))
    S = X / X.sum(-1, keepdim=True)
    Zs = LL.local_lmo_simplex(S, G, T)
    assert torch.allclose(Zs, torch.stack([LL.local_lmo_simplex(S[i], G[i], T[i]) for i in range(8)]), atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Optimizers: descent and exact state_dict round trips
# ------------------------------------------------------------------------------------------------
def _mlp(bias: bool, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8, bias=bias), torch.nn.Tanh(), torch.nn.Linear(8, 3, bias=bias))


_gd = _gen(20)
_X = torch.randn(32, 6, generator=_gd)
_Y = torch.tanh(_X @ torch.randn(6, 3, generator=_gd))


def _loss(model, idx=None):
    X, Y = (_X, _Y) if idx is None else (_X[idx], _Y[idx])
    return ((model(X) - Y) ** 2).mean()


def _per_sample(model):
    return ((model(_X) - _Y) ** 2).mean(1)


# name -> (needs bias-free model, constructor kwargs, closure kind)
CASES = {
    "muon": (True, dict(lr=0.02, weight_decay=0.0), "std"),
    "distance_adaptive_muon": (True, dict(), "std"),
    "scale_calibrated_muon": (True, dict(lr=0.5), "std"),
    "distance_free_muon": (True, dict(lr=0.5), "std"),
    "scion": (False, dict(lr=0.02), "std"),
    "gluon": (False, dict(lr=0.02), "std"),
    "gluon_mvr": (False, dict(lr=0.02), "std"),
    "gluon_mvr_2": (False, dict(lr=0.02, variant=2), "std2"),
    "gluon_mvr_3": (False, dict(lr=0.02, variant=3), "std"),
    "lmo_hcm": (False, dict(lr=0.02), "graph"),
    "lmo_hcm_random": (False, dict(lr=0.02, hvp_point="random"), "graph"),
    "local_lmo": (False, dict(lr=0.5), "std"),
    "stop": (False, dict(max_lr=0.5), "per_sample"),
    "grad": (False, dict(lr=0.5), "per_sample"),
    "microadam": (False, dict(lr=0.02, density=0.3, quant_block=16), "std"),
    "rpt": (False, dict(lr=0.1), "std"),
    "rcd": (False, dict(lr=0.05), "std"),
    "mast": (False, dict(lr=0.1, keep_prob=0.8), "std"),
}


def _make(name, model):
    cls_name = name.rsplit("_", 1)[0] if name.endswith(("_2", "_3", "_random")) else name
    return oo.OPTIMIZERS[cls_name](model.parameters(), **CASES[name][1])


def _step(opt, model, kind, k):
    batch = torch.arange(16) + 16 * (k % 2)

    def closure():
        opt.zero_grad()
        loss = _loss(model, batch)
        loss.backward()
        return loss

    if kind == "std":
        return opt.step(closure)
    if kind == "std2":
        other = torch.arange(16) + 16 * ((k + 1) % 2)

        def corr():
            opt.zero_grad()
            loss = _loss(model, other)
            loss.backward()
            return loss

        return opt.step(closure, corr)
    if kind == "graph":
        return opt.step(lambda: _loss(model, batch))
    return opt.step(lambda: _per_sample(model))


@pytest.mark.parametrize("name", list(CASES))
def test_optimizer_decreases_objective(name):
    no_bias, _, kind = CASES[name]
    model = _mlp(bias=not no_bias)
    opt = _make(name, model)
    with torch.no_grad():
        f0 = float(_loss(model))
    for k in range(60):
        _step(opt, model, kind, k)
    with torch.no_grad():
        f1 = float(_loss(model))
    assert math.isfinite(f1) and f1 < 0.7 * f0, (f0, f1)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c[2] == "std"])
def test_step_returns_the_closures_loss_computed_with_gradients(name):
    """torch.optim's convention: step(closure) evaluates the closure with gradients enabled (step
    itself runs without) and returns its loss; step() without a closure returns None."""
    model = _mlp(bias=not CASES[name][0])
    opt = _make(name, model)
    seen = []

    def closure():
        opt.zero_grad()
        loss = _loss(model)
        loss.backward()
        seen.append((loss, torch.is_grad_enabled()))
        return loss

    out = opt.step(closure)
    assert seen and out is seen[0][0] and all(enabled for _, enabled in seen)
    if name not in ("mast", "distance_free_muon", "gluon_mvr", "gluon_mvr_3"):  # these need the closure
        assert opt.step() is None


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_round_trip_gives_identical_iterates(name):
    no_bias, _, kind = CASES[name]
    model = _mlp(bias=not no_bias)
    opt = _make(name, model)
    for k in range(4):
        _step(opt, model, kind, k)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)                 # a real save: no tensor shared with `opt`
    buf.seek(0)
    sd = torch.load(buf)
    twin = _mlp(bias=not no_bias, seed=1)
    twin.load_state_dict(model.state_dict())
    opt2 = _make(name, twin)
    opt2.load_state_dict(sd)
    for k in range(4, 8):
        _step(opt, model, kind, k)
        _step(opt2, twin, kind, k)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_registry_holds_optimizer_classes():
    assert len(oo.OPTIMIZERS) >= 21
    for cls in oo.OPTIMIZERS.values():
        assert issubclass(cls, torch.optim.Optimizer)
        assert "arXiv" in cls.__doc__, f"{cls.__name__} must cite its paper"


# ------------------------------------------------------------------------------------------------
# Muon vs torch.optim.Muon
# ------------------------------------------------------------------------------------------------
def _mf_run(cls, steps=6, **kw):
    g = _gen(30)
    U0, V0 = torch.randn(20, 5, generator=g) * 0.3, torch.randn(15, 5, generator=g) * 0.3
    Y = torch.randn(20, 4, generator=g) @ torch.randn(4, 15, generator=g)
    U, V = torch.nn.Parameter(U0.clone()), torch.nn.Parameter(V0.clone())
    opt = cls([U, V], **kw)
    for _ in range(steps):
        opt.zero_grad()
        ((U @ V.T - Y) ** 2).mean().backward()
        opt.step()
    return U.detach(), V.detach()


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs PyTorch >= 2.9")
@pytest.mark.parametrize("nesterov,adjust", [(True, None), (False, "match_rms_adamw")])
def test_muon_matches_torch_muon(nesterov, adjust):
    """Same definition: with bfloat16 Newton–Schulz (torch's choice) the iterates are identical;
    the documented difference is the default float32 orthogonalization (bfloat16 rounding apart)."""
    kw = dict(lr=0.02, weight_decay=0.1, momentum=0.9, nesterov=nesterov, adjust_lr_fn=adjust)
    ref = _mf_run(torch.optim.Muon, **kw)
    ours_bf16 = _mf_run(oo.Muon, ns_dtype=torch.bfloat16, **kw)
    ours_f32 = _mf_run(oo.Muon, **kw)
    for a, b, c in zip(ours_bf16, ref, ours_f32):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
        assert torch.allclose(c, b, rtol=0, atol=5e-3)


def test_muon_accepts_conv_kernels_and_refuses_vectors():
    conv = torch.nn.Conv2d(2, 4, 3, bias=False)
    opt = oo.Muon(conv.parameters(), lr=0.01)
    conv(torch.randn(1, 2, 5, 5)).sum().backward()
    opt.step()
    with pytest.raises(ValueError, match="2 dimensions"):
        oo.Muon([torch.nn.Parameter(torch.zeros(3))])


# ------------------------------------------------------------------------------------------------
# Identities between the methods
# ------------------------------------------------------------------------------------------------
def _run_full(opt_factory, kind="std", steps=5, bias=True):
    model = _mlp(bias=bias)
    opt = opt_factory(model.parameters())
    for _ in range(steps):
        if kind == "graph":
            opt.step(lambda: _loss(model))
        else:
            def closure():
                opt.zero_grad()
                loss = _loss(model)
                loss.backward()
                return loss
            opt.step(closure)
    return [p.detach().clone() for p in model.parameters()]


def test_scion_unconstrained_equals_gluon():
    a = _run_full(lambda ps: oo.Scion(ps, lr=0.03, alpha=0.2, spectral_method="svd"))
    b = _run_full(lambda ps: oo.Gluon(ps, lr=0.03, beta=0.8, spectral_method="svd"))
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b))


def test_scion_constrained_stays_in_the_ball():
    model = _mlp(bias=False)
    opt = oo.Scion(model.parameters(), lr=0.2, radius=0.5, constrained=True, spectral_method="svd")
    for _ in range(40):
        opt.zero_grad()
        _loss(model).backward()
        opt.step()
    for p in model.parameters():
        assert float(torch.linalg.matrix_norm(p.detach().double(), 2)) <= 0.5 + 1e-4


def test_gluon_adaptive_radius_is_the_l0_l1_stepsize():
    model = _mlp(bias=False)
    before = [p.detach().clone() for p in model.parameters()]
    opt = oo.Gluon(model.parameters(), beta=0.0, L0=2.0, L1=0.5, spectral_method="svd")
    opt.zero_grad()
    _loss(model).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    for p, x, g in zip(model.parameters(), before, grads):
        s = float(torch.linalg.matrix_norm(g.double(), "nuc"))
        t = s / (2.0 + 0.5 * s)
        assert torch.allclose(p.detach() - x, t * L.lmo_spectral(g, method="svd"), atol=1e-5)


@pytest.mark.parametrize("variant", [1, 2, 3])
def test_gluon_mvr_is_exact_gradient_on_deterministic_problems(variant):
    """Full-batch: the MVR estimator equals the gradient (M_0 = g_0), so Gluon-MVR = Gluon(beta=0)."""
    model = _mlp(bias=True)
    opt = oo.GluonMVR(model.parameters(), lr=0.03, beta=0.7, variant=variant, spectral_method="svd")
    for _ in range(5):
        def closure():
            opt.zero_grad()
            loss = _loss(model)
            loss.backward()
            return loss
        opt.step(closure, closure) if variant == 2 else opt.step(closure)
    b = _run_full(lambda ps: oo.Gluon(ps, lr=0.03, beta=0.0, spectral_method="svd"))
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(model.parameters(), b))


@pytest.mark.parametrize("point", ["current", "random"])
def test_hessian_corrected_momentum_is_exact_on_quadratics(point):
    """On a quadratic, g_k = g_{k-1} + H (x_k - x_{k-1}) exactly, so HCM's estimator is the gradient."""
    g = _gen(40)
    A = torch.randn(10, 4, generator=g, dtype=DT)
    y = torch.randn(10, generator=g, dtype=DT)

    def run(factory, kind):
        x = torch.nn.Parameter(torch.zeros(4, dtype=DT))
        opt = factory([x])
        for _ in range(6):
            if kind == "graph":
                opt.step(lambda: ((A @ x - y) ** 2).mean())
            else:
                def closure():
                    opt.zero_grad()
                    loss = ((A @ x - y) ** 2).mean()
                    loss.backward()
                    return loss
                opt.step(closure)
        return x.detach()

    a = run(lambda ps: oo.LMOHessianCorrected(ps, lr=0.05, beta=0.6, hvp_point=point), "graph")
    b = run(lambda ps: oo.Gluon(ps, lr=0.05, beta=0.0), "std")
    assert torch.allclose(a, b, atol=1e-12)


def test_stops_and_grads_reduce_to_stop_and_grad_under_interpolation():
    g = _gen(50)
    X = torch.randn(24, 5, generator=g, dtype=DT)
    w = torch.randn(5, generator=g, dtype=DT)
    y = X @ w                                    # interpolation: every f_i(w) = 0, grad f_i(w) = 0

    def run(factory):
        p = torch.nn.Parameter(torch.zeros(5, dtype=DT))
        opt = factory([p])
        steps = []
        for k in range(10):
            idx = torch.arange(8) + 8 * (k % 3)
            opt.step(lambda: 0.5 * (X[idx] @ p - y[idx]) ** 2)
            steps.append(opt.state["last_stepsize"])
        return p.detach(), steps

    a, sa = run(lambda ps: oo.StoPS(ps, x_star=[w]))
    b, sb = run(lambda ps: oo.StoP(ps))
    assert torch.allclose(a, b, atol=1e-12)
    c, sc = run(lambda ps: oo.GraDS(ps, x_star=[w], lr=0.2))
    d, sd = run(lambda ps: oo.GraD(ps, lr=0.2))
    assert torch.allclose(c, d, atol=1e-12)
    assert max(sd) <= 0.2 + 1e-15 and min(sd) > 0


def test_per_sample_grads_match_a_loop():
    model = _mlp(bias=True)
    params = list(model.parameters())
    losses = _per_sample(model)[:5]
    G = oo.per_sample_grads(losses, params)
    for i in range(5):
        gi = torch.autograd.grad(_per_sample(model)[i], params)
        for a, b in zip(G, gi):
            assert torch.allclose(a[i], b, atol=1e-6)


def test_local_lmo_optimizer_keeps_feasibility_and_refuses_infeasible_start():
    g = _gen(60)
    A = torch.randn(20, 6, generator=g, dtype=DT)
    b = torch.randn(20, generator=g, dtype=DT)
    for cons, kw, ok in [("box", dict(lo=0.0, hi=0.3), lambda v: bool(((v >= 0) & (v <= 0.3 + 1e-12)).all())),
                         ("simplex", {}, lambda v: bool((v >= 0).all()) and abs(float(v.sum()) - 1) < 1e-9),
                         ("l2_ball", dict(center=0.0, R=0.5), lambda v: float(v.norm()) <= 0.5 + 1e-9),
                         ("affine", dict(A=torch.ones(1, 6, dtype=DT), b=torch.ones(1, dtype=DT)),
                          lambda v: abs(float(v.sum()) - 1) < 1e-9)]:
        x = torch.nn.Parameter(torch.full((6,), 1 / 6, dtype=DT))
        opt = oo.LocalLMO([x], lr=0.05, constraint=cons, **kw)
        f0 = float(((A @ x.detach() - b) ** 2).mean())
        for _ in range(50):
            opt.zero_grad()
            ((A @ x - b) ** 2).mean().backward()
            opt.step()
            assert ok(x.detach())
        assert float(((A @ x.detach() - b) ** 2).mean()) < f0
    with pytest.raises(ValueError, match="feasible starting point"):
        oo.LocalLMO([torch.nn.Parameter(torch.full((3,), 2.0))], constraint="box", lo=0.0, hi=1.0)
    with pytest.raises(ValueError, match="did you mean simplex"):
        oo.LocalLMO([torch.nn.Parameter(torch.zeros(3))], constraint="simplx")


def test_param_groups_choose_their_norm_and_radius():
    model = _mlp(bias=True)
    mats = [p for p in model.parameters() if p.ndim == 2]
    vecs = [p for p in model.parameters() if p.ndim == 1]
    opt = oo.Gluon([{"params": mats, "norm": "colnorm", "radius": 2.0},
                    {"params": vecs, "norm": "sign", "lr": 0.001}], lr=0.01, beta=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    _loss(model).backward()
    opt.step()
    for p, x in zip(model.parameters(), before):
        step = (p.detach() - x)
        if p.ndim == 2:
            assert torch.allclose(step.norm(dim=0), torch.full((p.shape[1],), 0.02), atol=1e-6)
        else:
            assert torch.allclose(step.abs(), torch.full_like(step, 0.001), atol=1e-7)
    with pytest.raises(ValueError, match="needs parameters with >= 2 dimensions"):
        oo.Gluon([{"params": vecs, "norm": "spectral"}])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_optimizers_run_on_cuda():
    for name in ["muon", "gluon", "scion", "gluon_mvr", "lmo_hcm", "local_lmo", "grad"]:
        no_bias, _, kind = CASES[name]
        model = _mlp(bias=not no_bias).cuda()
        global _X, _Y
        Xc, Yc = _X, _Y
        _X, _Y = Xc.cuda(), Yc.cuda()
        try:
            opt = _make(name, model)
            for k in range(3):
                _step(opt, model, kind, k)
            assert all(p.is_cuda and torch.isfinite(p).all() for p in model.parameters())
        finally:
            _X, _Y = Xc, Yc
