"""Client samplers: which clients take part in a round, with their inclusion probabilities.

Every sampler exposes ``probs`` (n,), the marginal probability p_i that client i is sampled,
so a method can reweight for unbiasedness (e.g. sum_{i in S} g_i / (n p_i)).

* ``full``: every client, every round;
* ``nice``: tau clients uniformly without replacement (p_i = tau / n);
* ``independent``: client i independently with probability p_i (one value or a list);
* ``importance``: independent sampling with p_i proportional to L_i, capped at 1, summing to tau
  (the expected number of clients);
* ``cyclic``: regularized participation, the clients split into R groups that take part in turn
  (p_i = 1 / R).
"""
from __future__ import annotations

import difflib
from typing import Any, Callable

import torch

__all__ = ["ClientSampler", "Full", "Nice", "Independent", "Cyclic", "SAMPLERS", "make_sampler", "capped_proportional",
           "register_sampler"]


class ClientSampler:
    name = ""

    def __init__(self, n: int):
        self.n = int(n)

    @property
    def probs(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def is_full(self) -> bool:
        return False

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        """Sorted ids (LongTensor) of this round's clients."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class Full(ClientSampler):
    name = "full"

    @property
    def probs(self):
        return torch.ones(self.n, dtype=torch.float64)

    @property
    def is_full(self):
        return True

    def sample(self, generator):
        return torch.arange(self.n)


class Nice(ClientSampler):
    name = "nice"

    def __init__(self, n: int, tau: int):
        super().__init__(n)
        if isinstance(tau, bool) or not isinstance(tau, int) or not 1 <= tau <= n:
            raise ValueError(f"nice sampling: tau must be an integer in [1, n = {n}], got {tau!r}")
        self.tau = tau

    @property
    def probs(self):
        return torch.full((self.n,), self.tau / self.n, dtype=torch.float64)

    @property
    def is_full(self):
        return self.tau == self.n

    def sample(self, generator):
        return torch.randperm(self.n, generator=generator)[: self.tau].sort().values

    def describe(self):
        return f"nice(tau={self.tau})"


class Independent(ClientSampler):
    name = "independent"

    def __init__(self, n: int, p):
        super().__init__(n)
        p = torch.as_tensor(p, dtype=torch.float64)
        if p.ndim == 0:
            p = p.expand(n).clone()
        if p.shape != (n,):
            raise ValueError(f"independent sampling: give one probability or {n}, got {tuple(p.shape)}")
        if (~torch.isfinite(p) | (p <= 0) | (p > 1)).any():
            raise ValueError("independent sampling: probabilities must be in (0, 1] (importance sampling needs L_i > 0)")
        self._p = p

    @property
    def probs(self):
        return self._p

    @property
    def is_full(self):
        return bool((self._p == 1).all())

    def sample(self, generator):
        return torch.nonzero(torch.rand(self.n, generator=generator, dtype=torch.float64) < self._p).flatten()

    def describe(self):
        return f"{self.name}(E|S|={float(self._p.sum()):.3g})"


class Cyclic(ClientSampler):
    """Regularized (cyclic) client participation: Malinovsky, Horváth, Burlachenko, Richtárik
    (2023), "Federated learning with regularized client participation" (arXiv 2302.03662).

    The n clients are split into R groups (sizes differing by at most one); every meta-epoch of
    R rounds each group takes part exactly once, so every client participates exactly once per
    meta-epoch. With ``reshuffle`` (default) the grouping and the order are a fresh random
    permutation at the start of every meta-epoch; otherwise the first permutation is reused.
    Marginal probability of participating in a round: 1/R (``probs``). The sampler keeps state
    between rounds (the meta-epoch's groups and the position in it).
    """

    name = "cyclic"

    def __init__(self, n: int, groups: int, reshuffle: bool = True):
        super().__init__(n)
        if isinstance(groups, bool) or not isinstance(groups, int) or not 1 <= groups <= n:
            raise ValueError(f"cyclic sampling: groups must be an integer in [1, n = {n}], got {groups!r}")
        self.groups, self.reshuffle = groups, bool(reshuffle)
        self._order: list[torch.Tensor] | None = None
        self._pos = 0

    @property
    def probs(self):
        return torch.full((self.n,), 1.0 / self.groups, dtype=torch.float64)

    @property
    def is_full(self):
        return self.groups == 1

    def sample(self, generator):
        if self._pos == 0 and (self._order is None or self.reshuffle):
            perm = torch.randperm(self.n, generator=generator)
            self._order = [g.sort().values for g in torch.tensor_split(perm, self.groups)]
        S = self._order[self._pos]
        self._pos = (self._pos + 1) % self.groups
        return S

    def describe(self):
        return f"cyclic(R={self.groups})"


def capped_proportional(weights: torch.Tensor, total: float) -> torch.Tensor:
    """Probabilities p_i = min(1, c w_i) with sum_i p_i = total (water-filling on the cap)."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    n = w.shape[0]
    if not 0 < total <= n:
        raise ValueError(f"expected number of clients must be in (0, {n}], got {total}")
    p = torch.zeros(n, dtype=torch.float64)
    capped = torch.zeros(n, dtype=torch.bool)
    for _ in range(n):
        free = ~capped
        rest = total - capped.sum()
        p[free] = rest * w[free] / w[free].sum()
        p[capped] = 1.0
        over = free & (p > 1)
        if not over.any():
            break
        capped |= over
    return p.clamp_max(1.0)


def make_sampler(spec: Any, n: int, L_i: torch.Tensor | None = None) -> ClientSampler:
    """Build a sampler from ``"full"`` or ``{"name": "nice", "tau": 5}`` and the like."""
    if spec is None:
        spec = "full"
    if isinstance(spec, ClientSampler):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    name = spec.pop("name", None)
    params = {"full": [], "nice": ["tau"], "independent": ["p"], "importance": ["tau"]}
    params.update({k: list(v[1]) for k, v in REGISTERED.items()})
    if name not in params:
        close = difflib.get_close_matches(str(name), params, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown sampler '{name}'{hint} (available: {', '.join(params)})")
    optional = list(REGISTERED[name][2]) if name in REGISTERED else []
    for key in spec:
        if key not in params[name] + optional:
            raise ValueError(f"sampler '{name}' has no parameter '{key}' (parameters: {', '.join(params[name] + optional) or 'none'})")
    missing = [k for k in params[name] if k not in spec]
    if missing:
        raise ValueError(f"sampler '{name}' needs {', '.join(missing)}")
    if name in REGISTERED:
        return REGISTERED[name][0](n, **spec)
    if name == "full":
        return Full(n)
    if name == "nice":
        return Nice(n, spec["tau"])
    if name == "independent":
        return Independent(n, spec["p"])
    if L_i is None:
        raise ValueError("importance sampling needs the clients' smoothness constants L_i")
    s = Independent(n, capped_proportional(L_i, float(spec["tau"])))
    s.name = "importance"
    return s


SAMPLERS = ["full", "nice", "independent", "importance"]

#: samplers registered with :func:`register_sampler` (``cyclic`` below, or a user's own), by name:
#: (factory(n, **params), required parameter names, optional parameter names)
REGISTERED: dict[str, tuple[Callable[..., ClientSampler], tuple[str, ...], tuple[str, ...]]] = {}


def register_sampler(name: str, factory: Callable[..., ClientSampler], required=(), optional=()) -> None:
    """Make ``{"name": name, ...}`` buildable by :func:`make_sampler` (and listed by ``optsim list samplers``)."""
    REGISTERED[name] = (factory, tuple(required), tuple(optional))
    if name not in SAMPLERS:
        SAMPLERS.append(name)


register_sampler("cyclic", lambda n, groups, reshuffle=True: Cyclic(n, groups, reshuffle),
                 required=("groups",), optional=("reshuffle",))
