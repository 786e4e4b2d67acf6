"""Benchmark: Muon's Newton–Schulz orthogonalization of many matrices, batched vs a Python loop.

Clients and layers are batch dimensions: 100 clients x 4 layers of 64x64 matrices are
orthogonalized in one ``newton_schulz`` call on a (100, 4, 64, 64) tensor (a ``bmm`` and two
``baddbmm`` per iteration; on the CPU in cache-sized chunks into preallocated buffers), and, for
comparison, one matrix at a time in a Python loop (400 calls) and (CPU) the whole batch as one
chunk. They are timed in turn within each round (same load); the script prints median times and
the median over rounds of the ratio batched time / loop time (< 1 means the batched call is
faster) and checks that both give the same result. On CPU it measures with one
intra-op thread and with torch's default thread count (on a small, loaded machine the per-matrix
loop with several threads can be far slower than with one: many tiny multithreaded matmuls).

    python bench/bench_muon.py [--clients 100] [--layers 4] [--dim 64] [--repeats 9] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import statistics

import torch

from optsim.optim.lmo import newton_schulz
from timing import interleaved, median_ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    G = torch.randn(args.clients, args.layers, args.dim, args.dim, generator=gen, device=device, dtype=dtype)
    flat = list(G.reshape(-1, args.dim, args.dim).unbind(0))

    def batched():
        return newton_schulz(G, steps=args.steps)

    def loop():
        return [newton_schulz(m, steps=args.steps) for m in flat]

    n = args.clients * args.layers
    print(f"device={device} dtype={args.dtype} torch={torch.__version__}")
    print(f"{n} matrices ({args.clients} clients x {args.layers} layers) of {args.dim}x{args.dim}, "
          f"{args.steps} Newton-Schulz steps, {args.repeats} interleaved rounds")
    import optsim.optim.lmo as lmo

    def one_batch():  # the whole batch as one chunk (the plain batched iteration, buffers reused)
        saved, lmo.NS_CPU_CHUNK_BYTES = lmo.NS_CPU_CHUNK_BYTES, 1 << 62
        try:
            return newton_schulz(G, steps=args.steps)
        finally:
            lmo.NS_CPU_CHUNK_BYTES = saved

    fns = {"batched": batched, "loop": loop} if device.type != "cpu" else \
        {"batched": batched, "one batch": one_batch, "loop": loop}
    default_threads = torch.get_num_threads()
    thread_counts = [1, default_threads] if device.type == "cpu" and default_threads > 1 else [default_threads]
    for threads in thread_counts:
        torch.set_num_threads(threads)
        ts = interleaved(fns, args.repeats, device)
        err = (batched().reshape(-1, args.dim, args.dim) - torch.stack(loop())).abs().max().item()
        med = {k: statistics.median(v) * 1e3 for k, v in ts.items()}
        line = f"threads={threads}: " + " | ".join(f"{k} {v:8.2f} ms" for k, v in med.items())
        line += " | batched/loop " + f"{median_ratio(ts['batched'], ts['loop']):6.3f}"
        if "one batch" in ts:
            line += f" | one batch/loop {median_ratio(ts['one batch'], ts['loop']):6.3f}"
        print(line + f" | max abs diff {err:.1e}")
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
