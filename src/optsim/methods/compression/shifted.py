"""Shifted compression: EF-BV (one method for biased and unbiased compressors) and DCGD-SHIFT
(compressed gradient descent with fixed, DIANA-type, rand-DIANA-type or EF21-type shifts and
shifted model compression), plus the (eta, omega) compressor class of EF-BV.

Both methods send, from client i, a compression of the *difference* between its gradient and a
shift h_i that the server also knows; when the shifts learn grad f_i(x*), the compressed vectors
vanish at the solution and so does the compression noise, which removes the neighbourhood of
plain compressed gradient descent (DCGD).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from ...compress import Compressor, make_compressor
from ...mechanisms import Shifts
from ..base import Method, MethodParams, register_method
from ..baselines.compressed import DIANA

__all__ = ["eta_omega", "omega_average", "efbv_parameters", "efbv_stepsize", "EFBV", "DCGDShift",
           "unified_shift_stepsize", "ef21_shift_stepsize"]

#: compressors whose output is a deterministic function of the input (no variance)
_DETERMINISTIC = ("identity", "top_k", "scaled_sign")


def _moments(c: Compressor) -> tuple[float, float, float]:
    """(eta, omega, m2): the bias and variance constants of ``c`` and a bound m2 on
    E||C(x)||^2 / ||x||^2 (used when ``c`` is composed with another operator)."""
    name = c.name
    if name == "identity":
        return 0.0, 0.0, 1.0
    if name == "rand_k" and not c.scaled:
        q = c.k / c.d  # E C(x) = q x, E||C(x)||^2 = q ||x||^2
        return 1.0 - q, q * (1.0 - q), q
    if name == "top_k":
        return math.sqrt(1.0 - c.k / c.d), 0.0, 1.0
    if name == "bernoulli":
        ei, wi, si = _moments(c.inner)
        p, s = c.p, (1.0 / c.p if c.scaled else 1.0)
        # E C = s p E I;  Var C = s^2 (p Var I + p (1 - p) ||E I||^2),  ||E I|| <= (1 + eta_I) ||x||
        eta = s * p * ei + abs(s * p - 1.0)
        mean_sq = min(si, (1.0 + ei) ** 2)
        omega = s * s * (p * wi + p * (1.0 - p) * mean_sq)
        return eta, omega, s * s * p * si
    if name == "compose":
        outer, inner = c.outer, c.inner
        if not outer.unbiased:
            raise ValueError(f"eta_omega: {c.describe()} has a biased quantizer outside the (eta, omega) class "
                             "we can bound; use an unbiased quantizer (natural, qsgd) as 'outer'")
        ei, wi, si = _moments(inner)
        wo = outer.omega_for(inner.support)
        # E[O(I)] = E[I]; Var = E||O(I) - I||^2 + Var I <= omega_O E||I||^2 + omega_I ||x||^2
        return ei, wo * si + wi, (1.0 + wo) * si
    if c.unbiased and c.omega is not None:
        return 0.0, float(c.omega), 1.0 + float(c.omega)
    if c.alpha is not None:  # E||C(x) - x||^2 <= (1 - alpha)||x||^2 bounds both the bias and the variance
        a = float(c.alpha)
        eta = math.sqrt(max(0.0, 1.0 - a))
        omega = 0.0 if name in _DETERMINISTIC else 1.0 - a
        return eta, omega, (1.0 + eta) ** 2 + omega
    raise ValueError(f"{c.describe()} is not in the (eta, omega) class of EF-BV (neither unbiased with "
                     "omega nor contractive with alpha)")


def eta_omega(c: Compressor) -> tuple[float, float]:
    """The constants (eta, omega) of a compressor in the class C(eta, omega) of EF-BV:

        ||E[C(x)] - x|| <= eta ||x||,     E||C(x) - E[C(x)]||^2 <= omega ||x||^2.

    Condat, Yi, Richtárik (2022), "EF-BV: a unified theory of error feedback and variance reduction
    mechanisms for biased and unbiased compression in distributed optimization" (arXiv 2205.04180),
    Sec. 2. Values: unbiased compressors (rand_k, perm_k, natural, qsgd, scaled Bernoulli of an
    unbiased one, ...) -> (0, omega); top_k -> (sqrt(1 - k/d), 0); scaled_sign (deterministic,
    contractive with alpha) -> (sqrt(1 - alpha), 0); unscaled rand_k -> (1 - k/d, (k/d)(1 - k/d));
    unscaled Bernoulli(p) of an inner operator I -> (1 - p + p eta_I, p omega_I + p (1 - p) m_I)
    with m_I a bound on ||E I(x)||^2 / ||x||^2 (identity inner: exactly (1 - p, p (1 - p)));
    compose(unbiased quantizer Q, sparsifier S) -> (eta_S, omega_Q(k) E||S(x)||^2/||x||^2 + omega_S)
    (top_k inside: (sqrt(1 - k/d), omega_Q(k))); any other contractive compressor ->
    (sqrt(1 - alpha), 1 - alpha). ``sign`` is in no such class and is refused.
    """
    eta, omega, _ = _moments(c)
    return float(eta), float(omega)


def omega_average(c: Compressor, n: int) -> float:
    """omega_av of n copies of ``c``, one per client: E||(1/n) sum_i (C_i(x_i) - E C_i(x_i))||^2 <=
    omega_av (1/n) sum_i ||x_i||^2. Independent compressors give omega / n; Perm-K, whose clients
    share one permutation, satisfies the AB inequality with A = B = 1 (Szlendak, Tyurin, Richtárik
    2022, "Permutation compressors ...", Thm. 1), so omega_av = 1 (the negative term dropped)."""
    if c.name == "perm_k":
        return 1.0
    return eta_omega(c)[1] / n


def efbv_parameters(eta: float, omega: float, omega_av: float, lam: float | None = None,
                    nu: float | None = None) -> dict[str, float]:
    """EF-BV's scaling parameters and the constants of its theorem.

    lambda* = min((1 - eta) / ((1 - eta)^2 + omega), 1) and nu* = min((1 - eta) / ((1 - eta)^2 + omega_av), 1)
    (the minimizers of r and r_av); r = (1 - lambda + lambda eta)^2 + lambda^2 omega,
    r_av = (1 - nu + nu eta)^2 + nu^2 omega_av, s* = sqrt((1 + r) / (2 r)) - 1,
    theta* = s* (1 + s*) r / r_av (EF-BV, Sec. 3 and Thm. 1).
    """
    if lam is None:
        lam = min((1 - eta) / ((1 - eta) ** 2 + omega), 1.0) if eta < 1 else 1.0
    if nu is None:
        nu = min((1 - eta) / ((1 - eta) ** 2 + omega_av), 1.0) if eta < 1 else 1.0
    r = (1 - lam + lam * eta) ** 2 + lam * lam * omega
    r_av = (1 - nu + nu * eta) ** 2 + nu * nu * omega_av
    s = math.sqrt((1 + r) / (2 * r)) - 1 if r > 0 else math.inf
    theta = s * (1 + s) * r / r_av if r_av > 0 and r > 0 else math.inf
    return {"lam": float(lam), "nu": float(nu), "r": r, "r_av": r_av, "s": s, "theta": theta}


def efbv_stepsize(L: float, L_tilde: float, r: float, r_av: float) -> float:
    """gamma = 1 / (L + L_tilde sqrt(r_av / r) / s*) (EF-BV, Thm. 1; the same bound gives the
    linear rate max(1 - gamma mu, (1 + r)/2) under the Kurdyka-Lojasiewicz / PL condition).
    Needs r < 1. As r -> 0, sqrt(r_av / r) / s* -> sqrt(2 r_av)."""
    if not r < 1:
        raise ValueError(f"EF-BV needs r = (1 - lambda + lambda eta)^2 + lambda^2 omega < 1, got r = {r:.4g}: "
                         "choose a smaller 'lam' or a less aggressive compressor")
    if r_av <= 0:
        return 1.0 / L
    if r == 0:
        term = math.sqrt(2 * r_av)
    else:
        s = math.sqrt((1 + r) / (2 * r)) - 1
        term = math.sqrt(r_av / r) / s
    return 1.0 / (L + L_tilde * term)


class EFBVParams(MethodParams):
    #: lambda, the shift (control variate) stepsize; default lambda* of the theorem
    lam: float | None = Field(None, gt=0, le=1)
    #: nu, the scaling of the compressed difference in the gradient estimate; default nu*
    nu: float | None = Field(None, gt=0, le=1)
    #: initial shifts: "zero" (h_i^0 = 0) or "full" (h_i^0 = grad f_i(x^0), sent uncompressed)
    init: Literal["zero", "full"] = "zero"


@register_method
class EFBV(Method):
    """EF-BV: Condat, Yi, Richtárik (2022), "EF-BV: a unified theory of error feedback and variance
    reduction mechanisms for biased and unbiased compression in distributed optimization"
    (arXiv 2205.04180), Algorithm 1 (without the proximal term). Each round, with shifts h_i
    (control variates) known to client i and their mean h known to the server:

        d_i = C_i(grad f_i(x) - h_i),   d = (1/n) sum_i d_i,   g = h + nu d,
        h_i += lambda d_i,   h += lambda d,   x+ = x - gamma g.

    The compressors can be biased and random, in the class C(eta, omega) (:func:`eta_omega`).
    Special cases: nu = 1, lambda = 1/(omega + 1) with unbiased C is DIANA (:class:`DIANA`);
    nu = lambda = 1 with contractive C is EF21 (:class:`EF21` with ``init_full: false``), iterate
    for iterate with the same stepsize and compressor stream.

    Defaults, from the theorem: lambda* = min((1-eta)/((1-eta)^2 + omega), 1),
    nu* = min((1-eta)/((1-eta)^2 + omega_av), 1) with omega_av = omega / n for independent
    compressors (:func:`omega_average`), and gamma = 1 / (L + L_tilde sqrt(r_av/r) / s*)
    (:func:`efbv_stepsize`), which gives E||grad f||^2 = O(1/(gamma T)) and, under PL / strong
    convexity, the linear rate max(1 - gamma mu, (1 + r)/2). Because r_av shrinks with n (through
    omega_av), so does the stepsize's penalty: a random biased compressor benefits from many
    workers, which EF21 cannot exploit. The theorem's statement could not be re-read for this
    implementation (the paper text was not retrievable); the formulas above are from our reading
    of the paper and agree with the Lyapunov argument sketched in :func:`efbv_parameters`
    (contraction (1 + s)^2 r = (1 + r)/2 of the shifts' error, weight gamma / (2 theta*)).
    """

    name = "ef_bv"
    stepsize_source = "reading"
    paper = ("Condat, Yi, Richtárik (2022), EF-BV: a unified theory of error feedback and variance reduction "
             "mechanisms for biased and unbiased compression in distributed optimization, Alg. 1")
    uses = ("compressor",)
    Params = EFBVParams
    replica_batched = True
    state = ("x", "shifts", "lam", "nu")

    def check(self):
        eta_omega(self.compressor)  # refuses compressors outside the class

    @property
    def constants(self) -> dict[str, float]:
        """eta, omega, omega_av and lambda, nu, r, r_av, s*, theta* in use."""
        eta, omega = eta_omega(self.compressor)
        w_av = omega_average(self.compressor, self.n)
        out = efbv_parameters(eta, omega, w_av, self.params.lam, self.params.nu)
        out.update(eta=eta, omega=omega, omega_av=w_av)
        return out

    def theory_stepsize(self):
        c = self.constants
        return efbv_stepsize(self.problem.L, self.problem.L_tilde, c["r"], c["r_av"])

    def init(self, x0):
        c = self.constants
        self.lam, self.nu = c["lam"], c["nu"]
        self.x = x0
        self.shifts = Shifts()
        if self.params.init == "full":
            self.shifts.full(self.channel.dense(self.problem.grads(self.at_clients(x0))), self.channel)
        else:
            self.shifts.zero(self.zeros_clients(x0))

    def step(self):
        G = self.problem.grads(self.at_clients(self.x))
        g = self.shifts.estimate(G, self.compress, self.channel, self.lam, self.nu)
        self.x = self.channel.broadcast(self.x - self.gamma * g)


# ---- DCGD-SHIFT -----------------------------------------------------------------------------------

def unified_shift_stepsize(L: float, L_max: float, omega: float, n: int, rho: float | None, C: float) -> float:
    """gamma = 1 / (A + C M) of the unified analysis (Gorbunov, Hanzely, Richtárik 2020, "A unified
    theory of SGD", Thm. 4.1) for g = (1/n) sum_i [h_i + Q_i(grad f_i(x) - h_i)] with unbiased Q_i:
    A = L + 2 omega L_max / n, B = 2 omega / n, and shifts whose error sigma = (1/n) sum ||h_i - grad f_i(x*)||^2
    obeys E sigma+ <= (1 - rho) sigma + 2 C (f(x) - f*); M = 2 B / rho. ``rho=None``: fixed shifts
    (no recursion, gamma = 1/A)."""
    A = L + 2 * omega * L_max / n
    if rho is None:
        return 1.0 / A
    return 1.0 / (A + C * 4 * omega / (n * rho))


def ef21_shift_stepsize(alpha: float, L: float, L_max: float, omega: float, n: int, mu: float | None,
                        grid: int = 120) -> float:
    """Stepsize of DCGD-SHIFT with EF21-type shifts h_i+ = h_i + C(grad f_i(x) - h_i) (C contractive
    with alpha). Young's inequality twice (parameters s, t > 0) gives, for the shift error sigma,
    E sigma+ <= (1 - rho) sigma + 2 C (f - f*) with rho = 1 - (1 + s)(1 + t)(1 - alpha) and
    C = L_max [(1 + 1/s) + (1 + s)(1 - alpha)(1 + 1/t)] (our derivation); every feasible (s, t) gives
    a valid :func:`unified_shift_stepsize`. We take the (s, t) on a log grid that maximizes the
    rate min(gamma mu, rho / 2) (or gamma when mu is unknown)."""
    if alpha >= 1:
        return unified_shift_stepsize(L, L_max, omega, n, 1.0, L_max)
    u = torch.logspace(-4, 3, grid, dtype=torch.float64)
    s, t = u[:, None], u[None, :]
    rho = 1 - (1 + s) * (1 + t) * (1 - alpha)
    C = L_max * ((1 + 1 / s) + (1 + s) * (1 - alpha) * (1 + 1 / t))
    A = L + 2 * omega * L_max / n
    gamma = 1.0 / (A + C * 4 * omega / (n * rho.clamp_min(1e-300)))
    gamma = torch.where(rho > 0, gamma, torch.zeros_like(gamma))
    score = gamma if mu is None else torch.minimum(gamma * mu, rho / 2)
    return float(gamma.flatten()[int(score.flatten().argmax())])


class DCGDShiftParams(MethodParams):
    #: the shift rule: zero (DCGD), star (h_i = grad f_i(x*)), diana, rand_diana, ef21
    shift: Literal["zero", "star", "diana", "rand_diana", "ef21"] = "diana"
    #: DIANA-type shift stepsize alpha; default 1/(omega + 1)
    shift_stepsize: float | None = Field(None, gt=0, le=1)
    #: rand-DIANA: probability that a client refreshes its shift; default 1/(omega + 1)
    p: float | None = Field(None, gt=0, le=1)
    #: EF21-type shifts: the contractive compressor that learns them (e.g. {name: top_k, k: 2})
    shift_compressor: str | dict | None = None
    #: model (downlink) compression: DIANA-type model shift ("diana", stepsize beta) or none ("zero")
    model_shift: Literal["diana", "zero"] = "diana"
    #: beta, the model shift stepsize; default 1/(omega_M + 1)
    model_shift_stepsize: float | None = Field(None, gt=0, le=1)


@register_method
class DCGDShift(Method):
    """DCGD-SHIFT: distributed compressed gradient descent with shifted compressors,
    Shulgin, Richtárik (2022), "Shifted compression framework: generalizations and improvements"
    (arXiv 2206.10452), Algorithm 1. Client i compresses with the shifted compressor
    Q_{h_i}(v) = h_i + Q_i(v - h_i) (Q_i unbiased, ``compressor``):

        g = (1/n) sum_i [h_i + Q_i(grad f_i(w) - h_i)],    x+ = x - gamma g,

    with h = (1/n) sum h_i known to the server, and the shift rule ``shift``:

    * ``zero``: h_i = 0, plain DCGD (:class:`DCGD`), which stalls in a neighbourhood of size
      proportional to gamma omega / (mu n) (1/n) sum ||grad f_i(x*)||^2;
    * ``star``: the fixed optimal shifts h_i = grad f_i(x*) (the clients compute them once at x*,
      an oracle device of the theory, "DCGD-STAR"): linear convergence to x* itself. For any fixed
      shifts the neighbourhood scales with (1/n) sum ||h_i - grad f_i(x*)||^2;
    * ``diana``: h_i += alpha Q_i(grad f_i(w) - h_i) (the message already sent), alpha = 1/(omega+1):
      DIANA (:class:`DIANA`), iterate for iterate;
    * ``rand_diana``: each client independently, with probability p, resets h_i = grad f_i(w) and
      sends the change h_i+ - h_i uncompressed (d floats) besides its compressed message
      (p = 1/(omega + 1) by default, which roughly doubles the bits of rand-k);
    * ``ef21``: the shifts are learned by error feedback with a contractive ``shift_compressor`` C:
      h_i += C(grad f_i(w) - h_i), a second (biased) message besides Q_i(grad f_i(w) - h_i).

    Model compression (``down_compressor``, unbiased with omega_M, when it is not the identity):
    the server broadcasts Q_M(x - y) and every client forms the shifted-compressed model
    w = y + Q_M(x - y) at which it computes its gradient; the model shift y (known to all) is
    updated DIANA-style, y += beta Q_M(x - y), beta = 1/(omega_M + 1) (``model_shift: diana``), or
    kept at 0 (``model_shift: zero``: w = Q_M(x), which stalls). With the identity, w = x.

    Stepsizes (strongly convex f, convex f_i), from the unified SGD analysis the framework builds on
    (:func:`unified_shift_stepsize`): zero / star: gamma = 1/(L + 2 omega L_max / n) (as :class:`DCGD`);
    diana: DIANA's stepsize (:class:`DIANA`); rand_diana: rho = p, C = p L_max, i.e.
    gamma = 1/(L + 6 omega L_max / n); ef21: :func:`ef21_shift_stepsize` (our derivation of the
    recursion of the shift error under EF21 updates).
    With lossy model compression additionally gamma <= mu / (12 L_max^2 (1 + 5 omega/n) omega_M)
    (our derivation for quadratic f_i, where E grad f_i(w) = grad f_i(x); a local guarantee
    otherwise; without mu we use 1 / (12 L_max (1 + 5 omega/n) omega_M), a heuristic). The paper's own
    theorem constants could not be retrieved; the zero / diana cases coincide with the existing
    DCGD / DIANA defaults.
    """

    name = "dcgd_shift"
    stepsize_source = "derived"
    paper = "Shulgin, Richtárik (2022), Shifted compression framework: generalizations and improvements, Alg. 1"
    uses = ("compressor", "down_compressor")
    Params = DCGDShiftParams
    state = ("x", "shifts", "y")

    def check(self):
        _ = self.omega  # the uplink compressor must be unbiased
        if self.params.shift == "ef21":
            if self.params.shift_compressor is None:
                raise ValueError("dcgd_shift with shift: ef21 needs a contractive 'shift_compressor' (e.g. {name: top_k, k: 2})")
            self.shift_compressor = make_compressor(self.params.shift_compressor, self.d, self.n,
                                                    self.channel.float_bits)
            if self.shift_compressor.alpha is None:
                raise ValueError(f"dcgd_shift: shift_compressor must be contractive, got {self.shift_compressor.describe()}")
        if self.model_compressed and self.down_compressor.omega is None:
            raise ValueError(f"dcgd_shift: model compression needs an unbiased down_compressor, got {self.down_compressor.describe()}")

    @property
    def model_compressed(self) -> bool:
        return self.down_compressor is not None and self.down_compressor.name != "identity"

    @property
    def shift_stepsize(self) -> float:
        a = self.params.shift_stepsize
        return a if a is not None else 1.0 / (self.omega + 1)

    @property
    def p(self) -> float:
        return self.params.p if self.params.p is not None else 1.0 / (self.omega + 1)

    @property
    def model_shift_stepsize(self) -> float:
        b = self.params.model_shift_stepsize
        return b if b is not None else 1.0 / (self.down_compressor.omega + 1)

    def theory_stepsize(self):
        pr, w, n, shift = self.problem, self.omega, self.n, self.params.shift
        if shift in ("zero", "star"):
            gamma = unified_shift_stepsize(pr.L, pr.L_max, w, n, None, 0.0)
        elif shift == "diana":
            gamma = DIANA.theory_stepsize(self)
        elif shift == "rand_diana":
            gamma = unified_shift_stepsize(pr.L, pr.L_max, w, n, self.p, self.p * pr.L_max)
        else:
            gamma = ef21_shift_stepsize(float(self.shift_compressor.alpha), pr.L, pr.L_max, w, n, pr.mu)
        if self.model_compressed:
            wm = self.down_compressor.omega
            if wm > 0:
                cap = (pr.mu / (12 * pr.L_max ** 2 * (1 + 5 * w / n) * wm) if pr.mu
                       else 1.0 / (12 * pr.L_max * (1 + 5 * w / n) * wm))
                gamma = min(gamma, cap)
        return gamma

    def init(self, x0):
        self.x = x0
        self.y = torch.zeros_like(x0)  # model shift (used with model compression only)
        self.shifts = Shifts()
        if self.params.shift == "star":
            if self.problem.x_star is None:
                raise ValueError("dcgd_shift with shift: star needs a problem with a known minimizer x*")
            self.shifts.full(self.channel.dense(self.problem.grads(self.problem.x_star.expand(self.n, self.d))),
                             self.channel)
        else:
            self.shifts.zero(self.zeros_clients())

    def _model(self) -> torch.Tensor:
        """The model the clients evaluate their gradients at. Without model compression the clients
        hold x (broadcast at the end of the previous round); with it, the server broadcasts Q_M(x - y)."""
        if not self.model_compressed:
            return self.x
        q = self.channel.broadcast(self.compress_down(self.x - self.y))
        w = self.y + q
        if self.params.model_shift == "diana":
            self.y = self.y + self.model_shift_stepsize * q
        return w

    def step(self):
        w = self._model()
        G = self.problem.grads(w.expand(self.n, self.d))
        sh, shift = self.shifts, self.params.shift
        if shift == "diana":
            g = sh.estimate(G, self.compress, self.channel, self.shift_stepsize)
        else:
            D = G - sh.H
            g = sh.h + self.channel.uplink(self.compress(D))
            if shift == "rand_diana":
                gen = self.ctx.generator("method")
                R = torch.nonzero(torch.rand(self.n, generator=gen, dtype=torch.float64) < self.p).flatten()
                if R.numel():
                    R = R.to(sh.H.device)
                    weights = torch.full((R.shape[0],), 1.0 / self.n, dtype=G.dtype, device=G.device)
                    sh.h = sh.h + self.channel.uplink(self.channel.dense(D[R]), clients=R, weights=weights)
                    sh.H[R] = G[R]
            elif shift == "ef21":
                cmsg = self.shift_compressor(D, self.ctx.generator("compressor"))
                sh.H.add_(cmsg.values)
                sh.h = sh.h + self.channel.uplink(cmsg)
        x = self.x - self.gamma * g
        self.x = x if self.model_compressed else self.channel.broadcast(x)
