"""MicroAdam: Adam statistics rebuilt from a window of sparse gradients, with compressed error feedback.

For every parameter tensor (flattened to ``d`` entries; with ``batched=True`` every row of its
first dimension is an independent model with its own state) and its own step counter ``t``:

1. ``a = g_t + Q^{-1}(e)``: the error-feedback buffer, dequantized, is added to the gradient;
2. ``I_t`` = indices of the ``k`` largest ``|a_j|`` (``k = ceil(density * d)``), ``V_t = a[I_t]``;
3. the pair ``(I_t, V_t)`` is written into row ``(t - 1) mod m`` of a ring buffer of ``m`` rows;
4. ``a[I_t] = 0``: what is left is the new error, ``e = Q(a)`` (4-bit, per block of
   ``quant_block`` entries: ``delta_b = min``, ``Delta_b = max``, ``u_b = (Delta_b - delta_b)/15``,
   code ``floor((a - delta_b)/u_b + 1/2)``, dequantized as ``delta_b + code u_b``; two codes per
   byte, the even entry in the high nibble; a block with ``u_b = 0`` stores code 0);
5. decoupled weight decay ``theta <- (1 - lr lambda) theta``;
6. with row ``r``'s age ``rho_r = (t - 1 - r) mod m`` over the ``min(t, m)`` rows written so far,
   ``M = sum_r beta1^rho_r scatter(I_r, V_r)``, ``S = sum_r beta2^rho_r scatter(I_r, V_r^2)``,
   ``theta <- theta - lr c1 M / (sqrt(c2 S) + eps)`` with ``c1 = (1 - beta1)/(1 - beta1^t)`` and
   ``c2 = (1 - beta2)/(1 - beta2^t)`` (the bias corrections use ``t``, not ``min(t, m)``).

There is no AMSGrad maximum in the practical update (the analysis is of an AMSGrad-type method);
the update is nonzero only on the union of the window's indices. With ``density = 1``, an exact
error buffer (``quant_bits=None``) and ``m`` at least the number of steps, ``M`` and ``S`` are
Adam's moments exactly and the iterates are ``torch.optim.Adam``'s (``AdamW``'s with weight
decay) -- tested step for step.

State memory (:meth:`MicroAdam.optimizer_state_bytes`): ``ceil(d/2)`` bytes of 4-bit codes, ``m k``
indices and values, and two statistics per quantization block. The paper's count
``d/2 + 4 m k`` bytes (2-byte indices relative to a block of at most 32768 entries, bfloat16
values: 0.9 bytes per parameter at ``m = 10``, ``k = d/100``, against 8 for Adam in float32) is
this implementation's with ``topk="blockwise"``, ``topk_block <= 32768`` and
``value_dtype=torch.bfloat16`` (plus ``4 ceil(d / quant_block)`` bytes of block statistics); the
default global Top-K stores 4-byte indices and values in the parameter's dtype.

Differences from the authors' CUDA code, all documented choices:

* Top-K is global per tensor by default (the algorithm as stated); ``topk="blockwise"`` keeps
  ``ceil(density * topk_block)`` entries in each chunk of ``topk_block`` entries as the kernel
  does (its chunk size depends on the GPU's shared memory; here it is an argument);
* each tensor counts its own steps (the authors share one counter over all tensors, so a tensor
  whose gradient is ``None`` at some step gets shifted ages there); a tensor without gradient is
  left untouched, state included;
* values and block statistics are kept in ``value_dtype`` (default: the parameter's dtype; the
  kernels use bfloat16); the package's later options (``alpha``, densification) are not part of
  the paper and are not offered.

Reference:
    Modoranu, Safaryan, Malinovsky, Kurtic, Robert, Richtárik, Alistarh (2024), "MicroAdam:
    Accurate Adaptive Optimization with Low Space Overhead and Provable Convergence", NeurIPS
    2024, arXiv:2405.15593, Algorithm 1 (update rule and quantizer as in the authors' code,
    github.com/IST-DASLab/ISTA-DASLab-Optimizers, ``micro_adam.py`` and its kernels). The
    convergence theorem (AMSGrad-type rate with compressed gradients and compressed error
    feedback) is stated for the AMSGrad variant; its number and constants are not confirmed here.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from .closure import closure_loss

__all__ = ["MicroAdam", "dequantize_4bit", "quantize_4bit"]

_LEVELS = 15  # 4 bits: codes 0..15


# ---- 4-bit block quantizer (batched over rows) ------------------------------------------------------------
def _block_views(x: Tensor, block: int) -> list[Tensor]:
    """The whole blocks of the rows of ``x`` (N, d) as one (N, nb, block) view, and the shorter last
    block (N, 1, d mod block) if any: views of ``x``, no copy."""
    N, d = x.shape
    full = d // block
    parts = [x[:, :full * block].view(N, full, block)] if full else []
    if d % block:
        parts.append(x[:, full * block:].view(N, 1, d % block))
    return parts


def _empty(scratch, name: str, shape: tuple, dtype: torch.dtype, device) -> Tensor:
    if scratch is None:
        return torch.empty(shape, dtype=dtype, device=device)
    return scratch(name, math.prod(shape), dtype, device).narrow(0, 0, math.prod(shape)).view(shape)


def block_minmax(x: Tensor, block: int, stat_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """Per-block minimum and maximum (N, nb) of the rows of ``x`` (N, d), in ``stat_dtype``
    (default ``x.dtype``): the statistics the quantizer stores."""
    views = _block_views(x, block)             # (amin and amax: aminmax over a dimension is far slower on CPU)
    if len(views) == 1:
        lo, hi = views[0].amin(dim=-1), views[0].amax(dim=-1)
    else:
        lo = torch.cat([v.amin(dim=-1) for v in views], dim=1)
        hi = torch.cat([v.amax(dim=-1) for v in views], dim=1)
    if stat_dtype is not None:
        lo, hi = lo.to(stat_dtype), hi.to(stat_dtype)
    return lo, hi


def block_coefficients(lo: Tensor, hi: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The quantizer's per-block numbers in ``dtype`` from the stored statistics: ``lo``, the step
    ``u = (hi - lo)/15``, ``inv = 1/u`` (0 where ``u = 0``) and ``bias = 1/2 - lo inv``. A code is
    ``floor(x inv + bias)`` clamped to 0..15; an entry is dequantized as ``lo + code u``."""
    lo_c, hi_c = lo.to(dtype), hi.to(dtype)
    u = (hi_c - lo_c) / _LEVELS
    inv = torch.where(u > 0, u.reciprocal(), 0.0)
    return lo_c, u, inv, 0.5 - lo_c * inv


def quantize_4bit(x: Tensor, block: int, stat_dtype: torch.dtype | None = None, codes: Tensor | None = None,
                  scratch: Callable | None = None, kernels=None) -> tuple[Tensor, Tensor, Tensor]:
    """4-bit asymmetric block quantization of the rows of ``x`` (N, d).

    Returns ``(codes, lo, hi)``: ``codes`` uint8 (N, ceil(d/2)) with entry ``2i`` in the high
    nibble and ``2i + 1`` in the low one (an odd last entry alone in a high nibble), and the
    per-block minimum and maximum (N, nb) in ``stat_dtype`` (default ``x.dtype``). The code of an
    entry is ``floor((x - lo)/u + 1/2)`` with ``u = (hi - lo)/15`` (round half up; evaluated as
    ``x/u + (1/2 - lo/u)``, which can differ from the other order by one ulp) and 0 in a block with
    ``u = 0``; it is computed from the stored statistics, so ``|x - dequantize_4bit(...)| <= u/2``
    entrywise up to rounding. ``codes``: write the packed codes there; ``scratch(name, numel,
    dtype, device)``: work buffers to reuse (a 1-D tensor of at least ``numel`` entries);
    ``kernels``: :mod:`optsim.optim.microadam_kernels`, whose loop writes the same codes in one pass.
    """
    N, d = x.shape
    lo, hi = block_minmax(x, block, stat_dtype)
    _, _, inv, bias = block_coefficients(lo, hi, x.dtype)
    if codes is None:
        codes = torch.empty(N, -(-d // 2), dtype=torch.uint8, device=x.device)
    if kernels is not None:
        return kernels.pack_codes(x, inv, bias, block, codes), lo, hi
    even = d + d % 2
    code = _empty(scratch, "qf", (N, even), x.dtype, x.device)
    if d % 2:
        code[:, d:] = 0.0
    b0 = 0
    for xv, cv in zip(_block_views(x, block), _block_views(code[:, :d], block)):
        nbv = xv.shape[1]
        torch.addcmul(bias[:, b0:b0 + nbv, None], xv, inv[:, b0:b0 + nbv, None], out=cv)
        b0 += nbv
    code.clamp_(0, _LEVELS)                     # in [0, 15.5]: the conversion to uint8 truncates, i.e. floors
    c16 = _empty(scratch, "q16", (N, even), torch.int16, x.device)
    c16.copy_(code)                             # float -> int16 -> uint8: 3 x faster than float -> uint8
    c8 = _empty(scratch, "q8", (N, even), torch.uint8, x.device)
    c8.copy_(c16)
    _pack_nibbles(c8, codes, scratch)
    return codes, lo, hi


def dequantize_4bit(codes: Tensor, lo: Tensor, hi: Tensor, d: int, block: int, dtype: torch.dtype,
                    out: Tensor | None = None, scratch: Callable | None = None) -> Tensor:
    """Inverse of :func:`quantize_4bit`: ``lo_b + code (hi_b - lo_b) / 15``, rows (N, d) in ``dtype``
    (written into ``out`` (N, d + d mod 2) when given; the result is its first d columns)."""
    N, half = codes.shape
    x = torch.empty(N, 2 * half, dtype=dtype, device=codes.device) if out is None else out[:, :2 * half]
    c8 = _unpack_nibbles(codes, scratch)
    lo_c, u, _, _ = block_coefficients(lo, hi, dtype)
    b0 = 0
    for xv, cv in zip(_block_views(x[:, :d], block), _block_views(c8[:, :d], block)):
        nbv = xv.shape[1]
        torch.addcmul(lo_c[:, b0:b0 + nbv, None], cv, u[:, b0:b0 + nbv, None], out=xv)   # exact uint8 -> float
        b0 += nbv
    return x[:, :d]


_LITTLE = sys.byteorder == "little"


def _pack_nibbles(c8: Tensor, codes: Tensor, scratch: Callable | None = None) -> None:
    """``codes[:, i] = c8[:, 2i] << 4 | c8[:, 2i + 1]`` for codes 0..15 in ``c8`` (N, even). The pairs
    are read as one 16-bit word each (contiguous passes instead of two strided ones)."""
    if not _LITTLE:
        torch.bitwise_left_shift(c8[:, 0::2], 4, out=codes)
        codes.bitwise_or_(c8[:, 1::2])
        return
    w = c8.view(torch.int16)                    # (N, half): low byte = even entry, high byte = odd entry
    t = _empty(scratch, "q16", tuple(w.shape), torch.int16, c8.device)   # (the float -> int16 buffer is free)
    torch.bitwise_left_shift(w, 4, out=t)       # even << 4 in the low byte (its bits stay below bit 8)
    t.bitwise_or_(torch.bitwise_right_shift(w, 8))
    codes.copy_(t)                              # keeps the low byte


def _unpack_nibbles(codes: Tensor, scratch: Callable | None = None) -> Tensor:
    """The inverse of :func:`_pack_nibbles`: codes (N, half) uint8 -> (N, 2 half) uint8 of 0..15."""
    N, half = codes.shape
    c8 = _empty(scratch, "q8", (N, 2 * half), torch.uint8, codes.device)
    if not _LITTLE:
        torch.bitwise_right_shift(codes, 4, out=c8[:, 0::2])
        torch.bitwise_and(codes, 15, out=c8[:, 1::2])
        return c8
    w = c8.view(torch.int16)
    w.copy_(codes)                              # the byte, widened
    t = _empty(scratch, "q16", (N, half), torch.int16, codes.device)
    torch.bitwise_and(w, 15, out=t)
    t.bitwise_left_shift_(8)                    # odd entry -> the high byte
    w.bitwise_right_shift_(4).bitwise_or_(t)    # even entry (the high nibble) -> the low byte
    return c8


# ---- the optimizer -----------------------------------------------------------------------------------
_INDEX_BYTES = {torch.int16: 2, torch.int32: 4, torch.int64: 8}


class MicroAdam(Optimizer):
    r"""MicroAdam (Modoranu et al. 2024, Algorithm 1): Adam from a ring buffer of ``m`` Top-K
    gradients with 4-bit error feedback; see the module docstring for the update.

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-3).
        betas: ``(beta1, beta2)`` (default (0.9, 0.999)).
        eps: added to ``sqrt(c2 S)`` (default 1e-8).
        weight_decay: decoupled weight decay ``lambda`` (default 0, the paper's).
        m: window length, the number of sparse gradients kept (default 10, the paper's).
        density: share of entries kept by Top-K, ``k = ceil(density * d)`` (default 0.01).
        quant_bits: 4 (the paper's error feedback) or ``None`` for an exact error buffer in the
            parameter's dtype (a reference mode: ``d`` values of memory).
        quant_block: quantization block size (default 100 000, the authors' README; 64 in their
            Llama runs).
        topk: ``"global"`` (default) or ``"blockwise"`` (the CUDA kernel's chunked Top-K).
        topk_block: chunk size of ``"blockwise"`` (at most 32768 for 2-byte indices).
        value_dtype: dtype of the window's values and of the block statistics (default: the
            parameter's; ``torch.bfloat16`` as the authors' kernels).
        batched: treat the first dimension of every parameter as independent models (rows),
            each with its own Top-K, window and error feedback, in one batched step.
        fused: run the step's passes over memory through the fused CPU loops of
            :mod:`optsim.optim.microadam_kernels` (numba): ``None`` (default) where they apply
            (contiguous float32 / float64 parameters on the CPU), ``True`` to require them,
            ``False`` for the PyTorch kernels (every device). Both give the same window, error
            feedback and Top-K; the parameters can differ in the last bit at a few positions (IEEE
            ``sqrt`` against PyTorch's vectorized one).

    Work buffers (not state, not counted), reused across steps, per entry of the largest tensor:
    the error-corrected gradient and 4 bytes of candidate positions (fused), or the gradient, its
    magnitudes, the float codes and 4 bytes of small-integer codes and masks (PyTorch kernels).
    The update itself touches only the window's positions. Each window row is kept in ascending
    order of position (the row is a set; the order lets the fused update walk the window without
    sorting it).

    ``m``, ``density``, ``quant_bits``, ``quant_block``, ``topk``, ``topk_block``,
    ``value_dtype`` and ``batched`` shape the state: they are read when a tensor's state is
    created (its first step) and changing them later has no effect on that tensor.

    Example:
        >>> model = torch.nn.Linear(100, 10)
        >>> opt = MicroAdam(model.parameters(), lr=1e-3, m=10, density=0.01)
        >>> model(torch.randn(16, 100)).square().mean().backward(); opt.step()

    Reference: Modoranu et al. (2024), arXiv:2405.15593, Algorithm 1.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, m: int = 10, density: float = 0.01, quant_bits: int | None = 4,
                 quant_block: int = 100_000, topk: str = "global", topk_block: int | None = None,
                 value_dtype: torch.dtype | None = None, batched: bool = False, fused: bool | None = None) -> None:
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if not eps >= 0 or not weight_decay >= 0:
            raise ValueError("eps and weight_decay must be >= 0")
        if int(m) != m or m < 1:
            raise ValueError(f"m (the window length) must be an integer >= 1, got {m}")
        if not 0 < density <= 1:
            raise ValueError(f"density must lie in (0, 1], got {density}")
        if quant_bits not in (4, None):
            raise ValueError(f"quant_bits must be 4 (the paper's error feedback) or None (exact), got {quant_bits}")
        if int(quant_block) != quant_block or quant_block < 1:
            raise ValueError(f"quant_block must be an integer >= 1, got {quant_block}")
        if topk not in ("global", "blockwise"):
            raise ValueError(f"topk must be 'global' or 'blockwise', got {topk!r}")
        if topk == "blockwise" and (topk_block is None or int(topk_block) != topk_block or topk_block < 1):
            raise ValueError("topk='blockwise' needs topk_block, an integer >= 1 (e.g. 4096)")
        if fused not in (None, True, False):
            raise ValueError(f"fused must be None (where it applies), True or False, got {fused!r}")
        if value_dtype is not None and not (isinstance(value_dtype, torch.dtype) and value_dtype.is_floating_point):
            raise ValueError(f"value_dtype must be a floating torch dtype or None, got {value_dtype!r}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, m=int(m), density=float(density),
                        quant_bits=quant_bits, quant_block=int(quant_block), topk=topk,
                        topk_block=None if topk_block is None else int(topk_block), value_dtype=value_dtype,
                        batched=bool(batched), fused=fused)
        super().__init__(params, defaults)

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's, except that the state tensors keep their saved dtypes (torch casts floating
        state to the parameter's dtype, which would turn bfloat16 values into float32)."""
        super().load_state_dict(state_dict)
        saved = state_dict["state"]
        for group, sgroup in zip(self.param_groups, state_dict["param_groups"]):
            for p, pid in zip(group["params"], sgroup["params"]):
                for key, v in saved.get(pid, {}).items():
                    if torch.is_tensor(v) and key != "step":
                        self.state[p][key] = v.to(device=p.device, copy=True)
                if "idx" in self.state[p]:
                    self._sort_window(self.state[p], group, p)

    def _sort_window(self, st: dict, group, p: Tensor) -> None:
        """Each window row in ascending order of position (a state saved before rows were kept
        sorted loads as the same sets)."""
        _, d = self._shape(p, group)
        order = self._positions(st, group, d).sort(dim=-1).indices
        st["idx"] = st["idx"].gather(-1, order)
        st["val"] = st["val"].gather(-1, order)

    # ---- state -------------------------------------------------------------------------------------
    @staticmethod
    def _shape(p: Tensor, group) -> tuple[int, int]:
        if group["batched"]:
            if p.ndim < 1:
                raise ValueError("batched=True needs parameters with a leading row dimension")
            return p.shape[0], p[0].numel() if p.shape[0] else 0
        return 1, p.numel()

    @staticmethod
    def _k(d: int, group) -> tuple[int, int, int]:
        """(k, chunk, k per chunk): chunk = d for global Top-K."""
        if group["topk"] == "blockwise":
            c = min(group["topk_block"], d)
            kc = math.ceil(group["density"] * c)
            return kc * (-(-d // c)), c, kc
        k = math.ceil(group["density"] * d)
        return k, d, k

    def _init_state(self, p: Tensor, group) -> dict:
        N, d = self._shape(p, group)
        k, chunk, _ = self._k(d, group)
        vdt = group["value_dtype"] or p.dtype
        if group["topk"] == "blockwise" and chunk <= 32768:
            idt = torch.int16
        else:
            idt = torch.int32 if chunk < 2 ** 31 else torch.int64
        st = self.state[p]
        st["step"] = torch.tensor(0.0)
        st["idx"] = torch.zeros(group["m"], N, k, dtype=idt, device=p.device)
        st["val"] = torch.zeros(group["m"], N, k, dtype=vdt, device=p.device)
        if group["quant_bits"] is None:
            st["ef"] = torch.zeros(N, d, dtype=p.dtype, device=p.device)
        else:
            nb = -(-d // group["quant_block"])
            st["ef"] = torch.zeros(N, -(-d // 2), dtype=torch.uint8, device=p.device)
            st["ef_lo"] = torch.zeros(N, nb, dtype=vdt, device=p.device)
            st["ef_hi"] = torch.zeros(N, nb, dtype=vdt, device=p.device)
        return st

    def optimizer_state_bytes(self) -> int:
        """Bytes of optimizer state held now (window indices and values, error feedback, block
        statistics; the step counters excluded), summed over all parameters."""
        total = 0
        for st in self.state.values():
            total += sum(v.nbytes for key, v in st.items() if torch.is_tensor(v) and key != "step")
        return total

    @staticmethod
    def state_bytes_formula(d: int, m: int = 10, density: float = 0.01, quant_bits: int | None = 4,
                            quant_block: int = 100_000, topk: str = "global", topk_block: int | None = None,
                            value_bytes: int = 4, rows: int = 1, exact_bytes: int = 4) -> int:
        """Bytes of state of one tensor of ``d`` entries (per row; times ``rows``), in closed form:
        ``ceil(d/2) + m k (index_bytes + value_bytes) + 2 ceil(d / quant_block) value_bytes``,
        ``k`` and ``index_bytes`` as chosen by the optimizer (``exact_bytes * d`` for the error
        buffer when ``quant_bits`` is None). With ``topk="blockwise"``, ``topk_block <= 32768``
        and ``value_bytes=2`` it is the paper's ``d/2 + 4 m k`` plus the statistics."""
        grp = dict(topk=topk, topk_block=topk_block, density=density)
        k, chunk, _ = MicroAdam._k(d, grp)
        ib = 2 if (topk == "blockwise" and chunk <= 32768) else (4 if chunk < 2 ** 31 else 8)
        ef = exact_bytes * d if quant_bits is None else -(-d // 2) + 2 * (-(-d // quant_block)) * value_bytes
        return rows * (m * k * (ib + value_bytes) + ef)

    # ---- step --------------------------------------------------------------------------------------
    def _topk(self, a: Tensor, group, kernels=None) -> Tensor:
        """Positions (N, k) int64 of the Top-K of ``|a|`` in a's rows (blockwise: in the padded
        rows), in ascending order."""
        N, d = a.shape
        k, chunk, kc = self._k(d, group)
        if group["topk"] == "global":
            return _exact_topk(a, k, self._scratch, kernels)
        nch = -(-d // chunk)
        pad = nch * chunk - d
        mag = a.abs()
        if pad:
            mag = torch.cat([mag, mag.new_full((N, pad), -1.0)], dim=1)   # padding is never chosen
        rel = mag.view(N, nch, chunk).topk(kc, dim=2, sorted=False).indices       # (N, nch, kc)
        return _ascending((rel + (torch.arange(nch, device=a.device) * chunk)[None, :, None]).view(N, -1),
                          nch * chunk)

    @staticmethod
    def _fused_kernels(p: Tensor, group):
        """The fused loops' module where this tensor's step uses them, else None."""
        if group["fused"] is False:
            return None
        kernels = _kernels()
        if kernels is None:
            if group["fused"]:
                raise ValueError(f"fused=True needs numba, which does not import here ({_KERNELS['error']}): "
                                 "pip install numba, or use fused=None")
            return None
        ok = p.is_contiguous() and kernels.applies(p)
        if group["fused"] and not ok:
            raise ValueError("fused=True needs contiguous float32 / float64 parameters on the CPU "
                             "(fused=None uses the fused loops where they apply)")
        return kernels if ok else None

    def _positions(self, st, group, d: int, dtype: torch.dtype = torch.int64) -> Tensor:
        """The window's indices as positions in the rows (m, N, k), in ``dtype``."""
        idx = st["idx"].to(dtype)
        if group["topk"] == "blockwise":
            _, chunk, kc = self._k(d, group)
            k = idx.shape[-1]
            base = (torch.arange(k // kc, device=idx.device, dtype=dtype) * chunk).repeat_interleave(kc)
            idx = idx + base
        return idx

    def _scratch(self, key: str, numel: int, dtype: torch.dtype, device) -> Tensor:
        """A reused work buffer (not optimizer state): at least ``numel`` entries."""
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != torch.device(device):
            buf = torch.zeros(numel, dtype=dtype, device=device)
            self._buffers[key] = buf
        return buf

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = closure_loss(closure)
        if not hasattr(self, "_buffers"):
            self._buffers: dict = {}
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd, m = group["lr"], group["eps"], group["weight_decay"], group["m"]
            weights: dict = {}   # the rows' age weights, shared by the group's tensors at the same step
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("MicroAdam does not take sparse gradients")
                st = self.state[p] if len(self.state[p]) else self._init_state(p, group)
                N, d = self._shape(p, group)
                if N == 0 or d == 0:
                    continue
                st["step"] += 1
                t = int(st["step"])
                g = p.grad.reshape(N, d)
                dt = g.dtype
                kern = self._fused_kernels(p, group)
                block = group["quant_block"]
                # 1. error correction: a = g + Q^{-1}(e)
                if group["quant_bits"] is None:
                    a = g + st["ef"]
                elif kern is not None:
                    lo_c, u, _, _ = block_coefficients(st["ef_lo"], st["ef_hi"], dt)
                    a = kern.dequantize_add(st["ef"], lo_c, u, g, block,
                                            self._scratch("a", N * d, dt, p.device).narrow(0, 0, N * d).view(N, d))
                else:
                    work = self._scratch("a", N * (d + d % 2), dt, p.device).narrow(0, 0, N * (d + d % 2))
                    a = dequantize_4bit(st["ef"], st["ef_lo"], st["ef_hi"], d, block, dt,
                                        out=work.view(N, d + d % 2), scratch=self._scratch)
                    a.add_(g)
                # 2-3. Top-K into row (t - 1) mod m of the ring buffer, in ascending order of position
                pos = self._topk(a, group, kern)
                vals = a.gather(1, pos)
                slot = (t - 1) % m
                _, chunk, _ = self._k(d, group)
                st["idx"][slot] = (pos if group["topk"] == "global" else pos.remainder(chunk)).to(st["idx"].dtype)
                st["val"][slot] = vals.to(st["val"].dtype)
                # 4. the rest is the new (quantized) error
                a.scatter_(1, pos, 0.0)
                if group["quant_bits"] is None:
                    st["ef"].copy_(a)
                else:
                    _, lo, hi = quantize_4bit(a, block, st["ef_lo"].dtype, codes=st["ef"], scratch=self._scratch,
                                              kernels=kern)
                    st["ef_lo"].copy_(lo)
                    st["ef_hi"].copy_(hi)
                # 5. decoupled weight decay
                if wd:
                    p.mul_(1 - lr * wd)
                # 6. Adam statistics from the window, computed on the window's positions only
                rows = min(t, m)
                V = st["val"][:rows].to(dt)                                            # (rows, N, k)
                if (t, dt, p.device) not in weights:
                    ages = torch.remainder(slot - torch.arange(rows, dtype=torch.float64), m)
                    weights[t, dt, p.device] = ((beta1 ** ages).to(device=p.device, dtype=dt),
                                                (beta2 ** ages).to(device=p.device, dtype=dt))
                w1, w2 = weights[t, dt, p.device]
                c1 = (1 - beta1) / (1 - beta1 ** t)
                c2 = (1 - beta2) / (1 - beta2 ** t)
                width = self._width(d, group)
                if kern is not None:
                    where = st["idx"] if group["topk"] == "global" else self._positions(st, group, d)
                    kern.window_update(p.view(N, d), where[:rows], V, w1, w2, c1 * lr, c2, eps, width)
                    continue
                key = torch.int32 if N * width < 2 ** 31 else torch.int64   # int32 keys sort 2-3 x faster
                flat = (self._positions(st, group, d, key)[:rows]
                        + (torch.arange(N, device=p.device, dtype=key) * width)[None, :, None]).reshape(-1)
                # the window's sums per distinct position: a stable sort keeps each position's terms in
                # window order (the order a dense scatter-add would sum them in), then segment sums
                flat, order = torch.sort(flat, stable=True)
                flat, seg = torch.unique_consecutive(flat, return_inverse=True)
                flat = flat.long()
                mg, sg = _segment_sums(V * w1.view(rows, 1, 1), V * V * w2.view(rows, 1, 1), order, seg,
                                       flat.numel())
                upd = mg.mul_(c1 * lr).div_(sg.mul_(c2).sqrt_().add_(eps))
                if width != d:                                                         # blockwise padding
                    keep = flat.remainder(width) < d
                    flat, upd = flat[keep], upd[keep]
                if p.is_contiguous():
                    pf = p.view(-1)
                    if width != d:
                        flat = flat.div(width, rounding_mode="floor") * d + flat.remainder(width)
                    pf.index_copy_(0, flat, pf.index_select(0, flat).sub_(upd))
                else:
                    row, col = flat.div(width, rounding_mode="floor"), flat.remainder(width)
                    P = p.view(N, d) if not group["batched"] or p.ndim != 2 else p
                    P.index_put_((row, col), P[row, col] - upd)
        return loss

    def _width(self, d: int, group) -> int:
        if group["topk"] == "blockwise":
            _, chunk, _ = self._k(d, group)
            return -(-d // chunk) * chunk
        return d


def _segment_sums(a: Tensor, b: Tensor, order: Tensor, seg: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``(sum_j a[order[j]] [seg[j] = i], the same for b)`` for i < n, each sum taken in j's order.
    For float32 / float64 the pair (a, b) travels as one complex number, so the reordering and the
    sums are one pass each (complex addition adds the parts separately: the same float sums)."""
    if a.dtype in (torch.float32, torch.float64):
        z = torch.view_as_complex(torch.stack([a.reshape(-1), b.reshape(-1)], dim=-1))
        s = torch.zeros(n, dtype=z.dtype, device=z.device).index_add_(0, seg, z.index_select(0, order))
        s = torch.view_as_real(s)
        return s[:, 0], s[:, 1]
    out = []
    for v in (a, b):
        out.append(torch.zeros(n, dtype=v.dtype, device=v.device).index_add_(0, seg, v.reshape(-1).index_select(0, order)))
    return out[0], out[1]


_KERNELS: dict = {}


def _kernels():
    """The fused loops' module, imported once (numba's import takes a while); None if numba does not
    import (the PyTorch kernels then run everywhere)."""
    if "module" not in _KERNELS:
        try:
            from . import microadam_kernels
        except ImportError as e:
            _KERNELS.update(module=None, error=f"{type(e).__name__}: {e}")
        else:
            _KERNELS["module"] = microadam_kernels
    return _KERNELS["module"]


def _ascending(idx: Tensor, width: int) -> Tensor:
    """The rows of ``idx`` (N, k), distinct entries in ``[0, width)``, in ascending order: by a mask
    and ``nonzero`` (row-major, so ascending) where the rows are not much sparser than ``width``,
    else by a sort."""
    N, k = idx.shape
    if width > 16 * k:
        return idx.sort(dim=1).values
    mask = torch.zeros(N, width, dtype=torch.bool, device=idx.device).scatter_(1, idx, True)
    return mask.nonzero()[:, 1].view(N, k)


def _exact_topk(a: Tensor, k: int, scratch: Callable | None = None, kernels=None) -> Tensor:
    """Positions (N, k), ascending, of the k largest ``|a|`` of each row of ``a`` (N, d), as
    ``torch.topk`` of ``|a|`` (the same set up to ties), found through a threshold: the ``k'``-th largest of a strided
    sample, with ``k'`` a little above the sample's share of ``k``, keeps a few more than ``k``
    candidates per row, and an exact ``topk`` runs on those. If some row keeps fewer than ``k`` (an
    unlucky sample) the plain ``topk`` of the whole rows is used. ``kernels``: the fused CPU loops
    find the candidates (the same ones, in the same order)."""
    N, d = a.shape

    def magnitudes() -> Tensor:
        return torch.abs(a, out=_empty(scratch, "mag", (N, d), a.dtype, a.device))

    if k >= d or d < 65536 or 4 * k > d:
        return _ascending(magnitudes().topk(k, dim=1, sorted=False).indices, d)
    stride = max(1, d // 32768)
    sample = a[:, ::stride].abs()
    s = sample.shape[1]
    mean = s * k / d
    ks = min(s, int(1.1 * mean + 4 * math.sqrt(mean) + 8))
    tau = sample.topk(ks, dim=1, sorted=False).values.amin(dim=1, keepdim=True)
    if not bool(torch.isfinite(tau).all()):
        return _ascending(magnitudes().topk(k, dim=1, sorted=False).indices, d)
    if kernels is not None:
        buf = _empty(scratch, "cand", (N, d), torch.int32 if d < 2 ** 31 else torch.int64, a.device)
        cand, fill, count = kernels.candidates(a, tau, buf)
        if bool((count < k).any()):
            return _ascending(magnitudes().topk(k, dim=1, sorted=False).indices, d)
        return cand.gather(1, _ascending(fill.topk(k, dim=1, sorted=False).indices, cand.shape[1]))
    mag = magnitudes()
    keep = torch.ge(mag, tau, out=_empty(scratch, "keep", (N, d), torch.bool, mag.device))
    if N == 1:
        cand = keep.view(-1).nonzero().view(1, -1)
        if cand.shape[1] < k:
            return _ascending(mag.topk(k, dim=1, sorted=False).indices, d)
    else:
        nz = keep.nonzero()                                               # (nnz, 2), row-major
        counts = torch.bincount(nz[:, 0], minlength=N)
        if bool((counts < k).any()):
            return _ascending(mag.topk(k, dim=1, sorted=False).indices, d)
        start = torch.cumsum(counts, 0) - counts
        slot = torch.arange(nz.shape[0], device=mag.device) - start[nz[:, 0]]
        cand = torch.zeros(N, int(counts.max()), dtype=torch.long, device=mag.device)
        fill = torch.full((N, cand.shape[1]), -1.0, dtype=mag.dtype, device=mag.device)
        cand[nz[:, 0], slot] = nz[:, 1]
        fill[nz[:, 0], slot] = mag[nz[:, 0], nz[:, 1]]
        return cand.gather(1, _ascending(fill.topk(k, dim=1, sorted=False).indices, cand.shape[1]))
    sel = mag.gather(1, cand).topk(k, dim=1, sorted=False).indices
    return cand.gather(1, _ascending(sel, cand.shape[1]))
