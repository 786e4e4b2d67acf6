"""Sparse linear systems from a LibSVM file: the features read as CSR (never densified), x* the least-norm
solution (LSQR, checked against the pseudoinverse), and Kaczmarz / least-squares coordinate descent on
rows / columns of the sparse matrix equal to the dense S1 solvers step for step, with the exact expected
iterate within Monte-Carlo error and convergence to x* at the rate the theory gives."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.stats import norm

from optsim.data.datasets import load_sparse
from optsim.methods.linalg import cd_least_squares, kaczmarz
from optsim.methods.linalg.sparse import (
    SparseSketchAndProject,
    sparse_cd_least_squares,
    sparse_kaczmarz,
)
from optsim.problems.linear_system import LinearSystem, SparseLinearSystem


def _write_libsvm(path, m, d, density, seed, duplicate_column=False):
    from sklearn.datasets import dump_svmlight_file

    g = np.random.default_rng(seed)
    A = sp.random(m, d, density=density, random_state=seed, format="csr", data_rvs=g.standard_normal)
    A = A.tolil()
    for i in range(m):  # no empty rows or columns: every row and column gets one entry
        A[i, i % d] = 1.0 + g.random()
    A = A.tocsr()
    if duplicate_column:  # rank deficient: column d-1 equals column 0
        A = A.tolil()
        A[:, d - 1] = A[:, 0]
        A = A.tocsr()
    dump_svmlight_file(A, g.choice([-1.0, 1.0], m), str(path), zero_based=False)
    return A


@pytest.fixture(scope="module")
def libsvm_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("libsvm")
    full, deficient = root / "full.svm", root / "deficient.svm"
    _write_libsvm(full, 60, 12, 0.15, seed=1)
    _write_libsvm(deficient, 40, 15, 0.2, seed=2, duplicate_column=True)
    return full, deficient


def test_libsvm_file_is_read_sparse_and_x_star_is_the_least_norm_solution(libsvm_files):
    full, deficient = libsvm_files
    A, y = load_sparse(str(deficient))
    assert sp.isspmatrix_csr(A) and A.shape == (40, 15) and y.shape == (40,)
    system = SparseLinearSystem.from_libsvm(str(deficient), seed=3)
    assert sp.isspmatrix_csr(system.A) and sp.isspmatrix_csr(system.At)
    Ad = system.A.toarray()
    assert np.linalg.matrix_rank(Ad) == 14  # rank deficient: many solutions, x* the least-norm one
    ref = np.linalg.pinv(Ad) @ system.b
    assert np.allclose(system.x_true.numpy(), ref, atol=1e-10)
    assert float(system.residual(system.x_true[None])[0]) < 1e-10 * np.linalg.norm(system.b)
    with pytest.raises(ValueError, match="inconsistent"):
        SparseLinearSystem(system.A, np.ones(40) + system.b * 0 + np.arange(40))
    with pytest.raises(ValueError, match="SciPy sparse"):
        SparseLinearSystem(Ad, z=np.ones(15))
    with pytest.raises(FileNotFoundError):
        load_sparse(str(full) + ".missing")


@pytest.mark.parametrize("kind", ["kaczmarz", "cd_least_squares"])
def test_sparse_steps_equal_the_dense_solver_step_for_step(libsvm_files, kind):
    full, _ = libsvm_files
    system = SparseLinearSystem.from_libsvm(str(full), seed=4)
    dense = LinearSystem(torch.from_numpy(system.A.toarray()), torch.from_numpy(system.b), system.x_true)
    sparse = SparseSketchAndProject(system, kind)
    ref = kaczmarz(dense) if kind == "kaczmarz" else cd_least_squares(dense)
    assert math.isclose(sparse.rate(), ref.rate(), rel_tol=1e-9)  # the same probabilities and E[Z]
    assert np.allclose(sparse.probs, ref.sketch.probs.numpy(), rtol=1e-12)
    iters, runs = 60, 5
    opts = torch.randint(sparse.r, (iters, runs), generator=torch.Generator().manual_seed(5))
    x0 = torch.linspace(-1, 1, system.d, dtype=torch.float64)
    a = sparse.run(x0, iters, runs=runs, options=opts, every=10)
    b = ref.run(x0, iters, runs=runs, options=opts, every=10, fast=False)
    assert torch.allclose(a.x, b.x, atol=1e-12)
    assert torch.allclose(a.sq_error, b.sq_error, rtol=1e-10, atol=1e-20)
    one = sparse.run(x0, iters, runs=1, options=opts[:, :1])  # the single-run loop
    assert torch.allclose(one.x[0], a.x[0], atol=1e-12)


def test_batched_sparse_kaczmarz_matches_the_exact_expected_iterate_and_converges(libsvm_files):
    _, deficient = libsvm_files
    system = SparseLinearSystem.from_libsvm(str(deficient), seed=6)
    sk = sparse_kaczmarz(system)
    dense = LinearSystem(torch.from_numpy(system.A.toarray()), torch.from_numpy(system.b), system.x_true)
    ref = kaczmarz(dense)
    x0 = torch.zeros(system.d, dtype=torch.float64)
    out = sk.run(x0, 30, runs=4000, seed=7, every=6)
    exact = ref.expected_error(x0, out.steps)
    z = ((out.mean_error[1:] - exact[1:]) / out.sem_error[1:]).abs()
    assert float(z.max()) < float(norm.isf(1e-3 / (2 * z.numel())))
    # from 0 the iterates stay in the row space: convergence to the least-norm x*, E||e_k||^2 <= rho^k ||e_0||^2
    rho = sk.rate()
    assert rho < 1
    long = sk.run(x0, 3000, runs=1, seed=8, every=3000)
    assert float(long.sq_error[-1, 0]) < 1e-18 * float(long.sq_error[0, 0])
    sq = out.sq_error
    bound = torch.tensor([rho ** int(k) for k in out.steps], dtype=torch.float64) * sq[0, 0]
    assert bool((sq.mean(1) <= bound + 3 * sq.std(1) / math.sqrt(4000)).all())
    cd = sparse_cd_least_squares(SparseLinearSystem.from_libsvm(str(libsvm_files[0]), seed=9))
    res = cd.run(None, 4000, runs=1, seed=10, every=4000)
    assert float(res.sq_error[-1, 0]) < 1e-18 * float(res.sq_error[0, 0])


# ---- the sparse system as a Problem of the runner (f = ||A x - b||^2 / 2, the equations as samples) ----------


def test_sparse_problem_oracles_equal_the_dense_linear_system(libsvm_files):
    """Every oracle and constant of the sparse problem equals the dense LinearSystem's on the densified A
    (the same convention: f = ||A x - b||^2 / 2, f_j = rows (a_j^T x - b_j)^2 / 2); the equations' gradients
    average to the full gradient, and one of them with stepsize 1 / L_j is exactly a Kaczmarz step."""
    full, _ = libsvm_files
    system = SparseLinearSystem.from_libsvm(str(full), seed=11)
    dense = LinearSystem(torch.from_numpy(system.A.toarray()), torch.from_numpy(system.b), system.x_true)
    g = torch.Generator().manual_seed(12)
    X = torch.randn(4, system.d, generator=g, dtype=torch.float64)
    idx = torch.randint(system.rows, (4, 3), generator=g)
    w = torch.rand(4, 3, generator=g, dtype=torch.float64)

    def close(a, b, tol=1e-12):
        a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
        assert float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max())), (a, b)

    close(system._grads(X, None), dense._grads(X, None))
    close(system._losses(X, None), dense._losses(X, None))
    close(system._sample_grads(X, None, idx), dense._sample_grads(X, None, idx))
    close(system._weighted_sample_grads(X, None, idx, w), dense._weighted_sample_grads(X, None, idx, w))
    close(system._hessians(X[:2], None), dense._hessians(X[:2], None))
    close(system._grads_many(X[:, None, :]), torch.stack([dense._grads(x[None], None) for x in X]))
    close(system._losses_many(X[:, None, :]), dense._losses(X, None)[:, None])
    close(system.L_samples, dense.L_samples)
    close(system.sample_gradient_variance(X[0]), dense.sample_gradient_variance(X[0]))
    close(system.extra_metrics(X[0])["residual_sq"], dense.extra_metrics(X[0])["residual_sq"])
    close(system.extra_metrics(X[0])["residual_sq"], 2 * dense.loss(X[0]))
    assert system.has_sample_grads and dense.has_sample_grads and system.n == dense.n == 1
    assert int(system.m[0]) == int(dense.m[0]) == system.rows
    assert math.isclose(system.L, dense.L, rel_tol=1e-12) and math.isclose(system.L_max, dense.L_max, rel_tol=1e-12)
    assert math.isclose(system.mu, dense.mu, rel_tol=1e-10)  # full column rank: sigma_min(A)^2
    assert math.isclose(system.L_sample_max, dense.L_sample_max, rel_tol=1e-12)
    close(system.x_star, dense.x_star, 1e-10)
    assert system.f_star < 1e-24 and float(system.full_grad(system.x_star).norm()) < 1e-10
    # the rows' gradients, each weighted 1/rows, sum to the full gradient
    allrows = torch.arange(system.rows).expand(4, system.rows)
    for p in (system, dense):
        close(p._weighted_sample_grads(X, None, allrows, torch.full((4, system.rows), 1.0 / system.rows,
                                                                    dtype=torch.float64)), dense._grads(X, None))
    # randomized Kaczmarz is SGD on the f_j: x - grad f_j(x) / L_j is the projection onto a_j^T x = b_j
    j = 7
    step = X[:1] - system._sample_grads(X[:1], None, torch.tensor([[j]])) / float(system.L_samples[0, j])
    kz = SparseSketchAndProject(system, "kaczmarz").run(X[0], 1, runs=1, options=torch.tensor([[j]]))
    close(step[0], kz.x[0])
    # counted like any problem: a minibatch of b equations is b / rows of a full gradient
    from optsim.meter import Meter

    meter = Meter(1)
    system.attach(meter).sample_grads(X[:1], idx[:1])
    meter.close_round()
    close(meter.snapshot()["grad_evals"], 3 / system.rows)
    system.attach(None)
    # float32 runs: the oracles return the problem's dtype; the CPU only (SciPy products)
    f32 = SparseLinearSystem(system.A, system.b, dtype=torch.float32)
    assert f32._grads(X.float(), None).dtype == torch.float32 and f32.x_star.dtype == torch.float32
    with pytest.raises(ValueError, match="set device: cpu"):
        SparseLinearSystem(system.A, system.b, device="meta")


def _config(data, method, **stop):
    from optsim.experiment import parse_config

    return parse_config({"problem": {"name": "linear_system", "data": str(data), "data_seed": 3},
                         "methods": [method], "stop": stop, "log_every": stop.pop("log_every", 100)})


def test_libsvm_system_from_a_config_gd_and_sgd_reach_the_least_norm_solution(libsvm_files):
    """A rank-deficient LibSVM system through the config and the runner: from x_0 = 0 the iterates stay in the
    row space, where f is mu = sigma_min^+(A)^2 strongly convex, so GD with 1/L contracts ||x - x*|| by
    (1 - mu / L) per round and SGD with its theory stepsize 1 / (2 L_exp) (one equation per round, L_exp =
    max_j L_j) has E||x_k - x*||^2 <= (1 - gamma mu)^k ||x_0 - x*||^2 (Gower et al. 2019, Thm. 3.1 with
    sigma^2 = 0: the system is consistent); both reach dist_sq <= 1e-20, the residual with them."""
    from optsim.experiment import build_problem, run_method

    _, deficient = libsvm_files
    problem = build_problem(_config(deficient, "gd"))
    assert isinstance(problem, SparseLinearSystem) and problem.rows == 40 and problem.d == 15
    assert np.linalg.matrix_rank(problem.A.toarray()) == 14
    ref = np.linalg.pinv(problem.A.toarray()) @ problem.b  # the least-norm solution
    assert np.allclose(problem.x_star.numpy(), ref, atol=1e-10)
    kappa = problem.L / problem.mu
    t = run_method(problem, {"name": "gd"}, _config(deficient, "gd", max_rounds=400, log_every=20), progress=False)
    for k, dist in zip(t["round"], t["dist_sq"]):
        assert dist <= (1 - 1 / kappa) ** (2 * k) * t["dist_sq"][0] * (1 + 1e-9) + 1e-28
    assert t["dist_sq"][-1] <= 1e-20 and t["residual_sq"][-1] <= 1e-20 * t["residual_sq"][0]
    assert all(math.isclose(r, 2 * f, rel_tol=1e-9, abs_tol=1e-28) for r, f in zip(t["residual_sq"], t["loss"]))

    gamma_mu = problem.mu / (2 * problem.L_sample_max)
    rounds = math.ceil(math.log(t["dist_sq"][0] / 1e-24) / gamma_mu)  # the bound reaches 1e-24 by then
    cfg = _config(deficient, "sgd", max_rounds=rounds, tol=1e-20, metric="dist_sq", log_every=500)
    s = run_method(problem, {"name": "sgd"}, cfg, progress=False)
    assert s["dist_sq"][-1] <= 1e-20 and s["round"][-1] <= rounds
    # one run: each logged value within a Markov factor 1e4 of the expectation's bound
    for k, dist in zip(s["round"], s["dist_sq"]):
        assert dist <= 1e4 * (1 - gamma_mu) ** k * s["dist_sq"][0] + 1e-28


def test_linear_system_config_identity_and_data_errors(libsvm_files, tmp_path, monkeypatch):
    """Configs of the synthetic generator keep their run identity (no ``data`` key); data and the generator's
    fields are exclusive; a missing file is the data layer's one-line error."""
    from optsim.experiment import ConfigError, build_problem, parse_config
    from optsim.experiment.build import problem_key
    from optsim.experiment.store import run_config, run_hash

    cfg = parse_config({"problem": {"name": "linear_system", "rows": 60, "dim": 8, "smin": 0.3}, "methods": ["gd"],
                        "stop": {"max_rounds": 200}})
    assert run_config(cfg, cfg.methods[0])["problem"] == {"name": "linear_system", "data_seed": None, "rows": 60,
                                                         "dim": 8, "smin": 0.3, "smax": 1.0,
                                                         "positive_definite": False}
    assert run_hash(cfg, cfg.methods[0]) == "4205f5f99054dfbe" and problem_key(cfg) == "5ecf7d92351c5713"
    plain = parse_config({"problem": {"name": "linear_system"}, "methods": ["sgd"]})
    assert run_hash(plain, plain.methods[0]) == "737bb7bc592bb3b9" and problem_key(plain) == "6de0aa5e7045890b"
    assert type(build_problem(plain)).__name__ == "LinearSystem"
    with_data = _config(libsvm_files[0], "gd")
    assert run_config(with_data, with_data.methods[0])["problem"]["data"] == str(libsvm_files[0])
    assert problem_key(with_data) != problem_key(_config(libsvm_files[1], "gd"))
    with pytest.raises(ConfigError, match="rows set the synthetic generator"):
        parse_config({"problem": {"name": "linear_system", "data": str(libsvm_files[0]), "rows": 10},
                      "methods": ["gd"]})
    with pytest.raises(ConfigError, match="not sparse LibSVM data"):
        parse_config({"problem": {"name": "linear_system", "data": "sklearn:iris"}, "methods": ["gd"]})
    with pytest.raises(FileNotFoundError, match="not found") as err:
        build_problem(_config(tmp_path / "missing.svm", "gd"))
    assert "\n" not in str(err.value)
    monkeypatch.setenv("OPTSIM_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="LibSVM dataset 'nosuch' not found") as err:
        build_problem(_config("libsvm:nosuch", "gd"))
    assert "\n" not in str(err.value)


def test_large_sparse_system_takes_l_by_lanczos_and_leaves_mu_unknown(libsvm_files, monkeypatch):
    """Beyond DENSE_GRAM_MAX the largest squared singular value comes from eigsh on x -> A^T A x (the
    dense value to 1e-10) and mu is None (no cheap sigma_min^+)."""
    full, _ = libsvm_files
    monkeypatch.setattr(SparseLinearSystem, "DENSE_GRAM_MAX", 5)
    system = SparseLinearSystem.from_libsvm(str(full), seed=13)
    assert math.isclose(system.L, float(np.linalg.norm(system.A.toarray(), 2) ** 2), rel_tol=1e-10)
    assert system.mu is None and float(system.L_i[0]) == system.L
