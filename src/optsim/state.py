"""Declared state: what an object carries from one round to the next, named in one place.

A method, a communication mechanism or a gradient estimator lists the attributes it carries
between rounds in ``state`` (as torch.optim's ``state`` and optax's explicit states do); the
rest of the object is wiring (the problem, the channel, the parameters) or is derived from the
parameters. Everything that must see a run's state goes through this declaration, never
through ``vars(obj)``:

* checkpoints (:meth:`optsim.experiment.runner.Session.state_bytes`) save
  :meth:`Stateful.state_dict` and resume with :meth:`Stateful.load_state_dict`;
* replica-stacked runs (:mod:`optsim.experiment.batched`) slice the declared tensors with
  :func:`map_state` (a stacked run's tensors carry the replicas as their leading dimension).

A state value is a tensor, a plain Python or NumPy value, or a :class:`Stateful` object (e.g. a
mechanism the method holds), whose own declared state is then part of the owner's.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, ClassVar

import torch

__all__ = ["Stateful", "map_state", "undeclared_state"]


class Stateful:
    """Mixin: ``state`` names the attributes carried between rounds (see the module docstring)."""

    state: ClassVar[tuple[str, ...]] = ()

    def state_dict(self) -> dict[str, Any]:
        """The declared attributes that exist (one may be set only from some round on)."""
        own = vars(self)
        return {k: own[k] for k in self.state if k in own}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            if k not in self.state:
                raise KeyError(f"{type(self).__name__} declares no state '{k}' (state: {', '.join(self.state)})")
            setattr(self, k, v)


def map_state(obj: Stateful, fn: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Any]:
    """``obj``'s state with ``fn`` applied to every tensor, recursively through lists, tuples,
    dicts and nested :class:`Stateful` objects (which are copied, never changed in place); other
    values are deep-copied."""
    return {k: _map(v, fn) for k, v in obj.state_dict().items()}


def _map(v, fn):
    if isinstance(v, torch.Tensor):
        return fn(v)
    if isinstance(v, Stateful):
        out = copy.copy(v)
        out.load_state_dict(map_state(v, fn))
        return out
    if isinstance(v, (list, tuple)):
        return type(v)(_map(u, fn) for u in v)
    if isinstance(v, dict):
        return {k: _map(u, fn) for k, u in v.items()}
    return copy.deepcopy(v)


def undeclared_state(obj: Stateful, before: set[str]) -> list[str]:
    """Attributes of ``obj`` set since ``before`` (its attribute names after construction) that its
    ``state`` does not declare and that are not cached properties (derived, recomputed alike)."""
    cached = {k for cls in type(obj).__mro__ for k, v in vars(cls).items()
              if type(v).__name__ == "cached_property"}
    return sorted(k for k in vars(obj) if k not in before and k not in obj.state and k not in cached)
