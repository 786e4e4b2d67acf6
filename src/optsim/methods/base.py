"""The method interface: a method is its paper's math over client-indexed tensors.

Two kinds of method can be written; each is a base class with documented hooks, and the runner
(:class:`optsim.experiment.runner.Session`), checkpoints and replica stacking use only these:

* :class:`Method` -- **round-based** (almost every method): ``init(x0)`` and ``step()``, one
  synchronous round each; simulated time comes from the round's usage (the meter) and the run's
  :class:`~optsim.clock.TimeModel`.
* :class:`TimedMethod` -- **owns simulated time**: the method moves the clock itself
  (``attach_timing``, ``advance(updates, until)``, ``arrivals``, ``now``). Asynchronous workers
  subclass :class:`optsim.methods.event.EventMethod` (jobs on the one event engine of
  :mod:`optsim.clock.engine`, the method being its arrival rule); schedule-driven simulations
  (pipelines, rounds with computed durations) subclass :class:`TimedMethod` directly and move a
  :class:`~optsim.clock.SimulatedClock`.

Every method names itself, cites its paper, declares its parameters as a pydantic model
``Params`` (validated when the config is loaded), says which shared components it takes
(``uses``: an uplink ``compressor``, a ``down_compressor``, a client ``sampler``), declares
the attributes it carries between rounds (``state``, see :mod:`optsim.state`), and implements

* ``theory_stepsize()`` -- its paper's theoretical stepsize (the default; users scale it with
  ``stepsize_mult`` or set ``stepsize``),
* ``init(x0)`` -- its state (client state (n, d), server state (d,)),
* ``step()`` -- one round, talking to other parties only through ``self.channel``, and setting
  ``self.x``, the model the metrics evaluate.

A method never counts anything: the channel counts bits, the problem counts oracle calls.

A method may declare ``replica_batched = True``: its ``init``/``step`` are written so that they
also run on R stacked replicas (the model x of shape (R, d), client state (R, n, d), ``gamma`` an
(R, 1) tensor used on server vectors only): it forms client inputs with :meth:`Method.at_clients`
and client state with :meth:`Method.zeros_clients`, compresses with :meth:`Method.compress`,
draws random numbers only through its compressor, and keeps every tensor attribute
replica-stacked. The batched runner (:mod:`optsim.experiment.batched`) then runs a grid of
stepsizes or seeds as one computation whenever :meth:`Method.replicable` holds; each replica's
compressor draws from that replica's own generator, so each equals its separate run.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, PositiveFloat

from ..channel import Channel
from ..clock import SimulatedClock, Timing, make_timing, round_clock
from ..compress import Compressor, Message, ReplicaMismatch, make_compressor
from ..compress.base import check_compressor_spec
from ..problems import Problem
from ..rng import generator as make_generator
from ..sampling import ClientSampler, make_sampler
from ..state import Stateful

__all__ = ["Method", "TimedMethod", "MethodParams", "MethodSpec", "Context", "METHODS", "register_method",
           "get_method", "build_method"]

METHODS: dict[str, type["Method"]] = {}

#: where a method's default stepsize comes from: ``theorem`` (the cited theorem's stepsize, as
#: stated), ``reading`` (a theorem's form whose constants could not be re-checked against the
#: paper's text), ``derived`` (our derivation or a documented conservative choice, e.g. where the
#: paper gives no constant), ``explicit`` (no default: the user sets ``stepsize``)
STEPSIZE_SOURCES = ("theorem", "reading", "derived", "explicit")

#: Keys of a method's config that are not its Params.
COMPONENT_KEYS = ("compressor", "down_compressor", "sampler", "aggregator")


class MethodParams(BaseModel):
    """Parameters every method has."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: explicit stepsize; default: ``stepsize_mult`` * the paper's theoretical stepsize
    stepsize: PositiveFloat | None = None
    stepsize_mult: PositiveFloat = 1.0


@dataclass
class Context:
    """What a method runs against: the problem, the channel and the shared components, each with
    its own random generator derived from the run seed."""

    problem: Problem
    channel: Channel
    seed: int = 0
    compressor: Compressor | None = None
    down_compressor: Compressor | None = None
    sampler: ClientSampler | None = None
    #: a robust aggregator (:mod:`optsim.robust.aggregators`) for methods whose ``uses`` has it
    aggregator: Any = None
    #: per-component seed overrides (e.g. {"compressor": 7}); the others derive from ``seed``
    seeds: dict[str, int] = field(default_factory=dict)
    _generators: dict = field(default_factory=dict)
    #: a replica-stacked run: the contexts of its replicas, one per row (their own generators)
    replicas: list["Context"] | None = None

    def generator(self, component: str) -> torch.Generator:
        if component not in self._generators:
            self._generators[component] = make_generator(self.seeds.get(component, self.seed), component)
        return self._generators[component]


class Method(Stateful):
    """A round-based method, and the base class of all methods (see the module docstring)."""

    name: ClassVar[str] = ""
    #: "Authors (year), Title, Algorithm k"
    paper: ClassVar[str] = ""
    #: where the default stepsize comes from (:data:`STEPSIZE_SOURCES`); the docstring says it in words
    stepsize_source: ClassVar[str] = ""
    Params: ClassVar[type[MethodParams]] = MethodParams
    uses: ClassVar[tuple[str, ...]] = ()
    #: init/step also run replica-stacked (see the module docstring)
    replica_batched: ClassVar[bool] = False
    #: rounds depend on :meth:`coin` draws (replicas of one stack then share the method's seed)
    draws_coins: ClassVar[bool] = False
    #: the attributes carried between rounds (checkpoints and replica stacking use exactly these)
    state: ClassVar[tuple[str, ...]] = ("x",)
    #: problem structures the method's update accounts for, beyond a smooth f on R^d: "nonsmooth" (it
    #: applies prox of the problem's Psi), "manifold" (it moves by the problem's exponential map), "operator"
    #: (it solves a variational inequality: the oracles are operator values; such a method is refused on a
    #: minimization problem); a problem with a structure its method does not handle is refused before the run
    handles: ClassVar[tuple[str, ...]] = ()

    x: torch.Tensor

    def __init__(self, ctx: Context, params: MethodParams | None = None):
        self.ctx = ctx
        self.params = params if params is not None else self.Params()
        self.problem, self.channel = ctx.problem, ctx.channel
        self.n, self.d = self.problem.n, self.problem.d
        self.compressor = ctx.compressor
        self.down_compressor = ctx.down_compressor
        self.sampler = ctx.sampler
        self.aggregator = ctx.aggregator
        self._check_structure()
        self.check()

    def _check_structure(self) -> None:
        p = self.problem
        if p.operator is not None and "operator" not in self.handles:
            vi = ", ".join(sorted(n for n, c in METHODS.items() if "operator" in c.handles))
            raise ValueError(f"{self.name} minimizes a function, and {p.name} is a variational inequality (its oracles "
                             f"return operator values F_i(z)): use a VI method ({vi})")
        if p.operator is None and "operator" in self.handles:
            raise ValueError(f"{self.name} solves variational inequalities, and {p.name} is a minimization problem: "
                             f"set 'problem' to a game (name: quadratic_game) or use a minimization method "
                             f"(e.g. clipped_sgd)")
        if p.nonsmooth is not None and "nonsmooth" not in self.handles:
            raise ValueError(f"{self.name} minimizes a smooth f only, and {p.name} has a nonsmooth term "
                             f"({p.nonsmooth!r}): use a method with a prox step (e.g. prox_clipped_sgd_shift)")
        M = p.manifold
        if M is not None and getattr(M, "name", "") != "euclidean" and "manifold" not in self.handles:
            raise ValueError(f"{self.name} moves in R^d, and {p.name} lives on the {M.name} manifold: use a "
                             f"Riemannian method (r_sgd, r_lsvrg, r_page, r_marina, r_svrg)")

    def check(self) -> None:
        """Refuse component combinations the paper's method is not defined for."""

    @classmethod
    def component_dim(cls, component: str, problem: Problem) -> int:
        """Length of the vectors the ``component`` compressor acts on: the model's ``d`` by default
        (a method that compresses other objects, e.g. packed Hessians, overrides this)."""
        return problem.d

    # ---- theory ----------------------------------------------------------------------------------
    def theory_stepsize(self) -> float:
        raise NotImplementedError(f"{self.name} has no theoretical stepsize: set 'stepsize'")

    @cached_property
    def gamma(self) -> float:
        """The stepsize in use."""
        if self.params.stepsize is not None:
            return float(self.params.stepsize)
        return self.params.stepsize_mult * float(self.theory_stepsize())

    # ---- the round ---------------------------------------------------------------------------------
    def init(self, x0: torch.Tensor) -> None:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError

    # ---- the runner's hooks (round-based; :class:`TimedMethod` overrides them) ---------------------
    def make_clock(self, time, seed: int = 0):
        """The run's clock for the time config ``time``: synchronous rounds, each timed from its
        usage by the :class:`~optsim.clock.TimeModel` (``seed``: the clock's random stream)."""
        return round_clock(time, self.n)

    def advance(self, updates: int, until: float | None = None) -> int:
        """Run up to ``updates`` rounds without passing simulated time ``until``; returns how many
        were run. A round-based method runs one (the runner closes each round before the next)."""
        self.step()
        return 1

    def counters(self) -> dict[str, float]:
        """Trace columns the method reports itself (e.g. ``comm_rounds`` of event-driven methods)."""
        return {}

    def trace_meta(self) -> dict[str, Any]:
        """What the method adds to the trace's metadata when the run ends."""
        return {}

    def replicable(self) -> bool:
        """Whether R copies of this run (differing only in the stepsize or the seed) can run
        replica-stacked with each copy equal to its separate run: a ``replica_batched`` method (with
        client sampling, the copies of one stack must share the sampler's seed, so that they sample
        the same clients: :meth:`sample_clients` checks it)."""
        return self.replica_batched and self.channel.threat is None and self.channel.privacy is None

    @property
    def samples_clients(self) -> bool:
        """Whether the participating clients are drawn at random."""
        return self.sampler is not None and not self.sampler.is_full

    def check_privacy(self, privatizer) -> None:
        """Refuse a differential-privacy mechanism (:class:`optsim.privacy.Privatizer`) this method
        cannot run under, with a one-line ValueError naming the fix (default: any is accepted)."""

    def deterministic(self) -> bool:
        """Whether the run draws no random numbers (its seed changes nothing): no randomized
        compressor, no client sampling, no coins."""
        comps = (self.compressor, self.down_compressor)
        private = self.channel.privacy is not None and self.channel.privacy.noise_multiplier > 0
        return (all(c is None or not c.randomized for c in comps) and not self.samples_clients and not self.draws_coins
                and not private)

    # ---- helpers for subclasses ------------------------------------------------------------------
    def zeros_clients(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """Zero client state (n, d); (R, n, d) for a replica-stacked model ``x`` (R, d)."""
        lead = () if x is None else tuple(x.shape[:-1])
        return torch.zeros(*lead, self.n, self.d, dtype=self.problem.dtype, device=self.problem.device)

    def at_clients(self, x: torch.Tensor, m: int | None = None) -> torch.Tensor:
        """The server model ``x`` (d,) as the input of every client (n, d), or of ``m`` sampled
        clients (m, d) (a view; (R, d) -> (R, n or m, d))."""
        return x.unsqueeze(-2).expand(*x.shape[:-1], self.n if m is None else m, self.d)

    def compress(self, X: torch.Tensor, clients=None) -> Message:
        """The uplink compressor applied to client rows X ((m, d), or replica-stacked (R, m, d)
        for a deterministic compressor whose bits do not depend on the replica)."""
        if X.ndim == 2:
            return self.compressor(X, self.ctx.generator("compressor"), clients)
        generators = [ctx.generator("compressor") for ctx in self.ctx.replicas] if self.compressor.randomized else None
        return self.compressor.compress_replicas(X, generators, clients)

    def aggregate(self, V: torch.Tensor, clip: float | None = None) -> torch.Tensor:
        """The server's robust aggregate of vectors it holds (e.g. from ``channel.receive``): the
        method's ``aggregator`` (the mean when it has none), after clipping to ``clip``; see
        :meth:`optsim.channel.Channel.aggregate`."""
        return self.channel.aggregate(V, self.aggregator, self.ctx.generator("aggregator"), clip)

    def compress_down(self, x: torch.Tensor) -> Message:
        """The downlink compressor applied to one server vector (a one-row message)."""
        return self.down_compressor(x.reshape(1, -1), self.ctx.generator("down_compressor"))

    def sample_clients(self) -> torch.Tensor:
        if self.ctx.replicas is None:
            return self.sampler.sample(self.ctx.generator("sampler"))
        drawn = [self.sampler.sample(ctx.generator("sampler")) for ctx in self.ctx.replicas]
        if any(not torch.equal(S, drawn[0]) for S in drawn[1:]):
            raise ReplicaMismatch("replica-stacked runs sampled different clients")
        return drawn[0]

    def coin(self, p: float) -> bool:
        """A Bernoulli(p) draw from the method's own generator (shared by all clients); replica-stacked,
        every replica draws from its own and all must agree (they share the method's seed)."""
        if self.ctx.replicas is None:
            return bool(torch.rand((), generator=self.ctx.generator("method"), dtype=torch.float64) < p)
        drawn = {bool(torch.rand((), generator=ctx.generator("method"), dtype=torch.float64) < p)
                 for ctx in self.ctx.replicas}
        if len(drawn) > 1:
            raise ReplicaMismatch("replica-stacked runs drew different coins")
        return drawn.pop()

    @property
    def omega(self) -> float:
        w = self.compressor.omega
        if w is None:
            raise ValueError(f"{self.name} needs an unbiased compressor, got {self.compressor.describe()}")
        return w

    @property
    def alpha(self) -> float:
        a = self.compressor.alpha
        if a is None:
            raise ValueError(f"{self.name} needs a contractive compressor (e.g. top_k), got {self.compressor.describe()}")
        return a


class TimedMethod(Method):
    """A method that owns simulated time (see the module docstring). Hooks:

    * ``attach_timing(timing)`` -- use the run's job durations (:class:`~optsim.clock.Timing`:
      compute-time model and links); returns the clock the runner reads (``now``), a
      :class:`~optsim.clock.SimulatedClock` whose ``advance`` does not move with rounds;
    * ``advance(updates, until)`` -- server updates up to ``updates`` (the trace's ``round``) or until
      the next event would come after simulated time ``until``; returns the updates made;
    * ``arrivals`` -- messages received so far (the trace's ``comm_rounds``);
    * ``trace_meta()`` -- statistics of the run (e.g. delays) for the trace's metadata.

    ``step()`` is ``advance(1)``.
    """

    timing: Timing | None = None
    #: the clock ``attach_timing`` returns (the method sets its ``now``)
    clock: SimulatedClock
    #: messages received so far (the trace's ``comm_rounds``)
    arrivals: int = 0

    def make_clock(self, time, seed: int = 0) -> SimulatedClock:
        return self.attach_timing(make_timing(time, self.n, seed))

    def attach_timing(self, timing: Timing) -> SimulatedClock:
        raise NotImplementedError

    def advance(self, updates: int, until: float | None = None) -> int:
        raise NotImplementedError

    def step(self) -> None:
        self.advance(1)

    @property
    def now(self) -> float:
        """Simulated time now."""
        return self.clock.now

    def counters(self) -> dict[str, float]:
        return {"comm_rounds": float(self.arrivals)}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator adding ``cls`` to :data:`METHODS` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name")
    if cls.stepsize_source not in STEPSIZE_SOURCES:
        raise ValueError(f"{cls.__name__} ({cls.name}) must say where its default stepsize comes from: "
                         f"stepsize_source = one of {', '.join(STEPSIZE_SOURCES)}")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown method '{name}'{hint} (see `optsim list methods`)")
    return METHODS[name]


@dataclass(frozen=True)
class MethodSpec:
    """A method's config mapping validated once, typed: the class, its validated ``params``, the
    specs of the components it takes (``compressor``, ``down_compressor``, ``sampler``: only those
    in the class's ``uses``, compressor names known) and the run's ``label``.

    :meth:`parse` is the one place a method's config is checked (``optsim`` validates every
    config's methods with it when the config loads); :meth:`build` makes the method for a problem.
    A pydantic ``ValidationError`` of the parameters propagates as it is (the config turns it into
    one line naming the field)."""

    cls: type[Method]
    params: MethodParams
    components: dict[str, Any]
    label: str

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | str) -> "MethodSpec":
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ValueError(f"a method is a name or a mapping with a 'name', got {spec!r}")
        own = dict(spec)
        name = own.pop("name")
        label = own.pop("label", None)
        mcls = get_method(name)
        if label is not None and not isinstance(label, str):
            raise ValueError(f"label must be a text, got {label!r}: quote it (label: \"{label}\")")
        comps = {k: own.pop(k) for k in COMPONENT_KEYS if k in own}
        for k, c in comps.items():
            if k not in mcls.uses:
                raise ValueError(f"{mcls.name} takes no {k} (it uses: {', '.join(mcls.uses) or 'none'})")
            if k in ("compressor", "down_compressor"):
                try:
                    check_compressor_spec(c)
                except ValueError as e:
                    raise ValueError(f"{k}: {e}") from None
        return cls(mcls, mcls.Params(**own), comps, str(label) if label is not None else mcls.name)

    def build(self, problem: Problem, channel: Channel, seed: int = 0, float_bits: int = 32,
              seeds: dict[str, int] | None = None) -> Method:
        """The method on ``problem``, its components built for the problem's sizes, its random
        streams derived from ``seed`` (``seeds``: per-component overrides)."""
        mcls, comps = self.cls, self.components
        ctx = Context(problem, channel, seed, seeds=dict(seeds or {}))
        if "compressor" in mcls.uses:
            ctx.compressor = make_compressor(comps.get("compressor"), mcls.component_dim("compressor", problem),
                                             problem.n, float_bits)
        if "down_compressor" in mcls.uses:
            ctx.down_compressor = make_compressor(comps.get("down_compressor"),
                                                  mcls.component_dim("down_compressor", problem), problem.n, float_bits)
        if "sampler" in mcls.uses:
            ctx.sampler = make_sampler(comps.get("sampler"), problem.n, problem.L_i)
        if "aggregator" in mcls.uses:
            from ..robust import make_aggregator

            f = channel.threat.count if channel.threat is not None else 0
            ctx.aggregator = make_aggregator(comps.get("aggregator", "mean"), problem.n, f)
        return mcls(ctx, self.params)


def build_method(spec: Mapping[str, Any] | MethodSpec, problem: Problem, channel: Channel, seed: int = 0,
                 float_bits: int = 32, seeds: dict[str, int] | None = None) -> Method:
    """A method from its config mapping (``name``, optional ``compressor``, ``down_compressor``,
    ``sampler``, ``label`` and the method's own parameters) or its :class:`MethodSpec`."""
    if not isinstance(spec, MethodSpec):
        spec = MethodSpec.parse(spec)
    return spec.build(problem, channel, seed, float_bits, seeds)
