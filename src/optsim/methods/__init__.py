"""Methods: one package per family, one module per method or close group; each registers itself
in :data:`METHODS` when imported. Every module under this package is imported here, so a new
method is one new file (see docs/architecture.md).

The kinds of method (their base classes and hooks) are in :mod:`.base` (:class:`Method`,
round-based; :class:`TimedMethod`, owning simulated time) and :mod:`.event`
(:class:`EventMethod`, asynchronous workers on the event engine).
"""
import importlib as _importlib
import pkgutil as _pkgutil

from .base import METHODS, Context, Method, MethodParams, TimedMethod, build_method, get_method, register_method
from .event import EventMethod

for _module in _pkgutil.walk_packages(__path__, __name__ + "."):
    _importlib.import_module(_module.name)

__all__ = ["METHODS", "Context", "Method", "TimedMethod", "EventMethod", "MethodParams", "build_method",
           "get_method", "register_method"]
