"""Clipping of gradient *differences* with learned shifts (composite and distributed problems, S6).

Gorbunov, Sadiev, Danilova, Horváth, Gidel, Dvurechensky, Gasnikov, Richtárik (2023/24), "High-probability
convergence for composite and distributed stochastic minimization and variational inequalities with
heavy-tailed noise" (arXiv 2310.01860). Problem: min_x f(x) + Psi(x), f = (1/n) sum_i f_i, where each
client's stochastic gradient has only a bounded alpha-th central moment, alpha in (1, 2].

Why naive clipping fails (the paper's motivation, confirmed from its abstract): at the solution
grad f_i(x*) != 0 (heterogeneous clients) or grad f(x*) = -(a subgradient of Psi) != 0 (composite), so
clipping grad f_i moves the fixed point even with exact gradients. Example (derived here): n = 3,
f_i(x) = (x - a_i)^2 / 2 with a = (0, 0, 3), x* = 1; the naive method x+ = x - gamma (1/n) sum_i
clip(x - a_i, 1) stops where sum_i clip(x - a_i, 1) = 0, at x = 0.5.

The fix, Prox-clipped-SGD-shift (n = 1) and DProx-clipped-SGD-shift (n clients): each client i keeps a
shift h_i and clips the difference between its stochastic gradient and the shift,

    Delta_i = clip(g_i(x^k) - h_i^k, lam),       g^k = (1/n) sum_i (h_i^k + Delta_i),
    h_i^{k+1} = h_i^k + nu Delta_i,               x^{k+1} = prox_{gamma Psi}(x^k - gamma g^k),

with clip(v, lam) = min(1, lam / ||v||) v (:func:`optsim.bounds.clip_rows`). At x* the shifts learn
grad f_i(x*), the differences vanish and clipping no longer biases the fixed point. The names
Prox-clipped-SGD-shift / DProx-clipped-SGD-shift (and an accelerated DProx-clipped-SSTM-shift, not
implemented here) and the idea, clipping gradient differences to shifts updated on the fly, are confirmed
(the abstract, a public summary of the paper, public reviews of its first version); the full text could
not be read here, so the exact update above (in particular the shift update h_i += nu Delta_i
with the *clipped* difference), the algorithm and theorem numbers, and the theorem's stepsize gamma,
clipping level lam and shift stepsize nu are **not confirmed**. Hence ``stepsize`` must be set, the
clipping level is an explicit parameter, and the default nu = 1 is ours (DIANA's shift stepsize
1/(omega + 1) at omega = 0, the identity compressor; :class:`optsim.mechanisms.Shifts` holds the h_i).

Special cases (tested): lam = inf gives g^k = (1/n) sum_i g_i, i.e. prox-SGD, and equals DIANA with the
identity compressor and shift stepsize nu iterate for iterate; nu = 0 with h^0 = 0 is the naive method
(:class:`ProxClippedSGD`, each client clips its own stochastic gradient).

:func:`shifted_clip_step` is the same round on batched tensors ((R, d) models, (R, n, d) shifts): R
independent runs as one computation (recipe S6, ``bench/bench_heavy_tailed.py``).

Psi is the problem's nonsmooth term (:meth:`optsim.problems.Problem.with_nonsmooth`, a config's
``problem.nonsmooth``; :mod:`optsim.problems.regularizer`); the run's loss, f - f* and ||x - x*||^2 are
then those of f + Psi (its minimizer by :func:`optsim.problems.regularizer.composite_solution`), while
``grad_norm_sq`` stays ||grad f||^2 of the smooth part.
"""
from __future__ import annotations

import math

import torch
from pydantic import Field, PositiveInt

from ...bounds import clip_rows
from ...mechanisms import Shifts
from ...problems.regularizer import Regularizer
from ..base import Method, MethodParams, register_method

__all__ = ["ProxClippedSGD", "ProxClippedSGDShift", "shifted_clip_step"]


def shifted_clip_step(X: torch.Tensor, H: torch.Tensor, h: torch.Tensor, G: torch.Tensor, gamma: float, lam: float,
                      nu: float, reg: Regularizer | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One round of (D)Prox-clipped-SGD-shift (module docstring) on batched tensors: models X (..., d), shifts
    H (..., n, d), their mean h (..., d), the clients' stochastic gradients G (..., n, d) at X. Returns
    (X+, H+, h+); H and h are updated in place (nu != 0); nu = 0 with H = 0 is the naive method."""
    D = clip_rows(torch.sub(G, H), float(lam), inplace=True)
    delta = D.mean(-2)
    V = torch.sub(X, h, alpha=gamma).sub_(delta, alpha=gamma)  # x - gamma (h + mean_i Delta_i)
    if nu != 0.0:
        H.add_(D, alpha=nu)
        h.add_(delta, alpha=nu)
    return (V if reg is None else reg.prox(V, gamma)), H, h


class ProxClippedSGDParams(MethodParams):
    #: clipping level lam of each client's vector (None: no clipping)
    clip_level: float | None = Field(None, gt=0)
    #: samples each client draws per round
    batch_size: PositiveInt = 1


class ProxClippedSGDShiftParams(ProxClippedSGDParams):
    #: shift stepsize nu of h_i += nu clip(g_i - h_i, lam); default 1 (ours, not the paper's)
    shift_stepsize: float = Field(1.0, ge=0, le=1)


@register_method
class ProxClippedSGD(Method):
    """Prox-clipped-SGD, the naive baseline of Gorbunov et al. (2023/24, arXiv 2310.01860): every client
    clips its own stochastic gradient, the server averages and takes a prox step,
    x+ = prox_{gamma Psi}(x - gamma (1/n) sum_i clip(g_i(x), lam)). For n > 1 this is distributed clipped
    SGD with client-side clipping; ``clipped_sgd`` instead clips the server's average (equal for n = 1
    and Psi = 0). Its fixed point is not x* when grad f_i(x*) != 0 (module docstring). Stepsize explicit
    (the paper analyses the shifted method, not this one). Bits: d floats up per client, d down."""

    name = "prox_clipped_sgd"
    stepsize_source = "explicit"
    paper = ("Gorbunov, Sadiev, Danilova, Horváth, Gidel, Dvurechensky, Gasnikov, Richtárik (2023/24), High-probability "
             "convergence for composite and distributed stochastic minimization and VIs with heavy-tailed noise: "
             "the naive Prox-clipped-SGD")
    Params = ProxClippedSGDParams

    handles = ("nonsmooth",)

    @property
    def regularizer(self) -> Regularizer:
        """The problem's Psi (Psi = 0 when it has none)."""
        return self.problem.nonsmooth or Regularizer()

    @property
    def lam(self) -> float:
        return math.inf if self.params.clip_level is None else float(self.params.clip_level)

    def _stochastic_grads(self) -> torch.Tensor:
        return self.problem.minibatch_grads(self.at_clients(self.x), self.params.batch_size, self.ctx.generator("noise"))

    def _server_step(self, g: torch.Tensor) -> None:
        self.x = self.channel.broadcast(self.regularizer.prox(self.x - self.gamma * g, self.gamma))

    def init(self, x0):
        self.x = x0

    def step(self):
        g = self.channel.uplink(self.channel.dense(clip_rows(self._stochastic_grads(), self.lam)))
        self._server_step(g)


@register_method
class ProxClippedSGDShift(ProxClippedSGD):
    """(D)Prox-clipped-SGD-shift (Gorbunov et al. 2023/24, arXiv 2310.01860): clipping of the differences
    between the clients' stochastic gradients and learned shifts, then a prox step (module docstring; the
    exact update, the algorithm / theorem numbers and the theorem's parameters are not confirmed). n = 1:
    Prox-clipped-SGD-shift. Shifts start at h_i^0 = 0. Stepsize explicit; ``clip_level`` None: no clipping
    (prox-SGD); ``shift_stepsize`` nu (default 1, ours). Bits: each client sends Delta_i (d floats), the
    server broadcasts x (d floats); the server keeps the mean shift h itself."""

    name = "prox_clipped_sgd_shift"
    paper = ("Gorbunov, Sadiev, Danilova, Horváth, Gidel, Dvurechensky, Gasnikov, Richtárik (2023/24), High-probability "
             "convergence for composite and distributed stochastic minimization and VIs with heavy-tailed noise: "
             "(D)Prox-clipped-SGD-shift")
    Params = ProxClippedSGDShiftParams
    state = ("x", "shifts")

    def init(self, x0):
        self.x = x0
        self.shifts = Shifts()
        self.shifts.zero(self.zeros_clients(x0))

    def step(self):
        lam = self.lam
        g = self.shifts.estimate(self._stochastic_grads(), lambda D: self.channel.dense(clip_rows(D, lam)), self.channel,
                                 float(self.params.shift_stepsize))
        self._server_step(g)
