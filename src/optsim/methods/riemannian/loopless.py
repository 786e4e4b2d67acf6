"""The loopless methods of Demidovich, Malinovsky, Richtárik (2024), "Streamlining in the Riemannian
realm: efficient Riemannian optimization with loopless variance reduction" (arXiv 2403.06677):
R-LSVRG and R-PAGE.

What is confirmed: the paper's abstract (R-LSVRG and R-PAGE replace the outer loop by a coin flip
each iteration; R-MARINA is R-PAGE with compressed differences). The update rules below are the
Riemannian forms of L-SVRG (Kovalev, Horváth, Richtárik 2020, Alg. 1) and PAGE (Li, Bao, Zhang,
Richtárik 2021, Alg. 1) with exponential maps and parallel transport; their algorithm numbers,
theorem numbers and numeric constants could not be read from the paper's text here and are not
confirmed.
"""
from __future__ import annotations

from pydantic import Field, PositiveInt

from ...estimators import paired_minibatch
from ..base import Method, MethodParams, register_method
from ..baselines.variance_reduced import PAGE
from .base import OnManifold, default_loop_length, svrg_stepsize

__all__ = ["RLSVRG", "RPAGE"]


class RLSVRGParams(MethodParams):
    #: samples each client draws per round (uniformly, with replacement)
    batch_size: PositiveInt = 1
    #: probability of moving the reference point; default b / m_i (one expected pass between moves)
    p: float | None = Field(None, gt=0, le=1)


@register_method
class RLSVRG(OnManifold, Method):
    """R-LSVRG: Demidovich, Malinovsky, Richtárik (2024), arXiv 2403.06677, Riemannian loopless SVRG
    (the paper's first algorithm; number not confirmed), distributed over the clients. The server
    keeps a reference point w and grad f(w); each round

        g = (1/n) sum_i [grad f_iB(x) - Gamma_{w->x} grad f_iB(w)] + Gamma_{w->x} grad f(w),
        x+ = Exp_x(-gamma g),
        with probability p: w+ = x and every client sends grad f_i(x) (w+ = w otherwise),

    B a fresh minibatch of ``batch_size`` samples per client (the same at x and w), Gamma_{w->x}
    parallel transport along the geodesic from w to x, one shared coin (``Method.coin``). With n = 1
    and b = 1 this is the paper's single-machine method; on R^d it is L-SVRG (Kovalev, Horváth,
    Richtárik 2020, Alg. 1) iterate for iterate (tested).

    Theory (recalled, not confirmed against the paper's text): for geodesically mu-strongly convex f
    with L-smooth f_i and curvature constant zeta, linear convergence of a Lyapunov function
    d^2(x, x*) + c gamma^2 / p (gradient-difference term) at rate max(1 - gamma mu, 1 - p / 2) for
    gamma of order 1 / (zeta L). Default stepsize 1 / (6 zeta L_exp) (:func:`svrg_stepsize`: L-SVRG's
    Theorem 5 constant, divided by zeta); default p = b / m_i.
    """

    name = "r_lsvrg"
    stepsize_source = "reading"
    paper = ("Demidovich, Malinovsky, Richtárik (2024), Streamlining in the Riemannian realm: efficient Riemannian "
             "optimization with loopless variance reduction, R-LSVRG")
    Params = RLSVRGParams
    draws_coins = True
    state = ("x", "w", "full_w", "last_full")

    def check(self):
        if not self.problem.has_sample_grads:
            raise ValueError(f"r_lsvrg needs a finite-sum problem with per-sample gradients, got {self.problem.name}")

    @property
    def p(self) -> float:
        if self.params.p is not None:
            return float(self.params.p)
        return 1.0 / default_loop_length(self.problem, self.params.batch_size)

    def theory_stepsize(self):
        return svrg_stepsize(self.problem, self.params.batch_size)

    def _reference(self, w):
        self.w = w
        self.full_w = self.channel.uplink(self.channel.dense(self.problem.grads(self.at_clients(w))))

    def init(self, x0):
        self.x = x0
        self._reference(x0)
        self.last_full = True

    def step(self):
        M, x, w = self.M, self.x, self.w
        new, old = paired_minibatch(self.problem, x, w, self.params.batch_size, self.ctx.generator("noise"))
        T = M.transporter(w, x)  # from w to x: both vectors share its work
        D = new - T(old)
        g = self.channel.uplink(self.channel.dense(D)) + T(self.full_w)
        self.x = self.channel.broadcast(M.exp(x, -(self.gamma * g)))
        self.last_full = self.coin(self.p)
        if self.last_full:
            self._reference(x)


@register_method
class RPAGE(OnManifold, PAGE):
    """R-PAGE: Demidovich, Malinovsky, Richtárik (2024), arXiv 2403.06677, Riemannian PAGE (number of
    the algorithm and theorem not confirmed), distributed over the clients as the project's PAGE.
    With x+ = Exp_x(-gamma g) (broadcast) and one coin c ~ Be(p) per round:

        c = 1:  g+ = (1/n) sum_i grad f_i(x+)   (full local gradients, or a minibatch of b);
        c = 0:  g+ = Gamma g + (1/n) sum_i (1/b') sum_{j in I_i} (grad f_ij(x+) - Gamma grad f_ij(x)),

    Gamma parallel transport along the step's geodesic t -> Exp_x(-t gamma g), I_i b' samples drawn
    uniformly with replacement, the same at both points. Every round the clients send one dense
    vector (d floats). On R^d it is PAGE iterate for iterate (tested).

    Stepsize and p: PAGE's (see :class:`PAGE`: gamma = 1 / (L + Lc sqrt((1 - p) / (p n b'))),
    p = b' / (b + b'); with mu known, the PL form) with the geodesic constants of the problem; the
    Riemannian theorem's form is recalled as PAGE's (1 / (L (1 + sqrt((1 - p) / (p b'))))), not
    confirmed against the paper's text.
    """

    name = "r_page"
    stepsize_source = "reading"
    paper = ("Demidovich, Malinovsky, Richtárik (2024), Streamlining in the Riemannian realm: efficient Riemannian "
             "optimization with loopless variance reduction, R-PAGE")
    state = ("x", "est", "last_full")

    def step(self):
        M, x_old = self.M, self.x
        u = -(self.gamma * self.est.g)
        self.x = self.channel.broadcast(M.exp(x_old, u))
        self.last_full = self.coin(self.p)
        if self.last_full:
            self.est.refresh(self._large(self.x), self.channel)
            return
        new, old = paired_minibatch(self.problem, self.x, x_old, self.small_batch, self.ctx.generator("noise"))
        T = M.transporter(x_old, self.x, u)  # along the step just taken
        self.est.g = T(self.est.g)
        self.est.move(self._difference_message(new - T(old)), self.channel)

