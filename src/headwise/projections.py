"""The parameters and the data flow that every multi-head attention module here shares (weight splits).

    x (B, N, D) -> queries, keys, values (B, N, H·Dh) -> by head (B, H, N, Dh) -> attention per head
      -> context (B, N, H·Dh) -> output projection (B, N, out_dim)

For self-attention a single fused projection W_in = [W_q; W_k; W_v] makes queries, keys and values at
once. The parameters carry torch.nn.MultiheadAttention's names (in_proj_weight, in_proj_bias,
q_proj_weight, k_proj_weight, v_proj_weight, out_proj) so that weights move between the two unchanged.
The projections compute in their inputs' dtype: a module that computes in another dtype than its weights'
(MultiHeadAttention's compute_dtype) casts its inputs once, and the weights follow, differentiably.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .cache import LayerCache
from .checks import positive_int, probability
from .functional import attention, attention_weights
from .masks import Predicate, ScoreModifier
from .positions import Rotary
from .trace import record, tracing

Projection = tuple[torch.Tensor, torch.Tensor | None]  # a weight and its bias (None: no bias)


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
        q_width = self.num_heads * self.head_dim  # Hq·Dh
        kv_width = self.num_kv_heads * self.head_dim  # Hkv·Dh
        self._split = [q_width, kv_width, kv_width]
        self._qkv_same_embed_dim = self.kdim == self.embed_dim and self.vdim == self.embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(
                torch.empty(sum(self._split), self.embed_dim, device=device, dtype=dtype)
            )
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(
                torch.empty(q_width, self.embed_dim, device=device, dtype=dtype)
            )
            self.k_proj_weight = nn.Parameter(torch.empty(kv_width, self.kdim, device=device, dtype=dtype))
            self.v_proj_weight = nn.Parameter(torch.empty(kv_width, self.vdim, device=device, dtype=dtype))
            self.register_parameter("in_proj_weight", None)
        if bias if qkv_bias is None else qkv_bias:
            self.in_proj_bias = nn.Parameter(torch.empty(sum(self._split), device=device, dtype=dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        # Hq·Dh -> out_dim
        self.out_proj = self.out_proj_class(q_width, self.out_dim, bias=bias, device=device, dtype=dtype)
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

    def projections(self, dtype: torch.dtype | None = None) -> tuple[Projection, Projection, Projection]:
        """((W_q, b_q), (W_k, b_k), (W_v, b_v)): W_q (Hq·Dh, D), W_k (Hkv·Dh, kdim), W_v (Hkv·Dh, vdim),
        biases (Hq·Dh,), (Hkv·Dh,), (Hkv·Dh,) or None; views of the parameters (cast to `dtype` if given),
        so gradients flow. TorchScript compiles it (compat's scripted forward)."""
        fused, w_q, w_k, w_v = self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        if fused is not None:
            w_q, w_k, w_v = _cast(fused, dtype).split(self._split)  # W_q, W_k, W_v stacked in one matrix
        assert w_q is not None and w_k is not None and w_v is not None  # for TorchScript's types
        b_q, b_k, b_v, bias = None, None, None, self.in_proj_bias
        if bias is not None:
            b_q, b_k, b_v = _cast(bias, dtype).split(self._split)
        return (_cast(w_q, dtype), b_q), (_cast(w_k, dtype), b_k), (_cast(w_v, dtype), b_v)

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
        keys (B, Nk, Hkv·Dh), values (B, Nk, Hkv·Dh), in query's dtype (the weights cast to it). Eager and
        TorchScript (compat's scripted forward) alike; the trace records outside TorchScript only."""
        self_attention = key is query and value is query
        if not torch.jit.is_scripting():
            record("inputs", query)
            if not self_attention:
                record("kv_inputs", key)
        fused = self.in_proj_weight
        if fused is not None and self_attention:
            # One fused projection makes all heads' queries, keys and values at once.
            weight, in_bias = _cast(fused, query.dtype), self.in_proj_bias
            bias = None if in_bias is None else _cast(in_bias, query.dtype)
            # (B, N, Hq·Dh), 2 × (B, N, Hkv·Dh), from (B, N, (Hq + 2·Hkv)·Dh)
            queries, keys, values = F.linear(query, weight, bias).split(self._split, dim=-1)
        else:
            (w_q, b_q), (w_k, b_k), (w_v, b_v) = self.projections(query.dtype)
            queries = F.linear(query, w_q, b_q)  # (B, Nq, Hq·Dh)
            keys = F.linear(key, w_k, b_k)  # (B, Nk, Hkv·Dh)
            values = F.linear(value, w_v, b_v)  # (B, Nk, Hkv·Dh)
        if not torch.jit.is_scripting():
            record("queries", queries)
            record("keys", keys)
            record("values", values)
        return queries, keys, values

    def _project_out(self, context: torch.Tensor) -> torch.Tensor:
        """context (B, Nq, Hq·Dh) -> output (B, Nq, out_dim) by out_proj, in context's dtype: out_proj
        itself in its own dtype (a quantised or replaced out_proj keeps working), its weights cast else."""
        weight, bias = self.out_proj.weight, self.out_proj.bias
        if context.dtype == weight.dtype:
            return self.out_proj(context)
        return F.linear(context, weight.to(context.dtype), None if bias is None else bias.to(context.dtype))

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
        # (B, Hq, Nq, Dh), and (B, Hq, Nq, Nk) when attention returned the weights
        context_by_head, weights = result if isinstance(result, tuple) else (result, None)
        if weights_apart:
            weights = _weights(q, k, mask, causal, score_mod, average_attn_weights)
        context = context_by_head.transpose(1, 2).flatten(2)  # (B, Nq, Hq·Dh): heads side by side
        record("context", context)
        output = self._project_out(context)  # (B, Nq, out_dim)
        record("output", output)
        if weights is not None and average_attn_weights and not weights_apart:
            weights = weights.mean(dim=1)  # (B, Nq, Nk)
        return output, weights


def _cast(parameter: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """A parameter in `dtype` (a differentiable copy), itself when it has it or dtype is None."""
    return parameter if dtype is None else parameter.to(dtype)


def _weights(
    q: torch.Tensor,
    k: torch.Tensor,
    mask: torch.Tensor | Predicate | None,
    causal: bool,
    score_mod: ScoreModifier | None,
    average: bool,
) -> torch.Tensor:
    """The softmax weights of q (B, Hq, Nq, Dh) against k (B, Hkv, Nk, Dh): averaged over heads
    (B, Nq, Nk), computed one head at a time, or per head (B, Hq, Nq, Nk)."""
    weights_of = functools.partial(attention_weights, q, k, mask=mask, causal=causal, score_mod=score_mod)
    if not average:
        return weights_of().to(q.dtype)  # (B, Hq, Nq, Nk)
    heads = q.shape[1]
    total = weights_of(heads=[0])  # (B, 1, Nq, Nk), then the other heads added
    for h in range(1, heads):
        total = total + weights_of(heads=[h])
    return (total / heads)[:, 0].to(q.dtype)  # (B, Nq, Nk)
