"""A drop-in for torch.nn.MultiheadAttention, computed by headwise.

Same constructor and forward signatures, defaults, mask polarity (True = blocked), state_dict keys and
results (outputs, returned weights and gradients match torch's in float64). The masks are converted to
headwise's polarity (True = may attend) here, at the edge, and nowhere else.

`is_causal=True` needs `attn_mask`, as in torch (the same RuntimeError and words without one). torch
treats it as an unchecked hint that attn_mask is causal; compat applies a causal mask (bottom-right aligned)
itself and combines it with attn_mask. The results agree when attn_mask is the square causal mask, with one
exception in torch: with bias_k or add_zero_attn, need_weights=False and no key_padding_mask, torch follows
the hint with a top-left causal mask over the S + 1 keys and hides the appended key, where its
need_weights=True path (and compat) keep it visible.

Where it differs from torch, on purpose:
- a query whose keys are all masked gets zeros, where torch returns NaN (with need_weights=True);
- nested tensors (batch first, ragged lengths) are accepted wherever torch accepts them (its inference fast
  path) and also in training and for cross-attention: they are padded, the padding masked, and the output
  nested again. torch takes them only without masks, and so does compat; is_causal (there without
  attn_mask, which nested tensors cannot take) only where each query sequence is as long as its keys (a
  padded batch would align the causal diagonal to the longest).
- torch.nn.MultiheadAttention's own fused kernel (torch._native_multi_head_attention, its inference fast
  path) is never called: compat always computes with headwise.

Invalid shapes are refused in torch's order and with torch's words first (its ranks check: "For batched
(3-D) `query`, expected `key` and `value` to be 3-D but found ..."), then headwise's account of the shape
expected and the one received.

Errors a torch user catches are caught: each error compat raises for an input that torch also refuses is an
instance of torch's exception class for it as well as of headwise's usual one (ValueError, TypeError), e.g.
ValueAssertionError for a query of the wrong shape, ValueRuntimeError for an attn_mask of the wrong shape.

TorchScript: `torch.jit.script` compiles forward's scripted path (no checks, no nested tensors, no trace),
where the attention is the custom op torch.ops.headwise.attention (headwise's backends, chosen as in an
eager call), or the reference's steps when the weights are asked for; `import headwise` before
`torch.jit.load` registers the op. Dynamic quantization: out_proj is torch's NonDynamicallyQuantizableLinear,
which `torch.ao.quantization.quantize_dynamic` leaves in floating point, as in torch's module.

When torch does not call this module at all: torch.nn.TransformerEncoderLayer (and TransformerEncoder) in
eval mode, with no gradient needed, runs its own fused kernel (torch._transformer_encoder_layer_fwd) on this
module's weights instead of calling it, whenever its fast path conditions hold: torch.backends.mha's fast
path enabled, a batched (3-D) src, batch_first=True, bias=True, kdim = vdim = embed_dim, an even num_heads,
a relu or gelu activation, norm1.eps == norm2.eps, no autocast, no forward hooks or pre-hooks on the layer
or its submodules, src and the weights on cpu, cuda, xpu or a privateuse1 device, and (for a nested src)
no masks. The results are then torch's: NaN for a query whose keys are all masked.
`torch.backends.mha.set_fastpath_enabled(False)` makes every layer call compat; a forward hook on the layer
(or its self_attn) does too, for that layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from ..backends.reference import softmax_over_keys
from ..masks import check_mask, combine, to_additive
from ..projections import AttentionProjections


class ValueAssertionError(ValueError, AssertionError):
    """A ValueError where torch.nn.MultiheadAttention raises AssertionError (wrong query, key or value shape,
    wrong key_padding_mask shape, embed_dim not divisible by num_heads)."""


class ValueRuntimeError(ValueError, RuntimeError):
    """A ValueError where torch raises RuntimeError (an attn_mask of the wrong 2-D or 3-D shape; query and
    key of different batch sizes)."""


class TypeAssertionError(TypeError, AssertionError):
    """A TypeError where torch raises AssertionError (a mask neither bool nor floating, e.g. uint8)."""


class TypeRuntimeError(TypeError, RuntimeError):
    """A TypeError where torch raises RuntimeError (inputs of another dtype than the weights)."""


class TypeAttributeError(TypeError, AttributeError):
    """A TypeError where torch raises AttributeError (a query, key or value that is not a tensor)."""


@contextmanager
def _like_torch(ours: type[Exception], twin: type[Exception]) -> Iterator[None]:
    """Re-raise an `ours` error of the block as `twin`, its subclass that is also torch's class for the same
    input, with the same message and traceback."""
    try:
        yield
    except ours as error:
        if isinstance(error, twin):
            raise
        raise twin(*error.args).with_traceback(error.__traceback__) from None


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
        with _like_torch(ValueError, ValueAssertionError):  # torch asserts embed_dim % num_heads == 0
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
        if self.bias_k is not None:
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

        Args:
            query: (L, B, E), or (B, L, E) with batch_first, or unbatched (L, E).
            key, value: (S, B, kdim) and (S, B, vdim), likewise.
            key_padding_mask: (B, S) or (S,) unbatched; bool True = ignore this key, or float added.
            need_weights: also return the attention weights.
            attn_mask: (L, S) or (B·num_heads, L, S); bool True = may not attend, or float added.
            average_attn_weights: average the weights over heads: (B, L, S); else (B, num_heads, L, S).
            is_causal: apply a causal mask (combined with attn_mask if one is given).

            Nested tensors: query, key and value all nested (B, ragged L|S, E|kdim|vdim), with
            batch_first=True and no masks; the output is nested like query, the weights padded
            (B, max L, max S) as torch's are.

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
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, torch.Tensor):
                raise TypeAttributeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        self._check_ranks(query, key, value, key_padding_mask, attn_mask)
        if query.is_nested or key.is_nested or value.is_nested:
            return self._forward_nested(
                query, key, value, key_padding_mask, attn_mask, need_weights=need_weights,
                average_attn_weights=average_attn_weights, is_causal=is_causal,
            )  # fmt: skip
        batched = self._check_layout(query, key, value)
        if is_causal and attn_mask is None:
            raise ValueRuntimeError(_causal_needs_mask())
        if key is query and value is query:  # one tensor, so that the fused projection applies
            query = key = value = self._to_batch_first(query, batched)  # (B, L, E)
        else:
            query, key, value = (
                self._to_batch_first(t, batched) for t in (query, key, value)
            )  # (B, L|S, ..)
        # Left to check: query's batch size against key's, and the dtypes, which torch finds in its reshapes
        # and matmuls (RuntimeError).
        with _like_torch(ValueError, ValueRuntimeError), _like_torch(TypeError, TypeRuntimeError):
            self._check_inputs(query, key, value)
        self._check_parameter_dtypes()
        batch, num_queries, num_keys = query.shape[0], query.shape[1], key.shape[1]
        self._check_masks(key_padding_mask, attn_mask, batched, batch, num_queries, num_keys)
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
        by the custom op torch.ops.headwise.attention (headwise's backends, chosen as in an eager call) or,
        when the weights are asked for, by the reference's steps (scores, softmax_over_keys, dropout,
        weights · values)."""
        if is_causal and attn_mask is None:
            raise RuntimeError(_causal_needs_mask())
        batched = query.dim() == 3
        query = self._to_batch_first(query, batched)  # (B, L, E)
        key, value = self._to_batch_first(key, batched), self._to_batch_first(value, batched)  # (B, S, ..)
        batch, num_queries, num_keys = query.shape[0], query.shape[1], key.shape[1]
        parts = self._headwise_masks(key_padding_mask, attn_mask, is_causal, batch, num_queries, num_keys)
        mask: torch.Tensor | None = None
        for part in parts:
            additive = to_additive(part, query.dtype)
            mask = additive if mask is None else mask + additive  # broadcastable to (B, H, L, S)
        queries, keys, values = self._scripted_project(query, key, value)  # (B, L, E), (B, S, E) twice
        keys, values, mask = self._append_keys(keys, values, mask)  # (B, S', E) twice, (.., L, S')
        q = queries.view(batch, num_queries, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, Dh)
        k = keys.view(batch, keys.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, S', Dh)
        v = values.view(batch, keys.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, S', Dh)
        scale = 1.0 / math.sqrt(self.head_dim)
        dropout_p = self.dropout if self.training else 0.0
        weights: torch.Tensor | None = None
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, L, S')
            by_head = softmax_over_keys(scores if mask is None else scores + mask)  # (B, H, L, S')
            if dropout_p > 0.0:
                by_head = F.dropout(by_head, p=dropout_p)
            context = by_head @ v  # (B, H, L, Dh)
            weights = by_head.mean(dim=1) if average_attn_weights else by_head  # (B, L, S') or (B, H, L, S')
        else:
            inputs_need_grad = q.requires_grad or k.requires_grad or v.requires_grad
            differentiated = torch.is_grad_enabled() and inputs_need_grad
            context = torch.ops.headwise.attention(
                q, k, v, mask, False, scale, dropout_p, "auto", differentiated
            )[0]  # (B, H, L, Dh)
        context = context.transpose(1, 2).reshape(batch, num_queries, self.embed_dim)  # (B, L, H·Dh)
        output = self.out_proj(context)  # (B, L, E)
        return self._from_batch_first(output, weights, batched)

    def _scripted_project(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """_project for TorchScript, without the trace: query (B, L, E), key (B, S, kdim), value (B, S, vdim)
        -> queries, keys, values (B, L|S, E), each by its own part of the weights."""
        w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        in_proj_weight, in_proj_bias = self.in_proj_weight, self.in_proj_bias
        if in_proj_weight is not None:
            w_q, w_k, w_v = in_proj_weight.split(self._split)  # W_q, W_k, W_v stacked in one matrix
        b_q, b_k, b_v = None, None, None
        if in_proj_bias is not None:
            b_q, b_k, b_v = in_proj_bias.split(self._split)
        assert w_q is not None and w_k is not None and w_v is not None  # for TorchScript's types
        return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

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

    def _forward_nested(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        attn_mask: torch.Tensor | None,
        **options: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """forward() for nested query (B, ragged L, E), key (B, ragged S, kdim), value (B, ragged S, vdim):
        each padded to its longest sequence, the padded keys masked, the padded queries cut from the output
        (nested like query); the weights stay padded, (B, max L, max S) or (B, H, max L, max S)."""
        if not (query.is_nested and key.is_nested and value.is_nested):
            raise ValueAssertionError(
                "query, key and value must be all nested tensors or none, got "
                f"is_nested = {query.is_nested}, {key.is_nested}, {value.is_nested}"
            )
        if not self.batch_first:
            raise ValueAssertionError(
                "nested tensors need batch_first=True (a nested tensor's first dimension is the batch), "
                "got a module with batch_first=False"
            )
        for name, mask in (("key_padding_mask", key_padding_mask), ("attn_mask", attn_mask)):
            if mask is not None:
                raise ValueAssertionError(
                    f"{name} must be None with nested tensors, which carry their own padding (as in torch), "
                    f"got a mask of shape {tuple(mask.shape)}"
                )
        if options["is_causal"] and [len(t) for t in query.unbind()] != [len(t) for t in key.unbind()]:
            raise ValueAssertionError(
                "is_causal with nested tensors needs each query sequence as long as its key sequence: the "
                "causal diagonal of a padded batch would be aligned to the longest sequences, not to each"
            )
        # One padded tensor per distinct input, so that self-attention keeps its fused projection.
        padded = {id(t): t.to_padded_tensor(0.0) for t in (query, key, value)}
        padded_query, padded_key = padded[id(query)], padded[id(key)]  # (B, max L, E), (B, max S, kdim)
        query_padding = _padding(query, padded_query.shape[1])  # (B, max L), True = padding
        key_padding = _padding(key, padded_key.shape[1])  # (B, max S)
        causal = None  # with each query sequence as long as its keys: the square causal mask (max L, max L)
        if options["is_causal"]:
            causal = torch.ones(
                padded_query.shape[1], padded_key.shape[1], dtype=torch.bool, device=query.device
            )
            causal = causal.triu(1)  # (max L, max S): True = blocked, torch's polarity
        output, weights = self.forward(
            padded_query,
            padded_key,
            padded[id(value)],
            key_padding_mask=key_padding,
            attn_mask=causal,
            **options,
        )  # (B, max L, E), weights (B, [H,] max L, max S) or None
        lengths = (~query_padding).sum(dim=1).tolist()
        rows = [row[:length] for row, length in zip(output, lengths, strict=True)]  # B × (L_b, E)
        if weights is not None:  # the padded queries' rows are zeros, as in torch
            padded_rows = query_padding[:, None, :, None] if weights.dim() == 4 else query_padding[..., None]
            weights = weights.masked_fill(padded_rows, 0.0)
        return torch.nested.as_nested_tensor(rows, layout=query.layout), weights

    def _check_ranks(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: object,
        attn_mask: object,
    ) -> None:
        """torch's first checks (its _mha_shape_check), in its order and its words, each followed by
        headwise's account: the ranks of query, key, value and the masks, and the shape of an unbatched 3-D
        attn_mask. Each a ValueAssertionError (torch asserts)."""
        if query.dim() not in (2, 3):
            raise ValueAssertionError(
                "query should be unbatched 2D or batched 3D tensor but received "
                f"{query.dim()}-D query tensor; query must have shape {self._layout('query', 3)} or "
                f"{self._layout('query', 2)} unbatched, got {_shape(query)}"
            )
        rank = query.dim()
        kind = "For batched (3-D) `query`" if rank == 3 else "For unbatched (2-D) `query`"
        if key.dim() != rank or value.dim() != rank:
            raise ValueAssertionError(
                f"{kind}, expected `key` and `value` to be {rank}-D but found {key.dim()}-D and "
                f"{value.dim()}-D tensors respectively; key and value must have shapes "
                f"{self._layout('key', rank)} and {self._layout('value', rank)} like query, got "
                f"{_shape(key)} and {_shape(value)}"
            )
        padding_rank = rank - 1  # (B, S) or (S,)
        if isinstance(key_padding_mask, torch.Tensor) and key_padding_mask.dim() != padding_rank:
            raise ValueAssertionError(
                f"{kind}, expected `key_padding_mask` to be `None` or {padding_rank}-D but found "
                f"{key_padding_mask.dim()}-D tensor instead; key_padding_mask must have shape "
                f"{'(B, S)' if rank == 3 else '(S,)'}, got {_shape(key_padding_mask)}"
            )
        if not isinstance(attn_mask, torch.Tensor):
            return
        if attn_mask.dim() not in (2, 3):
            raise ValueAssertionError(
                f"{kind}, expected `attn_mask` to be `None`, 2-D or 3-D but found {attn_mask.dim()}-D "
                f"tensor instead; attn_mask must have shape (L, S) or (B·num_heads, L, S), got "
                f"{_shape(attn_mask)}"
            )
        expected = (self.num_heads, query.shape[0], key.shape[0])  # unbatched: (num_heads, L, S)
        if rank == 2 and attn_mask.dim() == 3 and tuple(attn_mask.shape) != expected:
            raise ValueAssertionError(
                f"Expected `attn_mask` shape to be {expected} but got {attn_mask.shape}; an unbatched "
                "attn_mask has shape (L, S) or (num_heads, L, S)"
            )

    def _layout(self, name: str, rank: int) -> str:
        """The shape torch's layout gives `name` ("query", "key" or "value") batched (rank 3) or not."""
        length, width = {"query": ("L", self.embed_dim), "key": ("S", self.kdim), "value": ("S", self.vdim)}[
            name
        ]
        if rank == 2:
            return f"({length}, {width})"
        return f"(B, {length}, {width})" if self.batch_first else f"({length}, B, {width})"

    def _check_parameter_dtypes(self) -> None:
        """A TypeRuntimeError unless every parameter has the weights' dtype. torch computes with an
        in_proj_bias of another dtype only batch first (its projection of a transposed input adds the bias
        with type promotion) and raises RuntimeError for the same module sequence first; compat refuses both,
        saying which parameter."""
        weight = self.out_proj.weight
        for name, parameter in self.named_parameters():
            if parameter.dtype != weight.dtype:
                raise TypeRuntimeError(
                    f"{name} has dtype {parameter.dtype} but the module's weights are {weight.dtype}; "
                    f"convert it, e.g. module.to({weight.dtype})"
                )

    def _check_layout(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> bool:
        """Raise ValueAssertionError unless query, key and value (of ranks _check_ranks let through) have the
        module's widths, key and value the same length and batch size; return whether they are batched."""
        for name, t, width in (
            ("query", query, self.embed_dim),
            ("key", key, self.kdim),
            ("value", value, self.vdim),
        ):
            if t.shape[-1] != width:
                expected = self._layout(name, query.dim())
                like = "" if name == "query" else " like query"
                raise ValueAssertionError(f"{name} must have shape {expected}{like}, got {tuple(t.shape)}")
        if key.shape[:-1] != value.shape[:-1]:
            raise ValueAssertionError(
                "key and value must have the same length S (and batch size B), got shapes "
                f"{tuple(key.shape)} and {tuple(value.shape)}"
            )
        return query.dim() == 3

    def _check_masks(
        self,
        key_padding_mask: object,
        attn_mask: object,
        batched: bool,
        batch: int,
        num_queries: int,
        num_keys: int,
    ) -> None:
        """torch's rules for its masks, with torch's exception classes (see _check_exact_mask)."""
        device = self.out_proj.weight.device
        if key_padding_mask is not None:
            expected = (batch, num_keys) if batched else (num_keys,)  # (B, S) or (S,)
            _check_exact_mask(key_padding_mask, "key_padding_mask", [expected], device)
        if attn_mask is not None:
            shapes = [(num_queries, num_keys), (batch * self.num_heads, num_queries, num_keys)]
            # torch asserts the rank and an unbatched 3-D mask's sizes, and checks the others' sizes with
            # RuntimeError.
            runtime_ranks = (2, 3) if batched else (2,)
            _check_exact_mask(attn_mask, "attn_mask", shapes, device, runtime_ranks)  # (L, S) or (B·H, L, S)

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


def _causal_needs_mask() -> str:
    """torch's words (torch.nn.functional.multi_head_attention_forward) for is_causal without attn_mask; a
    function, since TorchScript takes no global string."""
    return (
        "Need attn_mask if specifying the is_causal hint. You may use the Transformer module method "
        "`generate_square_subsequent_mask` to create this mask."
    )


def _shape(t: torch.Tensor) -> str:
    """t's shape for a message; a nested tensor's ragged sizes have none, so only its rank."""
    return f"a {t.dim()}-D nested tensor" if t.is_nested else str(tuple(t.shape))


def _padding(nested: torch.Tensor, length: int) -> torch.Tensor:
    """(B, length) bool, True where the sequences of `nested` (B, ragged N, width) are padded to `length`."""
    lengths = torch.tensor([len(t) for t in nested.unbind()], device=nested.device)  # (B,)
    return torch.arange(length, device=nested.device) >= lengths[:, None]


def _check_exact_mask(
    mask: object,
    name: str,
    shapes: list[tuple[int, ...]],
    device: torch.device,
    runtime_ranks: tuple[int, ...] = (),
) -> None:
    """torch's rule for its masks: a bool or float tensor on `device` with exactly one of `shapes` (torch does
    not broadcast them). A mask of the wrong shape is a ValueRuntimeError if its rank is in `runtime_ranks`
    (where torch checks the sizes with RuntimeError), else a ValueAssertionError (torch asserts)."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if tuple(mask.shape) not in shapes:
        expected = " or ".join(str(shape) for shape in shapes)
        error = ValueRuntimeError if mask.dim() in runtime_ranks else ValueAssertionError
        raise error(f"{name} must have shape {expected}, got {tuple(mask.shape)}")
    with _like_torch(TypeError, TypeAssertionError):  # torch asserts a bool or floating dtype
        check_mask(mask, name, tuple(mask.shape), device, true_means="may not attend, torch's polarity")
