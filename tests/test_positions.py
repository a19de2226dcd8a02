"""headwise.positions: the sinusoidal table against its formula, rotary positions against Hugging Face's
Llama implementation and against their defining property (scores depend on distance only), rotary and
ALiBi inside MultiHeadAttention with a KV cache, and the errors.

Shape legend: B batch, N tokens, D model width, H heads, Dh head width.
"""

from __future__ import annotations

import math

import pytest
import torch

import headwise
from headwise import KVCache, MultiHeadAttention
from headwise.positions import LearnedPositions, Rotary, SinusoidalPositions, alibi_positions, sinusoidal

F64 = torch.float64
EXACT = {"atol": 1e-12, "rtol": 0.0}


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("dim", [1, 6, 7, 16])
def test_sinusoidal_table_follows_the_paper(dim):
    table = sinusoidal(50, dim, dtype=F64)  # (50, D)
    for position in (0, 1, 13, 49):
        for i in range(dim):
            angle = position / 10000 ** (2 * (i // 2) / dim)
            expected = math.sin(angle) if i % 2 == 0 else math.cos(angle)
            assert table[position, i].item() == pytest.approx(expected, abs=1e-12)


def test_added_positions_start_after_the_cached_tokens_and_know_their_limit():
    for positions in (SinusoidalPositions(10, 4), LearnedPositions(10, 4)):
        x = torch.zeros(2, 10, 4)  # (B, N, D)
        full = positions(x)  # (B, N, D)
        assert torch.equal(positions(x[:, 6:], start=6), full[:, 6:])
        assert not torch.equal(full[:, 0], full[:, 1])
        with pytest.raises(ValueError, match="11 tokens but the model has positions for 10"):
            positions(x[:, :3], start=8)
    assert [name for name, _ in SinusoidalPositions(10, 4).named_parameters()] == []
    assert [name for name, _ in LearnedPositions(10, 4).named_parameters()] == ["weight"]


@pytest.mark.parametrize("head_dim", [2, 8, 64])
def test_rotary_matches_hugging_face_llama(head_dim):
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    from transformers import LlamaConfig

    heads, length, base = 2, 9, 500.0
    config = LlamaConfig(hidden_size=heads * head_dim, num_attention_heads=heads, rope_theta=base)
    rotary_hf = llama.LlamaRotaryEmbedding(config=config)
    q, k = randn(3, heads, length, head_dim, seed=1), randn(3, heads, length, head_dim, seed=2)
    position_ids = torch.arange(length)[None].expand(3, -1)  # (B, N)
    cos, sin = rotary_hf(q, position_ids)  # (B, N, Dh) each
    q_hf, k_hf = llama.apply_rotary_pos_emb(q, k, cos, sin)
    rotary = Rotary(head_dim, base=base)
    # HF computes the angles in float32 even for float64 inputs: agree to float32's precision.
    torch.testing.assert_close(rotary(q), q_hf, atol=1e-5, rtol=0)
    torch.testing.assert_close(rotary(k), k_hf, atol=1e-5, rtol=0)


def test_rotated_scores_depend_only_on_the_distance():
    rotary = Rotary(16)
    q, k = randn(1, 1, 1, 16, seed=3), randn(1, 1, 1, 16, seed=4)

    def score(query_position: int, key_position: int) -> float:
        return (rotary(q, query_position) * rotary(k, key_position)).sum().item()

    assert score(5, 2) == pytest.approx(score(105, 102), abs=1e-10)
    assert score(7, 7) == pytest.approx((q * k).sum().item(), abs=1e-12)  # distance 0: no rotation
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-6)
    x = randn(2, 3, 10, 16, seed=5)  # (B, H, N, Dh)
    torch.testing.assert_close(rotary(x[:, :, 4:], 4), rotary(x)[:, :, 4:], **EXACT)
    torch.testing.assert_close(rotary(x).norm(dim=-1), x.norm(dim=-1), **EXACT)  # a rotation


def _decode_token_by_token(module: MultiHeadAttention, x: torch.Tensor, prefill: int) -> torch.Tensor:
    cache = KVCache(1)
    with torch.no_grad():
        outputs = [module(x[:, :prefill], is_causal=True, cache=cache)[0]]
        outputs += [
            module(x[:, i : i + 1], is_causal=True, cache=cache)[0] for i in range(prefill, x.shape[1])
        ]
    return torch.cat(outputs, dim=1)  # (B, N, D)


@pytest.mark.parametrize("kind", ["rotary", "alibi"])
@pytest.mark.parametrize("num_kv_heads", [4, 2])
def test_positions_inside_attention_decode_like_the_full_causal_pass(kind, num_kv_heads):
    options = {"rotary": Rotary(4)} if kind == "rotary" else {"score_mod": alibi_positions(4)}
    module = MultiHeadAttention(16, 4, num_kv_heads=num_kv_heads, dtype=F64, **options)
    x = randn(2, 11, 16, seed=6)  # (B, N, D)
    with torch.no_grad():
        full, _ = module(x, is_causal=True)  # (B, N, D)
        plain, _ = MultiHeadAttention(16, 4, num_kv_heads=num_kv_heads, dtype=F64)(x, is_causal=True)
    torch.testing.assert_close(_decode_token_by_token(module, x, prefill=4), full, **EXACT)
    assert (full - plain).abs().max() > 1e-3  # the positions change the result


def test_alibi_weights_from_the_module_equal_the_reference():
    slopes = alibi_positions(4)
    module = MultiHeadAttention(16, 4, dtype=F64, score_mod=slopes)
    x = randn(2, 7, 16, seed=7)  # (B, N, D)
    _, weights = module(x, is_causal=True, need_weights=True, average_attn_weights=False)  # (B, H, N, N)
    (w_q, b_q), (w_k, b_k), _ = module.projections()
    q = (x @ w_q.T + b_q).unflatten(-1, (4, 4)).transpose(1, 2)  # (B, H, N, Dh)
    k = (x @ w_k.T + b_k).unflatten(-1, (4, 4)).transpose(1, 2)  # (B, H, N, Dh)
    v = torch.zeros_like(k)
    _, expected = headwise.attention(
        q, k, v, causal=True, score_mod=slopes, return_weights=True, backend="reference"
    )
    torch.testing.assert_close(weights, expected, **EXACT)
    averaged = module(x, is_causal=True, need_weights=True)[1]  # (B, N, N)
    torch.testing.assert_close(averaged, expected.mean(dim=1), **EXACT)


def test_rotary_errors():
    with pytest.raises(ValueError, match="head_dim must be even, got 3"):
        Rotary(3)
    with pytest.raises(ValueError, match="base must be a finite number > 0"):
        Rotary(4, base=float("inf"))
    with pytest.raises(ValueError, match="rotary was made for head_dim 4"):
        Rotary(4)(torch.zeros(1, 1, 2, 6))
    with pytest.raises(ValueError, match="rotary has head_dim 8 but the heads are 4 wide"):
        MultiHeadAttention(16, 4, rotary=Rotary(8))
    with pytest.raises(TypeError, match=r"rotary must be a headwise\.positions\.Rotary"):
        MultiHeadAttention(16, 4, rotary="rope")
    with pytest.raises(TypeError, match=r"score_mod must be a headwise\.masks score modifier"):
        MultiHeadAttention(16, 4, score_mod="alibi")
    module = MultiHeadAttention(16, 4, rotary=Rotary(4))
    with pytest.raises(ValueError, match="rotary positions, which apply to self-attention only"):
        module(torch.zeros(1, 3, 16), torch.zeros(1, 5, 16))
