"""One FedAvg round on a neural model: optsim against two references of the same arithmetic
written in this file, timed interleaved in the same run (bench/timing.py).

Workload (the issue's): an MLP 64-128-10 (ReLU), 100 clients of 64 samples of 8 x 8 inputs
(synthetic, seeded), every client every round, one local epoch of minibatch SGD with batch 16
(4 local steps, a fresh permutation per client), float32, plain averaging of the models.

* ``optsim``: ``Session.step()`` of ``fedavg`` (local_epochs 1, batch_size 16) on the
  ``NeuralProblem`` (its MLP oracles: optsim.problems.batched_mlp);
* ``hand-batched``: the clients as a batch dimension, the forward and backward passes written out
  (two bmm per layer and direction) on (clients, ...) weight tensors: the floor;
* ``optsim, torch.func``: the same run through the generic path of any ``nn.Module`` (vmap of
  ``functional_call``, one autograd backward): optsim before the MLP path;
* ``vmap``: ``torch.func.vmap(grad(loss of functional_call))`` over the clients' parameter dicts.

``--model cnn``: a CNN (3 x 3 convolutions with 8 and 16 channels, ReLU, 2 x 2 max-pooling, a linear
head) on 8 x 8 inputs; its hand-batched round runs each convolution of all clients as one grouped
convolution (autograd for the backward).

Targets (the issue's): optsim within 1.5 x the hand-batched round for the MLP, 2 x for the CNN.
Run: ``python bench/bench_neural_round.py [--model cnn]`` (``--clients 4 --repeats 2`` for a smoke run).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from optsim.experiment import parse_config
from optsim.experiment.runner import Session
from optsim.problems.neural import NeuralProblem, make_model
from timing import interleaved, median_ratio


def hand_round(params, X, Y, lr, batch, generator):
    """One FedAvg round, by hand: params = [W1 (n, h, 64), b1 (n, h), W2 (n, 10, h), b2 (n, 10)] shared."""
    n, m = X.shape[:2]
    W1, b1, W2, b2 = (p.expand(n, *p.shape).clone() for p in params)
    rows = torch.arange(n)[:, None]
    for perm in torch.argsort(torch.rand(n, m, generator=generator), 1).split(batch, 1):
        x, y = X[rows, perm], Y[rows, perm]
        H = torch.baddbmm(b1.unsqueeze(1), x, W1.transpose(1, 2)).relu_()
        Z = torch.baddbmm(b2.unsqueeze(1), H, W2.transpose(1, 2))
        dZ = torch.softmax(Z, -1)
        dZ.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(dZ[..., :1], -1.0)).div_(perm.shape[1])
        dW2, db2 = torch.bmm(dZ.transpose(1, 2), H), dZ.sum(1)
        dH = torch.bmm(dZ, W2).mul_(H > 0)
        dW1, db1 = torch.bmm(dH.transpose(1, 2), x), dH.sum(1)
        for p, g in ((W1, dW1), (b1, db1), (W2, dW2), (b2, db2)):
            p.sub_(lr * g)
    return [p.mean(0) for p in (W1, b1, W2, b2)]


def hand_cnn_round(params, X, Y, lr, batch, generator):
    """One FedAvg round of the CNN 1-8-16 (3 x 3 convolutions, ReLU, 2 x 2 max-pooling, linear head)
    by hand: each convolution of the n clients as one grouped convolution, the head as one bmm,
    the backward by autograd on the (n, ...) weight tensors."""
    n, m = X.shape[:2]
    P = [p.expand(n, *p.shape).clone() for p in params]
    rows = torch.arange(n)[:, None]
    for perm in torch.argsort(torch.rand(n, m, generator=generator), 1).split(batch, 1):
        x, y = X[rows, perm], Y[rows, perm]
        b = perm.shape[1]
        with torch.enable_grad():
            W1, b1, W2, b2, W3, b3 = (p.requires_grad_() for p in P)
            h = x.transpose(0, 1).reshape(b, n, *x.shape[3:])
            h = F.max_pool2d(F.conv2d(h, W1.reshape(-1, *W1.shape[2:]), b1.reshape(-1), padding=1, groups=n).relu(), 2)
            h = F.max_pool2d(F.conv2d(h, W2.reshape(-1, *W2.shape[2:]), b2.reshape(-1), padding=1, groups=n).relu(), 2)
            Z = torch.baddbmm(b3.unsqueeze(1), h.reshape(b, n, -1).transpose(0, 1), W3.transpose(1, 2))
            loss = F.cross_entropy(Z.reshape(n * b, -1), y.reshape(-1), reduction="sum") / b
            G = torch.autograd.grad(loss, P)
        P = [p.detach() - lr * d for p, d in zip(P, G)]
    return [p.mean(0) for p in P]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", choices=["mlp", "cnn"], default="mlp",
                    help="mlp: 64-HIDDEN-10 on 64 features; cnn: 3 x 3 convolutions 1-8-16 on 8 x 8 images")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n, m, lr, batch = args.clients, args.samples, 0.05, 16
    g = torch.Generator().manual_seed(0)
    cnn = args.model == "cnn"
    X = torch.randn(n, m, *((1, 8, 8) if cnn else (64,)), generator=g)
    Y = torch.randint(0, 10, (n, m), generator=g)
    net = (make_model("cnn", in_shape=(1, 8, 8), classes=10, hidden=(8, 16), seed=0) if cnn
           else make_model("mlp", in_shape=(64,), classes=10, hidden=(args.hidden,), seed=0))
    problem = NeuralProblem(net, list(X), list(Y))
    cfg = parse_config({"name": "bench", "seed": 0, "dtype": "float32", "threads": args.threads,
                        "problem": {"name": "neural"}, "methods": ["fedavg"], "stop": {"max_rounds": 10 ** 6},
                        "log_every": 10 ** 6})
    spec = {"name": "fedavg", "local_epochs": 1, "batch_size": batch, "stepsize": lr}
    session = Session(problem, spec, cfg)
    session.attach()
    session.start()
    session.end_round()
    generic_problem = NeuralProblem(net, list(X), list(Y))
    generic_problem._batched = None  # the torch.func path every module can take (before the MLP path)
    generic = Session(generic_problem, spec, cfg)
    generic.attach()
    generic.start()
    generic.end_round()

    params = [p.detach().clone() for p in net.parameters()]
    names = [k for k, _ in net.named_parameters()]

    def loss(p, x, y):
        return torch.nn.functional.cross_entropy(functional_call(net, dict(zip(names, p)), (x,)), y)

    vgrad = vmap(grad(loss))

    def vmap_round():
        P = [p.expand(n, *p.shape).clone() for p in params]
        rows = torch.arange(n)[:, None]
        for perm in torch.argsort(torch.rand(n, m, generator=g), 1).split(batch, 1):
            G = vgrad(P, X[rows, perm], Y[rows, perm])
            P = [p - lr * d for p, d in zip(P, G)]
        return [p.mean(0) for p in P]

    hand = hand_cnn_round if cnn else hand_round
    times = interleaved({"optsim": session.step, "optsim, torch.func": generic.step,
                         "hand-batched": lambda: hand(params, X, Y, lr, batch, g), "vmap": vmap_round},
                        args.repeats, torch.device("cpu"))
    floor = times["hand-batched"]
    model = "CNN 1-8-16 (3 x 3, max-pool) on 8 x 8" if cnn else f"MLP 64-{args.hidden}-10"
    print(f"FedAvg round: {model}, {n} clients x {m} samples, batch {batch}, 1 local epoch, "
          f"float32, {args.threads} threads, {args.repeats} interleaved repeats")
    print(f"{'':20s}{'median ms':>12s}{'/ hand-batched':>16s}")
    for name, ts in times.items():
        ms = sorted(ts)[len(ts) // 2] * 1e3
        print(f"{name:20s}{ms:12.2f}{median_ratio(ts, floor):16.2f}")


if __name__ == "__main__":
    main()
