"""Accelerated local training: primal--dual methods with inexact local prox (PAPERS.md L1, L3, L6)
and Scaffnew with compression and partial participation (L4, L5).

All methods here communicate rarely or randomly; the trace tells communication rounds
(``comm_rounds``: rounds in which bits moved) from local work (``grad_evals``: local gradients per
client). A round or iteration without communication sends nothing through the channel.

**Primal--dual family** (:class:`APDAInexact` (L1), :class:`FiveGCS` (L3), :class:`FiveGCSCC` (L6)).
With every f_i mu-strongly convex, write f_i = mu/2 ||x||^2 + F_i (F_i convex, (L_i - mu)-smooth), so

    f(x) = (1/n) sum_i f_i(x) = max_u  mu/2 ||x||^2 + (1/n) sum_i (<u_i, x> - F_i*(u_i)),

a saddle-point problem with a trivial primal prox (the server's) and a dual prox
prox_{tau F_i*}(w) = grad F_i(y), y = argmin_y F_i(y) + tau/2 ||y - w/tau||^2, computed *inexactly* by
each client with K local (fast) gradient steps -- the local training. One round:

    server:  xh = (x - gamma v) / (1 + gamma mu),  v = (1/n) sum_i u_i;  send xh to the participants S
    client i in S:  y_i ~= argmin_y F_i(y) + tau_i/2 ||y - (xh + u_i/tau_i)||^2   (K steps from y = xh)
                    Delta_i = grad F_i(y_i) - u_i  (compressed: Q(Delta_i));  u_i += theta Q(Delta_i)
    server:  v += (theta/n) sum_S Q(Delta_i),   x = xh - gamma sum_S Q(Delta_i) / (n p_i)

(theta = 1/(1 + omega); p_i the inclusion probabilities). With all clients and no compression this
is the Chambolle--Pock method with dual extrapolation (xh^{t+1} = (xh^t - gamma (2 v^{t+1} - v^t))/(1 +
gamma mu)) and an inexact dual prox: the method of Sadiev, Kovalev, Richtárik (2022) as we render it.

Parameters (our derivation, see :func:`primal_dual_parameters`): the dual stepsizes are coupled to
the primal one by gamma tau_i = a_i, a_i = 1/2 min(1, (n - 1) q_i / (1 - q_i)), q_i = p_i theta (the
participation-and-compression probability of a dual update), and gamma maximizes the contraction
rate min(gamma mu / (1 + gamma mu), min_i q_i tau_i / (L_i - mu + tau_i)). For full participation this
gives tau ~ sqrt(mu L / 2), O(sqrt(kappa) log 1/eps) rounds and local subproblems of condition number
~ sqrt(2 kappa): K ~ kappa^(1/4) steps with fast GD (kappa^(1/2) with GD; :func:`inner_steps`). For C of
n clients per round: O((n/C + sqrt(kappa n / C)) log 1/eps) rounds, the complexity 5GCS reports.
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import Literal

import torch
from pydantic import PositiveFloat, PositiveInt

from ...sampling import Independent
from ..base import Method, MethodParams, register_method
from .rounds import mu_min_of

__all__ = ["primal_dual_parameters", "optimal_probabilities", "inner_steps", "PrimalDualParams", "APDAInexact", "FiveGCS", "FiveGCSCCParams", "FiveGCSCC"]


# ---- shared helpers ---------------------------------------------------------------------------------
def primal_dual_parameters(mu: float, LF: torch.Tensor, q: torch.Tensor, n: int,
                           tau: float | None = None) -> tuple[float, torch.Tensor, float]:
    """(gamma, tau_i (n,), rate) of the primal--dual family (module docstring).

    ``LF``: (n,) smoothness constants L_i - mu of the F_i; ``q``: (n,) probabilities that client i's
    dual variable is updated in a round (participation times 1/(1 + omega)). The coupling
    gamma tau_i = a_i, a_i = 1/2 min(1, (n - 1) q_i / (1 - q_i)) keeps the primal step's sampling and
    compression variance below half the dual descent; gamma then balances the primal rate
    gamma mu / (1 + gamma mu) against the slowest dual rate q_i tau_i / (L_i - mu + tau_i) (bisection).
    With ``tau`` given, tau_i = tau and gamma = min_i a_i / tau.
    """
    q = q.to(torch.float64).clamp(1e-12, 1.0)
    LF = LF.to(torch.float64).clamp_min(0.0)
    a = _coupling(q, n)

    def dual_rate(g):
        return float((q * a / (g * LF + a)).min())

    def primal_rate(g):
        return g * mu / (1 + g * mu)

    if tau is not None:
        g = float(a.min()) / tau
        return g, torch.full_like(q, float(tau)), min(primal_rate(g), float((q * tau / (LF + tau)).min()))
    lo, hi = 1e-16, 1e16
    for _ in range(200):  # geometric bisection on primal_rate(g) = dual_rate(g)
        mid = math.sqrt(lo * hi)
        if primal_rate(mid) < dual_rate(mid):
            lo = mid
        else:
            hi = mid
        if hi / lo < 1 + 1e-12:
            break
    g = math.sqrt(lo * hi)
    return g, a / g, min(primal_rate(g), dual_rate(g))


def _coupling(q: torch.Tensor, n: int) -> torch.Tensor:
    """a_i = 1/2 min(1, (n - 1) q_i / (1 - q_i)) (gamma tau_i = a_i), elementwise."""
    ratio = torch.where(q < 1, (n - 1) * q / (1 - q).clamp_min(1e-300), torch.full_like(q, math.inf))
    return 0.5 * ratio.clamp(max=1.0)


def optimal_probabilities(mu: float, LF: torch.Tensor, n: int, expected: float,
                          theta: float = 1.0) -> tuple[torch.Tensor, float]:
    """Importance sampling for the primal--dual family: independent inclusion probabilities p_i
    (sum_i p_i = ``expected``, p_i <= 1) maximizing the predicted rate
    min(gamma mu / (1 + gamma mu), min_i q_i a_i / (gamma (L_i - mu) + a_i)), q_i = theta p_i
    (:func:`primal_dual_parameters`); returns (p, rate).

    For a given gamma every client needs the smallest q_i reaching a common dual rate r, and r is
    raised until the q_i use up the budget: clients with larger L_i get larger p_i (about
    proportional to 1 + 2 gamma (L_i - mu) while p_i >= 1/n, faster below, where the sampling
    variance limits the dual stepsize). Nested bisections (our derivation, not the paper's formula).
    """
    LF = LF.to(torch.float64).clamp_min(0.0)
    budget = float(expected) * theta
    top = torch.full_like(LF, theta)

    def h(q, g):
        a = _coupling(q, n)
        return q * a / (g * LF + a)

    def need(r, g):  # smallest q_i with h(q_i) >= r (inf where even q_i = theta does not reach it)
        gl = g * LF
        qa = r * (2 * gl + 1)  # a_i = 1/2 (q_i >= 1/n)
        c = n - 1  # q_i < 1/n: a_i = c q_i / (2 (1 - q_i)), h = r is the quadratic c q^2 + (2 r gl - c r) q - 2 r gl = 0
        bq = 2 * r * gl - c * r
        qb = (-bq + torch.sqrt(bq * bq + 8 * c * r * gl)) / (2 * c) if c > 0 else qa
        q = torch.where(r <= (1.0 / n) / (2 * gl + 1), qb, qa)
        return torch.where(q <= top * (1 + 1e-12), q, torch.full_like(q, math.inf))

    def r_star(g):
        lo, hi = 0.0, float(h(top, g).min())
        if float(need(hi, g).sum()) <= budget:
            return hi
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if float(need(mid, g).sum()) <= budget:
                lo = mid
            else:
                hi = mid
        return lo

    lo, hi = 1e-16, 1e16
    for _ in range(120):
        mid = math.sqrt(lo * hi)
        if mid * mu / (1 + mid * mu) < r_star(mid):
            lo = mid
        else:
            hi = mid
        if hi / lo < 1 + 1e-9:
            break
    g = math.sqrt(lo * hi)
    r = r_star(g)
    q = need(r, g)
    spare = budget - float(q.sum())  # spread what is left (rounding) without exceeding theta
    if spare > 0:
        q = (q + spare * (top - q) / float((top - q).sum().clamp_min(1e-300))).clamp(max=theta)
    return (q / theta).clamp(1e-12, 1.0), min(g * mu / (1 + g * mu), r)


def inner_steps(kappa: float, solver: str) -> int:
    """Default local step count K for a prox subproblem of condition number ``kappa``:
    ceil(2 sqrt(kappa)) fast-GD steps or ceil(kappa) GD steps (warm-started at xh).

    Our choice, not the paper's theorem: the solvers' natural scales sqrt(kappa) and kappa with a
    margin (the smallest K that kept the rate in our quadratic experiments was about 1.5 sqrt(kappa)
    for fast GD and below kappa for GD, kappa <= 200). Since kappa ~ sqrt(2 kappa_f) at the default
    parameters, fast GD takes O(kappa_f^(1/4)) local steps per round, GD O(kappa_f^(1/2))."""
    kappa = max(float(kappa), 1.0)
    return max(1, math.ceil(2.0 * math.sqrt(kappa) if solver == "agd" else kappa))


# ---- the primal--dual family (L1, L3, L6) --------------------------------------------------------------
class PrimalDualParams(MethodParams):
    #: dual stepsize tau (all clients); default: coupled to the primal stepsize (module docstring)
    tau: PositiveFloat | None = None
    #: local steps K of the inner solver per round (deterministic); default :func:`inner_steps`
    local_steps: PositiveInt | None = None
    #: inner solver of the local prox subproblem: "agd" (fast GD, Nesterov's constant momentum) or "gd"
    solver: Literal["agd", "gd"] = "agd"
    #: the strong convexity mu split off each f_i; default min_i mu_i (must not exceed it)
    mu: PositiveFloat | None = None


class _PrimalDual(Method):
    """Shared machinery of APDA-Inexact, 5GCS and 5GCS-CC (module docstring)."""

    Params = PrimalDualParams
    state = ("x", "U", "v", "_beta", "_eta", "_tau", "_w")

    # ---- constants ----
    @cached_property
    def mu(self) -> float:
        mu_min = mu_min_of(self.problem, self.name, "the method needs mu > 0")
        if self.params.mu is not None:
            if self.params.mu > mu_min * (1 + 1e-12):
                raise ValueError(f"{self.name}: mu = {self.params.mu} exceeds the smallest local strong "
                                 f"convexity {mu_min:.4g}; F_i = f_i - mu/2||x||^2 would not be convex")
            return float(self.params.mu)
        return mu_min

    @cached_property
    def LF(self) -> torch.Tensor:
        """(n,) smoothness constants L_i - mu of the F_i (float64, CPU)."""
        return (self.problem.L_i - self.mu).clamp_min(0.0)

    @cached_property
    def probs(self) -> torch.Tensor:
        """(n,) inclusion probabilities p_i of the client sampling (1: every round)."""
        if self.sampler is None or self.sampler.is_full:
            return torch.ones(self.n, dtype=torch.float64)
        return self.sampler.probs.to(torch.float64)

    @property
    def theta(self) -> float:
        """Relaxation 1/(1 + omega) of the compressed dual update (1 without compressor)."""
        return 1.0 if self.compressor is None else 1.0 / (1.0 + self.omega)

    @cached_property
    def _params(self) -> tuple[float, torch.Tensor, float]:
        return primal_dual_parameters(self.mu, self.LF, self.probs * self.theta, self.n, self.params.tau)

    def theory_stepsize(self):
        return self._params[0]

    @cached_property
    def taus(self) -> torch.Tensor:
        """(n,) dual stepsizes tau_i (float64, CPU): a_i / gamma for the gamma in use, or ``tau``."""
        gamma_t, tau_t, _ = self._params
        if self.params.tau is not None:
            return tau_t
        return tau_t * gamma_t / self.gamma  # keeps gamma tau_i = a_i when the stepsize is scaled or set

    @property
    def rate(self) -> float:
        """The contraction rate per round predicted by the parameter choice (:func:`primal_dual_parameters`)."""
        return self._params[2]

    @cached_property
    def kappa_sub(self) -> torch.Tensor:
        """(n,) condition numbers (L_i - mu + tau_i) / tau_i of the local subproblems."""
        return (self.LF + self.taus) / self.taus

    @cached_property
    def K(self) -> int:
        if self.params.local_steps is not None:
            return int(self.params.local_steps)
        return inner_steps(float(self.kappa_sub.max()), self.params.solver)

    # ---- state ----
    def init(self, x0):
        pr = self.problem
        self.x = x0
        self.U = self.zeros_clients()          # dual variables u_i (client side)
        self.v = torch.zeros_like(x0)          # (1/n) sum_i u_i (server side)
        dev, dt = pr.device, pr.dtype
        self._tau = self.taus.to(dev, dt)[:, None]
        self._eta = (1.0 / (self.LF + self.taus)).to(dev, dt)[:, None]  # inner stepsizes 1/(L_i - mu + tau_i)
        sk = self.kappa_sub.sqrt()
        self._beta = ((sk - 1) / (sk + 1)).to(dev, dt)[:, None]       # Nesterov momentum
        self._w = (1.0 / (self.n * self.probs)).to(dev, dt)  # primal weights 1/(n p_i): E sum_S w_i Q_i = mean Delta

    def participants(self):
        if self.sampler is None or self.sampler.is_full:
            return None
        return self.sample_clients()

    def _grad_F(self, Y, S):
        return self.problem.grads(Y, S) - self.mu * Y

    def _solve_local(self, Y0: torch.Tensor, Z: torch.Tensor, S, rows) -> torch.Tensor:
        """K steps of GD / fast GD on psi_i(y) = F_i(y) + tau_i/2 ||y - z_i||^2 from Y0, batched."""
        tau, eta = self._tau[rows], self._eta[rows]
        if self.params.solver == "gd":
            Y = Y0.clone()
            for _ in range(self.K):
                Y = Y - eta * (self._grad_F(Y, S) + tau * (Y - Z))
            return Y
        beta = self._beta[rows]
        Y, W = Y0.clone(), Y0.clone()
        for _ in range(self.K):
            Y_new = W - eta * (self._grad_F(W, S) + tau * (W - Z))
            W = Y_new + beta * (Y_new - Y)
            Y = Y_new
        return Y

    def step(self):
        g = self.gamma
        xh = (self.x - g * self.v) / (1 + g * self.mu)
        S = self.participants()
        if S is not None and S.numel() == 0:  # nobody sampled: the primal step alone (nothing sent)
            self.x = xh
            return
        rows = slice(None) if S is None else S.to(self.U.device)
        m = self.n if S is None else S.shape[0]
        xr = self.channel.broadcast(xh, clients=S)
        Xr = xr.expand(m, self.d)
        U = self.U[rows]
        Z = Xr + U / self._tau[rows]
        Y = self._solve_local(Xr, Z, S, rows)
        D = self._grad_F(Y, S) - U
        msg = D if self.compressor is None else self.compress(D, S)
        Q = self.channel.gather(msg, clients=S)  # the server needs sum Q and sum Q / (n p_i)
        th = self.theta
        self.U[rows] = U + th * Q
        self.v = self.v + (th / self.n) * Q.sum(0)
        self.x = xh - g * (self._w[rows][:, None] * Q).sum(0)


@register_method
class APDAInexact(_PrimalDual):
    """APDA with inexact prox (L1): Sadiev, Kovalev, Richtárik (2022), "Communication acceleration
    of local gradient methods via an accelerated primal-dual algorithm with an inexact prox"
    (arXiv 2207.03957), the federated application of its Chambolle--Pock-based method: every round
    all clients receive xh (d floats down), run a *deterministic* number K of local GD / fast-GD steps
    on their prox subproblem, send Delta_i = grad F_i(y_i) - u_i (d floats up), and the server updates
    v and x (module docstring; u_i is set to grad F_i at the inexact solution, the dual step that keeps
    linear convergence). K + 1 local gradients per round.

    Not confirmed against the paper's text (only its abstract could be read): the update is our
    rendering as the Chambolle--Pock method with dual extrapolation on the split
    f_i = mu/2||x||^2 + F_i; the stepsizes are our derivation (:func:`primal_dual_parameters`, full
    participation: gamma tau = 1/2, gamma balancing gamma mu ~ tau / (L - mu + tau), i.e.
    tau ~ sqrt(mu L / 2)), and the default K (:func:`inner_steps`) is our choice, not the paper's
    theorem. With fast GD the local steps per round grow like kappa^(1/4) (the paper reports O(kappa^(1/3))
    to O(kappa^(1/4)) against ProxSkip's kappa^(1/2)); with GD our default grows like kappa^(1/2) (in our
    runs GD kept the rate with about kappa_sub^(2/3) ~ kappa^(1/3) steps, but we found no margin-safe rule).
    """

    name = "apda_inexact"
    stepsize_source = "derived"
    paper = ("Sadiev, Kovalev, Richtárik (2022), Communication acceleration of local gradient methods via an "
             "accelerated primal-dual algorithm with an inexact prox (arXiv 2207.03957) -- our rendering")


@register_method
class FiveGCS(_PrimalDual):
    """5GCS (L3): Grudzień, Malinovsky, Richtárik (2023), "Can 5th generation local training methods
    support client sampling? Yes!" (arXiv 2212.14370): the primal--dual method of the module docstring
    with client sampling -- only the sampled clients S (e.g. ``sampler: {name: nice, tau: C}``) solve
    their prox subproblem (K local steps) and update their dual variable; the server corrects the
    primal step by the unbiased estimate sum_S Delta_i / (n p_i) (= mean over S for C-nice sampling).
    Bits per round: d floats down and up per participant. Full participation: :class:`APDAInexact`.

    Not confirmed against the paper's text (only its abstract could be read): update as we render it,
    parameters our derivation (:func:`primal_dual_parameters`): gamma tau = 1/2, the dual Lyapunov
    weight n/C larger than with full participation, rate ~ min(gamma mu, (C/n) tau / (L - mu + tau)),
    i.e. O((n/C + sqrt(kappa n / C)) log 1/eps) rounds, the communication complexity the paper states.
    """

    name = "5gcs"
    stepsize_source = "derived"
    paper = ("Grudzień, Malinovsky, Richtárik (2023), Can 5th generation local training methods support client "
             "sampling? Yes! (arXiv 2212.14370) -- our rendering")
    uses = ("sampler",)


class FiveGCSCCParams(PrimalDualParams):
    #: "sampler": the sampler's probabilities; "optimal": importance sampling -- independent sampling
    #: with the same expected number of clients and the probabilities of :func:`optimal_probabilities`
    sampling: Literal["sampler", "optimal"] = "sampler"


@register_method
class FiveGCSCC(_PrimalDual):
    """5GCS with compression and arbitrary client sampling (L6): Grudzień, Malinovsky, Richtárik
    (2023), "Improving accelerated federated learning with compression and importance sampling"
    (arXiv 2306.03240). Local training (K local steps on the prox subproblem), partial participation
    with any sampler (independent / importance sampling with probabilities p_i, or nice) and an
    unbiased uplink compressor Q (variance omega): the participants send Q(Delta_i), update
    u_i += Q(Delta_i) / (1 + omega), and the server steps x = xh - gamma sum_S Q(Delta_i) / (n p_i).

    Parameters (our derivation, :func:`primal_dual_parameters` with q_i = p_i / (1 + omega)): an
    unbiased compressor acts on the dual Lyapunov term exactly like thinning the participation by
    1/(1 + omega), so the per-client dual stepsizes and the primal stepsize follow from the
    sampling probabilities. Importance sampling (``sampling: optimal``): with L_i-heterogeneous
    clients the slowest dual rate q_i tau_i / (L_i - mu + tau_i) limits uniform sampling; the
    probabilities of :func:`optimal_probabilities` (larger for larger L_i, same expected number of
    clients) equalize the clients' rates. ``sampler: {name: importance, tau: C}`` (p_i proportional
    to L_i) also works but over-samples the smooth clients' opposite end less well: clients with tiny
    p_i get tiny dual steps (the sampling variance bound). Not confirmed against the paper's text
    (only its abstract could be read).
    """

    name = "5gcs_cc"
    stepsize_source = "derived"
    paper = ("Grudzień, Malinovsky, Richtárik (2023), Improving accelerated federated learning with compression and "
             "importance sampling (arXiv 2306.03240) -- our rendering")
    uses = ("sampler", "compressor")
    Params = FiveGCSCCParams

    def check(self):
        if self.compressor.omega is None:
            raise ValueError(f"5gcs_cc needs an unbiased compressor, got {self.compressor.describe()}")
        if self.params.sampling == "optimal":
            expected = float(self.n if self.sampler is None else self.sampler.probs.sum())
            p, _ = optimal_probabilities(self.mu, self.LF, self.n, expected, self.theta)
            self.sampler = Independent(self.n, p)
            self.sampler.name = "optimal"
