"""The problem interface: a federated objective f(x) = (1/n) sum_i f_i(x) with batched oracles.

Client state is a batch dimension: oracles take ``X`` of shape ``(m, d)``, one row per client
in ``clients`` (all ``n`` clients when ``clients is None``), and return ``(m, d)`` (gradients),
``(m,)`` (losses) or ``(m, d, d)`` (Hessians). Each *counted* oracle call is reported to the
run's :class:`~optsim.meter.Meter` in units of one local full oracle call (a minibatch of b of
a client's m_i samples counts b / m_i). The global quantities used for metrics (:meth:`loss`,
:meth:`full_grad`) are not counted.

Constants (``L``, ``L_i``, ``L_max``, ``L_tilde``, ``mu``) are computed from the data, and
``x_star``, ``f_star`` are solved in float64 by Newton's method to ||grad f|| <= 1e-12 and
cached on disk under :func:`cache_dir` by a hash of the problem's data.
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ..meter import Meter

__all__ = ["Problem", "Reshuffler", "cache_dir", "SOLVE_TOL"]

#: Target of the float64 solve of x_star: ||grad f(x_star)|| <= SOLVE_TOL.
SOLVE_TOL = 1e-12


def cache_dir() -> Path:
    """Where solved optima are cached (``$OPTSIM_CACHE`` or ``~/.cache/optsim/solutions``)."""
    return Path(os.environ.get("OPTSIM_CACHE", Path.home() / ".cache" / "optsim" / "solutions")).expanduser()


def _rows(clients, n: int, device) -> torch.Tensor | None:
    if clients is None:
        return None
    return torch.as_tensor(clients, dtype=torch.long, device=device)


class Problem:
    """Base class; subclasses implement the uncounted row oracles ``_grads``, ``_losses``,
    ``_sample_grads``, ``_hessians`` and the constants ``_smoothness`` / ``_mu``."""

    name: ClassVar[str] = ""
    convex: ClassVar[bool] = True

    n: int
    d: int
    m: torch.Tensor  # (n,) samples per client

    def __init__(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
        self.dtype, self.device = dtype, torch.device(device)
        self.meter: Meter | None = None

    # ---- subclass interface (uncounted, rows = client ids or None for all) -------------------
    def _grads(self, X: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _losses(self, X: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _grads_many(self, Xs: torch.Tensor) -> torch.Tensor:
        """Full-participation gradients of several models at once: (R, n, d) -> (R, n, d)
        (batched runs; subclasses override it with one batched computation)."""
        return torch.stack([self._grads(X, None) for X in Xs])

    def _losses_many(self, Xs: torch.Tensor) -> torch.Tensor:
        """Local losses of several models at once: (R, n, d) -> (R, n) (batched runs' metrics)."""
        return torch.stack([self._losses(X, None) for X in Xs])

    def _sample_grads(self, X, rows, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no per-sample gradients")

    def _hessians(self, X, rows) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no Hessian oracle")

    def _smoothness(self) -> torch.Tensor:
        """(n,) local smoothness constants L_i, and sets nothing else."""
        raise NotImplementedError

    def _global_smoothness(self) -> float:
        raise NotImplementedError

    def _mu(self) -> float | None:
        return None

    def _fingerprint_parts(self) -> list:
        raise NotImplementedError

    # ---- meter --------------------------------------------------------------------------------
    def attach(self, meter: Meter | None) -> "Problem":
        """Report counted oracle calls to ``meter`` (``None`` detaches)."""
        self.meter = meter
        return self

    def _count(self, kind: str, rows, amount) -> None:
        if self.meter is not None:
            self.meter.add_oracle(kind, None if rows is None else rows.cpu(), amount)

    def _check_X(self, X: torch.Tensor, rows) -> None:
        m = self.n if rows is None else rows.shape[0]
        if X.shape != (m, self.d):
            raise ValueError(f"expected X of shape ({m}, {self.d}) (one row per client), got {tuple(X.shape)}")

    # ---- counted oracles ----------------------------------------------------------------------
    def grads(self, X: torch.Tensor, clients=None) -> torch.Tensor:
        """Local full gradients: row j is grad f_{c_j}(X[j]) for c = clients (default all)."""
        rows = _rows(clients, self.n, self.device)
        self._check_X(X, rows)
        self._count("grad", rows, 1.0)
        return self._grads(X, rows)

    def losses(self, X: torch.Tensor, clients=None) -> torch.Tensor:
        """Local losses f_{c_j}(X[j])."""
        rows = _rows(clients, self.n, self.device)
        self._check_X(X, rows)
        self._count("func", rows, 1.0)
        return self._losses(X, rows)

    def point_losses(self, P: torch.Tensor, clients=None) -> torch.Tensor:
        """Local losses at several points per client in one call: P (m, k, d) -> (m, k), entry
        [j, r] = f_{c_j}(P[j, r]); counted as k local function evaluations per client (zeroth-order
        methods evaluate their candidate points this way)."""
        rows = _rows(clients, self.n, self.device)
        self._check_P(P, rows)
        self._count("func", rows, float(P.shape[1]))
        return self._point_losses(P, rows)

    def sample_point_losses(self, P: torch.Tensor, idx: torch.Tensor, clients=None) -> torch.Tensor:
        """Minibatch losses at several points per client, the same samples at every point:
        P (m, k, d), idx (m, b) local sample indices -> (m, k), entry [j, r] = (1/b) sum_{s in idx[j]}
        f_{c_j, s}(P[j, r]); counted as k b / m_i local function evaluations per client."""
        rows = _rows(clients, self.n, self.device)
        self._check_P(P, rows)
        m = self.m if rows is None else self.m[rows]
        self._count("func", rows, (P.shape[1] * idx.shape[1] / m.to(torch.float64)).cpu())
        return self._sample_point_losses(P, rows, idx)

    def _check_P(self, P: torch.Tensor, rows) -> None:
        m = self.n if rows is None else rows.shape[0]
        if P.ndim != 3 or P.shape[0] != m or P.shape[2] != self.d:
            raise ValueError(f"expected points P of shape ({m}, k, {self.d}) (k points per client), "
                             f"got {tuple(P.shape)}")

    def _point_losses(self, P: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """(m, k, d) -> (m, k), uncounted; by default one :meth:`_losses` call on the m k points with
        each client's row repeated k times (subclasses may override it with a cheaper product)."""
        m, k, d = P.shape
        r = torch.arange(self.n, device=self.device) if rows is None else rows
        return self._losses(P.reshape(m * k, d), r.repeat_interleave(k)).reshape(m, k)

    def _sample_point_losses(self, P: torch.Tensor, rows, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no per-sample function values")

    def hessians(self, X: torch.Tensor, clients=None) -> torch.Tensor:
        """Local Hessians, shape (m, d, d)."""
        rows = _rows(clients, self.n, self.device)
        self._check_X(X, rows)
        self._count("hess", rows, 1.0)
        return self._hessians(X, rows)

    def sample_grads(self, X: torch.Tensor, idx: torch.Tensor, clients=None) -> torch.Tensor:
        """Mean gradient of the samples ``idx[j]`` (shape (m, b), local indices) of each client."""
        rows = _rows(clients, self.n, self.device)
        self._check_X(X, rows)
        m = self.m if rows is None else self.m[rows]
        self._count("grad", rows, (idx.shape[1] / m.to(torch.float64)).cpu())
        return self._sample_grads(X, rows, idx)

    def weighted_sample_grads(self, X: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor,
                              clients=None) -> torch.Tensor:
        """sum_s weights[j, s] grad f_{c_j, idx[j, s]}(X[j]) for samples ``idx`` (m, b) with weights (m, b)
        (a weight 0 marks padding: samples of random batches of different sizes); counted as the
        number of nonzero weights / m_i local gradients per client."""
        rows = _rows(clients, self.n, self.device)
        self._check_X(X, rows)
        m = self.m if rows is None else self.m[rows]
        self._count("grad", rows, ((weights != 0).sum(1).to(torch.float64).cpu() / m.to(torch.float64).cpu()))
        return self._weighted_sample_grads(X, rows, idx, weights)

    def _weighted_sample_grads(self, X, rows, idx, weights) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no per-sample gradients")

    def minibatch_grads(self, X: torch.Tensor, batch_size: int, generator: torch.Generator,
                        clients=None) -> torch.Tensor:
        """Minibatch stochastic gradients, ``batch_size`` samples drawn with replacement per client."""
        rows = _rows(clients, self.n, self.device)
        return self.sample_grads(X, self.sample_indices(batch_size, generator, rows), rows)

    def sample_indices(self, batch_size: int, generator: torch.Generator, clients=None) -> torch.Tensor:
        """(m, batch_size) local sample indices drawn uniformly with replacement for each of
        ``clients`` (default all): the minibatches of :meth:`minibatch_grads`, for methods that
        evaluate one minibatch at several points (PAGE, MARINA, MVR estimators)."""
        rows = _rows(clients, self.n, self.device)
        m = (self.m if rows is None else self.m[rows]).cpu()
        u = torch.rand(m.shape[0], int(batch_size), generator=generator, dtype=torch.float64)
        return (u * m.to(torch.float64)[:, None]).long().clamp_max_(m[:, None] - 1).to(self.device)

    # ---- uncounted global quantities (metrics) -------------------------------------------------
    def _broadcast(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype).reshape(1, self.d).expand(self.n, self.d)

    def loss(self, x: torch.Tensor) -> float:
        """f(x) = (1/n) sum_i f_i(x), plus Psi(x) when the problem has a :attr:`nonsmooth` term (not
        counted)."""
        f = float(self._losses(self._broadcast(x), None).mean())
        return f if self.nonsmooth is None else f + float(self.nonsmooth.value(x.to(self.dtype)))

    def full_grad(self, x: torch.Tensor) -> torch.Tensor:
        """grad f(x) (not counted)."""
        return self._grads(self._broadcast(x), None).mean(0)

    def full_hessian(self, x: torch.Tensor) -> torch.Tensor:
        return self._hessians(self._broadcast(x), None).mean(0)

    # ---- constants ------------------------------------------------------------------------------
    @cached_property
    def L_i(self) -> torch.Tensor:
        """(n,) smoothness constants of the f_i, float64 on the CPU."""
        return self._smoothness().to(torch.float64).cpu()

    @cached_property
    def L(self) -> float:
        """Smoothness constant of f."""
        return float(self._global_smoothness())

    @property
    def L_max(self) -> float:
        return float(self.L_i.max())

    @property
    def L_tilde(self) -> float:
        """sqrt(mean_i L_i^2), the constant of the EF21/MARINA analyses."""
        return float(self.L_i.pow(2).mean().sqrt())

    @cached_property
    def mu(self) -> float | None:
        """Strong convexity constant of f (None when f is not strongly convex)."""
        return self._mu()

    @property
    def kappa(self) -> float | None:
        return None if not self.mu else self.L / self.mu

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the problem's kind, parameters and data: the key of the cached solution."""
        h = hashlib.sha256(type(self).__name__.encode())
        for part in self._fingerprint_parts():
            if isinstance(part, torch.Tensor):
                part = part.detach().to(torch.float64).cpu().contiguous().numpy()
            if isinstance(part, np.ndarray):
                h.update(str(part.shape).encode())
                h.update(np.ascontiguousarray(part).tobytes())
            else:
                h.update(repr(part).encode())
        if self.nonsmooth is not None:  # absent otherwise: smooth problems keep their fingerprints
            h.update(repr(self.nonsmooth).encode())
        return h.hexdigest()[:32]

    @cached_property
    def _solution(self) -> tuple[torch.Tensor, float] | None:
        if not self.convex:
            return None
        path = cache_dir() / f"{self.fingerprint}.npz"
        if path.exists():
            try:
                with np.load(path) as z:
                    return torch.as_tensor(z["x"]).to(self.device, self.dtype), float(z["f"])
            except (OSError, KeyError, ValueError):
                pass  # unreadable cache entry: solve again and overwrite it
        exact = self if self.dtype == torch.float64 else self._float64_copy()
        x = exact.solve()
        if self.nonsmooth is not None:
            from .regularizer import composite_solution

            x = composite_solution(exact, self.nonsmooth, x0=x)
        f = exact._loss64(x) + (0.0 if self.nonsmooth is None else float(self.nonsmooth.value(x)))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, x=x.cpu().numpy(), f=np.float64(f))
        os.replace(tmp, path)
        return x.to(self.device, self.dtype), f

    @property
    def x_star(self) -> torch.Tensor | None:
        """The minimizer (convex problems), solved in float64 and cached."""
        s = self._solution
        return None if s is None else s[0]

    @property
    def f_star(self) -> float | None:
        s = self._solution
        return None if s is None else s[1]

    def dist_sq(self, X: torch.Tensor) -> torch.Tensor:
        """Squared distance of the models X (..., d) to the solution: ||X - x*||^2 (the ``dist_sq``
        column). Problems whose minimizers form a set (an eigenvector up to its sign, an eigenspace up
        to a rotation) override it with the distance to that set."""
        return (X - self.x_star).pow(2).sum(-1)

    def _float64_copy(self) -> "Problem":
        """An uncounted float64 copy of this problem (x_star of a float32 problem is solved in float64)."""
        p = copy.copy(self)
        p.__dict__ = {k: v.to(torch.float64) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                      for k, v in self.__dict__.items()}
        p.dtype, p.meter = torch.float64, None
        return p

    def _loss64(self, x: torch.Tensor) -> float:
        return float(self._losses(self._broadcast(x), None).to(torch.float64).mean())

    def solve(self, tol: float = SOLVE_TOL, max_iter: int = 200) -> torch.Tensor:
        """Damped Newton's method on f in float64, from 0, to ||grad f|| <= ``tol``.

        When the data's scale puts float64's floor for ||grad f|| above ``tol`` (large ||x*||,
        large features), Newton's method stalls there; the point is accepted if ||grad f|| is
        within a small multiple of that floor, 64 eps (L ||x|| + ||grad f(0)||), and the
        residual reached is kept in ``solve_residual``.
        """
        if self.dtype != torch.float64:
            raise RuntimeError("solve() needs a float64 problem; build it with dtype=float64")
        x = torch.zeros(self.d, dtype=torch.float64, device=self.device)
        fx = self._loss64(x)
        g0 = float(self.full_grad(x).norm())
        best, best_gn = x, g0
        for _ in range(max_iter):
            g = self.full_grad(x)
            gn = float(g.norm())
            if gn < best_gn:
                best, best_gn = x, gn
            if gn <= tol:
                self.solve_residual = gn
                return x
            H = self.full_hessian(x)
            step = torch.linalg.solve(H, g)
            t = 1.0
            # below f's float64 resolution the line search only sees rounding noise: full steps
            tiny = float(g @ step) < 1e3 * torch.finfo(torch.float64).eps * max(1.0, abs(fx))
            while not tiny:
                x_new = x - t * step
                f_new = self._loss64(x_new)
                if f_new <= fx - 1e-4 * t * float(g @ step) or t < 1e-10:
                    break
                t *= 0.5
            if tiny or t < 1e-10:  # no decrease representable any more: at the float64 floor
                x_new = x - step
            x, fx = x_new, self._loss64(x_new)
        gn = float(self.full_grad(x).norm())
        if gn < best_gn:
            best, best_gn = x, gn
        floor = 64 * torch.finfo(torch.float64).eps * (self.L * float(best.norm()) + g0)
        if best_gn > max(tol, floor):
            raise RuntimeError(f"could not solve {self.name} to ||grad|| <= {tol:g} (reached {best_gn:.3g})")
        self.solve_residual = best_gn
        return best

    # ---- what a method may ask of any problem (None / False where the problem cannot tell) -------
    def noise_variance(self, batch_size: int = 1) -> float | None:
        """sigma^2 = E||g(x) - grad f_i(x)||^2 of one stochastic gradient of ``batch_size`` samples
        (:meth:`minibatch_grads`), when the problem knows it."""
        return None

    @property
    def mean_squared_smoothness(self) -> float | None:
        """L_sigma with E||g(x; xi) - g(y; xi) - grad f(x) + grad f(y)||^2 <= L_sigma^2 ||x - y||^2 for
        one sample xi, when the problem knows it."""
        return None

    @property
    def additive_noise(self) -> bool:
        """Whether the stochastic oracle adds noise that does not depend on x (g(x; xi) - g(y; xi) =
        grad f_i(x) - grad f_i(y)): sample-smoothness terms of the theory then vanish."""
        return False

    @property
    def has_sample_grads(self) -> bool:
        """Whether per-sample gradients exist (a finite sum f_i = (1/m_i) sum_j f_ij)."""
        return type(self)._sample_grads is not Problem._sample_grads

    @property
    def L_samples(self) -> torch.Tensor | None:
        """(n, M) smoothness constants L_ij of the samples' functions (finite sums), else None."""
        return None

    @property
    def L_sample_max(self) -> float:
        """max_ij L_ij, the largest smoothness constant of one sample's function; L_max for
        problems whose samples are not separate functions (e.g. additive noise)."""
        return self.L_max

    @property
    def local_mu(self) -> torch.Tensor:
        """(n,) strong convexity constants mu_i of the f_i (float64, CPU); ValueError when unknown."""
        raise ValueError(f"no local strong convexity constants for {self.name}: set the stepsize and probabilities "
                         "explicitly")

    def sample_gradient_variance(self, x: torch.Tensor) -> float:
        """max_i (1/m_i) sum_j ||grad f_ij(x) - grad f_i(x)||^2 at x (uncounted): the sigma^2 of a
        one-sample stochastic gradient there."""
        raise ValueError(f"{self.name} has no per-sample gradient variance (a finite-sum problem is needed)")

    @property
    def L0_L1(self) -> dict | None:
        """(L0, L1)-smoothness constants (||grad^2 f(x)|| <= L0 + L1 ||grad f(x)||), when known:
        ``{"L0": of f, "L0_i": (n,) of the f_i, "L0_samples": of one sample's function, "L1": L1}``."""
        return None

    def subset(self, clients) -> "Problem":
        """The problem of the clients ``clients`` only (f = their mean): the objective the honest
        clients share under a Byzantine threat model."""
        raise NotImplementedError(f"{self.name} has no sub-problem of a subset of its clients")

    def flip_labels(self, clients) -> "Problem":
        """The same problem with the labels of ``clients`` flipped (binary +-1: y -> -y): the data of
        label-flipping Byzantine clients."""
        raise NotImplementedError(f"{self.name} has no labels to flip")

    @property
    def quadratic_data(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(A (n, d, d), b (n, d)) when every f_i(x) = x^T A_i x / 2 - b_i^T x exactly (closed forms of
        the theory), else None."""
        return None

    #: named blocks of x (neural models: weight matrices, biases); None: one vector
    layout = None

    #: the Riemannian manifold x lives on (:mod:`optsim.manifolds`; oracles then return Riemannian
    #: gradients, tangent at x); None: R^d
    manifold = None

    #: the curvature constant zeta of Zhang & Sra (2016) on the problem's domain (1 in R^d)
    zeta = 1.0

    #: the nonsmooth term Psi of a composite objective f + Psi (:class:`optsim.problems.regularizer.Regularizer`,
    #: set by :meth:`with_nonsmooth`): the oracles stay those of f, ``loss``, ``x_star`` and ``f_star`` are
    #: those of f + Psi, and only methods that apply prox_Psi accept the problem; None: f alone
    nonsmooth = None

    def with_nonsmooth(self, psi) -> "Problem":
        """This problem with the nonsmooth term ``psi`` (None, "l1" / "box" mappings, a Regularizer; see
        :func:`optsim.problems.regularizer.as_regularizer`): min f(x) + Psi(x). Psi = 0 returns ``self``."""
        from .regularizer import as_regularizer

        reg = as_regularizer(psi)
        if reg.trivial:
            return self
        p = copy.copy(self)
        p.__dict__ = {k: v for k, v in self.__dict__.items() if k not in ("fingerprint", "_solution")}
        p.nonsmooth = reg
        return p

    #: the random sketch law of a sketched objective (``problems/sketched.py``: MAST's f_D); None: f itself
    sketch = None

    #: the operator of a variational inequality (``problems/minmax.py``: find z* with F(z*) = 0): the
    #: gradient oracles then return the clients' operator values F_i(z), ``loss`` is the game's payoff,
    #: ``x_star`` is z* and ``f_star`` None, and only methods for VIs (``handles`` "operator") accept the
    #: problem; None: minimization of f
    operator = None

    def initial_point(self) -> torch.Tensor | None:
        """The problem's own initial point (e.g. a network's initialization); None: start at 0."""
        return None

    def extra_metrics(self, x: torch.Tensor) -> dict[str, float]:
        """Metrics besides loss and gradient norm (e.g. held-out accuracy), uncounted."""
        return {}

    @property
    def gradient_flops(self) -> float:
        """Approximate floating-point operations of one batched gradient over all clients."""
        return 4.0 * self.n * float(self.m.max()) * self.d

    def info(self) -> dict:
        """The problem's sizes and constants, as ``optsim info`` prints them."""
        out = {"problem": self.name, "n": self.n, "d": self.d,
               "samples per client (min/max)": (int(self.m.min()), int(self.m.max())),
               "L": self.L, "L_i min": float(self.L_i.min()), "L_i max": self.L_max,
               "L_tilde": self.L_tilde, "mu": self.mu, "kappa": self.kappa}
        if self.convex:
            out["f*"] = self.f_star
            out["||grad f(x*)||"] = float(self.full_grad(self.x_star).norm())
        return out


class Reshuffler:
    """Per-client random reshuffling: each client walks through its own random permutation of
    its m_i samples, ``batch_size`` at a time, and reshuffles when fewer than ``batch_size``
    unseen samples remain (the tail of an epoch that does not fill a batch is skipped).

    ``next()`` returns local sample indices of shape (n, batch_size) for
    :meth:`Problem.sample_grads`; ``epoch_done`` tells which clients just finished an epoch.
    """

    def __init__(self, problem: Problem, batch_size: int, generator: torch.Generator):
        if batch_size < 1 or batch_size > int(problem.m.min()):
            raise ValueError(f"batch_size must be in [1, {int(problem.m.min())}] (smallest client), got {batch_size}")
        self.m = problem.m.cpu()
        self.b, self.gen = int(batch_size), generator
        self.M = int(self.m.max())
        self.perm = torch.empty(problem.n, self.M, dtype=torch.long)
        self.pos = torch.zeros(problem.n, dtype=torch.long)
        self._shuffle(torch.ones(problem.n, dtype=torch.bool))
        self.device = problem.device

    def _shuffle(self, which: torch.Tensor) -> None:
        keys = torch.rand(int(which.sum()), self.M, generator=self.gen, dtype=torch.float64)
        keys[torch.arange(self.M)[None, :] >= self.m[which][:, None]] = math.inf
        self.perm[which] = keys.argsort(dim=1)
        self.pos[which] = 0

    def next(self) -> torch.Tensor:
        idx = self.perm.gather(1, self.pos[:, None] + torch.arange(self.b)[None, :])
        self.pos += self.b
        self.epoch_done = self.pos + self.b > self.m
        if self.epoch_done.any():
            self._shuffle(self.epoch_done)
        return idx.to(self.device)

    @property
    def steps_per_epoch(self) -> torch.Tensor:
        """(n,) number of batches in one epoch of each client."""
        return self.m // self.b
