"""clipped-SGD and clipped-SSTM for stochastic gradients with heavy-tailed noise.

Sadiev, Danilova, Gorbunov, Horváth, Gidel, Dvurechensky, Gasnikov, Richtárik (2023), "High-probability
bounds for stochastic optimization and variational inequalities: the case of unbounded variance", ICML
2023 (arXiv 2302.00999): high-probability rates of clipped-SGD and clipped-SSTM when only the central
alpha-th moment of the noise is bounded, E||grad f_xi(x) - grad f(x)||^alpha <= sigma^alpha with
alpha in (1, 2]. The paper's text could not be read here: the update rules below are those of the
authors' earlier paper (Gorbunov, Danilova, Gasnikov 2020, "Stochastic optimization with heavy-tailed
noise via accelerated gradient clipping", NeurIPS 2020, Alg. 1 clipped-SSTM and clipped-SGD) and of
their public code (ClippedStochasticMethods/clipped-SSTM, ``optimizers.py``); the theorem numbers and
the numeric constants of the paper's stepsizes and clipping levels are **not confirmed**, so no
default clipping level is frozen here (see :func:`clipped_sgd_parameters` for the theorem's form).

Clipping: clip(g, lam) = min(1, lam / ||g||) g (norm clipping), so ||clip(g, lam)|| <= lam and
clip(g, inf) = g exactly.

clipped-SGD:  x_{k+1} = x_k - gamma clip(g(x_k; xi_k), lam).

clipped-SSTM (similar triangles), with a >= 1 and the clipping parameter B:
A_0 = 0, y_0 = z_0 = x_0; alpha_{k+1} = (k + 1) / (2 a L), A_{k+1} = A_k + alpha_{k+1};
x_{k+1} = (A_k y_k + alpha_{k+1} z_k) / A_{k+1};
z_{k+1} = z_k - alpha_{k+1} clip(g(x_{k+1}; xi_k), B / alpha_{k+1});
y_{k+1} = (A_k y_k + alpha_{k+1} z_{k+1}) / A_{k+1}.
With B = infinity and exact gradients this is the similar-triangles method (STM), for which
f(y_K) - f* <= ||x_0 - x*||^2 / (2 A_K) with A_K = K (K + 1) / (4 a L) (alpha_{k+1}^2 L <= A_{k+1}).

The batched step functions take (R, d) iterates: R independent runs advance as one computation.
In the registered methods each of the n clients draws ``batch_size`` samples, the server averages
the clients' gradients and clips the average (n = 1: the paper's single-node method).
"""
from __future__ import annotations

import math

import torch
from pydantic import Field, PositiveInt

from ...bounds import clip_rows as _clip_rows
from ..base import Method, MethodParams, register_method

__all__ = [
    "ClippedSGD",
    "ClippedSSTM",
    "clip_rows",
    "clipped_sgd_parameters",
    "clipped_sgd_step",
    "sstm_coefficient",
    "sstm_point",
    "sstm_update",
]


def clip_rows(G: torch.Tensor, lam) -> torch.Tensor:
    """Norm clipping of each row (or of a vector): min(1, lam / ||g||) g. ``lam`` a number
    (:func:`optsim.bounds.clip_rows`; math.inf: G returned unchanged) or a tensor of per-row levels."""
    if not isinstance(lam, torch.Tensor):
        return _clip_rows(G, float(lam))
    lam = lam.to(G)
    if lam.ndim == 1 and G.ndim == 2:
        lam = lam[:, None]
    norm = torch.linalg.vector_norm(G, dim=-1, keepdim=True)
    return G * torch.clamp(lam / norm.clamp_min(1e-300), max=1.0)


def clipped_sgd_step(X: torch.Tensor, G: torch.Tensor, gamma, lam) -> torch.Tensor:
    """x - gamma clip(g, lam) for every row."""
    return X - gamma * clip_rows(G, lam)


def clipped_sgd_parameters(L: float, R: float, sigma: float, alpha: float, K: int, beta: float,
                           c: float = 80.0) -> tuple[float, float]:
    """The form of the paper's convex clipped-SGD theorem as recalled in the research notes, with one
    numeric constant ``c`` in place of the paper's (its values are **not confirmed**; "in the tens, e.g.
    80" is recalled): with A = ln(4 (K + 1) / beta),
    gamma = min{1 / (c L A), R / (c sigma K^(1/alpha) A^((alpha - 1)/alpha))} and lam = R / (c gamma A).
    Returns (gamma, lam): a documented starting point, not the paper's constants."""
    if not 1 < alpha <= 2:
        raise ValueError(f"clipped_sgd_parameters needs alpha in (1, 2], got {alpha}")
    A = math.log(4 * (K + 1) / beta)
    gamma = 1.0 / (c * L * A)
    if sigma > 0:
        gamma = min(gamma, R / (c * sigma * K ** (1 / alpha) * A ** ((alpha - 1) / alpha)))
    return gamma, R / (c * gamma * A)


def sstm_coefficient(k: int, a: float, L: float) -> float:
    """alpha_{k+1} = (k + 1) / (2 a L) of clipped-SSTM (k = 0, 1, ...)."""
    return (k + 1) / (2.0 * a * L)


def sstm_point(Y: torch.Tensor, Z: torch.Tensor, A: float, a_next: float) -> torch.Tensor:
    """x_{k+1} = (A_k y_k + alpha_{k+1} z_k) / A_{k+1}."""
    return (A * Y + a_next * Z) / (A + a_next)


def sstm_update(Y: torch.Tensor, Z: torch.Tensor, A: float, a_next: float, G: torch.Tensor, B):
    """(y_{k+1}, z_{k+1}, A_{k+1}) from the stochastic gradient G at x_{k+1}, clipped at B / alpha_{k+1}."""
    Z1 = Z - a_next * clip_rows(G, B / a_next)
    A1 = A + a_next
    return (A * Y + a_next * Z1) / A1, Z1, A1


class ClippedSGDParams(MethodParams):
    #: clipping level lam (None: no clipping, plain SGD)
    clip_level: float | None = Field(None, gt=0)
    #: samples each client draws per round
    batch_size: PositiveInt = 1


def _server_gradient(method, x: torch.Tensor) -> torch.Tensor:
    G = method.problem.minibatch_grads(x.expand(method.n, method.d), method.params.batch_size,
                                       method.ctx.generator("noise"))
    return method.channel.uplink(G)


@register_method
class ClippedSGD(Method):
    """clipped-SGD (Sadiev et al. 2023, ICML; Gorbunov, Danilova, Gasnikov 2020, clipped-SGD): see the
    module docstring. The theorem's stepsize and clipping level need R, sigma, alpha, K and the failure
    probability, with numeric constants not confirmed here: ``stepsize`` (and ``clip_level``) must be set."""

    name = "clipped_sgd"
    stepsize_source = "explicit"
    paper = ("Sadiev, Danilova, Gorbunov, Horváth, Gidel, Dvurechensky, Gasnikov, Richtárik (2023), High-probability "
             "bounds for stochastic optimization and VIs: the case of unbounded variance, clipped-SGD")
    Params = ClippedSGDParams

    def init(self, x0):
        self.x = x0

    def step(self):
        lam = math.inf if self.params.clip_level is None else self.params.clip_level
        g = _server_gradient(self, self.x)
        self.x = self.channel.broadcast(clipped_sgd_step(self.x, g, self.gamma, lam))


class ClippedSSTMParams(MethodParams):
    #: the stepsize parameter a >= 1 (alpha_{k+1} = (k + 1) / (2 a L))
    a: float = Field(1.0, ge=1.0)
    #: clipping parameter B (level B / alpha_{k+1}); None: no clipping (stochastic STM)
    clip_B: float | None = Field(None, gt=0)
    #: samples each client draws per round
    batch_size: PositiveInt = 1


@register_method
class ClippedSSTM(Method):
    """clipped-SSTM, the accelerated clipped method (Sadiev et al. 2023; Gorbunov, Danilova, Gasnikov 2020,
    Alg. 1): see the module docstring. ``gamma`` = 1 / (2 a L) scales the coefficients,
    alpha_{k+1} = (k + 1) gamma (the form of the authors' code; the theorem's choice of a and B, which
    depend on K, the failure probability, sigma and alpha, is not confirmed). The iterate is y_k."""

    name = "clipped_sstm"
    stepsize_source = "reading"
    paper = ("Sadiev, Danilova, Gorbunov, Horváth, Gidel, Dvurechensky, Gasnikov, Richtárik (2023), High-probability "
             "bounds for stochastic optimization and VIs: the case of unbounded variance, clipped-SSTM "
             "(Gorbunov, Danilova, Gasnikov 2020, Alg. 1)")
    Params = ClippedSSTMParams
    state = ("x", "z", "A_sum", "k")

    def theory_stepsize(self):
        return 1.0 / (2.0 * self.params.a * self.problem.L)

    def init(self, x0):
        self.x, self.z, self.A_sum, self.k = x0, x0.clone(), 0.0, 0

    def step(self):
        a_next = (self.k + 1) * self.gamma
        B = math.inf if self.params.clip_B is None else float(self.params.clip_B)
        g = _server_gradient(self, sstm_point(self.x, self.z, self.A_sum, a_next))
        y, self.z, self.A_sum = sstm_update(self.x, self.z, self.A_sum, a_next, g, B)
        self.x = self.channel.broadcast(y)
        self.k += 1
