"""Mirrored SVGD (Shi, Liu & Mackey 2022, "Sampling with Mirror Stein Operators", ICLR; the
method whose convergence under (L0, L1)-smoothness Sun & Richtárik study in "A Note on the
Convergence of Mirrored Stein Variational Gradient Descent under (L0, L1)-Smoothness Condition",
arXiv 2206.09709; PAPERS.md P2).

A constrained target ``pi ∝ exp(-F)`` on a domain Theta is sampled through a mirror map psi
(strictly convex on Theta, gradient onto R^d): particles live in the dual ``eta = grad psi(theta)``
and are mapped back by ``theta = grad psi*(eta)``, inside Theta by construction. With the kernel
``K(theta, theta') = k(grad psi(theta), grad psi(theta')) I`` (MSVGD's choice of the paper) the
update is SVGD in the dual space for the push-forward target
``nu(eta) ∝ pi(grad psi*(eta)) det grad^2 psi*(eta)``, whose score is

    grad log nu(eta) = grad^2 psi*(eta) grad log pi(theta) + grad_eta log det grad^2 psi*(eta).

Mirror maps (:class:`MirrorMap`):

* :class:`EuclideanMirror`: psi = ||theta||^2 / 2, MSVGD = SVGD exactly;
* :class:`EntropicSimplex`: the simplex in the coordinates of its first d of K = d + 1
  components, psi = sum_{k <= K} theta_k log theta_k; ``grad psi*(eta) = softmax([eta, 0])``
  (first d), ``grad^2 psi* = diag(theta) - theta theta^T``, ``det = prod_{k <= K} theta_k``, so
  ``grad_eta log det = 1 - K theta``; for a Dirichlet(alpha) target the dual score is
  ``alpha_{1..d} - theta sum(alpha)``;
* :class:`EntropicBox`: the box [a, b]^d, psi = sum (x - a) log(x - a) + (b - x) log(b - x);
  ``grad psi*(eta) = a + (b - a) sigmoid(eta)``, ``grad_eta log det = 1 - 2 sigmoid(eta)``.

The (L0, L1) note is a population-limit analysis: its stepsize condition involves constants of
the push-forward potential and of the kernel that are not computed here; the stepsize is explicit.
"""
from __future__ import annotations

import torch

from ..targets import Target
from ..targets.kernels import make_kernel
from .base import ParticleSampler
from .svgd import svgd_direction

__all__ = ["EntropicBox", "EntropicSimplex", "EuclideanMirror", "MirrorMap", "MirroredSVGD"]


class MirrorMap:
    """grad psi (``to_dual``), grad psi* (``to_primal``) and the push-forward score (``dual_score``)."""

    name = "mirror"

    def to_dual(self, T: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_primal(self, E: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dual_score(self, E: torch.Tensor, T: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """grad log nu at eta = E (k, d), given theta = T = grad psi*(E) and score = grad log pi(T)."""
        raise NotImplementedError


class EuclideanMirror(MirrorMap):
    name = "euclidean"

    def to_dual(self, T):
        return T

    def to_primal(self, E):
        return E

    def dual_score(self, E, T, score):
        return score


class EntropicSimplex(MirrorMap):
    name = "entropic_simplex"

    def to_dual(self, T):
        last = 1.0 - T.sum(1, keepdim=True)
        return torch.log(T) - torch.log(last)

    def to_primal(self, E):
        full = torch.softmax(torch.cat([E, torch.zeros_like(E[:, :1])], 1), 1)
        return full[:, :-1]

    def dual_score(self, E, T, score):
        K = T.shape[1] + 1
        return T * score - T * (T * score).sum(1, keepdim=True) + 1.0 - K * T


class EntropicBox(MirrorMap):
    name = "entropic_box"

    def __init__(self, low, high):
        self.a = torch.as_tensor(low, dtype=torch.float64)
        self.b = torch.as_tensor(high, dtype=torch.float64)
        if (self.a >= self.b).any():
            raise ValueError("entropic_box: need low < high in every coordinate")

    def to_dual(self, T):
        return torch.log(T - self.a) - torch.log(self.b - T)

    def to_primal(self, E):
        return self.a + (self.b - self.a) * torch.sigmoid(E)

    def dual_score(self, E, T, score):
        s = torch.sigmoid(E)
        return (self.b - self.a) * s * (1.0 - s) * score + 1.0 - 2.0 * s


class MirroredSVGD(ParticleSampler):
    """MSVGD: SVGD on the dual particles for the push-forward target (module docstring);
    ``self.X`` are the primal particles, ``self.E`` the dual ones."""

    name = "msvgd"
    paper = "Shi, Liu & Mackey (2022), Sampling with Mirror Stein Operators, ICLR (MSVGD); Sun & Richtárik (2022), arXiv 2206.09709"

    def __init__(self, target: Target, mirror: MirrorMap, stepsize: float, kernel="rbf"):
        super().__init__(target, stepsize)
        if not isinstance(mirror, MirrorMap):
            raise ValueError("msvgd: mirror must be a MirrorMap (EuclideanMirror, EntropicSimplex, EntropicBox)")
        self.mirror = mirror
        self.kernel = make_kernel(kernel)
        self.E: torch.Tensor | None = None

    def init(self, X0):
        super().init(X0)
        self.E = self.mirror.to_dual(self.X)

    def step(self) -> None:
        T = self.X
        S = self.mirror.dual_score(self.E, T, self.target.score(T))
        self.E = self.E + self.stepsize * svgd_direction(self.E, S, self.kernel)[0]
        self.X = self.mirror.to_primal(self.E)
        self.iteration += 1
