"""The base of optimizers that draw random sketches or factors: their generator (and any other
entries a subclass names) travel in ``state_dict`` so that a resumed run draws what the
uninterrupted one would have drawn."""
from __future__ import annotations

from typing import Any

from torch.optim import Optimizer

__all__ = ["RandomizedOptimizer"]


class RandomizedOptimizer(Optimizer):
    """A ``torch.optim.Optimizer`` with a ``self.generator``; subclasses add entries through
    :meth:`_extra_state` / :meth:`_load_extra_state` (stored beside the per-parameter state, under
    string keys)."""

    generator: Any

    def _extra_state(self) -> dict[str, Any]:
        """Entries besides the generator that a resumed run needs (default none)."""
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        """Restore what :meth:`_extra_state` saved (``extra`` may miss keys of older state dicts)."""

    def state_dict(self):
        sd = super().state_dict()
        sd["state"] = {**sd["state"], "generator": self.generator.get_state(), **self._extra_state()}
        return sd

    def load_state_dict(self, state_dict) -> None:
        state_dict = dict(state_dict)
        st = dict(state_dict["state"])
        extra = {k: st.pop(k) for k in list(st) if isinstance(k, str)}
        state_dict["state"] = st
        super().load_state_dict(state_dict)
        gen = extra.pop("generator", None)
        if gen is not None:
            self.generator.set_state(gen)
        self._load_extra_state(extra)
