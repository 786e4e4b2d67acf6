"""Finite-difference zeroth-order baselines of the MiSTP paper's comparison (Sec. 4.1, eqs. 13 and 15).

* RSGF -- Ghadimi and Lan (2013), "Stochastic first- and zeroth-order methods for nonconvex stochastic
  programming", SIAM J. Optim. 23(4), the randomized stochastic gradient-free method in the form the
  MiSTP paper runs (eq. 13): s uniform on the unit sphere, a minibatch B,
  x+ = x - alpha (f_B(x + mu s) - f_B(x)) / mu * s  (2 minibatch evaluations per iteration).
* ZO-SVRG -- Liu, Kailkhura, Chen, Ting, Chang, Amini (2018), "Zeroth-order stochastic variance reduction
  for nonconvex optimization", NeurIPS, Algorithm 2, with the MiSTP paper's estimate (eq. 14)
  g_B(x) = d (f_B(x + mu s) - f_B(x)) / mu * s, s uniform on the sphere: each epoch a snapshot x~ with
  g~ = the same estimate of the full f at x~ (2 full evaluations), then inner steps
  x+ = x - alpha (g_B(x) - g_B(x~) + g~). Our reading uses one minibatch and one direction for both
  estimates of a step (the control variate; 4 minibatch evaluations); the authors' code of the MiSTP
  paper draws them independently and does not count the snapshot's evaluations, which the meter
  counts here.
* ZO-CD -- zeroth-order coordinate descent as in the MiSTP paper (eq. 15):
  g = sum_i (f_B(x + mu e_i) - f_B(x - mu e_i)) / (2 mu) e_i,  x+ = x - alpha g  (2 d evaluations,
  one batched oracle call).

The paper takes mu = 1e-4 and tunes alpha on a grid, so the stepsize is explicit. Minibatches are
drawn without replacement per client, as for MiSTP; function values are counted by the meter
(``func_evals``); clients send their values (k floats each) and the server broadcasts the direction
(RSGF, d floats) and the model.
"""
from __future__ import annotations

import torch
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt

from ..base import Method, MethodParams, register_method
from .directions import sample_directions
from .stp import Values, draw_batches

__all__ = ["RSGF", "ZOCD", "ZOSVRG", "rand_grad", "rsgf_step", "zo_cd_step", "zo_svrg_step"]


def rsgf_step(values: Values, X: torch.Tensor, S: torch.Tensor, alpha: float, mu: float) -> torch.Tensor:
    """R runs: X, S (R, d); values (R, k, d) -> (R, k)."""
    F = values(torch.stack([X + mu * S, X], 1))
    return X - alpha * ((F[:, 0] - F[:, 1]) / mu)[:, None] * S


def rand_grad(values: Values, X: torch.Tensor, S: torch.Tensor, mu: float, scale: float) -> torch.Tensor:
    """scale (f(x + mu s) - f(x)) / mu * s for R runs, the two points in one call."""
    F = values(torch.stack([X + mu * S, X], 1))
    return (scale * (F[:, 0] - F[:, 1]) / mu)[:, None] * S


def zo_svrg_step(values: Values, X: torch.Tensor, Xs: torch.Tensor, gs: torch.Tensor, S: torch.Tensor,
                 alpha: float, mu: float) -> torch.Tensor:
    """ZO-SVRG inner step for R runs: v = g_B(x) - g_B(x_snap) + g_snap with one minibatch and one
    direction for both estimates (the four points in one call), x+ = x - alpha v."""
    d = X.shape[1]
    F = values(torch.stack([X + mu * S, X, Xs + mu * S, Xs], 1))
    c = (d / mu) * ((F[:, 0] - F[:, 1]) - (F[:, 2] - F[:, 3]))
    return X - alpha * (c[:, None] * S + gs)


def zo_cd_step(values: Values, X: torch.Tensor, alpha: float, mu: float) -> torch.Tensor:
    """R runs: the 2 d points x +- mu e_i of each run in one call."""
    d = X.shape[1]
    E = mu * torch.eye(d, dtype=X.dtype, device=X.device)
    P = torch.cat([X[:, None, :] + E, X[:, None, :] - E], 1)  # (R, 2d, d)
    F = values(P)
    return X - alpha * (F[:, :d] - F[:, d:]) / (2 * mu)


class FDParams(MethodParams):
    #: finite-difference parameter mu (the paper's 1e-4)
    fd: PositiveFloat = 1e-4
    #: samples of each client's minibatch (uniform without replacement)
    batch_size: PositiveInt = 1


class _FD(Method):
    Params = FDParams
    stepsize_source = "explicit"
    uses = ()

    def check(self):
        if self.params.batch_size > int(self.problem.m.min()):
            raise ValueError(f"{self.name}: batch_size {self.params.batch_size} exceeds the smallest client's "
                             f"{int(self.problem.m.min())} samples: lower 'batch_size'")

    def init(self, x0):
        self.x = self.channel.broadcast(x0)

    def _values(self) -> Values:
        idx = draw_batches(self.problem.m, self.params.batch_size, self.ctx.generator("noise")).to(self.problem.device)

        def values(P):
            V = self.problem.sample_point_losses(P.expand(self.n, *P.shape[1:]), idx)
            return self.channel.uplink(V).reshape(1, -1)
        return values


@register_method
class RSGF(_FD):
    """RSGF (Ghadimi and Lan 2013) as run in the MiSTP paper (eq. 13): see the module docstring."""

    name = "rsgf"
    paper = ("Ghadimi, Lan (2013), Stochastic first- and zeroth-order methods for nonconvex stochastic programming "
             "(RSGF), as in Boucherouite et al. (2024) eq. 13")

    def step(self):
        s = sample_directions("sphere", 1, self.d, self.ctx.generator("method"), self.problem.dtype, self.problem.device)
        s = self.channel.broadcast(s[0]).reshape(1, -1)
        self.x = self.channel.broadcast(rsgf_step(self._values(), self.x.reshape(1, -1), s, self.gamma,
                                                  self.params.fd)[0])


@register_method
class ZOCD(_FD):
    """Zeroth-order coordinate descent with central differences, as in the MiSTP paper (eq. 15)."""

    name = "zo_cd"
    paper = "Boucherouite, Malinovsky, Richtárik, Bergou (2024), Minibatch STP, Sec. 4.1 eq. 15 (ZO-CD baseline)"

    def step(self):
        self.x = self.channel.broadcast(zo_cd_step(self._values(), self.x.reshape(1, -1), self.gamma,
                                                   self.params.fd)[0])


class ZOSVRGParams(FDParams):
    #: inner steps per epoch (0: ceil(m_max / batch_size), one pass over the data as in the paper's code)
    epoch_length: NonNegativeInt = 0


@register_method
class ZOSVRG(_FD):
    """ZO-SVRG (Liu et al. 2018, Algorithm 2) with random sphere directions: see the module docstring."""

    name = "zo_svrg"
    paper = ("Liu, Kailkhura, Chen, Ting, Chang, Amini (2018), Zeroth-order stochastic variance reduction for "
             "nonconvex optimization, Alg. 2 (ZO-SVRG)")
    Params = ZOSVRGParams
    state = ("x", "x_snap", "g_snap", "inner")

    @property
    def epoch_length(self) -> int:
        b = self.params.batch_size
        return self.params.epoch_length or -(-int(self.problem.m.max()) // b)

    def init(self, x0):
        self.x = self.channel.broadcast(x0)
        self.x_snap, self.g_snap, self.inner = self.x, torch.zeros_like(self.x), 0

    def _direction(self):
        s = sample_directions("sphere", 1, self.d, self.ctx.generator("method"), self.problem.dtype, self.problem.device)
        return self.channel.broadcast(s[0]).reshape(1, -1)

    def step(self):
        X = self.x.reshape(1, -1)
        if self.inner == 0:
            def full(P):
                return self.channel.uplink(self.problem.point_losses(P.expand(self.n, *P.shape[1:]))).reshape(1, -1)
            self.x_snap, self.g_snap = self.x, rand_grad(full, X, self._direction(), self.params.fd, self.d)[0]
        X = zo_svrg_step(self._values(), X, self.x_snap.reshape(1, -1), self.g_snap.reshape(1, -1), self._direction(),
                         self.gamma, self.params.fd)
        self.x = self.channel.broadcast(X[0])
        self.inner = (self.inner + 1) % self.epoch_length
