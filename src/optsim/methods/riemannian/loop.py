"""R-SGD and R-SVRG (the loop version of R-LSVRG)."""
from __future__ import annotations

from pydantic import PositiveInt

from ...estimators import paired_minibatch
from ..base import Method, MethodParams, register_method
from ..baselines.gd import SGD, SGDParams
from .base import OnManifold, default_loop_length, svrg_stepsize

__all__ = ["RSGD", "RSVRG"]


@register_method
class RSGD(OnManifold, SGD):
    """R-SGD: Bonnabel (2013), "Stochastic gradient descent on Riemannian manifolds", eq. (2) with the
    exponential map: every client draws ``batch_size`` of its samples, the server averages their
    Riemannian gradients and steps x+ = Exp_x(-gamma g). All clients take part every round.

    Default stepsize: SGD's 1 / (2 L_exp) (Gower et al. 2019, Thm. 3.1, see :class:`SGD`) divided by
    the problem's curvature constant zeta -- our choice (Bonnabel's theorem is for decreasing
    stepsizes); with zeta = 1 in R^d it is SGD's, and R-SGD is SGD iterate for iterate (tested).
    """

    name = "r_sgd"
    stepsize_source = "derived"
    paper = "Bonnabel (2013), Stochastic gradient descent on Riemannian manifolds, eq. (2) (Exp as retraction)"
    uses = ()
    Params = SGDParams
    state = ("x",)

    def theory_stepsize(self):
        return super().theory_stepsize() / self.problem.zeta

    def init(self, x0):
        self.x = x0

    def step(self):
        G = self.problem.minibatch_grads(self.x.expand(self.n, self.d), self.params.batch_size,
                                         self.ctx.generator("noise"))
        g = self.channel.uplink(G)
        self.x = self.channel.broadcast(self.M.exp(self.x, -(self.gamma * g)))


class RSVRGParams(MethodParams):
    #: samples each client draws per inner step (uniformly, with replacement)
    batch_size: PositiveInt = 1
    #: inner-loop length m (steps between snapshots); default ceil(m_i / b), one pass over the data
    loop_length: PositiveInt | None = None


@register_method
class RSVRG(OnManifold, Method):
    """R-SVRG: Zhang, Reddi, Sra (2016), "Riemannian SVRG: fast stochastic optimization on Riemannian
    manifolds", Algorithm 1 (Option I: the last inner iterate becomes the next snapshot), distributed
    over the clients. Each outer loop takes a snapshot w = x and the full gradient
    grad f(w) = (1/n) sum_i grad f_i(w) (every client sends its local full gradient); then for
    ``loop_length`` rounds

        v = (1/n) sum_i [grad f_iB(x) - Gamma_{w->x} grad f_iB(w)] + Gamma_{w->x} grad f(w),
        x+ = Exp_x(-gamma v),

    with B a fresh minibatch of ``batch_size`` samples per client (the same samples at x and w) and
    Gamma_{w->x} parallel transport along the geodesic from w to x. One round = one inner step; the
    round that takes a snapshot also computes the full gradient there.

    Default stepsize: ZRS Theorem 1 (geodesically strongly convex f) needs eta and m with a
    contraction factor below 1 but gives no closed form; we use the loopless method's default
    1 / (6 zeta L_exp) (:func:`svrg_stepsize`), so that R-SVRG and R-LSVRG compare at equal stepsizes.
    """

    name = "r_svrg"
    stepsize_source = "derived"
    paper = "Zhang, Reddi, Sra (2016), Riemannian SVRG: fast stochastic optimization on Riemannian manifolds, Alg. 1"
    Params = RSVRGParams
    state = ("x", "w", "full_w", "t", "last_full")

    def check(self):
        if not self.problem.has_sample_grads:
            raise ValueError(f"r_svrg needs a finite-sum problem with per-sample gradients, got {self.problem.name}")

    @property
    def loop_length(self) -> int:
        m = self.params.loop_length
        return int(m) if m is not None else default_loop_length(self.problem, self.params.batch_size)

    def theory_stepsize(self):
        return svrg_stepsize(self.problem, self.params.batch_size)

    def _snapshot(self, w):
        self.w = w
        self.full_w = self.channel.uplink(self.channel.dense(self.problem.grads(self.at_clients(w))))
        self.t, self.last_full = 0, True

    def init(self, x0):
        self.x = x0
        self._snapshot(x0)

    def step(self):
        if self.t >= self.loop_length:
            self._snapshot(self.x)
        else:
            self.last_full = False
        M, x, w = self.M, self.x, self.w
        new, old = paired_minibatch(self.problem, x, w, self.params.batch_size, self.ctx.generator("noise"))
        T = M.transporter(w, x)  # from w to x: both vectors share its work
        D = new - T(old)
        v = self.channel.uplink(self.channel.dense(D)) + T(self.full_w)
        self.x = self.channel.broadcast(M.exp(x, -(self.gamma * v)))
        self.t += 1
