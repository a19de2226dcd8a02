"""headwise.trace(): the steps of attention, recorded in order with their tensors, formulas and sentences."""

from __future__ import annotations

import pytest
import torch

import headwise
from headwise.trace import STEP_TEXT, tracing

ATTENTION_STEPS = ["scores", "scaled_scores", "masked_scores", "weights", "context_by_head"]


def inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 4, 3, 8, generator=gen, dtype=torch.float64)  # (B, Hq, Nq, Dh)
    k = torch.randn(1, 2, 5, 8, generator=gen, dtype=torch.float64)  # (B, Hkv, Nk, Dh)
    v = torch.randn(1, 2, 5, 6, generator=gen, dtype=torch.float64)  # (B, Hkv, Nk, Dv)
    return q, k, v


def test_attention_steps_hold_the_computation():
    q, k, v = inputs()
    mask = torch.tensor([True, True, False, True, True])  # key 2 is hidden from every query
    with headwise.trace() as t:
        out = headwise.attention(q, k, v, mask=mask, causal=True, scale=0.5)
    assert t.names() == ATTENTION_STEPS
    keys = k.repeat_interleave(2, dim=1)  # (B, Hq, Nk, Dh)
    torch.testing.assert_close(t["scores"].tensor, q @ keys.transpose(-1, -2), rtol=0, atol=1e-14)
    torch.testing.assert_close(t["scaled_scores"].tensor, t["scores"].tensor * 0.5, rtol=0, atol=0)
    masked = t["masked_scores"].tensor  # (1, 4, 3, 5)
    allowed = mask & torch.ones(3, 5, dtype=torch.bool).tril(diagonal=2)  # bottom-right causal, Nk - Nq = 2
    assert torch.equal(masked == float("-inf"), ~allowed.expand_as(masked))
    weights = t["weights"].tensor
    assert torch.equal(weights == 0, ~allowed.expand_as(weights))
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 4, 3, dtype=torch.float64))
    torch.testing.assert_close(t["context_by_head"].tensor, out, rtol=0, atol=0)
    assert t["weights"].shape == (1, 4, 3, 5)


def test_dropout_is_a_step_of_its_own():
    q, k, v = inputs()
    torch.manual_seed(0)
    with headwise.trace() as t:
        out, applied = headwise.attention(q, k, v, dropout_p=0.5, return_weights=True)
    assert t.names() == ["scores", "scaled_scores", "masked_scores", "weights", "dropout", "context_by_head"]
    kept = t["dropout"].tensor != 0
    torch.testing.assert_close(t["dropout"].tensor[kept], t["weights"].tensor[kept] * 2)
    assert torch.equal(applied, t["dropout"].tensor) and torch.equal(out, t["context_by_head"].tensor)


def test_tracing_runs_the_reference_and_changes_nothing():
    q, k, v = inputs()
    plain = headwise.attention(q, k, v, causal=True)  # auto: sdpa
    with headwise.trace() as t:
        traced = headwise.attention(q, k, v, causal=True)  # auto: reference, recorded
    torch.testing.assert_close(traced, plain, rtol=0, atol=1e-14)
    assert len(t) == len(ATTENTION_STEPS)
    with pytest.raises(ValueError, match="backend 'sdpa' cannot record a trace"), headwise.trace():
        headwise.attention(q, k, v, backend="sdpa")


def test_nothing_is_recorded_outside_a_trace():
    q, k, v = inputs()
    assert not tracing()
    with headwise.trace() as t:
        assert tracing()
        headwise.attention(q, k, v)
    headwise.attention(q, k, v)
    assert not tracing() and len(t) == len(ATTENTION_STEPS)


def test_the_innermost_trace_records():
    q, k, v = inputs()
    with headwise.trace() as outer:
        headwise.attention(q, k, v)
        with headwise.trace() as inner:
            headwise.attention(q, k, v)
    assert len(outer) == len(inner) == len(ATTENTION_STEPS)


def test_looking_up_steps():
    q, k, v = inputs()
    with headwise.trace() as t:
        headwise.attention(q, k, v)
        headwise.attention(q * 2, k, v)
    assert t[0].name == "scores" and t["scores"] is t[0]
    first, second = t.all("scores")
    torch.testing.assert_close(second.tensor, first.tensor * 2)
    with pytest.raises(KeyError, match=r"no step named 'keys' in this trace; recorded steps: \['scores'"):
        t["keys"]
    assert "weights[1, 4, 3, 5]" in repr(t)


def test_recorded_tensors_are_detached_copies():
    q, k, v = (x.requires_grad_() for x in inputs())
    with headwise.trace() as t:
        out = headwise.attention(q, k, v)
    out.sum().backward()
    step = t["context_by_head"]
    assert not step.tensor.requires_grad and step.tensor.data_ptr() != out.data_ptr()


def test_every_step_has_a_formula_and_a_sentence():
    for name, (formula, sentence) in STEP_TEXT.items():
        assert formula and sentence.endswith("."), name


def test_compiled_modules_have_no_graph_break_and_record_nothing():
    """The trace's ContextVar is read only in eager code: torch.compile sees one graph (issue 13's first
    finding: 4 graph breaks per attention call, and fullgraph=True failed)."""
    module = headwise.MultiHeadAttention(16, 4)
    x = torch.randn(2, 9, 16)
    explained = torch._dynamo.explain(lambda x: module(x, is_causal=True)[0])(x)
    assert explained.graph_break_count == 0
    compiled = torch.compile(lambda x: module(x, is_causal=True)[0], fullgraph=True, backend="eager")
    with headwise.trace() as t:
        out = compiled(x)
    torch.testing.assert_close(out, module(x, is_causal=True)[0])
    assert len(t.steps) == 0
