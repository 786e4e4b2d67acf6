"""Generalized linear models over clients' samples: logistic regression and least squares.

Client i holds samples (a_ij, b_ij), j = 1..m_i, and

    f_i(x) = (1/m_i) sum_j phi(a_ij^T x, b_ij) + r(x)

with phi the logistic loss log(1 + exp(-b z)) (labels +-1) or the squared loss (z - b)^2 / 2,
and r either lambda/2 ||x||^2 (``l2``) or the nonconvex lambda * sum_j x_j^2 / (1 + x_j^2)
(``nonconvex``, the benchmark of the EF21 and MARINA papers). Samples are stored padded to
(n, M, d) with weights 1/m_i (0 on padding), so one batched matmul serves all clients.
"""
from __future__ import annotations

from functools import cached_property

import torch

from .base import Problem

__all__ = ["GLMProblem", "LogisticRegression", "NonconvexLogisticRegression", "LeastSquares"]


def _pack(features: list, labels: list, dtype, device):
    n, d = len(features), features[0].shape[1]
    m = torch.tensor([len(b) for b in labels], dtype=torch.long)
    M = int(m.max())
    A = torch.zeros(n, M, d, dtype=dtype)
    y = torch.zeros(n, M, dtype=dtype)
    w = torch.zeros(n, M, dtype=dtype)
    for i, (Ai, bi) in enumerate(zip(features, labels)):
        A[i, : len(bi)] = torch.as_tensor(Ai, dtype=dtype)
        y[i, : len(bi)] = torch.as_tensor(bi, dtype=dtype)
        w[i, : len(bi)] = 1.0 / len(bi)
    return A.to(device), y.to(device), w.to(device), m.to(device)


class GLMProblem(Problem):
    """Base of the sample-based problems (see the module docstring)."""

    #: upper bound on phi''(z) (1/4 logistic, 1 squared loss)
    curvature: float = 1.0
    regularizer: str = "l2"

    def __init__(self, features: list, labels: list, lam: float = 0.0, *, dtype=torch.float64,
                 device="cpu"):
        super().__init__(dtype, device)
        if lam < 0:
            raise ValueError(f"regularization lambda must be >= 0, got {lam}")
        self.lam = float(lam)
        self.A, self.b, self.w, self.m = _pack(features, labels, dtype, self.device)
        # (n, d, M) copy: z = x^T A_i^T as one bmm is ~2-4x faster than A_i x (see bench/)
        self.At = self.A.transpose(1, 2).contiguous()
        self.n, self.d = self.A.shape[0], self.A.shape[2]

    # phi and its derivatives in z = a^T x
    def _phi(self, z, b):
        raise NotImplementedError

    def _dphi(self, z, b):
        raise NotImplementedError

    def _d2phi(self, z, b):
        raise NotImplementedError

    def _weighted_dphi_(self, z, b, w):
        """w * phi'(z, b), free to overwrite the temporary z (large batched products)."""
        return w * self._dphi(z, b)

    # regularizer
    def _reg(self, X):
        if self.regularizer == "l2":
            return 0.5 * self.lam * X.pow(2).sum(-1)
        s = X.pow(2)
        return self.lam * (s / (1 + s)).sum(-1)

    def _dreg(self, X):
        if self.regularizer == "l2":
            return self.lam * X
        return self.lam * 2 * X / (1 + X.pow(2)).pow(2)

    def _d2reg(self, X):
        if self.regularizer == "l2":
            return torch.full_like(X, self.lam)
        s = X.pow(2)
        return self.lam * (2 - 6 * s) / (1 + s).pow(3)

    def _data(self, rows):
        if rows is None:
            return self.A, self.b, self.w
        return self.A[rows], self.b[rows], self.w[rows]

    def _z(self, A, X):
        return torch.bmm(A, X.unsqueeze(-1)).squeeze(-1)

    def _zt(self, rows, X):
        """z_ij = a_ij^T x_i for the clients ``rows``, from the transposed copy."""
        At = self.At if rows is None else self.At[rows]
        return torch.bmm(X.contiguous().unsqueeze(1), At).squeeze(1)  # an expand()ed X is slow in bmm

    def _grads(self, X, rows):
        if rows is not None and 2 * rows.shape[0] > self.n and bool((rows[1:] > rows[:-1]).all()):
            # most clients, sorted and distinct: one product over all clients' data (zeros elsewhere)
            # is cheaper than gathering the subset's data (bench/bench_local.py)
            full = X.new_zeros(self.n, self.d)
            full[rows] = X
            return self._grads(full, None)[rows]
        if rows is not None and 2 * rows.shape[0] > self.n:
            spread = self._spread(rows)
            if spread is not None:
                return self._grads_spread(X, rows, *spread)
        At = self.At if rows is None else self.At[rows]
        b, w = (self.b, self.w) if rows is None else (self.b[rows], self.w[rows])
        z = torch.bmm(X.contiguous().unsqueeze(1), At)  # an expand()ed X is slow in bmm
        return self._back(At, self._weighted_dphi_(z, b.unsqueeze(1), w.unsqueeze(1))).squeeze(1) + self._dreg(X)

    @staticmethod
    def _back(At, coef):
        """sum_j coef[i, r, j] a_ij for coefficients (m, k, M): (m, k, d), from the transposed copy
        as (d x M)(M x k) products with the coefficients passed transposed (so the data of a
        gradient is one array, read from the same copy as the forward product; bench/RESULTS.md:
        1.5-2 x faster than (k x M)(M x d) from A for k <= 8, equal for k = 32)."""
        return torch.bmm(At, coef.transpose(1, 2)).transpose(1, 2)

    def _spread(self, rows):
        """For rows that repeat clients (several points of one client, e.g. x+ and x): each row's
        slot among its client's rows (0, 1, ...) and k, the most rows of one client, when one pass
        over all clients' data at k points each is cheaper than gathering the rows' data (measured,
        bench/RESULTS.md: a gather costs about 2 r / n of one full gradient for r rows, the pass
        about 1 + 0.3 (k - 1)); None otherwise."""
        r = rows.shape[0]
        order = torch.argsort(rows, stable=True)
        srt = rows[order]
        slot = torch.empty_like(rows)
        slot[order] = torch.arange(r, device=rows.device) - torch.searchsorted(srt, srt)
        k = int(slot.max()) + 1
        if 2 * r <= self.n * (1 + 0.3 * (k - 1)):
            return None
        return slot, k

    def _grads_spread(self, X, rows, slot, k):
        """Gradients of the rows from one pass over all clients' data with k points per client
        (zeros where a client has fewer): the data is read once for the k points."""
        Xn = X.new_zeros(self.n, k, self.d)
        Xn[rows, slot] = X
        coef = self._weighted_dphi_(torch.bmm(Xn, self.At), self.b[:, None, :], self.w[:, None, :])
        return self._back(self.At, coef)[rows, slot] + self._dreg(X)

    def _z_many(self, Xs):
        """z[i, r, j] = a_ij^T x_ri for (R, n, d) models: (n, R, M), one (R x d)(d x M) product per
        client (as fast as a broadcast matmul for R = 32, faster for R <= 8 in float32)."""
        return torch.bmm(Xs.transpose(0, 1).contiguous(), self.At)

    def _grads_many(self, Xs):
        """(R, n, d) -> (R, n, d): per client one (R x d)(d x M) and one (d x M)(M x R) product."""
        coef = self._weighted_dphi_(self._z_many(Xs), self.b[:, None, :], self.w[:, None, :])
        shared = Xs[:, :1] if Xs.stride(1) == 0 else Xs  # the regularizer once per distinct model
        return self._back(self.At, coef).transpose(0, 1) + self._dreg(shared)

    def _losses(self, X, rows):
        _, b, w = self._data(rows)
        return (w * self._phi(self._zt(rows, X), b)).sum(-1) + self._reg(X)

    def _point_losses(self, P, rows):
        """(m, k, d) -> (m, k): one (k x d)(d x M) product per client from the transposed copy."""
        At = self.At if rows is None else self.At[rows]
        _, b, w = self._data(rows)
        return (w[:, None, :] * self._phi(torch.bmm(P.contiguous(), At), b[:, None, :])).sum(-1) + self._reg(P)

    def _sample_point_losses(self, P, rows, idx):
        """(m, k, d) at the samples idx (m, b) -> (m, k): the sampled rows gathered once, one
        (k x d)(d x b) product per client."""
        r = torch.arange(self.n, device=self.A.device) if rows is None else rows
        As, bs = self.A[r[:, None], idx], self.b[r[:, None], idx]
        z = torch.bmm(P.contiguous(), As.transpose(1, 2))
        return self._phi(z, bs[:, None, :]).mean(-1) + self._reg(P)

    def _losses_many(self, Xs):
        shared = Xs[:, :1] if Xs.stride(1) == 0 else Xs
        return (self.w[:, None, :] * self._phi(self._z_many(Xs), self.b[:, None, :])).sum(-1).T + self._reg(shared)


    def _sample_grads(self, X, rows, idx):
        # gather only the sampled rows (not the clients' whole data first)
        r = torch.arange(self.n, device=self.A.device) if rows is None else rows
        As, bs = self.A[r[:, None], idx], self.b[r[:, None], idx]
        coef = self._dphi(self._z(As, X), bs) / idx.shape[1]
        return torch.bmm(coef.unsqueeze(1), As).squeeze(1) + self._dreg(X)

    def _weighted_sample_grads(self, X, rows, idx, weights):
        """sum_s w_s grad f_{i, idx_s}(x) = sum_s w_s (phi'(a^T x) a + grad r(x)): the regularizer counts
        once per unit of weight, as in a sum of per-sample functions phi_ij + r."""
        r = torch.arange(self.n, device=self.A.device) if rows is None else rows
        As, bs = self.A[r[:, None], idx], self.b[r[:, None], idx]
        coef = self._dphi(self._z(As, X), bs) * weights
        return torch.bmm(coef.unsqueeze(1), As).squeeze(1) + weights.sum(1, keepdim=True) * self._dreg(X)

    def _hessians(self, X, rows):
        A, b, w = self._data(rows)
        c = w * self._d2phi(self._z(A, X), b)
        H = torch.einsum("nm,nmd,nme->nde", c, A, A)
        return H + torch.diag_embed(self._d2reg(X))

    # constants
    def _reg_smoothness(self) -> float:
        return self.lam if self.regularizer == "l2" else 2.0 * self.lam

    def _gram(self) -> torch.Tensor:
        """(n, d, d) local Gram matrices sum_j w_ij a_ij a_ij^T, in float64."""
        A, w = self.A.to(torch.float64), self.w.to(torch.float64)
        return torch.einsum("nm,nmd,nme->nde", w, A, A)

    def _smoothness(self):
        ev = torch.linalg.eigvalsh(self._gram())[:, -1]
        return self.curvature * ev.clamp_min(0) + self._reg_smoothness()

    def _global_smoothness(self):
        ev = torch.linalg.eigvalsh(self._gram().mean(0))[-1]
        return float(self.curvature * ev.clamp_min(0)) + self._reg_smoothness()

    # per-sample constants (stochastic and variance-reduced methods)
    @cached_property
    def L_samples(self) -> torch.Tensor:
        """(n, M) smoothness constants L_ij = curvature * ||a_ij||^2 + (regularizer's smoothness) of
        the per-sample functions f_ij(x) = phi(a_ij^T x, b_ij) + r(x), float64 on the CPU; 0 on
        padding (j >= m_i)."""
        A = self.A.to(torch.float64).cpu()
        real = (self.w > 0).cpu()
        L = self.curvature * A.pow(2).sum(-1) + self._reg_smoothness()
        return torch.where(real, L, torch.zeros_like(L))

    @property
    def L_sample_max(self) -> float:
        """max_ij L_ij, the worst per-sample smoothness constant."""
        return float(self.L_samples.max())

    def _client_data(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        m = int(self.m[i])
        return self.A[i, :m].cpu(), self.b[i, :m].cpu()

    def subset(self, clients) -> "GLMProblem":
        rows = [int(i) for i in torch.as_tensor(clients).tolist()]
        data = [self._client_data(i) for i in rows]
        return type(self)([a for a, _ in data], [b for _, b in data], lam=self.lam, dtype=self.dtype, device=self.device)

    def flip_labels(self, clients) -> "GLMProblem":
        flip = set(int(i) for i in torch.as_tensor(clients).tolist())
        if self.name == "least_squares":
            raise ValueError("label flipping needs classification labels (+-1); least squares has real targets")
        data = [self._client_data(i) for i in range(self.n)]
        return type(self)([a for a, _ in data], [-b if i in flip else b for i, (_, b) in enumerate(data)], lam=self.lam,
                          dtype=self.dtype, device=self.device)

    @property
    def local_mu(self) -> torch.Tensor:
        """lambda of the l2 regularizer (the logistic part may be arbitrarily flat); ValueError for the
        nonconvex regularizer."""
        if self.regularizer != "l2":
            return super().local_mu
        return torch.full((self.n,), self.lam, dtype=torch.float64)

    def sample_gradient_variance(self, x: torch.Tensor) -> float:
        """max_i (1/m_i) sum_j ||grad f_ij(x) - grad f_i(x)||^2 at x (the regularizer cancels)."""
        A, b, w = self.A, self.b, self.w
        X = x.to(self.dtype).reshape(1, -1).expand(self.n, self.d)
        z = torch.bmm(A, X.unsqueeze(-1)).squeeze(-1)
        per = self._dphi(z, b).unsqueeze(-1) * A  # (n, M, d)
        mean = (w.unsqueeze(-1) * per).sum(1, keepdim=True)
        return float((w * (per - mean).pow(2).sum(-1)).sum(1).max())

    def _fingerprint_parts(self):
        return [self.regularizer, self.lam, self.A, self.b, self.w]


class LogisticRegression(GLMProblem):
    """L2-regularized logistic regression (labels +-1); mu = lambda."""

    name = "logreg"
    curvature = 0.25

    def _phi(self, z, b):
        return torch.logaddexp(torch.zeros_like(z), -b * z)

    def _dphi(self, z, b):
        return -b * torch.sigmoid(-b * z)

    def _weighted_dphi_(self, z, b, w):
        return z.mul_(-b).sigmoid_().mul_(-b * w)

    def _d2phi(self, z, b):
        s = torch.sigmoid(b * z)
        return s * (1 - s)

    def _mu(self):
        return self.lam if self.lam > 0 else None

    @property
    def convex(self):  # strongly convex only with lambda > 0 (x* may not exist otherwise)
        return self.lam > 0


class NonconvexLogisticRegression(LogisticRegression):
    """Logistic regression with the nonconvex regularizer lambda * sum_j x_j^2 / (1 + x_j^2)."""

    name = "logreg_nonconvex"
    regularizer = "nonconvex"
    convex = False

    def _mu(self):
        return None


class LeastSquares(GLMProblem):
    """Least squares (1/(2 m_i)) ||A_i x - b_i||^2 + lambda/2 ||x||^2; mu = lambda_min of the Hessian."""

    name = "least_squares"
    curvature = 1.0

    def _phi(self, z, b):
        return 0.5 * (z - b).pow(2)

    def _dphi(self, z, b):
        return z - b

    def _d2phi(self, z, b):
        return torch.ones_like(z)

    def _mu(self):
        ev = float(torch.linalg.eigvalsh(self._gram().mean(0))[0]) + self.lam
        return ev if ev > 1e-12 * self.L else None

    @property
    def local_mu(self) -> torch.Tensor:
        """lambda + lambda_min of each client's Gram matrix."""
        mu = super().local_mu
        return mu + self.curvature * torch.linalg.eigvalsh(self._gram())[:, 0].clamp_min(0).cpu()

    @property
    def convex(self):
        return self.mu is not None
