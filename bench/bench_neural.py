"""Benchmark: per-client gradients of a small MLP, one vmap call vs a Python loop over clients.

The neural problem (:class:`optsim.problems.neural.NeuralProblem`) computes all clients' local
gradients in one call over the (n, d) client rows: the forward pass vmapped over clients
(``torch.func.vmap`` of ``functional_call``), one backward pass of the sum of the clients' losses.
This script times that call against two loops over the clients that compute the same gradients,
measured in the same run:

* ``loop autograd``: for each client, load its row into the ``nn.Module`` and call
  ``torch.autograd.grad`` (what a per-client training loop does);
* ``loop func.grad``: for each client, ``torch.func.grad`` of the same pure loss (the vmapped
  function without the vmap).

The three are timed in turn within each round (the same machine load); it checks that all three
give the same gradients and prints median times and the median over rounds of the ratios
loop / vmap (target >= 10 on CPU). Data: scikit-learn's digits split among ``--clients`` clients, MLP 64-``--hidden``-10.

    python bench/bench_neural.py [--clients 100] [--hidden 32] [--repeats 15] [--threads 1] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import copy
import statistics

import torch
import torch.nn as nn
from torch.func import grad

from optsim.problems.neural import neural_problem
from timing import interleaved, median_ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    p = neural_problem("sklearn:digits", "mlp", args.clients, hidden=(args.hidden,), device=device)
    gen = torch.Generator().manual_seed(0)
    X = (p.initial_point().expand(p.n, p.d) + 0.01 * torch.randn(p.n, p.d, generator=gen).to(device)).contiguous()
    data = [(p.inputs[i, : int(p.m[i])], p.targets[i, : int(p.m[i])]) for i in range(p.n)]
    net = copy.deepcopy(p.module)
    params = list(net.parameters())
    for q in params:
        q.requires_grad_(True)

    def vmapped():
        return p.grads(X)

    def loop_autograd():
        out = []
        for i, (inp, tgt) in enumerate(data):
            with torch.no_grad():
                for q, v in zip(params, p.layout.unflatten(X[i]).values()):
                    q.copy_(v)
            loss = nn.functional.cross_entropy(net(inp), tgt)
            out.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
        return torch.stack(out)

    one = grad(p._loss_of)

    def loop_func():
        return torch.stack([one(X[i], p.inputs[i], p.targets[i], p.w[i]) for i in range(p.n)])

    G = vmapped()
    err = max(float((loop_autograd() - G).abs().max()), float((loop_func() - G).abs().max()))
    ts = interleaved({"vmap": vmapped, "autograd": loop_autograd, "func": loop_func}, args.repeats, device)
    med = {k: 1e3 * statistics.median(v) for k, v in ts.items()}
    print(f"MLP 64-{args.hidden}-10 (d = {p.d}), {p.n} clients x {int(p.m.min())}-{int(p.m.max())} samples, "
          f"{device.type}, threads = {torch.get_num_threads()}, {args.repeats} interleaved rounds; "
          f"max |difference| = {err:.1e}")
    print(f"  batched (vmap)      {med['vmap']:8.2f} ms")
    print(f"  loop autograd       {med['autograd']:8.2f} ms   ratio loop / vmap = "
          f"{median_ratio(ts['autograd'], ts['vmap']):6.1f}")
    print(f"  loop func.grad      {med['func']:8.2f} ms   ratio loop / vmap = {median_ratio(ts['func'], ts['vmap']):6.1f}")


if __name__ == "__main__":
    main()
