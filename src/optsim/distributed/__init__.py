"""Real multi-process execution: the same method over torch.distributed.

``optsim run CONFIG --backend distributed --nproc N`` (or :func:`launch`) starts N worker
processes on this machine with torch.distributed's elastic launcher (the engine behind
``torchrun``); ``torchrun ... -m optsim.distributed CONFIG`` runs the same workers on several
machines. Each worker:

1. joins the process group (``gloo`` on CPU, ``nccl`` on GPU) with a collective timeout
   (``$OPTSIM_DIST_TIMEOUT`` seconds, 60 by default);
2. builds the same problem and, per method, the same method object over all ``n`` clients, so
   shapes, theory stepsizes and every random stream (sampler, compressor, coins) are identical on
   every rank;
3. owns a contiguous slice of the client rows: :func:`shard_problem` computes the oracles of the
   owned rows only (the other rows are zeros) and the
   :class:`~optsim.channel.distributed.DistributedChannel` combines the owned rows of each message
   with collectives, so every rank ends each round with the same server state;
4. logs metrics combined over ranks; rank 0 writes the traces, the results store and the figures.

Oracle calls are counted for every requested row on every rank (each rank's meter equals the
simulated run's meter: the calls are the same, only who computes them differs), bits by the
accounting model, and the bytes actually handed to collectives in the trace column
``wire_bytes`` (cumulative, all ranks together; metrics and control traffic are reported apart in
``meta["distributed"]``).

A worker that dies makes the collectives of the others fail (at once when its sockets close, or
after the timeout when it hangs): the run ends with status ``failed`` and the trace logged so far
is saved; the launcher stops the other workers and raises :class:`DistributedRunError` with a
one-line message. Checkpoints and resuming are not supported in this mode (a run restarts).
"""
from __future__ import annotations

from ..channel.distributed import DistributedError
from .backend import DistributedBackend
from .errors import DistributedRunError
from .launcher import launch
from .sharding import shard_problem
from .worker import default_timeout

__all__ = ["launch", "shard_problem", "DistributedBackend", "DistributedRunError", "DistributedError",
           "default_timeout", "main"]


def __getattr__(name):
    # ``main`` lives in ``__main__.py`` (``python -m optsim.distributed``); importing it here eagerly
    # would make ``-m`` warn that the module was imported before it ran
    if name == "main":
        from .__main__ import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
