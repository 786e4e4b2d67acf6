"""The error a distributed run raises when it does not complete."""
from __future__ import annotations


class DistributedRunError(RuntimeError):
    """A distributed run did not complete (a worker died or a run failed); ``traces`` holds what
    rank 0 saved."""

    def __init__(self, message: str, traces: list | None = None):
        super().__init__(message)
        self.traces = traces or []
