"""The torch.optim closure convention, in one place."""
from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["closure_loss"]


def closure_loss(closure: Callable[[], float] | None):
    """The loss a ``step(closure)`` returns: ``closure()`` evaluated with gradients enabled (``step``
    itself runs under ``torch.no_grad``), or None without a closure.

    Example:
        >>> closure_loss(None) is None
        True
    """
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()
