"""headwise.hf: transformers models with attn_implementation="headwise" against transformers' own eager.

The models are small, built from seeded configs (no download), in eval mode; one model switches between
implementations with `set_attn_implementation`, so the weights are the same.

- BERT (bidirectional, padding) runs in float64, where its eager path is plain float64 arithmetic: outputs,
  attention weights and gradients must agree to rounding (1e-12 / 1e-10).
- Llama (causal, GQA: 4 query heads share 2 key/value heads) is held to the ratio rule in float32: its eager
  softmax runs in float32 even for float64 inputs (`softmax(..., dtype=torch.float32)` in modeling_llama.py),
  so float64 eager is only float32-accurate, and with left padding it is NaN (float64's finfo.min mask turns
  into -inf in float32, the padded rows' softmax gives NaN, and 0 · NaN spreads it to the whole sequence in
  the next layer). Golden: transformers' sdpa in float64; baseline: eager in float32; headwise in float32 must
  be within 2× (outputs) / 4× (gradients) of the baseline's error.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402
from oracle import assert_by_ratio, naive_attention  # noqa: E402

from headwise import hf  # noqa: E402

NAME = hf.register()


def _bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=101,
        hidden_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        intermediate_size=128,
        max_position_embeddings=32,
        attn_implementation="eager",
    )
    return transformers.BertModel(config).eval().double()


def _llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # GQA: G = 2 query heads per key/value head
        max_position_embeddings=64,
        initializer_range=0.1,  # logits of order 1, so greedy choices are not near-ties
        attn_implementation="eager",
    )
    return transformers.LlamaForCausalLM(config).eval()


def _batch(lengths: list[int], total: int, vocab: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids (B, N) and attention_mask (B, N) with 1 on the real tokens, padded on the left or right."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (len(lengths), total), generator=generator)  # (B, N)
    positions = torch.arange(total)[None, :]  # (1, N)
    lengths = torch.tensor(lengths)[:, None]  # (B, 1)
    real = positions >= total - lengths if left else positions < lengths  # (B, N)
    return ids.masked_fill(~real, 0), real.long()


def _run(model, implementation: str, **inputs):
    model.set_attn_implementation(implementation)
    assert model.config._attn_implementation == implementation
    return model(**inputs)


# BERT, float64: padded sequences ---------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [[9, 6, 3, 1], [9, 9, 9, 9]], ids=["padded", "unpadded"])
def test_bert_outputs_and_attentions_equal_eager(lengths):
    """Unpadded, transformers passes no mask at all (nothing to mask) and the layer says is_causal=False."""
    model = _bert()
    ids, mask = _batch(lengths, total=9, vocab=101, left=False)
    inputs = dict(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        eager = _run(model, "eager", **inputs)
        ours = _run(model, NAME, **inputs)

    assert len(ours.hidden_states) == len(eager.hidden_states) == 3
    for layer, (got, want) in enumerate(zip(ours.hidden_states, eager.hidden_states, strict=True)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12, msg=f"hidden state {layer}")
    assert len(ours.attentions) == len(eager.attentions) == 2  # weights come back when asked for
    for layer, (got, want) in enumerate(zip(ours.attentions, eager.attentions, strict=True)):
        assert got.shape == (4, 4, 9, 9)  # (B, H, Nq, Nk)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12, msg=f"attention weights {layer}")
        assert (got[mask[:, None, None, :].expand_as(got) == 0] == 0).all()  # padded keys get no weight
    with torch.no_grad():
        plain = _run(model, NAME, input_ids=ids, attention_mask=mask)  # no weights asked: another backend
    torch.testing.assert_close(plain.last_hidden_state, eager.last_hidden_state, rtol=0, atol=1e-12)


def test_bert_padded_gradients_equal_eager():
    model = _bert()
    ids, mask = _batch([8, 5, 2], total=8, vocab=101, left=False)
    grads = {}
    for implementation in ("eager", NAME):
        model.zero_grad(set_to_none=True)
        out = _run(model, implementation, input_ids=ids, attention_mask=mask).last_hidden_state  # (B, N, D)
        (out * mask[..., None]).sum().backward()  # the real tokens only
        grads[implementation] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["eager"].keys() == grads[NAME].keys() and len(grads["eager"]) > 20
    for name, want in grads["eager"].items():
        torch.testing.assert_close(grads[NAME][name], want, rtol=0, atol=1e-10, msg=name)


# Llama with GQA, float32 under the ratio rule --------------------------------------------------------------


@pytest.mark.parametrize("lengths", [[7, 7, 7], [7, 5, 2]], ids=["unpadded", "left-padded"])
def test_llama_logits_match_eager(lengths):
    model = _llama()
    ids, mask = _batch(lengths, total=7, vocab=97, left=True)
    real = mask.bool()  # (B, N): padded positions are not compared (headwise gives their rows zeros)
    with torch.no_grad():
        golden = _run(copy.deepcopy(model).double(), "sdpa", input_ids=ids, attention_mask=mask).logits
        eager = _run(model, "eager", input_ids=ids, attention_mask=mask).logits  # (B, N, V)
        ours = _run(model, NAME, input_ids=ids, attention_mask=mask).logits
    assert torch.isfinite(ours).all()
    magnitude = golden[real].abs().max().item()
    assert_by_ratio(ours[real], golden[real], eager[real], k=2, what="logits", magnitude=magnitude)
    torch.testing.assert_close(ours[real], eager[real], rtol=0, atol=1e-5)  # fp32 rounding at logits ~ 1


@pytest.mark.parametrize("lengths", [[7, 7], [7, 4]], ids=["unpadded", "left-padded"])
def test_llama_run_bidirectionally_matches_eager(lengths):
    """config.is_causal=False: layers keep is_causal=True; transformers passes is_causal=False per call."""
    model = _llama()
    model.config.is_causal = False
    ids, mask = _batch(lengths, total=7, vocab=97, left=True)
    real = mask.bool()
    with torch.no_grad():
        eager = _run(model, "eager", input_ids=ids, attention_mask=mask).logits  # (B, N, V)
        ours = _run(model, NAME, input_ids=ids, attention_mask=mask).logits
        causal = _run(_llama(), NAME, input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours[real], eager[real], rtol=0, atol=1e-5)
    assert (ours[real] - causal[real]).abs().max() > 0.1  # it did change what the model computes


def test_llama_gradients_match_eager():
    model = _llama()
    ids, mask = _batch([6, 4], total=6, vocab=97, left=True)
    real = mask.bool()

    def grads(m, implementation):
        m.zero_grad(set_to_none=True)
        _run(m, implementation, input_ids=ids, attention_mask=mask).logits[real].sum().backward()
        return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    golden = grads(copy.deepcopy(model).double(), "sdpa")
    eager = grads(model, "eager")
    ours = grads(model, NAME)
    assert ours.keys() == eager.keys() == golden.keys()
    for name in golden:
        magnitude = golden[name].abs().max().item()
        assert_by_ratio(ours[name], golden[name], eager[name], k=4, what=name, magnitude=magnitude)


@pytest.mark.parametrize("lengths", [[6, 6, 6], [6, 4, 1]], ids=["unpadded", "left-padded"])
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_llama_greedy_generation_with_cache_matches_eager(cache, lengths):
    """A static cache prefills with empty slots after the prompt (Nk > Nq): the mask must say so."""
    model = _llama()
    ids, mask = _batch(lengths, total=6, vocab=97, left=True)
    settings = dict(max_new_tokens=5, do_sample=False, pad_token_id=0, cache_implementation=cache)
    settings.update(output_scores=True, return_dict_in_generate=True)
    with torch.no_grad():
        model.set_attn_implementation("eager")
        eager = model.generate(ids, attention_mask=mask, **settings)
        model.set_attn_implementation(NAME)
        ours = model.generate(ids, attention_mask=mask, **settings)
    assert ours.sequences.shape == (3, 11)
    assert torch.equal(ours.sequences, eager.sequences)
    torch.testing.assert_close(torch.stack(ours.scores), torch.stack(eager.scores), rtol=0, atol=1e-5)


# The attention function's contract, called directly ---------------------------------------------------------


class _Layer(torch.nn.Module):
    def __init__(self, is_causal: bool):
        super().__init__()
        self.is_causal = is_causal


def _qkv():
    generator = torch.Generator().manual_seed(2)
    q = torch.randn(2, 4, 5, 8, dtype=torch.float64, generator=generator)  # (B, Hq, Nq, Dh)
    k = torch.randn(2, 2, 5, 8, dtype=torch.float64, generator=generator)  # (B, Hkv, Nk, Dh)
    v = torch.randn(2, 2, 5, 6, dtype=torch.float64, generator=generator)  # (B, Hkv, Nk, Dv)
    return q, k, v


def test_attention_function_layout_gqa_and_causal_without_mask():
    q, k, v = _qkv()
    out, weights = hf.headwise_attention(_Layer(is_causal=True).eval(), q, k, v, None, scaling=0.3)
    assert weights is None
    assert out.shape == (2, 5, 4, 6) and out.is_contiguous()  # (B, Nq, Hq, Dv)
    want, _ = naive_attention(q, k, v, causal=True, scale=0.3)  # (B, Hq, Nq, Dv)
    torch.testing.assert_close(out, want.transpose(1, 2), rtol=0, atol=1e-12)

    out, _ = hf.headwise_attention(_Layer(is_causal=True).eval(), q, k, v, None, is_causal=False)
    want, _ = naive_attention(q, k, v)  # the keyword overrides the layer
    torch.testing.assert_close(out, want.transpose(1, 2), rtol=0, atol=1e-12)


def test_attention_function_mask_is_the_whole_truth_and_weights_on_request():
    q, k, v = _qkv()
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool).tril()  # (B, 1, Nq, Nk)
    mask[1, :, :, :2] = False  # key padding on the left: the first two queries of sequence 1 see nothing
    layer = _Layer(is_causal=False).eval()  # is_causal is not consulted when a mask is given
    out, weights = hf.headwise_attention(layer, q, k, v, mask, output_attentions=True)
    want, want_weights = naive_attention(q, k, v, mask=mask)
    torch.testing.assert_close(out, want.transpose(1, 2), rtol=0, atol=1e-12)
    torch.testing.assert_close(weights, want_weights, rtol=0, atol=1e-12)
    assert (out[1, :2] == 0).all()  # fully masked rows give zeros, not NaN


def test_attention_function_softcap_and_position_bias_as_eager_computes_them():
    q, k, v = _qkv()
    bias = torch.randn(1, 4, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool).tril()  # (B, 1, Nq, Nk)
    layer = _Layer(is_causal=True).eval()
    out, _ = hf.headwise_attention(layer, q, k, v, mask, scaling=0.5, softcap=2.0, position_bias=bias)
    scores = q @ k.repeat_interleave(2, dim=1).transpose(-1, -2) * 0.5  # (B, Hq, Nq, Nk)
    scores = torch.tanh(scores / 2.0) * 2.0 + bias  # Gemma-2's eager capping, then T5-style bias
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    want = weights @ v.repeat_interleave(2, dim=1)  # (B, Hq, Nq, Dv)
    torch.testing.assert_close(out, want.transpose(1, 2), rtol=0, atol=1e-12)


def test_attention_function_dropout_only_in_training():
    q, k, v = _qkv()
    layer = _Layer(is_causal=False)
    eval_out, _ = hf.headwise_attention(layer.eval(), q, k, v, None, dropout=0.5)
    torch.testing.assert_close(eval_out, hf.headwise_attention(layer, q, k, v, None)[0], rtol=0, atol=0)
    torch.manual_seed(3)
    train_out, _ = hf.headwise_attention(layer.train(), q, k, v, None, dropout=0.5)
    assert not torch.allclose(train_out, eval_out)


def test_attention_function_rejects_what_it_cannot_run():
    q, k, v = _qkv()
    layer = _Layer(is_causal=False).eval()
    with pytest.raises(TypeError, match=r"attention_mask must be .* got torch.int64 tensor of shape"):
        hf.headwise_attention(layer, q, k, v, torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="s_aux"):
        hf.headwise_attention(layer, q, k, v, None, s_aux=torch.zeros(4, dtype=torch.float64))


# Registration and imports -----------------------------------------------------------------------------------


def test_register_is_idempotent_and_refuses_taken_names():
    assert hf.register() == hf.register() == "headwise"
    assert transformers.AttentionInterface()["headwise"] is hf.headwise_attention
    assert transformers.AttentionMaskInterface()["headwise"] is hf.headwise_mask
    with pytest.raises(ValueError, match="'sdpa' is already registered"):
        hf.register("sdpa")
    with pytest.raises(ValueError, match="eager"):
        hf.register("eager")


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.slow
def test_import_headwise_does_not_import_transformers_and_register_says_how_to_install_it():
    done = _python(
        """
        import sys
        import headwise, headwise.hf
        assert "transformers" not in sys.modules, "importing headwise imported transformers"
        sys.modules["transformers"] = None  # as if it were not installed
        try:
            headwise.hf.register()
        except ImportError as error:
            print(error)
        """
    )
    assert done.returncode == 0, done.stderr
    assert "pip install transformers" in done.stdout
