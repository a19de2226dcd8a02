"""Structured attention: mask predicates at the speed of the pairs they let through (issue 22).

For each case (a causal window of 256, 8 causal documents, plain causal, a prefix LM, key lengths), each
N and each level (forward, forward+backward): headwise auto, the blocksparse and chunked backends, torch
SDPA with the same mask as a dense bool tensor (what a user writes today; is_causal=True for plain
causal), headwise's sdpa backend (the predicate materialised in the call: what auto did before) and
optionally FlexAttention in eager mode, timed interleaved (medians), each contender's peak
memory growth measured in a fresh process, and the limit: the useful FLOPs (4·Dh per visible pair and
head forward, 3.5× that forward+backward) at the float32 matmul rate measured in the same run.

    .venv/bin/python benchmarks/structured.py --out benchmarks/results/structured-cpu
    .venv/bin/python benchmarks/structured.py --sizes 2048 4096 --levels fwd --no-memory   # quick

B=1, H=8, Dh=64, float32 by default. A contender predicted (from its time at the previous N, × (N/N')²
for the dense ones, × N/N' for the others) to take longer than --max-call-s a call is skipped, as is SDPA
where its dense mask would not fit in a quarter of the machine's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import headwise
from headwise import masks
from headwise.backends.plan import visible_pairs
from headwise.bench.measure import default_memory_cap, machine, matmul_ceiling, measure_call, time_interleaved
from headwise.files import write_text

CASES = ("window", "documents", "causal", "prefix", "lengths")
# hw-sdpa: headwise's sdpa backend, the predicate materialised inside the call (what auto did before)
CONTENDERS = ("auto", "blocksparse", "chunked", "sdpa", "hw-sdpa", "flex")
DENSE = {"sdpa", "hw-sdpa", "flex"}  # cost grows as N² whatever the mask
BACKWARD_FACTOR = 3.5  # forward + backward FLOPs per forward FLOP


def predicate(case: str, batch: int, n: int) -> masks.Predicate:
    """The case's mask predicate at length n."""
    if case == "window":
        return masks.sliding_window(256) & masks.causal()
    if case == "documents":
        ids = (torch.arange(n) * 8 // n).expand(batch, n)  # (B, N): 8 documents of N/8
        return masks.documents(ids) & masks.causal()
    if case == "causal":
        return masks.causal()
    if case == "prefix":
        return masks.prefix_lm(n // 4)
    return masks.key_lengths(torch.tensor([n * 3 // 4] * batch))  # a quarter of the keys are padding


def make_call(contender: str, case: str, q, k, v):
    """A function that runs one call of `contender` on q, k, v (B, H, N, Dh) with the case's mask."""
    batch, _, n, _ = q.shape
    rule = predicate(case, batch, n)
    if contender in ("auto", "blocksparse", "chunked", "hw-sdpa"):
        backend = contender.removeprefix("hw-")
        return lambda: headwise.attention(q, k, v, mask=rule, backend=backend)
    if contender == "sdpa":
        if case == "causal":
            return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
        dense = rule.materialize(batch, 1, n, n)  # (B, 1, N, N) bool, True = may attend
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask_mod(b, h, q_idx, kv_idx):
        return rule.allowed(b, h, q_idx, kv_idx, n, n)

    block_mask = create_block_mask(mask_mod, batch, None, n, n, device="cpu")
    return lambda: flex_attention(q, k, v, block_mask=block_mask)


def make_step(contender: str, case: str, level: str, n: int, batch: int, heads: int, head_dim: int):
    """One timed step: the call, and its backward at level fwd+bwd."""
    torch.manual_seed(0)
    backward = level == "fwd+bwd"
    q, k, v = (torch.randn(batch, heads, n, head_dim, requires_grad=backward) for _ in range(3))
    call = make_call(contender, case, q, k, v)
    if not backward:

        def step():
            with torch.no_grad():
                call()

        return step

    def step():
        call().sum().backward()
        for t in (q, k, v):
            t.grad = None

    return step


def child(spec: dict) -> None:
    """In a fresh process: warm the contender up at N=512, then print its peak memory growth at spec's N."""
    sizes = {name: spec[name] for name in ("batch", "heads", "head_dim")}
    make_step(spec["contender"], spec["case"], spec["level"], 512, **sizes)()
    step = make_step(spec["contender"], spec["case"], spec["level"], spec["n"], **sizes)
    run = measure_call(step)
    print(json.dumps({"peak_bytes": run.peak_bytes, "seconds": run.seconds}))


def peak_in_child(spec: dict, timeout_s: float) -> dict:
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout_s:g} s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["killed"])[-1][:120]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    sizes = {"batch": args.batch, "heads": args.heads, "head_dim": args.head_dim}
    ceiling = matmul_ceiling("fp32", 2048, budget_s=1.0, min_reps=3, max_reps=20)
    rows, last = [], {}
    for case in args.cases:
        for level in args.levels:
            for n in args.sizes:
                pairs = visible_pairs(predicate(case, args.batch, n), args.batch, args.heads, n, n)
                flops = 4 * args.head_dim * pairs * (BACKWARD_FACTOR if level == "fwd+bwd" else 1.0)
                limit_ms = flops / (ceiling["gflops"] * 1e9) * 1e3
                steps, skipped = {}, {}
                for name in args.contenders:
                    reason = skip_reason(name, case, level, n, last, args)
                    if reason:
                        skipped[name] = reason
                    else:
                        steps[name] = make_step(name, case, level, n, **sizes)
                for step in steps.values():
                    step()  # warm-up
                times = time_interleaved(steps, args.budget_s, args.min_reps, args.max_reps)
                row = {"case": case, "level": level, "n": n, "limit_ms": limit_ms, "pairs": pairs}
                for name in args.contenders:
                    if name in skipped:
                        row[name] = {"skipped": skipped[name]}
                        continue
                    ms = statistics.median(times[name]) * 1e3
                    last[(name, case, level)] = (n, ms)
                    row[name] = {"ms": ms, "of_limit": limit_ms / ms}
                    sized = args.memory_sizes is None or n in args.memory_sizes
                    if args.memory and sized and name in (args.memory_contenders or args.contenders):
                        spec = {"contender": name, "case": case, "level": level, "n": n, **sizes}
                        row[name]["memory"] = peak_in_child(spec, args.child_timeout_s)
                rows.append(row)
                print(format_row(row, args.contenders), flush=True)
    return {"machine": machine(), "matmul": ceiling, "settings": vars(args), "rows": rows}


def skip_reason(name: str, case: str, level: str, n: int, last: dict, args) -> str | None:
    if name == "flex" and level == "fwd+bwd":
        return "FlexAttention has no CPU backward"
    if name in ("sdpa", "hw-sdpa") and case != "causal" and n * n * args.batch > default_memory_cap() // 2:
        return "its dense mask would not fit"
    previous = last.get((name, case, level))
    if previous is not None:
        then, ms = previous
        growth = (n / then) ** (2 if name in DENSE or (name == "auto" and case == "causal") else 1)
        if ms * growth > args.max_call_s * 1e3:
            return f"~{ms * growth / 1e3:.0f} s a call predicted"
    return None


def format_row(row: dict, contenders) -> str:
    cells = [f"{row['case']:9} {row['level']:7} N={row['n']:6}", f"limit {row['limit_ms']:8.1f} ms"]
    for name in contenders:
        cell = row[name]
        cells.append(f"{name} " + ("-" if "ms" not in cell else f"{cell['ms']:.1f} ms"))
    return " | ".join(cells)


def markdown(results: dict) -> str:
    m, names = results["machine"], results["settings"]["contenders"]
    lines = [
        "# Structured attention (benchmarks/structured.py)",
        "",
        f"{m['cpu']} ({m['cpu_kind']}{', caps ' + str(m['isa_caps']) if m['isa_caps'] else ''}), "
        f"{m['threads']} threads, load average {m['load_average']} at the start, torch {m['torch']}, "
        f"{m['date']}. B={results['settings']['batch']}, H={results['settings']['heads']}, "
        f"Dh={results['settings']['head_dim']}, float32. fp32 matmul: {results['matmul']['gflops']:.0f} "
        "GFLOP/s (2048²). Each cell: median ms (its share of the limit), peak memory growth in a fresh "
        "process. sdpa: torch SDPA with the mask as a dense bool tensor (is_causal=True for causal).",
        "",
        "| case | level | N | limit ms | " + " | ".join(names) + " | auto vs sdpa |",
        "|---" * (5 + len(names)) + "|",
    ]
    for row in results["rows"]:
        cells = [row["case"], row["level"], str(row["n"]), f"{row['limit_ms']:.1f}"]
        for name in names:
            cells.append(cell_text(row[name]))
        auto, sdpa = row.get("auto", {}), row.get("sdpa", {})
        ratio = sdpa["ms"] / auto["ms"] if "ms" in auto and "ms" in sdpa else None
        cells.append("-" if ratio is None else f"{ratio:.2f}×")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cell_text(cell: dict) -> str:
    if "ms" not in cell:
        return f"skipped: {cell['skipped']}"
    text = f"{cell['ms']:,.1f} ({cell['of_limit']:.0%})"
    memory = cell.get("memory")
    if memory:
        text += (
            f", {memory['peak_bytes'] / 2**20:,.0f} MB" if "peak_bytes" in memory else f", {memory['error']}"
        )
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192, 16384, 32768])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--levels", nargs="+", choices=("fwd", "fwd+bwd"), default=["fwd", "fwd+bwd"])
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS[:4]))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--budget-s", type=float, default=3.0, help="time per grid point, at least")
    parser.add_argument("--min-reps", type=int, default=3)
    parser.add_argument("--max-reps", type=int, default=15)
    parser.add_argument("--max-call-s", type=float, default=15.0)
    parser.add_argument("--child-timeout-s", type=float, default=300.0)
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument("--memory-sizes", type=int, nargs="+", help="measure memory at these N only")
    parser.add_argument("--memory-contenders", nargs="+", choices=CONTENDERS, help="and of these only")
    parser.add_argument("--out", help="write OUT.md and OUT.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    start = time.perf_counter()
    results = run(args)
    results["seconds"] = round(time.perf_counter() - start, 1)
    if args.out:
        write_text(f"{args.out}.json", json.dumps(results, indent=1))
        write_text(f"{args.out}.md", markdown(results))
        print(f"wrote {args.out}.md and {args.out}.json ({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HEADWISE_TUNE", "0")  # auto as a user without a tune run gets it
    sys.exit(main())
