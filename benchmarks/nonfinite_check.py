"""What the non-finite rule costs finite inputs: attention with its check, without it, and with k and v
known finite (as KVCache knows its entries), and the check alone; one thread, CPU time (process_time),
medians.

.venv/bin/python benchmarks/nonfinite_check.py [--reps 40]

B=4, H=8, Dh=64, float32, the backend auto picks: a decoding step (one query, 4,096 keys), and square
calls of N=128 and N=1024 (causal).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from headwise.backends import choose
from headwise.bench.measure import machine
from headwise.checks import all_finite
from headwise.functional import _prepare, _run, _run_finite


def cpu_ms(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        begin = time.process_time()
        fn()
        times.append(time.process_time() - begin)
    return 1e3 * statistics.median(times)


def row(num_queries: int, num_keys: int, reps: int) -> str:
    """One call's figures as a Markdown table row."""
    q = torch.randn(4, 8, num_queries, 64)  # (B, H, Nq, Dh)
    k, v = (torch.randn(4, 8, num_keys, 64) for _ in range(2))  # (B, H, Nk, Dh)
    request, call = _prepare(q, k, v, None, num_queries == num_keys, None, 0.0, False, False, None, False)
    choice = choose("auto", request)
    options = {name: value for name, value in call.keywords.items() if name != "kv_finite"}
    with torch.no_grad():
        checked = cpu_ms(lambda: _run(choice, q, k, v, kv_finite=False, **options), reps)
        known = cpu_ms(lambda: _run(choice, q, k, v, kv_finite=True, **options), reps)
        plain = cpu_ms(lambda: _run_finite(choice, q, k, v, **options), reps)
        alone = cpu_ms(lambda: all_finite(q, k, v), reps)
    return (
        f"| {num_queries} | {num_keys} | {choice.backend} | {checked:.2f} ms | {known:.2f} ms | "
        f"{plain:.2f} ms | {alone:.2f} ms |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    where = machine()
    print(f"CPU kind {where['cpu_kind']}, 1 thread, load {where['load_average']}, torch {where['torch']}")
    print("| Nq | Nk | backend | with the check | k, v known finite | no check | the check alone |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for num_queries, num_keys in ((1, 4096), (128, 128), (1024, 1024)):
        print(row(num_queries, num_keys, args.reps))


if __name__ == "__main__":
    main()
