"""The ratio rule and an independent plain-PyTorch attention, shared by the numerical tests.

Ratio rule (as in FlashAttention's and FlexAttention's suites): with a golden result computed in float64
and a baseline computed with plain PyTorch ops in the input dtype, a fast path passes when

    max |fast - golden| <= k · max |baseline - golden| + floor(dtype)

The floor, 4 ulps of the dtype at the magnitude of the computation (the largest golden value among the
output and its gradients), only matters where the baseline is exact by structure: with one key the
softmax Jacobian is 0, which the baseline computes as w·(g - g) = 0 exactly, while a flash-style backward
computes it as the difference of two equal float sums, within an ulp or two of that magnitude.
"""

from __future__ import annotations

import torch

# The steps a self-attention module's trace records, in order (cross-attention adds kv_inputs after inputs,
# dropout in training adds dropout after weights).
SELF_ATTENTION_STEPS = [
    "inputs",
    "queries",
    "keys",
    "values",
    "queries_by_head",
    "keys_by_head",
    "values_by_head",
    "scores",
    "scaled_scores",
    "masked_scores",
    "weights",
    "context_by_head",
    "context",
    "output",
]

FLOOR_ULPS = 4


def assert_by_ratio(
    fast: torch.Tensor,
    golden: torch.Tensor,
    baseline: torch.Tensor,
    k: float,
    what: str = "output",
    magnitude: float = 1.0,
) -> None:
    assert fast.shape == golden.shape == baseline.shape, (fast.shape, golden.shape, baseline.shape)
    assert torch.isfinite(fast).all(), f"{what}: the fast path produced NaN or inf"
    fast_err = (fast.double() - golden).abs().max().item() if fast.numel() else 0.0
    base_err = (baseline.double() - golden).abs().max().item() if baseline.numel() else 0.0
    bound = k * base_err + FLOOR_ULPS * torch.finfo(fast.dtype).eps * max(1.0, magnitude)
    assert fast_err <= bound, f"{what}: error {fast_err:.3g} > {k} × baseline error {base_err:.3g} + floor"


def naive_attention(q, k, v, *, mask=None, causal=False, scale=None):
    """Textbook attention with plain torch ops, written independently of headwise.

    q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv); mask bool (True = may attend) or float.
    Rows with no visible key give zeros (and zero gradients), as headwise promises.
    """
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # (B, Hq, Nk, Dh)
    v = v.repeat_interleave(group, dim=1)  # (B, Hq, Nk, Dv)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (B, Hq, Nq, Nk)
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask.to(scores.dtype)
    if causal:
        num_queries, num_keys = q.shape[2], k.shape[2]
        lower = torch.ones(num_queries, num_keys, dtype=torch.bool).tril(diagonal=num_keys - num_queries)
        scores = scores.masked_fill(~lower, float("-inf"))
    empty = (scores == float("-inf")).all(dim=-1, keepdim=True)  # (B, Hq, Nq, 1)
    weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    return torch.matmul(weights, v), weights
