"""What the Byzantine-robust methods share.

* :class:`RobustMethod` -- a :class:`~optsim.methods.Method` that aggregates robustly: the attack's
  view of the round (:meth:`~RobustMethod.attack_context`), the clipping heuristic of Malinovsky,
  Richtárik, Horváth, Gorbunov (2024), "Byzantine robustness and partial participation can be
  achieved at once: just clip gradient differences", eq. (10), for any method whose step is
  x+ = x - gamma * (its aggregate) (:meth:`~RobustMethod.robust_aggregate`), and the constants of
  the honest clients that the theorems are stated with;
* :func:`honest_sampling_probabilities` -- B3's p_G and P_{G_C} (hypergeometric), in exact arithmetic.
"""
from __future__ import annotations

import math
from fractions import Fraction

import torch
from pydantic import Field

from ..base import Method, MethodParams

__all__ = ["RobustMethod", "RobustParams", "ClipHeuristicParams", "honest_sampling_probabilities"]


class RobustParams(MethodParams):
    #: c of the aggregator's (delta, c)-robustness (B1/B3 Definition 2.1) for the theorem's stepsize,
    #: when the aggregator has no known constant (none of the implemented ones has one)
    aggregator_c: float | None = Field(None, gt=0)


class ClipHeuristicParams(RobustParams):
    #: lambda of the clipping heuristic (B3 eq. 10): the server aggregates the clients' vectors'
    #: differences to its previous aggregate, clipped to lambda ||x^k - x^{k-1}||; None: off
    clip_heuristic: float | None = Field(None, gt=0)


class RobustMethod(Method):
    """Base of the robust methods (module docstring). Subclasses call :meth:`robust_aggregate` on what
    ``channel.receive`` delivers and pass :meth:`attack_context` to it."""

    uses = ("aggregator",)
    state = ("x", "x0", "prev_aggregate")

    x0: torch.Tensor
    prev_aggregate: torch.Tensor | None = None

    def attack_context(self) -> dict:
        """What an omniscient attack may read: the current model ``x`` and the initial ``x0``."""
        return {"x": self.x, "x0": self.x0}

    def robust_aggregate(self, V: torch.Tensor) -> torch.Tensor:
        """The round's aggregate of the received rows ``V``: the method's aggregator, or with
        ``clip_heuristic`` = lambda (B3 eq. 10) g^k = g^{k-1} + Agg({clip_{lambda_k}(v_i - g^{k-1})}),
        lambda_k = lambda ||x^k - x^{k-1}|| = lambda gamma ||g^{k-1}|| (the step is x^k = x^{k-1} -
        gamma g^{k-1}). The first round aggregates plainly."""
        lam = getattr(self.params, "clip_heuristic", None)
        prev = self.prev_aggregate
        if lam is None or prev is None:
            out = self.aggregate(V)
        else:
            tau = lam * self.gamma * float(torch.linalg.vector_norm(prev))
            out = prev + self.aggregate(V - prev, clip=tau)
        if lam is not None:
            self.prev_aggregate = out
        return out

    def deterministic(self) -> bool:
        agg = self.aggregator
        return (super().deterministic() and self.channel.threat is None
                and (agg is None or not getattr(agg, "randomized", True)))

    # ---- the honest clients' constants (the theorems' G, delta, L, L_+-, script L_+-) -------------
    @property
    def honest(self) -> torch.Tensor:
        """Ids of the honest clients (all without a threat model)."""
        t = self.channel.threat
        return torch.arange(self.n) if t is None else t.honest

    @property
    def byzantine_count(self) -> int:
        t = self.channel.threat
        return 0 if t is None else t.count

    @property
    def delta(self) -> float:
        """delta = B / n, the Byzantine fraction the theorems assume known."""
        return self.byzantine_count / self.n

    def c_delta(self) -> float:
        """c * delta of the (delta, c)-robust aggregator (B1/B3 Definition 2.1); 0 without Byzantines."""
        if self.byzantine_count == 0:
            return 0.0
        c = getattr(self.params, "aggregator_c", None)
        if c is None:
            c = getattr(self.aggregator, "c", None)
        if c is None:
            name = self.aggregator.describe() if self.aggregator is not None else "mean"
            raise NotImplementedError(f"{self.name}: the aggregator {name} has no known (delta, c)-robustness "
                                      "constant for the theorem's stepsize: set 'stepsize' (or 'aggregator_c')")
        return float(c) * self.delta

    def honest_L_tilde(self) -> float:
        """sqrt(mean_{i honest} L_i^2): bounds L of the honest objective and the global Hessian
        variance constant L_+- (B1 Assumption 2.3)."""
        return float(self.problem.L_i[self.honest].pow(2).mean().sqrt())

    def honest_sample_smoothness(self, reduce: str = "mean") -> float:
        """sqrt(mean (or max) over honest i of (1/m_i) sum_j L_ij^2): bounds the local Hessian variance
        constant (B1 Assumption 2.4, script L_+-) and the per-sample constants of B2."""
        Ls = self.problem.L_samples
        if Ls is None:
            raise ValueError(f"{self.name} needs a finite-sum problem with per-sample smoothness constants, "
                             f"got {self.problem.name}")
        h = self.honest
        v = Ls[h].pow(2).sum(1) / self.problem.m.cpu().to(torch.float64)[h]
        return math.sqrt(float(v.mean() if reduce == "mean" else v.max()))

    def honest_sample_max(self) -> float:
        """max over honest i and samples j of L_ij (B3 Assumption 2.6's script L)."""
        Ls = self.problem.L_samples
        if Ls is None:
            raise ValueError(f"{self.name} needs a finite-sum problem with per-sample smoothness constants, "
                             f"got {self.problem.name}")
        return float(Ls[self.honest].max())


def honest_sampling_probabilities(n: int, G: int, C: int, delta: Fraction | float) -> tuple[float, float]:
    """B3 (Malinovsky et al. 2024), Sec. 4: for C clients sampled uniformly without replacement out of
    n, G of them honest, p_G = P(at least ceil((1 - delta) C) sampled are honest) and
    P_{G_C} = (C / (n p_G)) sum_{t >= ceil((1 - delta) C)} binom(G-1, t-1) binom(n-G, C-t) / binom(n-1, C-1).
    The threshold is computed in rational arithmetic (a float (1 - delta) C can round above an integer)."""
    d = Fraction(delta).limit_denominator(10 ** 9) if isinstance(delta, float) else Fraction(delta)
    t0 = math.ceil((1 - d) * C)
    ts = range(max(t0, 0), C + 1)
    pG = Fraction(sum(math.comb(G, t) * math.comb(n - G, C - t) for t in ts), math.comb(n, C))
    if pG == 0:
        return 0.0, 0.0
    inner = Fraction(sum(math.comb(G - 1, t - 1) * math.comb(n - G, C - t) for t in ts if t >= 1),
                     math.comb(n - 1, C - 1))
    return float(pG), float(Fraction(C, n) / pG * inner)
