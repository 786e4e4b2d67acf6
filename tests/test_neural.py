"""Neural problems (vmap per-client gradients, layout, loaders), FedOpt / distributed / compressed Gluon,
Ringmaster LMO, and the neural recipes (issue 8)."""
from __future__ import annotations

import gzip
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn

from optsim.channel import Channel
from optsim.data.vision import (MNIST_FILES, load_cifar10, load_mnist, load_text, load_vision, read_idx, write_idx)
from optsim.experiment import build_problem, parse_config, run_method
from optsim.experiment.config import ConfigError
from optsim.trace import Trace
from optsim.meter import Meter
from optsim.methods import build_method
from optsim.methods.neural.optimizers import BatchedOptimizer, layout_lmo
from optsim.optim import Muon
from optsim.optim.lmo import lmo_many
from optsim.problems import Quadratic
from optsim.problems.neural import Layout, NeuralProblem, make_model, neural_problem


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _classify_problem(kind="mlp", n=4, sizes=(6, 4, 7, 5), seed=0, dtype=torch.float32):
    g = np.random.default_rng(seed)
    shape = (1, 6, 6) if kind == "cnn" else (1, 3, 3)
    net = make_model(kind, in_shape=shape, classes=3, hidden=(4, 5) if kind == "cnn" else (5,), seed=seed)
    X = [g.standard_normal((m, *shape)).astype(np.float32) for m in sizes[:n]]
    y = [g.integers(0, 3, m) for m in sizes[:n]]
    Xt, yt = g.standard_normal((9, *shape)).astype(np.float32), g.integers(0, 3, 9)
    return NeuralProblem(net, X, y, Xt, yt, dtype=dtype)


def _loop_grads(p: NeuralProblem, X: torch.Tensor, inputs=None, targets=None):
    """Per-client gradients by a Python loop of torch.autograd on a copy of the module."""
    out = []
    for i in range(p.n):
        m = int(p.m[i])
        inp = p.inputs[i, :m] if inputs is None else inputs[i]
        tgt = p.targets[i, :m] if targets is None else targets[i]
        net = __import__("copy").deepcopy(p.module)
        for (name, prm), v in zip(net.named_parameters(), p.layout.unflatten(X[i]).values()):
            prm.data.copy_(v)
            prm.requires_grad_(True)
        logits = net(inp)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
        grads = torch.autograd.grad(loss, list(net.parameters()))
        out.append(torch.cat([gr.reshape(-1) for gr in grads]))
    return torch.stack(out)


# ---- per-client gradients ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_vmap_gradients_equal_autograd_loop(kind):
    p = _classify_problem(kind)
    X = p.initial_point().expand(p.n, p.d) + 0.1 * torch.randn(p.n, p.d, generator=torch.Generator().manual_seed(1))
    G = p.grads(X)
    assert G.shape == (p.n, p.d) and G.dtype == torch.float32
    torch.testing.assert_close(G, _loop_grads(p, X), atol=1e-5, rtol=1e-5)
    # losses are the clients' own means (unequal m_i: padding weighs nothing)
    L = p.losses(X)
    for i in range(p.n):
        m = int(p.m[i])
        ref = nn.functional.cross_entropy(p.forward(X[i], p.inputs[i, :m]), p.targets[i, :m])
        assert float(L[i]) == pytest.approx(float(ref), rel=1e-5)


def test_transformer_gradients_and_chunking_equal_loop(tmp_path):
    text = "the quick brown fox jumps over the lazy dog. " * 6
    (tmp_path / "c.txt").write_text(text)
    p = neural_problem(f"text:{tmp_path / 'c.txt'}", "transformer", 3, seq_len=8, d_model=8, heads=2, seed=0)
    assert p.task == "lm" and p.inputs.dtype == torch.long and p.inputs.shape[-1] == 8
    X = p.initial_point().expand(p.n, p.d).clone()
    G = p.grads(X)
    torch.testing.assert_close(G, _loop_grads(p, X), atol=1e-5, rtol=1e-4)
    p.batch_rows = 3 * 2  # two samples per client per chunk: a loop over chunks of samples
    torch.testing.assert_close(p.grads(X), G, atol=1e-6, rtol=1e-5)
    metrics = p.extra_metrics(p.initial_point())
    assert metrics["test_perplexity"] == pytest.approx(math.exp(metrics["test_loss"]), rel=1e-6)


def test_minibatch_gradients_and_oracle_counts():
    p = _classify_problem()
    meter = Meter(p.n)
    p.attach(meter)
    X = p.initial_point().expand(p.n, p.d).clone()
    idx = torch.tensor([[0, 2], [1, 1], [3, 0], [4, 2]])
    G = p.sample_grads(X, idx)
    ref = _loop_grads(p, X, [p.inputs[i, idx[i]] for i in range(p.n)], [p.targets[i, idx[i]] for i in range(p.n)])
    torch.testing.assert_close(G, ref, atol=1e-5, rtol=1e-5)
    losses, G2 = p.sample_loss_grads(X[[1, 3]], idx[[1, 3]], clients=[1, 3])
    torch.testing.assert_close(G2, G[[1, 3]], atol=1e-6, rtol=1e-6)
    meter.close_round()
    m = p.m.to(torch.float64)
    torch.testing.assert_close(meter.oracle["grad"], 2 / m + torch.tensor([0, 1, 0, 1.0], dtype=torch.float64) * 2 / m)
    torch.testing.assert_close(meter.oracle["func"], torch.tensor([0, 1, 0, 1.0], dtype=torch.float64) * 2 / m)
    # metrics are not counted; the global loss is the mean of the clients' losses
    before = meter.oracle["grad"].clone()
    assert p.loss(X[0]) == pytest.approx(float(p._losses(X, None).mean()), rel=1e-5)
    p.full_grad(X[0])
    assert torch.equal(meter.oracle["grad"], before)
    assert not p.convex and math.isnan(p.L) and p.x_star is None


# ---- layout ------------------------------------------------------------------------------------------

def test_layout_round_trip_and_matrix_views():
    net = make_model("cnn", in_shape=(2, 4, 4), classes=3, hidden=(3,), seed=0)
    lay = Layout.from_module(net)
    assert lay.d == sum(p.numel() for p in net.parameters())
    assert [b.shape for b in lay] == [tuple(p.shape) for p in net.parameters()]
    X = torch.randn(5, 2, lay.d)  # any leading batch dimensions
    parts = lay.unflatten(X)
    assert parts["0.weight"].shape == (5, 2, 3, 2, 3, 3)
    assert torch.equal(lay.flatten(parts), X)
    conv = lay.blocks[0]
    assert conv.is_matrix and conv.matrix_shape == (3, 18)
    assert torch.equal(lay.matrix(X, conv), X[..., conv.slice].reshape(5, 2, 3, 18))
    flat = lay.flatten({k: v.detach() for k, v in net.named_parameters()})
    assert torch.equal(lay.unflatten(flat)["0.bias"], net[0].bias.detach())
    with pytest.raises(ValueError, match="expected"):
        lay.unflatten(torch.zeros(lay.d + 1))


def test_layout_lmo_matches_per_block_lmo():
    p = _classify_problem("mlp", dtype=torch.float64)
    V = torch.randn(3, p.d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = layout_lmo(V, p.layout, "spectral", "l2", method="svd")
    for r in range(3):
        blocks = [V[r, b.slice].reshape(b.shape) for b in p.layout]
        ref = lmo_many(blocks, "auto", method="svd")
        torch.testing.assert_close(out[r], torch.cat([t.reshape(-1) for t in ref]))
    for b in p.layout:  # unit balls: spectral norm 1 for matrices, l2 norm 1 for vectors
        M = p.layout.matrix(out, b)
        nrm = torch.linalg.matrix_norm(M, ord=2) if b.is_matrix else M.norm(dim=-1)
        torch.testing.assert_close(nrm, torch.ones(3, dtype=torch.float64))


# ---- loaders -------------------------------------------------------------------------------------------

def test_idx_round_trip_and_bad_magic(tmp_path):
    for arr in (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.array([1.5, -2.0], dtype=np.float32),
                np.arange(6, dtype=np.int32).reshape(3, 2)):
        write_idx(tmp_path / "a.idx", arr)
        back = read_idx(tmp_path / "a.idx")
        assert back.dtype == arr.dtype and np.array_equal(back, arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def _write_mnist(folder, n_train=12, n_test=5, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {"train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_y": rng.integers(0, 10, n_train).astype(np.uint8),
              "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_y": rng.integers(0, 10, n_test).astype(np.uint8)}
    for key, name in MNIST_FILES.items():
        write_idx(folder / name, arrays[key])
        if gz and key == "train_x":  # one file gzipped: both forms are read
            (folder / (name + ".gz")).write_bytes(gzip.compress((folder / name).read_bytes()))
            (folder / name).unlink()
    return arrays


def test_mnist_from_idx_files_and_missing_file_error(tmp_path, isolated_dirs):
    arrays = _write_mnist(isolated_dirs["data"] / "mnist")
    vd = load_mnist("mnist")
    assert vd.X.shape == (12, 1, 28, 28) and vd.X_test.shape == (5, 1, 28, 28) and vd.X.dtype == np.float32
    assert np.array_equal(vd.y, arrays["train_y"]) and abs(float(vd.X.mean())) < 1e-5
    # an explicit folder; a missing file names the expected path and OPTSIM_DATA
    folder = tmp_path / "m2"
    _write_mnist(folder, gz=False)
    (folder / MNIST_FILES["test_y"]).unlink()
    with pytest.raises(FileNotFoundError) as e:
        load_vision(f"mnist:{folder}")
    assert str(folder / MNIST_FILES["test_y"]) in str(e.value) and "OPTSIM_DATA" in str(e.value)


def test_cifar10_from_pickles_and_missing_error(tmp_path, isolated_dirs):
    folder = isolated_dirs["data"] / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": [1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(data))
    vd = load_cifar10("cifar10")
    assert vd.X.shape == (15, 3, 32, 32) and vd.X_test.shape == (3, 3, 32, 32) and vd.classes == 10
    assert np.array_equal(vd.y, np.tile([1, 2, 3], 5))
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10("cifar10")
    with pytest.raises(FileNotFoundError) as e:
        load_cifar10(f"cifar10:{tmp_path / 'nowhere'}")
    assert str(tmp_path / "nowhere" / "data_batch_1") in str(e.value)


def test_text_windows_vocab_and_missing_error(tmp_path, isolated_dirs):
    (tmp_path / "t.txt").write_text("abcabcabcabcabcabcabcab")
    td = load_text(f"text:{tmp_path / 't.txt'}", seq_len=4, test_fraction=0.25)
    assert td.vocab == "abc" and td.windows.shape[1] == 5
    assert np.array_equal(td.windows[0], [0, 1, 2, 0, 1]) and np.array_equal(td.windows[1], [1, 2, 0, 1, 2])
    (isolated_dirs["data"] / "corpus.txt").write_text("hello world")  # a bare name is looked up in OPTSIM_DATA
    assert load_text("text:corpus.txt", seq_len=3).vocab == " dehlorw"
    with pytest.raises(FileNotFoundError) as e:
        load_text("text:missing.txt")
    assert str(isolated_dirs["data"] / "missing.txt") in str(e.value)


# ---- config, runner, trace -------------------------------------------------------------------------------------

def _neural_cfg(methods, rounds=4, **problem):
    return parse_config({"threads": 1, "problem": {"name": "neural", "clients": 4, "hidden": [8], "size": 200,
                                                   "test_size": 50, **problem},
                         "methods": methods, "stop": {"max_rounds": rounds}, "log_every": 2})


def test_config_builds_float32_problem_and_trace_has_test_metrics(tmp_path):
    cfg = _neural_cfg([{"name": "fedopt", "client_optimizer": "adam", "stepsize": 0.01, "local_steps": 2,
                        "batch_size": 8}])
    p = build_problem(cfg)
    assert isinstance(p, NeuralProblem) and p.dtype == torch.float32 and p.n == 4 and int(p.m.sum()) == 200
    trace = run_method(p, cfg.methods[0], cfg, progress=False)
    assert trace.status == "finished", trace.meta.get("message")
    assert trace["loss"][0] == pytest.approx(p.loss(p.initial_point()), rel=1e-6)  # started at the model's init
    acc = trace["test_accuracy"]
    assert len(acc) == len(trace) and np.all((acc >= 0) & (acc <= 1))
    assert trace["loss"][-1] < trace["loss"][0]
    trace.save(tmp_path / "t.json")
    back = Trace.load(tmp_path / "t.json")
    assert np.array_equal(back["test_accuracy"], acc)
    assert build_problem(parse_config({**cfg.model_dump(), "dtype": "float64"})).dtype == torch.float64


def test_trace_extra_columns_are_padded():
    t = Trace("a", "gd")
    t.append({"round": 0, "loss": 1.0})
    t.append({"round": 1, "loss": 0.5, "test_accuracy": 0.9})
    t.append({"round": 2, "loss": 0.25})
    assert np.isnan(t["test_accuracy"][[0, 2]]).all() and t["test_accuracy"][1] == 0.9 and len(t) == 3


def test_config_errors_name_the_problem(isolated_dirs):
    with pytest.raises(ConfigError, match="hiden"):
        _neural_cfg(["gd"], hiden=[3])
    cfg = _neural_cfg([{"name": "gd", "stepsize": 0.1}], data="mnist", size=None, test_size=None)
    with pytest.raises(FileNotFoundError, match=str(isolated_dirs["data"] / "mnist")):
        build_problem(cfg)
    with pytest.raises(ValueError, match="does not fit"):
        build_problem(_neural_cfg([{"name": "gd", "stepsize": 0.1}], model="transformer"))
    cfg = _neural_cfg([{"name": "dist_opt", "optimizer": "lmo_hcm", "stepsize": 0.1}])
    from optsim.experiment.runner import validate_methods

    with pytest.raises(ConfigError, match="differentiable loss"):
        validate_methods(cfg, build_problem(cfg))
    cfg = _neural_cfg([{"name": "dist_opt", "optimizer": "gluon"}])
    with pytest.raises(ConfigError, match="set 'stepsize'"):
        validate_methods(cfg, build_problem(cfg))


# ---- methods --------------------------------------------------------------------------------------------------

def _make(problem, spec, seed=0):
    meter = Meter(problem.n)
    problem.attach(meter)
    method = build_method(spec, problem, Channel(meter, problem.d), seed)
    x0 = problem.initial_point()
    x0 = torch.zeros(problem.d, dtype=problem.dtype) if x0 is None else x0
    method.init(x0.clone())
    return method, meter


@pytest.fixture(scope="module")
def logreg():
    cfg = parse_config({"problem": {"name": "logreg", "data": "sklearn:breast_cancer", "normalize": "standardize",
                                    "clients": 5, "lam": 0.1}, "methods": ["gd"]})
    return build_problem(cfg)


@pytest.mark.parametrize("other, extra", [("gd", {}), ("sgd", {"batch_size": 4})])
def test_fedopt_sgd_one_local_step_is_minibatch_gd(logreg, other, extra):
    a, _ = _make(logreg, {"name": other, "stepsize": 0.3, **extra})
    b, meter = _make(logreg, {"name": "fedopt", "stepsize": 0.3, **extra})
    for _ in range(25):
        a.step()
        b.step()
        meter.close_round()
    torch.testing.assert_close(b.x, a.x, atol=1e-13, rtol=0)
    assert meter.snapshot()["bits_up"] == 25 * logreg.d * 32 and meter.snapshot()["comm_rounds"] == 25


def test_fedopt_local_steps_equals_fedavg_and_server_stepsize(logreg):
    a, _ = _make(logreg, {"name": "fedavg", "stepsize": 0.2, "local_steps": 3, "server_stepsize": 1.5})
    b, _ = _make(logreg, {"name": "fedopt", "stepsize": 0.2, "local_steps": 3, "server_stepsize": 1.5})
    c, _ = _make(logreg, {"name": "local_opt", "stepsize": 0.2, "local_steps": 3})
    d, _ = _make(logreg, {"name": "fedavg", "stepsize": 0.2, "local_steps": 3})
    for _ in range(10):
        for m in (a, b, c, d):
            m.step()
    torch.testing.assert_close(b.x, a.x, atol=1e-12, rtol=0)
    torch.testing.assert_close(c.x, d.x, atol=1e-12, rtol=0)


def test_batched_client_optimizers_are_per_client():
    """Muon (layer-wise, one view per client and block) and Adam (elementwise, the whole (m, d)
    matrix) on client rows give each client the iterates of its own optimizer."""
    p = _classify_problem("mlp", dtype=torch.float64)
    lay = Layout.from_shapes([(b.name, b.shape) for b in p.layout if b.is_matrix])
    gen = torch.Generator().manual_seed(0)
    Y0 = torch.randn(3, lay.d, dtype=torch.float64, generator=gen)
    Gs = [torch.randn(3, lay.d, dtype=torch.float64, generator=gen) for _ in range(3)]
    for spec, cls, kw in (({"name": "muon", "momentum": 0.9}, Muon, {"momentum": 0.9}),
                          ({"name": "adam"}, torch.optim.Adam, {})):
        Y = Y0.clone()
        opt = BatchedOptimizer(spec, Y, lay, lr=0.05)
        for G in Gs:
            opt.step(lambda G=G: (G, None))
        for i in range(3):
            ps = [t.clone() for t in lay.unflatten(Y0[i]).values()]
            ref = cls(ps, lr=0.05, **kw)
            for G in Gs:
                for q, g in zip(ps, lay.unflatten(G[i]).values()):
                    q.grad = g.clone()
                ref.step()
            torch.testing.assert_close(Y[i], lay.flatten(ps), atol=1e-12, rtol=1e-10)


def test_muon_client_optimizer_sends_biases_to_the_vector_optimizer():
    p = _classify_problem("mlp")
    m, _ = _make(p, {"name": "fedopt", "client_optimizer": "muon", "stepsize": 0.02, "local_steps": 2,
                     "batch_size": 3})
    f0 = p.loss(m.x)
    for _ in range(5):
        m.step()
    assert p.loss(m.x) < f0


@pytest.fixture(scope="module")
def small_nn64():
    cfg = parse_config({"dtype": "float64", "problem": {"name": "neural", "clients": 4, "hidden": [6], "size": 120},
                        "methods": ["gd"]})
    return build_problem(cfg)


def test_cgluon_identity_sgd_equals_distributed_gluon(small_nn64):
    runs = []
    for spec in ({"name": "dist_opt", "optimizer": {"name": "gluon", "beta": 0.8}, "stepsize": 0.05, "batch_size": 5},
                 {"name": "cgluon", "estimator": "sgd", "p": 1.0, "momentum": 0.8, "stepsize": 0.05, "batch_size": 5}):
        m, meter = _make(small_nn64, spec)  # the problem counts into this run's meter
        for _ in range(8):
            m.step()
            meter.close_round()
        runs.append((m.x, meter.snapshot()))
    assert torch.equal(runs[1][0], runs[0][0])  # the same Gluon step (optsim.optim.Gluon) on the same gradients
    assert runs[0][1] == runs[1][1]


def test_cgluon_marina_bits_and_ef21_invariant(small_nn64):
    d = small_nn64.d
    k = d // 10
    m, meter = _make(small_nn64, {"name": "cgluon", "compressor": {"name": "rand_k", "k": k}, "stepsize": 0.02,
                                  "batch_size": 5})
    per_round = []
    for _ in range(40):
        before = meter.bits_up.clone()
        m.step()
        meter.close_round()
        per_round.append(float((meter.bits_up - before)[0]))
    comp = k * (32 + math.ceil(math.log2(d)))
    assert m._p == pytest.approx(comp / (32 * d))  # MARINA's balance p = compressed / dense bits
    assert per_round[0] == 32 * d and set(per_round[1:]) <= {comp, 32.0 * d} and comp in per_round[1:]
    e, _ = _make(small_nn64, {"name": "cgluon", "compressor": {"name": "top_k", "k": k}, "estimator": "mvr",
                              "stepsize": 0.02, "batch_size": 5})
    for _ in range(10):
        e.step()
    torch.testing.assert_close(e.comm.g, e.comm.H.mean(0), atol=1e-12, rtol=0)  # the server holds the mean of the shifts
    with pytest.raises(ValueError, match="unbiased"):
        _make(small_nn64, {"name": "cgluon", "compressor": {"name": "top_k", "k": k}, "feedback": "marina",
                           "stepsize": 0.1})


def test_dist_opt_gluon_mvr_variants_count_their_gradients(small_nn64):
    for v, evals in ((1, 2), (2, 3), (3, 1)):
        m, meter = _make(small_nn64, {"name": "dist_opt", "optimizer": {"name": "gluon_mvr", "variant": v},
                                      "stepsize": 0.02, "batch_size": 5})
        m.step()
        meter.close_round()
        first = meter.snapshot()["grad_evals"]
        m.step()
        meter.close_round()
        assert meter.snapshot()["grad_evals"] - first == pytest.approx(evals * first)


def test_ringmaster_and_minibatch_lmo_steps():
    q = Quadratic.generate(4, 6, L=1.0, mu=0.1, noise=0.0, seed=0)
    gamma = 0.05
    # synchronous LMO momentum with alpha = 1: x_{k+1} = x_k - gamma grad f(x_k) / ||grad f(x_k)||
    m, _ = _make(q, {"name": "minibatch_lmo", "stepsize": gamma, "alpha": 1.0})
    x = torch.zeros(6, dtype=torch.float64)
    for _ in range(5):
        g = q.full_grad(x)
        x = x - gamma * g / g.norm()
        m.step()
    torch.testing.assert_close(m.x, x, atol=1e-12, rtol=0)
    # Ringmaster LMO: every accepted arrival moves x by exactly gamma; R = 1 discards every stale gradient
    from optsim.clock import FixedTimes, Timing

    r, _ = _make(q, {"name": "ringmaster_lmo", "stepsize": gamma, "alpha": 0.5, "R": 1})
    r.attach_timing(Timing(FixedTimes(np.array([1.0, 1.5, 2.0, 3.7]))))
    r.init(torch.zeros(6, dtype=torch.float64))
    prev = r.x.clone()
    for _ in range(20):
        r.step()
        assert float((r.x - prev).norm()) == pytest.approx(gamma, rel=1e-12)
        prev = r.x.clone()
    meta = r.trace_meta()["delays"]
    assert meta["discarded"] > 0 and meta["updates"] == 20
    assert all(dl >= 1 for dl, u in zip(r.delays, r.engine.log.used) if not u) and all(dl == 0 for dl, u in zip(r.delays, r.engine.log.used) if u)


def _pa_reference(problem, x0, eta, grads_at, K):
    """Parameter-agnostic LMO momentum by hand (one l2 block): alpha_0 = 1, alpha_k = k^-1/2,
    x_{k+1} = x_k - eta (k + 1)^-3/4 m_{k+1} / ||m_{k+1}||."""
    x, m, xs = x0.clone(), None, []
    for k in range(K):
        a = 1.0 if k == 0 else k ** -0.5
        g = grads_at(x)
        m = g.clone() if m is None else (1 - a) * m + a * g
        x = x - eta * (k + 1) ** -0.75 * m / m.norm()
        xs.append(x.clone())
    return xs


def test_parameter_agnostic_ringmaster_lmo_one_worker_is_synchronous_pa_lmo():
    from optsim.problems import StochasticQuadratic

    eta, K = 0.7, 25
    # deterministic gradients: both methods equal the hand-written recursion iterate for iterate
    q = Quadratic.generate(1, 6, L=1.0, mu=0.1, noise=0.0, seed=1)
    x0 = torch.zeros(6, dtype=torch.float64)
    ref = _pa_reference(q, x0, eta, q.full_grad, K)
    for name in ("ringmaster_lmo", "minibatch_lmo"):
        r, _ = _make(q, {"name": name, "stepsize": eta, "schedule": "parameter_agnostic"})
        for k in range(K):
            r.step()
            torch.testing.assert_close(r.x, ref[k], atol=1e-12, rtol=0)
    # stochastic gradients, one worker (every delay 0, nothing discarded): the same draws, the same iterates
    sq = StochasticQuadratic.generate(1, 8, L=1.0, mu=0.1, noise=0.3, seed=0)
    runs = {}
    for name in ("ringmaster_lmo", "minibatch_lmo"):
        r, _ = _make(sq, {"name": name, "stepsize": eta, "schedule": "parameter_agnostic"}, seed=3)
        xs = []
        for _ in range(K):
            r.step()
            xs.append(r.x.clone())
        runs[name] = (xs, r)
    for a, b in zip(*(v[0] for v in runs.values())):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert all(runs["ringmaster_lmo"][1].engine.log.used) and set(runs["ringmaster_lmo"][1].delays) == {0}
    # the step of iteration k has length eta (k + 1)^-3/4 (one l2 block)
    steps = [float((b - a).norm()) for a, b in zip(runs["ringmaster_lmo"][0], runs["ringmaster_lmo"][0][1:])]
    assert steps == pytest.approx([eta * (k + 2) ** -0.75 for k in range(K - 1)], rel=1e-10)


def test_parameter_agnostic_ringmaster_lmo_threshold_schedule():
    from optsim.clock import FixedTimes, Timing
    from optsim.problems import StochasticQuadratic

    sq = StochasticQuadratic.generate(6, 5, L=1.0, mu=0.1, noise=0.1, seed=0)
    r, _ = _make(sq, {"name": "ringmaster_lmo", "stepsize": 0.5, "schedule": "parameter_agnostic"})
    r.attach_timing(Timing(FixedTimes(np.array([1.0, 1.3, 1.7, 2.2, 2.9, 4.1]))))
    r.init(torch.zeros(5, dtype=torch.float64))
    ks = []  # the server iteration at every arrival
    orig = r.record

    def record(i, used):
        ks.append(r.k)
        return orig(i, used)

    r.record = record
    for _ in range(200):
        r.step()
    assert [r.R_k(k) for k in (0, 1, 3, 4, 8, 9, 99, 100)] == [1, 1, 1, 2, 2, 3, 9, 10]
    # accepted iff delay < R_k = max(1, floor(sqrt(k))) at the arrival's iteration k
    for k, dl, u in zip(ks, r.delays, r.engine.log.used):
        assert bool(u) == (dl < max(1, math.isqrt(k)))
    late = [(dl, u) for k, dl, u in zip(ks, r.delays, r.engine.log.used) if k >= 100]
    assert any(u and dl >= 1 for dl, u in late)  # the threshold has grown: stale gradients are used
    assert any(not u for dl, u in late)          # and the staler ones are still discarded
    with pytest.raises(Exception, match="threshold"):
        _make(sq, {"name": "ringmaster_lmo", "stepsize": 0.5, "schedule": "parameter_agnostic", "R": 3})


def test_parameter_agnostic_ringmaster_lmo_converges_without_constants():
    """No stepsize, no R, no sigma^2: the default eta = 1 reaches a small gradient on a noisy quadratic."""
    from optsim.clock import FixedTimes, Timing
    from optsim.problems import StochasticQuadratic

    sq = StochasticQuadratic.generate(4, 10, L=1.0, mu=0.1, noise=0.1, seed=0)
    r, _ = _make(sq, {"name": "ringmaster_lmo", "schedule": "parameter_agnostic"})
    r.attach_timing(Timing(FixedTimes(np.array([1.0, 2.0, 3.0, 4.0]))))
    x0 = torch.zeros(10, dtype=torch.float64)
    r.init(x0)
    g0 = float(sq.full_grad(x0).norm())
    for _ in range(4000):
        r.step()
    assert float(sq.full_grad(r.x).norm()) < 0.05 * g0


# ---- recipes ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rid", ["M4", "M2", "M6", "A4"])  # a few seconds each
def test_recipe_passes_fast(rid, tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe(rid, tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert outcome.figures and all(f.exists() for f in outcome.figures)


@pytest.mark.slow
@pytest.mark.parametrize("rid", ["M1", "M3", "C8"])  # 5-15 s each on an idle machine
def test_neural_recipe_passes_fast(rid, tmp_path):
    from optsim.reproduce import run_recipe

    outcome, _ = run_recipe(rid, tmp_path, fast=True)
    assert outcome.passed, outcome.measured
    assert outcome.figures and all(f.exists() for f in outcome.figures)
