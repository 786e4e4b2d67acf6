"""Compressors of symmetric matrices, and the isometric packing they act on.

A symmetric d x d matrix travels as its upper triangle, D = d (d + 1) / 2 numbers, packed
*isometrically* (:class:`SymPacking`): diagonal entries as they are, off-diagonal entries times
sqrt(2), so that the Euclidean norm of the packed row is the Frobenius norm of the matrix. Every
compressor of :mod:`optsim.compress` applied to packed rows (m, D) therefore keeps its constants in
the Frobenius norm (top-k contractive with alpha = k / D, rand-k unbiased with omega = D / k - 1)
and decodes to a symmetric matrix. Two operators are specific to matrices:

* ``rank_r`` (:class:`RankR`) -- FedNL's Rank-R (Safaryan et al. 2021);
* ``threshold`` (:class:`Threshold`) -- Newton-3PC's adaptive thresholding (Islamov et al. 2022).
"""
from __future__ import annotations

import math

import torch

from .base import Compressor, index_bits, register_compressor

__all__ = ["SymPacking", "packed_dim", "matrix_dim", "RankR", "Threshold"]

SQRT2 = math.sqrt(2.0)


def packed_dim(d: int) -> int:
    """Number of packed entries of a symmetric d x d matrix."""
    return d * (d + 1) // 2


def matrix_dim(D: int) -> int:
    """The d with d (d + 1) / 2 = D; ValueError if D is not such a number."""
    d = (math.isqrt(8 * D + 1) - 1) // 2
    if packed_dim(d) != D:
        raise ValueError(f"{D} is not the packed size d(d+1)/2 of a symmetric matrix")
    return d


class SymPacking:
    """Isometric packing of symmetric (m, d, d) matrices into (m, D) rows and back:
    diagonal entries unchanged, off-diagonal (upper triangle) entries times sqrt(2), so that
    ||pack(H)||_2 = ||H||_F."""

    def __init__(self, d: int, dtype=torch.float64, device="cpu"):
        self.d, self.D = int(d), packed_dim(d)
        self.r, self.c = torch.triu_indices(self.d, self.d, device=device)
        self.upper, self.lower = self.r * self.d + self.c, self.c * self.d + self.r  # flat positions
        self.scale = torch.where(self.r == self.c, 1.0, SQRT2).to(dtype=dtype, device=device)

    def pack(self, H: torch.Tensor) -> torch.Tensor:
        return H.reshape(H.shape[0], self.d * self.d).index_select(1, self.upper) * self.scale

    def unpack(self, V: torch.Tensor) -> torch.Tensor:
        vals = V / self.scale
        H = torch.zeros(V.shape[0], self.d * self.d, dtype=V.dtype, device=V.device)
        H.index_copy_(1, self.lower, vals)
        H.index_copy_(1, self.upper, vals)
        return H.view(V.shape[0], self.d, self.d)


@register_compressor
class RankR(Compressor):
    """Rank-R compression of symmetric matrices (FedNL, Safaryan et al. 2021, Sec. 3 examples):
    the best rank-r approximation, i.e. the r eigenpairs of largest |eigenvalue| (for a symmetric
    matrix these are its top singular triplets). Input rows are packed symmetric matrices
    (:class:`SymPacking`, dimension D = d (d + 1) / 2). Contractive in the Frobenius norm with
    alpha = r / d. Bits: r (d + 1) floats (r eigenvectors and r eigenvalues)."""

    name = "rank_r"

    def __init__(self, d, n=1, float_bits=32, *, r: int):
        super().__init__(d, n, float_bits)
        self.m = matrix_dim(self.d)
        if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= self.m:
            raise ValueError(f"rank_r: r must be an integer in [1, {self.m}] (the matrix size), got {r!r}")
        self.r = r

    def params(self):
        return {"r": self.r}

    @property
    def alpha(self):
        return self.r / self.m

    def compress(self, X, generator, clients):
        pk = SymPacking(self.m, X.dtype, X.device)
        evals, evecs = torch.linalg.eigh(pk.unpack(X))
        top = evals.abs().topk(self.r, dim=1).indices                       # (m, r)
        lam = evals.gather(1, top)
        V = evecs.gather(2, top[:, None, :].expand(-1, self.m, -1))         # (m, d, r)
        return pk.pack((V * lam[:, None, :]) @ V.transpose(1, 2)), self.r * (self.m + 1) * self.float_bits


@register_compressor
class Threshold(Compressor):
    """Adaptive thresholding (Newton-3PC, Islamov et al. 2022): keep the entries with
    |x_j| >= lam ||x||_inf, zero the others. Biased and contractive with
    alpha = max(1 - (D - 1) lam^2, 1 / D): the largest entry is always kept, and each of the at
    most D - 1 dropped entries is below lam ||x||_inf <= lam ||x||_2. Bits: (number kept) *
    (b + ceil(log2 D)) per row, so they vary from row to row and round to round."""

    name = "threshold"

    def __init__(self, d, n=1, float_bits=32, *, lam: float):
        super().__init__(d, n, float_bits)
        if not 0 < float(lam) <= 1:
            raise ValueError(f"threshold: lam must be in (0, 1], got {lam!r}")
        self.lam = float(lam)

    def params(self):
        return {"lam": self.lam}

    @property
    def alpha(self):
        return max(1.0 - (self.d - 1) * self.lam ** 2, 1.0 / self.d)

    def compress(self, X, generator, clients):
        keep = X.abs() >= self.lam * X.abs().amax(dim=1, keepdim=True)
        keep &= X != 0
        kept = keep.sum(1).to(torch.float64).cpu()
        return torch.where(keep, X, torch.zeros_like(X)), kept * (self.float_bits + index_bits(self.d))
