"""Symmetric positive definite matrices with the affine-invariant metric."""
from __future__ import annotations

import torch

from .base import Manifold

__all__ = ["SPD", "log_euclidean_mean", "sym_function"]


def sym_function(S: torch.Tensor, f) -> torch.Tensor:
    """f applied to the eigenvalues of the symmetric matrices S (..., k, k) (one batched ``eigh``)."""
    w, V = torch.linalg.eigh(S)
    return (V * f(w).unsqueeze(-2)) @ V.transpose(-1, -2)


def _sym(S: torch.Tensor) -> torch.Tensor:
    return (S + S.transpose(-1, -2)) / 2


class SPD(Manifold):
    """P(k) = {X in R^{k x k} : X = X^T, X > 0}, points and tangent vectors (symmetric matrices)
    flattened to D = k^2 entries, with the affine-invariant metric <U, V>_X = tr(X^{-1} U X^{-1} V).
    With S = X^{1/2} and M = S^{-1} U S^{-1} (closed forms of e.g. Pennec, Fillard, Ayache 2006,
    "A Riemannian framework for tensor computing"; Sra & Hosseini 2015, "Conic geometric optimization
    on the manifold of positive definite matrices"):

    * Exp_X(U) = S expm(M) S;  Log_X(Y) = S logm(S^{-1} Y S^{-1}) S;
    * dist(X, Y) = ||logm(S^{-1} Y S^{-1})||_F;
    * parallel transport along t -> Exp_X(t U) to t = 1: Gamma(V) = E V E^T with
      E = S expm(M / 2) S^{-1} (= (Y X^{-1})^{1/2}, Y = Exp_X(U));
    * tangent projection: symmetrization (orthogonal for the metric extended to all matrices by
      tr(X^{-1} U X^{-1} V^T));
    * sectional curvature in [-1/2, 0] (a Hadamard manifold: geodesics are unique, d^2(., A) / 2 is
      geodesically 1-strongly convex); kappa_min = -1/2.

    Matrix functions are computed from one batched ``eigh`` each.
    """

    name = "spd"
    kappa_min = -0.5

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"SPD matrices need a size k >= 1, got {k}")
        self.k, self.D = int(k), int(k) * int(k)

    # ---- shapes ----------------------------------------------------------------------------------
    def mat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*x.shape[:-1], self.k, self.k)

    def flat(self, X: torch.Tensor) -> torch.Tensor:
        return X.reshape(*X.shape[:-2], self.D)

    def _roots(self, x):
        """X^{1/2}, X^{-1/2} of the points x (one eigh)."""
        w, V = torch.linalg.eigh(self.mat(x))
        r = w.sqrt()
        Vt = V.transpose(-1, -2)
        return (V * r.unsqueeze(-2)) @ Vt, (V / r.unsqueeze(-2)) @ Vt

    # ---- the geometry ----------------------------------------------------------------------------
    def exp(self, x, u):
        S, Si = self._roots(x)
        M = _sym(Si @ self.mat(u) @ Si)
        return self.flat(_sym(S @ sym_function(M, torch.exp) @ S))

    def log(self, x, y):
        S, Si = self._roots(x)
        M = _sym(Si @ self.mat(y) @ Si)
        return self.flat(_sym(S @ sym_function(M, torch.log) @ S))

    def transport(self, x, u, v):
        S, Si = self._roots(x)
        M = _sym(Si @ self.mat(u) @ Si)
        E = S @ sym_function(M, lambda w: torch.exp(w / 2)) @ Si
        return self.flat(_sym(E @ self.mat(v) @ E.transpose(-1, -2)))

    def inner(self, x, u, v):
        _, Si = self._roots(x)
        return ((Si @ self.mat(u) @ Si) * (Si @ self.mat(v) @ Si)).sum((-1, -2))

    def dist(self, x, y):
        _, Si = self._roots(x)
        w = torch.linalg.eigvalsh(_sym(Si @ self.mat(y) @ Si))
        return w.log().pow(2).sum(-1).sqrt()

    def proj(self, x, v):
        return self.flat(_sym(self.mat(v)))

    def contains(self, x, tol=1e-10):
        X = self.mat(x)
        if not bool(((X - X.transpose(-1, -2)).abs() <= tol * (1 + X.abs())).all()):
            return False
        return bool((torch.linalg.eigvalsh(_sym(X)) > 0).all())

    def random_point(self, *shape, generator=None, dtype=torch.float64, scale: float = 1.0) -> torch.Tensor:
        """Exp_I of a random symmetric matrix with N(0, scale^2) entries (above the diagonal)."""
        G = torch.randn(*shape, self.k, self.k, generator=generator, dtype=dtype) * scale
        return self.flat(sym_function(_sym(G), torch.exp))

    def random_tangent(self, x, generator=None) -> torch.Tensor:
        return self.proj(x, torch.randn(x.shape, generator=generator, dtype=x.dtype))

    def identity(self, dtype=torch.float64) -> torch.Tensor:
        return self.flat(torch.eye(self.k, dtype=dtype))

    def describe(self):
        return f"SPD({self.k}), affine-invariant metric"


def log_euclidean_mean(A: torch.Tensor) -> torch.Tensor:
    """expm(mean_j logm(A_j)) of matrices A (m, k, k): the Karcher mean when the A_j commute."""
    return sym_function(sym_function(A, torch.log).mean(0), torch.exp)

