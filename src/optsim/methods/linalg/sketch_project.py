"""Sketch-and-project for consistent linear systems, batched over independent runs, with its theory.

Gower & Richtárik (2015), "Randomized iterative methods for linear systems", SIAM J. Matrix Anal.
Appl. 36(4):1660-1690 (arXiv 1506.03296). Given A x = b (A: m x d), a symmetric positive definite
geometry B (d x d) and a random sketch S (m x q) drawn i.i.d. from a distribution D, one step is

    x_{k+1} = argmin_x ||x - x_k||_B^2  subject to  S^T A x = S^T b
            = x_k - B^-1 A^T S (S^T A B^-1 A^T S)^+ S^T (A x_k - b).

With Z = A^T S (S^T A B^-1 A^T S)^+ S^T A, the error obeys x_{k+1} - x* = (I - B^-1 Z)(x_k - x*), so

    E[x_k - x*] = (I - B^-1 E[Z])^k (x_0 - x*)                          (exact),
    E||x_k - x*||_B^2 <= rho^k ||x_0 - x*||_B^2,  rho = 1 - lambda_min(B^-1/2 E[Z] B^-1/2)

(the convergence theorem of the paper's Section 4; its number is not confirmed: only the abstract
and first pages could be read. Both formulas follow from x_{k+1} - x* = (I - B^-1 Z)(x_k - x*) with
Z independent of x_k, and tests/test_linear_systems.py checks them by enumerating every sketch
sequence and over many batched runs). The lower bound 1 - E[rank(S^T A)] / d <= rho follows from
Tr(B^-1/2 E[Z] B^-1/2) = E[rank(S^T A)].

Special cases (B, S): randomized Kaczmarz (I, e_i), randomized coordinate descent for a positive
definite A (A, e_i), coordinate descent for least squares (A^T A, A e_j), randomized Newton / block
coordinate descent (A, I_{:C}), block Kaczmarz (I, I_{:C}), Gaussian Kaczmarz (I, N(0, I_m)),
Gaussian pursuit (A, N(0, I_d)). "Convenient" probabilities p_i proportional to
Tr(S_i^T A B^-1 A^T S_i) = ||B^-1/2 A^T S_i||_F^2 (row norms squared for Kaczmarz, diagonal entries
for coordinate descent, column norms squared for least squares).

Design: a :class:`SketchAndProject` binds a :class:`~optsim.problems.linear_system.LinearSystem`,
a geometry and a sketch; :meth:`SketchAndProject.run` advances R independent runs at once on an
(R, d) tensor of iterates (each run draws its own sketches: one batched gather or product per
iteration, no loop over runs). A single run of a one-row / one-column sketch uses a NumPy/BLAS loop
(one row read and one axpy per iteration; ``bench/bench_linear_systems.py``). The theory objects
(E[Z], rho, the exact expected error, and for finite samplings the exact second moment
E||x_k - x*||_B^2 and its asymptotic rate) are computed in float64.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from ...problems.linear_system import LinearSystem
from ._threads import threads_for

__all__ = [
    "ColumnSketch",
    "GaussianSketch",
    "IndexSketch",
    "Runs",
    "SketchAndProject",
    "cd_least_squares",
    "coordinate_descent",
    "gaussian_kaczmarz",
    "kaczmarz",
    "randomized_newton",
]

GEOMETRIES = ("I", "A", "AtA")


# ---- sketch distributions ----------------------------------------------------------------------------
class _FiniteBlocks:
    """A finite sketch distribution: ``blocks`` (r, q) indices, option i drawn with probability p_i."""

    finite = True
    axis = ""

    def __init__(self, blocks, probs="uniform"):
        blocks = torch.as_tensor(blocks, dtype=torch.long)
        if blocks.ndim == 1:
            blocks = blocks[:, None]
        if blocks.ndim != 2 or blocks.shape[0] < 1 or blocks.shape[1] < 1:
            raise ValueError(f"{type(self).__name__}: blocks must be an (r, q) index array, got {tuple(blocks.shape)}")
        self.blocks, self.q = blocks, int(blocks.shape[1])
        self._probs_spec = probs
        self.probs: torch.Tensor | None = None

    def bind(self, solver: SketchAndProject) -> None:
        """Resolve the probabilities ("uniform", "convenient" or given) for the solver's system and geometry."""
        size = solver.system.rows if self.axis == "rows" else solver.system.d
        if int(self.blocks.min()) < 0 or int(self.blocks.max()) >= size:
            raise ValueError(f"{type(self).__name__}: block indices must lie in [0, {size})")
        r, spec = self.blocks.shape[0], self._probs_spec
        if isinstance(spec, str) and spec == "uniform":
            p = torch.full((r,), 1.0 / r, dtype=torch.float64)
        elif isinstance(spec, str) and spec == "convenient":
            P, D = solver._option_products(self)
            p = torch.einsum("rqd,rdq->r", P, D).clamp_min(0)  # Tr(S_i^T A B^-1 A^T S_i)
        elif isinstance(spec, str):
            raise ValueError(f"unknown probabilities '{spec}': use 'uniform', 'convenient' or a tensor")
        else:
            p = torch.as_tensor(spec, dtype=torch.float64).flatten()
            if p.shape != (r,) or bool((p < 0).any()):
                raise ValueError(f"{type(self).__name__}: probabilities must be {r} nonnegative numbers")
        if float(p.sum()) <= 0:
            raise ValueError(f"{type(self).__name__}: probabilities sum to zero")
        self.probs = p / p.sum()
        self._uniform = isinstance(spec, str) and spec == "uniform"

    def draw(self, count: int, gen: torch.Generator) -> torch.Tensor:
        """``count`` option indices, i.i.d. from the probabilities."""
        r = self.probs.shape[0]
        if self._uniform:
            return torch.randint(r, (count,), generator=gen)
        return torch.multinomial(self.probs, count, replacement=True, generator=gen)


class IndexSketch(_FiniteBlocks):
    """S = I_{:C}: the rows C of the system (one row: Kaczmarz; a block: block Kaczmarz / randomized
    Newton), C drawn from ``blocks`` (r, q) with probabilities ``probs`` ("uniform", "convenient" or
    r numbers)."""

    axis = "rows"

    @classmethod
    def rows(cls, m: int, probs="uniform") -> IndexSketch:
        """Single rows e_i, i in [0, m)."""
        return cls(torch.arange(m)[:, None], probs)

    @classmethod
    def subsets(cls, m: int, q: int, probs="uniform") -> IndexSketch:
        """Every q-subset of [0, m) (randomized Newton with a uniform random block of size q)."""
        if not 1 <= q <= m:
            raise ValueError(f"IndexSketch.subsets: need 1 <= q <= m, got q={q}, m={m}")
        return cls(torch.tensor(list(itertools.combinations(range(m), q))), probs)


class ColumnSketch(_FiniteBlocks):
    """S = A I_{:C}: columns C of A as the sketch (coordinate descent for least squares with B = A^T A)."""

    axis = "cols"

    @classmethod
    def columns(cls, d: int, probs="uniform") -> ColumnSketch:
        return cls(torch.arange(d)[:, None], probs)


class GaussianSketch:
    """S with i.i.d. N(0, 1) entries, m x q. E[Z] is exact (one-dimensional quadrature) for q = 1 and a
    Monte-Carlo estimate otherwise."""

    finite = False

    def __init__(self, q: int = 1):
        if int(q) < 1:
            raise ValueError(f"GaussianSketch: q must be >= 1, got {q}")
        self.q = int(q)

    def bind(self, solver: SketchAndProject) -> None:
        self.m = solver.system.rows


# ---- results -------------------------------------------------------------------------------------------
@dataclass
class Runs:
    """What :meth:`SketchAndProject.run` recorded at iterations ``steps`` (K,): ``sq_error`` (K, R)
    ||x_k - x*||_B^2 per run, ``mean_error`` (K, d) and ``sem_error`` (K, d) the mean over runs of
    x_k - x* and its standard error, ``x`` the final iterates (R, d)."""

    steps: torch.Tensor
    sq_error: torch.Tensor
    mean_error: torch.Tensor
    sem_error: torch.Tensor
    x: torch.Tensor


# ---- the solver -----------------------------------------------------------------------------------------
class SketchAndProject:
    """Sketch-and-project (Gower & Richtárik 2015, Algorithm 1; see the module docstring) on ``system``
    with geometry ``B`` ("I", "A" for a symmetric positive definite A, "AtA", or a (d, d) tensor) and
    random ``sketch`` (:class:`IndexSketch`, :class:`ColumnSketch`, :class:`GaussianSketch`)."""

    def __init__(self, system: LinearSystem, sketch, B="I"):
        if not isinstance(system, LinearSystem):
            raise ValueError("SketchAndProject needs an optsim.problems.linear_system.LinearSystem")
        self.system = system
        self.kind = B if isinstance(B, str) else "dense"
        if isinstance(B, str) and B not in GEOMETRIES:
            raise ValueError(f"unknown geometry '{B}': use 'I', 'A', 'AtA' or a (d, d) tensor")
        self.B = system.geometry(B)  # float64, validates "A"
        try:
            self._chol = torch.linalg.cholesky(self.B)
        except RuntimeError:
            raise ValueError("the geometry B must be symmetric positive definite") from None
        self.sketch = sketch
        A = system.A
        self.A, self.b, self.d = A, system.b, system.d
        self._Binv = None if self.kind in ("I",) else torch.cholesky_inverse(self._chol).to(A.dtype)
        sketch.bind(self)
        self._diag = None  # one-row sketches with B = I or A: S_i^T A B^-1 A^T S_i per option (zero rows -> 1)
        if sketch.finite and sketch.q == 1 and getattr(sketch, "axis", "") == "rows" and self.kind in ("I", "A"):
            i = sketch.blocks[:, 0]
            dg = A[i].pow(2).sum(1) if self.kind == "I" else A[i, i]
            self._diag = torch.where(dg > 0, dg, torch.ones_like(dg))

    # -- products of the finite options (theory, convenient probabilities) -------------------------------
    def _option_products(self, sk) -> tuple[torch.Tensor, torch.Tensor]:
        """For every option of a finite sketch: P_i = S_i^T A (r, q, d) and D_i = B^-1 P_i^T (r, d, q), float64."""
        A64 = self.system.A.to(torch.float64)
        if sk.axis == "rows":
            P = A64[sk.blocks]
        else:
            P = A64[:, sk.blocks].permute(1, 2, 0) @ A64  # (r, q, m) @ (m, d)
        return P, self._solve_B(P)

    def _solve_B(self, P: torch.Tensor) -> torch.Tensor:
        """B^-1 P^T for a batch P (r, q, d) in float64: (r, d, q)."""
        Y = torch.cholesky_solve(P.reshape(-1, self.d).T, self._chol)  # (d, r q)
        return Y.T.reshape(P.shape).transpose(1, 2)

    # -- theory ---------------------------------------------------------------------------------------------
    def expected_Z(self, samples: int = 200_000, seed: int = 0) -> torch.Tensor:
        """E[Z] (d, d), float64: exact for finite sketches and Gaussian sketches with q = 1
        (quadrature), otherwise a Monte-Carlo average of ``samples`` draws."""
        if getattr(self, "_EZ", None) is not None:
            return self._EZ
        sk = self.sketch
        if sk.finite:
            P, D = self._option_products(sk)
            Minv = torch.linalg.pinv(P @ D, hermitian=True)
            EZ = torch.einsum("r,rqd,rqs,rse->de", sk.probs, P, Minv, P)
        elif sk.q == 1:
            EZ = self._gaussian_EZ()
        else:
            EZ = self._monte_carlo_EZ(samples, seed)
        self._EZ = 0.5 * (EZ + EZ.T)
        return self._EZ

    def _gaussian_EZ(self) -> torch.Tensor:
        """q = 1: with B = L L^T and xi = L^-1 A^T s ~ N(0, C), C = L^-1 A^T A L^-T = V diag(lam) V^T,
        Z = L xi xi^T L^T / ||xi||^2 and E[xi xi^T / ||xi||^2] = V diag(w) V^T with
        w_i = int_0^inf lam_i / (1 + 2 t lam_i) prod_j (1 + 2 t lam_j)^-1/2 dt (from 1/s = int e^-ts dt)."""
        from scipy.integrate import quad

        A64 = self.system.A.to(torch.float64)
        Li = torch.linalg.solve_triangular(self._chol, A64.T, upper=False)  # L^-1 A^T (d, m)
        lam, V = torch.linalg.eigh(Li @ Li.T)
        lam = lam.clamp_min(0).numpy()
        scale = lam.max()
        lam_s = lam / scale

        def weight(i):
            f = lambda u: lam_s[i] / (1 + 2 * u * lam_s[i]) * np.prod((1 + 2 * u * lam_s) ** -0.5)
            # t = u / scale; split [0, 1] and [1, inf) for accuracy
            return quad(f, 0, 1, epsabs=0, epsrel=1e-13, limit=200)[0] + \
                quad(f, 1, np.inf, epsabs=0, epsrel=1e-13, limit=200)[0]

        w = torch.tensor([weight(i) for i in range(self.d)], dtype=torch.float64)
        M = (V * w) @ V.T
        return self._chol @ M @ self._chol.T

    def _monte_carlo_EZ(self, samples: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        A64 = self.system.A.to(torch.float64)
        EZ = torch.zeros(self.d, self.d, dtype=torch.float64)
        left = samples
        while left > 0:
            c = min(left, 4096)
            S = torch.randn(c, self.system.rows, self.sketch.q, generator=gen, dtype=torch.float64)
            P = S.transpose(1, 2) @ A64
            D = self._solve_B(P)
            EZ += torch.einsum("cqd,cqs,cse->de", P, torch.linalg.pinv(P @ D, hermitian=True), P)
            left -= c
        return EZ / samples

    def scaled_expected_Z(self) -> torch.Tensor:
        """L^-1 E[Z] L^-T with B = L L^T: orthogonally similar to B^-1/2 E[Z] B^-1/2 (same spectrum)."""
        EZ = self.expected_Z()
        X = torch.linalg.solve_triangular(self._chol, EZ, upper=False)
        X = torch.linalg.solve_triangular(self._chol, X.T, upper=False)
        return 0.5 * (X + X.T)

    def rate(self) -> float:
        """rho = 1 - lambda_min(B^-1/2 E[Z] B^-1/2)."""
        return 1.0 - float(torch.linalg.eigvalsh(self.scaled_expected_Z())[0])

    def iteration_matrix(self) -> torch.Tensor:
        """I - B^-1 E[Z] (d, d), float64: E[x_{k+1} - x*] = (I - B^-1 E[Z]) E[x_k - x*]."""
        return torch.eye(self.d, dtype=torch.float64) - torch.cholesky_solve(self.expected_Z(), self._chol)

    def expected_error(self, x0: torch.Tensor, steps) -> torch.Tensor:
        """Exact E[x_k - x*] for k in ``steps`` (increasing), shape (K, d), float64."""
        T = self.iteration_matrix()
        e = x0.to(torch.float64) - self.system.x_true.to(torch.float64)
        out, k = [], 0
        for s in [int(s) for s in steps]:
            while k < s:
                e, k = T @ e, k + 1
            out.append(e)
        return torch.stack(out)

    def _second_moment_operator(self) -> torch.Tensor:
        """K = sum_i p_i (I - Pi_i) (x) (I - Pi_i), Pi_i = B^-1 Z_i: vec(E[e e^T]) after one step (finite sketches)."""
        sk = self.sketch
        if not sk.finite:
            raise ValueError("the exact second moment needs a finite sketch (IndexSketch or ColumnSketch)")
        P, D = self._option_products(sk)
        Pi = D @ torch.linalg.pinv(P @ D, hermitian=True) @ P  # (r, d, d) = B^-1 Z_i
        T = torch.eye(self.d, dtype=torch.float64) - Pi
        return torch.einsum("r,rab,rcd->acbd", sk.probs, T, T).reshape(self.d ** 2, self.d ** 2)

    def expected_sq_error(self, x0: torch.Tensor, steps) -> torch.Tensor:
        """Exact E||x_k - x*||_B^2 for k in ``steps`` (finite sketches), shape (K,), float64."""
        K = self._second_moment_operator()
        e = x0.to(torch.float64) - self.system.x_true.to(torch.float64)
        E, k, out = torch.outer(e, e).reshape(-1), 0, []
        for s in [int(s) for s in steps]:
            while k < s:
                E, k = K @ E, k + 1
            out.append(float((E.reshape(self.d, self.d) * self.B).sum()))
        return torch.tensor(out, dtype=torch.float64)

    def second_moment_rate(self) -> float:
        """Asymptotic per-iteration rate of E||x_k - x*||_B^2: the spectral radius of the second-moment
        operator (finite sketches); lies in [rho^2, rho]."""
        return float(torch.linalg.eigvals(self._second_moment_operator()).abs().max())

    # -- iterations -------------------------------------------------------------------------------------------
    def _step(self, X: torch.Tensor, opts: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        """One sketch-and-project step of every run: X (R, d); ``opts`` (R,) the finite options drawn."""
        A, b, sk = self.A, self.b, self.sketch
        if self._diag is not None:  # one row: Kaczmarz (B = I) or coordinate descent (B = A), no (R, q, q) algebra
            i = sk.blocks[opts, 0]
            P = A.index_select(0, i)
            y = ((P * X).sum(1) - b[i]) / self._diag[opts]
            if self.kind == "I":
                return torch.addcmul(X, P, y[:, None], value=-1)
            return X.scatter_add(1, i[:, None], -y[:, None])
        coords = None
        if sk.finite:
            C = sk.blocks[opts]  # (R, q)
            if sk.axis == "rows":
                P = A[C]  # (R, q, d) rows of A
                r = torch.einsum("rqd,rd->rq", P, X) - b[C]
                if self.kind == "A":
                    coords, M = C, P.gather(2, C[:, None, :].expand(-1, C.shape[1], -1))
            else:
                AC = A.T[C]  # (R, q, m) columns of A
                r = torch.einsum("rqm,rm->rq", AC, X @ A.T - b)
                if self.kind == "AtA":
                    coords, M = C, AC @ AC.transpose(1, 2)
                else:
                    P = AC @ A
        else:
            S = torch.randn(X.shape[0], self.system.rows, sk.q, generator=gen, dtype=torch.float64).to(A.dtype)
            P = S.transpose(1, 2) @ A  # (R, q, d)
            r = torch.einsum("rqd,rd->rq", P, X) - torch.einsum("rmq,m->rq", S, b)
            if self.kind == "A":
                D = S
        if coords is None:
            if self.kind == "I":
                D = P.transpose(1, 2)
            elif not (self.kind == "A" and not sk.finite):
                D = self._Binv @ P.transpose(1, 2)
            M = P @ D
        if M.shape[-1] == 1:
            m = M[:, 0, 0]
            y = torch.where(m > 0, r[:, 0] / torch.where(m > 0, m, 1), 0)[:, None]
        else:
            y = (torch.linalg.pinv(M, hermitian=True) @ r[..., None])[..., 0]
        if coords is not None:
            return X.scatter_add(1, coords, -y)
        return X - (D @ y[..., None])[..., 0]

    def _fast_loop(self, x: np.ndarray, opts: np.ndarray, r: np.ndarray | None) -> None:
        """One run, one-row / one-column sketch, in place: Kaczmarz (B = I), coordinate descent (B = A),
        least-squares coordinate descent (B = A^T A, residual r = A x - b kept)."""
        from scipy.linalg.blas import daxpy, ddot

        A, b = self._np_A, self._np_b
        diag = self._np_diag
        if self.kind == "I":
            for i in opts:
                a = A[i]
                daxpy(a, x, a=-(ddot(a, x) - b[i]) / diag[i])
        elif self.kind == "A":
            for i in opts:
                x[i] -= (ddot(A[i], x) - b[i]) / diag[i]
        else:
            At = self._np_At
            for j in opts:
                a = At[j]
                c = ddot(a, r) / diag[j]
                x[j] -= c
                daxpy(a, r, a=-c)

    def _fast_ok(self, R: int) -> bool:
        sk = self.sketch
        return (R == 1 and sk.finite and sk.q == 1 and self.A.dtype == torch.float64 and self.A.device.type == "cpu"
                and ((sk.axis == "rows" and self.kind in ("I", "A")) or (sk.axis == "cols" and self.kind == "AtA")))

    def _prepare_fast(self) -> None:
        if getattr(self, "_np_A", None) is not None:
            return
        A = self.A.numpy()
        self._np_A, self._np_b = A, self.b.numpy()
        blocks = self.sketch.blocks[:, 0].numpy()
        if self.sketch.axis == "rows":
            self._np_diag = np.einsum("ij,ij->i", A, A) if self.kind == "I" else np.diag(A).copy()
        else:
            self._np_At = np.ascontiguousarray(A.T)
            self._np_diag = np.einsum("ij,ij->i", self._np_At, self._np_At)
        self._np_blocks = blocks

    def run(self, x0: torch.Tensor, iters: int, runs: int = 1, seed: int = 0, every: int = 1,
            options: torch.Tensor | None = None, fast: bool = True) -> Runs:
        """``runs`` independent runs from ``x0`` for ``iters`` iterations, recording every ``every`` steps.

        ``options`` (iters, runs) fixes the finite sketch options drawn (tests); otherwise they are drawn
        from a generator seeded by ``seed``. ``fast`` lets a single run of a one-row or one-column
        sketch use the NumPy/BLAS loop (same draws, same result up to rounding).
        """
        if iters < 0 or runs < 1 or every < 1:
            raise ValueError("run: need iters >= 0, runs >= 1, every >= 1")
        sys_ = self.system
        x0 = torch.as_tensor(x0).to(self.A.device, self.A.dtype)
        if x0.shape != (self.d,):
            raise ValueError(f"run: x0 must have shape ({self.d},), got {tuple(x0.shape)}")
        gen = torch.Generator().manual_seed(int(seed))
        X = x0.expand(runs, self.d).clone()
        steps, sq, mean, sem = [], [], [], []

        def record(k, X):
            E = (X - sys_.x_true).to(torch.float64)
            steps.append(k)
            sq.append(sys_.error(X, None if self.kind == "I" else self.B).to(torch.float64))
            mean.append(E.mean(0))
            sem.append(E.std(0) / math.sqrt(runs) if runs > 1 else torch.full((self.d,), math.nan, dtype=torch.float64))

        record(0, X)
        use_fast = fast and self._fast_ok(runs)
        x = r = None
        if use_fast:
            self._prepare_fast()
            x = X[0].numpy().copy()
            r = (self._np_A @ x - self._np_b) if self.kind == "AtA" else None
        q = self.sketch.q
        flops = runs * q * self.d * (4 + q + (self.system.rows if not self.sketch.finite or self.sketch.axis == "cols"
                                              else 0) + (self.d if self.kind not in ("I", "A", "AtA") else 0))
        with threads_for(flops):
            X = self._iterate(X, iters, runs, every, options, gen, use_fast, record, (x, r))
        return Runs(torch.tensor(steps), torch.stack(sq), torch.stack(mean), torch.stack(sem), X)

    def _iterate(self, X, iters, runs, every, options, gen, use_fast, record, fast_state) -> torch.Tensor:
        """The iterations of :meth:`run` (the final iterates returned)."""
        x, r = fast_state
        k = 0
        while k < iters:
            n = min(every - k % every, iters - k)
            if self.sketch.finite:
                if options is not None:
                    chunk = torch.as_tensor(options[k:k + n], dtype=torch.long).reshape(n, runs)
                else:
                    chunk = self.sketch.draw(n * runs, gen).reshape(n, runs)
            if use_fast:
                self._fast_loop(x, self._np_blocks[chunk[:, 0].numpy()], r)
                X = torch.from_numpy(x.copy())[None]
            else:
                for j in range(n):
                    X = self._step(X, chunk[j] if self.sketch.finite else None, gen)
            k += n
            if k % every == 0 or k == iters:
                record(k, X)
        return X


# ---- the named special cases ------------------------------------------------------------------------------
def kaczmarz(system: LinearSystem, probs="convenient") -> SketchAndProject:
    """Randomized Kaczmarz (Strohmer & Vershynin 2009; S1 with B = I, S = e_i): x - (A_i x - b_i) / ||A_i||^2 A_i^T,
    i drawn with p_i proportional to ||A_i||^2 by default; rho = 1 - lambda_min(A^T A) / ||A||_F^2 then."""
    return SketchAndProject(system, IndexSketch.rows(system.rows, probs), "I")


def coordinate_descent(system: LinearSystem, probs="convenient") -> SketchAndProject:
    """Randomized coordinate descent for a symmetric positive definite A (S1 with B = A, S = e_i):
    x_i -= (A_i x - b_i) / A_ii, p_i proportional to A_ii by default; rho = 1 - lambda_min(A) / Tr A then."""
    return SketchAndProject(system, IndexSketch.rows(system.rows, probs), "A")


def cd_least_squares(system: LinearSystem, probs="convenient") -> SketchAndProject:
    """Coordinate descent for least squares (S1 with B = A^T A, S = A e_j): x_j -= A_{:j}^T (A x - b) / ||A_{:j}||^2,
    p_j proportional to ||A_{:j}||^2 by default; rho = 1 - lambda_min(A^T A) / ||A||_F^2 then."""
    return SketchAndProject(system, ColumnSketch.columns(system.d, probs), "AtA")


def randomized_newton(system: LinearSystem, q: int, probs="uniform") -> SketchAndProject:
    """Randomized Newton / block coordinate descent for a symmetric positive definite A (S1 with B = A,
    S = I_{:C}, C a random q-subset): x_C -= (A_CC)^-1 (A_C x - b_C)."""
    return SketchAndProject(system, IndexSketch.subsets(system.rows, q, probs), "A")


def gaussian_kaczmarz(system: LinearSystem, q: int = 1, B="I") -> SketchAndProject:
    """Gaussian sketches S ~ N(0, I_m)^{m x q} (Gaussian Kaczmarz with B = I, Gaussian pursuit with B = A)."""
    return SketchAndProject(system, GaussianSketch(q), B)
