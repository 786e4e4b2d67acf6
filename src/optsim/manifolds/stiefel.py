"""The compact Stiefel manifold St(n, p) with the embedded (Euclidean) metric, built on the polar
retraction and the projection vector transport."""
from __future__ import annotations

import math

import torch

from .base import Manifold

__all__ = ["Stiefel"]


def _sym(A: torch.Tensor) -> torch.Tensor:
    return (A + A.transpose(-1, -2)) / 2


def _t(A: torch.Tensor) -> torch.Tensor:
    return A.transpose(-1, -2)


class Stiefel(Manifold):
    """St(n, p) = {X in R^{n x p} : X^T X = I_p} (1 <= p <= n), points and tangent vectors flattened
    row by row to D = n p entries (the flat vector is ``X.reshape(..., n * p)``, as SPD matrices are
    flattened; p = 1 gives the sphere's coordinates). Tangent space at X: {U : X^T U + U^T X = 0};
    metric: the embedded one, <U, V> = tr(U^T V).

    **No exact exponential map, logarithm or parallel transport is used.** The Stiefel geodesics of
    the embedded metric have a closed form (Edelman, Arias, Smith 1998) but their inverse (the
    logarithm) and parallel transport do not, so the Riemannian methods run here, as the Riemannian
    SVRG literature does on Stiefel, with a retraction and a vector transport in their place
    (``exact_maps = False``): the S10 theorems are stated with Exp and parallel transport, and on
    Stiefel the methods run with these first-order approximations of them, which the theorems do not
    cover.

    * ``proj(X, V) = V - X sym(X^T V)``: the orthogonal projection onto the tangent space at X
      (St(n, p) as a Riemannian submanifold of R^{n x p}; Absil, Mahony, Sepulchre 2008, "Optimization
      Algorithms on Matrix Manifolds", Chapter 3).
    * ``exp`` slot, the **polar retraction** R_X(U) = (X + U)(I + U^T U)^{-1/2} (AMS 2008, Example
      4.1.3): the orthogonal polar factor of X + U. It is computed as (X + U) G^{-1/2} with
      G = (X + U)^T (X + U), which equals I + U^T U for tangent U at X and, for any U, makes the
      result orthonormal to rounding (so that drift from rounding does not accumulate over many
      steps, as the sphere's renormalization); G^{-1/2} from one batched ``eigh`` of the p x p matrix.
      It is the metric projection of X + U onto St(n, p), hence a second-order retraction (Absil &
      Malick 2012, "Projection-like retractions on matrix manifolds"). For p = 1 it is
      (x + u) / ||x + u||.
    * ``log`` slot, the **inverse polar retraction** (Kaneko, Fiori, Tanaka 2013, "Empirical
      arithmetic averaging over the compact Stiefel manifold", IEEE Trans. Signal Process.): the
      tangent U at X with R_X(U) = Y, i.e. X + U = Y S with S symmetric positive definite; tangency of
      U = Y S - X reads (X^T Y) S + S (Y^T X) = 2 I, a Lyapunov equation in S. It is solved as the
      p^2 x p^2 linear system (I (x) A + A (x) I) vec(S) = 2 vec(I), A = X^T Y (one batched
      ``torch.linalg.solve``; p is small); when A is symmetric its solution is S = A^{-1}. It exists
      when the solution S is positive definite (Y near X; for p = 1: <x, y> > 0).
    * ``transport``, the **projection vector transport** T_{X,U}(V) = P_{R_X(U)}(V) (AMS 2008,
      Section 8.1.3): tangent at the new point, not an isometry (it does not increase norms);
      ``transport_to(X, Y, V) = P_Y(V)`` (the same map, since R_X(R_X^{-1}(Y)) = Y), and
      ``transporter(X, Y)`` is ``V -> P_Y(V)``: the methods' transports along the step just taken, or to
      a point they already hold, retract and invert nothing.
    * ``dist(X, Y)`` = ||R_X^{-1}(Y)||_F: the retraction-based distance (the base class's norm of
      ``log``), not the geodesic distance (not symmetric in X, Y in general).
    * ``kappa_min``: the sectional curvature of the embedded metric, by the Gauss equation of the
      submanifold St(n, p) of R^{n x p} with second fundamental form II(U, V) = -X sym(U^T V)
      (:meth:`sectional_curvature`), lies in [-1/2, 1] (Zimmermann & Stoye 2024, "High curvature means
      low-rank: on the sectional curvature of Grassmann and Stiefel manifolds and the underlying matrix
      trace inequalities", arXiv 2403.01879: the upper bound 1 is their theorem; the lower bound
      -1/2 is read from a summary of that paper, not from its text -- not confirmed there, but
      attained numerically by minimizing the Gauss-equation formula over tangent planes for
      2 <= p < n; tests/test_stiefel.py checks random planes against [-1/2, 1]). For p = 1,
      St(n, 1) is the unit sphere, curvature 1; for p = n, O(n) with the bi-invariant metric
      tr(U^T V), curvature >= 0. So ``kappa_min`` = 1 (p = 1), 0 (p = n), -1/2 otherwise.
    * ``diameter`` = pi sqrt(p): an upper bound of the geodesic diameter (X -> Q X, Q = expm(t W) in
      SO(n) with ||W||_2 <= pi and Q X = Y, has speed ||W Q X||_F <= pi sqrt(p); for p = n such Q
      exists only when det(X^T Y) > 0, so for p = n the bound holds within each component of O(n)).
    """

    name = "stiefel"
    exact_maps = False

    def __init__(self, n: int, p: int):
        n, p = int(n), int(p)
        if p < 1 or n < 2 or p > n:
            raise ValueError(f"a Stiefel manifold St(n, p) needs 1 <= p <= n and n >= 2, got n={n}, p={p}")
        self.n, self.p, self.D = n, p, n * p
        self.kappa_min = 1.0 if p == 1 else 0.0 if p == n else -0.5

    @property
    def diameter(self) -> float:
        return math.pi * math.sqrt(self.p)

    # ---- shapes ----------------------------------------------------------------------------------
    def mat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*x.shape[:-1], self.n, self.p)

    def flat(self, X: torch.Tensor) -> torch.Tensor:
        return X.reshape(*X.shape[:-2], self.D)

    # ---- the geometry ----------------------------------------------------------------------------
    def _polar(self, Y: torch.Tensor) -> torch.Tensor:
        """The orthogonal polar factor Y (Y^T Y)^{-1/2} of full-rank n x p matrices Y."""
        w, V = torch.linalg.eigh(_sym(_t(Y) @ Y))
        return Y @ ((V * w.rsqrt().unsqueeze(-2)) @ _t(V))

    def exp(self, x, u):
        """The polar retraction R_x(u) (not the exponential map; see the class docstring)."""
        X, U = torch.broadcast_tensors(self.mat(x), self.mat(u))
        return self.flat(self._polar(X + U))

    def log(self, x, y):
        """The inverse polar retraction R_x^{-1}(y) (not the logarithm; see the class docstring)."""
        X, Y = torch.broadcast_tensors(self.mat(x), self.mat(y))
        A = _t(X) @ Y
        p = self.p
        I = torch.eye(p, dtype=A.dtype, device=A.device)
        # row-major vec: vec(A S) = (A (x) I) vec(S), vec(S A^T) = (I (x) A) vec(S)
        K = (A.unsqueeze(-1).unsqueeze(-3) * I.unsqueeze(-2).unsqueeze(-4)
             + I.unsqueeze(-1).unsqueeze(-3) * A.unsqueeze(-2).unsqueeze(-4))
        K = K.reshape(*A.shape[:-2], p * p, p * p)
        rhs = (2 * I).reshape(p * p).expand(*A.shape[:-2], p * p)
        S = _sym(torch.linalg.solve(K, rhs).reshape(A.shape))
        return self.flat(Y @ S - X)

    def transport(self, x, u, v):
        """The projection vector transport P_{R_x(u)}(v) (not parallel transport)."""
        return self.proj(self.exp(x, u), v)

    def transport_to(self, x, y, v):
        return self.proj(y, v)

    def transporter(self, x, y, u=None):
        """``v -> P_y(v)``: the projection transport to y needs neither the step u nor an inverse
        retraction."""
        return lambda v: self.proj(y, v)

    def inner(self, x, u, v):
        return (u * v).sum(-1)

    def proj(self, x, v):
        X, V = self.mat(x), self.mat(v)
        return self.flat(V - X @ _sym(_t(X) @ V))

    def contains(self, x, tol=1e-10):
        X = self.mat(x)
        err = _t(X) @ X - torch.eye(self.p, dtype=X.dtype, device=X.device)
        return bool((torch.linalg.matrix_norm(err) <= tol).all())

    def orthonormality_error(self, x) -> torch.Tensor:
        """||X^T X - I||_F (batched)."""
        X = self.mat(x)
        return torch.linalg.matrix_norm(_t(X) @ X - torch.eye(self.p, dtype=X.dtype, device=X.device))

    def sectional_curvature(self, x, u, v) -> torch.Tensor:
        """The sectional curvature of the plane spanned by tangents u, v at x, by the Gauss equation
        K = (<II(u, u), II(v, v)> - ||II(u, v)||^2) / (|u|^2 |v|^2 - <u, v>^2) with II(U, V) =
        -X sym(U^T V), i.e. numerator tr(U^T U V^T V) - ||sym(U^T V)||_F^2 (X^T X = I)."""
        U, V = self.mat(u), self.mat(v)
        num = ((_t(U) @ U) * (_t(V) @ V)).sum((-1, -2)) - _sym(_t(U) @ V).pow(2).sum((-1, -2))
        den = self.inner(x, u, u) * self.inner(x, v, v) - self.inner(x, u, v) ** 2
        return num / den

    def random_point(self, *shape, generator=None, dtype=torch.float64) -> torch.Tensor:
        """The Q factor of a Gaussian n x p matrix (signs fixed by R's diagonal: Haar distributed)."""
        G = torch.randn(*shape, self.n, self.p, generator=generator, dtype=dtype)
        Q, R = torch.linalg.qr(G)
        s = torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))
        return self.flat(Q * torch.where(s == 0, torch.ones_like(s), s).unsqueeze(-2))

    def random_tangent(self, x, generator=None) -> torch.Tensor:
        return self.proj(x, torch.randn(x.shape, generator=generator, dtype=x.dtype))

    def describe(self):
        return f"Stiefel St({self.n}, {self.p}), embedded metric, polar retraction"
