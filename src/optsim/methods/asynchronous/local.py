"""Local training against simulated time: asynchronous Local SGD and LOSCAR-SGD."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import PositiveFloat, PositiveInt

from ...clock import FixedTimes, SimulatedClock, Timing
from ..base import TimedMethod, register_method
from ..event import AsyncParams, EventMethod, delay_stepsize

__all__ = ["AsyncLocalSGD", "LoscarSGD"]


class AsyncLocalParams(AsyncParams):
    #: local SGD steps per job
    local_steps: PositiveInt = 4
    #: server stepsize eta: x <- x - eta * gamma * (sum of the job's local gradients)
    server_stepsize: PositiveFloat = 1.0


@register_method
class AsyncLocalSGD(EventMethod):
    """Asynchronous Local SGD: a worker takes the current model, runs H local SGD steps
    y_{h+1} = y_h - gamma g(y_h) from it (a job of H units of work) and sends its progress; the
    server applies it at once, x <- x - eta gamma sum_h g(y_h), and sends the new model back.
    H = 1, eta = 1 is Asynchronous SGD. Pending jobs run their local steps in lock-step, one
    batched oracle call per local step.

    Asynchronous local-update SGD as analysed e.g. by Mishchenko et al. (2022), "Asynchronous
    SGD beats minibatch SGD under arbitrary delays" (local-steps extension), and used as the
    asynchronous baseline of the LOSCAR-SGD paper (Maziane et al., 2026). Default stepsize:
    ASGD's with n H in place of n (each job moves the model by H local steps; ours).
    """

    name = "async_local_sgd"
    stepsize_source = "derived"
    paper = "Asynchronous Local SGD (asynchronous baseline of Maziane, Mahran, Maranjyan, Richtarik (2026), LOSCAR-SGD)"
    Params = AsyncLocalParams

    @property
    def job_work(self) -> float:  # type: ignore[override]
        return float(self.params.local_steps)

    def theory_stepsize(self):
        return delay_stepsize(self.problem.L, self.n * self.params.local_steps, self.params.eps, self.sigma2)

    def evaluate(self, X, clients, workers):
        self.channel.send_down(X, clients=clients)
        gen, b = self.ctx.generator("noise"), self.params.batch_size
        Y, total = X, None
        for _ in range(self.params.local_steps):
            G = self.problem.minibatch_grads(Y, b, gen, clients=clients)
            total = G if total is None else total + G
            Y = Y - self.gamma * G
        return self.channel.gather(total, clients=clients)

    def on_arrival(self, i, t):
        self.record(i, True)
        self.update(self.engine.x - (self.params.server_stepsize * self.gamma) * self.gradient(i))
        self.launch(i, t)


class LoscarParams(AsyncParams):
    #: local steps of the fastest worker in a round's compute window (worker i does floor(H tau_min / tau_i) >= 1)
    local_steps: PositiveInt = 8
    #: keep computing while the model is being communicated (Q_i = floor(comm time / tau_i) extra steps)
    overlap: bool = True
    #: coordinates synchronized per round (a fresh uniformly random set shared by all workers); default d
    k: PositiveInt | None = None
    #: how the averaged coordinates enter a worker that kept computing: "corrected" (LOSCAR) or "overwrite"
    merge: Literal["corrected", "overwrite"] = "corrected"


@register_method
class LoscarSGD(TimedMethod):
    """LOSCAR-SGD: Local SGD with communication-computation overlap and delay-corrected sparse
    model averaging. Round r: worker i runs N_i local SGD steps from w_i to y_i, sends the K
    coordinates S_r of y_i (a random set shared by all workers), keeps computing Q_i more steps
    (to z_i) while the message is in flight, and merges the server's average m = mean_i
    [y_i]_{S_r}: corrected w_i <- z_i + P_{S_r}(m - y_i) (the average replaces the worker's own
    stale contribution, its overlap progress is kept) or overwrite [w_i]_{S_r} <- m.

    Maziane, Mahran, Maranjyan, Richtarik (2026), "LOSCAR-SGD: Local SGD with
    communication-computation overlap and delay-corrected sparse model averaging", Algorithm 1.
    Heterogeneous compute: worker i's step takes tau_i (the run's compute-time model, expected
    times); a round is a compute window of H tau_min seconds (N_i = max(1, floor(H tau_min /
    tau_i)) steps) plus the communication of the K coordinates (link model, up and down; Q_i =
    floor(comm / tau_i) overlap steps when ``overlap``). ``overlap: false, k: d`` is synchronous
    Local SGD with heterogeneous local step counts. The model the metrics see is the workers'
    average. Default stepsize 1 / (4 L), the homogeneous-data Local SGD stepsize (Woodworth et al.,
    2020, "Is local SGD better than minibatch SGD?"), the setting of the LOSCAR analysis.
    One round of the runner = one communication round; its duration is computed (the round's
    clock is a :class:`~optsim.clock.SimulatedClock`).
    """

    name = "loscar_sgd"
    stepsize_source = "reading"
    paper = "Maziane, Mahran, Maranjyan, Richtarik (2026), LOSCAR-SGD, Alg. 1"
    Params = LoscarParams
    state = ("x", "W", "k", "arrivals", "clock", "_K", "_comm", "_window", "_N", "_Q")

    def check(self):
        if self.params.k is not None and self.params.k > self.d:
            raise ValueError(f"loscar_sgd: k = {self.params.k} > d = {self.d}")

    def attach_timing(self, timing: Timing):
        self.timing = timing
        self.clock = SimulatedClock()
        return self.clock

    def _plan(self):
        if self.timing is None:
            self.attach_timing(Timing(FixedTimes(np.ones(self.n))))
        tau = np.asarray(self.timing.mean, dtype=np.float64)
        K = self.d if self.params.k is None else int(self.params.k)
        bits = self.channel.float_bits_of(K)
        comm = self.timing.link_time(bits, bits)
        window = self.params.local_steps * float(tau.min())
        N = np.maximum(1, np.floor(window / tau + 1e-9)).astype(int)
        Q = np.floor(comm / tau + 1e-9).astype(int) if self.params.overlap else np.zeros(self.n, dtype=int)
        return K, comm, window, N, Q

    def theory_stepsize(self):
        return 1.0 / (4.0 * self.problem.L)

    def init(self, x0):
        self._K, self._comm, self._window, self._N, self._Q = self._plan()
        self.W = x0.reshape(1, -1).repeat(self.n, 1)
        self.x = x0
        self.k, self.arrivals = 0, 0

    def _local(self, W: torch.Tensor, steps: np.ndarray) -> torch.Tensor:
        """Each worker i takes steps[i] local SGD steps (batched over the workers still stepping)."""
        W = W.clone()
        gen = self.ctx.generator("noise")
        for h in range(int(steps.max(initial=0))):
            rows = torch.from_numpy(np.nonzero(steps > h)[0])
            full = rows.numel() == self.n
            G = self.problem.minibatch_grads(W if full else W[rows], self.params.batch_size, gen,
                                             clients=None if full else rows)
            if full:
                W = W - self.gamma * G
            else:
                W[rows] = W[rows] - self.gamma * G
        return W

    def advance(self, updates, until=None):
        k0 = self.k
        while self.k - k0 < updates:
            t = self.clock.now + self._window + self._comm
            if until is not None and t > until:
                self.clock.now = max(self.clock.now, until)
                break
            Y = self._local(self.W, self._N)
            if self._K < self.d:
                idx = torch.randperm(self.d, generator=self.ctx.generator("method"))[:self._K]
            else:
                idx = torch.arange(self.d)
            # the K coordinates of the shared set (no indices: every party draws the same set)
            V = torch.zeros_like(Y)
            V[:, idx] = Y[:, idx]
            sent = self.channel.gather(self.channel.sparse(V, self._K, indexed=False))
            avg = sent.mean(0)
            m = self.channel.broadcast(self.channel.sparse(avg.reshape(1, -1), self._K, indexed=False))[idx]
            Z = self._local(Y, self._Q)  # overlap steps while the message is in flight
            if self.params.merge == "corrected":
                Z[:, idx] = Z[:, idx] + (m - Y[:, idx])
            else:
                Z[:, idx] = m
            self.W = Z
            self.x = Z.mean(0)
            self.k += 1
            self.arrivals += self.n
            self.clock.now = t
        return self.k - k0

    def trace_meta(self) -> dict:
        return {"loscar": {"local_steps": self._N.tolist(), "overlap_steps": self._Q.tolist(),
                           "round_time": self._window + self._comm, "comm_time": self._comm, "k": self._K}}
