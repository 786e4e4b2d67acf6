"""Ringmaster ASGD: asynchronous SGD with a delay threshold (and optional calculation stops)."""
from __future__ import annotations

from pydantic import PositiveInt

from ..base import register_method
from ..event import AsyncParams, EventMethod, delay_stepsize

__all__ = ["RingmasterASGD"]


class RingmasterParams(AsyncParams):
    #: delay threshold R (gradients with delay >= R are ignored); default max{1, ceil(sigma^2/eps)}
    R: PositiveInt | None = None
    #: stop (and restart at the newest model) jobs whose gradient could only arrive too stale
    stops: bool = False


@register_method
class RingmasterASGD(EventMethod):
    """Ringmaster ASGD: Asynchronous SGD that ignores gradients with delay >= R (the worker
    restarts at the current model either way). With ``stops``, after each update the server
    also stops every job whose delay already reached R and restarts it at the new model.

    Maranjyan, Tyurin, Richtárik (2025), "Ringmaster ASGD: the first asynchronous SGD with
    optimal time complexity", ICML, Algorithm 1 (without stops) / Algorithm 2 (with stops);
    defaults R = max{1, ceil(sigma^2 / eps)} and gamma = min{1/(2 R L), eps / (4 L sigma^2)}
    (Theorem 4.1).
    """

    name = "ringmaster_asgd"
    stepsize_source = "theorem"
    paper = "Maranjyan, Tyurin, Richtarik (2025), Ringmaster ASGD, ICML, Alg. 1-2, Thm. 4.1"
    Params = RingmasterParams
    state = EventMethod.state + ("_R", "_by_version")

    @property
    def R(self) -> int:
        return self._noise_count(self.params.R)

    def theory_stepsize(self):
        return delay_stepsize(self.problem.L, self.R, self.params.eps, self.sigma2)

    def begin(self):
        self._R = self.R
        self._by_version: dict[int, list[int]] = {}  # jobs started at each version (stops only)
        self.launch_all(0.0)

    def launch(self, i, t, work=None):
        super().launch(i, t, work)
        if self.params.stops:
            self._by_version.setdefault(self.k, []).append(i)

    def on_arrival(self, i, t):
        e = self.engine
        fresh = e.k - e.version[i] < self._R
        self.record(i, fresh)
        if fresh:
            self.update(e.x - self.gamma * self.gradient(i))
            if self.params.stops:  # jobs started at version k - R can now only arrive too stale
                old = e.k - self._R
                for j in self._by_version.pop(old, ()):
                    if j != i and e.busy(j) and e.version[j] == old:
                        self.cancel(j)
                        self.launch(j, t)
        self.launch(i, t)
