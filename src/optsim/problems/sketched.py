"""The MAST objective: a problem transformed by random diagonal sketches of the model.

Demidovich, Malinovsky, Shulgin, Richtárik (2023/2025), "MAST: Model-Agnostic Sparsified
Training", arXiv 2311.16086 (ICLR 2025), problem (2): given a shift ``v`` (a pre-trained model)
and a random sketch ``S ~ D``,

    min_x f_D(x) = E_S[f_S(x)],    f_S(x) = f(v + S (x - v)),

so the model the loss sees is sparsified around ``v``, and the gradient

    grad f_S(x) = S^T grad f(v + S (x - v))

is sparsified too (the same support); it is an unbiased estimator of ``grad f_D(x)`` for every
law (differentiate under the expectation), and ``E[S] = I`` (the paper's assumption) ties f_D to f
(e.g. f_D = f for S = I, and f_D >= f for convex f by Jensen's inequality). For a federated f = (1/n) sum_i f_i each client's f_i is transformed the same way
(``f_D = (1/n) sum_i E[f_i(v + S_i (x - v))]``; every client draws its own sketch).

:class:`DiagonalSketch` is the law of a random diagonal ``S = diag(s)`` with its exact first and
second moments ``E[s]`` and ``E[s s^T]``:

* ``bernoulli`` (independent sparsification, the paper's running example): ``s_j = eta_j / p`` with
  ``eta_j ~ Bernoulli(p)`` independent (``E[S] = I``, DropConnect on weights with the usual
  ``1/p`` rescaling); ``E[s s^T] = 1`` off the diagonal, ``1/p`` on it.
* ``dropout``: the same masks without rescaling, ``s_j = eta_j``: ``E[S] = p I``, outside the
  paper's assumption ``E[S] = I`` (``E[grad f_S]`` is still ``grad f_D``, but for a quadratic f the
  minimizer of f_D is ``v + (x* - v) / p`` up to the diagonal term ``p (1 - p) diag(A)`` of
  ``E[S A S]``, not near x*); ``E[s s^T] = p^2`` off, ``p`` on the diagonal.
* ``rand_k``: ``k`` of the ``d`` coordinates uniformly at random, scaled by ``d/k`` (``E[S] = I``);
  ``E[s s^T] = d (k - 1) / (k (d - 1))`` off, ``d / k`` on the diagonal.
* ``identity``: ``S = I`` (f_D = f).

Constants of the paper's analysis (its notation as summarized in secondary sources; the paper's
theorems could not be read): ``L_D = lambda_max(E[S^T S])``, ``mu_D = lambda_min(E[S^T S])`` and
``L_S_max = sup_S lambda_max(S^T S)``; for a diagonal sketch ``E[S^T S] = diag(E[s_j^2])``.

:class:`SketchedProblem` is the transform. For quadratic base problems (``Quadratic``, or
``LeastSquares`` with the l2 regularizer: f_i(x) = x^T A_i x / 2 - b_i^T x + c_i) f_D is again a
quadratic, in closed form: with ``u = x - v``, ``m = E[s]``, ``M = E[s s^T]``,

    f_{D,i}(x) = f_i(v) + <m o grad f_i(v), u> + u^T (A_i o M) u / 2,
    grad f_{D,i}(x) = (A_i o M) u + m o grad f_i(v),

(``o`` the entrywise product; ``E[S A S] = A o M`` for diagonal S), so its oracles, constants,
minimizer ``x*_D`` and ``f*_D`` are exact. The stochastic oracle of MAST's methods is the base
problem's, evaluated at the sketched models (:meth:`SketchedProblem.sketched_grads`); for other
base problems only that oracle exists (f_D has no closed form) and the exact oracles raise.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..rng import random_k_mask
from .base import Problem
from .glm import LeastSquares

__all__ = ["SKETCH_KINDS", "DiagonalSketch", "SketchedProblem"]

SKETCH_KINDS = ("bernoulli", "dropout", "rand_k", "identity")


class DiagonalSketch:
    """The law of a random diagonal sketch ``S = diag(s)`` of R^d (see the module docstring).

    Args:
        d: dimension.
        kind: ``bernoulli`` (needs ``p``), ``dropout`` (needs ``p``), ``rand_k`` (needs ``k``) or
            ``identity``.
        p: keep probability in (0, 1] of the Bernoulli masks.
        k: coordinates kept by ``rand_k``, 1 <= k <= d.
    """

    def __init__(self, d: int, kind: str = "bernoulli", *, p: float | None = None, k: int | None = None):
        if kind not in SKETCH_KINDS:
            raise ValueError(f"sketch kind must be one of {', '.join(SKETCH_KINDS)}, got {kind!r}")
        if int(d) < 1:
            raise ValueError(f"sketch: d must be >= 1, got {d}")
        self.d, self.kind = int(d), kind
        self.p: float | None = None
        self.k: int | None = None
        if kind in ("bernoulli", "dropout"):
            if p is None or not 0 < float(p) <= 1:
                raise ValueError(f"sketch {kind}: give a keep probability p in (0, 1], got p={p}")
            if k is not None:
                raise ValueError(f"sketch {kind} takes p, not k (k is rand_k's)")
            self.p = float(p)
        elif kind == "rand_k":
            if k is None or not 1 <= int(k) <= self.d:
                raise ValueError(f"sketch rand_k: give k in [1, {self.d}], got k={k}")
            if p is not None:
                raise ValueError("sketch rand_k takes k, not p")
            self.k = int(k)
        elif p is not None or k is not None:
            raise ValueError("sketch identity takes neither p nor k")

    def params(self) -> dict:
        out: dict = {"kind": self.kind}
        if self.p is not None:
            out["p"] = self.p
        if self.k is not None:
            out["k"] = self.k
        return out

    def __repr__(self) -> str:
        return f"DiagonalSketch(d={self.d}, " + ", ".join(f"{k}={v!r}" for k, v in self.params().items()) + ")"

    # ---- the law's constants ------------------------------------------------------------------
    @property
    def unbiased(self) -> bool:
        """Whether E[S] = I (the paper's assumption)."""
        return self.kind != "dropout" or self.p == 1.0

    @property
    def density(self) -> float:
        """Expected fraction of coordinates kept."""
        if self.kind in ("bernoulli", "dropout"):
            return float(self.p)
        if self.kind == "rand_k":
            return self.k / self.d
        return 1.0

    def _diag_second(self) -> float:
        """E[s_j^2] (the same for every j)."""
        if self.kind == "bernoulli":
            return 1.0 / self.p
        if self.kind == "dropout":
            return self.p
        if self.kind == "rand_k":
            return self.d / self.k
        return 1.0

    def _off_second(self) -> float:
        """E[s_j s_l], j != l."""
        if self.kind == "bernoulli":
            return 1.0
        if self.kind == "dropout":
            return self.p ** 2
        if self.kind == "rand_k":
            return self.d * (self.k - 1) / (self.k * (self.d - 1)) if self.d > 1 else 0.0
        return 1.0

    def first_moment(self, dtype=torch.float64) -> torch.Tensor:
        """E[s] (d,)."""
        return torch.full((self.d,), self.p if self.kind == "dropout" else 1.0, dtype=dtype)

    def second_moment(self, dtype=torch.float64) -> torch.Tensor:
        """E[s s^T] (d, d): E[S A S] = A o E[s s^T] for any matrix A."""
        M = torch.full((self.d, self.d), self._off_second(), dtype=dtype)
        M.diagonal().fill_(self._diag_second())
        return M

    @property
    def L_D(self) -> float:
        """lambda_max(E[S^T S]) = max_j E[s_j^2]."""
        return self._diag_second()

    @property
    def mu_D(self) -> float:
        """lambda_min(E[S^T S]) = min_j E[s_j^2]."""
        return self._diag_second()

    @property
    def L_S_max(self) -> float:
        """sup_S lambda_max(S^T S) = max_j sup s_j^2 over the law's support."""
        if self.kind == "bernoulli":
            return 1.0 / self.p ** 2
        if self.kind == "rand_k":
            return (self.d / self.k) ** 2
        return 1.0

    # ---- sampling -------------------------------------------------------------------------------
    def sample(self, m: int, generator: torch.Generator | None = None, dtype=torch.float64,
               device="cpu") -> torch.Tensor:
        """``m`` independent sketches: (m, d), row r the diagonal s of S_r (drawn on the CPU from
        ``generator``, float64 scales cast to ``dtype``)."""
        m, d = int(m), self.d
        if self.kind == "identity":
            return torch.ones(m, d, dtype=dtype, device=device)
        if self.kind in ("bernoulli", "dropout"):
            keep = torch.rand(m, d, generator=generator, dtype=torch.float64) < self.p
            scale = 1.0 / self.p if self.kind == "bernoulli" else 1.0
        else:  # a uniformly random k-subset per row (the rand-k compressor's draw)
            keep = random_k_mask(m, d, self.k, generator)
            scale = d / self.k
        return (keep.to(torch.float64) * scale).to(device=device, dtype=dtype)


def _check_sketch(sketch, d: int) -> None:
    if not isinstance(sketch, DiagonalSketch):
        raise ValueError(f"sketch must be a DiagonalSketch, got {type(sketch).__name__}")
    if sketch.d != d:
        raise ValueError(f"the sketch is of dimension {sketch.d}, the problem of {d}: build it with d={d}")


class SketchedProblem(Problem):
    """MAST's objective f_D(x) = E_S[f(v + S (x - v))] of a base problem (module docstring).

    Args:
        base: the problem f = (1/n) sum_i f_i.
        sketch: the law D of S (:class:`DiagonalSketch` of the base's dimension).
        shift: the shift v (d,), e.g. a pre-trained model; default 0.

    Capabilities: ``sketch`` (the law), ``base``, ``shift``, the counted stochastic oracle
    :meth:`sketched_grads`; exact f_D oracles, constants and ``x_star`` for quadratic bases.
    """

    name = "sketched"

    def __init__(self, base: Problem, sketch: DiagonalSketch, shift: torch.Tensor | Sequence[float] | None = None):
        super().__init__(base.dtype, base.device)
        _check_sketch(sketch, base.d)
        self.base, self.sketch = base, sketch
        self.n, self.d, self.m = base.n, base.d, base.m
        if shift is None:
            v = torch.zeros(self.d, dtype=self.dtype, device=self.device)
        else:
            v = torch.as_tensor(shift).to(self.device, self.dtype).reshape(-1)
            if v.shape != (self.d,):
                raise ValueError(f"shift must have {self.d} entries (one model), got {tuple(v.shape)}")
        self.shift = v
        self._quad = self._quadratic_parts()

    # ---- closed form for quadratic bases ---------------------------------------------------------
    def _quadratic_parts(self):
        """(H (n, d, d), g (n, d), c (n,)) with f_{D,i}(x) = c_i + <g_i, u> + u^T H_i u / 2, u = x - v,
        or None when the base is not a quadratic."""
        base = self.base
        if base.quadratic_data is not None:
            A = base.quadratic_data[0]
        elif isinstance(base, LeastSquares) and base.regularizer == "l2":
            A = base._hessians(torch.zeros(base.n, base.d, dtype=base.dtype, device=base.device), None)
        else:
            return None
        V = self.shift.expand(self.n, self.d)
        M = self.sketch.second_moment(self.dtype).to(self.device)
        m1 = self.sketch.first_moment(self.dtype).to(self.device)
        H = A * M
        return H, m1 * base._grads(V, None), base._losses(V, None)

    @property
    def exact(self) -> bool:
        """Whether f_D has the closed form (a quadratic base)."""
        return self._quad is not None

    def _parts(self, rows):
        if self._quad is None:
            raise NotImplementedError(f"sketched: f_D of {self.base.name} has no closed form (only quadratic bases: "
                                      "quadratic, least_squares with l2); use the stochastic oracle sketched_grads")
        H, g, c = self._quad
        return (H, g, c) if rows is None else (H[rows], g[rows], c[rows])

    def _grads(self, X, rows):
        H, g, _ = self._parts(rows)
        return torch.bmm(H, (X - self.shift).unsqueeze(-1)).squeeze(-1) + g

    def _losses(self, X, rows):
        H, g, c = self._parts(rows)
        U = X - self.shift
        return c + (g * U).sum(-1) + 0.5 * (U * torch.bmm(H, U.unsqueeze(-1)).squeeze(-1)).sum(-1)

    def _hessians(self, X, rows):
        return self._parts(rows)[0].clone()

    def _smoothness(self):
        return torch.linalg.eigvalsh(self._parts(None)[0].to(torch.float64))[:, -1]

    def _global_smoothness(self):
        return float(torch.linalg.eigvalsh(self._parts(None)[0].to(torch.float64).mean(0))[-1])

    def _mu(self):
        ev = float(torch.linalg.eigvalsh(self._parts(None)[0].to(torch.float64).mean(0))[0])
        return ev if ev > 0 else None

    @property
    def convex(self):
        return self._quad is not None and self.mu is not None

    @property
    def local_mu(self) -> torch.Tensor:
        return torch.linalg.eigvalsh(self._parts(None)[0].to(torch.float64))[:, 0].clamp_min(0).cpu()

    def solve(self, tol=1e-12, max_iter=5):
        """x*_D = v - mean(H)^{-1} mean(g), refined to the float64 floor."""
        H, g, _ = (t.to(torch.float64) for t in self._parts(None))
        Hm = H.mean(0)
        x = self.shift.to(torch.float64) - torch.linalg.solve(Hm, g.mean(0))
        for _ in range(max_iter):
            r = self.full_grad(x)
            if float(r.norm()) <= tol:
                break
            x = x - torch.linalg.solve(Hm, r)
        return x

    def _fingerprint_parts(self):
        return [type(self.base).__name__, self.base.fingerprint, repr(sorted(self.sketch.params().items())), self.shift]

    @property
    def gradient_flops(self):
        return self.base.gradient_flops

    # ---- the stochastic oracle of MAST ---------------------------------------------------------
    def attach(self, meter):
        """Report counted calls (those of the base problem's oracles too) to ``meter``."""
        self.meter = meter
        self.base.attach(meter)
        return self

    def sketched_models(self, X: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """v + S o (X - v): the models of sketches S (m, d) at rows X (m, d)."""
        return self.shift + S * (X - self.shift)

    def sketched_grads(self, X: torch.Tensor, S: torch.Tensor, clients=None) -> torch.Tensor:
        """grad f_{S_j, c_j}(X[j]) = S_j o grad f_{c_j}(v + S_j o (X[j] - v)) for each row j (counted as
        one local gradient of the base problem per row)."""
        return S * self.base.grads(self.sketched_models(X, S), clients)

    def info(self) -> dict:
        out = {"base": self.base.name, "sketch": self.sketch.params(), "L_D": self.sketch.L_D,
               "L_S_max": self.sketch.L_S_max}
        if self.exact:
            out.update(super().info())
        return out
