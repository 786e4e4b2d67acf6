"""Linear minimization oracles (LMOs) over norm balls, and the Newton–Schulz orthogonalization.

An LMO over the ball ``{z : ||z|| <= r}`` returns a minimizer of the linear function ``<g, z>``:

    lmo(g) in argmin_{||z|| <= r} <g, z>,   and   <g, lmo(g)> = -r ||g||_*  (the dual norm).

Every function here is batched: leading dimensions are batch dimensions (clients, layers of the
same shape, ...), so one call handles many vectors or matrices without a Python loop.

* vector norms (``l2``, ``sign`` = l-infinity, ``l1``) act on the trailing ``g.ndim - batch_dims``
  dimensions taken together (a whole weight tensor is one vector);
* matrix norms (``spectral``, ``colnorm``, ``rownorm``) act on the last two dimensions, every
  leading dimension is a batch dimension.

Norms and their LMOs (unit radius; ``r`` scales the result):

============  ==========================================  ======================================
name          norm ||z||                                  LMO (minimizer of <g, z>)
============  ==========================================  ======================================
``l2``        Euclidean (Frobenius) norm                  ``-g / ||g||_2``
``sign``      l-infinity norm (alias ``linf``)            ``-sign(g)``
``l1``        l1 norm                                     ``-sign(g_j) e_j``, ``j = argmax |g_j|``
``spectral``  largest singular value                      ``-U V^T`` (``g = U S V^T``)
``colnorm``   ``max_j ||z[:, j]||_2`` (Scion's ColNorm)   ``-g[:, j] / ||g[:, j]||_2`` per column
``rownorm``   ``max_i ||z[i, :]||_2`` (Scion's RowNorm)   ``-g[i, :] / ||g[i, :]||_2`` per row
============  ==========================================  ======================================

The dual norms are l2, l1, l-infinity, nuclear, sum of column norms and sum of row norms.
Where ``g`` (or a column/row of it) is zero every feasible point is a minimizer; the functions
then return zero there.

The spectral LMO is computed either exactly with an SVD (``method="svd"``) or approximately with
the Newton–Schulz iteration of Muon (``method="newton_schulz"``, the default, matmuls only).

References:
    Pethick, Xie, Antonakopoulos, Zhu, Silveti-Falls, Cevher (2025), "Training Deep Learning
    Models with Norm-Constrained LMOs", arXiv:2502.07529 (Table 1: LMOs of the l2, max-norm and
    spectral balls; the ColNorm, RowNorm, Sign and Spectral layer norms of Scion).
    Jordan et al. (2024), "Muon: An optimizer for hidden layers in neural networks" (blog post):
    the quintic Newton–Schulz iteration and its coefficients (3.4445, -4.7750, 2.0315).
    Bernstein & Newhouse (2024), "Old Optimizer, New Norm: An Anthology", arXiv:2409.20325:
    steepest descent under the spectral norm is orthogonalization.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Union

import torch
from torch import Tensor

__all__ = [
    "MUON_NS_COEFFICIENTS",
    "CUBIC_NS_COEFFICIENTS",
    "newton_schulz",
    "ns_scalar_map",
    "lmo_l2",
    "lmo_sign",
    "lmo_l1",
    "lmo_spectral",
    "lmo_colnorm",
    "lmo_rownorm",
    "apply_lmo",
    "dual_norm",
    "primal_norm",
    "norm_many",
    "as_matrix",
    "apply_batched",
    "lmo_many",
    "LMOS",
    "VECTOR_NORMS",
    "MATRIX_NORMS",
    "resolve_norm",
]

#: Quintic coefficients (a, b, c) of Muon's Newton–Schulz iteration (Jordan et al., 2024), the
#: same as torch.optim.Muon's defaults. They trade exact convergence for speed: after 5 steps,
#: normalized singular values in [1e-2, 1] land in [0.68, 1.14] rather than at 1, and those in
#: [1e-3, 1] in [0.47, 1.21] (see ``ns_scalar_map``).
MUON_NS_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)

#: The classic cubic Newton–Schulz iteration X <- 1.5 X - 0.5 X X^T X (a, b, c) = (1.5, -0.5, 0):
#: singular values in (0, 1] converge monotonically to exactly 1 (slowly for small ones).
CUBIC_NS_COEFFICIENTS: tuple[float, float, float] = (1.5, -0.5, 0.0)

Coefficients = Union[tuple[float, float, float], Sequence[tuple[float, float, float]]]


def _schedule(coefficients: Coefficients, steps: int) -> list[tuple[float, float, float]]:
    """A list of per-step (a, b, c): one triple repeated ``steps`` times, or a given schedule."""
    if len(coefficients) == 3 and all(isinstance(c, (int, float)) for c in coefficients):
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        return [tuple(float(c) for c in coefficients)] * steps  # type: ignore[list-item]
    sched = [tuple(float(c) for c in t) for t in coefficients]  # type: ignore[union-attr]
    if any(len(t) != 3 for t in sched):
        raise ValueError("coefficients must be one (a, b, c) triple or a sequence of triples")
    return sched  # type: ignore[return-value]


def newton_schulz(
    G: Tensor,
    steps: int = 5,
    coefficients: Coefficients = MUON_NS_COEFFICIENTS,
    eps: float = 1e-7,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Approximate orthogonalization ``U V^T`` of a batch of matrices by Newton–Schulz.

    For ``G = U S V^T`` (reduced SVD) the iteration maps ``X = G / ||G||_F`` (so every singular
    value is in (0, 1]) through ``X <- a X + (b A + c A^2) X`` with ``A = X X^T``, which applies
    the odd polynomial ``p(s) = a s + b s^3 + c s^5`` to every singular value and keeps ``U, V``.
    After the iterations the result is ``U p^(k)(S / ||G||_F) V^T``. With Muon's quintic
    coefficients (default) and 5 steps, normalized singular values ``s / ||G||_F`` in
    ``[1e-2, 1]`` are mapped into ``[0.68, 1.14]`` and those in ``[1e-3, 1]`` into
    ``[0.47, 1.21]`` (the documented tolerance; ``ns_scalar_map`` computes the exact map); with
    ``CUBIC_NS_COEFFICIENTS`` they converge to 1 as ``steps`` grows (30 steps: 1 to double
    precision for inputs in ``[1e-3, 1]``).

    Works on ``(..., m, n)``: every leading dimension is a batch dimension and each step is three
    batched matmuls (``bmm``, two ``baddbmm``). Wide orientation is used internally (``m <= n``:
    the Gram matrix ``X X^T`` is the smaller side). On the CPU the batch runs in cache-sized
    chunks into preallocated buffers (:func:`_newton_schulz_cpu`); on other devices, or when
    autograd records the call, as one batched iteration.

    Args:
        G: tensor of shape ``(..., m, n)``.
        steps: number of iterations when ``coefficients`` is a single triple.
        coefficients: ``(a, b, c)`` used at every step, or a sequence of per-step triples (then
            ``steps`` is ignored).
        eps: floor of the Frobenius norm used for the normalization (zero matrices map to zero).
        dtype: dtype of the computation (e.g. ``torch.bfloat16`` as in torch.optim.Muon); the
            result is cast back to ``G.dtype``. Default: ``G.dtype``.

    Returns:
        Tensor of the shape and dtype of ``G``.

    References:
        Jordan et al. (2024), "Muon: An optimizer for hidden layers in neural networks" (quintic
        iteration); Bernstein & Newhouse (2024), arXiv:2409.20325 (Newton–Schulz for the
        spectral-norm steepest-descent direction).
    """
    if G.ndim < 2:
        raise ValueError(f"newton_schulz expects (..., m, n) with ndim >= 2, got shape {tuple(G.shape)}")
    sched = _schedule(coefficients, steps)
    out_dtype = G.dtype
    X = G.to(dtype) if dtype is not None else G
    transpose = X.shape[-2] > X.shape[-1]
    if transpose:
        X = X.mT
    batch_shape, (m, n) = X.shape[:-2], X.shape[-2:]
    X = X.reshape(-1, m, n)
    if X.device.type == "cpu" and not (X.requires_grad and torch.is_grad_enabled()):
        X = _newton_schulz_cpu(X, sched, eps)
    else:
        X = X / X.norm(dim=(-2, -1), keepdim=True).clamp_min(eps)
        for a, b, c in sched:
            A = torch.bmm(X, X.mT)
            B = torch.baddbmm(A, A, A, beta=b, alpha=c)
            X = torch.baddbmm(X, B, X, beta=a)
    X = X.reshape(*batch_shape, m, n)
    if transpose:
        X = X.mT
    return X.to(out_dtype)


#: working set (bytes) of one chunk of matrices in the CPU Newton-Schulz iteration: about half a core's L2
NS_CPU_CHUNK_BYTES = 1 << 20


def _newton_schulz_cpu(X: Tensor, sched, eps: float) -> Tensor:
    """The iteration of :func:`newton_schulz` on a (k, m, n) batch (m <= n) on the CPU, chunk by chunk.

    A batch that does not fit in the cache streams every matrix through memory at each of the
    3 x steps products, where a per-matrix loop keeps its matrix in cache (and the batched call
    was no faster than the loop on one thread). Here all steps run on a chunk of matrices whose
    iterate, Gram matrix, polynomial and next iterate fit in ``NS_CPU_CHUNK_BYTES``, before the
    next chunk; the products write into buffers allocated once (``out=``), so the call makes
    three allocations in all. The arithmetic is the same as the plain batched iteration."""
    k, m, n = X.shape
    out = torch.empty((k, m, n), dtype=X.dtype)
    per = X.element_size() * 2 * (m * n + m * m)  # X, next X, A = X X^T, B = b A + c A^2
    chunk = max(1, min(k, NS_CPU_CHUNK_BYTES // per))
    bufA = torch.empty((chunk, m, m), dtype=X.dtype)
    bufB = torch.empty((chunk, m, m), dtype=X.dtype)
    bufY = torch.empty((chunk, m, n), dtype=X.dtype)
    for s in range(0, k, chunk):
        e = min(k, s + chunk)
        A, B, cur, nxt = bufA[: e - s], bufB[: e - s], out[s:e], bufY[: e - s]
        G = X[s:e]
        torch.div(G, G.norm(dim=(-2, -1), keepdim=True).clamp_min(eps), out=cur)
        for a, b, c in sched:
            torch.bmm(cur, cur.mT, out=A)
            torch.baddbmm(A, A, A, beta=b, alpha=c, out=B)
            torch.baddbmm(cur, B, cur, beta=a, out=nxt)
            cur, nxt = nxt, cur
        if cur.data_ptr() != out[s:e].data_ptr():
            out[s:e].copy_(cur)
    return out


def ns_scalar_map(s: Tensor, steps: int = 5, coefficients: Coefficients = MUON_NS_COEFFICIENTS) -> Tensor:
    """The scalar map that ``newton_schulz`` applies to each normalized singular value.

    ``newton_schulz(G)`` equals ``U diag(ns_scalar_map(S / ||G||_F)) V^T``; use this to get the
    exact output range of the iteration for a range of inputs.
    """
    for a, b, c in _schedule(coefficients, steps):
        s = a * s + b * s**3 + c * s**5
    return s


# ----------------------------------------------------------------------------------------------
# LMOs
# ----------------------------------------------------------------------------------------------
def _dims(g: Tensor, batch_dims: int) -> tuple[int, ...]:
    if not 0 <= batch_dims < max(g.ndim, 1):
        raise ValueError(f"batch_dims={batch_dims} leaves no dimension for the norm of shape {tuple(g.shape)}")
    return tuple(range(batch_dims, g.ndim))


def _safe_div(x: Tensor, n: Tensor) -> Tensor:
    """x / n, zero where n == 0."""
    return torch.where(n > 0, x / torch.where(n > 0, n, torch.ones_like(n)), torch.zeros_like(x))


def lmo_l2(g: Tensor, radius: float | Tensor = 1.0, batch_dims: int = 0) -> Tensor:
    """LMO of the Euclidean ball: ``-r g / ||g||_2`` (norm over the non-batch dimensions)."""
    n = torch.linalg.vector_norm(g, dim=_dims(g, batch_dims), keepdim=True)
    return -radius * _safe_div(g, n)


def lmo_sign(g: Tensor, radius: float | Tensor = 1.0, batch_dims: int = 0) -> Tensor:
    """LMO of the l-infinity ball: ``-r sign(g)`` (signSGD / Lion-type direction)."""
    _dims(g, batch_dims)
    return -radius * torch.sign(g)


def lmo_l1(g: Tensor, radius: float | Tensor = 1.0, batch_dims: int = 0) -> Tensor:
    """LMO of the l1 ball: a signed vertex ``-r sign(g_j) e_j`` at a largest ``|g_j|``."""
    _dims(g, batch_dims)
    flat = g.reshape(*g.shape[:batch_dims], -1)
    j = flat.abs().argmax(dim=-1, keepdim=True)
    out = torch.zeros_like(flat).scatter_(-1, j, -torch.sign(flat.gather(-1, j)))
    return radius * out.reshape(g.shape)


def _check_matrix(g: Tensor, name: str) -> None:
    if g.ndim < 2:
        raise ValueError(f"the {name} LMO needs matrices (..., m, n), got shape {tuple(g.shape)}")


def lmo_spectral(
    g: Tensor,
    radius: float | Tensor = 1.0,
    method: str = "newton_schulz",
    ns_steps: int = 5,
    ns_coefficients: Coefficients = MUON_NS_COEFFICIENTS,
    ns_dtype: torch.dtype | None = None,
) -> Tensor:
    """LMO of the spectral-norm ball: ``-r U V^T`` for ``g = U S V^T``, batched over ``(..., m, n)``.

    ``method="svd"`` is exact; ``method="newton_schulz"`` (Muon's) is approximate within the
    tolerance documented in ``newton_schulz`` and uses matmuls only.
    """
    _check_matrix(g, "spectral")
    if method == "svd":
        U, _, Vh = torch.linalg.svd(g, full_matrices=False)
        return -radius * (U @ Vh)
    if method == "newton_schulz":
        return -radius * newton_schulz(g, ns_steps, ns_coefficients, dtype=ns_dtype)
    raise ValueError(f"unknown spectral LMO method {method!r}; use 'newton_schulz' or 'svd'")


def lmo_colnorm(g: Tensor, radius: float | Tensor = 1.0) -> Tensor:
    """LMO of ``{Z : max_j ||Z[:, j]||_2 <= 1}``: every column normalized, ``-r g_j / ||g_j||``."""
    _check_matrix(g, "colnorm")
    return -radius * _safe_div(g, torch.linalg.vector_norm(g, dim=-2, keepdim=True))


def lmo_rownorm(g: Tensor, radius: float | Tensor = 1.0) -> Tensor:
    """LMO of ``{Z : max_i ||Z[i, :]||_2 <= 1}``: every row normalized, ``-r g_i / ||g_i||``."""
    _check_matrix(g, "rownorm")
    return -radius * _safe_div(g, torch.linalg.vector_norm(g, dim=-1, keepdim=True))


VECTOR_NORMS = ("l2", "sign", "linf", "l1")
MATRIX_NORMS = ("spectral", "colnorm", "rownorm")

#: name -> LMO function (unit-radius semantics documented above).
LMOS: dict[str, Callable[..., Tensor]] = {
    "l2": lmo_l2,
    "sign": lmo_sign,
    "linf": lmo_sign,
    "l1": lmo_l1,
    "spectral": lmo_spectral,
    "colnorm": lmo_colnorm,
    "rownorm": lmo_rownorm,
}


def _unknown(norm: str) -> ValueError:
    import difflib

    close = difflib.get_close_matches(norm, list(LMOS) + ["auto"], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ValueError(f"unknown norm {norm!r} (known: auto, {', '.join(LMOS)}){hint}")


def resolve_norm(norm: str, ndim: int) -> str:
    """``'auto'`` -> ``'spectral'`` for tensors with >= 2 dimensions, ``'l2'`` otherwise."""
    if norm == "auto":
        return "spectral" if ndim >= 2 else "l2"
    if norm not in LMOS:
        raise _unknown(norm)
    return norm


def apply_lmo(g: Tensor, norm: str, radius: float | Tensor = 1.0, batch_dims: int = 0, **options) -> Tensor:
    """Dispatch to the LMO of ``norm`` (see the module table).

    For matrix norms the last two dimensions are the matrix and ``batch_dims`` is ignored
    (every leading dimension is a batch dimension). ``options`` go to ``lmo_spectral``
    (``method``, ``ns_steps``, ``ns_coefficients``, ``ns_dtype``).
    """
    norm = resolve_norm(norm, g.ndim - batch_dims)
    if norm == "spectral":
        return lmo_spectral(g, radius, **options)
    if norm in MATRIX_NORMS:
        return LMOS[norm](g, radius)
    return LMOS[norm](g, radius, batch_dims)


def dual_norm(g: Tensor, norm: str, batch_dims: int = 0) -> Tensor:
    """The dual norm ``||g||_* = max_{||z|| <= 1} <g, z> = -<g, lmo(g)>`` (exact; SVD for spectral).

    Returns a tensor of the batch shape (``g.shape[:batch_dims]`` for vector norms,
    ``g.shape[:-2]`` for matrix norms).
    """
    norm = resolve_norm(norm, g.ndim - batch_dims)
    if norm == "l2":
        return torch.linalg.vector_norm(g, dim=_dims(g, batch_dims))
    if norm in ("sign", "linf"):
        return torch.linalg.vector_norm(g, ord=1, dim=_dims(g, batch_dims))
    if norm == "l1":
        return torch.linalg.vector_norm(g, ord=math.inf, dim=_dims(g, batch_dims))
    _check_matrix(g, norm)
    if norm == "spectral":
        return torch.linalg.matrix_norm(g, ord="nuc")
    if norm == "colnorm":
        return torch.linalg.vector_norm(g, dim=-2).sum(-1)
    return torch.linalg.vector_norm(g, dim=-1).sum(-1)  # rownorm


def primal_norm(z: Tensor, norm: str, batch_dims: int = 0) -> Tensor:
    """The norm ``||z||`` whose unit ball the LMO of ``norm`` uses (SVD for spectral).

    Returns a tensor of the batch shape, like ``dual_norm``.
    """
    norm = resolve_norm(norm, z.ndim - batch_dims)
    if norm == "l2":
        return torch.linalg.vector_norm(z, dim=_dims(z, batch_dims))
    if norm in ("sign", "linf"):
        return torch.linalg.vector_norm(z, ord=math.inf, dim=_dims(z, batch_dims))
    if norm == "l1":
        return torch.linalg.vector_norm(z, ord=1, dim=_dims(z, batch_dims))
    _check_matrix(z, norm)
    if norm == "spectral":
        return torch.linalg.matrix_norm(z, ord=2)
    if norm == "colnorm":
        return torch.linalg.vector_norm(z, dim=-2).amax(-1)
    return torch.linalg.vector_norm(z, dim=-1).amax(-1)  # rownorm


# ----------------------------------------------------------------------------------------------
# Many tensors of mixed shapes (the layers of a model) in as few batched calls as possible
# ----------------------------------------------------------------------------------------------
def as_matrix(t: Tensor) -> Tensor:
    """View a parameter as a matrix ``(shape[0], prod(shape[1:]))`` (conv kernels flattened)."""
    if t.ndim < 2:
        raise ValueError(f"a matrix norm needs a parameter with >= 2 dimensions, got shape {tuple(t.shape)}")
    return t.reshape(t.shape[0], -1)


def apply_batched(
    fn: Callable[[Tensor], Tensor], tensors: Sequence[Tensor], matrix: bool = False, reshape: bool = True
) -> list[Tensor]:
    """Apply ``fn`` to each tensor, stacking tensors of equal shape/dtype/device into one call.

    ``fn`` receives a stack ``(k, *shape)`` (``(k, m, n)`` with ``matrix=True``, parameters viewed
    as matrices) and returns a tensor with leading dimension ``k``. Results come back in input
    order, reshaped to the original shapes (``reshape=True``, for maps such as LMOs) or as
    returned (``reshape=False``, for reductions such as norms). The loop is over distinct shapes,
    not over tensors.
    """
    out: list[Tensor | None] = [None] * len(tensors)
    buckets: dict[tuple, list[int]] = {}
    views = [as_matrix(t) if matrix else (t.reshape(1) if t.ndim == 0 else t) for t in tensors]
    for i, v in enumerate(views):
        buckets.setdefault((tuple(v.shape), v.dtype, v.device), []).append(i)
    for idx in buckets.values():
        res = fn(torch.stack([views[i] for i in idx]))
        for i, r in zip(idx, res.unbind(0)):
            out[i] = r.reshape(tensors[i].shape) if reshape else r
    return out  # type: ignore[return-value]


def lmo_many(tensors: Sequence[Tensor], norm: str, radius: float = 1.0, **options) -> list[Tensor]:
    """The layer-wise LMO of a list of parameters (each tensor is its own ball), batched by shape.

    ``norm='auto'`` picks spectral for >= 2-D tensors and l2 for the others. Matrix norms view a
    tensor as ``(shape[0], -1)``.
    """
    out: list[Tensor | None] = [None] * len(tensors)
    by_norm: dict[str, list[int]] = {}
    for i, t in enumerate(tensors):
        by_norm.setdefault(resolve_norm(norm, t.ndim), []).append(i)
    for nm, idx in by_norm.items():
        matrix = nm in MATRIX_NORMS
        res = apply_batched(lambda s, nm=nm: apply_lmo(s, nm, radius, batch_dims=1, **options), [tensors[i] for i in idx], matrix)
        for i, r in zip(idx, res):
            out[i] = r
    return out  # type: ignore[return-value]


def norm_many(tensors: Sequence[Tensor], norm: str, dual: bool = False) -> list[Tensor]:
    """The (primal or dual) layer norm of each tensor, batched by shape; a list of 0-d tensors."""
    out: list[Tensor | None] = [None] * len(tensors)
    by_norm: dict[str, list[int]] = {}
    for i, t in enumerate(tensors):
        by_norm.setdefault(resolve_norm(norm, t.ndim), []).append(i)
    fn = dual_norm if dual else primal_norm
    for nm, idx in by_norm.items():
        res = apply_batched(lambda s, nm=nm: fn(s, nm, batch_dims=1), [tensors[i] for i in idx], nm in MATRIX_NORMS, reshape=False)
        for i, r in zip(idx, res):
            out[i] = r
    return out  # type: ignore[return-value]
