"""The ratio rule and an independent plain-PyTorch attention, shared by the numerical tests.

Ratio rule (as in FlashAttention's and FlexAttention's suites): with a golden result computed in float64
and a baseline computed with plain PyTorch ops in the input dtype, a fast path passes when

    max |fast - golden| <= k · max |baseline - golden| + floor,   floor = 4 · eps(dtype) · max(1, magnitude)

where `magnitude` is the size of the terms the result sums, never the result's own size: a sum whose
terms cancel (the gradient of a key bias is exactly zero, since softmax ignores a shift shared by a row)
is ~0 however large its terms, and each computed term carries rounding in proportion to its own size, so
the noise that any order of summation leaves scales with the terms. The same computation on absolute
values measures them: attention on unit-scale inputs sums terms of size at most ~1 (weights · |v|, and
the gradients' products of them), which max(1, ·) covers, and the tests pass the largest golden value
among out, lse and the gradients for inputs beyond that scale; a linear layer's parameter gradients sum
|g|ᵀ·|x| (`linear_gradient_scales`, which the Hugging Face gradient tests use). The floor then holds by
construction on any CPU, whatever order its kernels add in; it only matters where the baseline is exact
by structure (with one key the softmax Jacobian is 0, which the baseline computes as
w·(g - g) = 0 exactly, while a flash-style backward computes it as the difference of two equal float
sums, within an ulp or two of that magnitude) or cancels luckily.
"""

from __future__ import annotations

import random

import pytest
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
    """The ratio rule (see the module's docstring); magnitude: the size of the terms `golden` sums."""
    assert fast.shape == golden.shape == baseline.shape, (fast.shape, golden.shape, baseline.shape)
    assert torch.isfinite(fast).all(), f"{what}: the fast path produced NaN or inf"
    fast_err = (fast.double() - golden).abs().max().item() if fast.numel() else 0.0
    base_err = (baseline.double() - golden).abs().max().item() if baseline.numel() else 0.0
    bound = k * base_err + FLOOR_ULPS * torch.finfo(fast.dtype).eps * max(1.0, magnitude)
    assert fast_err <= bound, f"{what}: error {fast_err:.3g} > {k} × baseline error {base_err:.3g} + floor"


def linear_gradient_scales(model: torch.nn.Module, backward) -> dict[str, float]:
    """The magnitude of the terms each linear layer's parameter gradients sum, by name, for the ratio
    rule's floor: backward() runs the model forward and backward (in float64); for y = x·Wᵀ + b over rows
    n, dW = Σ_n gₙᵀ·xₙ and db = Σ_n gₙ, so the same sums on absolute values are max |g|ᵀ·|x| and
    max Σ_n |gₙ|. torch.nn.Linear and transformers' Conv1D (y = x·W + b, GPT-2) are measured; the dict
    has no entry for other parameters."""
    linear_kinds = (torch.nn.Linear,)
    try:
        from transformers.pytorch_utils import Conv1D

        linear_kinds += (Conv1D,)
    except ImportError:
        pass
    names = {module: name for name, module in model.named_modules() if isinstance(module, linear_kinds)}
    inputs, scales = {}, {}

    def keep_input(module, args):
        inputs.setdefault(module, []).append(args[0].detach().abs().flatten(0, -2))  # (rows, D_in)

    def measure(module, grad_input, grad_output):
        g = grad_output[0].detach().abs().flatten(0, -2)  # (rows, D_out)
        x = inputs[module].pop()  # (rows, D_in): this call's input (backward runs the calls in reverse)
        terms = {"weight": g.T @ x if isinstance(module, torch.nn.Linear) else x.T @ g}  # as module.weight
        if module.bias is not None:
            terms["bias"] = g.sum(dim=0)  # (D_out,)
        for kind, total in terms.items():  # a layer called twice (shared) sums both calls' terms:
            name = f"{names[module]}.{kind}".lstrip(".")
            scales[name] = scales.get(name, 0.0) + total.max().item()  # an upper bound of the max of sums

    handles = [m.register_forward_pre_hook(keep_input) for m in names]
    handles += [m.register_full_backward_hook(measure) for m in names]
    try:
        backward()
    finally:
        for handle in handles:
            handle.remove()
    return scales


def naive_attention(q, k, v, *, mask=None, causal=False, scale=None, alibi_slopes=None, softcap=None):
    """Textbook attention with plain torch ops, written independently of headwise.

    q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv); mask bool (True = may attend) or float;
    alibi_slopes (Hq,): adds -slope · |i + Nk - Nq - j|; softcap: scores -> cap · tanh(scores / cap), before
    ALiBi and the mask. Rows with no visible key give zeros (and zero gradients), as headwise promises.
    -> (out (B, Hq, Nq, Dv), weights (B, Hq, Nq, Nk)).
    """
    out, weights, _ = naive_attention_lse(
        q, k, v, mask=mask, causal=causal, scale=scale, alibi_slopes=alibi_slopes, softcap=softcap
    )
    return out, weights


def naive_attention_lse(q, k, v, *, mask=None, causal=False, scale=None, alibi_slopes=None, softcap=None):
    """As naive_attention, and lse (B, Hq, Nq) = logsumexp of the masked scores in float32 at least."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # (B, Hq, Nk, Dh)
    v = v.repeat_interleave(group, dim=1)  # (B, Hq, Nk, Dv)
    num_queries, num_keys = q.shape[2], k.shape[2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (B, Hq, Nq, Nk)
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if alibi_slopes is not None:
        own = torch.arange(num_queries)[:, None] + (num_keys - num_queries)  # (Nq, 1)
        distance = (own - torch.arange(num_keys)[None, :]).abs()  # (Nq, Nk)
        scores = scores - alibi_slopes.to(scores.dtype)[:, None, None] * distance
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask.to(scores.dtype)
    if causal:
        lower = torch.ones(num_queries, num_keys, dtype=torch.bool).tril(diagonal=num_keys - num_queries)
        scores = scores.masked_fill(~lower, float("-inf"))
    empty = (scores == float("-inf")).all(dim=-1, keepdim=True)  # (B, Hq, Nq, 1)
    weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    precise = scores.to(torch.promote_types(scores.dtype, torch.float32)).masked_fill(empty, 0.0)
    lse = torch.logsumexp(precise, dim=-1).masked_fill(empty[..., 0], float("-inf"))  # (B, Hq, Nq)
    return torch.matmul(weights, v), weights, lse


def covering_design(factors: dict, *, allowed, seed: int, candidates: int = 40) -> list[dict]:
    """A seeded pairwise covering design: configurations (dicts of one level per factor) such that every
    pair of levels of two factors that `allowed(config)` admits in some configuration appears in one.

    Greedy (as AETG): each new configuration is the one, of `candidates` random admissible ones, that
    covers the most pairs not yet covered. Deterministic for a seed.
    """
    rng = random.Random(seed)
    names = list(factors)

    def draw(fixed: dict) -> dict | None:
        for _ in range(200):
            config = {n: fixed[n] if n in fixed else rng.choice(factors[n]) for n in names}
            if allowed(config):
                return config
        return None

    def pairs(config: dict) -> set:
        return {(a, config[a], b, config[b]) for i, a in enumerate(names) for b in names[i + 1 :]}

    wanted = {
        (a, x, b, y)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        for x in factors[a]
        for y in factors[b]
        if draw({a: x, b: y}) is not None
    }
    design = []
    while wanted:
        a, x, b, y = min(wanted, key=repr)  # seed each round with an uncovered pair: progress every round
        options = [c for c in (draw({a: x, b: y}) for _ in range(candidates)) if c is not None]
        best = max(options, key=lambda c: len(pairs(c) & wanted))
        design.append(best)
        wanted -= pairs(best)
    return design


def require(backend: str, dtype: torch.dtype = torch.float64, **asks) -> None:
    """Skip the test, with the backend's own reason, unless its capabilities serve a CPU call in `dtype`
    that asks for `asks` (fields of headwise.backends.Request); "auto" serves everything."""
    from headwise.backends import BACKENDS, Request

    if backend == "auto":
        return
    reason = BACKENDS[backend].unsupported(Request(torch.device("cpu"), dtype, **asks))
    if reason is not None:
        pytest.skip(f"{backend} cannot {reason}")
