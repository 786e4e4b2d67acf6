"""Stochastic three points (STP) and minibatch STP (MiSTP): direct search from function values only.

STP -- Bergou, Gorbunov, Richtárik (2020), "Stochastic three points method for unconstrained smooth
minimization", SIAM J. Optim. 30(4) (arXiv 1902.03591), Algorithm 1:

    s_k ~ D,   x_{k+1} = argmin { f(x_k - alpha_k s_k), f(x_k + alpha_k s_k), f(x_k) }.

MiSTP -- Boucherouite, Malinovsky, Richtárik, Bergou (2024), "Minibatch stochastic three points
method for unconstrained smooth minimization", AAAI 2024 (arXiv 2209.07883), Algorithm 1: the same
comparison of the minibatch function f_B = (1/|B|) sum_{i in B} f_i at the three points, with one
fresh minibatch B_k (uniform, without replacement, as in the authors' code) used at all three.
Ties go to x_k - alpha s_k, then x_k + alpha s_k, then x_k (the authors' ``argmin`` order).

Stepsize rules (``step_rule``):

* ``constant``: alpha_k = gamma. MiSTP's Theorem 1 (nonconvex; read in the paper):
  alpha = mu_D eps / L gives min_k E||grad f(x_k)||_D <= eps after
  K >= (f(x_0) - f*) / (mu_D eps alpha - L alpha^2 / 2 - sigma_B) - 1 iterations, L = mean_i L_i;
  Theorem 2 (convex, bounded level set R_0): alpha = eps mu_D / (L R_0) and
  K >= (L R_0^2 / (mu_D^2 eps)) log(4 (f(x_0) - f*) / eps) give E f(x_K) - f* <= eps. The
  parameter ``eps`` sets Theorem 1's alpha; without it the stepsize must be given (the paper tunes it
  on the grid 1, 0.1, 0.01, ... in every experiment).
* ``directional``: alpha_k = gamma |f(x_k + t s_k) - f(x_k)| / t (``fd`` = t), a forward-difference
  estimate of |<grad f(x_k), s_k>| times gamma = 1/L: STP's stepsize "estimated through finite
  differences" for strongly convex f. With the exact directional derivative and unit directions
  (``sphere``, ``coordinate``), L-smoothness gives f(x_{k+1}) <= f(x_k) - <grad f(x_k), s_k>^2 / (2L),
  and E<g, s>^2 = ||g||^2 / d with the PL inequality give

      E[f(x_{k+1}) - f*] <= (1 - mu / (d L)) (f(x_k) - f*),

  with equality for f = (L/2) ||x - x*||^2 (then x_{k+1} - x* = (I - s s^T)(x_k - x*)). The rate
  (1 - mu/(dL))^K is the one El Bakkali El Kadi and Saadi (ICLR 2025, abstract read) state for this
  stepsize; the derivation above is ours (the STP paper's own theorem for this rule, with its
  finite-difference error term, was not readable here). The t-dependent bias of the estimate
  (|error| <= L t / 2) is not in this bound.

Oracle counts (function evaluations, the meter's ``func`` counter, trace column ``func_evals``):
STP keeps f(x_k) from the previous round, so a round costs 2 evaluations (3 with the directional
rule); MiSTP re-evaluates f_B(x_k) on the new minibatch: 3 minibatch evaluations (4 with the
directional rule), each of b samples counted b / m_i (the paper's query count 3 b per iteration).
The candidate points of a round are evaluated in one batched oracle call (two with the
directional rule, whose stepsize needs the first). Communication: the server broadcasts the
direction (d floats) each round, clients send their k function values (k floats each); the stepsize
and the choice (two scalars) are not charged.

``value_noise`` > 0 adds independent N(0, value_noise^2) noise to every function value the method
sees (approximate function values: the sigma of Assumption 2 in the MiSTP paper).

The functional forms (:func:`stp_step`, :func:`run_stp`) advance R independent runs as one
(R, d) batch (tests, recipes).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt

from ..base import Method, MethodParams, register_method
from ..linalg._threads import threads_for
from .directions import mu_D, sample_directions

__all__ = ["STP", "MiSTP", "batch_values", "draw_batches", "run_stp", "stp_step", "three_points"]

Values = Callable[[torch.Tensor], torch.Tensor]


def three_points(values: Values, X: torch.Tensor, S: torch.Tensor, alpha: torch.Tensor,
                 fx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One comparison for R runs: X, S (R, d), alpha (R,); ``values`` maps points (R, k, d) to (R, k).
    ``fx`` (R,): the known values at X (only x -+ alpha s are evaluated), else X is evaluated in the
    same call. Returns the chosen points (R, d) and their values (R,)."""
    a = alpha.reshape(-1, 1)
    pts = [X - a * S, X + a * S] + ([X] if fx is None else [])
    P = torch.stack(pts, 1)
    F = values(P)
    if fx is not None:
        P = torch.cat([P, X[:, None]], 1)
        F = torch.cat([F, fx.reshape(-1, 1).to(F.dtype)], 1)
    j = F.argmin(1)
    r = torch.arange(X.shape[0], device=X.device)
    return P[r, j], F[r, j]


def stp_step(values: Values, X: torch.Tensor, S: torch.Tensor, gamma: float, fd: float | None = None,
             fx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One STP / MiSTP iteration of R runs with directions S: the constant rule (``fd`` None,
    alpha = gamma) or the directional rule (alpha = gamma |f(x + fd s) - f(x)| / fd). ``fx``: the
    known f(X) (STP), else it is evaluated with the other points of the round (MiSTP)."""
    if fd is None:
        alpha = torch.full((X.shape[0],), float(gamma), dtype=X.dtype, device=X.device)
        return three_points(values, X, S, alpha, fx)
    if fx is None:
        F = values(torch.stack([X, X + fd * S], 1))
        fx, ft = F[:, 0], F[:, 1]
    else:
        ft = values((X + fd * S)[:, None])[:, 0]
    alpha = gamma * (ft - fx).abs() / fd
    return three_points(values, X, S, alpha, fx)


def draw_batches(m: torch.Tensor, b: int, generator: torch.Generator) -> torch.Tensor:
    """(len(m), b) local sample indices, b distinct of each client's m_i (uniform without replacement).

    When b^2 <= min m_i, b indices are drawn with replacement and the rows that repeat an index are
    drawn again until none does (rejection: each row is then a uniform tuple of distinct indices; a row
    is accepted with probability >= e^-1/2), O(b) per row; otherwise uniform keys over all m_i samples
    and the b smallest, O(m_i) per row."""
    n = m.shape[0]
    mf = m.cpu().to(torch.float64)[:, None]
    if b * b <= int(m.min()):
        idx = (torch.rand(n, b, generator=generator, dtype=torch.float64) * mf).long()
        for _ in range(200):
            srt = idx.sort(1).values
            dup = (srt[:, 1:] == srt[:, :-1]).any(1)
            if not bool(dup.any()):
                return torch.minimum(idx, m.cpu()[:, None] - 1)
            idx[dup] = (torch.rand(int(dup.sum()), b, generator=generator, dtype=torch.float64) * mf[dup]).long()
    M = int(m.max())
    keys = torch.rand(n, M, generator=generator, dtype=torch.float64)
    keys[torch.arange(M)[None, :] >= m.cpu()[:, None]] = 2.0
    return keys.topk(b, 1, largest=False).indices  # the b smallest keys, in order (= argsort[:, :b])


def batch_values(problem, clients: torch.Tensor, idx: torch.Tensor | None) -> Values:
    """``values`` of R runs on a one-client problem (``clients``: R zeros): f (``idx`` None) or run r's
    minibatch f_B with samples idx[r] (counted oracle calls)."""
    if idx is None:  # all runs on the one client: one call over the R k points (no copies of its data)
        return lambda P: problem.point_losses(P.reshape(1, -1, P.shape[-1])).reshape(P.shape[:2])
    return lambda P: problem.sample_point_losses(P, idx.to(problem.device), clients)


def run_stp(problem, X0: torch.Tensor, iters: int, *, directions: str = "sphere", gamma: float,
            fd: float | None = None, batch_size: int | None = None, generator: torch.Generator,
            record: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """R independent STP (``batch_size`` None) or MiSTP runs from X0 (R, d) on a one-client problem,
    as one batched computation; ``record(k, X)`` is called before the first and after every iteration."""
    if problem.n != 1:
        raise ValueError("run_stp runs independent copies of a one-client problem; use the stp / mistp methods")
    X = X0.to(problem.device, problem.dtype).clone()
    R = X.shape[0]
    frac = 1.0 if batch_size is None else batch_size / float(problem.m.max())
    with threads_for(3 * R * frac * problem.gradient_flops / problem.n):
        return _run_stp(problem, X, iters, directions, gamma, fd, batch_size, generator, record)


def _run_stp(problem, X, iters, directions, gamma, fd, batch_size, generator, record):
    R, d = X.shape
    clients = torch.zeros(R, dtype=torch.long)
    fx = None if batch_size is not None else batch_values(problem, clients, None)(X[:, None])[:, 0]
    if record is not None:
        record(0, X)
    for k in range(iters):
        S = sample_directions(directions, R, d, generator, problem.dtype, problem.device)
        if batch_size is None:
            X, fx = stp_step(batch_values(problem, clients, None), X, S, gamma, fd, fx)
        else:
            idx = draw_batches(problem.m[clients], batch_size, generator)
            X, _ = stp_step(batch_values(problem, clients, idx), X, S, gamma, fd)
        if record is not None:
            record(k + 1, X)
    return X


class STPParams(MethodParams):
    #: law of the search directions: sphere | normal (N(0, I/d)) | coordinate
    directions: Literal["sphere", "normal", "coordinate"] = "sphere"
    #: directional (alpha_k = gamma |f(x + fd s) - f(x)| / fd, gamma = 1/L) | constant (alpha_k = gamma)
    step_rule: Literal["directional", "constant"] = "directional"
    #: finite-difference step t of the directional rule
    fd: PositiveFloat = 1e-6
    #: target accuracy eps of the theorem's constant stepsize alpha = mu_D eps / L (constant rule)
    eps: PositiveFloat | None = None
    #: std of independent Gaussian noise added to every function value (approximate values)
    value_noise: NonNegativeFloat = 0.0


class _ThreePoints(Method):
    """What STP and MiSTP share: directions, the stepsize rule, the clients' function values."""

    Params = STPParams
    state = ("x",)

    @property
    def mu_D(self) -> float:
        """The direction law's exact mu_D (:func:`.directions.mu_D`)."""
        return mu_D(self.params.directions, self.d)

    def theory_stepsize(self):
        if self.params.step_rule == "directional":
            return 1.0 / self.problem.L
        if self.params.eps is None:
            raise NotImplementedError(f"{self.name} with the constant step rule: set 'stepsize' or 'eps' (the "
                                      "theorem's alpha = mu_D eps / L)")
        return self.mu_D * self.params.eps / self.problem.L

    @property
    def _fd(self):
        return self.params.fd if self.params.step_rule == "directional" else None

    def _direction(self) -> torch.Tensor:
        s = sample_directions(self.params.directions, 1, self.d, self.ctx.generator("method"), self.problem.dtype,
                              self.problem.device)[0]
        return self.channel.broadcast(s)  # the clients learn the direction

    def _noisy(self, v: torch.Tensor) -> torch.Tensor:
        if self.params.value_noise == 0:
            return v
        z = torch.randn(v.shape, generator=self.ctx.generator("noise"), dtype=torch.float64)
        return v + self.params.value_noise * z.to(v.device, v.dtype)

    def _values(self, idx: torch.Tensor | None) -> Values:
        """values(P) for the model's one run: P (1, k, d) -> (1, k), the clients' mean f_i (or f_{B_i})."""
        def values(P):
            Pn = P.expand(self.n, *P.shape[1:])
            V = self.problem.point_losses(Pn) if idx is None else self.problem.sample_point_losses(Pn, idx)
            return self._noisy(self.channel.uplink(V)).reshape(1, -1)
        return values


@register_method
class STP(_ThreePoints):
    """Stochastic three points (Bergou, Gorbunov, Richtárik 2020, Algorithm 1) on f = (1/n) sum_i f_i
    from function values only: see the module docstring for the update, the stepsize rules and the
    counts. Default: the directional rule with gamma = 1/L (linear rate 1 - mu/(dL) for mu-strongly
    convex (PL) f with unit directions, derived in the module docstring; exact for (L/2)||x - x*||^2)."""

    name = "stp"
    stepsize_source = "derived"
    paper = "Bergou, Gorbunov, Richtárik (2020), Stochastic three points method for unconstrained smooth minimization, Alg. 1"
    state = ("x", "fx")

    def init(self, x0):
        self.x = self.channel.broadcast(x0)
        self.fx = self._values(None)(self.x.reshape(1, 1, -1))[:, 0]

    def step(self):
        s = self._direction()
        X, fx = stp_step(self._values(None), self.x.reshape(1, -1), s.reshape(1, -1), self.gamma, self._fd, self.fx)
        self.x, self.fx = X[0], fx


class MiSTPParams(STPParams):
    step_rule: Literal["directional", "constant"] = "constant"
    directions: Literal["sphere", "normal", "coordinate"] = "normal"
    #: samples of each client's minibatch B (uniform without replacement), the same at the three points
    batch_size: PositiveInt = 1


@register_method
class MiSTP(_ThreePoints):
    """Minibatch STP (Boucherouite, Malinovsky, Richtárik, Bergou 2024, Algorithm 1): each round every
    client draws a minibatch of ``batch_size`` of its samples and the three points are compared on the
    clients' mean minibatch loss (one client: the paper's f_B). Default directions N(0, I/d): the
    paper's default law is the standard normal (text and code use N(0, I)), which Assumption 3's
    normalization E||s||^2 = 1 turns into N(0, I/d) with a stepsize sqrt(d) times larger. Default rule
    constant; the stepsize is explicit (tuned in the paper) unless ``eps`` gives Theorem 1's
    alpha = mu_D eps / L (see the module docstring)."""

    name = "mistp"
    stepsize_source = "explicit"
    paper = ("Boucherouite, Malinovsky, Richtárik, Bergou (2024), Minibatch stochastic three points method, "
             "Alg. 1 (Thm. 1, Thm. 2)")
    Params = MiSTPParams

    def check(self):
        if self.params.batch_size > int(self.problem.m.min()):
            raise ValueError(f"mistp: batch_size {self.params.batch_size} exceeds the smallest client's "
                             f"{int(self.problem.m.min())} samples: lower 'batch_size'")

    def init(self, x0):
        self.x = self.channel.broadcast(x0)

    def step(self):
        s = self._direction()
        idx = draw_batches(self.problem.m, self.params.batch_size, self.ctx.generator("noise")).to(self.problem.device)
        X, _ = stp_step(self._values(idx), self.x.reshape(1, -1), s.reshape(1, -1), self.gamma, self._fd)
        self.x = X[0]
