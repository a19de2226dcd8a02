"""headwise.hf: the attention function's contract with transformers, called directly, and its registration.

The models that run it (BERT, GPT-2, Llama, Mistral, Gemma 2, Qwen2, T5, BART, Whisper) are in
tests/test_hf_models.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402
from oracle import naive_attention  # noqa: E402

from headwise import hf  # noqa: E402

NAME = hf.register()


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
