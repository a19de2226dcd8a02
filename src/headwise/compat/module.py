"""compat's MultiheadAttention: torch.nn.MultiheadAttention's constructor, parameters and initialisation,
and its forward by two paths: the eager one (the inputs checked in torch's order by checks.py, nested tensors
padded and nested again, the attention by headwise.attention, traced under headwise.trace()) and the one
TorchScript compiles (no checks, nested tensors or trace; the custom ops torch.ops.headwise.attention and,
when the weights are asked for, torch.ops.headwise.attention_with_weights, which take an eager call's
route). Both convert torch's masks (True = blocked) to headwise's polarity (True = may attend) in
_headwise_masks and lay the inputs out batch first.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from .. import script_ops  # noqa: F401  (registers headwise::attention_with_weights for the scripted path)
from ..masks import combine, to_additive
from ..projections import AttentionProjections
from .checks import Sizes, check_layout, check_masks, check_parameter_dtypes, check_ranks
from .errors import TypeRuntimeError, ValueAssertionError, ValueRuntimeError, causal_needs_mask, like_torch
from .nested import forward_nested


class MultiheadAttention(AttentionProjections):
    """torch.nn.MultiheadAttention's interface. Inputs are (L, B, E) unless batch_first=True."""

    __constants__: ClassVar[list[str]] = ["batch_first"]  # as torch's, for TorchScript

    # torch.nn.TransformerEncoderLayer's inference fast path calls self_attn.merge_masks and then runs torch's
    # fused kernel on this module's weights; torch's own method keeps that path working unchanged.
    merge_masks = nn.MultiheadAttention.merge_masks
    # torch's out_proj class, which quantize_dynamic leaves in floating point (the forward reads its weight).
    out_proj_class = NonDynamicallyQuantizableLinear

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        with like_torch(ValueError, ValueAssertionError):  # torch asserts embed_dim % num_heads == 0
            super().__init__(
                embed_dim,
                num_heads,
                num_kv_heads=None,
                head_dim=None,
                kdim=kdim,
                vdim=vdim,
                bias=bias,
                dropout=dropout,
                device=device,
                dtype=dtype,
            )
        self.batch_first = batch_first
        self.add_zero_attn = add_zero_attn
        if add_bias_kv:
            self.bias_k: nn.Parameter | None = nn.Parameter(
                torch.empty(1, 1, self.embed_dim, device=device, dtype=dtype)
            )
            self.bias_v: nn.Parameter | None = nn.Parameter(
                torch.empty(1, 1, self.embed_dim, device=device, dtype=dtype)
            )
        else:
            self.bias_k = self.bias_v = None
        self._reset_bias_kv()

    def _reset_parameters(self) -> None:
        """torch.nn.MultiheadAttention's initialisation, drawing the same random numbers in the same order:
        Xavier-uniform input projections, zero biases, Xavier-normal bias_k and bias_v (out_proj's weight
        keeps its value, as in torch)."""
        self._reset_projections()
        self._reset_bias_kv()

    def _reset_bias_kv(self) -> None:
        """torch's initialisation of bias_k and bias_v: Xavier-normal."""
        if self.bias_k is not None and self.bias_v is not None:  # both, or neither
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As torch.nn.MultiheadAttention.forward.

        Nested tensors: query, key and value all nested (B, ragged L|S, E|kdim|vdim), with batch_first=True
        and no masks; the output is nested like query, the weights padded (B, max L, max S) as torch's are.

        Args:
            query: (L, B, E), or (B, L, E) with batch_first, or unbatched (L, E).
            key, value: (S, B, kdim) and (S, B, vdim), likewise.
            key_padding_mask: (B, S) or (S,) unbatched; bool True = ignore this key, or float added.
            need_weights: also return the attention weights.
            attn_mask: (L, S) or (B·num_heads, L, S); bool True = may not attend, or float added.
            average_attn_weights: average the weights over heads: (B, L, S); else (B, num_heads, L, S).
            is_causal: apply a causal mask (combined with attn_mask if one is given).

        Returns:
            (attn_output shaped like query, weights or None); S counts the bias_k and zero-attention keys.
        """
        if torch.jit.is_scripting():
            return self._scripted_forward(
                query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
            )
        return self._eager_forward(
            query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
        )

    @torch.jit.unused
    def _eager_forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        need_weights: bool,
        attn_mask: torch.Tensor | None,
        average_attn_weights: bool,
        is_causal: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """forward() in Python: the inputs checked, nested tensors accepted, the attention by
        headwise.attention (traced under headwise.trace())."""
        sizes = Sizes(self.embed_dim, self.kdim, self.vdim, self.num_heads, self.batch_first)
        check_ranks(sizes, query, key, value, key_padding_mask, attn_mask)
        if query.is_nested or key.is_nested or value.is_nested:
            return forward_nested(
                self.forward, self.batch_first, query, key, value, key_padding_mask, attn_mask,
                need_weights=need_weights, average_attn_weights=average_attn_weights, is_causal=is_causal,
            )  # fmt: skip
        batched = check_layout(sizes, query, key, value)
        if is_causal and attn_mask is None:
            raise ValueRuntimeError(causal_needs_mask())
        if key is query and value is query:  # one tensor, so that the fused projection applies
            query = key = value = self._to_batch_first(query, batched)  # (B, L, E)
        else:
            query, key, value = (
                self._to_batch_first(t, batched) for t in (query, key, value)
            )  # (B, L|S, ..)
        # Left to check: query's batch size against key's, and the dtypes, which torch finds in its reshapes
        # and matmuls (RuntimeError).
        with like_torch(ValueError, ValueRuntimeError), like_torch(TypeError, TypeRuntimeError):
            self._check_inputs(query, key, value)
        check_parameter_dtypes(self.named_parameters(), self.out_proj.weight)
        batch, num_queries, num_keys = query.shape[0], query.shape[1], key.shape[1]
        device = self.out_proj.weight.device
        check_masks(sizes, key_padding_mask, attn_mask, batched, batch, num_queries, num_keys, device)
        parts = self._headwise_masks(key_padding_mask, attn_mask, is_causal, batch, num_queries, num_keys)
        mask = None
        for part in parts:
            mask = combine(mask, part, query.dtype)  # broadcastable to (B, H, L, S)
        queries, keys, values = self._project(query, key, value)  # (B, L, E), (B, S, E), (B, S, E)
        keys, values, mask = self._append_keys(keys, values, mask)  # (B, S', E) twice, (.., L, S')
        output, weights = self._attend(
            queries,
            keys,
            values,
            mask=mask,
            causal=False,
            need_weights=need_weights,
            average_attn_weights=average_attn_weights,
        )  # (B, L, E), weights (B, L, S') or (B, H, L, S')
        return self._from_batch_first(output, weights, batched)

    def _scripted_forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        need_weights: bool,
        attn_mask: torch.Tensor | None,
        average_attn_weights: bool,
        is_causal: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """forward() as TorchScript runs it, without the checks, nested tensors and the trace: the attention
        by the custom ops torch.ops.headwise.attention and, when the weights are asked for,
        torch.ops.headwise.attention_with_weights (headwise.script_ops): headwise's backends, chosen and
        run by the route of an eager call."""
        if is_causal and attn_mask is None:
            raise RuntimeError(causal_needs_mask())
        batched = query.dim() == 3
        if key is query and value is query:  # one tensor, so that the fused projection applies
            query = self._to_batch_first(query, batched)  # (B, L, E)
            key = value = query
        else:
            query = self._to_batch_first(query, batched)  # (B, L, E)
            key = self._to_batch_first(key, batched)  # (B, S, kdim)
            value = self._to_batch_first(value, batched)  # (B, S, vdim)
        batch, num_queries, num_keys = query.shape[0], query.shape[1], key.shape[1]
        parts = self._headwise_masks(key_padding_mask, attn_mask, is_causal, batch, num_queries, num_keys)
        mask: torch.Tensor | None = None
        for part in parts:
            additive = to_additive(part, query.dtype)
            mask = additive if mask is None else mask + additive  # broadcastable to (B, H, L, S)
        queries, keys, values = self._project(query, key, value)  # (B, L, E), (B, S, E) twice
        keys, values, mask = self._append_keys(keys, values, mask)  # (B, S', E) twice, (.., L, S')
        q = queries.view(batch, num_queries, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, Dh)
        k = keys.view(batch, keys.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, S', Dh)
        v = values.view(batch, keys.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, S', Dh)
        scale = 1.0 / math.sqrt(self.head_dim)
        dropout_p = self.dropout if self.training else 0.0
        weights: torch.Tensor | None = None
        inputs_need_grad = q.requires_grad or k.requires_grad or v.requires_grad
        differentiated = torch.is_grad_enabled() and inputs_need_grad
        if need_weights:  # headwise.script_ops: the route of an eager call, with its weights
            context, by_head, _ = torch.ops.headwise.attention_with_weights(
                q, k, v, mask, scale, dropout_p, differentiated
            )  # (B, H, L, Dh), (B, H, L, S')
            weights = by_head.mean(dim=1) if average_attn_weights else by_head  # (B, L, S') or (B, H, L, S')
        else:
            context = torch.ops.headwise.attention(
                q, k, v, mask, False, scale, dropout_p, "auto", differentiated
            )[0]  # (B, H, L, Dh)
        context = context.transpose(1, 2).reshape(batch, num_queries, self.embed_dim)  # (B, L, H·Dh)
        output = self.out_proj(context)  # (B, L, E)
        return self._from_batch_first(output, weights, batched)

    def _to_batch_first(self, t: torch.Tensor, batched: bool) -> torch.Tensor:
        """An input in torch's layout -> (B, N, width)."""
        if not batched:
            return t.unsqueeze(0)  # (1, N, width)
        return t if self.batch_first else t.transpose(0, 1)

    def _from_batch_first(
        self, output: torch.Tensor, weights: torch.Tensor | None, batched: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """output (B, L, E) and weights (B, [H,] L, S) -> in torch's layout, like the query. In memory the
        output is (L, B, E) as torch's is (batch first, a transposed view of it), so that what follows draws
        the same random numbers: a dropout fills its mask in memory order (a TransformerEncoderLayer in
        training gave other outputs than torch's from the same seed)."""
        if not batched:
            return output.squeeze(0), (None if weights is None else weights.squeeze(0))
        seq_first = output.transpose(0, 1).contiguous()  # (L, B, E), contiguous as torch's
        return (seq_first.transpose(0, 1) if self.batch_first else seq_first), weights

    def _append_keys(
        self, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """keys and values (B, S, E) with bias_k/bias_v and the zero-attention key appended (B, S', E), and
        the mask (.., L, S) widened to (.., L, S'): the appended keys are always visible."""
        batch, extra = keys.shape[0], 0
        bias_k, bias_v = self.bias_k, self.bias_v
        if bias_k is not None and bias_v is not None:
            keys = torch.cat([keys, bias_k.expand(batch, 1, -1)], dim=1)  # (B, S + 1, E)
            values = torch.cat([values, bias_v.expand(batch, 1, -1)], dim=1)  # (B, S + 1, E)
            extra += 1
        if self.add_zero_attn:
            keys = torch.cat([keys, keys.new_zeros(batch, 1, keys.shape[-1])], dim=1)  # (B, S' + 1, E)
            values = torch.cat([values, values.new_zeros(batch, 1, values.shape[-1])], dim=1)
            extra += 1
        if mask is not None and extra > 0:
            shape = list(mask.shape[:-1]) + [extra]  # noqa: RUF005 - TorchScript has no starred expressions
            added = torch.zeros(shape, dtype=mask.dtype, device=mask.device)  # (.., L, extra)
            mask = torch.cat([mask, ~added if mask.dtype == torch.bool else added], dim=-1)  # (.., L, S')
        return keys, values, mask

    def _headwise_masks(
        self,
        key_padding_mask: torch.Tensor | None,
        attn_mask: torch.Tensor | None,
        is_causal: bool,
        batch: int,
        num_queries: int,
        num_keys: int,
    ) -> list[torch.Tensor]:
        """torch's masks (True = blocked, or float added) in headwise's polarity (True = may attend, or
        float added), each broadcastable to (B, H, L, S): the padding (B, 1, 1, S), attn_mask (L, S) or
        (B, H, L, S), the causal mask (L, S) aligned bottom-right."""
        masks: list[torch.Tensor] = []
        if key_padding_mask is not None:
            padding = key_padding_mask.reshape(batch, 1, 1, num_keys)  # (B, 1, 1, S)
            masks.append(~padding if padding.dtype == torch.bool else padding)
        if attn_mask is not None:
            if attn_mask.dim() == 3:
                attn_mask = attn_mask.reshape(batch, self.num_heads, num_queries, num_keys)  # (B, H, L, S)
            masks.append(~attn_mask if attn_mask.dtype == torch.bool else attn_mask)
        if is_causal:
            device = self.out_proj.weight.device
            causal = torch.ones(num_queries, num_keys, dtype=torch.bool, device=device)
            masks.append(causal.tril(num_keys - num_queries))  # (L, S): query i sees keys j <= i + S - L
        return masks
