"""A drop-in for torch.nn.MultiheadAttention, computed by headwise.

Same constructor and forward signatures, defaults, mask polarity (True = blocked), state_dict keys and
results (outputs, returned weights and gradients match torch's in float64). The masks are converted to
headwise's polarity (True = may attend) here, at the edge, and nowhere else.

Where it differs from torch, on purpose:
- a query whose keys are all masked gets zeros, where torch returns NaN (with need_weights=True);
- `is_causal=True` applies a causal mask itself (bottom-right aligned) and combines it with `attn_mask`,
  where torch requires `attn_mask` and treats is_causal as an unchecked hint about it. The results agree
  when attn_mask is the square causal mask, with one exception in torch: with bias_k or add_zero_attn,
  need_weights=False and no key_padding_mask, torch follows the hint with a top-left causal mask over the
  S + 1 keys and hides the appended key, where its need_weights=True path (and compat) keep it visible.
"""

from __future__ import annotations

import torch
from torch import nn

from .masks import causal_mask, check_mask, combine
from .modules import AttentionProjections


class MultiheadAttention(AttentionProjections):
    """torch.nn.MultiheadAttention's interface. Inputs are (L, B, E) unless batch_first=True."""

    # torch.nn.TransformerEncoderLayer's inference fast path calls self_attn.merge_masks and then runs torch's
    # fused kernel on this module's weights; torch's own method keeps that path working unchanged.
    merge_masks = nn.MultiheadAttention.merge_masks

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
            self.bias_k = nn.Parameter(torch.empty(1, 1, self.embed_dim, device=device, dtype=dtype))
            self.bias_v = nn.Parameter(torch.empty(1, 1, self.embed_dim, device=device, dtype=dtype))
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)
        else:
            self.bias_k = self.bias_v = None

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
        batched = self._check_layout(query, key, value)
        self_attention = key is query and value is query

        def batch_first(t: torch.Tensor) -> torch.Tensor:  # -> (B, N, width)
            if not batched:
                return t.unsqueeze(0)  # (1, N, width)
            return t if self.batch_first else t.transpose(0, 1)

        if self_attention:
            query = key = value = batch_first(query)  # (B, L, E), one tensor: the fused projection applies
        else:
            query, key, value = (
                batch_first(query),
                batch_first(key),
                batch_first(value),
            )  # (B, L|S, E|kdim|vdim)
        self._check_inputs(query, key, value)
        batch, num_queries, num_keys = query.shape[0], query.shape[1], key.shape[1]

        mask = self._native_mask(
            key_padding_mask, attn_mask, is_causal, batched, batch, num_queries, num_keys
        )
        queries, keys, values = self._project(query, key, value)  # (B, L, E), (B, S, E), (B, S, E)
        extra = 0
        if self.bias_k is not None:
            keys = torch.cat([keys, self.bias_k.expand(batch, 1, -1)], dim=1)  # (B, S + 1, E)
            values = torch.cat([values, self.bias_v.expand(batch, 1, -1)], dim=1)  # (B, S + 1, E)
            extra += 1
        if self.add_zero_attn:
            keys = torch.cat([keys, keys.new_zeros(batch, 1, keys.shape[-1])], dim=1)  # (B, S' + 1, E)
            values = torch.cat([values, values.new_zeros(batch, 1, values.shape[-1])], dim=1)
            extra += 1
        if mask is not None and extra:
            allowed = torch.ones if mask.dtype == torch.bool else torch.zeros
            added = allowed(*mask.shape[:-1], extra, dtype=mask.dtype, device=mask.device)
            mask = torch.cat([mask, added], dim=-1)  # (.., Nq, S + extra): the added keys are always visible

        output, weights = self._attend(
            queries,
            keys,
            values,
            mask=mask,
            causal=False,
            need_weights=need_weights,
            average_attn_weights=average_attn_weights,
        )  # (B, L, E), weights (B, L, S) or (B, H, L, S)
        if not batched:
            return output.squeeze(0), (None if weights is None else weights.squeeze(0))
        return (output if self.batch_first else output.transpose(0, 1)), weights

    def _check_layout(self, query: object, key: object, value: object) -> bool:
        """Raise TypeError/ValueError unless query, key and value are tensors in torch's layout, all batched
        or all unbatched; return whether they are batched."""
        for name, t, length, width in (
            ("query", query, "L", self.embed_dim),
            ("key", key, "S", self.kdim),
            ("value", value, "S", self.vdim),
        ):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            batched = f"(B, {length}, {width})" if self.batch_first else f"({length}, B, {width})"
            unbatched = f"({length}, {width})"
            if name == "query":
                expected, ranks = f"{batched} or {unbatched} unbatched", (2, 3)
            else:
                expected, ranks = f"{batched if query.dim() == 3 else unbatched} like query", (query.dim(),)
            if t.dim() not in ranks or t.shape[-1] != width:
                raise ValueError(f"{name} must have shape {expected}, got {tuple(t.shape)}")
        return query.dim() == 3

    def _native_mask(
        self,
        key_padding_mask: torch.Tensor | None,
        attn_mask: torch.Tensor | None,
        is_causal: bool,
        batched: bool,
        batch: int,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor | None:
        """torch's masks (True = blocked, or float added) -> one headwise mask (True = may attend, or
        float added), broadcastable to (B, H, L, S)."""
        device, dtype = self.out_proj.weight.device, self.out_proj.weight.dtype
        padding = None
        if key_padding_mask is not None:
            expected = (batch, num_keys) if batched else (num_keys,)  # (B, S) or (S,)
            _check_exact_mask(key_padding_mask, "key_padding_mask", [expected], device)
            padding = key_padding_mask.reshape(batch, 1, 1, num_keys)  # (B, 1, 1, S)
            padding = ~padding if padding.dtype == torch.bool else padding
        blocked = None
        if attn_mask is not None:
            shapes = [(num_queries, num_keys), (batch * self.num_heads, num_queries, num_keys)]
            _check_exact_mask(attn_mask, "attn_mask", shapes, device)  # (L, S) or (B·H, L, S)
            if attn_mask.dim() == 3:
                attn_mask = attn_mask.reshape(batch, self.num_heads, num_queries, num_keys)  # (B, H, L, S)
            blocked = ~attn_mask if attn_mask.dtype == torch.bool else attn_mask
        mask = combine(padding, blocked, dtype)
        if is_causal:
            mask = combine(mask, causal_mask(num_queries, num_keys, device=device), dtype)
        return mask


def _check_exact_mask(mask: object, name: str, shapes: list[tuple[int, ...]], device: torch.device) -> None:
    """torch's rule for its masks: a bool or float tensor on `device` with exactly one of `shapes` (torch does
    not broadcast them)."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if tuple(mask.shape) not in shapes:
        expected = " or ".join(str(shape) for shape in shapes)
        raise ValueError(f"{name} must have shape {expected}, got {tuple(mask.shape)}")
    check_mask(mask, name, tuple(mask.shape), device, true_means="may not attend, torch's polarity")
