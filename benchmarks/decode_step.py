"""One decoding step at 4k context with a KV cache, against recomputing the whole sequence.

.venv/bin/python benchmarks/decode_step.py [B] [threads]
"""

import statistics
import sys
import time

import torch

import headwise

B, D, H, CONTEXT, STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 1, 512, 8, 4096, 64  # Dh = 64
if len(sys.argv) > 2:
    torch.set_num_threads(int(sys.argv[2]))
torch.manual_seed(0)
mha = headwise.MultiHeadAttention(D, H).eval()
x = torch.randn(B, CONTEXT + STEPS, D)  # (B, N, D)


def ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - start)


with torch.no_grad():
    full = statistics.median(ms(lambda: mha(x[:, : CONTEXT + 1], is_causal=True)) for _ in range(7))
    for max_length in (None, 2 * CONTEXT):  # grow by doubling; preallocated
        cache = headwise.KVCache(max_length=max_length)
        mha(x[:, :CONTEXT], is_causal=True, cache=cache)  # prefill: 4096 tokens cached
        steps = [x[:, t : t + 1] for t in range(CONTEXT, CONTEXT + STEPS)]  # (B, 1, D) each
        step = statistics.median(ms(lambda s=s, c=cache: mha(s, is_causal=True, cache=c)) for s in steps)
        print(
            f"B={B} threads={torch.get_num_threads()} max_length={max_length}: full {full:.1f} ms, "
            f"cached step {step:.3f} ms, ratio {full / step:.0f}x"
        )
