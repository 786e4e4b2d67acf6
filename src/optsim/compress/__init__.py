"""Batched compression operators: (m, d) -> (m, d) plus exact bits (m,)."""
from .base import COMPRESSORS, Compressor, Message, ReplicaMismatch, make_compressor, register_compressor
from . import matrix, operators  # noqa: F401  (register the built-in operators)

__all__ = ["COMPRESSORS", "Compressor", "Message", "ReplicaMismatch", "make_compressor", "register_compressor"]
