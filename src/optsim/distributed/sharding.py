"""The sharded view of a problem: the rank that owns client rows [lo, hi) computes those rows only."""
from __future__ import annotations

import copy

import torch

from ..problems import Problem


def _slice_rows(problem: Problem, lo: int, hi: int) -> Problem:
    """An uncounted copy of ``problem`` holding only client rows [lo, hi) (views, no copies): every
    tensor attribute whose first dimension is n is sliced. A problem kind whose per-client data is
    not held that way defines ``shard(lo, hi)`` itself."""
    if hasattr(problem, "shard"):
        return problem.shard(lo, hi)
    local = copy.copy(problem)
    n = problem.n
    for k, v in vars(problem).items():
        if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n:
            setattr(local, k, v[lo:hi])
    local.n, local.meter = hi - lo, None
    return local


class _ShardedOracles:
    """Mixin of the sharded view: the row oracles compute the owned rows [lo, hi) only (zeros
    elsewhere); the counted oracles of :class:`Problem` keep counting every requested row."""

    _shard_lo: int
    _shard_hi: int
    _shard_local: Problem
    _shard_full: Problem

    def _shard_call(self, name: str, X: torch.Tensor, rows, extra: tuple, tail: tuple) -> torch.Tensor:
        lo, hi, local = self._shard_lo, self._shard_hi, self._shard_local
        if rows is None:
            out = X.new_zeros((self.n,) + tail)
            if hi > lo:
                out[lo:hi] = getattr(local, name)(X[lo:hi], None, *[e[lo:hi] for e in extra])
            return out
        pos = ((rows >= lo) & (rows < hi)).nonzero().flatten()
        out = X.new_zeros((rows.shape[0],) + tail)
        if pos.numel():
            out[pos] = getattr(local, name)(X[pos], rows[pos] - lo, *[e[pos] for e in extra])
        return out

    def _grads(self, X, rows):
        return self._shard_call("_grads", X, rows, (), (self.d,))

    def _losses(self, X, rows):
        return self._shard_call("_losses", X, rows, (), ())

    def _sample_grads(self, X, rows, idx):
        return self._shard_call("_sample_grads", X, rows, (idx,), (self.d,))

    def _hessians(self, X, rows):
        return self._shard_call("_hessians", X, rows, (), (self.d, self.d))

    def _grads_many(self, Xs):
        out = torch.zeros_like(Xs)
        if self._shard_hi > self._shard_lo:
            out[:, self._shard_lo:self._shard_hi] = self._shard_local._grads_many(Xs[:, self._shard_lo:self._shard_hi])
        return out

    # uncounted global quantities stay global (every rank holds the data)
    def loss(self, x):
        return self._shard_full.loss(x)

    def full_grad(self, x):
        return self._shard_full.full_grad(x)

    def full_hessian(self, x):
        return self._shard_full.full_hessian(x)

    @property
    def gradient_flops(self) -> float:
        return self._shard_local.gradient_flops if self._shard_hi > self._shard_lo else 0.0


_SHARDED: dict[type, type] = {}


def shard_problem(problem: Problem, lo: int, hi: int) -> Problem:
    """The view of ``problem`` for the rank that owns client rows [lo, hi).

    It is the same problem (same n, d, constants, x*, f*; ``isinstance`` still holds) except that
    its row oracles compute only the owned rows and return zeros for the others. The counted
    oracles count every requested row, so every rank's meter equals the simulated run's (oracle
    counts do not depend on the data). Per-sample and minibatch oracles draw their random indices
    for all rows on every rank (same generator calls) and compute the owned rows only.
    """
    if problem.convex:
        problem.x_star  # noqa: B018 -- solve (or load) x*, f* on the full problem before copying
    for attr in ("L_i", "L", "mu"):
        getattr(problem, attr)
    cls = type(problem)
    if cls not in _SHARDED:
        _SHARDED[cls] = type(f"Sharded{cls.__name__}", (_ShardedOracles, cls), {"__module__": __name__})
    view = copy.copy(problem)
    view.__class__ = _SHARDED[cls]
    view._shard_lo, view._shard_hi = int(lo), int(hi)
    view._shard_local = _slice_rows(problem, int(lo), int(hi))
    view._shard_full = problem
    view.meter = None
    return view
