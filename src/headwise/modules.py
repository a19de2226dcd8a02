"""MultiHeadAttention with weight splits: one projection per role, unrolled into heads.

    x (B, N, D) -> queries, keys, values (B, N, H·Dh) -> by head (B, H, N, Dh) -> attention per head
      -> context (B, N, H·Dh) -> output projection (B, N, out_dim), out_dim = D unless chosen

For self-attention a single fused projection W_in = [W_q; W_k; W_v] makes queries, keys and values at
once. The parameters carry torch.nn.MultiheadAttention's names (in_proj_weight, in_proj_bias,
q_proj_weight, k_proj_weight, v_proj_weight, out_proj) so that weights move between the two unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backends.tuning import fast_low_precision
from .cache import KVCache, LayerCache
from .checks import positive_int, probability
from .functional import attention, attention_weights
from .masks import ScoreModifier, check_mask, check_padding_mask, combine
from .positions import Rotary
from .trace import record, tracing


class AttentionProjections(nn.Module):
    """The parameters and the data flow shared by MultiHeadAttention and compat.MultiheadAttention.

    Holds W_q, W_k, W_v (fused into `in_proj_weight` when keys and values have the model width) and the
    output projection, and runs: project -> split heads -> attention -> merge heads -> project out.
    """

    # The output projection's class (compat.MultiheadAttention's is torch's, which quantize_dynamic skips).
    out_proj_class: type[nn.Linear] = nn.Linear

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None,
        head_dim: int | None,
        kdim: int | None,
        vdim: int | None,
        bias: bool,
        dropout: float,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
        out_dim: int | None = None,
        qkv_bias: bool | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = positive_int(embed_dim, "embed_dim")
        self.num_heads = positive_int(num_heads, "num_heads")
        self.num_kv_heads = positive_int(num_heads if num_kv_heads is None else num_kv_heads, "num_kv_heads")
        if self.num_heads % self.num_kv_heads != 0:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads}): "
                "each key/value head serves the same number of query heads"
            )
        if head_dim is None and self.embed_dim % self.num_heads != 0:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads}), "
                "or pass head_dim to choose each head's width yourself"
            )
        self.head_dim = positive_int(
            self.embed_dim // self.num_heads if head_dim is None else head_dim, "head_dim"
        )
        self.kdim = positive_int(self.embed_dim if kdim is None else kdim, "kdim")
        self.vdim = positive_int(self.embed_dim if vdim is None else vdim, "vdim")
        self.out_dim = positive_int(self.embed_dim if out_dim is None else out_dim, "out_dim")
        if qkv_bias is not None and not isinstance(qkv_bias, bool):
            raise TypeError(f"qkv_bias must be a bool or None (for bias), got {type(qkv_bias).__name__}")
        self.dropout = probability(dropout, "dropout")

        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise TypeError(
                f"dtype must be a floating torch.dtype (float32, bfloat16, ...) or None, got {dtype!r}"
            )
        factory = {"device": device, "dtype": dtype}
        q_width = self.num_heads * self.head_dim  # Hq·Dh
        kv_width = self.num_kv_heads * self.head_dim  # Hkv·Dh
        self._split = [q_width, kv_width, kv_width]
        self._qkv_same_embed_dim = self.kdim == self.embed_dim and self.vdim == self.embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(sum(self._split), self.embed_dim, **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(q_width, self.embed_dim, **factory))
            self.k_proj_weight = nn.Parameter(torch.empty(kv_width, self.kdim, **factory))
            self.v_proj_weight = nn.Parameter(torch.empty(kv_width, self.vdim, **factory))
            self.register_parameter("in_proj_weight", None)
        if bias if qkv_bias is None else qkv_bias:
            self.in_proj_bias = nn.Parameter(torch.empty(sum(self._split), **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = self.out_proj_class(q_width, self.out_dim, bias=bias, **factory)  # Hq·Dh -> out_dim
        self._reset_projections()

    def _reset_projections(self) -> None:
        """torch.nn.MultiheadAttention's initialisation: Xavier-uniform inputs, zero biases."""
        for weight in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if weight is not None:
                nn.init.xavier_uniform_(weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)

    def projections(self) -> tuple[tuple[torch.Tensor, torch.Tensor | None], ...]:
        """((W_q, b_q), (W_k, b_k), (W_v, b_v)): W_q (Hq·Dh, D), W_k (Hkv·Dh, kdim), W_v (Hkv·Dh, vdim),
        biases (Hq·Dh,), (Hkv·Dh,), (Hkv·Dh,) or None; views of the parameters, so gradients flow."""
        if self._qkv_same_embed_dim:
            weights = self.in_proj_weight.split(self._split)  # W_q, W_k, W_v stacked in one matrix
        else:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        biases = (None, None, None) if self.in_proj_bias is None else self.in_proj_bias.split(self._split)
        return tuple(zip(weights, biases, strict=True))

    def _check_inputs(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        for name, t, width in (
            ("query", query, self.embed_dim),
            ("key", key, self.kdim),
            ("value", value, self.vdim),
        ):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() != 3 or t.shape[-1] != width:
                raise ValueError(
                    f"{name} must have shape (B, N, {width}) (batch first), got {tuple(t.shape)}"
                )
        weight = self.out_proj.weight
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.dtype != weight.dtype:
                raise TypeError(
                    f"{name} has dtype {t.dtype} but the module's weights are {weight.dtype}; convert one of "
                    f"them, e.g. module.to({t.dtype}) or {name}.to({weight.dtype})"
                )
        if not (query.shape[0] == key.shape[0] == value.shape[0]):
            raise ValueError(
                f"query, key and value must share the batch size B, got {query.shape[0]}, {key.shape[0]}, "
                f"{value.shape[0]}"
            )
        if key.shape[1] != value.shape[1]:
            raise ValueError(
                f"key and value must have the same length Nk, got {key.shape[1]} and {value.shape[1]}"
            )

    def _project(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """query (B, Nq, D), key (B, Nk, kdim), value (B, Nk, vdim) -> queries (B, Nq, Hq·Dh),
        keys (B, Nk, Hkv·Dh), values (B, Nk, Hkv·Dh)."""
        record("inputs", query)
        self_attention = key is query and value is query
        if not self_attention:
            record("kv_inputs", key)
        if self._qkv_same_embed_dim and self_attention:
            # One fused projection makes all heads' queries, keys and values at once.
            fused = F.linear(query, self.in_proj_weight, self.in_proj_bias)  # (B, N, (Hq + 2·Hkv)·Dh)
            queries, keys, values = fused.split(self._split, dim=-1)  # (B, N, Hq·Dh), 2 × (B, N, Hkv·Dh)
        else:
            (w_q, b_q), (w_k, b_k), (w_v, b_v) = self.projections()
            queries = F.linear(query, w_q, b_q)  # (B, Nq, Hq·Dh)
            keys = F.linear(key, w_k, b_k)  # (B, Nk, Hkv·Dh)
            values = F.linear(value, w_v, b_v)  # (B, Nk, Hkv·Dh)
        record("queries", queries)
        record("keys", keys)
        record("values", values)
        return queries, keys, values

    def _attend(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        *,
        mask: torch.Tensor | None,
        causal: bool,
        need_weights: bool,
        average_attn_weights: bool,
        cache: LayerCache | None = None,
        rotary: Rotary | None = None,
        score_mod: ScoreModifier | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """queries (B, Nq, Hq·Dh), keys and values (B, Nk, Hkv·Dh), mask broadcastable to
        (B, Hq, Nq, Nk) -> output (B, Nq, out_dim) and weights (B, Nq, Nk) averaged over heads,
        (B, Hq, Nq, Nk) per head, or None.

        With a cache, keys and values are the new tokens' (B, Nq, Hkv·Dh): they are appended to it and the
        queries attend to all Nk tokens cached (the trace records the new tokens' keys and values only).
        `rotary` rotates the new queries and keys by their positions, which start after the cached tokens;
        `score_mod` changes the scaled scores (ALiBi)."""
        q = queries.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)  # (B, Hq, Nq, Dh)
        k = keys.unflatten(-1, (self.num_kv_heads, self.head_dim)).transpose(1, 2)  # (B, Hkv, Nk, Dh)
        v = values.unflatten(-1, (self.num_kv_heads, self.head_dim)).transpose(1, 2)  # (B, Hkv, Nk, Dh)
        if rotary is not None:
            start = 0 if cache is None else cache.length  # the new tokens come after the cached ones
            q, k = rotary(q, start), rotary(k, start)  # (B, Hq, Nq, Dh), (B, Hkv, Nk, Dh)
        record("queries_by_head", q)
        record("keys_by_head", k)
        record("values_by_head", v)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, Hkv, Nk, Dh): the tokens cached before, then the new ones
        kv_finite = cache is not None and cache.finite  # attention need not check the cached tokens
        dropout_p = self.dropout if self.training else 0.0
        # Weights asked for without dropout (which they must show) or a trace (which records them anyway)
        # come from a second, head-by-head pass, so the output keeps the fast path and no (B, Hq, Nq, Nk)
        # tensor is ever held when they are averaged.
        weights_apart = need_weights and dropout_p == 0.0 and not tracing()
        result = attention(
            q,
            k,
            v,
            mask=mask,
            causal=causal,
            dropout_p=dropout_p,
            return_weights=bool(need_weights) and not weights_apart,  # torch takes any truthy value
            score_mod=score_mod,
            kv_finite=kv_finite,
        )
        context_by_head, weights = (
            (result, None) if not need_weights or weights_apart else result
        )  # (B, Hq, Nq, Dh)
        if weights_apart:
            weights = _weights(q, k, mask, causal, score_mod, average_attn_weights)
        context = context_by_head.transpose(1, 2).flatten(2)  # (B, Nq, Hq·Dh): heads side by side
        record("context", context)
        output = self.out_proj(context)  # (B, Nq, out_dim)
        record("output", output)
        if weights is not None and average_attn_weights and not weights_apart:
            weights = weights.mean(dim=1)  # (B, Nq, Nk)
        return output, weights


def _weights(q, k, mask, causal, score_mod, average):
    """The softmax weights of q (B, Hq, Nq, Dh) against k (B, Hkv, Nk, Dh): averaged over heads
    (B, Nq, Nk), computed one head at a time, or per head (B, Hq, Nq, Nk)."""
    options = {"mask": mask, "causal": causal, "score_mod": score_mod}
    if not average:
        return attention_weights(q, k, **options).to(q.dtype)  # (B, Hq, Nq, Nk)
    heads = q.shape[1]
    total = sum(attention_weights(q, k, heads=[h], **options) for h in range(heads))  # (B, 1, Nq, Nk)
    return (total / heads)[:, 0].to(q.dtype)  # (B, Nq, Nk)


def _layer_of(cache: object, cache_layer: object, *, cross_attention: bool) -> LayerCache | None:
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
        if self.compute_dtype == "auto":
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
        compute = self.computes_in()
        if compute != self.out_proj.weight.dtype and cache is None:
            return self._forward_in(compute, query, key, value, key_padding_mask=key_padding_mask,
                attn_mask=attn_mask, is_causal=is_causal, need_weights=need_weights,
                average_attn_weights=average_attn_weights)  # fmt: skip
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
        queries, keys, values = self._project(query, key, value)
        return self._attend(
            queries,
            keys,
            values,
            mask=combine(padding, attn_mask, query.dtype),
            causal=is_causal,
            need_weights=need_weights,
            average_attn_weights=average_attn_weights,
            cache=layer_cache,
            rotary=self.rotary,
            score_mod=self.score_mod,
        )

    def _forward_in(self, compute: torch.dtype, *inputs: torch.Tensor | None, **options):
        """forward() with the parameters and the inputs cast to `compute` (differentiably: gradients reach
        the parameters in their own dtype), the output and weights cast back."""
        dtype = self.out_proj.weight.dtype
        casts: dict[int, torch.Tensor] = {}  # one copy per distinct input, so self-attention stays fused
        cast = [None if t is None else casts.setdefault(id(t), t.to(compute)) for t in inputs]
        parameters = {name: p.to(compute) for name, p in self.named_parameters()}
        output, weights = torch.func.functional_call(self, parameters, tuple(cast), options)
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
