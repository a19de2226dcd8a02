"""What the non-finite rule costs finite inputs: a call with the rule as it is (after issue 23: decided
from out, and k, after the run; where SDPA's CPU flash kernel ran without a backward, from its lse and
out's total), with the work of the rule as it was (before: one sum each over q, k and
v), and with no check at all; and the two checks alone. Wall-clock medians of interleaved calls
(headwise.bench.measure.time_interleaved), so that a slow spell of a busy machine hits every variant alike.

.venv/bin/python benchmarks/nonfinite_check.py [--threads 1 2] [--busy 0 2] [--reps 9] [--no-compile]
ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python ...

--busy 2 starts two processes that spin (`while True: pass`) for the measurement and stops them after,
as on a shared CI runner or a laptop doing other work. B=4, H=8, Dh=64, float32 unless said, the backend
auto picks: forward at N=128 and N=1024; forward + backward at N=256 and N=1024; a decoding step (one
query, 4,096 keys) with k and v unchecked and known finite (kv_finite, as KVCache passes); bf16 forward at
N=1024; and under torch.compile (forward, N=1024, and the decoding step), where the call is headwise's op
and the rule runs inside it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys

import torch

import headwise
from headwise import running
from headwise.backends import flash_cpu
from headwise.bench.measure import machine, time_interleaved

RULE = running.follows_rule  # after issue 23: out's rows (or the flash kernel's lse and out's total) and k


def old_all_finite(*tensors) -> bool:
    """checks.all_finite before issue 23: one sum each, on torch's threads."""
    total = sum(t.sum(dtype=torch.promote_types(t.dtype, torch.float32)) for t in tensors)  # () tensor
    return bool(torch.isfinite(total))


def variants(q, k, v, kv_finite: bool) -> dict:
    """What running.follows_rule becomes for each variant (only it: torch.compile guards on running.run,
    which _prepare names, but not on what _run calls when headwise's op runs). "before" does the work of
    the check as it was (one sum each over q, k and v, q alone with kv_finite; before the run then, after
    it here) and accepts the run, as it did for finite inputs."""
    checked = (q,) if kv_finite else (q, k, v)
    return {"after": RULE, "before": lambda *_: old_all_finite(*checked), "none": lambda *_: True}


# label, Nq, Nk, backward, kv_finite, dtype, compiled
CALLS = [
    ("forward N=128", 128, 128, False, False, torch.float32, False),
    ("forward N=1024", 1024, 1024, False, False, torch.float32, False),
    ("fwd+bwd N=256", 256, 256, True, False, torch.float32, False),
    ("fwd+bwd N=1024", 1024, 1024, True, False, torch.float32, False),
    ("decode 1 x 4096", 1, 4096, False, False, torch.float32, False),
    ("decode 1 x 4096, kv_finite", 1, 4096, False, True, torch.float32, False),
    ("bf16 forward N=1024", 1024, 1024, False, False, torch.bfloat16, False),
    ("compiled forward N=1024", 1024, 1024, False, False, torch.float32, True),
    ("compiled decode 1 x 4096, kv_finite", 1, 4096, False, True, torch.float32, True),
]


@contextlib.contextmanager
def spinning(count: int):
    """`count` background processes that spin on a core each until the block ends."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.terminate()
            spinner.wait()


def kernel_output(q, k, v, attend) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What the check after the run reads: out, and the lse of SDPA's CPU flash kernel where the sdpa
    backend runs it for a call without a backward (flash_cpu.route), else None (out's row sums)."""
    if flash_cpu.route(q, k, v, None, 0.0) == "forward":
        return flash_cpu.flash(q, k, v, None, False, q.shape[-1] ** -0.5, training=False)  # (B, H, N, Dh)
    return attend(q, k, v).detach(), None


def row(label, num_queries, num_keys, backward, kv_finite, dtype, compiled, reps) -> str:
    """One call's medians as a Markdown table row."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(4, 8, num_queries, 64, generator=gen).to(dtype)  # (B, H, Nq, Dh)
    k, v = (torch.randn(4, 8, num_keys, 64, generator=gen).to(dtype) for _ in range(2))  # (B, H, Nk, Dh)
    for t in (q, k, v):
        t.requires_grad_(backward)
    grad = torch.ones(4, 8, num_queries, 64, dtype=dtype)  # (B, H, Nq, Dv)

    def attend(q, k, v):
        return headwise.attention(q, k, v, kv_finite=kv_finite)

    call = torch.compile(attend, dynamic=False) if compiled else attend
    rules = variants(q, k, v, kv_finite)

    def step(variant):
        def run():
            running.follows_rule = rules[variant]
            out = call(q, k, v)
            if backward:
                out.backward(grad)

        return run

    with torch.no_grad() if not backward else contextlib.nullcontext():
        for variant in rules:  # warm-up (and compilation)
            step(variant)()
        out, lse = kernel_output(q, k, v, attend)
        steps = {variant: step(variant) for variant in rules}
        steps["check after"] = lambda: RULE(out, q, None if kv_finite else k, lse)
        steps["check before"] = lambda: old_all_finite(*((q,) if kv_finite else (q, k, v)))
        times = time_interleaved(steps, budget_s=0.0, min_reps=reps, max_reps=reps)
    running.follows_rule = RULE
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    return (
        f"| {label} | {ms['before']:.2f} | {ms['after']:.2f} | {ms['none']:.2f} | "
        f"{ms['before'] / ms['none']:.3f} | {ms['after'] / ms['none']:.3f} | "
        f"{ms['check before']:.3f} | {ms['check after']:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 2], help="spinning processes: 0 = quiet")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    args = parser.parse_args()
    calls = [c for c in CALLS if not (args.no_compile and c[-1])]
    for busy in args.busy:
        for threads in args.threads:
            torch.set_num_threads(threads)
            with spinning(busy):
                where = machine()
                print(
                    f"\nCPU kind {where['cpu_kind']} ({where['cpu']}), {threads} thread(s), "
                    f"{busy} spinning processes, load average {where['load_average']} at the start, "
                    f"torch {where['torch']}, {args.reps} reps"
                )
                print(
                    "| call | before (ms) | after (ms) | no check (ms) | before / none | after / none | "
                    "check before (ms) | check after (ms) |"
                )
                print("|---|---:|---:|---:|---:|---:|---:|---:|")
                for call in calls:
                    print(row(*call, args.reps), flush=True)
                print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
