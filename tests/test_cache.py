"""headwise.KVCache and MultiHeadAttention(..., cache=): decoding a prompt then one token at a time gives the
full causal pass, in float64, for MHA, GQA and MQA, several layers, batches, padding, growth by doubling and
a fixed max_length; the trace of a cached step; and every bad argument.

Shape legend: B batch, N tokens, D embed_dim, Hq / Hkv query and key/value heads, Dh head width.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import headwise
from headwise import KVCache, MultiHeadAttention

F64 = torch.float64
EXACT = {"atol": 1e-12, "rtol": 0.0}
B, N, D, HEADS = 2, 12, 16, 4


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def decoder(num_layers: int = 1, num_kv_heads: int = HEADS, seed: int = 0) -> list[MultiHeadAttention]:
    """Attention layers with random weights and biases (zero biases would hide bias bugs), scaled to keep
    activations near 1 through the stack, so that an absolute tolerance means the same in every layer."""
    generator = torch.Generator().manual_seed(seed)
    layers = [MultiHeadAttention(D, HEADS, num_kv_heads=num_kv_heads, dtype=F64) for _ in range(num_layers)]
    with torch.no_grad():
        for parameter in (p for layer in layers for p in layer.parameters()):
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=F64) * D**-0.5)
    return layers


def run_stack(layers, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """x (B, n, D) through residual attention layers -> (B, n, D); layer i uses cache layer i."""
    for i, layer in enumerate(layers):
        cached = {"cache_layer": i} if "cache" in kwargs else {}
        x = x + layer(x, is_causal=True, **cached, **kwargs)[0]  # (B, n, D)
    return x


def decode(layers, x: torch.Tensor, cache: KVCache, prefill: int, padding: torch.Tensor | None = None):
    """The first `prefill` tokens of x (B, N, D) in one call, then one token per call -> (B, N, D)."""
    bounds = [0, *range(prefill, x.shape[1] + 1)]
    outputs = []
    with torch.no_grad():
        for start, end in itertools.pairwise(bounds):
            masks = {} if padding is None else {"key_padding_mask": padding[:, :end]}  # (B, Nk)
            outputs.append(run_stack(layers, x[:, start:end], cache=cache, **masks))  # (B, end - start, D)
    return torch.cat(outputs, dim=1)  # (B, N, D)


# ------------------------------------------------------------------------- decoding equals the full pass


@pytest.mark.parametrize("max_length", [None, N], ids=["doubling", "max_length"])
@pytest.mark.parametrize("prefill", [1, 5, N])
@pytest.mark.parametrize("num_kv_heads", [HEADS, 2, 1], ids=["MHA", "GQA", "MQA"])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_decoding_token_by_token_equals_the_full_causal_pass(num_layers, num_kv_heads, prefill, max_length):
    layers = decoder(num_layers, num_kv_heads)
    x = randn(B, N, D, seed=1)
    cache = KVCache(num_layers, max_length=max_length)
    with torch.no_grad():
        expected = run_stack(layers, x)  # (B, N, D)
    torch.testing.assert_close(decode(layers, x, cache, prefill), expected, **EXACT)
    for layer in cache.layers:
        assert layer.length == N
        assert layer.keys.shape == layer.values.shape == (B, num_kv_heads, N, D // HEADS)  # Hkv heads only
    assert cache.length == N


def test_decoding_with_key_padding_equals_the_full_pass():
    """Left-padded prompts: key_padding_mask covers every token cached so far, (B, Nk)."""
    layers = decoder(2, num_kv_heads=2)
    x = randn(B, N, D, seed=2)
    real = torch.ones(B, N, dtype=torch.bool)
    real[0, :3] = False  # sequence 0 starts with 3 padding tokens
    with torch.no_grad():
        expected = run_stack(layers, x, key_padding_mask=real)  # (B, N, D)
    torch.testing.assert_close(decode(layers, x, KVCache(2), 5, padding=real), expected, **EXACT)


def test_cached_step_returns_the_full_pass_weights():
    (layer,) = decoder(num_kv_heads=2)
    x = randn(B, N, D, seed=3)
    cache = KVCache()
    with torch.no_grad():
        _, expected = layer(x, is_causal=True, need_weights=True)  # (B, N, N)
        layer(x[:, :-1], is_causal=True, cache=cache)
        _, weights = layer(x[:, -1:], is_causal=True, need_weights=True, cache=cache)  # (B, 1, N)
    torch.testing.assert_close(weights, expected[:, -1:], **EXACT)


# ---------------------------------------------------------------------------------------- the buffers


def appended(cache: KVCache, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Append n random tokens (B=2, Hkv=3, Dh=4, Dv=5) to layer 0; returns what was appended."""
    k, v = randn(2, 3, n, 4, seed=seed), randn(2, 3, n, 5, seed=seed + 100)
    cache.append(0, k, v)
    return k, v


def test_capacity_doubles_when_full_and_keeps_earlier_entries():
    cache = KVCache()
    assert (cache.length, cache.layers[0].capacity, cache.layers[0].keys) == (0, 0, None)
    pieces = [appended(cache, 3, seed=0)]
    capacities = [cache.layers[0].capacity]
    for seed in range(1, 11):
        pieces.append(appended(cache, 1, seed=seed))
        capacities.append(cache.layers[0].capacity)
    assert capacities == [3, 6, 6, 6, 12, 12, 12, 12, 12, 12, 24]  # the first append sets the capacity
    assert cache.length == 13
    assert torch.equal(cache.layers[0].keys, torch.cat([k for k, _ in pieces], dim=2))  # (2, 3, 13, 4)
    assert torch.equal(cache.layers[0].values, torch.cat([v for _, v in pieces], dim=2))  # (2, 3, 13, 5)


def test_a_long_append_grows_past_double():
    cache = KVCache()
    appended(cache, 2, seed=0)
    appended(cache, 7, seed=1)
    assert (cache.length, cache.layers[0].capacity) == (9, 9)


def test_max_length_is_allocated_once_and_enforced():
    cache = KVCache(max_length=6)
    pieces = [appended(cache, 4, seed=0), appended(cache, 2, seed=1)]
    assert (cache.length, cache.layers[0].capacity) == (6, 6)
    with pytest.raises(
        ValueError, match=r"KVCache layer 0 holds at most max_length=6 tokens: it has 6 and 1"
    ):
        appended(cache, 1, seed=2)
    assert cache.length == 6  # the failed append changed nothing
    assert torch.equal(cache.layers[0].keys, torch.cat([k for k, _ in pieces], dim=2))
    with pytest.raises(ValueError, match="max_length=3"):
        appended(KVCache(max_length=3), 4, seed=0)


def test_layers_are_independent_and_reset_empties_them():
    cache = KVCache(2)
    k, v = randn(1, 2, 3, 4), randn(1, 2, 3, 4, seed=1)
    keys, values = cache.append(1, k, v)
    assert torch.equal(keys, k) and torch.equal(values, v)
    assert (cache.layers[0].length, cache.layers[1].length) == (0, 3)
    cache.reset()
    assert [(layer.length, layer.capacity) for layer in cache.layers] == [(0, 0), (0, 0)]
    cache.append(1, randn(5, 1, 2, 8).float(), randn(5, 1, 2, 8).float())  # a new batch, another dtype
    assert cache.layers[1].keys.shape == (5, 1, 2, 8) and cache.layers[1].keys.dtype == torch.float32


# ------------------------------------------------------------------------------------------- the trace


def test_trace_of_a_cached_step_shows_the_new_token_against_every_cached_key():
    (layer,) = decoder(num_kv_heads=2)
    x = randn(B, 4, D, seed=4)
    cache = KVCache()
    with torch.no_grad():
        layer(x[:, :3], is_causal=True, cache=cache)
        with headwise.trace() as t:
            output, _ = layer(x[:, 3:], is_causal=True, cache=cache)  # (B, 1, D)
    head_dim = D // HEADS
    assert t["inputs"].shape == (B, 1, D)
    assert t["keys_by_head"].shape == (B, 2, 1, head_dim)  # the new token's keys only
    assert torch.equal(t["keys_by_head"].tensor, cache.layers[0].keys[:, :, 3:])
    assert t["scores"].shape == t["weights"].shape == (B, HEADS, 1, 4)  # against all 4 cached keys
    assert torch.equal(t["output"].tensor, output)


# ------------------------------------------------------------------------------------------ bad inputs


def test_bad_forward_arguments():
    (layer,) = decoder(num_kv_heads=2)
    x = randn(B, 3, D)
    cache = KVCache(2)
    with torch.no_grad():
        with pytest.raises(TypeError, match=r"cache must be a headwise\.KVCache or None, got dict"):
            layer(x, cache={})
        with pytest.raises(ValueError, match=r"cache= works with self-attention only \(key=None\)"):
            layer(x, x, cache=cache)
        with pytest.raises(ValueError, match=r"layer index must be in \[0, 2\) \(this cache has 2"):
            layer(x, cache=cache, cache_layer=2)
        with pytest.raises(TypeError, match="layer index must be an int, got str"):
            layer(x, cache=cache, cache_layer="0")
        with pytest.raises(ValueError, match="cache_layer=1 was given without a cache"):
            layer(x, cache_layer=1)
        layer(x, cache=cache)
        with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(B, Nk\) = \(2, 4\)"):
            layer(x[:, :1], cache=cache, key_padding_mask=torch.ones(B, 1, dtype=torch.bool))
        with pytest.raises(ValueError, match=r"does not broadcast to \(B, Hq, Nq, Nk\) = \(2, 4, 1, 4\)"):
            layer(x[:, :1], cache=cache, attn_mask=torch.ones(1, 3, dtype=torch.bool))
        with pytest.raises(ValueError, match="holds batch size B = 2, but the new keys and values have 3"):
            layer(randn(3, 1, D), cache=cache)
        (other,) = decoder(num_kv_heads=4)
        with pytest.raises(
            ValueError, match="holds key/value heads Hkv = 2, but the new keys and values have 4"
        ):
            other(x[:, :1], cache=cache)
    with pytest.raises(ValueError, match=r"k requires grad, but KVCache is for inference.*torch.no_grad\(\)"):
        layer(x[:, :1], cache=cache)
    assert cache.length == 3  # no failed call changed the cache


def test_bad_appends():
    cache = KVCache()
    k = randn(1, 2, 3, 4)
    cache.append(0, k, k)
    with pytest.raises(TypeError, match=r"v must be a torch\.Tensor, got list"):
        cache.append(0, k, [])
    with pytest.raises(ValueError, match=r"k must be 4-D \(B, Hkv, n, Dh\), got shape \(2, 3, 4\)"):
        cache.append(0, k[0], k)
    with pytest.raises(
        ValueError, match=r"k and v must share \(B, Hkv, n\), got \(1, 2, 3\) and \(1, 2, 2\)"
    ):
        cache.append(0, k, k[:, :, :2])
    with pytest.raises(ValueError, match="k and v must share dtype and device"):
        cache.append(0, k, k.float())
    with pytest.raises(ValueError, match="holds key head width Dh = 4, but the new keys and values have 5"):
        cache.append(0, randn(1, 2, 1, 5), randn(1, 2, 1, 4))
    with pytest.raises(ValueError, match="holds value head width Dv = 4, but the new keys and values have 6"):
        cache.append(0, randn(1, 2, 1, 4), randn(1, 2, 1, 6))
    with pytest.raises(
        TypeError, match=r"holds torch\.float64, but the new keys and values are torch\.float32"
    ):
        cache.append(0, k.float(), k.float())
    with pytest.raises(ValueError, match="holds device = cpu, but the new keys and values have meta"):
        cache.append(0, k.to("meta"), k.to("meta"))
    assert cache.length == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_layers": 0}, "num_layers must be a positive integer, got 0"),
        ({"num_layers": 2.0}, "num_layers must be a positive integer, got 2.0"),
        ({"max_length": 0}, "max_length must be a positive integer, got 0"),
        ({"max_length": True}, "max_length must be a positive integer, got True"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KVCache(**kwargs)


@torch.no_grad()
def test_a_cached_nan_follows_the_non_finite_rule():
    """The cache checks each append (so that attention need not read every cached token again): a NaN
    token makes `finite` False until reset, and a later step that sees it is NaN, as without a cache."""
    (layer,) = decoder()
    x = randn(B, 6, D)
    x[0, 2, 0] = float("nan")  # batch element 0, token 2
    cache = KVCache()
    layer(x[:, :2], is_causal=True, cache=cache)
    assert cache.layer(0).finite
    layer(x[:, 2:5], is_causal=True, cache=cache)
    assert not cache.layer(0).finite
    step, _ = layer(x[:, 5:], is_causal=True, cache=cache)  # (B, 1, D): sees token 2
    full, _ = layer(x, is_causal=True)  # (B, 6, D)
    assert torch.isnan(step[0]).all() and torch.isnan(full[0, 2:]).all()
    torch.testing.assert_close(step[1], full[1, 5:], **EXACT)
    cache.reset()
    assert cache.layer(0).finite
