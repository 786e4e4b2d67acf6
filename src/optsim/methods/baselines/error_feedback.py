"""Error feedback for contractive (biased) compressors: EF21 (with partial participation,
EF21-PP), EF21-BC (bidirectional), EF21-P + DIANA (primal/downlink error feedback) and the
classic error feedback EF of Seide et al. (2014)."""
from __future__ import annotations

import math

import torch

from ...mechanisms import Feedback, Shifts, make_three_pc
from ..base import Method, MethodParams, register_method
from ..baselines.compressed import DIANA, DIANAParams

__all__ = ["EF21", "EF21BC", "EF21P", "EF", "ef21_theta_beta", "ef21_stepsize", "ef21_pp_stepsize"]


def ef21_theta_beta(alpha: float) -> tuple[float, float]:
    """theta = 1 - sqrt(1 - alpha), beta = (1 - alpha) / (1 - sqrt(1 - alpha)) (EF21, Lemma 1 / Thm. 1)."""
    s = math.sqrt(1 - alpha)
    return 1 - s, (1 - alpha) / (1 - s)


def ef21_stepsize(alpha: float, L: float, L_tilde: float, mu: float | None) -> float:
    """EF21's theoretical stepsize: Thm. 1 (nonconvex) or, when ``mu`` is given, Thm. 2 (PL)."""
    theta, beta = ef21_theta_beta(alpha)
    if mu is None:
        return 1.0 / (L + L_tilde * math.sqrt(beta / theta))
    return min(1.0 / (L + L_tilde * math.sqrt(2 * beta / theta)), theta / (2 * mu))


def ef21_pp_stepsize(alpha: float, p_min: float, p_max: float, L: float, L_tilde: float,
                     mu: float | None, grid: int = 200) -> float:
    """EF21-PP's theoretical stepsize, maximized over the theorem's free parameters s, rho > 0.

    Fatkhullin et al. (2021), EF21 with bells & whistles, Appendix F, Thm. 7 (nonconvex):
    theta = 1 - (1 + s)(1 - alpha), beta = (1 + 1/s)(1 - alpha),
    theta_p = rho p_min + theta p_max - rho - (p_max - p_min) > 0,
    B = (beta p_max + (1 + 1/rho)(1 - p_min)) L_tilde^2, gamma = 1 / (L + sqrt(B / theta_p)).
    PL case (``mu`` given): gamma = min(1 / (L + sqrt(2 B / theta_p)), theta_p / (2 mu)), the
    EF21-PP analogue of EF21's Thm. 2 (the paper's own PL theorem for EF21-PP, in Appendix F, was
    not re-read). Every feasible (s, rho) gives a valid stepsize; we take the best on a grid.
    """
    if p_min >= 1:
        return ef21_stepsize(alpha, L, L_tilde, mu)
    u = torch.linspace(0.0, 1.0, grid + 2, dtype=torch.float64)[1:-1]
    if alpha >= 1:
        theta, beta = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    else:
        s = (alpha / (1 - alpha)) * u  # theta(s) > 0  <=>  s < alpha / (1 - alpha)
        theta, beta = 1 - (1 + s) * (1 - alpha), (1 + 1 / s) * (1 - alpha)
    room = theta * p_max - (p_max - p_min)  # theta_p = room - rho (1 - p_min)
    if not bool((room > 0).any()):
        raise ValueError(f"EF21-PP theory needs theta p_max > p_max - p_min (p_min = {p_min:.3g}, "
                         f"p_max = {p_max:.3g}): sampling too uneven for alpha = {alpha:.3g}; set 'stepsize'")
    theta, beta, room = theta[room > 0, None], beta[room > 0, None], room[room > 0, None]
    rho = room / (1 - p_min) * u[None, :]
    theta_p = room - rho * (1 - p_min)
    B = (beta * p_max + (1 + 1 / rho) * (1 - p_min)) * L_tilde**2
    if mu is None:
        gamma = 1 / (L + (B / theta_p).sqrt())
    else:
        gamma = torch.minimum(1 / (L + (2 * B / theta_p).sqrt()), theta_p / (2 * mu))
    return float(gamma.max())


class EF21Params(MethodParams):
    #: g_i^0 = grad f_i(x^0) sent uncompressed (True, as in the paper's experiments) or C(grad f_i(x^0))
    init_full: bool = True


@register_method
class EF21(Method):
    """EF21: Richtárik, Sokolov, Fatkhullin (2021), "EF21: A new, simpler, theoretically better,
    and practically faster error feedback", Algorithm 1:

        x+ = x - gamma g,   c_i = C(grad f_i(x+) - g_i),   g_i += c_i,   g += (1/n) sum_i c_i.

    Stepsize with theta, beta of :func:`ef21_theta_beta`: nonconvex (Thm. 1)
    gamma = 1 / (L + L_tilde sqrt(beta/theta)); under PL / strong convexity (Thm. 2)
    gamma = min(1 / (L + L_tilde sqrt(2 beta/theta)), theta / (2 mu)). Linear convergence to x*
    with any contractive compressor (e.g. top-k).

    Partial participation (EF21-PP; Fatkhullin, Sokolov, Gorbunov, Li, Richtárik (2021), "EF21
    with bells & whistles", Algorithm 4) with a non-full ``sampler``: only the sampled clients S
    get x+ and send c_i; the others keep g_i (c_i = 0) and g += (1/n) sum_{i in S} c_i (no
    reweighting). Stepsize: Thm. 7 of that paper (nonconvex), maximized over its free parameters,
    and under PL the analogous form of EF21's Thm. 2 (not re-verified), see
    :func:`ef21_pp_stepsize` (p_i = the sampler's inclusion probabilities). With the full sampler
    the method and its stepsize are exactly EF21's.
    """

    name = "ef21"
    stepsize_source = "theorem"
    paper = "Richtárik, Sokolov, Fatkhullin (2021), EF21: a new, simpler, theoretically better, and practically faster error feedback, Alg. 1"
    uses = ("compressor", "sampler")
    Params = EF21Params
    replica_batched = True
    state = ("x", "fb")

    @property
    def partial(self) -> bool:
        return self.sampler is not None and not self.sampler.is_full

    def theory_stepsize(self):
        p = self.problem
        if not self.partial:
            return ef21_stepsize(self.alpha, p.L, p.L_tilde, p.mu)
        probs = self.sampler.probs
        return ef21_pp_stepsize(self.alpha, float(probs.min()), float(probs.max()), p.L, p.L_tilde, p.mu)

    def init(self, x0):
        self.x = x0
        G = self.problem.grads(self.at_clients(x0))
        self.fb = Feedback(make_three_pc("ef21", self.compressor, float_bits=self.channel.float_bits))
        self.fb.start(self.channel.dense(G) if self.params.init_full else self.compress(G), self.channel)

    def step(self):
        S = self.sample_clients() if self.partial else None
        self.x = self.channel.broadcast(self.x - self.gamma * self.fb.g, clients=S)
        if S is None:
            self.fb.send(self.problem.grads(self.at_clients(self.x)), self.channel, self.compress)
            return
        G = self.problem.grads(self.at_clients(self.x, S.shape[0]), clients=S)
        self.fb.send(G, self.channel, self.compress, clients=S, weights=1.0 / self.n)


def _down_alpha(self) -> float:
    """alpha of the method's down_compressor, which must be contractive (EF21-BC, EF21-P)."""
    a = self.down_compressor.alpha
    if a is None:
        raise ValueError(f"{self.name} needs a contractive down_compressor, got {self.down_compressor.describe()}")
    return a


@register_method
class EF21BC(Method):
    """EF21-BC, EF21 with bidirectional compression: Fatkhullin, Sokolov, Gorbunov, Li, Richtárik
    (2021), "EF21 with bells & whistles: six algorithmic extensions of modern error feedback",
    Algorithm 5. Workers run EF21 on their gradients with C_w (``compressor``), the master runs
    the same mechanism on the aggregate with C_M (``down_compressor``) and broadcasts only b:

        x+ = x - gamma g   (master and workers alike: all know g),
        c_i = C_w(grad f_i(x+) - gt_i),   gt_i += c_i,   gt += (1/n) sum_i c_i,
        b = C_M(gt - g),   g += b.

    Initialization: gt_i = grad f_i(x^0) sent uncompressed (``init_full``) or C_w of it, and the
    master broadcasts g^0 = C_M(gt^0). With C_M the identity, g = gt and the iterates are EF21's.

    Stepsize: the paper proves T = O(L_tilde delta^0 / (alpha_w alpha_M eps^2)) (Corollary 1,
    Thm. in Appendix G); the theorem's exact stepsize was not retrieved, so the default is EF21's
    formula (Thm. 1 nonconvex / Thm. 2 PL, see :func:`ef21_stepsize`) with alpha := alpha_w alpha_M,
    which has that scaling and equals EF21's stepsize when C_M is the identity (a heuristic, not
    the paper's constant).
    """

    name = "ef21_bc"
    stepsize_source = "derived"
    paper = "Fatkhullin, Sokolov, Gorbunov, Li, Richtárik (2021), EF21 with bells & whistles, Alg. 5 (EF21-BC)"
    uses = ("compressor", "down_compressor")
    Params = EF21Params
    state = ("x", "fb", "g")

    down_alpha = property(_down_alpha)

    def theory_stepsize(self):
        p = self.problem
        return ef21_stepsize(self.alpha * self.down_alpha, p.L, p.L_tilde, p.mu)

    def init(self, x0):
        self.x = x0
        G = self.problem.grads(self.at_clients(x0))
        self.fb = Feedback(make_three_pc("ef21", self.compressor, float_bits=self.channel.float_bits))
        gt = self.fb.start(self.channel.dense(G) if self.params.init_full else self.compress(G), self.channel)
        self.g = self.channel.broadcast(self.compress_down(gt))

    def step(self):
        self.x = self.x - self.gamma * self.g
        gt = self.fb.send(self.problem.grads(self.x.expand(self.n, self.d)), self.channel, self.compress)
        self.g = self.g + self.channel.broadcast(self.compress_down(gt - self.g))


@register_method
class EF21P(Method):
    """EF21-P + DIANA: Gruntkowska, Tyurin, Richtárik (2023), "EF21-P and friends: improved
    theoretical communication complexity for distributed optimization with bidirectional
    compression" (arXiv 2209.15218), Algorithm 2 (EF21-P + DIANA). The server keeps the
    exact model x and the model w known to every worker; it broadcasts only the compressed
    model correction (error feedback in the primal space, ``down_compressor``, contractive);
    workers run DIANA at w (``compressor``, unbiased):

        m_i = Q_i(grad f_i(w) - h_i),   g = h + (1/n) sum_i m_i,   h_i += a m_i,   h += a (1/n) sum_i m_i,
        x+ = x - gamma g,   p = C(x+ - w),   w += p   (p broadcast; every worker adds it).

    h_i^0 = 0, w^0 = x^0, shift stepsize a = 1/(omega + 1). With C the identity, w = x and the
    method is :class:`DIANA` (same iterates up to floating-point rounding of w + (x+ - w)).

    Stepsize: the paper's strongly convex theorem for EF21-P + DIANA gives
    O~(L/(alpha mu) + omega L_max/(n mu) + omega) rounds, i.e. gamma = Theta(min(alpha/L, n/(omega L_max)));
    its numerical constant could not be retrieved. Default: gamma = min(gamma_DIANA, alpha/(16 L))
    when C is lossy (alpha < 1), gamma_DIANA when C is the identity, with gamma_DIANA DIANA's
    theoretical stepsize (:class:`DIANA`; strongly convex 1/((1 + 6 omega/n) L_max), nonconvex
    1/(10 L sqrt(1 + omega/n)(omega + 2))). The constant 1/16 is a conservative choice of ours.
    """

    name = "ef21_p"
    stepsize_source = "derived"
    paper = "Gruntkowska, Tyurin, Richtárik (2023), EF21-P and friends, Alg. 2 (EF21-P + DIANA)"
    uses = ("compressor", "down_compressor")
    Params = DIANAParams
    state = ("x", "w", "shifts")

    down_alpha = property(_down_alpha)

    def theory_stepsize(self):
        gamma = DIANA.theory_stepsize(self)
        a = self.down_alpha
        return gamma if a >= 1 else min(gamma, a / (16 * self.problem.L))

    shift_stepsize = DIANA.shift_stepsize

    def init(self, x0):
        self.x = x0
        self.w = x0
        self.shifts = Shifts()
        self.shifts.zero(self.zeros_clients())

    def step(self):
        G = self.problem.grads(self.w.expand(self.n, self.d))
        g = self.shifts.estimate(G, self.compress, self.channel, self.shift_stepsize)
        self.x = self.x - self.gamma * g
        self.w = self.w + self.channel.broadcast(self.compress_down(self.x - self.w))


@register_method
class EF(Method):
    """Classic error feedback (EF14 / EF-SGD with full gradients): Seide, Fu, Droppo, Li, Yu (2014),
    "1-bit stochastic gradient descent and its application to data-parallel distributed training
    of speech DNNs"; Karimireddy, Rebjock, Stich, Jaggi (2019), "Error feedback fixes SignSGD and
    other gradient compression schemes", Algorithm 2 (EF-SGD); analysed by Stich, Karimireddy
    (2020), "The error-feedback framework: better rates for SGD with delayed gradients and
    compressed communication".
    Distributed form, each client keeping its error e_i (e_i^0 = 0):

        c_i = C(e_i + gamma grad f_i(x)),   e_i <- e_i + gamma grad f_i(x) - c_i,   x+ = x - (1/n) sum_i c_i.

    With heterogeneous data (grad f_i(x*) != 0) classic EF converges to a neighbourhood of x*
    whose size scales with gamma^2 (there is no heterogeneity-free linear rate for it; EF21 is the
    remedy); with identical clients it converges linearly to x*.

    Stepsize: Stich & Karimireddy prove rates for constant stepsizes gamma = O(alpha/L) (EF acts
    like SGD with a delay of order 1/alpha); the absolute constant of their theorem could not be
    confirmed, so the default is the conservative gamma = alpha / (4 L_max) (alpha of the
    compressor; L_max because the errors accumulate the clients' own gradients), in both the
    strongly convex and the nonconvex case.
    """

    name = "ef"
    stepsize_source = "derived"
    paper = "Seide et al. (2014), 1-bit SGD; Karimireddy et al. (2019), Error feedback fixes SignSGD, Alg. 2 (EF-SGD)"
    uses = ("compressor",)
    state = ("x", "E")

    def theory_stepsize(self):
        return self.alpha / (4 * self.problem.L_max)

    def init(self, x0):
        self.x = x0
        self.E = self.zeros_clients()

    def step(self):
        G = self.problem.grads(self.x.expand(self.n, self.d))
        P = self.E.add_(G, alpha=self.gamma)
        msg = self.compress(P)
        self.E = P - msg.values
        self.x = self.channel.broadcast(self.x - self.channel.uplink(msg))
