"""Building a problem from its config (data, preprocessing, partition, objective)."""
from __future__ import annotations

import numpy as np
import torch

from ..data import load_dataset, partition
from ..problems import PROBLEMS, Problem, Quadratic
from .config import ExperimentConfig, GLMConfig

__all__ = ["build_problem", "preprocess", "data_seed", "problem_key"]


def data_seed(cfg: ExperimentConfig) -> int:
    """The seed of the data and the partition: ``problem.data_seed``, else the run's seed."""
    return cfg.problem.data_seed if cfg.problem.data_seed is not None else cfg.seed


def problem_key(cfg: ExperimentConfig) -> str:
    """Configs with the same key build the same problem."""
    from .config import config_hash

    pc = cfg.problem.model_dump(mode="json")
    pc.pop("data_seed", None)
    byz = cfg.byzantine.model_dump(mode="json") if cfg.byzantine is not None else None  # label flips change the data
    return config_hash({"problem": pc, "seed": data_seed(cfg), "dtype": cfg.dtype, "device": cfg.device,
                        **({"byzantine": byz} if byz else {})})


def preprocess(X: np.ndarray, y: np.ndarray, cfg: GLMConfig) -> tuple[np.ndarray, np.ndarray]:
    """Normalize features, add an intercept, map labels to +-1 for classification."""
    if cfg.normalize == "standardize":
        sd = X.std(0)
        X = (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)
    elif cfg.normalize == "unit_rows":
        nrm = np.linalg.norm(X, axis=1, keepdims=True)
        X = X / np.where(nrm > 0, nrm, 1.0)
    elif cfg.normalize == "max_abs":
        mx = np.abs(X).max(0)
        X = X / np.where(mx > 0, mx, 1.0)
    if cfg.intercept:
        X = np.hstack([X, np.ones((X.shape[0], 1))])
    if cfg.name != "least_squares":
        labels = np.unique(y)
        if cfg.positive_class is not None:
            if cfg.positive_class not in labels:
                raise ValueError(f"positive_class {cfg.positive_class} is not a label of {cfg.data} (labels: {labels.tolist()})")
            y = np.where(y == cfg.positive_class, 1.0, -1.0)
        elif len(labels) == 2:
            y = np.where(y == labels.max(), 1.0, -1.0)
        else:
            raise ValueError(f"{cfg.data} has {len(labels)} classes: set problem.positive_class to one of {labels.tolist()[:10]}")
    return X, y


def build_problem(cfg: ExperimentConfig) -> Problem:
    pc = cfg.problem
    dtype = getattr(torch, cfg.dtype)
    seed = data_seed(cfg)
    if pc.name == "neural":
        from ..problems.neural import neural_problem

        dtype = dtype if "dtype" in cfg.model_fields_set else torch.float32  # neural problems default to float32
        return neural_problem(pc.data, pc.model, pc.clients, partition=pc.partition.name, alpha=pc.partition.alpha,
                              power=pc.partition.power, hidden=pc.hidden, activation=pc.activation, bias=pc.bias,
                              size=pc.size, test_size=pc.test_size, test_fraction=pc.test_fraction,
                              seq_len=pc.seq_len, d_model=pc.d_model, heads=pc.heads, layers=pc.layers, seed=seed,
                              init_seed=pc.init_seed, dtype=dtype, device=cfg.device, batch_rows=pc.batch_rows,
                              compile=pc.compile)
    if pc.name == "linear_system":
        from ..problems.linear_system import LinearSystem, SparseLinearSystem

        if pc.data is not None:  # a LibSVM file's sparse features, b = A z for z seeded by the data seed
            return SparseLinearSystem.from_libsvm(pc.data, seed=seed, dtype=dtype, device=cfg.device)
        return LinearSystem.generate(pc.rows, pc.dim, pc.smin, pc.smax, positive_definite=pc.positive_definite,
                                     seed=seed, dtype=dtype, device=cfg.device)
    if pc.name == "sphere_pca":
        from ..problems.riemannian import SpherePCA

        return SpherePCA.generate(pc.clients, pc.samples, pc.dim, gap=pc.gap, seed=seed, dtype=dtype, device=cfg.device)
    if pc.name == "stiefel_pca":
        from ..problems.riemannian import StiefelPCA

        return StiefelPCA.generate(pc.clients, pc.samples, pc.dim, pc.p, gap=pc.gap, seed=seed, dtype=dtype,
                                   device=cfg.device)
    if pc.name == "karcher_spd":
        from ..problems.riemannian import KarcherSPD

        return KarcherSPD.generate(pc.clients, pc.samples, pc.k, spread=pc.spread, commuting=pc.commuting, seed=seed,
                                   dtype=dtype, device=cfg.device)
    if pc.name == "quadratic_game":
        from ..problems.minmax import GameProblem

        return GameProblem.generate(pc.kind, pc.dim, mu=pc.mu, clients=pc.clients, spread=pc.spread, noise=pc.noise,
                                    noise_law=pc.noise_law, seed=seed, dtype=dtype, device=cfg.device)
    if pc.name == "quadratic":
        problem = Quadratic.generate(pc.clients, pc.dim, L=pc.L, mu=pc.mu, heterogeneity=pc.heterogeneity,
                                     noise=pc.noise, seed=seed, dtype=dtype, device=cfg.device)
        return _structure(_byzantine_data(problem, cfg), pc)
    ds = load_dataset(pc.data, size=pc.size, dim=pc.dim, condition=pc.condition, noise=pc.noise, seed=seed)
    X, y = preprocess(ds.X, ds.y, pc)
    parts = partition(y, pc.clients, pc.partition.name, seed=seed, alpha=pc.partition.alpha,
                      power=pc.partition.power)
    cls = PROBLEMS[pc.name]
    problem = cls([X[p] for p in parts], [y[p] for p in parts], lam=pc.lam, dtype=dtype, device=cfg.device)
    return _structure(_byzantine_data(problem, cfg), pc)


def _structure(problem: Problem, pc) -> Problem:
    """The config's ``sketch`` (MAST's f_D of the problem) and ``nonsmooth`` term (f + Psi)."""
    if pc.sketch is not None:
        from ..problems.sketched import DiagonalSketch, SketchedProblem

        sk = pc.sketch
        problem = SketchedProblem(problem, DiagonalSketch(problem.d, sk["kind"], p=sk.get("p"), k=sk.get("k")))
    return problem.with_nonsmooth(pc.nonsmooth)


def _byzantine_data(problem: Problem, cfg: ExperimentConfig) -> Problem:
    """A data-level attack (label flip) corrupts the Byzantine clients' data."""
    if cfg.byzantine is None:
        return problem
    from ..robust import Threat

    threat = Threat.from_config(cfg.byzantine, problem.n)
    return problem.flip_labels(threat.byzantine_ids) if threat.attack.data_level and threat.count else problem
