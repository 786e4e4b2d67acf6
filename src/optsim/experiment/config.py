"""The experiment config: a YAML file validated on load.

Errors name the field and what is allowed; a misspelled key or method lists close matches.
See ``examples/quickstart.yaml`` and the README for the format.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from ..methods.base import MethodSpec, get_method
from ..trace import AXES, METRICS, PLOT_METRICS

__all__ = ["ExperimentConfig", "SweepConfig", "set_path", "ConfigError", "load_config", "parse_config", "config_hash", "METRICS", "AXES"]



class ConfigError(ValueError):
    """A config that cannot be run; the message says what to change."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WithAddedFields(Strict):
    """A config section that gained fields after runs were stored."""

    #: fields added after runs were stored: left out of the dump while None, so that the identity of
    #: configs written before them (``run_config``, ``problem_key``, a results folder's record) is unchanged
    _absent_when_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler):
        out = handler(self)
        if self._absent_when_none and isinstance(out, dict):
            for k in self._absent_when_none:
                if k in out and out[k] is None:
                    del out[k]
        return out


class PartitionConfig(Strict):
    name: Literal["iid", "sorted", "dirichlet", "unbalanced", "full"] = "iid"
    alpha: PositiveFloat = 0.5
    power: NonNegativeFloat = 1.0


class Structure(WithAddedFields):
    """What a convex problem's objective may add to its f (GLM and quadratic problems)."""

    _absent_when_none = ("nonsmooth", "sketch")

    #: a nonsmooth term Psi of f + Psi, applied by prox (methods with ``handles`` "nonsmooth"):
    #: {kind: l1, strength: s} | {kind: box, radius: r} (:mod:`optsim.problems.regularizer`)
    nonsmooth: dict[str, str | float] | str | None = None
    #: optimize MAST's sketched objective f_D(x) = E f(S x) instead of f: {kind: bernoulli | dropout,
    #: p: keep probability} | {kind: rand_k, k: K} (:class:`optsim.problems.sketched.SketchedProblem`)
    sketch: dict[str, str | float | int] | None = None

    @field_validator("nonsmooth")
    @classmethod
    def _known_nonsmooth(cls, v):
        from ..problems.regularizer import as_regularizer

        as_regularizer(v)  # a one-line error naming the fix
        return v

    @field_validator("sketch")
    @classmethod
    def _known_sketch(cls, v):
        if v is not None:
            extra = set(v) - {"kind", "p", "k"}
            if extra or "kind" not in v:
                raise ValueError(f"sketch: give 'kind' and 'p' (bernoulli, dropout) or 'k' (rand_k); got keys {sorted(v)}")
        return v


class GLMConfig(Structure):
    """A problem over a dataset split among clients."""

    name: Literal["logreg", "logreg_nonconvex", "least_squares"]
    data: str = "sklearn:breast_cancer"
    #: seed of the data generator and partition (default: the run's seed); fix it to compare
    #: seeds of a method on one problem (such runs can also be batched)
    data_seed: int | None = None
    clients: PositiveInt = 10
    partition: PartitionConfig = PartitionConfig()
    #: regularization lambda (l2 or the nonconvex regularizer's weight)
    lam: NonNegativeFloat = 1e-3
    normalize: Literal["none", "standardize", "unit_rows", "max_abs"] = "none"
    intercept: bool = False
    #: label treated as +1 for multi-class data (binary data: the larger label is +1)
    positive_class: float | None = None
    # synthetic data only
    size: PositiveInt = 1000
    dim: PositiveInt = 20
    condition: PositiveFloat = 10.0
    noise: NonNegativeFloat = 0.1

    @field_validator("partition", mode="before")
    @classmethod
    def _partition_name(cls, v):
        return {"name": v} if isinstance(v, str) else v


class QuadraticConfig(Structure):
    """Seeded quadratic with exact L, mu (see :class:`optsim.problems.Quadratic`)."""

    name: Literal["quadratic"]
    data_seed: int | None = None
    clients: PositiveInt = 10
    dim: PositiveInt = 20
    L: PositiveFloat = 1.0
    mu: PositiveFloat = 1e-2
    heterogeneity: float = Field(0.0, ge=0.0, lt=0.5)
    noise: NonNegativeFloat = 0.0


class LinearSystemConfig(WithAddedFields):
    """A consistent linear system A x = b with an exact x*, as one client's f(x) = ||A x - b||^2 / 2
    whose samples are the equations: seeded with a chosen spectrum
    (:class:`optsim.problems.linear_system.LinearSystem`), or with ``data`` the sparse features of a
    LibSVM file as A, b = A z for a seeded z and x* the least-norm solution
    (:class:`optsim.problems.linear_system.SparseLinearSystem`); the trace adds ``residual_sq`` =
    ||A x - b||^2. The sketch-and-project solvers of :mod:`optsim.methods.linalg` take the same objects."""

    _absent_when_none = ("data",)

    name: Literal["linear_system"]
    #: ``libsvm:NAME`` or a path to a LibSVM file: its features (sparse, never densified) are A;
    #: None: the synthetic generator below
    data: str | None = None
    data_seed: int | None = None
    rows: PositiveInt = 200
    dim: PositiveInt = 20
    #: smallest and largest singular values of A (log-spaced between them)
    smin: PositiveFloat = 0.1
    smax: PositiveFloat = 1.0
    #: a symmetric positive definite A (rows = dim)
    positive_definite: bool = False

    @model_validator(mode="after")
    def _generator_fields_without_data(self):
        if self.data is not None:
            if self.data.split(":", 1)[0] in ("sklearn", "synthetic"):
                raise ValueError(f"linear_system: data '{self.data}' is not sparse LibSVM data: use 'libsvm:NAME' "
                                 "or a path to a LibSVM file")
            changed = [k for k in ("rows", "dim", "smin", "smax", "positive_definite")
                       if getattr(self, k) != type(self).model_fields[k].default]
            if changed:
                raise ValueError(f"linear_system: {', '.join(changed)} set the synthetic generator, but data "
                                 f"'{self.data}' gives A: drop them or drop data")
        return self



class NeuralConfig(Strict):
    """A neural network over image or text data split among clients (:mod:`optsim.problems.neural`).
    Neural problems run in float32 unless the config sets ``dtype``."""

    name: Literal["neural"]
    model: Literal["mlp", "cnn", "transformer"] = "mlp"
    #: sklearn:digits | mnist[:PATH] | cifar10[:PATH] | text:PATH (see optsim.data.vision)
    data: str = "sklearn:digits"
    data_seed: int | None = None
    clients: PositiveInt = 10
    partition: PartitionConfig = PartitionConfig()
    #: MLP hidden widths, or CNN channels (one 3x3 conv + 2x2 max-pool each)
    hidden: list[PositiveInt] = [32]
    activation: Literal["relu", "tanh", "gelu"] = "relu"
    bias: bool = True
    #: training samples kept (a seeded subset; default all)
    size: PositiveInt | None = None
    #: held-out samples kept for test metrics (default all)
    test_size: PositiveInt | None = None
    #: share held out when the source has no test split (digits, text)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    # transformer (character-level language model)
    seq_len: PositiveInt = 32
    d_model: PositiveInt = 32
    heads: PositiveInt = 2
    layers: PositiveInt = 1
    #: seed of the model's initialization (default: the data seed)
    init_seed: int | None = None
    #: samples per batched evaluation (clients x samples); larger data is processed in chunks
    batch_rows: PositiveInt = 8192
    #: torch.compile the batched MLP / CNN oracles (2.4 x faster local steps on the CPU after about
    #: 12 s of compilation per input shape: for long runs; bench/RESULTS.md)
    compile: bool = False

    @field_validator("partition", mode="before")
    @classmethod
    def _partition_name(cls, v):
        return {"name": v} if isinstance(v, str) else v


class SpherePCAConfig(Strict):
    """The leading eigenvector on the unit sphere, samples split among clients
    (:class:`optsim.problems.riemannian.SpherePCA`; Riemannian methods only)."""

    name: Literal["sphere_pca"]
    data_seed: int | None = None
    clients: PositiveInt = 1
    #: samples per client
    samples: PositiveInt = 200
    dim: int = Field(10, ge=2)
    #: the population eigengap 1 - lambda_2 / lambda_1
    gap: float = Field(0.3, gt=0, lt=1)


class StiefelPCAConfig(Strict):
    """The leading p-dimensional eigenspace on the Stiefel manifold St(dim, p), samples split among
    clients (:class:`optsim.problems.riemannian.StiefelPCA`; Riemannian methods only, which step there
    with the polar retraction and the projection vector transport)."""

    name: Literal["stiefel_pca"]
    data_seed: int | None = None
    clients: PositiveInt = 1
    #: samples per client
    samples: PositiveInt = 200
    dim: int = Field(10, ge=2)
    #: the subspace dimension (the model has dim x p entries); below dim
    p: PositiveInt = 2
    #: the population eigengap 1 - lambda_{p+1} / lambda_p
    gap: float = Field(0.3, gt=0, lt=1)

    @model_validator(mode="after")
    def _p_below_dim(self):
        if self.p >= self.dim:
            raise ValueError(f"p must be below dim, got p={self.p}, dim={self.dim}: lower p or raise dim")
        return self


class KarcherSPDConfig(Strict):
    """The Karcher mean of SPD matrices split among clients (:class:`optsim.problems.riemannian.KarcherSPD`;
    Riemannian methods only)."""

    name: Literal["karcher_spd"]
    data_seed: int | None = None
    clients: PositiveInt = 1
    #: matrices per client
    samples: PositiveInt = 100
    #: the matrices' size k (the model has k^2 entries)
    k: PositiveInt = 3
    #: spread of the matrices around their center
    spread: PositiveFloat = 0.5
    #: matrices with one common eigenbasis (the Karcher mean then has a closed form)
    commuting: bool = False


class QuadraticGameConfig(Strict):
    """A quadratic min-max game as a variational inequality, split over clients
    (:class:`optsim.problems.minmax.GameProblem`; VI methods only: clipped_seg, clipped_sgda,
    prox_clipped_seg_shift, prox_clipped_sgda_shift). Metrics: ``dist_sq`` = ||z - z*||^2, ``grad_norm_sq`` =
    ||F(z)||^2, ``loss`` = the payoff."""

    name: Literal["quadratic_game"]
    #: bilinear (monotone, mu = None) or strongly_monotone (the bilinear game plus mu ||x||^2 / 2 - mu ||y||^2 / 2)
    kind: Literal["bilinear", "strongly_monotone"] = "strongly_monotone"
    data_seed: int | None = None
    #: each player's dimension (the model z = (x, y) has 2 dim entries)
    dim: PositiveInt = 5
    #: the strong monotonicity of a strongly_monotone game (a bilinear game has none)
    mu: PositiveFloat = 0.1
    clients: PositiveInt = 1
    #: rms ||e_i|| of the clients' operator offsets F_i = F + e_i (sum_i e_i = 0; one client: none)
    spread: NonNegativeFloat = 1.0
    #: scale sigma of the additive noise sigma xi of a stochastic operator call
    noise: NonNegativeFloat = 0.0
    #: the law of xi's coordinates: gaussian | {kind: student_t, tail: nu} | {kind: pareto, tail: a}
    noise_law: dict[str, str | float] | str | None = None

    @field_validator("noise_law")
    @classmethod
    def _known_law(cls, v):
        from ..problems.noise import as_noise_law

        as_noise_law(v)  # a one-line error naming the fix
        return v


ProblemConfig = Annotated[Union[GLMConfig, QuadraticConfig, LinearSystemConfig, NeuralConfig, SpherePCAConfig,
                                StiefelPCAConfig, KarcherSPDConfig, QuadraticGameConfig],
                         Field(discriminator="name")]


class StopConfig(Strict):
    max_rounds: PositiveInt = 1000
    #: stop when the per-client mean of bits sent up exceeds this
    max_bits: PositiveFloat | None = None
    #: stop when ``metric`` <= tol
    tol: PositiveFloat | None = None
    metric: Literal["auto", "f_gap", "grad_norm_sq", "dist_sq", "loss"] = "auto"
    max_sim_time: PositiveFloat | None = None
    max_wall_time: PositiveFloat | None = None
    #: privacy budget: the run stops before a round would spend more than this epsilon (needs a
    #: ``privacy`` block with noise)
    max_epsilon: PositiveFloat | None = None
    #: a run whose metric exceeds this factor times its initial value has diverged
    blowup: PositiveFloat = 1e10


class ByzantineConfig(Strict):
    """A Byzantine threat model (:mod:`optsim.robust`): ``count`` Byzantine clients (or a
    ``fraction`` of the clients) sending what ``attack`` makes them send."""

    count: NonNegativeInt | None = None
    fraction: float | None = Field(None, ge=0.0, lt=1.0)
    #: an attack name or {name: ..., params}: none, label_flip, bit_flip, sign_flip, ipm, alie, gaussian, mimic,
    #: shift_back, inf (see `optsim list attacks`)
    attack: str | dict = "none"
    #: which clients are Byzantine: the last ones, the first ones, or a list of ids
    clients: Literal["last", "first"] | list[NonNegativeInt] = "last"

    @model_validator(mode="after")
    def _one_size(self):
        if (self.count is None) == (self.fraction is None):
            raise ValueError("give the number of Byzantine clients as count or as fraction (one of them)")
        from ..robust import make_attack

        make_attack(self.attack, 2, 0)  # an unknown name or parameter is refused on load
        return self


class PrivacyConfig(Strict):
    """Client-level differential privacy (:mod:`optsim.privacy`): every aggregation of the clients'
    rows bounds each row (``clip: C`` or ``normalize: alpha``) and adds Gaussian noise of std
    ``noise_multiplier`` x the bound, on the clients (``local``) or the server (``central``); the
    epsilon spent for ``delta`` is logged as the ``epsilon`` column."""

    noise_multiplier: NonNegativeFloat
    clip: PositiveFloat | None = None
    normalize: NonNegativeFloat | None = None
    where: Literal["central", "local"] = "central"
    delta: float = Field(gt=0.0, lt=1.0)
    accountant: Literal["rdp", "pld"] = "rdp"

    @model_validator(mode="after")
    def _one_bound(self):
        if (self.clip is None) == (self.normalize is None):
            raise ValueError("bound each client's contribution with clip: C or normalize: alpha (one of them)")
        return self


class TimeConfig(Strict):
    """Seconds per local full gradient (number, list, 'linear' or 'sqrt') and links (bits/s).

    Event-driven (asynchronous) methods also read a compute-time model (see
    :mod:`optsim.clock.models`): ``jitter`` draws each job's time as tau_i times a random
    factor of mean 1 (``jitter_scale``: exponential mix / log-normal sigma / uniform half-width);
    ``speed_period``/``speed_sigma`` and ``outage_rate``/``outage_length`` switch to the
    universal computation model (time-varying speeds, outages); ``trace`` gives the durations
    as data (a .npy/.npz/.csv file or a list with one list of seconds per worker).
    """

    compute: float | list[float] | Literal["linear", "sqrt"] = 1.0
    latency_up: NonNegativeFloat = 0.0
    bandwidth_up: PositiveFloat = float("inf")
    latency_down: NonNegativeFloat = 0.0
    bandwidth_down: PositiveFloat = float("inf")
    jitter: Literal["none", "exponential", "lognormal", "uniform"] = "none"
    jitter_scale: NonNegativeFloat = 1.0
    speed_period: PositiveFloat | None = None
    speed_sigma: NonNegativeFloat = 0.0
    outage_rate: NonNegativeFloat = 0.0
    outage_length: PositiveFloat = 1.0
    trace: str | list[list[PositiveFloat]] | None = None


class PlotConfig(Strict):
    x: list[Literal["rounds", "comm_rounds", "bits_up", "bits_down", "grad_evals", "func_evals", "sim_time",
                    "wall_time"]] = ["rounds", "bits_up"]
    y: Literal["auto", *PLOT_METRICS] = "auto"
    formats: list[Literal["png", "pdf", "svg"]] = ["png", "pdf"]

    @field_validator("x", "formats", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return [v] if isinstance(v, str) else v


class SweepConfig(Strict):
    """A grid over config fields. Keys are dotted paths as for ``--set`` (``stop.max_rounds``,
    ``problem.clients``, ``methods.0.stepsize_mult``; ``methods.*.X`` sets X in every method),
    values are lists or the shorthand ``"2^-4..2^4"`` (powers of two, as the papers tune)."""

    grid: dict[str, Any] = Field(min_length=1)
    #: keys over which "best of grid" picks the best value per method (e.g. the stepsize multiplier)
    tune: list[str] = []
    #: the metric "best of grid" minimizes (its final value, averaged over the other grid keys such as seed)
    metric: Literal["auto", "f_gap", "grad_norm_sq", "dist_sq", "loss"] = "auto"

    @field_validator("grid")
    @classmethod
    def _expand(cls, grid):
        out = {}
        for key, values in grid.items():
            if isinstance(values, str) and ".." in values:
                a, b = values.split("..")
                try:
                    lo, hi = int(a.strip().removeprefix("2^")), int(b.strip().removeprefix("2^"))
                except ValueError:
                    raise ValueError(f"sweep.grid.{key}: write powers of two as '2^-4..2^4', got {values!r}") from None
                values = [2.0 ** e for e in range(lo, hi + 1)]
            if not isinstance(values, list) or not values:
                raise ValueError(f"sweep.grid.{key}: give a non-empty list of values (or '2^a..2^b')")
            out[key] = values
        return out

    @model_validator(mode="after")
    def _tune_in_grid(self):
        for k in self.tune:
            if k not in self.grid:
                raise ValueError(f"sweep.tune: '{k}' is not a key of sweep.grid ({', '.join(self.grid)})")
        return self


class ExperimentConfig(Strict):
    name: str = "experiment"
    seed: int = 0
    #: per-component seed overrides, e.g. {compressor: 3}: only that component's randomness changes
    seeds: dict[Literal["compressor", "down_compressor", "sampler", "noise", "method", "clock", "aggregator", "attack",
                        "privacy"], int] = {}
    dtype: Literal["float64", "float32"] = "float64"
    device: str = "cpu"
    #: CPU threads for tensor ops; "auto": 1 for small problems (where thread start-up costs more
    #: than it saves, see docs/architecture.md, Conventions), all cores otherwise
    threads: PositiveInt | Literal["auto"] = "auto"
    #: bits per transmitted float
    float_bits: PositiveInt = 32
    problem: ProblemConfig
    methods: list[dict[str, Any]] = Field(min_length=1)
    stop: StopConfig = StopConfig()
    #: log every this many rounds (default: about 200 points per run)
    log_every: PositiveInt | None = None
    time: TimeConfig = TimeConfig()
    #: a Byzantine threat model (None: every client is honest)
    byzantine: ByzantineConfig | None = None
    #: client-level differential privacy (None: not private)
    privacy: PrivacyConfig | None = None
    plot: PlotConfig = PlotConfig()
    #: where results and figures go (default results/<name>)
    out: str | None = None
    #: runs through the results store save a checkpoint every this many rounds (0: never)
    checkpoint_every: int = Field(500, ge=0)
    #: a grid of configs (``optsim sweep``)
    sweep: SweepConfig | None = None
    #: experiment trackers that receive every logged row (optional dependencies)
    trackers: list[Literal["tensorboard", "wandb"]] = []

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, methods):
        if not isinstance(methods, list):
            raise ValueError("methods must be a list of method names or mappings with a 'name'")
        methods = [dict(m) if isinstance(m, dict) else m for m in methods]
        labels = []
        for i, spec in enumerate(methods):
            if isinstance(spec, str):
                spec = methods[i] = {"name": spec}
            if not isinstance(spec, dict) or "name" not in spec:
                raise ValueError(f"methods[{i}] needs a 'name'")
            mcls = get_method(spec["name"])
            try:
                MethodSpec.parse(spec)
            except ValidationError as e:
                raise ValueError(f"methods[{i}] ({spec['name']}): " + _one_line(e, mcls.Params)) from None
            except ValueError as e:
                raise ValueError(f"methods[{i}] ({spec['name']}): {e}") from None
            labels.append(spec.get("label", spec["name"]))
        dup = {lab for lab in labels if labels.count(lab) > 1}
        if dup:
            raise ValueError(f"several methods are labelled {', '.join(sorted(dup))}: give each a distinct 'label'")
        return methods

    @model_validator(mode="after")
    def _defaults(self):
        if self.out is None:
            self.out = str(Path("results") / self.name)
        return self

    @model_validator(mode="after")
    def _privacy_budget(self):
        if self.stop.max_epsilon is not None:
            if self.privacy is None:
                raise ValueError("stop.max_epsilon needs a privacy block (privacy: {noise_multiplier: ..., clip: ..., "
                                 "delta: ...})")
            if self.privacy.noise_multiplier == 0:
                raise ValueError("stop.max_epsilon with privacy.noise_multiplier 0: without noise no epsilon is "
                                 "finite; give a positive noise_multiplier")
        return self

    def labels(self) -> list[str]:
        return [m.get("label", m["name"]) for m in self.methods]


def _problem_tags() -> dict[str, type[BaseModel]]:
    """Each problem config's ``name`` (the union's tag, which pydantic puts in error locations) and its class."""
    union = get_args(ProblemConfig)[0]
    return {tag: cls for cls in get_args(union) for tag in get_args(cls.model_fields["name"].annotation)}


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The field names of the sub-model that ``loc`` (a pydantic error location) points into."""
    cur: Any = model
    tags = _problem_tags()
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if isinstance(cur, type) and issubclass(cur, BaseModel) and part in cur.model_fields:
            ann = cur.model_fields[part].annotation
            args = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
            cur = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else (args[0] if len(args) == 1 else None)
        elif cur is None and part in tags:
            cur = tags[part]
        else:
            return None
    if isinstance(cur, type) and issubclass(cur, BaseModel):
        return list(cur.model_fields)
    return None


def _one_line(err: ValidationError, model: type[BaseModel]) -> str:
    e = err.errors()[0]
    loc = tuple(e["loc"])
    tags = _problem_tags()
    where = ".".join(str(p) for p in loc if p not in tags) or "config"
    if e["type"] == "extra_forbidden":
        allowed = _fields_at(model, loc) or []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{where}: unknown key{hint} (allowed: {', '.join(allowed)})"
    if e["type"] == "missing":
        return f"{where}: required field is missing"
    msg = e["msg"]
    if e["type"] == "value_error":  # our own validators: the message names the field and the fix
        msg = msg.removeprefix("Value error, ")
        return msg if msg.startswith(where.split(".")[0]) else f"{where}: {msg}"
    if e["type"] in ("literal_error", "union_tag_invalid"):
        msg = msg.replace("Input should be", "must be one of").replace("Input tag", "name")
    return f"{where}: {msg} (got {e.get('input')!r})"


def parse_config(data: dict) -> ExperimentConfig:
    """Validate a config mapping; raises :class:`ConfigError` with a one-line message."""
    if not isinstance(data, dict):
        raise ConfigError("a config is a mapping with at least 'problem' and 'methods'")
    known = list(ExperimentConfig.model_fields)
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"config error: unknown key '{key}'{hint} (allowed: {', '.join(known)})")
    try:
        return ExperimentConfig(**data)
    except ValidationError as e:
        raise ConfigError("config error: " + _one_line(e, ExperimentConfig)) from None
    except ValueError as e:
        raise ConfigError(f"config error: {e}") from None


def set_path(data: dict, dotted: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``dotted = "a.b.c"`` (list indices as numbers; ``*`` in a
    list position sets the field in every element)."""
    parts = dotted.split(".")
    cur: Any = data
    for i, p in enumerate(parts[:-1]):
        if isinstance(cur, list):
            if p == "*":
                for j in range(len(cur)):
                    if isinstance(cur[j], str):
                        cur[j] = {"name": cur[j]}
                    set_path(cur[j], ".".join(parts[i + 1:]), value)
                return
            if not p.isdigit() or int(p) >= len(cur):
                raise ConfigError(f"'{dotted}': '{p}' is not an index of a list of {len(cur)}")
            if isinstance(cur[int(p)], str):
                cur[int(p)] = {"name": cur[int(p)]}
            cur = cur[int(p)]
        else:
            if not isinstance(cur, dict):
                raise ConfigError(f"'{dotted}': cannot set a field inside {cur!r}")
            cur = cur.setdefault(p, {})
    last = parts[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value


def _set(data: dict, dotted: str, value: str) -> None:
    set_path(data, dotted, yaml.safe_load(value))


def load_config(path: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    """Read and validate a YAML config; ``overrides`` are ``dotted.key=value`` strings."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file '{path}' not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    except RecursionError:
        raise ConfigError(f"{path}: the YAML is nested too deeply to be a config") from None
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override '{ov}' must look like key.sub=value")
        k, v = ov.split("=", 1)
        _set(data, k.strip(), v)
    return parse_config(data)


def config_hash(data: dict | BaseModel) -> str:
    """Hash of a config, independent of the order of its keys."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
