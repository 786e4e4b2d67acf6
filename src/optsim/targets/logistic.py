"""Bayesian logistic regression posteriors split across clients.

Data from :func:`optsim.data.load_dataset` (LibSVM files, scikit-learn sets, the synthetic
generator), labels mapped to {-1, +1}, samples split among ``n`` clients by
:func:`optsim.data.partition`. With a Gaussian prior ``N(0, prior_var I)`` the posterior is
``pi ∝ exp(-F)``, ``F = sum_i F_i``, where client i holds
``F_i(x) = sum_{(a, y) at i} log(1 + exp(-y a^T x)) + ||x||^2 / (2 prior_var n)``
(the prior shared equally). Client data are padded to (n, M, d) with a mask, so every client's
potential and gradient at k points is one batched product, (n, k, d).

Ground truth is not closed form: :meth:`BayesianLogistic.map_point` (Newton) and
:func:`optsim.targets.reference.mala` (exact in the limit, many chains batched) provide a reference.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import load_dataset, partition
from .base import ClientTarget

__all__ = ["BayesianLogistic"]


class BayesianLogistic(ClientTarget):
    name = "bayesian_logistic"

    def __init__(self, data: str = "sklearn:breast_cancer", clients: int = 10, split: str = "iid",
                 prior_var: float = 1.0, standardize: bool = True, size: int = 1000, dim: int = 20,
                 seed: int = 0, dtype=torch.float64, **partition_kw):
        if not prior_var > 0:
            raise ValueError(f"prior_var must be > 0, got {prior_var}")
        ds = load_dataset(data, size=size, dim=dim, seed=seed)
        X, y = ds.X, ds.y
        labels = np.unique(y)
        if labels.size != 2:
            raise ValueError(f"{data} has {labels.size} classes: Bayesian logistic regression needs a binary dataset")
        y = np.where(y == labels.max(), 1.0, -1.0)
        if standardize:
            sd = X.std(0)
            X = (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)
        parts = partition(y, clients, split, seed=seed, **partition_kw)
        self.n, self.d, self.dtype = clients, X.shape[1], dtype
        self.prior_var = float(prior_var)
        M = max(len(p) for p in parts)
        A = np.zeros((clients, M, self.d))
        Y = np.zeros((clients, M))
        for i, p in enumerate(parts):
            A[i, : len(p)] = X[p]
            Y[i, : len(p)] = y[p]  # y = 0 on padding: those rows contribute nothing (masked)
        self.A = torch.as_tensor(A, dtype=dtype)
        self.Y = torch.as_tensor(Y, dtype=dtype)
        self.mask = self.Y != 0
        self.samples = int(self.mask.sum())
        self.source = data

    def _z(self, X):
        return torch.einsum("nmd,kd->nkm", self.A, self._check(X)) * self.Y[:, None, :]

    def client_potentials(self, X):
        z = self._z(X)
        loss = (torch.nn.functional.softplus(-z) * self.mask[:, None, :]).sum(2)
        return loss + (X * X).sum(1)[None, :] / (2 * self.prior_var * self.n)

    def client_grad_potentials(self, X):
        z = self._z(X)
        coef = -torch.sigmoid(-z) * self.Y[:, None, :]  # zero on padding (Y = 0)
        return torch.einsum("nkm,nmd->nkd", coef, self.A) + X[None] / (self.prior_var * self.n)

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        """Hessian of F at one point x (d,)."""
        z = self._z(x[None])[:, 0]  # (n, M)
        s = torch.sigmoid(z) * torch.sigmoid(-z) * self.mask
        return torch.einsum("nm,nma,nmb->ab", s, self.A, self.A) + torch.eye(self.d, dtype=self.dtype) / self.prior_var

    def map_point(self, tol: float = 1e-10, iters: int = 100) -> torch.Tensor:
        """The posterior mode by Newton's method (F is strongly convex), ||grad F|| <= tol."""
        x = torch.zeros(self.d, dtype=self.dtype)
        for _ in range(iters):
            g = self.grad_potential(x[None])[0]
            if float(g.norm()) <= tol:
                break
            x = x - torch.linalg.solve(self.hessian(x), g)
        return x
