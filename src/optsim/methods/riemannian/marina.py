"""R-MARINA: Riemannian MARINA with compressed gradient differences."""
from __future__ import annotations

from ..base import register_method
from ..baselines.variance_reduced import MARINA
from .base import OnManifold

__all__ = ["RMARINA"]


@register_method
class RMARINA(OnManifold, MARINA):
    """R-MARINA: Demidovich, Malinovsky, Richtárik (2024), "Streamlining in the Riemannian realm:
    efficient Riemannian optimization with loopless variance reduction" (arXiv 2403.06677), Riemannian
    MARINA (algorithm and theorem numbers not confirmed): R-PAGE's estimator with the clients'
    gradient differences compressed. g^0 = grad f(x^0) (all clients send full gradients); each round
    x+ = Exp_x(-gamma g) is broadcast and, with one shared coin c ~ Be(p),

        c = 1:  every client sends grad f_i(x+) uncompressed, g+ = (1/n) sum_i grad f_i(x+);
        c = 0:  every client sends Q(grad f_i(x+) - Gamma grad f_i(x)),
                g+ = Gamma g + P_{x+}((1/n) sum_i Q(...)),

    Gamma parallel transport along the step's geodesic (each client knows x and x+, and keeps its
    previous gradient), Q an unbiased compressor with variance omega acting on the ambient
    coordinates, P_{x+} the orthogonal projection onto the tangent space at x+ (linear and fixing
    tangent vectors, so P Q is an unbiased compressor on the tangent space with variance at most
    omega; on R^d it is the identity and R-MARINA is MARINA iterate for iterate, tested). Bits: a full
    round d floats per client, else the compressor's bits (through the channel).

    Stepsize and p: MARINA's (Thm. 2.1: gamma = 1 / (L_tilde (1 + sqrt((1 - p) omega / (p n)))), with mu
    known the PL form; p = zeta_Q / d) with the geodesic constants of the problem; the Riemannian
    theorem's form is recalled as MARINA's, not confirmed against the paper's text. All clients take
    part every round (no client sampling).
    """

    name = "r_marina"
    stepsize_source = "reading"
    paper = ("Demidovich, Malinovsky, Richtárik (2024), Streamlining in the Riemannian realm: efficient Riemannian "
             "optimization with loopless variance reduction, R-MARINA")
    uses = ("compressor",)
    replica_batched = False

    def step(self):
        M, x_old = self.M, self.x
        u = -(self.gamma * self.est.g)
        self.x = self.channel.broadcast(M.exp(x_old, u))
        self.last_full = self.coin(self.p)
        G = self.problem.grads(self.at_clients(self.x))
        if self.last_full:
            self.est.refresh(G, self.channel)
        else:
            T = M.transporter(x_old, self.x, u)  # along the step just taken
            msg = self.compress(G - T(self.G))
            self.est.g = T(self.est.g) + M.proj(self.x, self.channel.uplink(msg))
        self.G = G
