"""headwise.MultiHeadAttention: against torch.nn.MultiheadAttention (via from_torch) and against a textbook
computation written here with plain torch ops, in float64; its trace; and every bad argument.

Shape legend: B batch, Nq / Nk query and key lengths, D embed_dim, Hq / Hkv query and key/value heads,
Dh head width. Native mask polarity: True = may attend (torch's masks are converted: True = blocked).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from oracle import SELF_ATTENTION_STEPS
from torch import nn
from torch.func import functional_call

import headwise
from headwise import MultiHeadAttention
from headwise.trace import STEP_TEXT

F64 = torch.float64
EXACT = {"atol": 1e-10, "rtol": 0.0}
B, NQ, NK, D = 2, 4, 6, 8


# ---------------------------------------------------------------------------------------------- helpers


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def randomized(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and biases (both modules start their biases at zero, which would hide bias bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.5)
    return module


def some_blocked(*shape: int, seed: int) -> torch.Tensor:
    """A random True = may attend mask whose first key is always visible (no query is left without keys)."""
    allowed = torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) > 0.4
    allowed[..., 0] = True
    return allowed


def cotangent(t: torch.Tensor) -> torch.Tensor:
    """A fixed, non-uniform upstream gradient for `t`."""
    return torch.sin(torch.arange(t.numel(), dtype=t.dtype) * 0.7 + 0.3).view_as(t)


def run(module: nn.Module, compute, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor | None]:
    """compute(*inputs) -> (output, weights or None), then backward: the output, the weights and the
    gradients of the inputs and of every parameter of `module`, by name."""
    leaves = [t.clone().requires_grad_() for t in inputs]
    output, weights = compute(*leaves)
    loss = (output * cotangent(output)).sum()
    if weights is not None:
        loss = loss + (weights * cotangent(weights)).sum()
    module.zero_grad()
    loss.backward()
    results = {"output": output.detach(), "weights": None if weights is None else weights.detach()}
    results.update({f"grad input {i}": leaf.grad for i, leaf in enumerate(leaves)})
    results.update({f"grad {name}": p.grad for name, p in module.named_parameters()})
    return results


def assert_same_results(ours: dict, expected: dict) -> None:
    assert ours.keys() == expected.keys()
    for name, value in expected.items():
        if value is None:
            assert ours[name] is None, name
        else:
            torch.testing.assert_close(ours[name], value, **EXACT, msg=lambda m, name=name: f"{name}: {m}")


def textbook(
    module: MultiHeadAttention,
    query: torch.Tensor,
    key: torch.Tensor | None = None,
    value: torch.Tensor | None = None,
    allowed: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Multi-head attention with plain torch ops and the module's parameters, written independently of
    headwise: each step by the name the trace gives it. allowed: bool, True = may attend, broadcastable to
    (B, Hq, Nq, Nk). A query with no visible key gets zero weights."""
    key = query if key is None else key
    value = key if value is None else value
    heads, kv_heads, head_dim = module.num_heads, module.num_kv_heads, module.head_dim
    widths = [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim]
    if module.in_proj_weight is not None:
        w_q, w_k, w_v = module.in_proj_weight.split(widths)
    else:
        w_q, w_k, w_v = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
    b_q, b_k, b_v = (None,) * 3 if module.in_proj_bias is None else module.in_proj_bias.split(widths)
    steps = {
        "queries": F.linear(query, w_q, b_q),
        "keys": F.linear(key, w_k, b_k),
        "values": F.linear(value, w_v, b_v),
    }
    batch, num_queries, num_keys = query.shape[0], query.shape[1], key.shape[1]
    q = steps["queries"].reshape(batch, num_queries, heads, head_dim).transpose(1, 2)  # (B, Hq, Nq, Dh)
    k = steps["keys"].reshape(batch, num_keys, kv_heads, head_dim).transpose(1, 2)  # (B, Hkv, Nk, Dh)
    v = steps["values"].reshape(batch, num_keys, kv_heads, head_dim).transpose(1, 2)  # (B, Hkv, Nk, Dh)
    steps.update(queries_by_head=q, keys_by_head=k, values_by_head=v)
    group = heads // kv_heads
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (B, Hq, Nk, Dh)
    steps["scores"] = q @ k.transpose(-1, -2)  # (B, Hq, Nq, Nk)
    steps["scaled_scores"] = scores = steps["scores"] / math.sqrt(head_dim)
    if allowed is None:
        steps["masked_scores"] = scores
        steps["weights"] = torch.softmax(scores, dim=-1)  # (B, Hq, Nq, Nk)
    else:
        steps["masked_scores"] = scores = scores.masked_fill(~allowed, float("-inf"))
        empty = ~allowed.expand(scores.shape).any(dim=-1, keepdim=True)  # (B, Hq, Nq, 1): nothing visible
        weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1)  # (B, Hq, Nq, Nk)
        steps["weights"] = weights.masked_fill(empty, 0.0)
    steps["context_by_head"] = steps["weights"] @ v  # (B, Hq, Nq, Dh)
    steps["context"] = steps["context_by_head"].transpose(1, 2).reshape(batch, num_queries, heads * head_dim)
    steps["output"] = F.linear(steps["context"], module.out_proj.weight, module.out_proj.bias)  # (B, Nq, D)
    return steps


def returned(steps: dict[str, torch.Tensor], average_attn_weights: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """textbook's (output, weights) as the module returns them."""
    weights = steps["weights"].mean(dim=1) if average_attn_weights else steps["weights"]
    return steps["output"], weights


# ----------------------------------------------------------------------------- against torch (from_torch)


@dataclass
class Scenario:
    options: dict  # torch.nn.MultiheadAttention's constructor arguments besides (D, H)
    inputs: tuple[torch.Tensor, ...]  # (x,) self-attention, or (query, key, value)
    native: dict = field(default_factory=dict)  # MultiHeadAttention.forward's mask arguments
    theirs: dict = field(default_factory=dict)  # the same masks in torch's convention


def scenarios() -> dict[str, Scenario]:
    x, memory_keys, memory_values = randn(B, NQ, D, seed=1), randn(B, NK, 5, seed=2), randn(B, NK, 3, seed=3)
    cross = {"options": {"kdim": 5, "vdim": 3}, "inputs": (x, memory_keys, memory_values)}
    real_tokens = some_blocked(B, NK, seed=4)  # (B, Nk), True = a real token
    allowed = some_blocked(NQ, NK, seed=5)  # (Nq, Nk), True = may attend
    by_head = some_blocked(B, 2, NQ, NK, seed=6)  # (B, H, Nq, Nk)
    additive = randn(NQ, NK, seed=7).masked_fill(~allowed, float("-inf"))  # (Nq, Nk)
    causal = torch.ones(NQ, NQ, dtype=torch.bool).tril()  # (Nq, Nq)
    square_allowed, square_real = some_blocked(NQ, NQ, seed=8), some_blocked(B, NQ, seed=9)
    return {
        "self-attention": Scenario({}, (x,)),
        "no bias": Scenario({"bias": False}, (x,)),
        "cross-attention kdim vdim Nq!=Nk": Scenario(**cross),
        "key_padding_mask": Scenario(
            **cross, native={"key_padding_mask": real_tokens}, theirs={"key_padding_mask": ~real_tokens}
        ),
        "bool attn_mask": Scenario(**cross, native={"attn_mask": allowed}, theirs={"attn_mask": ~allowed}),
        "float attn_mask": Scenario(**cross, native={"attn_mask": additive}, theirs={"attn_mask": additive}),
        "per-head attn_mask": Scenario(
            **cross, native={"attn_mask": by_head}, theirs={"attn_mask": ~by_head.flatten(0, 1)}
        ),
        "is_causal square": Scenario(
            {}, (x,), native={"is_causal": True}, theirs={"attn_mask": ~causal, "is_causal": True}
        ),
        "is_causal with both masks": Scenario(
            {},
            (x,),
            native={"is_causal": True, "attn_mask": square_allowed, "key_padding_mask": square_real},
            # torch reads is_causal as a hint about attn_mask, so its attn_mask must be the causal one.
            theirs={
                "is_causal": True,
                "attn_mask": ~(square_allowed & causal),
                "key_padding_mask": ~square_real,
            },
        ),
    }


SCENARIOS = scenarios()
WEIGHT_MODES = {
    "no weights": (False, True),
    "averaged weights": (True, True),
    "weights by head": (True, False),
}


@pytest.mark.parametrize("mode", WEIGHT_MODES)
@pytest.mark.parametrize("name", SCENARIOS)
def test_from_torch_matches_torch(name: str, mode: str) -> None:
    scenario = SCENARIOS[name]
    need_weights, average = WEIGHT_MODES[mode]
    theirs = randomized(nn.MultiheadAttention(D, 2, batch_first=True, dtype=F64, **scenario.options))
    ours = MultiHeadAttention.from_torch(theirs)
    flags = {"need_weights": need_weights, "average_attn_weights": average}

    def ours_forward(*inputs):
        return ours(*inputs, **scenario.native, **flags)

    def theirs_forward(*inputs):
        query, key, value = inputs * 3 if len(inputs) == 1 else inputs
        return theirs(query, key, value, **scenario.theirs, **flags)

    assert_same_results(
        run(ours, ours_forward, scenario.inputs), run(theirs, theirs_forward, scenario.inputs)
    )


def test_from_torch_of_a_sequence_first_module_takes_transposed_inputs() -> None:
    theirs = randomized(nn.MultiheadAttention(D, 2, kdim=5, vdim=3, dtype=F64))  # batch_first=False
    ours = MultiHeadAttention.from_torch(theirs)
    query, key, value = (
        randn(NQ, B, D, seed=1),
        randn(NK, B, 5, seed=2),
        randn(NK, B, 3, seed=3),
    )  # (N, B, width)
    expected_output, expected_weights = theirs(query, key, value)
    output, weights = ours(
        query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1), need_weights=True
    )
    torch.testing.assert_close(output.transpose(0, 1), expected_output, **EXACT)
    torch.testing.assert_close(weights, expected_weights, **EXACT)


def test_to_torch_round_trip() -> None:
    ours = randomized(MultiHeadAttention(D, 4, kdim=5, vdim=3, dropout=0.25, dtype=F64)).eval()
    theirs = ours.to_torch()
    assert theirs.batch_first and theirs.dropout == 0.25 and not theirs.training
    back = MultiHeadAttention.from_torch(theirs)
    assert back.state_dict().keys() == ours.state_dict().keys() == theirs.state_dict().keys()
    for name, tensor in ours.state_dict().items():
        assert torch.equal(theirs.state_dict()[name], tensor) and torch.equal(back.state_dict()[name], tensor)

    query, key, value = randn(B, NQ, D, seed=1), randn(B, NK, 5, seed=2), randn(B, NK, 3, seed=3)
    expected = ours(query, key, value, need_weights=True)
    for module in (theirs, back):
        for got, want in zip(module(query, key, value, need_weights=True), expected, strict=True):
            torch.testing.assert_close(got, want, **EXACT)


# ---------------------------------------------------------------------------- against the textbook version


GQA_CONFIGS = {
    "Hq=4 Hkv=2 self": ({"embed_dim": 8, "num_heads": 4, "num_kv_heads": 2}, (randn(B, NQ, 8, seed=1),)),
    "Hq=6 Hkv=3 Dh=2 no bias": (
        {"embed_dim": 12, "num_heads": 6, "num_kv_heads": 3, "head_dim": 2, "bias": False},
        (randn(B, NQ, 12, seed=1),),
    ),
    "Hq=4 Hkv=1 Dh=3 cross kdim vdim": (
        {"embed_dim": 6, "num_heads": 4, "num_kv_heads": 1, "head_dim": 3, "kdim": 5, "vdim": 7},
        (randn(B, NQ, 6, seed=1), randn(B, NK, 5, seed=2), randn(B, NK, 7, seed=3)),
    ),
}


@pytest.mark.parametrize("average", [True, False], ids=["averaged", "by head"])
@pytest.mark.parametrize("name", GQA_CONFIGS)
def test_grouped_query_heads_match_the_textbook(name: str, average: bool) -> None:
    options, inputs = GQA_CONFIGS[name]
    ours = randomized(MultiHeadAttention(**options, dtype=F64))
    num_keys = inputs[-1].shape[1]
    real_tokens = some_blocked(B, num_keys, seed=4)  # (B, Nk)
    allowed = some_blocked(B, options["num_heads"], NQ, num_keys, seed=5)  # (B, Hq, Nq, Nk)
    flags = {"need_weights": True, "average_attn_weights": average}

    def ours_forward(*inputs):
        return ours(*inputs, key_padding_mask=real_tokens, attn_mask=allowed, **flags)

    def textbook_forward(*inputs):
        return returned(textbook(ours, *inputs, allowed=allowed & real_tokens[:, None, None, :]), average)

    assert_same_results(run(ours, ours_forward, inputs), run(ours, textbook_forward, inputs))


@pytest.mark.parametrize(("num_queries", "num_keys"), [(3, 6), (6, 3), (1, 5), (5, 5)])
def test_causal_cross_attention_is_aligned_bottom_right(num_queries: int, num_keys: int) -> None:
    """Query i sees keys j <= i + Nk - Nq; with Nq > Nk the first Nq - Nk queries see nothing and get
    zero weights, so their output is the output projection's bias."""
    ours = randomized(MultiHeadAttention(D, 4, num_kv_heads=2, kdim=5, vdim=3, dtype=F64))
    inputs = (randn(B, num_queries, D, seed=1), randn(B, num_keys, 5, seed=2), randn(B, num_keys, 3, seed=3))
    explicit = torch.ones(num_queries, num_keys, dtype=torch.bool).tril(diagonal=num_keys - num_queries)
    flags = {"need_weights": True, "average_attn_weights": False}

    causal = run(ours, lambda *t: ours(*t, is_causal=True, **flags), inputs)
    masked = run(ours, lambda *t: ours(*t, attn_mask=explicit, **flags), inputs)
    expected = run(ours, lambda *t: returned(textbook(ours, *t, allowed=explicit), False), inputs)
    assert_same_results(causal, masked)
    assert_same_results(causal, expected)

    blind = max(num_queries - num_keys, 0)  # queries with no visible key
    assert torch.equal(causal["weights"][:, :, :blind], torch.zeros(B, 4, blind, num_keys, dtype=F64))
    bias = ours.out_proj.bias.detach().expand(B, blind, D)
    torch.testing.assert_close(causal["output"][:, :blind], bias, **EXACT)


# ------------------------------------------------------------------------------------------------ dropout


def test_dropout_is_off_in_eval_mode() -> None:
    ours = randomized(MultiHeadAttention(D, 2, dropout=0.5, dtype=F64)).eval()
    x = randn(B, NQ, D, seed=1)
    first, second = ours(x, need_weights=True), ours(x, need_weights=True)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    expected = returned(textbook(ours, x), average_attn_weights=True)
    for got, want in zip(first, expected, strict=True):
        torch.testing.assert_close(got, want, **EXACT)


def test_dropout_in_training_zeroes_weights_with_probability_p_and_rescales_the_rest() -> None:
    p = 0.3
    ours = randomized(MultiHeadAttention(D, 2, dropout=p, dtype=F64))
    x = randn(4, 16, D, seed=1)
    _, evaluated = ours.eval()(x, need_weights=True, average_attn_weights=False)  # (4, 2, 16, 16)
    torch.manual_seed(0)
    output, dropped = ours.train()(x, need_weights=True, average_attn_weights=False)

    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], evaluated[kept] / (1 - p), **EXACT)
    zeroed, count = 1.0 - kept.double().mean().item(), kept.numel()
    assert abs(zeroed - p) < 5 * math.sqrt(p * (1 - p) / count)  # binomial: 5 standard deviations
    # The output is made from the dropped weights.
    context = (dropped @ textbook(ours, x)["values_by_head"]).transpose(1, 2).flatten(2)  # (4, 16, D)
    torch.testing.assert_close(output, ours.out_proj(context), **EXACT)


def test_dropout_in_training_leaves_the_expected_output_unchanged() -> None:
    """Kept weights are scaled by 1 / (1 - p), so the output averaged over many draws is the eval output
    (checked on the fused path, need_weights=False, over 4000 copies of one sequence)."""
    ours = randomized(MultiHeadAttention(D, 2, dropout=0.4, dtype=F64))
    x = randn(1, 6, D, seed=1)
    expected, _ = ours.eval()(x)  # (1, 6, D)
    torch.manual_seed(0)
    with torch.no_grad():
        samples, _ = ours.train()(x.expand(4000, -1, -1))  # (4000, 6, D)
    standard_error = samples.std(dim=0) / math.sqrt(samples.shape[0])  # (6, D)
    assert (standard_error > 1e-3).all()  # the draws do differ
    assert ((samples.mean(dim=0) - expected[0]).abs() < 5 * standard_error).all()


# ------------------------------------------------------------------------------------------------ gradcheck


GRADCHECK_CASES = {  # name: (constructor options, inputs, forward arguments), small sizes
    "cross GQA, both masks, weights by head": (
        {"embed_dim": 4, "num_heads": 2, "num_kv_heads": 1, "kdim": 3, "vdim": 5},
        (randn(2, 3, 4, seed=1), randn(2, 4, 3, seed=2), randn(2, 4, 5, seed=3)),
        {
            "key_padding_mask": some_blocked(2, 4, seed=4),
            "attn_mask": randn(3, 4, seed=5),
            "need_weights": True,
            "average_attn_weights": False,
        },
    ),
    "self-attention causal, averaged weights": (
        {"embed_dim": 4, "num_heads": 2},
        (randn(2, 3, 4, seed=1),),
        {"is_causal": True, "need_weights": True},
    ),
    "causal Nq > Nk (blind queries), no weights": (
        {"embed_dim": 4, "num_heads": 2},
        (randn(1, 4, 4, seed=1), randn(1, 2, 4, seed=2), randn(1, 2, 4, seed=3)),
        {"is_causal": True},
    ),
}


@pytest.mark.parametrize("case", GRADCHECK_CASES)
def test_gradcheck(case: str) -> None:
    """Gradients with respect to the inputs and every parameter against finite differences."""
    options, inputs, call = GRADCHECK_CASES[case]
    ours = randomized(MultiHeadAttention(**options, dtype=F64))
    names = [name for name, _ in ours.named_parameters()]
    parameters = tuple(p.detach().clone().requires_grad_() for p in ours.parameters())
    leaves = tuple(t.clone().requires_grad_() for t in inputs)

    def function(*tensors):
        inputs, parameters = tensors[: len(leaves)], tensors[len(leaves) :]
        output, weights = functional_call(ours, dict(zip(names, parameters, strict=True)), inputs, call)
        return output if weights is None else (output, weights)

    assert torch.autograd.gradcheck(function, leaves + parameters)


# ------------------------------------------------------------------------------------------------ trace


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_trace_records_the_documented_steps(cross: bool, need_weights: bool) -> None:
    widths = {"kdim": 5, "vdim": 5} if cross else {}  # cross: value = key, the second sequence
    ours = randomized(MultiHeadAttention(D, 4, num_kv_heads=2, **widths, dtype=F64))
    inputs = (randn(B, NQ, D, seed=1), randn(B, NK, 5, seed=2)) if cross else (randn(B, NQ, D, seed=1),)
    outside = ours(*inputs, need_weights=need_weights)
    with headwise.trace() as recorded:
        inside = ours(*inputs, need_weights=need_weights)

    # The same result as outside the block (which may have run on another backend).
    torch.testing.assert_close(inside[0], outside[0], atol=1e-12, rtol=0)
    expected_names = SELF_ATTENTION_STEPS[:1] + ["kv_inputs"] * cross + SELF_ATTENTION_STEPS[1:]
    assert recorded.names() == expected_names
    assert recorded.names() == [name for name in STEP_TEXT if name in recorded.names()]  # documented order
    # Each step holds what its formula says.
    context, output = recorded["context"].tensor, recorded["output"].tensor
    torch.testing.assert_close(output, context @ ours.out_proj.weight.T + ours.out_proj.bias, **EXACT)
    torch.testing.assert_close(output, inside[0].detach(), atol=0, rtol=0)
    for name, tensor in textbook(ours, *inputs).items():
        torch.testing.assert_close(recorded[name].tensor, tensor.detach(), **EXACT)
    torch.testing.assert_close(recorded["inputs"].tensor, inputs[0], atol=0, rtol=0)


def test_trace_records_dropout_after_the_weights() -> None:
    ours = randomized(MultiHeadAttention(D, 2, dropout=0.5, dtype=F64))
    x = randn(B, NQ, D, seed=1)
    torch.manual_seed(0)
    with headwise.trace() as recorded:
        output, _ = ours(x)
    names = recorded.names()
    assert names == [*SELF_ATTENTION_STEPS[:11], "dropout", *SELF_ATTENTION_STEPS[11:]]
    weights, dropped = recorded["weights"].tensor, recorded["dropout"].tensor
    kept = dropped != 0
    assert 0 < kept.sum() < kept.numel()
    torch.testing.assert_close(dropped[kept], weights[kept] * 2, **EXACT)
    torch.testing.assert_close(recorded["output"].tensor, output.detach(), atol=0, rtol=0)


# ------------------------------------------------------------------------------------------------ bad input


CONSTRUCTION_ERRORS = [
    ({"embed_dim": 10, "num_heads": 4}, ValueError, r"embed_dim \(10\) must be divisible by num_heads \(4\)"),
    ({"embed_dim": 8, "num_heads": 16}, ValueError, r"embed_dim \(8\) must be divisible by num_heads \(16\)"),
    (
        {"embed_dim": 8, "num_heads": 4, "num_kv_heads": 3},
        ValueError,
        r"num_heads \(4\) must be a multiple of num_kv_heads \(3\)",
    ),
    ({"embed_dim": 0, "num_heads": 1}, ValueError, r"embed_dim must be a positive integer, got 0"),
    ({"embed_dim": -8, "num_heads": 2}, ValueError, r"embed_dim must be a positive integer, got -8"),
    ({"embed_dim": True, "num_heads": 1}, ValueError, r"embed_dim must be a positive integer, got True"),
    ({"embed_dim": 8.0, "num_heads": 2}, ValueError, r"embed_dim must be a positive integer, got 8\.0"),
    ({"embed_dim": 8, "num_heads": 0}, ValueError, r"num_heads must be a positive integer, got 0"),
    ({"embed_dim": 8, "num_heads": -2}, ValueError, r"num_heads must be a positive integer, got -2"),
    ({"embed_dim": 8, "num_heads": True}, ValueError, r"num_heads must be a positive integer, got True"),
    (
        {"embed_dim": 8, "num_heads": 2, "num_kv_heads": 0},
        ValueError,
        r"num_kv_heads must be a positive integer, got 0",
    ),
    (
        {"embed_dim": 8, "num_heads": 2, "head_dim": 0},
        ValueError,
        r"head_dim must be a positive integer, got 0",
    ),
    (
        {"embed_dim": 8, "num_heads": 2, "head_dim": False},
        ValueError,
        r"head_dim must be a positive integer, got False",
    ),
    ({"embed_dim": 8, "num_heads": 2, "kdim": 0}, ValueError, r"kdim must be a positive integer, got 0"),
    ({"embed_dim": 8, "num_heads": 2, "vdim": -3}, ValueError, r"vdim must be a positive integer, got -3"),
    (
        {"embed_dim": 8, "num_heads": 2, "kdim": True},
        ValueError,
        r"kdim must be a positive integer, got True",
    ),
    (
        {"embed_dim": 8, "num_heads": 2, "dropout": 1.0},
        ValueError,
        r"dropout must be a probability in \[0, 1\), got 1\.0",
    ),
    ({"embed_dim": 8, "num_heads": 2, "dropout": -0.1}, ValueError, r"dropout must be .*\[0, 1\), got -0\.1"),
    ({"embed_dim": 8, "num_heads": 2, "dropout": True}, ValueError, r"dropout must be .*\[0, 1\), got True"),
    (
        {"embed_dim": 8, "num_heads": 2, "dropout": "0.1"},
        ValueError,
        r"dropout must be .*\[0, 1\), got '0\.1'",
    ),
    (
        {"embed_dim": 8, "num_heads": 2, "dropout": math.nan},
        ValueError,
        r"dropout must be .*\[0, 1\), got nan",
    ),
]


@pytest.mark.parametrize(("options", "error", "message"), CONSTRUCTION_ERRORS, ids=lambda v: str(v)[:60])
def test_construction_rejects(options: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        MultiHeadAttention(**options)


def test_construction_accepts_numpy_numbers_like_torch() -> None:
    numpy = pytest.importorskip("numpy")
    ours = MultiHeadAttention(
        numpy.int64(8), numpy.int32(4), num_kv_heads=numpy.int64(2), dropout=numpy.float32(0.5)
    )
    sizes = (ours.embed_dim, ours.num_heads, ours.num_kv_heads, ours.head_dim, ours.kdim, ours.dropout)
    assert sizes == (8, 4, 2, 2, 8, 0.5) and all(type(size) in (int, float) for size in sizes)
    assert ours.in_proj_weight.shape == (8 + 2 * 4, 8)


def forward_errors() -> list[tuple[str, tuple, dict, type[Exception], str]]:
    """(what, positional inputs, keyword arguments, error, message) for MODULE below: D = 8, Hq = 4,
    kdim = 6, vdim = 5, with query (2, 3, 8), key (2, 4, 6), value (2, 4, 5)."""
    q, k, v = randn(2, 3, 8), randn(2, 4, 6), randn(2, 4, 5)
    bool_mask = torch.ones(2, 4, dtype=torch.bool)
    return [
        ("query not a tensor", ([[1.0] * 8],), {}, TypeError, r"query must be a torch\.Tensor, got list"),
        ("key not a tensor", (q, "keys", v), {}, TypeError, r"key must be a torch\.Tensor, got str"),
        (
            "query rank",
            (q[0], k[0], v[0]),
            {},
            ValueError,
            r"query must have shape \(B, N, 8\).*got \(3, 8\)",
        ),
        (
            "query width",
            (q[..., :7], k, v),
            {},
            ValueError,
            r"query must have shape \(B, N, 8\).*got \(2, 3, 7\)",
        ),
        ("key rank", (q, k[None], v), {}, ValueError, r"key must have shape \(B, N, 6\).*got \(1, 2, 4, 6\)"),
        ("key width", (q, v, v), {}, ValueError, r"key must have shape \(B, N, 6\).*got \(2, 4, 5\)"),
        ("value width", (q, k, k), {}, ValueError, r"value must have shape \(B, N, 5\).*got \(2, 4, 6\)"),
        (
            "value defaults to key",
            (q, k),
            {},
            ValueError,
            r"value must have shape \(B, N, 5\).*got \(2, 4, 6\)",
        ),
        ("batch", (q, k[:1], v[:1]), {}, ValueError, r"must share the batch size B, got 2, 1, 1"),
        (
            "lengths",
            (q, k, v[:, :3]),
            {},
            ValueError,
            r"key and value must have the same length Nk, got 4 and 3",
        ),
        ("value without key", (q, None, v), {}, ValueError, r"value was given without key"),
        (
            "query dtype",
            (q.float(), k, v),
            {},
            TypeError,
            r"query has dtype torch\.float32 but .* torch\.float64",
        ),
        (
            "value dtype",
            (q, k, v.float()),
            {},
            TypeError,
            r"value has dtype torch\.float32 but .* torch\.float64",
        ),
        (
            "padding dtype",
            (q, k, v),
            {"key_padding_mask": bool_mask.double()},
            TypeError,
            r"key_padding_mask must be a bool tensor \(True = real token\), got torch\.float64",
        ),
        (
            "padding not a tensor",
            (q, k, v),
            {"key_padding_mask": [[True] * 4] * 2},
            TypeError,
            r"key_padding_mask must be a bool tensor .*got list",
        ),
        (
            "padding shape",
            (q, k, v),
            {"key_padding_mask": bool_mask[:, :3]},
            ValueError,
            r"key_padding_mask must have shape \(B, Nk\) = \(2, 4\), got \(2, 3\)",
        ),
        (
            "padding broadcast only",
            (q, k, v),
            {"key_padding_mask": bool_mask[:1]},
            ValueError,
            r"key_padding_mask must have shape \(B, Nk\) = \(2, 4\), got \(1, 4\)",
        ),
        (
            "mask shape",
            (q, k, v),
            {"attn_mask": torch.ones(3, 5, dtype=torch.bool)},
            ValueError,
            r"attn_mask has shape \(3, 5\), which does not broadcast to \(B, Hq, Nq, Nk\) = \(2, 4, 3, 4\)",
        ),
        (
            "mask heads",
            (q, k, v),
            {"attn_mask": torch.ones(2, 3, 3, 4, dtype=torch.bool)},
            ValueError,
            r"attn_mask has shape \(2, 3, 3, 4\), which does not broadcast to .* \(2, 4, 3, 4\)",
        ),
        (
            "mask dtype",
            (q, k, v),
            {"attn_mask": torch.ones(3, 4, dtype=torch.long)},
            TypeError,
            r"attn_mask has dtype torch\.int64; expected torch\.bool .* or a floating dtype",
        ),
        (
            "mask not a tensor",
            (q, k, v),
            {"attn_mask": [[True] * 4] * 3},
            TypeError,
            r"attn_mask must be a torch\.Tensor or None, got list",
        ),
        ("is_causal", (q, k, v), {"is_causal": 1}, TypeError, r"is_causal must be a bool, got int"),
    ]


FORWARD_ERRORS = forward_errors()


@pytest.mark.parametrize(
    ("inputs", "kwargs", "error", "message"),
    [e[1:] for e in FORWARD_ERRORS],
    ids=[e[0] for e in FORWARD_ERRORS],
)
def test_forward_rejects(inputs: tuple, kwargs: dict, error: type[Exception], message: str) -> None:
    module = MultiHeadAttention(8, 4, num_kv_heads=2, kdim=6, vdim=5, dtype=F64)
    with pytest.raises(error, match=message):
        module(*inputs, **kwargs)


@pytest.mark.parametrize("option", ["add_bias_kv", "add_zero_attn"])
def test_from_torch_rejects_what_it_cannot_hold(option: str) -> None:
    with pytest.raises(
        ValueError, match=r"module uses add_bias_kv or add_zero_attn.*compat\.MultiheadAttention"
    ):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, **{option: True}))
    with pytest.raises(TypeError, match=r"module must be a torch\.nn\.MultiheadAttention, got Linear"):
        MultiHeadAttention.from_torch(nn.Linear(8, 8))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_kv_heads": 2}, r"num_heads=4, num_kv_heads=2, head_dim=2, embed_dim=8"),
        ({"head_dim": 3}, r"num_heads=4, num_kv_heads=4, head_dim=3, embed_dim=8"),
        ({"out_dim": 6}, r"head_dim=2, embed_dim=8, out_dim=6"),
        ({"qkv_bias": False}, r"qkv_bias=False, bias=True"),
        ({"bias": False, "qkv_bias": True}, r"qkv_bias=True, bias=False"),
    ],
)
def test_to_torch_rejects_what_torch_cannot_hold(options: dict, message: str) -> None:
    with pytest.raises(
        ValueError, match=rf"has no grouped-query heads, no free head_dim or out_dim, and biases.*{message}"
    ):
        MultiHeadAttention(8, 4, **options).to_torch()
