"""The target protocol: a density ``pi ∝ exp(-F)`` on R^d (or a constrained domain) queried on
batches of points.

A :class:`Target` gives the potential ``F`` and its gradient on a batch ``X`` of shape (k, d)
(particles or chains: a batch dimension, no loop over points) and, where known, its ground truth:
``mean``, ``cov``, exact samples (``sample``) and the domain (``contains``). A federated target
(:class:`ClientTarget`) is ``F = sum_i F_i`` over n clients and also gives every client's
gradient at once, shape (n, k, d).
"""
from __future__ import annotations

import torch

__all__ = ["ClientTarget", "Target"]


class Target:
    """``pi ∝ exp(-F)`` on R^d. Subclasses define ``d``, ``dtype`` and ``potential`` /
    ``grad_potential``; ground-truth members raise ``NotImplementedError`` when unknown."""

    name = "target"
    d: int
    dtype: torch.dtype = torch.float64

    def potential(self, X: torch.Tensor) -> torch.Tensor:
        """F at each row of X (k, d) -> (k,), up to an additive constant."""
        raise NotImplementedError

    def grad_potential(self, X: torch.Tensor) -> torch.Tensor:
        """grad F at each row of X (k, d) -> (k, d)."""
        raise NotImplementedError

    def score(self, X: torch.Tensor) -> torch.Tensor:
        """grad log pi = -grad F, shape (k, d)."""
        return -self.grad_potential(X)

    # ground truth ------------------------------------------------------------------------------
    @property
    def mean(self) -> torch.Tensor:
        raise NotImplementedError(f"{self.name}: the mean is not known in closed form")

    @property
    def cov(self) -> torch.Tensor:
        raise NotImplementedError(f"{self.name}: the covariance is not known in closed form")

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n exact independent samples (n, d)."""
        raise NotImplementedError(f"{self.name}: no exact sampler")

    def contains(self, X: torch.Tensor) -> torch.Tensor:
        """Whether each row of X lies in the target's domain (all of R^d by default)."""
        return torch.isfinite(X).all(1)

    def _check(self, X: torch.Tensor) -> torch.Tensor:
        if X.ndim != 2 or X.shape[1] != self.d:
            raise ValueError(f"{self.name}: points must be a (k, {self.d}) tensor, got shape {tuple(X.shape)}")
        return X


class ClientTarget(Target):
    """``F = sum_i F_i`` over ``n`` clients; ``client_grad_potentials(X)`` is (n, k, d)."""

    n: int

    def client_potentials(self, X: torch.Tensor) -> torch.Tensor:
        """F_i at each row of X -> (n, k)."""
        raise NotImplementedError

    def client_grad_potentials(self, X: torch.Tensor) -> torch.Tensor:
        """grad F_i at each row of X -> (n, k, d); every client's gradient in one computation."""
        raise NotImplementedError

    def potential(self, X):
        return self.client_potentials(X).sum(0)

    def grad_potential(self, X):
        return self.client_grad_potentials(X).sum(0)
