"""The robust baselines B1-B3 compare against: SGD with worker momentum and DIANA, aggregated robustly."""
from __future__ import annotations

from pydantic import Field, PositiveInt

from ...mechanisms import Shifts
from ...sampling import Nice
from ..base import register_method
from .base import ClipHeuristicParams, RobustMethod

__all__ = ["BRSGDm", "BRDIANA"]


class BRSGDmParams(ClipHeuristicParams):
    #: samples per client and round (uniformly, with replacement)
    batch_size: PositiveInt = 1
    #: worker momentum beta
    momentum: float = Field(0.9, ge=0, lt=1)


@register_method
class BRSGDm(RobustMethod):
    """Robust SGD with worker momentum: Karimireddy, He, Jaggi (2021), "Learning from history for
    Byzantine robust optimization", Algorithm 2 (the BR-SGDm baseline of B1 and the method of B3's
    neural-network experiments). Each participating client keeps a momentum of its minibatch gradients
    and the server aggregates them robustly:

        m_i = beta m_i + (1 - beta) g_i(x),   x+ = x - gamma ARAgg({m_i}_{i in S}),

    S: all clients, or a ``nice`` sample (B3's partial participation; the others keep m_i), m_i^0 = 0.
    B1's code accumulates m_i = beta m_i + g_i instead, the same iterates with gamma / (1 - beta).
    ``clip_heuristic``: B3 eq. (10) around the previous aggregate. No stepsize constant is given for
    this baseline: set ``stepsize``.
    """

    name = "br_sgdm"
    stepsize_source = "explicit"
    paper = "Karimireddy, He, Jaggi (2021), Learning from history for Byzantine robust optimization, Alg. 2"
    uses = ("sampler", "aggregator")
    Params = BRSGDmParams
    state = ("x", "x0", "M", "prev_aggregate")

    def check(self):
        s = self.sampler
        if s is not None and not s.is_full and not isinstance(s, Nice):
            raise ValueError(f"{self.name} samples clients uniformly: use sampler {{name: nice, tau: C}}, "
                             f"got {s.describe()}")

    def init(self, x0):
        self.x0 = self.x = x0
        self.M = self.zeros_clients()

    def step(self):
        S = self.sample_clients() if self.samples_clients else None
        m = self.n if S is None else S.shape[0]
        x = self.channel.broadcast(self.x, clients=S)
        G = self.problem.minibatch_grads(self.at_clients(x, m), self.params.batch_size, self.ctx.generator("noise"),
                                         clients=S)
        beta = self.params.momentum
        if S is None:
            self.M.mul_(beta).add_(G, alpha=1 - beta)
            M = self.M
        else:
            M = self.M[S].mul_(beta).add_(G, alpha=1 - beta)
            self.M[S] = M
        g = self.robust_aggregate(self.channel.receive(self.channel.dense(M), S, self.attack_context()))
        self.x = self.x - self.gamma * g


class BRDIANAParams(ClipHeuristicParams):
    #: samples per client and round (uniformly, with replacement); None: full local gradients
    batch_size: PositiveInt | None = None
    #: shift stepsize alpha; default 1/(omega + 1); 0: no shifts (robust compressed SGD, BR-CSGD)
    shift_stepsize: float | None = Field(None, ge=0, le=1)


@register_method
class BRDIANA(RobustMethod):
    """BR-DIANA, the compressed robust baseline of B1 (Gorbunov, Horváth, Richtárik, Gidel 2023, Sec. 1):
    DIANA (Mishchenko, Gorbunov, Takáč, Richtárik 2019, Alg. 1) whose server aggregates the clients'
    gradient estimates robustly:

        Delta_i = Q(g_i(x) - h_i),   x+ = x - gamma ARAgg({h_i + Delta_i}),   h_i += alpha Delta_i,

    g_i: a minibatch (``batch_size``) or the full local gradient, h_i^0 = 0, alpha = 1/(omega + 1).
    ``shift_stepsize: 0`` keeps h_i = 0: robust compressed SGD (BR-CSGD); with the identity compressor
    and alpha = 1 it is robust (minibatch) SGD. No stepsize constant is given for this baseline: set
    ``stepsize``.
    """

    name = "br_diana"
    stepsize_source = "explicit"
    paper = ("Gorbunov, Horváth, Richtárik, Gidel (2023), Variance reduction is an antidote to Byzantines, "
             "BR-DIANA baseline (DIANA: Mishchenko et al. 2019, Alg. 1)")
    uses = ("compressor", "aggregator")
    Params = BRDIANAParams
    state = ("x", "x0", "shifts", "prev_aggregate")

    @property
    def shift_stepsize(self) -> float:
        a = self.params.shift_stepsize
        return a if a is not None else 1.0 / (self.omega + 1)

    def init(self, x0):
        self.x0 = self.x = x0
        self.shifts = Shifts()
        self.shifts.zero(self.zeros_clients())

    def step(self):
        X = self.at_clients(self.x)
        b = self.params.batch_size
        G = self.problem.grads(X) if b is None else self.problem.minibatch_grads(X, b, self.ctx.generator("noise"))
        g = self.shifts.estimate(G, self.compress, self.channel, self.shift_stepsize,
                                 aggregate=self.robust_aggregate, context=self.attack_context())
        self.x = self.channel.broadcast(self.x - self.gamma * g)
