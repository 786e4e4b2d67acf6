"""Scaffnew with compression and partial participation: CompressedScaffnew (L4) and TAMUNA (L5).

**Scaffnew family** (:class:`CompressedScaffnew` (L4), :class:`TAMUNA` (L5)): local steps
x_i <- x_i - gamma (grad f_i(x_i) - h_i) with control variates h_i (sum_i h_i = 0); at communication
each coordinate is sent by only s clients (a random *pattern*: every coordinate owned by exactly s
clients, each client owning about s d / n coordinates, :func:`pattern_mask`); the server averages
each coordinate over its s owners, and each client corrects h_i only on the coordinates it sent:
h_i += (eta / gamma) q_i * (xbar - x_i), which keeps sum_i h_i = 0.
"""
from __future__ import annotations

import math
from functools import cached_property

import torch
from pydantic import Field, PositiveInt

from ...sampling import Nice
from ..base import Method, MethodParams, register_method
from .rounds import mu_min_of

__all__ = ["pattern_mask", "scaffnew_compressed_defaults", "CompressedScaffnewParams", "CompressedScaffnew", "TAMUNAParams", "TAMUNA"]


def pattern_mask(m: int, d: int, s: int, generator: torch.Generator) -> torch.Tensor:
    """A random sparsification pattern (m, d) of booleans: every coordinate (column) is owned by
    exactly s of the m rows and every row owns floor or ceil of s d / m coordinates.

    Built as in CompressedScaffnew / TAMUNA: the d s slots are dealt to the rows in turn (slot t to
    row t mod m, so the s slots of a coordinate go to s distinct rows), then rows and coordinates are
    relabelled by independent uniform random permutations. s = m: every row owns everything."""
    if not 1 <= s <= m:
        raise ValueError(f"pattern: need 1 <= s <= m = {m} owners per coordinate, got s = {s}")
    owners = (torch.arange(d * s) % m).reshape(d, s)
    rows = torch.randperm(m, generator=generator)[owners]
    coords = torch.randperm(d, generator=generator)[:, None].expand(d, s)
    mask = torch.zeros(m, d, dtype=torch.bool)
    mask[rows.reshape(-1), coords.reshape(-1)] = True
    return mask


# ---- the Scaffnew family with compression (L4, L5) -------------------------------------------------------
def scaffnew_compressed_defaults(n: int, s: int, gamma: float, mu: float, L: float) -> tuple[float, float]:
    """(chi, p): chi = n (s - 1) / (s (n - 1)) (the largest allowed; 1 when s = n) and the
    communication probability p = min(1, sqrt(zeta_x n / (chi s))) balancing the primal contraction
    zeta_x = 1 - max((1 - gamma mu)^2, (1 - gamma L)^2) against the dual one p^2 chi s / n
    (= p^2 (s - 1)/(n - 1) at the largest chi). s = n gives Scaffnew's p = sqrt(gamma mu (2 - gamma mu))."""
    chi = n * (s - 1) / (s * (n - 1)) if n > 1 else 1.0
    zeta_x = 1.0 - max((1 - gamma * mu) ** 2, (1 - gamma * L) ** 2)
    p = min(1.0, math.sqrt(max(zeta_x, 0.0) * n / (chi * s)))
    return chi, p


class CompressedScaffnewParams(MethodParams):
    #: probability of communicating after a local step; default :func:`scaffnew_compressed_defaults`
    p: float | None = Field(None, gt=0, le=1)
    #: owners per coordinate s (2 <= s <= n); default max(2, ceil(n / d)) (each client sends >= 1 coordinate)
    s: PositiveInt | None = None
    #: relaxation of the control-variate update (eta = p chi); default n (s - 1) / (s (n - 1))
    chi: float | None = Field(None, gt=0, le=1)


class _ScaffnewCompressed(Method):
    Params = CompressedScaffnewParams

    @cached_property
    def mu_min(self) -> float:
        return mu_min_of(self.problem, self.name, "the method needs mu > 0")

    def _m(self) -> int:
        """Clients taking part in a communication."""
        return self.n

    @cached_property
    def s(self) -> int:
        m = self._m()
        s = self.params.s if self.params.s is not None else min(m, max(2, math.ceil(m / self.d)))
        if not 1 <= s <= m or (s < 2 and m > 1):
            raise ValueError(f"{self.name}: s must be in [2, {m}] (owners per coordinate among the communicating "
                             f"clients), got {s}")
        return int(s)

    def theory_stepsize(self):
        return 1.0 / self.problem.L_max

    @cached_property
    def _defaults(self) -> tuple[float, float]:
        return scaffnew_compressed_defaults(self.n, self.s, self.gamma, self.mu_min, self.problem.L_max)

    @property
    def chi(self) -> float:
        return float(self.params.chi) if self.params.chi is not None else self._defaults[0]

    @property
    def p(self) -> float:
        return float(self.params.p) if self.params.p is not None else self._defaults[1]

    @property
    def eta(self) -> float:
        """Control-variate stepsize eta = p chi (h_i += (eta/gamma) q_i * (xbar - x_i))."""
        return self.p * self.chi

    def _exchange(self, Xh: torch.Tensor, S) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pattern-compressed averaging of the rows Xh (clients S): (xbar, mask (m, d) on the rows'
        device, the rows' corrections mask * (xbar - Xh))."""
        m = Xh.shape[0]
        mask = pattern_mask(m, self.d, self.s, self.ctx.generator("compressor"))
        maskv = mask.to(Xh.device, Xh.dtype)
        # each row's owned coordinates, with their indices (conservative: the pattern can also be
        # derived from shared randomness)
        msg = self.channel.sparse(Xh * maskv, mask.sum(1))
        w = torch.full((m,), 1.0 / self.s, dtype=Xh.dtype, device=Xh.device)
        xbar = self.channel.uplink(msg, clients=S, weights=w)
        return xbar, maskv, maskv * (xbar - Xh)


@register_method
class CompressedScaffnew(_ScaffnewCompressed):
    """CompressedScaffnew (L4): Condat, Agarský, Richtárik (2022), "Provably doubly accelerated
    federated learning: the first theoretically successful combination of local training and
    communication compression" (arXiv 2210.13277), Algorithm 1. Every iteration each client takes
    xh_i = x_i - gamma (grad f_i(x_i) - h_i); with probability p (one coin for all clients) the
    iteration ends with communication: a random pattern gives each coordinate s owners, client i
    sends its owned coordinates of xh_i (about s d / n floats), the server averages each coordinate
    over its owners, xbar = (1/s) sum_i q_i * xh_i, and broadcasts xbar (d floats); then x_i = xbar and
    h_i += (p chi / gamma) q_i * (xbar - xh_i) (only the coordinates i sent, so sum_i h_i stays 0).
    Otherwise x_i = xh_i and nothing is sent. s = n, chi = 1 is Scaffnew (ProxSkip) exactly.

    Defaults (the paper's linear-convergence theorem as we recall it, constants not re-verified):
    gamma = 1/L_max (< 2/L), chi = n (s - 1)/(s (n - 1)), s = max(2, ceil(n/d)); contraction per
    iteration max((1 - gamma mu)^2, (1 - gamma L)^2, 1 - p^2 chi s / n), and p balancing the two
    (:func:`scaffnew_compressed_defaults`): p = sqrt((n - 1)/((s - 1) kappa)) at gamma = 1/L (up to the
    factor 2 - gamma mu). Communication O(sqrt(kappa (n-1)/(s-1)) log 1/eps) rounds of s d / n floats:
    O(d sqrt(kappa s / n)) floats per client against Scaffnew's O(d sqrt(kappa)) -- the doubly
    accelerated rate (condition number and dimension). Index bits of the owned coordinates are
    counted too (conservative: the pattern can be derived from shared randomness).
    """

    name = "compressed_scaffnew"
    stepsize_source = "reading"
    paper = ("Condat, Agarský, Richtárik (2022), Provably doubly accelerated federated learning: the first "
             "theoretically successful combination of local training and communication compression "
             "(arXiv 2210.13277), Alg. 1")
    state = ("x", "X", "H", "last_comm")

    def init(self, x0):
        self.X = x0.expand(self.n, self.d).clone()
        self.H = self.zeros_clients()
        self.x = x0
        self.last_comm = False

    def step(self):
        G = self.problem.grads(self.X)
        Xh = self.X - self.gamma * (G - self.H)
        self.last_comm = self.coin(self.p)
        if not self.last_comm:
            self.X = Xh
            self.x = Xh.mean(0)
            return
        xbar, _, corr = self._exchange(Xh, None)
        xbar = self.channel.broadcast(xbar)
        self.H = self.H + (self.eta / self.gamma) * corr
        self.X = xbar.expand(self.n, self.d).clone()
        self.x = xbar


class TAMUNAParams(CompressedScaffnewParams):
    #: local steps per round: None = random, geometric with parameter p (a shared coin after every
    #: local step, as in the theory); an integer = that many every round
    local_steps: PositiveInt | None = None


@register_method
class TAMUNA(_ScaffnewCompressed):
    """TAMUNA (L5): Condat, Agarský, Malinovsky, Richtárik (2023), "TAMUNA: doubly accelerated
    distributed optimization with local training, compression, and partial participation" (arXiv
    2302.09832), Algorithm 1. One ``step()`` is one round: c clients are sampled uniformly
    (``sampler: {name: nice, tau: c}``; default all), receive the server model xbar (d floats down),
    run L local steps x_i <- x_i - gamma (grad f_i(x_i) - h_i) from x_i = xbar (L geometric with
    parameter p: a shared coin after each step), and send their coordinates of a random pattern over
    the c participants (s owners per coordinate, about s d / c floats each); the server averages each
    coordinate over its owners into the new xbar and sends each participant back its owned
    coordinates, with which h_i += (eta / gamma) q_i * (xbar - x_i), eta = p chi. Idle clients keep h_i
    and compute nothing. c = n is CompressedScaffnew (one round = its iterations up to a communication);
    c = s = n, chi = 1 is Scaffnew.

    Defaults as in :class:`CompressedScaffnew` (gamma = 1/L_max, chi = n (s-1)/(s (n-1)), p from
    :func:`scaffnew_compressed_defaults` with the n clients; s = max(2, ceil(c/d))), our reading of the
    paper's theorem (not re-verified): the pattern's owners of a coordinate are a uniform s-subset of
    all n clients whatever c, so the control variates contract in expectation as with full
    participation. O(sqrt(kappa (n-1)/(s-1)) log 1/eps) rounds.
    """

    name = "tamuna"
    stepsize_source = "reading"
    paper = ("Condat, Agarský, Malinovsky, Richtárik (2023), TAMUNA: doubly accelerated distributed optimization "
             "with local training, compression, and partial participation (arXiv 2302.09832), Alg. 1")
    uses = ("sampler",)
    Params = TAMUNAParams
    state = ("x", "H", "local_steps_done")

    def check(self):
        s = self.sampler
        if s is not None and not s.is_full and not isinstance(s, Nice):
            raise ValueError(f"tamuna samples exactly c clients per round: use sampler {{name: nice, tau: c}} "
                             f"(got {s.describe()})")

    def _m(self) -> int:
        s = self.sampler
        return self.n if s is None or s.is_full else int(s.tau)

    def init(self, x0):
        self.H = self.zeros_clients()
        self.x = x0
        self.local_steps_done: list[int] = []

    def step(self):
        s = self.sampler
        S = None if s is None or s.is_full else self.sample_clients()
        rows = slice(None) if S is None else S.to(self.H.device)
        m = self._m()
        xr = self.channel.broadcast(self.x, clients=S)
        Y = xr.expand(m, self.d).clone()
        H = self.H[rows]
        steps = 0
        while True:  # L local steps, L ~ Geometric(p) unless fixed
            Y = Y - self.gamma * (self.problem.grads(Y, S) - H)
            steps += 1
            if self.params.local_steps is not None:
                if steps >= self.params.local_steps:
                    break
            elif self.coin(self.p):
                break
        self.local_steps_done.append(steps)
        xbar, maskv, corr = self._exchange(Y, S)
        back = self.channel.sparse(xbar.expand(m, self.d) * maskv, maskv.bool().cpu().sum(1))
        self.channel.send_down(back, clients=S)  # each participant's owned coordinates of xbar
        self.H[rows] = H + (self.eta / self.gamma) * corr
        self.x = xbar
