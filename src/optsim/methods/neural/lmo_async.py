"""Asynchronous LMO momentum (Ringmaster LMO) and its synchronous counterpart, on the event engine.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt, model_validator

from ..base import register_method
from ..event import AsyncParams, EventMethod
from .optimizers import _check_norms, layout_lmo, layout_of

__all__ = ["LMOAsyncParams", "RingmasterLMOParams", "RingmasterLMO", "MinibatchLMO"]


# ---- Ringmaster LMO (A4) on the event simulator ----------------------------------------------------------
class LMOAsyncParams(AsyncParams):
    #: momentum alpha: weight of the new gradient, m <- (1 - alpha) m + alpha g (schedule "constant")
    alpha: float = Field(0.1, gt=0.0, le=1.0)
    #: "constant": gamma and alpha fixed; "parameter_agnostic": the decreasing schedules of
    #: Sadiev et al. (2026), alpha_0 = 1, alpha_k = k^(-1/2), gamma_k = eta (k + 1)^(-3/4) with
    #: eta = the stepsize (any eta > 0; default 1), and (Ringmaster LMO) R_k = floor(1 / alpha_k)
    schedule: Literal["constant", "parameter_agnostic"] = "constant"
    matrix_norm: str = "spectral"
    vector_norm: str = "l2"
    spectral_method: Literal["newton_schulz", "svd"] = "newton_schulz"


class _LMOEvent(EventMethod):
    Params = LMOAsyncParams
    state = EventMethod.state + ("_layout", "_m", "_vec_l2")

    def check(self):
        _check_norms(self.params.matrix_norm, self.params.vector_norm)

    @property
    def agnostic(self) -> bool:
        return self.params.schedule == "parameter_agnostic"

    def theory_stepsize(self):
        if self.agnostic:  # the theorem holds for every eta > 0 (Psi = Delta_0 / eta + rho sigma + L_0 eta)
            return 1.0
        raise NotImplementedError(f"{self.name}: the stepsize of the (L0, L1) analysis needs constants the problem "
                                  f"does not know: set 'stepsize' (or schedule: parameter_agnostic)")

    def alpha_k(self, k: int) -> float:
        """Momentum weight of iteration k: constant, or alpha_0 = 1, alpha_k = k^(-1/2) (parameter-agnostic)."""
        if not self.agnostic:
            return self.params.alpha
        return 1.0 if k == 0 else 1.0 / math.sqrt(k)

    def gamma_k(self, k: int) -> float:
        """Stepsize (LMO radius) of iteration k: constant, or eta (k + 1)^(-3/4) (parameter-agnostic)."""
        return self.gamma * (k + 1) ** -0.75 if self.agnostic else self.gamma

    def _lmo_step(self, g) -> None:
        """m <- (1 - alpha_k) m + alpha_k g; x <- x + gamma_k lmo(m) (a new x: the server never updates in place)."""
        e = self.engine
        a, gamma = self.alpha_k(e.k), self.gamma_k(e.k)
        if self._vec_l2:  # one l2 block on the CPU (e.g. a quadratic): lmo(m) = -m / ||m||, in NumPy
            self._m = g * a if self._m is None else self._m * (1 - a) + g * a
            nrm = float(np.linalg.norm(self._m))
            self.update(e.x - (gamma / nrm) * self._m if nrm > 0 else e.x)
            return
        gt = torch.from_numpy(g) if e.numpy else g
        self._m = gt * a if self._m is None else self._m * (1 - a) + gt * a
        lmo = layout_lmo(self._m.view(1, self.d), self._layout, self.params.matrix_norm, self.params.vector_norm,
                         method=self.params.spectral_method).view(self.d)
        x = e.model() + gamma * lmo
        self.update(x.numpy() if e.numpy else x)

    def begin(self):
        self._layout = layout_of(self.problem)
        self._m = None
        self._vec_l2 = self.engine.numpy and len(self._layout) == 1 and not next(iter(self._layout)).is_matrix \
            and self.params.vector_norm == "l2"
        self._start()

    def _start(self):
        self.launch_all(0.0)


class RingmasterLMOParams(LMOAsyncParams):
    #: delay threshold R: gradients with delay >= R are discarded; default as Ringmaster ASGD,
    #: max{1, ceil(sigma^2 / eps)} when the problem knows sigma^2, else n. Under the
    #: parameter-agnostic schedule the threshold is R_k = floor(1 / alpha_k) = max{1, floor(sqrt(k))}
    #: and R must not be set.
    R: PositiveInt | None = None

    @model_validator(mode="after")
    def _agnostic_threshold(self):
        if self.schedule == "parameter_agnostic" and self.R is not None:
            raise ValueError("the parameter-agnostic schedule sets its own threshold R_k = floor(sqrt(k)): "
                             "remove 'R' (or use schedule: constant)")
        return self


@register_method
class RingmasterLMO(_LMOEvent):
    """Ringmaster LMO: asynchronous LMO-based momentum with a delay threshold.

    Sadiev, Maranjyan, Ilin, Richtárik (2026), "Ringmaster LMO: Asynchronous Linear Minimization
    Oracle Momentum Method" (arXiv:2605.18174), Algorithm 1 (the variant without calculation
    stops). Workers compute stochastic gradients at the model they received and send them when
    done; at an arrival of g computed at x_{k - delta}, the server ignores it if delta >= R_k
    (Ringmaster ASGD's rule; the worker restarts at x_k), otherwise

        m_{k+1} = (1 - alpha_k) m_k + alpha_k g,     x_{k+1} = x_k + gamma_k lmo(m_{k+1}),

    and the worker restarts at x_{k+1}. lmo is the block-wise unit-ball LMO of the layout
    (spectral for matrices, l2 for vectors; a problem without layout is one l2 block: normalized
    SGD with momentum). ``R = inf`` (a huge R) is plain asynchronous LMO momentum.

    Schedules (``schedule``):

    * ``constant``: gamma_k = gamma (explicit), alpha_k = alpha (default 0.1), R_k = R (default
      Ringmaster ASGD's max{1, ceil(sigma^2/eps)}, Maranjyan, Tyurin, Richtárik 2025, Thm. 4.1, or n).
      The constants of the paper's (L0, L1) theorem need L0, L1, sigma: gamma is explicit.
    * ``parameter_agnostic``: the paper's parameter-agnostic variant (its iteration-complexity
      theorem for the decreasing schedules): alpha_0 = 1, alpha_k = 1/sqrt(k), R_k =
      floor(1/alpha_k) = max{1, floor(sqrt(k))}, gamma_k = eta / (k + 1)^(3/4) for any eta > 0
      (``stepsize``, default 1): min_k E||grad f(x_k)||_* = O(Psi log K / K^(1/4)) with
      Psi = Delta_0/eta + rho sigma + L_0 eta, no problem constant needed; with the square-root
      threshold K iterations take O(min_m H_m (sqrt(K) + K/m)) seconds under fixed compute times
      (H_m the harmonic mean of tau_1..tau_m; the paper's time lemma), i.e. Ringmaster ASGD's
      time complexity up to the Psi and log factors. With one worker (every delay 0) it is the
      synchronous parameter-agnostic LMO momentum method (``minibatch_lmo`` with n = 1 and the
      same schedule) iterate for iterate.

    Source of the schedules: the authors' LaTeX and code (github.com/vectozavr/ringmaster-lmo:
    Algorithm 1, the iteration-complexity theorem and the square-root-threshold lemma; their
    ``ParameterAgnosticRingmasterMuonASGD`` uses the same alpha_k, R_k, gamma_k).
    """

    name = "ringmaster_lmo"
    stepsize_source = "explicit"
    paper = "Sadiev, Maranjyan, Ilin, Richtárik (2026), Ringmaster LMO, Alg. 1 (constant or parameter-agnostic schedules)"
    Params = RingmasterLMOParams
    state = _LMOEvent.state + ("_R",)

    @property
    def R(self) -> int:
        if self.params.R is not None:
            return int(self.params.R)
        try:
            return max(1, math.ceil(self.sigma2 / self.params.eps))
        except NotImplementedError:
            return self.n

    def R_k(self, k: int) -> int:
        """Delay threshold of iteration k: constant R, or floor(1 / alpha_k) = max{1, floor(sqrt(k))}."""
        return max(1, math.isqrt(k)) if self.agnostic else self._R

    def _start(self):
        self._R = None if self.agnostic else self.R
        self.launch_all(0.0)

    def on_arrival(self, i, t):
        fresh = self.k - self.engine.version[i] < self.R_k(self.k)
        self.record(i, fresh)
        if fresh:
            self._lmo_step(self.gradient(i))
        self.launch(i, t)


@register_method
class MinibatchLMO(_LMOEvent):
    """Synchronous LMO momentum against simulated time (the baseline of Ringmaster LMO): every
    worker computes a stochastic gradient at x_k, the server waits for all n, averages them,
    m_{k+1} = (1 - alpha_k) m_k + alpha_k mean_i g_i, x_{k+1} = x_k + gamma_k lmo(m_{k+1}) (Gluon /
    Muon-type step with a minibatch of n gradients; Riabinin et al. 2025, Alg. 1). An iteration
    lasts as long as the slowest worker. ``schedule: constant``: gamma explicit, alpha fixed;
    ``schedule: parameter_agnostic``: alpha_0 = 1, alpha_k = k^(-1/2), gamma_k = eta (k + 1)^(-3/4)
    (the schedules of parameter-agnostic Ringmaster LMO, Sadiev et al. 2026, with every delay 0)."""

    name = "minibatch_lmo"
    stepsize_source = "explicit"
    paper = "Synchronous LMO momentum (Gluon, Riabinin et al. 2025, Alg. 1) with n workers"
    state = _LMOEvent.state + ("_acc", "_count")

    def _start(self):
        self._acc, self._count = None, 0
        self.launch_all(0.0)

    def on_arrival(self, i, t):
        g = self.gather_all(i)
        if g is not None:
            self._lmo_step(g)
            self.launch_all(t)
