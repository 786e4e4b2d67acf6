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
