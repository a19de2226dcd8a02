"""What one headwise.attention call costs beyond the kernel it runs: auto against torch SDPA on the same
inputs, and the parts of the difference (the non-finite rule's check of out and k; the fixed Python cost of
checking, describing and dispatching the call), float32 forward, interleaved medians.

.venv/bin/python benchmarks/call_cost.py [--threads 2] [--sizes 128 512 2048] [--budget-s 3]

Rows: a tiny call (B=1, H=1, N=4, Dh=8: the fixed cost alone) and B=4, H=8, Dh=64 at each N. Columns: torch
SDPA; SDPA followed by headwise's check (running.follows_rule, one pass over out and one over k, on all
threads or one as checks.CheckThreads finds faster); headwise.attention (auto with HEADWISE_TUNE=0, which
this script sets: SDPA here); auto / SDPA.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
import torch.nn.functional as F

import headwise
from headwise.bench.measure import machine, time_interleaved
from headwise.running import follows_rule


def row(batch: int, heads: int, length: int, width: int, budget_s: float) -> dict[str, float]:
    """Median ms of each contender on q, k, v of (batch, heads, length, width)."""
    q, k, v = (torch.randn(batch, heads, length, width) for _ in range(3))  # (B, H, N, Dh) each
    steps = {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
        "sdpa + check": lambda: follows_rule(F.scaled_dot_product_attention(q, k, v), q, k),
        "auto": lambda: headwise.attention(q, k, v),
    }
    for step in steps.values():  # warm-up: the first calls allocate and dispatch once
        step()
    times = time_interleaved(steps, budget_s, min_reps=20, max_reps=20_000)
    return {name: 1e3 * statistics.median(seconds) for name, seconds in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--budget-s", type=float, default=3.0, help="seconds of timing per row")
    args = parser.parse_args()
    os.environ["HEADWISE_TUNE"] = "0"  # auto from the static order: SDPA, whose cost beyond it is measured
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    about = machine()
    print(
        f"{about['cpu']} ({about['cpu_kind']}), {about['threads']} threads, load average "
        f"{about['load_average']} at the start, torch {about['torch']}; float32 forward, medians in ms"
    )
    print("| call | sdpa | sdpa + check | auto | auto - sdpa (ms) | sdpa / auto |")
    print("|---|---:|---:|---:|---:|---:|")
    shapes = [("tiny: B=1, H=1, N=4, Dh=8", (1, 1, 4, 8))]
    shapes += [(f"B=4, H=8, N={n}, Dh=64", (4, 8, n, 64)) for n in args.sizes]
    for label, shape in shapes:
        ms = row(*shape, budget_s=args.budget_s)
        print(
            f"| {label} | {ms['sdpa']:.4f} | {ms['sdpa + check']:.4f} | {ms['auto']:.4f} | "
            f"{ms['auto'] - ms['sdpa']:.4f} | {ms['sdpa'] / ms['auto']:.3f} |"
        )


if __name__ == "__main__":
    main()
