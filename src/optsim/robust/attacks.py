"""Byzantine attacks: what the Byzantine clients send in place of their honest vectors.

An attack sees the round as an omniscient adversary does (the threat model of B1-B3): the honest
clients' vectors of the round ``honest`` (G, d), the Byzantine clients' own honest vectors ``own``
(B, d) (what they would have sent), and the round's ``context`` (``x``, the model, ``x0`` the
initial model); it returns the B vectors they send. Definitions (research notes, "Attacks -- exact
definitions"; mu, s: the coordinate-wise mean and standard deviation (ddof = 1) of ``honest``):

* ``none`` -- send the honest vectors (Byzantine clients that behave; also the label-flip attack,
  whose corruption is in the data: the Byzantine clients' labels are flipped, see
  :meth:`optsim.problems.Problem.flip_labels`);
* ``bit_flip`` -- send -own (Allen-Zhu et al. 2020's "bit flip" as coded by B1/B3: each Byzantine
  negates what it would have sent);
* ``sign_flip`` -- send -mu (byzfl's SignFlipping);
* ``ipm`` -- inner-product manipulation (Xie, Koyejo, Gupta 2020): send -eps mu (eps = 0.1 as in B1's
  code; byzfl's default is 2);
* ``alie`` -- "a little is enough" (Baruch, Baruch, Goldberg 2019): send mu - z s with
  z = Phi^{-1}((n - m - s*) / (n - m)), s* = floor(n/2 + 1) - m (m Byzantine of n): the variant of
  the epfml/B1 code (the paper's own variant, Phi^{-1}((n - s*)/n), is ``variant: baruch``);
  ``z`` overrides the formula;
* ``gaussian`` -- a fresh N(mean, sigma^2 I) vector per Byzantine client (defaults 0, 1);
* ``mimic`` -- send honest client ``target``'s vector (default the first honest one);
* ``shift_back`` -- B3 (Malinovsky et al. 2024): when the Byzantine clients are a strict majority
  of the round's senders each sends the vector x - x0 (the server's next step then moves back
  towards x0), otherwise the honest mean mu;
* ``inf`` -- +inf in every coordinate (a stress test of aggregators).

Byzantine clients are charged bits like honest ones: the channel counts what the round's message
format costs, whatever is inside.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, ClassVar

import torch

from ..specs import split_spec

__all__ = ["Attack", "ATTACKS", "register_attack", "make_attack", "alie_z"]

ATTACKS: dict[str, type["Attack"]] = {}


def register_attack(cls):
    ATTACKS[cls.name] = cls
    return cls


class Attack:
    """Base class (module docstring). ``data_level``: the corruption is in the data (label flip)."""

    name: ClassVar[str] = ""
    data_level: ClassVar[bool] = False

    def __init__(self, n: int, f: int):
        self.n, self.f = int(n), int(f)

    def __call__(self, honest: torch.Tensor, own: torch.Tensor, generator: torch.Generator | None = None,
                 context: dict[str, Any] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {}

    def describe(self) -> str:
        p = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.name}({p})" if p else self.name


def _mean(honest: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return honest.mean(0) if honest.shape[0] else torch.zeros(like.shape[-1], dtype=like.dtype, device=like.device)


@register_attack
class NoAttack(Attack):
    """Send the honest vectors (Byzantine clients that behave)."""

    name = "none"

    def __call__(self, honest, own, generator=None, context=None):
        return own


@register_attack
class LabelFlip(NoAttack):
    """The Byzantine clients compute honestly on flipped labels (binary +-1: y -> -y)."""

    name = "label_flip"
    data_level = True


@register_attack
class BitFlip(Attack):
    """Send the negative of the vector the client would have sent (B1/B3's bit flip)."""

    name = "bit_flip"

    def __call__(self, honest, own, generator=None, context=None):
        return -own


@register_attack
class SignFlip(Attack):
    """Send minus the honest mean (byzfl's sign flipping)."""

    name = "sign_flip"

    def __call__(self, honest, own, generator=None, context=None):
        return (-_mean(honest, own)).expand_as(own).clone()


@register_attack
class IPM(Attack):
    """Inner-product manipulation (Xie, Koyejo, Gupta 2020): send -eps times the honest mean."""

    name = "ipm"

    def __init__(self, n, f, eps: float = 0.1):
        super().__init__(n, f)
        self.eps = float(eps)

    def params(self):
        return {"eps": self.eps}

    def __call__(self, honest, own, generator=None, context=None):
        return (-self.eps * _mean(honest, own)).expand_as(own).clone()


def alie_z(n: int, m: int, variant: str = "epfml") -> float:
    """ALIE's z for m Byzantine of n clients: Phi^{-1}((n - m - s)/(n - m)) (epfml/B1 code) or
    Phi^{-1}((n - s)/n) (``baruch``, the paper's), s = floor(n/2 + 1) - m."""
    s = math.floor(n / 2 + 1) - m
    p = (n - m - s) / (n - m) if variant == "epfml" else (n - s) / n
    if not 0 < p < 1:
        raise ValueError(f"alie: the z formula is undefined for {m} Byzantine of {n} clients: give z")
    return NormalDist().inv_cdf(p)


@register_attack
class ALIE(Attack):
    """A little is enough (Baruch et al. 2019): send mu - z s, the honest coordinate-wise mean and std."""

    name = "alie"

    def __init__(self, n, f, z: float | None = None, variant: str = "epfml"):
        super().__init__(n, f)
        if variant not in ("epfml", "baruch"):
            raise ValueError(f"alie: variant must be 'epfml' or 'baruch', got {variant!r}")
        self.variant = variant
        self.z = float(z) if z is not None else (alie_z(n, f, variant) if f else 0.0)

    def params(self):
        return {"z": round(self.z, 6), "variant": self.variant}

    def __call__(self, honest, own, generator=None, context=None):
        if honest.shape[0] < 2:
            return _mean(honest, own).expand_as(own).clone()
        mu, s = honest.mean(0), honest.std(0, unbiased=True)
        return (mu - self.z * s).expand_as(own).clone()


@register_attack
class Gaussian(Attack):
    """Send a fresh Gaussian vector N(mean, sigma^2 I)."""

    name = "gaussian"

    def __init__(self, n, f, mean: float = 0.0, sigma: float = 1.0):
        super().__init__(n, f)
        self.mean, self.sigma = float(mean), float(sigma)

    def params(self):
        return {"mean": self.mean, "sigma": self.sigma}

    def __call__(self, honest, own, generator=None, context=None):
        z = torch.randn(own.shape, generator=generator, dtype=torch.float64).to(own)
        return self.mean + self.sigma * z


@register_attack
class Mimic(Attack):
    """Send a copy of one honest client's vector (``target``)."""

    name = "mimic"

    def __init__(self, n, f, target: int = 0):
        super().__init__(n, f)
        self.target = int(target)

    def params(self):
        return {"target": self.target}

    def __call__(self, honest, own, generator=None, context=None):
        if not honest.shape[0]:
            return own
        return honest[min(self.target, honest.shape[0] - 1)].expand_as(own).clone()


@register_attack
class ShiftBack(Attack):
    """Shift-back (B3): when a strict majority of the round's senders, send x - x0; else the honest mean."""

    name = "shift_back"

    def __call__(self, honest, own, generator=None, context=None):
        if own.shape[0] > honest.shape[0]:  # a strict majority of the round's senders
            ctx = context or {}
            if "x" not in ctx or "x0" not in ctx:
                raise ValueError("the shift_back attack needs the method's model and initial point (context x, x0)")
            return (ctx["x"] - ctx["x0"]).to(own).expand_as(own).clone()
        return _mean(honest, own).expand_as(own).clone()


@register_attack
class Inf(Attack):
    """Send +inf in every coordinate (a stress test of aggregators)."""

    name = "inf"

    def __call__(self, honest, own, generator=None, context=None):
        return torch.full_like(own, math.inf)


def make_attack(spec: Any, n: int, f: int) -> Attack:
    """An attack from a name (``"alie"``) or a mapping (``{"name": "ipm", "eps": 0.5}``)."""
    if isinstance(spec, Attack):
        return spec
    name, spec = split_spec(spec, "attack", ATTACKS)
    try:
        return ATTACKS[name](n, f, **spec)
    except TypeError as e:
        raise ValueError(f"attack '{name}': {e}") from None
