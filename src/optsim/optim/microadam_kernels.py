"""Fused CPU loops of MicroAdam's step (numba): each one pass over memory where the PyTorch version
runs several kernels.

:class:`optsim.optim.MicroAdam` uses them for contiguous float32 / float64 parameters on the CPU
(``fused=None`` or ``True``). The PyTorch step in :mod:`optsim.optim.microadam` stays the definition,
the path on every other device and dtype, and the reference these loops are tested against:

* :func:`dequantize_add` -- ``a = Q^{-1}(e) + g`` (4-bit codes unpacked, dequantized and added in one
  pass): the same float operations as ``dequantize_4bit(...).add_(g)``, bit for bit;
* :func:`candidates` -- the positions with ``|a| >= tau`` of every row, ascending, with their
  magnitudes: the ``abs``, compare and ``nonzero`` of the threshold Top-K in one pass;
* :func:`pack_codes` -- the packed 4-bit codes from the block coefficients: bit for bit the codes
  of ``quantize_4bit`` (whose block statistics stay PyTorch's ``amin`` / ``amax``);
* :func:`window_update` -- the window's Adam statistics summed per distinct position (each
  position's terms in window order, as the PyTorch version sums them) and the update applied,
  range by range of positions through a buffer that stays in cache, with no sort of the window.
  ``sqrt`` here is IEEE's (correctly rounded); PyTorch's vectorized ``sqrt_`` can be one ulp away,
  so the parameters of the two paths can differ in the last bit at a few positions.

The window's rows must hold their positions in ascending order (MicroAdam keeps them so). The loops
run on ``torch.get_num_threads()`` threads (numba's parallel layer), one call at a time; a process
forked after this module was imported uses the PyTorch step (an OpenMP pool does not survive a fork).

Reference: Modoranu et al. (2024), "MicroAdam", arXiv:2405.15593, Algorithm 1 (the step these
loops compute); the authors' CUDA kernels fuse the same passes on the GPU.
"""
from __future__ import annotations

import os
import threading

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

__all__ = ["applies", "candidates", "dequantize_add", "pack_codes", "window_update"]

_CHUNK = 1 << 15                 # entries per parallel job (even: a job never splits a code byte)
_RANGE = 1 << 15                 # positions per window_update buffer (two values and a stamp each)
_PARALLEL_MIN = 1 << 16          # entries below which a loop runs on the calling thread only
_LOCK = threading.Lock()
_PID = os.getpid()               # the process these loops may run their threads in
_REAL = {torch.float32: np.float32, torch.float64: np.float64}


def applies(p: Tensor) -> bool:
    """Whether the fused loops take this parameter: CPU, float32 or float64, in the process that
    imported them (not a fork of it)."""
    return p.device.type == "cpu" and p.dtype in _REAL and os.getpid() == _PID


def _np(t: Tensor) -> np.ndarray:
    return t.detach().numpy()


def _check(what: str, t: Tensor, shape: tuple, dtype=None) -> None:
    """The loops index without bounds checks: shapes and dtypes are checked here, once per call."""
    if tuple(t.shape) != tuple(shape) or (dtype is not None and t.dtype != dtype) or t.device.type != "cpu":
        raise ValueError(f"microadam kernels: {what} must be a CPU tensor of shape {tuple(shape)}"
                         f"{'' if dtype is None else f' and dtype {dtype}'}, got {tuple(t.shape)} {t.dtype} {t.device}")


def _run(kernel, *args, work: int, threads: bool = False):
    """``kernel(*args)`` on torch's thread count (also passed as the last argument with ``threads``),
    or on this thread alone for less than :data:`_PARALLEL_MIN` entries of ``work`` (waking the
    other threads costs more than such a loop, and far more when the cores are busy). numba's
    OpenMP layer shares PyTorch's OpenMP runtime, and starting its pool resets that runtime's
    thread count: torch's is put back."""
    t = torch.get_num_threads()
    n = 1 if work < _PARALLEL_MIN else max(1, min(t, numba.config.NUMBA_NUM_THREADS))
    with _LOCK:
        try:
            numba.set_num_threads(n)
            return kernel(*args, n) if threads else kernel(*args)
        finally:
            if torch.get_num_threads() != t:
                torch.set_num_threads(t)


# ---- a = Q^{-1}(e) + g ----------------------------------------------------------------------------
# The inner loops read their block's constants into locals, index 1-D rows and count with unsigned
# integers: a signed index costs a negative-index check per access, which stops LLVM vectorizing
# (3 x slower here), and a store that might alias a constant's array forces a reload per entry.
_1, _4, _15 = np.uint64(1), np.uint64(4), np.uint64(15)
# ``lo + code u`` and ``bias + x inv`` are PyTorch's ``addcmul``, which rounds once (a fused
# multiply-add): the loops let LLVM contract them the same way (and nothing else: no other
# fast-math assumption)
_FMA = {"contract"}


def _dequantize_add_kernel(real):
    """The loop for one float type ``real`` (np.float32 / np.float64): a code becomes ``real``
    before it is scaled, as in the PyTorch version (numba would widen a uint8 times float32 to
    float64)."""

    @njit(cache=True, nogil=True, boundscheck=False, inline="always", fastmath=_FMA)
    def segment(cr, gr, out, s, e, L, U):
        j = s
        if j & 1 and j < e:                                    # an odd start: a low nibble
            out[j] = (L + real(cr[j >> 1] & _15) * U) + gr[j]
            j += 1
        for i in range(np.uint64(j >> 1), np.uint64(e >> 1)):
            byte = cr[i]
            out[i + i] = (L + real(byte >> _4) * U) + gr[i + i]
            out[i + i + _1] = (L + real(byte & _15) * U) + gr[i + i + _1]
        if e & 1 and e - 1 >= j:                               # an odd end: a high nibble
            out[e - 1] = (L + real(cr[(e - 1) >> 1] >> _4) * U) + gr[e - 1]

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False, fastmath=_FMA)
    def kernel(codes, lo, u, g, block, out):
        N, d = g.shape
        nch = (d + _CHUNK - 1) // _CHUNK
        for job in prange(N * nch):
            n = job // nch
            cs = (job % nch) * _CHUNK
            ce = min(d, cs + _CHUNK)
            cr, gr, orow, lr, ur = codes[n], g[n], out[n], lo[n], u[n]
            for b in range(cs // block, (ce - 1) // block + 1):
                segment(cr, gr, orow, max(cs, b * block), min(ce, (b + 1) * block), lr[b], ur[b])

    return kernel


_DEQUANTIZE_ADD = {np.dtype(t): _dequantize_add_kernel(t) for t in (np.float32, np.float64)}


def dequantize_add(codes: Tensor, lo: Tensor, u: Tensor, g: Tensor, block: int, out: Tensor) -> Tensor:
    """``out = (lo_b + code u_b) + g`` for rows (N, d): the codes of ``quantize_4bit`` (N, ceil(d/2))
    with the per-block ``lo`` and step ``u`` (N, nb) in ``g``'s dtype. Returns ``out`` (N, d)."""
    N, d = g.shape
    nb = -(-d // block)
    _check("codes", codes, (N, -(-d // 2)), torch.uint8)
    for name, t in (("lo", lo), ("u", u)):
        _check(name, t, (N, nb), g.dtype)
    _check("out", out, (N, d), g.dtype)
    G = _np(g)
    _run(_DEQUANTIZE_ADD[G.dtype], _np(codes), _np(lo.contiguous()), _np(u.contiguous()), G, int(block), _np(out),
         work=N * d)
    return out


# ---- candidates of the threshold Top-K -----------------------------------------------------------
@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _mark(a, tau, buf, counts):
    N, d = a.shape
    nch = counts.shape[1]
    for job in prange(N * nch):
        n = job // nch
        cs = (job % nch) * _CHUNK
        ce = min(d, cs + _CHUNK)
        t = tau[n]
        ar, br = a[n], buf[n]
        c = cs
        for j in range(np.uint64(cs), np.uint64(ce)):
            if abs(ar[j]) >= t:
                br[c] = j
                c += 1
        counts[n, job % nch] = c - cs


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _collect(a, buf, counts, offsets, cand, mag):
    N, nch = counts.shape
    for job in prange(N * nch):
        n = job // nch
        ch = job % nch
        o = offsets[n, ch]
        cs = ch * _CHUNK
        ar, br, cr, mr = a[n], buf[n], cand[n], mag[n]
        for i in range(counts[n, ch]):
            j = br[cs + i]
            cr[o + i] = j
            mr[o + i] = abs(ar[j])


def candidates(a: Tensor, tau: Tensor, buf: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The positions ``j`` with ``|a[n, j]| >= tau[n]`` of every row of ``a`` (N, d), ascending.

    Returns ``(cand, mag, count)``: ``cand`` (N, c) int64 and ``mag`` (N, c) the magnitudes there,
    ``c`` the largest count; a row with fewer holds position 0 and magnitude -1 after its own (never
    chosen by a Top-K of nonnegative magnitudes). ``count`` (N,) int64. ``buf``: an (N, d) int32
    work buffer (int64 where ``d >= 2**31``)."""
    N, d = a.shape
    _check("buf", buf, (N, d))
    nch = -(-d // _CHUNK)
    counts = np.zeros((N, nch), dtype=np.int64)
    _run(_mark, _np(a), _np(tau.reshape(N).to(a.dtype)), _np(buf), counts, work=N * d)
    count = counts.sum(axis=1)
    offsets = np.cumsum(counts, axis=1) - counts
    c = int(count.max()) if N else 0
    cand = torch.zeros(N, c, dtype=torch.long)
    mag = torch.full((N, c), -1.0, dtype=a.dtype)
    _run(_collect, _np(a), _np(buf), counts, offsets, _np(cand), _np(mag), work=N * c)
    return cand, mag, torch.from_numpy(count)


# ---- 4-bit codes -----------------------------------------------------------------------------------
@njit(cache=True, nogil=True, boundscheck=False, inline="always", fastmath=_FMA)
def _code(x, inv, bias, top):
    return np.uint8(min(max(bias + x * inv, top - top), top))


@njit(cache=True, nogil=True, boundscheck=False, inline="always", fastmath=_FMA)
def _pack_segment(xr, cr, s, e, inv, bias, top):
    j = s
    if j & 1 and j < e:                                        # an odd start: the low nibble
        cr[j >> 1] = (cr[j >> 1] & 240) | _code(xr[j], inv, bias, top)
        j += 1
    for i in range(np.uint64(j >> 1), np.uint64(e >> 1)):
        cr[i] = (_code(xr[i + i], inv, bias, top) << _4) | _code(xr[i + i + _1], inv, bias, top)
    if e & 1 and e - 1 >= j:                                   # an odd end: the high nibble (low: next block's)
        cr[(e - 1) >> 1] = _code(xr[e - 1], inv, bias, top) << 4


@njit(parallel=True, cache=True, nogil=True, boundscheck=False, fastmath=_FMA)
def _pack_codes(x, inv, bias, block, top, codes):
    N, d = x.shape
    nch = (d + _CHUNK - 1) // _CHUNK
    for job in prange(N * nch):
        n = job // nch
        cs = (job % nch) * _CHUNK
        ce = min(d, cs + _CHUNK)
        xr, cr, ir, br = x[n], codes[n], inv[n], bias[n]
        for b in range(cs // block, (ce - 1) // block + 1):
            _pack_segment(xr, cr, max(cs, b * block), min(ce, (b + 1) * block), ir[b], br[b], top)


def pack_codes(x: Tensor, inv: Tensor, bias: Tensor, block: int, codes: Tensor) -> Tensor:
    """``codes[n, i]``: the 4-bit codes ``clamp(bias_b + x inv_b, 0, 15)`` (truncated) of entries
    ``2i`` (high nibble) and ``2i + 1`` (low nibble; 0 past the end) of row ``n`` of ``x`` (N, d),
    ``inv`` and ``bias`` (N, nb) in ``x``'s dtype (``block_coefficients``). Returns ``codes``."""
    N, d = x.shape
    for name, t in (("inv", inv), ("bias", bias)):
        _check(name, t, (N, -(-d // block)), x.dtype)
    _check("codes", codes, (N, -(-d // 2)), torch.uint8)
    top = _REAL[x.dtype](15)
    _run(_pack_codes, _np(x), _np(inv.contiguous()), _np(bias.contiguous()), int(block), top, _np(codes), work=N * d)
    return codes


# ---- the window's statistics and the update --------------------------------------------------------
@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _window_update(P, pos, V, w1, w2, scale, c2, eps, width, T):
    rows, N = pos.shape[0], pos.shape[1]
    d = np.uint64(P.shape[1])
    R = min(_RANGE, width)                                 # (a small tensor: a small buffer)
    RU = np.uint64(R)
    nr = (width + R - 1) // R
    for th in prange(T):
        M = np.zeros(R, V.dtype)
        S = np.zeros(R, V.dtype)
        stamp = np.zeros(R, np.int32)
        first = np.empty(rows, np.int64)
        last = np.empty(rows, np.int64)
        cur = 0
        for job in range(th, N * nr, T):
            n = job // nr
            r0 = (job % nr) * R
            cur += 2
            Pn = P[n]
            for r in range(rows):
                first[r] = np.searchsorted(pos[r, n], r0)
                last[r] = np.searchsorted(pos[r, n], r0 + R)
            for r in range(rows):
                pr, vr, a1, a2 = pos[r, n], V[r, n], w1[r], w2[r]
                for i in range(np.uint64(first[r]), np.uint64(last[r])):
                    q = np.uint64(pr[i] - r0)
                    if q >= RU:                          # (only if a row were not ascending)
                        continue
                    v = vr[i]
                    if stamp[q] != cur:
                        stamp[q] = cur
                        M[q] = 0
                        S[q] = 0
                    M[q] += v * a1
                    S[q] += (v * v) * a2
            for r in range(rows):
                pr = pos[r, n]
                for i in range(np.uint64(first[r]), np.uint64(last[r])):
                    q = np.uint64(pr[i] - r0)
                    if q < RU and stamp[q] == cur:
                        stamp[q] = cur + 1
                        j = np.uint64(r0) + q
                        if j < d:
                            Pn[j] -= (M[q] * scale) / (np.sqrt(S[q] * c2) + eps)


def window_update(P: Tensor, pos: Tensor, V: Tensor, w1: Tensor, w2: Tensor, scale: float, c2: float, eps: float,
                  width: int) -> None:
    """``P[n, j] -= scale M_j / (sqrt(c2 S_j) + eps)`` at every distinct position ``j < d`` of the
    window, ``M_j = sum_r w1[r] V[r, n, i]`` and ``S_j = sum_r w2[r] V[r, n, i]^2`` over the entries
    ``pos[r, n, i] = j`` (summed in row order ``r``). ``P`` (N, d) contiguous; ``pos`` (rows, N, k),
    every row ascending, positions below ``width``; ``V`` (rows, N, k), ``w1``, ``w2`` (rows,) in
    ``P``'s dtype; the scalars are rounded to that dtype first, as PyTorch does."""
    N, d = P.shape
    if pos.ndim != 3 or pos.shape[1] != N or not P.is_contiguous():
        raise ValueError(f"microadam kernels: pos must be (rows, {N}, k) for a contiguous P, got {tuple(pos.shape)}")
    _check("V", V, tuple(pos.shape), P.dtype)
    for name, t in (("w1", w1), ("w2", w2)):
        _check(name, t, (pos.shape[0],), P.dtype)
    if width < d:
        raise ValueError(f"microadam kernels: width {width} < d {d}")
    cast = _REAL[P.dtype]
    _run(_window_update, _np(P), _np(pos), _np(V), _np(w1), _np(w2), cast(scale), cast(c2), cast(eps), int(width),
         work=pos.numel(),
         threads=True)
