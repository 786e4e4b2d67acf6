"""Personalization and meta-learning objectives, and clipped local training for (L0, L1)-smooth
problems (PAPERS.md L10, L11, L12).

* :class:`L2GD` (L10): loopless local GD on the mixture of global and local models
  F(x_1..x_n) = (1/n) sum_i f_i(x_i) + lam/(2n) sum_i ||x_i - xbar||^2, with bidirectional compression
  of the averaging step and probabilistic communication. Each client keeps its own model x_i; the
  ``x`` the runner evaluates is their mean (a diagnostic). :func:`personalized_solution` solves the
  personalized objective; :func:`personalized_loss` evaluates it.
* :class:`FOMAML` and :class:`FOMuML` (L11): first-order meta-learning seen as inexact gradient
  methods on the Moreau-envelope objective F(x) = (1/n) sum_i F_i(x),
  F_i(x) = min_z f_i(z) + ||z - x||^2 / (2 alpha). :func:`moreau_solution`, :func:`moreau_loss`.
* :class:`ClipLocalGD` (L12): local (clipped) gradient steps with a separate, clipped server step,
  partial participation and local random reshuffling; for (L0, L1)-smooth f such as
  :class:`~optsim.problems.l0l1.CoshProblem`, where unclipped local GD diverges.

Rounds without communication send nothing through the channel (L2GD's local steps), so the
trace's ``comm_rounds`` counts only the averaging steps while ``grad_evals`` counts local steps.
"""
from __future__ import annotations

import math
from functools import cached_property

import torch
from pydantic import Field, PositiveFloat, PositiveInt

from ...bounds import clip_rows
from ...problems import Problem
from ...sampling import Independent
from ..base import Method, MethodParams, register_method
from .rounds import LocalParams, LocalTraining

__all__ = ["L2GD", "FOMAML", "FOMuML", "ClipLocalGD", "personalized_solution", "personalized_loss",
           "moreau_prox", "moreau_solution", "moreau_loss", "clip_rows"]


# ---- L10: the mixture of global and local models -------------------------------------------------------
def personalized_loss(problem: Problem, X: torch.Tensor, lam: float) -> float:
    """F(X) = (1/n) sum_i f_i(x_i) + lam/(2n) sum_i ||x_i - xbar||^2 (not counted)."""
    X = X.to(problem.dtype)
    return float(problem._losses(X, None).mean() + 0.5 * lam * (X - X.mean(0)).pow(2).sum(1).mean())


def _personalized_grad(problem: Problem, X: torch.Tensor, lam: float) -> torch.Tensor:
    """n times the gradient of F: rows grad f_i(x_i) + lam (x_i - xbar) (not counted)."""
    return problem._grads(X, None) + lam * (X - X.mean(0))


def personalized_solution(problem: Problem, lam: float, tol: float = 1e-12, max_iter: int = 200000) -> torch.Tensor:
    """The minimizer X(lam) (n, d) of the personalized objective (float64, not counted).

    Quadratics in closed form: (A_i + lam I) x_i = b_i + lam xbar gives
    (I - lam mean_i (A_i + lam I)^{-1}) xbar = mean_i (A_i + lam I)^{-1} b_i. Otherwise gradient
    descent on F with stepsize n / (L_max + lam) (F is (L_max + lam)/n-smooth) to ||n grad F|| <= tol.
    """
    if problem.quadratic_data is not None:
        A, b = (t.to(torch.float64) for t in problem.quadratic_data)
        eye = torch.eye(problem.d, dtype=torch.float64, device=A.device)
        Minv = torch.linalg.inv(A + lam * eye)
        rhs = torch.einsum("nij,nj->i", Minv, b) / problem.n
        xbar = torch.linalg.solve(eye - lam * Minv.mean(0), rhs)
        return torch.einsum("nij,nj->ni", Minv, b + lam * xbar).to(problem.dtype)
    X = torch.zeros(problem.n, problem.d, dtype=problem.dtype, device=problem.device)
    step = 1.0 / (problem.L_max + lam)
    for _ in range(max_iter):
        G = _personalized_grad(problem, X, lam)
        if float(G.norm()) <= tol:
            break
        X = X - step * G
    return X


class L2GDParams(MethodParams):
    #: personalization weight lambda of the objective (lam -> 0: local models; lam -> inf: FL); an
    #: objective parameter (default 1.0): set it
    lam: PositiveFloat = 1.0
    #: probability of an averaging (communication) step; default lam c / (L + lam c), c below
    p: float | None = Field(None, gt=0, lt=1)


@register_method
class L2GD(Method):
    """L2GD with bidirectional compression (L10): Bergou, Burlachenko, Dutta, Richtárik (2022),
    "Personalized federated learning with communication compression" (arXiv 2209.05148), the
    compressed L2GD, on the objective of Hanzely & Richtárik (2020), "Federated learning of a mixture
    of global and local models" (arXiv 2002.05516), whose Algorithm 1 (L2GD) it compresses:

    each iteration, a shared coin: with probability 1 - p every client takes a local step
    x_i <- x_i - alpha / (n (1 - p)) grad f_i(x_i) (nothing is sent); with probability p the clients
    send C_i(x_i) (``compressor``, uplink), the server averages ybar = mean_i C_i(x_i), broadcasts
    C_M(ybar) (``down_compressor``) and every client moves towards it,
    x_i <- x_i - alpha lam / (n p) (x_i - C_M(ybar)). Identity compressors (the defaults): L2GD exactly.
    Every averaging step communicates (the estimator stays unbiased; L2GD without compression could
    skip a repeated averaging step, the compressed iterates cannot).

    Theory (SGD on F with this unbiased estimator; Hanzely & Richtárik Thm. 3 as we recall it for the
    uncompressed case): alpha = 1 / (2 calL), calL = (1/n) max(L / (1 - p), lam c / p), with
    c = (1 + omega_M)(1 + omega / n) (c = 1 without compression: their expected smoothness; the
    compression factor is our conservative extension), and p = lam c / (L + lam c) (their optimal
    p* = lam / (L + lam) for c = 1). Linear rate 1 - alpha mu / n to a neighbourhood of X(lam) (even
    without compression: grad f_i(x_i(lam)) != 0); compression enlarges the neighbourhood, keeps the
    rate when omega_M, omega / n are small, and cuts the bits per communication.
    """

    name = "l2gd"
    stepsize_source = "reading"
    paper = ("Bergou, Burlachenko, Dutta, Richtárik (2022), Personalized federated learning with communication "
             "compression (arXiv 2209.05148), compressed L2GD; Hanzely & Richtárik (2020), L2GD, Alg. 1")
    uses = ("compressor", "down_compressor")
    Params = L2GDParams
    state = ("x", "X", "last_comm")

    def check(self):
        for comp, where in ((self.compressor, "compressor"), (self.down_compressor, "down_compressor")):
            if comp is not None and comp.omega is None:
                raise ValueError(f"l2gd needs unbiased compressors; {where} is {comp.describe()}")

    @property
    def lam(self) -> float:
        return float(self.params.lam)

    @cached_property
    def compression_factor(self) -> float:
        """c = (1 + omega_M)(1 + omega / n)."""
        w = self.compressor.omega if self.compressor is not None else 0.0
        wm = self.down_compressor.omega if self.down_compressor is not None else 0.0
        return (1.0 + wm) * (1.0 + w / self.n)

    @cached_property
    def p(self) -> float:
        if self.params.p is not None:
            return float(self.params.p)
        lc = self.lam * self.compression_factor
        return lc / (self.problem.L_max + lc)

    def theory_stepsize(self):
        L, p = self.problem.L_max, self.p
        calL = max(L / (1 - p), self.lam * self.compression_factor / p) / self.n
        return 1.0 / (2.0 * calL)

    @property
    def rate(self) -> float:
        """Predicted contraction 1 - alpha mu / n per iteration (mu = min_i mu_i)."""
        mu = float(self.problem.local_mu.min())
        return 1.0 - self.gamma * mu / self.n

    def init(self, x0):
        self.X = x0.expand(self.n, self.d).clone()
        self.x = x0
        self.last_comm = False

    def step(self):
        a, p, n = self.gamma, self.p, self.n
        self.last_comm = self.coin(p)
        if self.last_comm:
            up = self.X if self.compressor is None else self.compress(self.X)
            ybar = self.channel.uplink(up)
            down = ybar if self.down_compressor is None else self.compress_down(ybar)
            yb = self.channel.broadcast(down)
            self.X = self.X - (a * self.lam / (n * p)) * (self.X - yb)
        else:
            self.X = self.X - (a / (n * (1 - p))) * self.problem.grads(self.X)
        self.x = self.X.mean(0)


# ---- L11: meta-learning with Moreau envelopes ------------------------------------------------------------
def moreau_prox(problem: Problem, X: torch.Tensor, alpha: float, clients=None, tol: float = 1e-15,
                max_iter: int = 10000) -> torch.Tensor:
    """z_i = prox_{alpha f_i}(x_i) by the fixed-point iteration z <- x - alpha grad f_i(z) (a contraction
    when alpha L_i < 1), not counted; rows of ``clients`` (default all)."""
    rows = None if clients is None else torch.as_tensor(clients, dtype=torch.long, device=problem.device)
    Z = X.clone()
    for _ in range(max_iter):
        Z_new = X - alpha * problem._grads(Z, rows)
        done = float((Z_new - Z).abs().max()) <= tol * (1 + float(Z_new.abs().max()))
        Z = Z_new
        if done:
            break
    return Z


def moreau_loss(problem: Problem, x: torch.Tensor, alpha: float) -> float:
    """F(x) = (1/n) sum_i [f_i(z_i) + ||z_i - x||^2 / (2 alpha)], z_i = prox_{alpha f_i}(x) (not counted)."""
    X = x.to(problem.dtype).reshape(1, -1).expand(problem.n, problem.d)
    Z = moreau_prox(problem, X, alpha)
    return float((problem._losses(Z, None) + (Z - X).pow(2).sum(1) / (2 * alpha)).mean())


def moreau_solution(problem: Problem, alpha: float, tol: float = 1e-13, max_iter: int = 100000) -> torch.Tensor:
    """The minimizer of the Moreau objective (not counted). Quadratics in closed form:
    grad F_i(x) = A_i (I + alpha A_i)^{-1} x - (I + alpha A_i)^{-1} b_i. Otherwise gradient descent with
    exact prox gradients grad F_i(x) = (x - prox_{alpha f_i}(x)) / alpha and stepsize (1 + alpha L)/L."""
    if problem.quadratic_data is not None:
        A, b = (t.to(torch.float64) for t in problem.quadratic_data)
        eye = torch.eye(problem.d, dtype=torch.float64, device=A.device)
        Minv = torch.linalg.inv(eye + alpha * A)
        M = torch.einsum("nij,njk->nik", A, Minv).mean(0)
        c = torch.einsum("nij,nj->ni", Minv, b).mean(0)
        return torch.linalg.solve(M, c).to(problem.dtype)
    x = torch.zeros(problem.d, dtype=problem.dtype, device=problem.device)
    L = problem.L_max
    step = (1 + alpha * L) / L
    for _ in range(max_iter):
        X = x.reshape(1, -1).expand(problem.n, problem.d)
        g = ((X - moreau_prox(problem, X, alpha)) / alpha).mean(0)
        if float(g.norm()) <= tol:
            break
        x = x - step * g
    return x


class MetaParams(MethodParams):
    #: alpha: the Moreau parameter of the objective = the inner (adaptation) stepsize; default
    #: 1 / (4 L_max) (the inner fixed-point map then contracts by alpha L <= 1/4); needs alpha L_max < 1
    alpha: PositiveFloat | None = None


class _Meta(Method):
    uses = ("sampler",)
    Params = MetaParams
    state = ("x", "_weights")
    #: inner fixed-point steps s (FO-MAML: 1)
    s: int = 1

    @cached_property
    def alpha(self) -> float:
        a = self.params.alpha if self.params.alpha is not None else 1.0 / (4.0 * self.problem.L_max)
        if a * self.problem.L_max >= 1:
            raise ValueError(f"{self.name}: alpha L_max = {a * self.problem.L_max:.3g} >= 1: the inner step "
                             f"z = x - alpha grad f_i(z) does not contract; choose alpha < {1 / self.problem.L_max:.3g}")
        return float(a)

    @cached_property
    def moreau_smoothness(self) -> torch.Tensor:
        """(n,) smoothness constants L_i / (1 + alpha L_i) of the envelopes F_i."""
        return self.problem.L_i / (1 + self.alpha * self.problem.L_i)

    def theory_stepsize(self):
        # SGD with tau-nice (or independent) client sampling on F: beta = 1 / (2 L_exp), L_exp <= max_i L_{F_i}
        return 1.0 / (2.0 * float(self.moreau_smoothness.max()))

    @property
    def bias_factor(self) -> float:
        """(alpha L_max)^(s+1): ||g_i(x) - grad F_i(x)|| <= bias_factor ||grad F_i(x)|| (module of the class)."""
        return (self.alpha * self.problem.L_max) ** (self.s + 1)

    def init(self, x0):
        self.x = x0
        if self.sampler is not None and not self.sampler.is_full:
            if isinstance(self.sampler, Independent):
                p = self.sampler.probs.to(self.problem.dtype).to(self.problem.device)
                self._weights = 1.0 / (self.n * p)
            else:
                self._weights = None

    def step(self):
        full = self.sampler is None or self.sampler.is_full
        S = None if full else self.sample_clients()
        m = self.n if S is None else S.shape[0]
        if m == 0:
            return
        xr = self.channel.broadcast(self.x, clients=S)
        X = xr.expand(m, self.d)
        Z = X
        for _ in range(self.s):  # z <- x - alpha grad f_i(z): the inexact prox
            Z = X - self.alpha * self.problem.grads(Z, S)
        G = self.problem.grads(Z, S)
        w = None if full or self._weights is None else self._weights[S.to(self._weights.device)]
        g = self.channel.uplink(G, clients=S, weights=w)
        self.x = self.x - self.gamma * g


@register_method
class FOMAML(_Meta):
    """FO-MAML as an inexact method on the Moreau-envelope objective (L11): Mishchenko, Hanzely,
    Richtárik (2022), "Convergence of first-order algorithms for meta-learning with Moreau envelopes"
    (arXiv 2301.06806). Each round the sampled clients receive x, adapt z_i = x - alpha grad f_i(x)
    (one local step), send g_i = grad f_i(z_i) (two local gradients), and the server steps
    x <- x - beta mean_S g_i. Since grad F_i(x) = grad f_i(prox_{alpha f_i}(x)), g_i is an inexact
    gradient of the Moreau objective: ||g_i - grad F_i(x)|| <= (alpha L)^2 ||grad F_i(x)||, so FO-MAML
    converges linearly to a neighbourhood of the Moreau objective's minimizer of radius
    O((alpha L)^2 sqrt(mean_i ||grad F_i(x*)||^2) / mu_F) (the paper's claim; constants are ours).

    Defaults (ours; the paper's theorem constants could not be read): alpha = 1/(4 L_max) (an
    objective parameter: set it), beta = 1/(2 max_i L_i/(1 + alpha L_i)) (SGD's 1/(2 L_exp) on the
    envelopes, whose smoothness is L_i/(1 + alpha L_i)).
    """

    name = "fo_maml"
    stepsize_source = "derived"
    paper = ("Mishchenko, Hanzely, Richtárik (2022), Convergence of first-order algorithms for meta-learning with "
             "Moreau envelopes (arXiv 2301.06806), FO-MAML")


class FOMuMLParams(MetaParams):
    #: inner fixed-point steps s (s = 1: FO-MAML)
    inner_steps: PositiveInt = 3


@register_method
class FOMuML(_Meta):
    """The generalization of FO-MAML (L11) in Mishchenko, Hanzely, Richtárik (2022), "Convergence of
    first-order algorithms for meta-learning with Moreau envelopes" (arXiv 2301.06806) (FO-MuML,
    multistep, as we recall its name): the prox z_i = prox_{alpha f_i}(x) is approximated by s steps
    of z <- x - alpha grad f_i(z) from z = x (gradient descent with stepsize alpha on
    f_i(z) + ||z - x||^2/(2 alpha)), and g_i = grad f_i(z_i); s + 1 local gradients per round. The error
    contracts by alpha L per step, ||g_i - grad F_i(x)|| <= (alpha L)^(s+1) ||grad F_i(x)|| (our
    derivation), so the neighbourhood shrinks geometrically in s; s = 1 is :class:`FOMAML`.
    Defaults as in :class:`FOMAML`, s = 3.
    """

    name = "fo_muml"
    stepsize_source = "derived"
    paper = ("Mishchenko, Hanzely, Richtárik (2022), Convergence of first-order algorithms for meta-learning with "
             "Moreau envelopes (arXiv 2301.06806), multistep generalization of FO-MAML")
    Params = FOMuMLParams

    @property
    def s(self) -> int:  # type: ignore[override]
        return int(self.params.inner_steps)


# ---- L12: clipped local training for (L0, L1)-smooth problems ------------------------------------------------
class ClipLocalParams(LocalParams):
    #: clipping level c: the round's local stepsize is gamma min(1, c / ||g||), g the participants'
    #: mean gradient at the round's model; default L0 / L1 of f; .inf: no clipping (local GD)
    clip: float | None = Field(None, gt=0)
    #: server stepsize eta_g (the "jump"): x <- x + eta_g mean_S (y_i - x)
    server_stepsize: PositiveFloat = 4.0


@register_method
class ClipLocalGD(LocalTraining):
    """Clipped local training with separate client and server stepsizes for (L0, L1)-smooth problems
    (L12), after Demidovich, Ostroukhov, Malinovsky, Horváth, Takáč, Richtárik, Gorbunov (2024),
    "Methods with local steps and random reshuffling for generally smooth non-convex federated
    optimization" (arXiv 2412.02781; its methods Clip-LocalGDJ, CLERR, Clipped RR-CLI).

    Our rendering (only the abstract could be read; the paper's exact updates and constants are not
    confirmed). Each round the sampled clients S (any sampler: nice, cyclic, ...) receive x and send
    grad f_i(x) (d floats up); the server forms g = mean_S grad f_i(x) and broadcasts the clipping
    factor h = min(1, c / ||g||) (one float down); every participant runs K local steps
    y <- y - gamma h g_i(y) (full local gradients, minibatches, or -- with ``local_epochs`` and
    ``batch_size`` -- random reshuffling of its samples) and sends y_i - x; the server jumps
    x <- x + eta_g mean_S (y_i - x) with its own stepsize eta_g (``server_stepsize``). One clipping
    factor for all clients (from the mean gradient, which vanishes at x*) keeps the fixed point
    unbiased: clipping each client's own gradient would stop at a biased point whenever some
    ||grad f_i(x*)|| > c. Without clipping (c = inf) this is local GD / FedAvg with a server stepsize.

    Defaults from (L0, L1)-smoothness (||hess f|| <= L0 + L1 ||grad f||; clipped GD's step
    min(1/(2 L0), 1/(2 L1 ||grad f||)), Zhang, He, Sra, Jadbabaie 2020): c = L0 / L1,
    gamma = 1/(2 eta_g K L0) and eta_g = 4, so a round moves x by about eta_g gamma K h ||g|| <=
    1/(2 L1) -- the radius within which the curvature stays controlled -- while the small client
    stepsize keeps local drift (and the heterogeneity neighbourhood of local GD) small. L0, L1 come
    from the problem (:class:`~optsim.problems.l0l1.CoshProblem`: the larger of L0 of f and of the
    f_i, or of the samples with minibatches); a problem without them is treated as L-smooth
    (L0 = L_max, L1 = 0: no clipping, gamma = 1/(2 eta_g K L_max)). K + 1 local gradients per round.
    """

    name = "clip_local_gd"
    stepsize_source = "derived"
    paper = ("Demidovich, Ostroukhov, Malinovsky, Horváth, Takáč, Richtárik, Gorbunov (2024), Methods with local "
             "steps and random reshuffling for generally smooth non-convex federated optimization "
             "(arXiv 2412.02781) -- our rendering")
    Params = ClipLocalParams

    @cached_property
    def L0_L1(self) -> tuple[float, float]:
        """(L0, L1) used by the defaults."""
        c = self.problem.L0_L1
        if c is not None:
            L0 = max(float(c["L0"]), float(c["L0_i"].max()))
            if self.params.batch_size is not None:
                L0 = max(L0, float(c["L0_samples"]))
            return L0, float(c["L1"])
        return float(self.step_smoothness), 0.0

    @property
    def clip(self) -> float:
        if self.params.clip is not None:
            return float(self.params.clip)
        L0, L1 = self.L0_L1
        return math.inf if L1 == 0 else L0 / L1

    def theory_stepsize(self):
        return 1.0 / (2.0 * self.params.server_stepsize * self.K * self.L0_L1[0])

    def step(self):
        S, x, m = self._start()
        X = x.expand(m, self.d)
        g = self.channel.uplink(self.problem.grads(X, S), clients=S, weights=self.weights(S))
        h = min(1.0, self.clip / max(float(g.norm()), 1e-300))
        h = float(self.channel.broadcast(self.channel.dense(x.new_tensor([[h]])), clients=S)[0])
        Y = self._run_local(X.clone(), S, self.gamma * h)
        delta = self.channel.uplink(Y - x, clients=S, weights=self.weights(S))
        self.x = self.x + self.params.server_stepsize * delta
