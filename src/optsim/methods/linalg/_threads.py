"""Small batched solves run single-threaded (as the runner's ``threads: auto`` does for small problems)."""
from __future__ import annotations

import contextlib

import torch

#: below this many floating-point operations per iteration, intra-op threading costs more than it saves
SMALL_FLOPS = 2e6


@contextlib.contextmanager
def threads_for(flops_per_iteration: float):
    """One intra-op thread while the body runs when an iteration costs fewer than :data:`SMALL_FLOPS`."""
    before = torch.get_num_threads()
    if flops_per_iteration < SMALL_FLOPS and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
