"""Recipe B5: certified robustness of federated models (Alfarra, Pérez, Shulgin, Richtárik, Ghanem
(2022), "Certified robustness in federated learning", NeurIPS workshop; see PAPERS.md).

The paper certifies, by randomized smoothing (Cohen, Rosenfeld, Kolter 2019:
:func:`optsim.robust.certify`), four kinds of model on each client's share of the test set: the
*local* model trained on the client's data alone, the *global* FedAvg model, the *personalized*
model (the global model fine-tuned on the client's data) and *mixtures* of the global and a local
model. Its abstract claims that federated training gives more accurate and more certifiably robust
models than local training, that personalization improves robustness further, and that mixtures
lose robustness as they move towards the local model.

What was read: the abstract and the authors' code (the paper's body was not readable). From the
code: 10 clients with IID disjoint shards of the training *and* test sets (one seeded permutation
each), FedAvg with 2 local epochs per round, 60 epochs in all, SGD lr 0.1, batch 64; personalization
= 4 more local epochs with Gaussian noise augmentation (std 0.12 in their script); CERTIFY with n0 = 100, n = 100,000, alpha = 0.001 on every 2nd test image.
The mixing formula theta = (1 - lambda) theta_global + lambda theta_local is our reading (no
mixing code was found). Here the data set is scikit-learn's digits (offline) with an MLP
64-64-10 instead of CIFAR-10 / MNIST with ResNet-18; certification draws n = 10,000 (not 100,000)
copies per image; every test image of a client's shard is certified.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from ..data.partition import partition
from ..data.vision import load_vision
from ..experiment import parse_config, run_method
from ..problems.neural import NeuralProblem, make_model
from ..rng import numpy_rng
from ..robust import average_certified_radius, certified_accuracy, certify
from .common import save_figure
from .registry import Outcome, recipe

__all__ = ["federated_certification"]

#: weights lambda of the local model in the mixtures (1 - lambda) theta_global + lambda theta_local
MIX_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _config(rounds: int, epochs: int, batch: int, lr: float):
    spec = {"name": "fedavg", "local_epochs": epochs, "batch_size": batch, "stepsize": lr}
    cfg = parse_config({"name": "B5", "seed": 0, "threads": 1, "dtype": "float32",
                        "problem": {"name": "neural", "model": "mlp", "data": "sklearn:digits"},
                        "methods": [spec], "stop": {"max_rounds": rounds}, "log_every": rounds})
    return spec, cfg


def federated_certification(data: str = "sklearn:digits", model: str = "mlp", clients: int = 10, hidden=(64,), rounds: int = 30, epochs: int = 2,
                            personal_epochs: int = 4, batch: int = 64, lr: float = 0.1, sigma: float = 0.25,
                            n0: int = 100, n: int = 10_000, alpha: float = 0.001, radii=None, seed: int = 0,
                            augment_sigma: float | None = None, noisy_copies: int = 4) -> dict:
    """Train the global, local and personalized models and certify every kind on each client's test
    shard. Returns, per model kind ('global', 'local', 'personalized', 'mix 0.25', ...), the
    per-client certified accuracy curves (clients, len(radii)) and average certified radii
    (clients,), and the radii grid.

    The recipe runs the digits MLP; the paper's size is ``data="mnist"`` (the IDX files in the data
    folder) or ``"cifar10"`` with ``model="cnn"``, ``n=100_000``, ``rounds=30``, ``epochs=2``.

    Personalization fine-tunes the global model for ``personal_epochs`` epochs on the client's
    samples and ``noisy_copies`` Gaussian copies of each (std ``augment_sigma``, default ``sigma``;
    drawn once, where the authors' code draws fresh noise every epoch)."""
    radii = np.linspace(0.0, 4.0 * sigma, 41) if radii is None else np.asarray(radii, dtype=np.float64)
    augment_sigma = sigma if augment_sigma is None else augment_sigma
    vd = load_vision(data, seed=seed)
    train = partition(vd.y, clients, "iid", seed=seed)
    test = np.array_split(numpy_rng(seed, "test shards").permutation(len(vd.y_test)), clients)
    net = make_model(model, in_shape=vd.X.shape[1:], classes=10, hidden=hidden, seed=seed)

    def problem(parts, test_part=None, noisy_copies: int = 0):
        ti = None if test_part is None else vd.X_test[test_part]
        tt = None if test_part is None else vd.y_test[test_part]
        X, y = [vd.X[p] for p in parts], [vd.y[p] for p in parts]
        if noisy_copies:  # Gaussian data augmentation: the samples and noisy copies of them, drawn once
            rng = numpy_rng(seed, "augmentation")
            X = [np.concatenate([a] + [a + augment_sigma * rng.standard_normal(a.shape).astype(a.dtype)
                                       for _ in range(noisy_copies)]) for a in X]
            y = [np.concatenate([b] * (noisy_copies + 1)) for b in y]
        return NeuralProblem(copy.deepcopy(net), X, y, ti, tt)

    spec, cfg = _config(rounds, epochs, batch, lr)
    results: dict[str, dict] = {}
    x_global = _final_point(problem(train), spec, cfg)
    personal_spec, personal_cfg = _config(max(1, personal_epochs // epochs), epochs, batch, lr)
    for i in range(clients):
        mine = problem([train[i]], test[i])
        x_local = _final_point(mine, spec, cfg)
        tuned = problem([train[i]], test[i], noisy_copies=noisy_copies)
        x_personal = _final_point(tuned, personal_spec, personal_cfg, x0=x_global)
        kinds = {"global": x_global, "local": x_local, "personalized": x_personal}
        kinds.update({f"mix {lam:g}": (1 - lam) * x_global + lam * x_local for lam in MIX_WEIGHTS[1:-1]})
        X = torch.as_tensor(vd.X_test[test[i]], dtype=torch.float32)
        y = vd.y_test[test[i]]
        for kind, x in kinds.items():
            pred, rad = certify(lambda b, x=x: mine.forward(x, b), X, sigma, n0=n0, n=n, alpha=alpha,
                                seed=seed + 1000 * i, num_classes=10)
            r = results.setdefault(kind, {"curve": [], "acr": []})
            r["curve"].append(certified_accuracy(pred, rad, y, radii).numpy())
            r["acr"].append(average_certified_radius(pred, rad, y))
    out = {k: {"curve": np.array(v["curve"]), "acr": np.array(v["acr"])} for k, v in results.items()}
    out["radii"] = radii
    return out


def _final_point(problem, spec, cfg, x0=None) -> torch.Tensor:
    """The model after a FedAvg run on ``problem`` (one client: plain local training) from ``x0``
    (default: the network's initialization)."""
    final = []
    trace = run_method(problem, spec, cfg, progress=False, x0=x0,
                       on_end=lambda session: final.append(session.method.x.detach().clone()))
    if trace.status != "finished":
        raise RuntimeError(f"B5: a training run ended {trace.status}: {trace.meta.get('message', '')}")
    return final[0]


@recipe("B5", "Randomized-smoothing certification (l2, Cohen et al.) of models on each client's test shard: the "
              "FedAvg model is more accurate and has a larger certified accuracy and average certified radius "
              "than local-only models; personalization (local fine-tuning with Gaussian augmentation) raises it further; "
              "mixtures (1 - lambda) global + lambda local lose robustness as lambda grows")
def _certified_robustness(out: Path, fast: bool) -> Outcome:
    import matplotlib.pyplot as plt

    kw = dict(rounds=6, epochs=2, personal_epochs=2, n0=50, n=1000) if fast else {}
    res = federated_certification(**kw)
    radii = res.pop("radii")
    acr = {k: float(v["acr"].mean()) for k, v in res.items()}
    clean = {k: float(v["curve"][:, 0].mean()) for k, v in res.items()}
    mix = [acr["global"]] + [acr[f"mix {lam:g}"] for lam in MIX_WEIGHTS[1:-1]] + [acr["local"]]
    more_robust = acr["global"] > acr["local"] and clean["global"] > clean["local"]
    falls = mix[-1] < mix[0]
    monotone = all(a >= b for a, b in zip(mix, mix[1:]))
    personal = acr["personalized"] >= acr["global"]

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for kind in ("global", "personalized", "local") + tuple(f"mix {lam:g}" for lam in MIX_WEIGHTS[1:-1]):
        style = "-" if not kind.startswith("mix") else ":"
        a1.plot(radii, res[kind]["curve"].mean(0), style, label=kind)
    a1.set(xlabel=r"$\ell_2$ radius", ylabel="certified accuracy (mean over clients)")
    a1.legend(fontsize=8)
    a2.plot(MIX_WEIGHTS, mix, "o-")
    a2.set(xlabel=r"local weight $\lambda$ of the mixture", ylabel="average certified radius")
    fig.suptitle("B5: certified robustness of federated models (digits MLP, 10 clients, sigma 0.25)"
                 + (" [fast]" if fast else ""))
    fig.tight_layout()
    figs = save_figure(fig, out / "B5_certified_accuracy")
    msg = (f"accuracy at radius 0 / average certified radius, mean over clients: global {clean['global']:.3f} / "
           f"{acr['global']:.3f}, local {clean['local']:.3f} / {acr['local']:.3f}, personalized "
           f"{clean['personalized']:.3f} / {acr['personalized']:.3f}; ACR of the mixtures lambda = "
           f"{', '.join(f'{v:g}' for v in MIX_WEIGHTS)}: {', '.join(f'{v:.3f}' for v in mix)} "
           f"({'non-increasing' if monotone else 'not monotone'}); personalization "
           f"{'raises' if personal else 'does NOT raise (NOT REPRODUCED)'} the ACR over the global model")
    return Outcome(more_robust and falls and personal, msg, figs)
