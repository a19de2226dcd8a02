"""Whether auto's defaults are right on this machine with nothing tuned ahead: at each grid point, auto
against the best of every candidate (each headwise backend in the input dtype and in float32, torch SDPA
in the input dtype and on float32 copies, the naive three-line attention), with the ratio best / auto
(issue 23 asks >= 0.95, and >= 0.97 for float32 against SDPA itself). Wall-clock medians of interleaved
calls.

.venv/bin/python benchmarks/defaults.py [--dtypes float32 bfloat16 float16] [--passes fwd fwd+bwd]
    [--sizes 128 256 512 1024 2048 4096] [--masks none causal] [--threads 2] [--reps 5] [--sample-ms 20]
    [--static]

B=4, H=8, Dh=64, Nq = Nk = N. auto runs with an empty dispatch cache and HEADWISE_TUNE unset (what a new user
gets: the calls that tuning.tunes_by_default measure on first use; "first call" is that call's time, in s,
"static" where it measured nothing), or with --static the static order alone (HEADWISE_TUNE=0). "static
order" is the choice auto made before issue 23's defaults (the static order, tuning off), timed as the
candidate it is (a static choice timed "slow" shows as such); "best / auto's choice" times auto's choice
as a candidate too, which separates the choice from the noise of auto's own timings on a busy machine.
A candidate whose faster warm-up call takes --slower times the fastest one is not timed further ("slow").

Two things keep the ratio honest on a noisy machine. Each sample is a batch of calls lasting at least
--sample-ms (a 1 ms call timed alone carries the timer's and the scheduler's noise). And the best
candidate is picked from one set of rounds but compared with auto on fresh ones: the minimum of ten noisy
medians is biased low (the winner's curse), which made an auto that *is* SDPA plus its check look 0.77x
of SDPA at N=512. "best / auto" is the median, over --reps fresh interleaved rounds of auto and the best
alone, of their per-round ratio; "selection" is best / auto from the first rounds, for comparison.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile

import torch
import torch.nn.functional as F

import headwise
from headwise.arguments import describe
from headwise.backends import choose
from headwise.backends.dispatch import candidates
from headwise.backends.tuning import TUNER, enable, forget
from headwise.bench.measure import machine, time_interleaved
from headwise.running import run


def naive(q, k, v, causal: bool):
    """The three lines a user would write, in the input dtype."""
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5  # (B, H, N, N)
    if causal:
        scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # (B, H, N, Dh)


def contenders(q, k, v, causal: bool) -> tuple[dict, dict]:
    """-> ({label: f(q, k, v) -> out} for auto and every candidate, {"static": the static order's choice
    (what auto was before issue 23's defaults), "auto": auto's choice, "first_call": its first call's
    seconds, "measured": whether that call measured (tuning.tunes_by_default)})."""
    scale = q.shape[-1] ** -0.5
    request, options = describe(q, k, v, None, causal, scale, 0.0, False, False, None, False)
    dtype = q.dtype
    setting = TUNER.enabled
    enable(False)
    static = choose("auto", request).label(dtype)
    enable(setting)
    found = {"auto": lambda q, k, v: headwise.attention(q, k, v, causal=causal)}
    first_call = time_interleaved({"auto": lambda: _call(found["auto"], q, k, v)}, 0.0, 1, 1)["auto"][0]
    for choice in candidates(request):
        found[f"headwise {choice.label(dtype)}"] = lambda q, k, v, c=choice: run(c, q, k, v, **options)[0]
    found["torch sdpa"] = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    if dtype != torch.float32:
        found["torch sdpa@float32"] = lambda q, k, v: F.scaled_dot_product_attention(
            q.float(), k.float(), v.float(), is_causal=causal
        ).to(dtype)
    found["naive"] = lambda q, k, v: naive(q, k, v, causal)
    auto = choose("auto", request).label(dtype)
    return found, {
        "static": static,
        "auto": auto,
        "first_call": first_call,
        "measured": TUNER.may_tune(request),
    }


def _call(f, q, k, v) -> None:
    out = f(q, k, v)
    if out.requires_grad:
        out.backward(torch.ones_like(out))


def batched(run, calls: int):
    """run, called `calls` times in a row: one sample."""

    def many():
        for _ in range(calls):
            run()

    return many


def point(dtype, backward: bool, size: int, causal: bool, reps: int, slower: float, sample_s: float) -> str:
    """One grid point as a Markdown row."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(4, 8, size, 64, generator=gen).to(dtype).requires_grad_(backward) for _ in range(3)
    )
    grad = torch.ones(4, 8, size, 64, dtype=dtype)  # (B, H, N, Dh)
    with torch.enable_grad() if backward else torch.no_grad():
        found, picked = contenders(q, k, v, causal)

        def step(f):
            def run():
                out = f(q, k, v)
                if backward:
                    out.backward(grad)

            return run

        steps = {label: step(f) for label, f in found.items()}
        # Warm-up: one call each, a second for those under slower² times the fastest (the first call of a
        # backend in a process pays its set-up), then timed: those whose faster call is under `slower` times.
        warm = time_interleaved(steps, budget_s=0.0, min_reps=1, max_reps=1)
        fastest = min(t[0] for label, t in warm.items() if label != "auto")
        again = {
            label: run
            for label, run in steps.items()
            if warm[label][0] <= slower**2 * fastest or label == "auto"
        }
        for label, t in time_interleaved(again, budget_s=0.0, min_reps=1, max_reps=1).items():
            warm[label].append(t[0])
        fastest = min(min(warm[label]) for label in again if label != "auto")
        timed = {
            label: run
            for label, run in again.items()
            if min(warm[label]) <= slower * fastest or label == "auto"
        }
        batches = {label: max(1, math.ceil(sample_s / min(warm[label]))) for label in timed}
        timed = {label: batched(run, batches[label]) for label, run in timed.items()}
        times = time_interleaved(timed, budget_s=0.0, min_reps=reps, max_reps=reps)
        ms = {label: 1e3 * statistics.median(t) / batches[label] for label, t in times.items()}
        best = min((label for label in ms if label != "auto"), key=ms.get)
        fresh = time_interleaved({n: timed[n] for n in ("auto", best)}, 0.0, reps, reps, seed=1)
    calls = batches["auto"] / batches[best]  # per call: (b / batches[best]) / (a / batches["auto"])
    confirmed = statistics.median(b / a * calls for b, a in zip(fresh[best], fresh["auto"], strict=True))
    slow = ", ".join(sorted(set(steps) - set(timed)))
    mode = "fwd+bwd" if backward else "fwd"
    name = str(dtype).removeprefix("torch.")
    static, chosen = ms.get(f"headwise {picked['static']}"), ms.get(f"headwise {picked['auto']}")
    before = "slow | -" if static is None else f"{static:.2f} | {ms[best] / static:.2f}"
    choice = "slow" if chosen is None else f"{ms[best] / chosen:.2f}"
    mask = "causal" if causal else "none"
    return (
        f"| {name} | {mode} | {size} | {mask} | {picked['auto']} {ms['auto']:.2f} | "
        f"{best} {ms[best]:.2f} | {confirmed:.2f} | {ms[best] / ms['auto']:.2f} | {choice} | "
        f"{picked['static']} {before} | "
        f"{picked['first_call']:.2f}{'' if picked['measured'] else ' static'} | {slow or '-'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "float16"])
    parser.add_argument("--passes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024, 2048, 4096])
    parser.add_argument("--masks", nargs="+", default=["none", "causal"], choices=["none", "causal"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--slower", type=float, default=4.0)
    parser.add_argument("--sample-ms", type=float, default=20.0, help="each sample: calls lasting this long")
    parser.add_argument("--static", action="store_true", help="auto from the static order (HEADWISE_TUNE=0)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["XDG_CACHE_HOME"] = cache  # nothing tuned
        os.environ["HEADWISE_TUNE"] = "0" if args.static else ""  # "": unset, the default
        forget()
        enable(None)
        where = machine()
        print(
            f"CPU kind {where['cpu_kind']} ({where['cpu']}), {args.threads} thread(s), load average "
            f"{where['load_average']}, torch {where['torch']}, {args.reps} reps, interleaved medians; "
            f"auto {'static' if args.static else 'default'}"
        )
        print(
            "| dtype | pass | N | mask | auto (ms) | best other (ms) | best / auto | selection | "
            "best / auto's choice | static order (ms) | best / static | first call (s) | not timed (slow) |"
        )
        print("|---|---|---:|---|---|---|---:|---:|---:|---|---:|---:|---|")
        for name in args.dtypes:
            for mode in args.passes:
                for size in args.sizes:
                    for mask in args.masks:
                        row = point(
                            getattr(torch, name),
                            mode == "fwd+bwd",
                            size,
                            mask == "causal",
                            args.reps,
                            args.slower,
                            args.sample_ms / 1e3,
                        )
                        print(row, flush=True)
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
