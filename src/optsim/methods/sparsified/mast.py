"""MAST: Double Sketched (S)GD on the sketched objective f_D (Demidovich et al., arXiv 2311.16086).

The objective (problem (2) of the paper) is f_D(x) = E_S[f(v + S (x - v))] with a random diagonal
sketch S, E[S] = I, and a shift v (:mod:`optsim.problems.sketched`). Algorithm 1 of the paper,
"Double Sketched (S)GD", with stepsize gamma, sketch law D, initial model x^0 and shift v: each
step samples S^t ~ D, forms g^t = grad f_{S^t}(x^t) = S^t grad f(v + S^t (x^t - v)) exactly
(option I) or a stochastic estimate of it (option II), and sets x^{t+1} = x^t - gamma g^t. The
model is sparsified on its way to the gradient and the gradient comes back with the same support.

Distributed version (the paper's Sec. on distributed training, as summarized, not re-read): the
server sends each client i its own sketched model v + S_i (x - v), client i returns
S_i grad f_i(v + S_i (x - v)), the server averages. Loopless variance reduction (the paper's
L-SVRDSG, after L-SVRG of Kovalev, Horváth, Richtárik 2020): g = grad f_S(x) - grad f_S(w) +
grad f_D(w) with a reference point w refreshed to x with probability p. Whatever the law,
E_S[grad f_S(x)] = grad f_D(x) (differentiate under the expectation): the estimators are unbiased
for the sketched objective, whose minimizer x*_D is not the ERM minimizer x* in general.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt

from ...problems.sketched import DiagonalSketch, SketchedProblem
from ..base import Method, MethodParams, register_method

__all__ = ["MAST", "MASTParams"]


class MASTParams(MethodParams):
    #: the gradient of a round: ``sketch`` (Algorithm 1, option I: grad f_S at one fresh sketch per
    #: client; option II with ``batch_size``), ``expected`` (the exact grad f_D: gradient descent on the
    #: sketched objective, how the paper computes its MAST solutions for Figure 1; quadratic bases
    #: only), ``lsvrg`` (loopless variance reduction over the sketches, L-SVRDSG; quadratic bases only)
    estimator: Literal["sketch", "expected", "lsvrg"] = "sketch"
    #: option II: base samples per client and round at the sketched model (None: full local gradients)
    batch_size: PositiveInt | None = None
    #: lsvrg: probability of refreshing the reference point w (one exact grad f_D(w) round)
    p: float = Field(0.1, gt=0.0, le=1.0)
    #: the sketch law on problems that are not sketched already: bernoulli (needs keep_prob),
    #: dropout (keep_prob, unscaled), rand_k (needs k), identity; a sketched problem brings its own
    sketch: Literal["bernoulli", "dropout", "rand_k", "identity"] | None = None
    #: keep probability of the bernoulli / dropout sketches
    keep_prob: float | None = Field(None, gt=0.0, le=1.0)
    #: coordinates kept by rand_k
    k: PositiveInt | None = None


@register_method
class MAST(Method):
    """Double Sketched (S)GD of MAST, distributed over clients with one sketch per client.

    Demidovich, Malinovsky, Shulgin, Richtárik (2023), "MAST: Model-Agnostic Sparsified Training",
    arXiv 2311.16086 (ICLR 2025), Algorithm 1 (DSGD) on the sketched objective f_D (eq. 2); its
    distributed form (each client its own sketch S_i^t) and its loopless variance-reduced form.

    Round t (``estimator: sketch``): the server draws S_i^t ~ D for every client and sends client i
    the nonzero coordinates of S_i^t (x^t - v) with their indices (clients hold v); client i computes
    g_i = S_i^t grad f_i(v + S_i^t (x^t - v)) (option I; option II: a minibatch of ``batch_size``
    samples) and sends its nonzero coordinates (the server knows the support); the server steps
    x^{t+1} = x^t - gamma (1/n) sum_i g_i. With one client this is Algorithm 1 itself; with
    S = I and v = 0 it is gradient descent, iterate for iterate. ``expected`` steps with the exact
    grad f_D (dense messages); ``lsvrg`` with g = (1/n) sum_i S_i [grad f_i(v + S_i (x - v)) -
    grad f_i(v + S_i (w - v))] + grad f_D(w), w <- x^t with probability ``p`` (then w is broadcast and
    grad f_D(w) gathered densely).

    The problem: a :class:`~optsim.problems.sketched.SketchedProblem` brings the sketch law D and
    the shift v, and the metrics are then those of f_D (gap to x*_D). On any other problem the law
    comes from ``sketch`` / ``keep_prob`` / ``k`` (default bernoulli with keep_prob 1/2), v = 0, and
    the metrics are those of the problem's own f (the ERM objective).

    Default stepsizes (``stepsize_source = "derived"``: the paper's strongly convex theorem could
    not be read, so its constants are not used):

    * ``sketch``: gamma = 1 / (2 L_exp) with L_exp = L_S_max * max_i L_i (``max_ij L_ij`` with
      ``batch_size``), the expected-smoothness stepsize of Gower et al. (2019), Theorem 3.1, applied
      to the estimator grad f_S: each f_{S,i} is convex and L_i lambda_max(S^2)-smooth, so
      E||g(x) - g(x*_D)||^2 <= 2 L_exp (f_D(x) - f_D(x*_D)) and
      E||x^t - x*_D||^2 <= (1 - gamma mu_D)^t ||x^0 - x*_D||^2 + 2 gamma sigma*^2 / mu_D with
      sigma*^2 = E||g(x*_D)||^2, mu_D the strong convexity of f_D; the neighbourhood vanishes when
      every grad f_S(x*_D) = 0 (e.g. v = x*, the paper's interpolation case f_D^inf = f^inf).
    * ``expected``: gamma = 1 / L(f_D), gradient descent on f_D (linear rate 1 - mu_D / L_D).
    * ``lsvrg``: gamma = 1 / (6 L_exp), L-SVRG's stepsize (Kovalev, Horváth, Richtárik 2020,
      "Don't jump through hoops...", Theorem 5) with the same L_exp; linear convergence to x*_D.
      The refresh probability ``p`` default 0.1 is ours.
    """

    name = "mast"
    stepsize_source = "derived"
    paper = ("Demidovich, Malinovsky, Shulgin, Richtárik (2023), MAST: Model-Agnostic Sparsified Training, "
             "arXiv 2311.16086, Alg. 1 (Double Sketched (S)GD), distributed and L-SVRDSG variants")
    Params = MASTParams
    draws_coins = True

    #: lsvrg also carries the reference point w and grad f_D(w)
    state = ("x", "_w", "_gw")

    def check(self):
        pr = self.params
        given = {f for f in ("sketch", "keep_prob", "k") if getattr(pr, f) is not None}
        if self.problem.sketch is not None:
            if given:
                raise ValueError(f"mast: the problem is sketched already (its sketch {self.problem.sketch.params()} "
                                 f"is used): remove {', '.join(sorted(given))}")
            self.target = self.problem
        else:
            kind = pr.sketch or "bernoulli"
            if kind != "rand_k" and pr.k is not None:
                raise ValueError(f"mast: k is rand_k's; the {kind} sketch takes keep_prob (remove k)")
            if kind not in ("bernoulli", "dropout") and pr.keep_prob is not None:
                raise ValueError(f"mast: keep_prob is for the bernoulli / dropout sketches, not {kind} (remove it)")
            p = pr.keep_prob if pr.keep_prob is not None or kind not in ("bernoulli", "dropout") else 0.5
            try:
                law = DiagonalSketch(self.d, kind, p=p, k=pr.k)
            except ValueError as e:
                raise ValueError(f"mast: {e}") from None
            self.target = SketchedProblem(self.problem, law)
        if pr.estimator in ("expected", "lsvrg") and not self.target.exact:
            raise ValueError(f"mast: estimator {pr.estimator} needs the exact grad f_D, which only quadratic base "
                             f"problems have (got {self.target.base.name}): use estimator 'sketch'")
        if pr.batch_size is not None and pr.estimator != "sketch":
            raise ValueError("mast: batch_size (option II) goes with estimator 'sketch'")

    @property
    def law(self) -> DiagonalSketch:
        return self.target.sketch

    def expected_smoothness(self) -> float:
        """L_exp = L_S_max * max_i L_i (or * max_ij L_ij for minibatches; see the class docstring)."""
        base = self.target.base
        Lf = base.L_sample_max if self.params.batch_size is not None else base.L_max
        return self.law.L_S_max * float(Lf)

    def theory_stepsize(self):
        est = self.params.estimator
        if est == "expected":
            return 1.0 / self.target.L
        if est == "lsvrg":
            return 1.0 / (6.0 * self.expected_smoothness())
        return 1.0 / (2.0 * self.expected_smoothness())

    # ---- the round ------------------------------------------------------------------------------
    def _exact_grads(self, x: torch.Tensor) -> torch.Tensor:
        """Every client's exact grad f_{D,i}(x), gathered densely (their mean)."""
        self.target.meter = self.problem.meter  # a wrapped plain problem counts on the run's meter
        return self.channel.uplink(self.target.grads(self.at_clients(x)))

    def init(self, x0):
        self.x = x0
        if self.params.estimator == "lsvrg":
            self._w = x0
            self._gw = self._exact_grads(x0)

    def _sketches(self) -> tuple[torch.Tensor, torch.Tensor]:
        S = self.law.sample(self.n, self.ctx.generator("method"), self.x.dtype, self.x.device)
        return S, (S != 0).sum(1)

    def _sketched_models(self, x: torch.Tensor, S: torch.Tensor, nnz, indexed: bool) -> torch.Tensor:
        """Client i receives the nonzero coordinates of S_i (x - v) and forms v + S_i (x - v)."""
        v = self.target.shift
        if self.law.kind == "identity":
            U = self.channel.send_down(self.channel.dense(S * (x - v)))
        else:
            U = self.channel.send_down(self.channel.sparse(S * (x - v), nnz, indexed=indexed))
        return v + U

    def _up(self, G: torch.Tensor, nnz) -> torch.Tensor:
        if self.law.kind == "identity":
            return self.channel.uplink(G)
        return self.channel.uplink(self.channel.sparse(G, nnz, indexed=False))

    def step(self):
        est, gamma, base = self.params.estimator, self.gamma, self.target.base
        if est == "expected":
            self.x = self.channel.broadcast(self.x - gamma * self._exact_grads(self.x))
            return
        S, nnz = self._sketches()
        Y = self._sketched_models(self.x, S, nnz, indexed=True)
        if est == "sketch":
            if self.params.batch_size is None:
                G = base.grads(Y)
            else:
                G = base.minibatch_grads(Y, self.params.batch_size, self.ctx.generator("noise"))
            self.x = self.x - gamma * self._up(S * G, nnz)
            return
        # lsvrg: the same sketches at x and at the reference w (the support is known: no indices)
        Yw = self._sketched_models(self._w, S, nnz, indexed=False)
        g = self._up(S * (base.grads(Y) - base.grads(Yw)), nnz) + self._gw
        x_old = self.x
        self.x = self.x - gamma * g
        if self.coin(self.params.p):
            self._w = x_old
            self._gw = self._exact_grads(self.channel.broadcast(x_old))
