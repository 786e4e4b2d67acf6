"""The runner's hook: what :class:`~optsim.experiment.runner.Session` asks the distributed backend for."""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from ..channel.distributed import Comm, DistributedChannel, DistributedError
from ..problems import Problem


class DistributedBackend:
    """What :class:`~optsim.experiment.runner.Session` asks a backend for: the channel, the metrics
    (combined over ranks) and, after each round, the agreed wall clock and the bytes on the wire."""

    def __init__(self, comm: Comm, cfg, compact: bool = True):
        self.comm, self.cfg, self.compact = comm, cfg, compact
        self.channels: list[DistributedChannel] = []
        self._w: torch.Tensor | None = None

    def channel(self, meter, d: int, float_bits: int) -> DistributedChannel:
        ch = DistributedChannel(meter, d, float_bits, comm=self.comm, compact=self.compact)
        self.channels.append(ch)
        return ch

    def evaluate(self, problem: Problem, x: torch.Tensor) -> dict[str, float]:
        """The simulated runner's metrics: partial sums over the owned rows, one all_gather (with a
        fingerprint of each rank's model, so that ranks holding different models fail loudly),
        summed in rank order (every rank gets the same numbers, hence the same stop decisions)."""
        local, d = problem._shard_local, problem.d
        buf = torch.zeros(d + 4, dtype=x.dtype, device=x.device)
        if local.n:
            xb = x.reshape(1, d).expand(local.n, d)
            buf[:d] = local._grads(xb, None).sum(0)
            buf[d] = local._losses(xb, None).sum()
        buf[d + 1:] = self._fingerprint(x)
        got = self.comm.all_gather(buf.reshape(1, -1), what="metrics (all_gather)", control=True)
        if not bool((got[:, d + 1:] == got[:1, d + 1:]).all()):
            raise DistributedError(f"rank {self.comm.rank}: the ranks hold different models: the method computes its "
                                   "model from client rows outside the channel (e.g. a virtual average of local models "
                                   "between communications), which only the simulated backend can do")
        tot = got[:, : d + 1].sum(0)
        g = tot[:d] / problem.n
        out = {"loss": float(tot[d] / problem.n), "grad_norm_sq": float(g.pow(2).sum())}
        if problem.f_star is not None:
            out["f_gap"] = out["loss"] - problem.f_star
        if problem.x_star is not None:  # as the simulated evaluate: also a VI's z* without an f*
            out["dist_sq"] = float((x - problem.x_star).pow(2).sum())
        extra = getattr(problem._shard_full, "extra_metrics", None)
        if extra is not None:
            out.update(extra(x))
        return out

    def _fingerprint(self, x: torch.Tensor) -> torch.Tensor:
        """Three numbers computed identically from the model: equal on all ranks iff (up to a
        negligible chance) the ranks hold the same model bit for bit."""
        if self._w is None or self._w.shape != x.shape:
            self._w = torch.linspace(1.0, 2.0, x.numel(), dtype=x.dtype, device=x.device).reshape(x.shape)
        return torch.stack([x.sum(), (x * self._w).sum(), x.abs().max()])

    def close_round(self, session) -> dict[str, float]:
        """Agree on the wall clock when a wall-time limit can stop the run (rank 0's clock), and
        report the bytes handed to collectives so far."""
        if self.cfg.stop.max_wall_time is not None:
            t = torch.tensor([session.wall], dtype=torch.float64)
            session.wall = float(self.comm.broadcast(t, what="wall clock (broadcast)")[0])
        return {"wire_bytes": float(self.comm.wire_bytes)}

    def describe(self) -> dict[str, Any]:
        formats: dict[str, int] = {}
        for ch in self.channels:
            for k, v in ch.formats.items():
                formats[k] = formats.get(k, 0) + v
        return {"world_size": self.comm.world, "collective_backend": dist.get_backend(self.comm.group),
                "shards": self.comm.bounds, "wire_bytes": self.comm.wire_bytes,
                "control_bytes": self.comm.control_bytes, "collectives": self.comm.collectives,
                "collective_seconds": self.comm.seconds,
                "formats": formats}
