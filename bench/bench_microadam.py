"""Benchmark: one MicroAdam step on a ~10M-parameter MLP against torch.optim.AdamW's step, same run.

The parameters of an MLP (1024 -> 4352 -> 1024 -> 1024, about 9.97M parameters) get fixed random
gradients; each optimizer owns its own copy. After warm-up steps that fill MicroAdam's window, three
groups are timed, each interleaved on its own (every step of a group runs once per round, so they
see the same machine load, and no other group's step changes their caches):

1. the headline: MicroAdam (fused CPU loops, the default) against AdamW as torch builds it by
   default, which on the CPU is its single-tensor loop (``foreach`` and ``fused`` are opt-in there);
   target: MicroAdam <= 3 x;
2. (CPU) MicroAdam against itself with ``fused=False`` (the PyTorch kernels): what the fused loops save;
3. (CPU) AdamW against a hand-written plain version of the same step (dense Adam statistics scattered from
   the window, ``torch.topk``, bit shifts for the codes), which also checks MicroAdam's result.

Printed: median step times and the median over rounds of the ratio to the group's first step, and
the state memory of each optimizer (MicroAdam: ``optimizer_state_bytes()``; AdamW: its two moment
tensors) with the paper's count ``d/2 + 4mk`` for reference.

    python bench/bench_microadam.py [--hidden 4352] [--repeats 7] [--density 0.01] [--m 10] [--threads N]
                                    [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import math
import statistics

import torch
from timing import interleaved, median_ratio

from optsim.optim import MicroAdam
from optsim.optim.microadam import dequantize_4bit, quantize_4bit


def plain_step(params, state, lr, betas, eps, m, density, block):
    """MicroAdam's step written plainly (one tensor at a time, dense statistics)."""
    b1, b2 = betas
    for p in params:
        st = state.setdefault(p, {})
        d = p.numel()
        k = math.ceil(density * d)
        if not st:
            st.update(t=0, I=torch.zeros(m, k, dtype=torch.long), V=torch.zeros(m, k, dtype=p.dtype),
                      e=torch.zeros(1, (d + 1) // 2, dtype=torch.uint8),
                      lo=torch.zeros(1, -(-d // block), dtype=p.dtype), hi=torch.zeros(1, -(-d // block), dtype=p.dtype))
        st["t"] += 1
        t = st["t"]
        a = p.grad.reshape(-1) + dequantize_4bit(st["e"], st["lo"], st["hi"], d, block, p.dtype)[0]
        idx = a.abs().topk(k).indices
        st["I"][(t - 1) % m], st["V"][(t - 1) % m] = idx, a[idx]
        a[idx] = 0
        st["e"], st["lo"], st["hi"] = quantize_4bit(a.view(1, -1), block)
        Mt = torch.zeros(d, dtype=p.dtype)
        St = torch.zeros(d, dtype=p.dtype)
        for r in range(min(t, m)):
            age = (t - 1 - r) % m
            Mt.index_add_(0, st["I"][r], b1 ** age * st["V"][r])
            St.index_add_(0, st["I"][r], b2 ** age * st["V"][r] ** 2)
        c1, c2 = (1 - b1) / (1 - b1 ** t), (1 - b2) / (1 - b2 ** t)
        p.data.view(-1).sub_(lr * c1 * Mt / ((c2 * St).sqrt() + eps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=4352)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--m", type=int, default=10)
    ap.add_argument("--quant-block", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(args.width, args.hidden), torch.nn.ReLU(),
                              torch.nn.Linear(args.hidden, args.width), torch.nn.ReLU(),
                              torch.nn.Linear(args.width, args.width)).to(device)
    base = [p.detach().clone() for p in net.parameters()]
    gen = torch.Generator(device=device).manual_seed(1)
    grads = [torch.randn(p.shape, generator=gen, device=device) for p in base]
    d = sum(p.numel() for p in base)

    def copy():
        ps = [torch.nn.Parameter(b.clone()) for b in base]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        return ps

    kw = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    pa, pm, pt, pr = copy(), copy(), copy(), copy()
    adamw = torch.optim.AdamW(pa, weight_decay=0.0, **kw)
    micro = MicroAdam(pm, m=args.m, density=args.density, quant_block=args.quant_block, **kw)
    micro_torch = MicroAdam(pt, m=args.m, density=args.density, quant_block=args.quant_block, fused=False, **kw)
    plain_state: dict = {}
    check = device.type == "cpu"
    err = float("nan")
    for i in range(args.m):                               # fill the window
        adamw.step()
        micro.step()
        micro_torch.step()
        if check:
            plain_step(pr, plain_state, m=args.m, density=args.density, block=args.quant_block, **kw)
            if i == 0:  # (later, g + dequantized error has float32 ties at the k-th largest |a|, broken
                #            either way by the two: both are Top-K sets, and the runs part)
                err = max(float((a - b).detach().abs().max()) for a, b in zip(pm, pr))

    plain = lambda: plain_step(pr, plain_state, m=args.m, density=args.density,  # noqa: E731
                               block=args.quant_block, **kw)
    # three groups, each interleaved on its own: a step's neighbours in a round change its caches
    groups = [("headline", {"AdamW (torch default)": adamw.step, "MicroAdam": micro.step})]
    if check:  # (the fused loops are CPU loops: on a GPU both MicroAdams run the PyTorch kernels)
        groups.append(("fused loops vs PyTorch kernels",
                       {"MicroAdam": micro.step, "MicroAdam, PyTorch kernels": micro_torch.step}))
    if check:
        groups.append(("reference", {"AdamW (torch default)": adamw.step, "plain MicroAdam (hand-written)": plain}))
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"{d:,} parameters in {len(base)} tensors; MicroAdam m={args.m}, density={args.density}, "
          f"quant_block={args.quant_block}; {args.repeats} interleaved rounds per group")
    results = {}
    for title, fns in groups:
        ts = interleaved(fns, args.repeats, device)
        first = next(iter(ts.values()))
        print(f"-- {title}")
        print(f"{'step':34s} {'median ms':>10s} {'/ first':>8s}")
        for name, v in ts.items():
            print(f"{name:34s} {statistics.median(v) * 1e3:10.2f} {median_ratio(v, first):8.2f}")
        results[title] = ts
    adam_bytes = sum(v.nbytes for st in adamw.state.values() for k, v in st.items() if k in ("exp_avg", "exp_avg_sq"))
    mb = micro.optimizer_state_bytes()
    ks = sum(math.ceil(args.density * b.numel()) for b in base)
    paper = d / 2 + 4 * args.m * ks
    print(f"state bytes: AdamW {adam_bytes:,} ({adam_bytes / d:.2f}/param) | MicroAdam {mb:,} ({mb / d:.3f}/param) | "
          f"MicroAdam / AdamW {mb / adam_bytes:.3f} | paper's d/2 + 4mk {paper / d:.3f}/param")
    if check:
        print(f"max |MicroAdam - plain| after the first step: {err:.1e}")
    head = results["headline"]
    ratio = median_ratio(head["MicroAdam"], head["AdamW (torch default)"])
    print(f"MicroAdam step / AdamW step = {ratio:.2f} (target <= 3)")


if __name__ == "__main__":
    main()
