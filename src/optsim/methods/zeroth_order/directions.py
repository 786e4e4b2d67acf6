"""Search-direction laws of the direct-search methods (STP, MiSTP) and their constants.

Assumption 3 of Boucherouite, Malinovsky, Richtárik, Bergou (2024), "Minibatch stochastic three
points method" (after Bergou, Gorbunov, Richtárik (2020), STP): E||s||_2^2 = 1 and
E|<g, s>| >= mu_D ||g||_D for all g. Each law here satisfies it with equality, with the exact
constant (the papers print lower bounds or asymptotic values for the sphere):

* ``sphere``: s uniform on the unit sphere; ||.||_D = l2, mu_D = E|s_1| =
  Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2)) (about sqrt(2 / (pi d)); the papers' bound 1/sqrt(2 pi d));
* ``normal``: s ~ N(0, I/d) (so that E||s||^2 = 1); ||.||_D = l2, mu_D = sqrt(2 / (pi d)) (the
  MiSTP paper prints sqrt(2)/sqrt(pi d));
* ``coordinate``: s = e_i with i uniform; ||.||_D = l1, mu_D = 1/d.

All three also have E[s s^T] = I/d, so E<g, s>^2 = ||g||^2 / d (used by the directional stepsize
rule of :mod:`.stp`); ``sphere`` and ``coordinate`` have ||s|| = 1 always (``unit``).
Directions of R independent draws come as one (R, d) tensor.
"""
from __future__ import annotations

import math

import torch

__all__ = ["DIRECTIONS", "mu_D", "norm_D", "sample_directions"]

DIRECTIONS = ("sphere", "normal", "coordinate")


def sample_directions(kind: str, R: int, d: int, generator: torch.Generator, dtype=torch.float64,
                      device="cpu") -> torch.Tensor:
    """R independent directions of law ``kind`` as an (R, d) tensor."""
    if kind == "coordinate":
        i = torch.randint(d, (R,), generator=generator)
        S = torch.zeros(R, d, dtype=dtype)
        S[torch.arange(R), i] = 1.0
        return S.to(device)
    Z = torch.randn(R, d, generator=generator, dtype=torch.float64)
    if kind == "sphere":
        Z = Z / Z.norm(dim=1, keepdim=True)
    elif kind == "normal":
        Z = Z / math.sqrt(d)
    else:
        raise ValueError(f"unknown direction law {kind!r}: use one of {', '.join(DIRECTIONS)}")
    return Z.to(device, dtype)


def mu_D(kind: str, d: int) -> float:
    """The exact constant mu_D = inf_g E|<g, s>| / ||g||_D of the law (see the module docstring)."""
    if kind == "sphere":
        return math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)
    if kind == "normal":
        return math.sqrt(2.0 / (math.pi * d))
    if kind == "coordinate":
        return 1.0 / d
    raise ValueError(f"unknown direction law {kind!r}: use one of {', '.join(DIRECTIONS)}")


def norm_D(kind: str, g: torch.Tensor) -> torch.Tensor:
    """||g||_D of the law (l1 for coordinate directions, l2 otherwise), over the last dimension."""
    return g.abs().sum(-1) if kind == "coordinate" else g.norm(dim=-1)
