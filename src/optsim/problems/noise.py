"""Noise laws of stochastic oracles: Gaussian and heavy-tailed (Student-t, symmetric Pareto).

A :class:`NoiseLaw` draws i.i.d. zero-mean coordinates z_k of unit scale; a problem adds
``sigma * z`` to its exact gradients (:class:`~optsim.problems.stochastic_quadratic.StochasticQuadratic`).
The heavy-tailed laws are those of the bounded alpha-th moment assumption of the heavy-tail
literature (e.g. Sadiev et al. 2023, "High-probability bounds for stochastic optimization and
variational inequalities: the case of unbounded variance", ICML 2023):
E||g(x) - grad f(x)||^alpha <= sigma_alpha^alpha for some alpha in (1, 2], the variance being
infinite when the law's tail index is at most 2.

* ``gaussian``: z ~ N(0, 1); every moment is finite.
* ``student_t``: z ~ t_nu with ``tail`` = nu degrees of freedom; E|z|^p < infinity iff p < nu.
  Drawn without rejection from two uniforms U, W on (0, 1]: z = cos(2 pi U) sqrt(nu (W^(-2/nu) - 1))
  (Bailey's polar method, 1994, with the point of the unit disk written in polar form: its angle and
  its squared radius W are independent uniforms).
* ``pareto``: symmetric Pareto type II (Lomax) with tail index ``tail`` = a: |z| = W^(-1/a) - 1,
  an independent random sign; P(|z| > t) = (1 + t)^(-a), E|z|^p < infinity iff p < a.

Exact absolute moments E|z|^p (:meth:`NoiseLaw.abs_moment`):
Gaussian 2^(p/2) Gamma((p+1)/2) / sqrt(pi); Student-t nu^(p/2) Gamma((p+1)/2) Gamma((nu-p)/2) /
(sqrt(pi) Gamma(nu/2)); Lomax Gamma(p+1) Gamma(a-p) / Gamma(a). For a vector z of d such coordinates
and p <= 2, ||z||^p = (sum_k z_k^2)^(p/2) <= sum_k |z_k|^p, so E||z||^p <= d E|z_1|^p
(:meth:`NoiseLaw.vector_moment_bound`).
"""
from __future__ import annotations

import math

import torch

__all__ = ["NoiseLaw", "as_noise_law"]

KINDS = ("gaussian", "student_t", "pareto")


class NoiseLaw:
    """A zero-mean law of one noise coordinate (module docstring). ``tail``: the degrees of freedom
    nu (``student_t``) or the tail index a (``pareto``); it must exceed 1 (a finite mean)."""

    def __init__(self, kind: str = "gaussian", tail: float | None = None):
        if kind not in KINDS:
            raise ValueError(f"noise law '{kind}' is unknown: use one of {', '.join(KINDS)}")
        if kind == "gaussian":
            if tail is not None:
                raise ValueError("noise law 'gaussian' has no tail index: leave 'tail' unset")
        elif tail is None or not float(tail) > 1.0:
            raise ValueError(f"noise law '{kind}' needs tail > 1 (a zero mean; alpha-th moments exist for alpha < tail), "
                             f"got {tail}")
        self.kind = kind
        self.tail = None if tail is None else float(tail)

    def __repr__(self) -> str:
        return f"NoiseLaw({self.kind!r}" + ("" if self.tail is None else f", tail={self.tail:g}") + ")"

    @property
    def heavy_tailed(self) -> bool:
        """Whether the variance is infinite (tail index at most 2)."""
        return self.tail is not None and self.tail <= 2.0

    def sample(self, shape, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
        """i.i.d. coordinates of the law, of the given shape (drawn in float64 on the CPU)."""
        if self.kind == "gaussian":
            return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
        V = torch.rand(shape, generator=generator, dtype=torch.float64)  # W = 1 - V in (0, 1]
        U = torch.rand(shape, generator=generator, dtype=torch.float64)
        logW = V.neg_().log1p_()  # in place: one buffer per draw
        if self.kind == "student_t":
            nu = self.tail
            z = U.mul_(2 * math.pi).cos_().mul_(logW.mul_(-2.0 / nu).expm1_().mul_(nu).sqrt_())
        else:  # symmetric Lomax: |z| = W^(-1/a) - 1, sign from U
            z = logW.mul_(-1.0 / self.tail).expm1_().mul_(torch.where(U < 0.5, -1.0, 1.0))
        return z.to(dtype)

    def abs_moment(self, p: float) -> float:
        """E|z|^p of one coordinate (infinity where p >= tail)."""
        p = float(p)
        if p <= -1:
            raise ValueError(f"abs_moment needs p > -1, got {p}")
        if self.tail is not None and p >= self.tail:
            return math.inf
        lg = math.lgamma
        if self.kind == "gaussian":
            return math.exp(0.5 * p * math.log(2.0) + lg((p + 1) / 2) - 0.5 * math.log(math.pi))
        if self.kind == "student_t":
            nu = self.tail
            return math.exp(0.5 * p * math.log(nu) + lg((p + 1) / 2) + lg((nu - p) / 2) - 0.5 * math.log(math.pi) - lg(nu / 2))
        return math.exp(lg(p + 1) + lg(self.tail - p) - lg(self.tail))

    @property
    def variance(self) -> float:
        """E z^2 (infinity for a heavy-tailed law)."""
        return self.abs_moment(2.0)

    def vector_moment_bound(self, alpha: float, d: int) -> float:
        """A bound on E||z||^alpha for z of d i.i.d. coordinates, alpha in (0, 2]: d E|z_1|^alpha
        (equality for d = 1)."""
        if not 0 < alpha <= 2:
            raise ValueError(f"vector_moment_bound needs alpha in (0, 2], got {alpha}")
        return d * self.abs_moment(alpha)


def as_noise_law(law) -> NoiseLaw:
    """A :class:`NoiseLaw` from None (Gaussian), a kind name, a mapping {kind, tail} or a law."""
    if law is None:
        return NoiseLaw()
    if isinstance(law, NoiseLaw):
        return law
    if isinstance(law, str):
        return NoiseLaw(law)
    if isinstance(law, dict):
        extra = set(law) - {"kind", "tail"}
        if extra:
            raise ValueError(f"noise law: unknown keys {sorted(extra)}: use 'kind' and 'tail'")
        return NoiseLaw(law.get("kind", "gaussian"), law.get("tail"))
    raise ValueError(f"noise law: expected a kind name, {{kind, tail}} or a NoiseLaw, got {type(law).__name__}")
