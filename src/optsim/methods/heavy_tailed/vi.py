"""clipped-SEG and clipped-SGDA for variational inequalities with heavy-tailed noise (batched over runs).

Sadiev, Danilova, Gorbunov, Horváth, Gidel, Dvurechensky, Gasnikov, Richtárik (2023), "High-probability
bounds for stochastic optimization and variational inequalities: the case of unbounded variance", ICML
2023, the VI part (monotone, star-cocoercive and quasi-strongly monotone operators). The paper's text
could not be read here: the updates below are those named in the research notes (theorem numbers and
the stepsize / clipping-level constants are **not confirmed**, so both are explicit arguments):

* clipped-SEG:  z~ = z - gamma clip(F_xi1(z), lam),  z+ = z - gamma clip(F_xi2(z~), lam), with
  independent samples xi1, xi2 (two operator calls per iteration);
* clipped-SGDA: z+ = z - gamma clip(F_xi(z), lam) (one call).

With lam = inf and exact operators they are the extragradient method and gradient descent-ascent.
``op(Z, generator)`` is a stochastic operator acting on the rows of (R, D) (e.g.
:meth:`optsim.problems.minmax.QuadraticMinMax.stochastic_operator`): R runs advance as one computation.
The registered methods ``clipped_seg`` and ``clipped_sgda`` run these same step functions on a VI problem
(:class:`optsim.problems.minmax.GameProblem`, the structure ``operator``), with ``op`` the clients'
stochastic operators averaged by the channel's uplink.

Distributed / composite VIs with shifts (S6: Gorbunov et al. 2023/24, arXiv 2310.01860, which names
shifted clipped SGDA and SEG variants for VIs; their exact updates are **not confirmed**, so the rules
below are our rendering of the shift mechanism of :mod:`.shifted` applied to each operator call). F =
(1/n) sum_i F_i, client i keeps a shift h_i (h: their mean), ``prox`` the regularizer's (identity by
default):

* shifted clipped-SGDA: Delta_i = clip(F_i(z) - h_i, lam), z+ = prox(z - gamma (h + mean_i Delta_i)),
  h_i += nu Delta_i;
* shifted clipped-SEG: Delta~_i = clip(F_i(z) - h_i, lam), z~ = prox(z - gamma (h + mean_i Delta~_i)),
  Delta_i = clip(F_i(z~) - h_i, lam), z+ = prox(z - gamma (h + mean_i Delta_i)), h_i += nu Delta_i
  (the shifts move once per iteration, by the update step's differences).

At the solution the shifts learn F_i(z*) and the differences vanish; nu = 0 with h = 0 is the naive
method that clips each F_i, whose fixed point is not z* when F_i(z*) != 0. ``op(Z, generator)`` here
returns the clients' stochastic operators (R, n, D) at the rows of Z (R, D) (e.g.
:meth:`optsim.problems.minmax.QuadraticMinMax.client_operator`). The registered methods
``prox_clipped_sgda_shift`` and ``prox_clipped_seg_shift`` are the same rounds with the clients' differences
sent through the channel (:class:`optsim.mechanisms.Shifts`, as ``prox_clipped_sgd_shift``); they equal
these steps up to the rounding of x - gamma (h + delta) against (x - gamma h) - gamma delta.

Registered methods, all on VI problems only (``handles`` "operator"; a minimization problem is refused):
the clients hold the model z (broadcast, D floats down), compute their stochastic operators at it (a
minibatch of ``batch_size`` draws each, counted by the problem as gradient evaluations: SEG makes two
per round, at z and at the extrapolation z~, which the server broadcasts first) and send D floats up per
operator call. In ``clipped_seg`` / ``clipped_sgda`` the clients send their operators and the server clips
the average (n = 1: the paper's single-node method), in the shifted methods each client sends its clipped
difference Delta_i; with ``shift_stepsize`` 0 (shifts stay 0) each client sends its own clipped operator,
the naive client-side clipping (for n = 1 equal to ``clipped_seg`` / ``clipped_sgda``). The theorems' stepsizes and clipping levels are not confirmed (module docstring), so
``stepsize`` is explicit (``stepsize_source`` "explicit") and ``clip_level`` None means no clipping.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pydantic import Field, PositiveInt

from ...problems.regularizer import Regularizer
from ..base import Method, MethodParams, register_method
from ..linalg._threads import threads_for
from .clipped import clip_rows
from .shifted import ProxClippedSGDShift, shifted_clip_step

__all__ = ["ClippedSEG", "ClippedSGDA", "ProxClippedSEGShift", "ProxClippedSGDAShift", "clipped_seg_step",
           "clipped_sgda_step", "run_vi", "run_vi_shifted", "shifted_seg_step", "shifted_sgda_step"]

Operator = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def clipped_seg_step(op: Operator, Z: torch.Tensor, gamma: float, lam, generator: torch.Generator) -> torch.Tensor:
    """One clipped stochastic extragradient step for every row of Z."""
    Zt = Z - gamma * clip_rows(op(Z, generator), lam)
    return Z - gamma * clip_rows(op(Zt, generator), lam)


def clipped_sgda_step(op: Operator, Z: torch.Tensor, gamma: float, lam, generator: torch.Generator) -> torch.Tensor:
    """One clipped stochastic gradient descent-ascent step for every row of Z."""
    return Z - gamma * clip_rows(op(Z, generator), lam)


def run_vi(op: Operator, method: str, Z0: torch.Tensor, K: int, gamma: float, lam: float = math.inf,
           seed: int = 0) -> torch.Tensor:
    """K steps of ``seg`` or ``sgda`` from the rows of Z0; returns the final (R, D) iterates."""
    if method not in ("seg", "sgda"):
        raise ValueError(f"run_vi: method must be 'seg' or 'sgda', got '{method}'")
    step = clipped_seg_step if method == "seg" else clipped_sgda_step
    gen = torch.Generator().manual_seed(seed)
    Z = Z0.clone()
    with threads_for(4.0 * Z.shape[0] * Z.shape[-1] ** 2):  # small batched products: one thread
        for _ in range(K):
            Z = step(op, Z, gamma, lam, gen)
    return Z


def shifted_sgda_step(op: Operator, Z: torch.Tensor, H: torch.Tensor, h: torch.Tensor, gamma: float, lam: float,
                      nu: float, generator: torch.Generator, reg: Regularizer | None = None):
    """One shifted clipped-SGDA step (module docstring) for every row of Z (R, D), shifts H (R, n, D),
    their mean h (R, D); returns (Z+, H+, h+)."""
    return shifted_clip_step(Z, H, h, op(Z, generator), gamma, lam, nu, reg)


def shifted_seg_step(op: Operator, Z: torch.Tensor, H: torch.Tensor, h: torch.Tensor, gamma: float, lam: float,
                     nu: float, generator: torch.Generator, reg: Regularizer | None = None):
    """One shifted clipped-SEG step (module docstring); returns (Z+, H+, h+)."""
    Zt, _, _ = shifted_clip_step(Z, H, h, op(Z, generator), gamma, lam, 0.0, reg)
    D = clip_rows(op(Zt, generator) - H, lam)
    delta = D.mean(-2)
    V = Z - gamma * (h + delta)
    if nu != 0.0:
        H, h = H + nu * D, h + nu * delta
    return (V if reg is None else reg.prox(V, gamma)), H, h


def run_vi_shifted(op: Operator, method: str, Z0: torch.Tensor, n: int, K: int, gamma: float, lam: float = math.inf,
                   nu: float = 1.0, seed: int = 0, reg: Regularizer | None = None) -> torch.Tensor:
    """K shifted steps of ``seg`` or ``sgda`` over n clients from the rows of Z0 (shifts start at 0; nu = 0:
    the naive method clipping each client's operator); returns the final (R, D) iterates."""
    if method not in ("seg", "sgda"):
        raise ValueError(f"run_vi_shifted: method must be 'seg' or 'sgda', got '{method}'")
    if not 0 <= nu <= 1:
        raise ValueError(f"run_vi_shifted: the shift stepsize nu must be in [0, 1], got {nu}")
    step = shifted_seg_step if method == "seg" else shifted_sgda_step
    gen = torch.Generator().manual_seed(seed)
    Z = Z0.clone()
    H = Z.new_zeros(Z.shape[0], n, Z.shape[-1])
    h = Z.new_zeros(Z.shape)
    with threads_for(4.0 * Z.shape[0] * n * Z.shape[-1] ** 2):
        for _ in range(K):
            Z, H, h = step(op, Z, H, h, gamma, lam, nu, gen, reg)
    return Z


# ---- registered methods ------------------------------------------------------------------------------------------
S5_PAPER = ("Sadiev, Danilova, Gorbunov, Horváth, Gidel, Dvurechensky, Gasnikov, Richtárik (2023), High-probability "
            "bounds for stochastic optimization and VIs: the case of unbounded variance")
S6_PAPER = ("Gorbunov, Sadiev, Danilova, Horváth, Gidel, Dvurechensky, Gasnikov, Richtárik (2023/24), High-probability "
            "convergence for composite and distributed stochastic minimization and VIs with heavy-tailed noise")


class ClippedVIParams(MethodParams):
    #: clipping level lam (None: no clipping: SEG / SGDA)
    clip_level: float | None = Field(None, gt=0)
    #: operator draws each client averages per call
    batch_size: PositiveInt = 1


class _ClippedVI(Method):
    """What clipped-SEG and clipped-SGDA share: the VI structure, the explicit stepsize, the clients'
    averaged stochastic operator as the ``op`` of this module's step functions."""

    stepsize_source = "explicit"
    Params = ClippedVIParams
    handles = ("operator",)
    #: this module's step function: (op, Z, gamma, lam, generator) -> Z+
    _step = None

    @property
    def lam(self) -> float:
        return math.inf if self.params.clip_level is None else float(self.params.clip_level)

    def init(self, x0):
        self.x = x0

    def step(self):
        x = self.x

        def op(Z, generator):  # the clients hold x; another point (SEG's extrapolation) is broadcast first
            Z = Z if Z is x else self.channel.broadcast(Z)
            return self.channel.uplink(self.problem.minibatch_grads(self.at_clients(Z), self.params.batch_size,
                                                                    generator))

        self.x = self.channel.broadcast(self._step(op, x, self.gamma, self.lam, self.ctx.generator("noise")))


@register_method
class ClippedSEG(_ClippedVI):
    """clipped-SEG (Sadiev et al. 2023, ICML, the VI part; the method of Gorbunov, Danilova, Dobre, Dvurechensky,
    Gasnikov, Gidel 2022, "Clipped stochastic methods for variational inequalities with heavy-tailed noise"):
    z~ = z - gamma clip(F_xi1(z), lam), z+ = z - gamma clip(F_xi2(z~), lam) with independent draws
    (:func:`clipped_seg_step`; module docstring). Algorithm and theorem numbers, the theorem's stepsize and
    clipping level are not confirmed: ``stepsize`` must be set. lam = inf with exact operators: the
    extragradient method. Per round: two operator calls per client, 2 D floats up and 2 D down per client."""

    name = "clipped_seg"
    paper = S5_PAPER + ", clipped-SEG"
    _step = staticmethod(clipped_seg_step)


@register_method
class ClippedSGDA(_ClippedVI):
    """clipped-SGDA (Sadiev et al. 2023, ICML, the VI part; Gorbunov et al. 2022): z+ = z - gamma clip(F_xi(z), lam)
    (:func:`clipped_sgda_step`; module docstring). Algorithm and theorem numbers, the theorem's stepsize and
    clipping level are not confirmed: ``stepsize`` must be set. lam = inf with exact operators: gradient
    descent-ascent. Per round: one operator call per client, D floats up and D down per client."""

    name = "clipped_sgda"
    paper = S5_PAPER + ", clipped-SGDA"
    _step = staticmethod(clipped_sgda_step)


@register_method
class ProxClippedSGDAShift(ProxClippedSGDShift):
    """Shifted clipped-SGDA, the distributed VI method of Gorbunov et al. (2023/24, arXiv 2310.01860) in our
    reading (module docstring: the exact update, the algorithm / theorem numbers and the theorem's parameters
    are not confirmed): Delta_i = clip(F_i(z) - h_i, lam), z+ = z - gamma (h + mean_i Delta_i), h_i += nu Delta_i
    -- ``prox_clipped_sgd_shift``'s round with operators in place of gradients (:func:`shifted_sgda_step`).
    Shifts start at 0; ``shift_stepsize`` nu = 0 is the naive method clipping each F_i. Stepsize explicit.
    Bits: Delta_i (D floats) up per client, z (D floats) down."""

    name = "prox_clipped_sgda_shift"
    paper = S6_PAPER + ": shifted clipped-SGDA (DProx-clipped-SGDA-shift, our reading)"
    handles = ("operator",)


@register_method
class ProxClippedSEGShift(ProxClippedSGDShift):
    """Shifted clipped-SEG, the distributed VI method of Gorbunov et al. (2023/24, arXiv 2310.01860) in our
    reading (module docstring; not confirmed): Delta~_i = clip(F_i(z) - h_i, lam), z~ = z - gamma (h + mean_i
    Delta~_i), Delta_i = clip(F_i(z~) - h_i, lam), z+ = z - gamma (h + mean_i Delta_i), h_i += nu Delta_i (the
    shifts move once per round, by the update step's differences: :func:`shifted_seg_step`). Shifts start at 0;
    nu = 0 is the naive method. Stepsize explicit. Bits per round and client: two differences up (2 D floats),
    z~ and z down (2 D floats); two operator calls."""

    name = "prox_clipped_seg_shift"
    paper = S6_PAPER + ": shifted clipped-SEG (DProx-clipped-SEG-shift, our reading)"
    handles = ("operator",)

    def step(self):
        lam = self.lam

        def send(D):
            return self.channel.dense(clip_rows(D, lam))

        g = self.shifts.estimate(self._stochastic_grads(), send, self.channel, 0.0)  # the shifts stay
        z = self.channel.broadcast(self.regularizer.prox(self.x - self.gamma * g, self.gamma))
        G = self.problem.minibatch_grads(self.at_clients(z), self.params.batch_size, self.ctx.generator("noise"))
        self._server_step(self.shifts.estimate(G, send, self.channel, float(self.params.shift_stepsize)))
