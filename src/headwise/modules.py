"""MultiHeadAttention: multi-head attention with weight splits (one projection per role, unrolled into
heads), grouped-query heads, a KV cache, rotary positions and a compute dtype; the shared projections
and data flow are projections.AttentionProjections.

    x (B, N, D) -> queries, keys, values (B, N, H·Dh) -> by head (B, H, N, Dh) -> attention per head
      -> context (B, N, H·Dh) -> output projection (B, N, out_dim), out_dim = D unless chosen
"""

from __future__ import annotations

import torch
from torch import nn

from .backends.tuning import fast_low_precision
from .cache import KVCache, LayerCache
from .masks import ScoreModifier, check_mask, check_padding_mask, combine
from .positions import Rotary
from .projections import AttentionProjections


class MultiHeadAttention(AttentionProjections):
    """Multi-head attention, batch-first, with grouped-query heads.

    Args:
        embed_dim: model width D of the queries (the book's d_in), and of the output unless out_dim is given.
        num_heads: query heads Hq.
        num_kv_heads: key/value heads Hkv (default Hq); Hq must be a multiple of it.
        head_dim: width Dh of each head (default embed_dim // num_heads); the projections are
            D -> Hq·Dh (the book's d_out) for the queries, D -> Hkv·Dh for the keys and values.
        kdim, vdim: widths of the key and value inputs for cross-attention (default embed_dim).
        out_dim: width of the output, out_proj being Hq·Dh -> out_dim (default embed_dim). Raschka's
            chapter 3 `MultiHeadAttention(d_in, d_out, ..., num_heads)` is
            `MultiHeadAttention(d_in, num_heads, head_dim=d_out // num_heads, out_dim=d_out)`.
        bias: add biases to the output projection, and to the input projections unless qkv_bias says.
        qkv_bias: add biases to the query, key and value projections (default: bias); the book's
            `qkv_bias=False` keeps the output projection's bias.
        dropout: dropout probability on the attention weights, in training mode.
        rotary: a `headwise.positions.Rotary` that rotates queries and keys by their positions (RoPE),
            self-attention only; positions continue after the tokens in the KV cache.
        score_mod: a `headwise.masks` score modifier applied to every call's scores, e.g.
            `headwise.positions.alibi_positions(num_heads)` (ALiBi).
        compute_dtype: the dtype the projections and the attention compute in. "auto" (the default):
            float32 for bf16/fp16 weights on hardware without fast bf16/fp16 matmuls (CPUs without
            AVX-512 bf16, where they run ~150× slower than float32), the weights' dtype elsewhere; None:
            always the weights' dtype; or a floating dtype. Computing in float32 costs, per call, a float32
            copy of the weights (4 bytes per parameter) and of the inputs and activations (twice their
            bf16 size); the output and the gradients come back in the weights' dtype. A call with a KV
            cache computes in the cache's dtype.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        kdim: int | None = None,
        vdim: int | None = None,
        out_dim: int | None = None,
        bias: bool = True,
        qkv_bias: bool | None = None,
        dropout: float = 0.0,
        rotary: Rotary | None = None,
        score_mod: ScoreModifier | None = None,
        compute_dtype: str | torch.dtype | None = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            embed_dim,
            num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            kdim=kdim,
            vdim=vdim,
            bias=bias,
            dropout=dropout,
            device=device,
            dtype=dtype,
            out_dim=out_dim,
            qkv_bias=qkv_bias,
        )
        if rotary is not None and not isinstance(rotary, Rotary):
            raise TypeError(
                f"rotary must be a headwise.positions.Rotary or None, got {type(rotary).__name__}"
            )
        if rotary is not None and rotary.head_dim != self.head_dim:
            raise ValueError(f"rotary has head_dim {rotary.head_dim} but the heads are {self.head_dim} wide")
        if score_mod is not None and not isinstance(score_mod, ScoreModifier):
            raise TypeError(
                f"score_mod must be a headwise.masks score modifier or None, got {type(score_mod).__name__}"
            )
        if compute_dtype != "auto" and not (
            compute_dtype is None
            or (isinstance(compute_dtype, torch.dtype) and compute_dtype.is_floating_point)
        ):
            raise TypeError(
                f'compute_dtype must be "auto", None or a floating torch.dtype, got {compute_dtype!r}'
            )
        self.rotary = rotary
        self.score_mod = score_mod
        self.compute_dtype = compute_dtype

    def computes_in(self) -> torch.dtype:
        """The dtype a call computes in now (see compute_dtype)."""
        weights = self.out_proj.weight
        if isinstance(self.compute_dtype, str):  # "auto", the one string __init__ takes
            return weights.dtype if fast_low_precision(weights.device, weights.dtype) else torch.float32
        return weights.dtype if self.compute_dtype is None else self.compute_dtype

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        *,
        key_padding_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        average_attn_weights: bool = True,
        cache: KVCache | None = None,
        cache_layer: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from `query` to `key`/`value` (self-attention when key is None).

        Args:
            query: (B, Nq, embed_dim).
            key: (B, Nk, kdim), or None for self-attention (key = value = query).
            value: (B, Nk, vdim); defaults to `key`.
            key_padding_mask: bool (B, Nk), True = a real token, False = padding to ignore.
            attn_mask: bool (True = may attend) or float (added to the scores), broadcastable to
                (B, Hq, Nq, Nk), e.g. (Nq, Nk).
            is_causal: causal attention, aligned bottom-right when Nq != Nk; combines with the masks.
            need_weights: also return the attention weights.
            average_attn_weights: average the returned weights over heads: (B, Nq, Nk); otherwise
                (B, Hq, Nq, Nk).
            cache: a KVCache for incremental decoding, self-attention only (key=None). The new tokens' keys
                and values are appended to layer `cache_layer` of it and the Nq new queries attend to all
                Nk = (tokens cached before) + Nq tokens, so the masks cover those Nk keys: key_padding_mask
                is (B, Nk), one column per token cached so far (add a column per step). Pass the prompt
                (prefill), then one token at a time, each with is_causal=True: causal attention is aligned
                bottom-right, so each new token sees itself and every token before it, as in the full
                causal pass (with one new token it masks nothing). The cache keeps no gradients: decode
                under torch.no_grad().
            cache_layer: this module's layer in `cache`, 0 <= cache_layer < cache.num_layers.

        Returns:
            (output (B, Nq, out_dim), weights or None).
        """
        layer_cache = _layer_of(cache, cache_layer, cross_attention=key is not None)
        if self.rotary is not None and key is not None:
            raise ValueError(
                "this module has rotary positions, which apply to self-attention only (key=None): queries "
                "and keys of two different sequences have no common positions"
            )
        if key is None:
            if value is not None:
                raise ValueError("value was given without key; pass key too, or neither for self-attention")
            key = value = query
        elif value is None:
            value = key
        self._check_inputs(query, key, value)
        if not isinstance(is_causal, bool):
            raise TypeError(f"is_causal must be a bool, got {type(is_causal).__name__}")
        batch, num_queries, num_keys = query.shape[0], query.shape[1], key.shape[1]
        if layer_cache is not None:
            num_keys += layer_cache.length  # the cached tokens, then the new ones
        target = (batch, self.num_heads, num_queries, num_keys)  # (B, Hq, Nq, Nk)
        if attn_mask is not None:
            check_mask(attn_mask, "attn_mask", target, query.device)
        padding = None
        if key_padding_mask is not None:
            check_padding_mask(
                key_padding_mask, "key_padding_mask", (batch, num_keys), query.device, "(B, Nk)"
            )
            padding = key_padding_mask[:, None, None, :]  # (B, 1, 1, Nk)
        dtype = query.dtype
        compute = dtype if layer_cache is not None else self.computes_in()  # a cache computes in its own
        if compute != dtype:  # one copy per distinct input, so that self-attention stays fused
            given_query, given_key, given_value = query, key, value
            query = given_query.to(compute)  # (B, Nq, D)
            key = query if given_key is given_query else given_key.to(compute)  # (B, Nk, kdim)
            if given_value is given_query:
                value = query
            elif given_value is given_key:  # cross-attention to one tensor of keys and values
                value = key
            else:
                value = given_value.to(compute)  # (B, Nk, vdim)
        mask = combine(padding, attn_mask, compute)
        queries, keys, values = self._project(query, key, value)  # in `compute`, the weights cast to it
        output, weights = self._attend(
            queries,
            keys,
            values,
            mask=mask,
            causal=is_causal,
            need_weights=need_weights,
            average_attn_weights=average_attn_weights,
            cache=layer_cache,
            rotary=self.rotary,
            score_mod=self.score_mod,
        )
        return output.to(dtype), (None if weights is None else weights.to(dtype))

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> MultiHeadAttention:
        """A MultiHeadAttention with the weights of a torch.nn.MultiheadAttention.

        headwise is batch-first: if `module.batch_first` is False, transpose your inputs to (B, N, E)."""
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(f"module must be a torch.nn.MultiheadAttention, got {type(module).__name__}")
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError(
                "module uses add_bias_kv or add_zero_attn, which MultiHeadAttention does not have; "
                "use headwise.compat.MultiheadAttention, which loads its state_dict as it is"
            )
        weight = module.out_proj.weight
        converted = cls(
            module.embed_dim,
            module.num_heads,
            kdim=module.kdim,
            vdim=module.vdim,
            bias=module.in_proj_bias is not None,
            dropout=module.dropout,
            device=weight.device,
            dtype=weight.dtype,
        )
        converted.load_state_dict(module.state_dict())
        return converted.train(module.training)

    def to_torch(self) -> nn.MultiheadAttention:
        """A torch.nn.MultiheadAttention (batch_first=True) with these weights."""
        one_bias_only = (self.in_proj_bias is None) != (self.out_proj.bias is None)
        if (
            self.num_kv_heads != self.num_heads
            or self.num_heads * self.head_dim != self.embed_dim
            or self.out_dim != self.embed_dim
            or one_bias_only
        ):
            raise ValueError(
                "torch.nn.MultiheadAttention has no grouped-query heads, no free head_dim or out_dim, and "
                "biases on both its input and output projections or on neither: this module has "
                f"num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, "
                f"embed_dim={self.embed_dim}, out_dim={self.out_dim}, "
                f"qkv_bias={self.in_proj_bias is not None}, bias={self.out_proj.bias is not None}"
            )
        weight = self.out_proj.weight
        converted = nn.MultiheadAttention(
            self.embed_dim,
            self.num_heads,
            dropout=self.dropout,
            bias=self.in_proj_bias is not None,
            kdim=self.kdim,
            vdim=self.vdim,
            batch_first=True,
            device=weight.device,
            dtype=weight.dtype,
        )
        converted.load_state_dict(self.state_dict())
        return converted.train(self.training)


def _layer_of(cache: object, cache_layer: int, *, cross_attention: bool) -> LayerCache | None:
    """The layer of `cache` that a forward call appends to, or None without a cache."""
    if cache is None:
        if cache_layer != 0:
            raise ValueError(f"cache_layer={cache_layer!r} was given without a cache; pass cache= too")
        return None
    if not isinstance(cache, KVCache):
        raise TypeError(f"cache must be a headwise.KVCache or None, got {type(cache).__name__}")
    if cross_attention:
        raise ValueError(
            "cache= works with self-attention only (key=None): it holds the keys and values of the tokens "
            "decoded so far. For cross-attention pass the encoder's output as key at every step, without "
            "a cache"
        )
    return cache.layer(cache_layer)
