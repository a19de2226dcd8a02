"""The layers of a transformer, in the order the data flows through them.

    token ids (B, N) -> Embeddings: token vectors (+ position vectors) (B, N, D)
    EncoderLayer: self-attention, then a position-wise FeedForward, each a residual block (B, N, D)
    DecoderLayer: masked self-attention, cross-attention into the encoder's output (when there is an
        encoder), then a FeedForward (B, N, D)

Each residual block is post-norm (x = norm(x + sublayer(x)), as in "Attention Is All You Need" and BERT) or
pre-norm (x = x + sublayer(norm(x)), as in GPT-2 and most models since), as the TransformerConfig says.
The parameter names follow the roles (self_attn, cross_attn, feed_forward and their norms).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..cache import KVCache
from ..checks import positive_int
from ..modules import MultiHeadAttention
from ..positions import LearnedPositions, Rotary, SinusoidalPositions, alibi_positions, check_length
from .config import ACTIVATIONS, TransformerConfig, check_activation


@dataclass
class LayerOutput:
    """A layer's output (B, N, D) and, when asked, its attention weights per head: self-attention
    (B, Hq, N, Nk) and, in a decoder layer, cross-attention (B, Hq, N, Ns)."""

    hidden: torch.Tensor
    self_attention: torch.Tensor | None = None
    cross_attention: torch.Tensor | None = None


class FeedForward(nn.Module):
    """The position-wise feed-forward network, (B, N, D) -> (B, N, D):
    linear2(dropout(activation(linear1(x))))."""

    def __init__(
        self, d_model: int, d_ff: int, *, activation: str = "relu", dropout: float = 0.0, bias: bool = True
    ) -> None:
        super().__init__()
        self.activation_name = check_activation(activation)
        self.activation = ACTIVATIONS[activation]
        self.linear1 = nn.Linear(positive_int(d_model, "d_model"), positive_int(d_ff, "d_ff"), bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(self.activation(self.linear1(x)))  # (B, N, d_ff)
        return self.linear2(hidden)  # (B, N, D)


def _attention(config: TransformerConfig, *, cross: bool) -> MultiHeadAttention:
    """A layer's attention; rotary and ALiBi positions belong to self-attention only."""
    return MultiHeadAttention(
        config.d_model,
        config.num_heads,
        num_kv_heads=config.num_kv_heads,
        bias=config.bias,
        dropout=config.dropout,
        rotary=Rotary(config.head_dim, base=config.rope_base)
        if config.positions == "rotary" and not cross
        else None,
        score_mod=alibi_positions(config.num_heads) if config.positions == "alibi" and not cross else None,
    )


def layer_norm(config: TransformerConfig) -> nn.LayerNorm:
    """A LayerNorm over the model width, with the config's eps and bias."""
    return nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias)


class _Sublayer(nn.Module):
    """One residual block around a sublayer (attention or feed-forward), pre-norm or post-norm."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.norm_first = config.norm_first
        self.norm = layer_norm(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, sublayer: Callable) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, N, D), sublayer: (B, N, D) -> ((B, N, D), weights or None) -> (x (B, N, D), weights)."""
        if self.norm_first:
            out, weights = sublayer(self.norm(x))  # (B, N, D)
            return x + self.dropout(out), weights  # (B, N, D)
        out, weights = sublayer(x)  # (B, N, D)
        return self.norm(x + self.dropout(out)), weights  # (B, N, D)


class EncoderLayer(nn.Module):
    """Self-attention over the whole sequence, then the feed-forward network, each with a residual."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.self_attn = _attention(config, cross=False)
        self.self_attn_block = _Sublayer(config)
        self.feed_forward = FeedForward(
            config.d_model,
            config.d_ff,
            activation=config.activation,
            dropout=config.dropout,
            bias=config.bias,
        )
        self.feed_forward_block = _Sublayer(config)

    def forward(
        self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> LayerOutput:
        """x (B, N, D), padding_mask (B, N) bool, True = a real token -> LayerOutput."""
        x, weights = self.self_attn_block(
            x,
            lambda h: self.self_attn(
                h, key_padding_mask=padding_mask, need_weights=need_weights, average_attn_weights=False
            ),
        )  # (B, N, D)
        return LayerOutput(self._feed_forward(x), weights)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, D) -> x after the feed-forward block and its residual (B, N, D)."""
        x, _ = self.feed_forward_block(x, lambda h: (self.feed_forward(h), None))  # (B, N, D)
        return x


class DecoderLayer(EncoderLayer):
    """Masked (causal) self-attention, cross-attention into the encoder's output (unless built with
    cross_attention=False, for a decoder-only model), then the feed-forward network."""

    def __init__(self, config: TransformerConfig, *, cross_attention: bool = True) -> None:
        super().__init__(config)
        self.cross_attn = _attention(config, cross=True) if cross_attention else None
        self.cross_attn_block = _Sublayer(config) if cross_attention else None

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        padding_mask: torch.Tensor | None = None,
        memory_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        cache: KVCache | None = None,
        cache_layer: int = 0,
    ) -> LayerOutput:
        """x (B, N, D), memory (B, Ns, D) the encoder's output (None without cross-attention),
        padding_mask (B, Nk) and memory_padding_mask (B, Ns) bool with True = a real token -> LayerOutput.
        With a cache, x holds the new tokens only and they attend to every cached one."""
        if (memory is None) != (self.cross_attn is None):
            raise ValueError(
                "memory (the encoder's output) must be given exactly when the layer has cross-attention: "
                f"this layer {'has' if self.cross_attn is not None else 'has no'} cross-attention"
            )
        x, self_weights = self.self_attn_block(
            x,
            lambda h: self.self_attn(
                h,
                key_padding_mask=padding_mask,
                is_causal=True,
                need_weights=need_weights,
                average_attn_weights=False,
                cache=cache,
                cache_layer=cache_layer,
            ),
        )  # (B, N, D)
        cross_weights = None
        cross_attn, cross_attn_block = self.cross_attn, self.cross_attn_block  # both, or neither
        if cross_attn is not None and cross_attn_block is not None:
            x, cross_weights = cross_attn_block(
                x,
                lambda h: cross_attn(
                    h,
                    memory,
                    key_padding_mask=memory_padding_mask,
                    need_weights=need_weights,
                    average_attn_weights=False,
                ),
            )  # (B, N, D)
        return LayerOutput(self._feed_forward(x), self_weights, cross_weights)


class Embeddings(nn.Module):
    """Token ids (B, N) -> vectors (B, N, D): token embeddings (× √D if config.scale_embeddings), plus
    position embeddings (sinusoidal or learned), plus token-type embeddings, then LayerNorm (if
    config.embedding_norm) and dropout."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        positive_int(config.vocab_size, "vocab_size")
        self.max_positions = config.max_positions
        self.scale = math.sqrt(config.d_model) if config.scale_embeddings else 1.0
        self.tokens = nn.Embedding(config.vocab_size, config.d_model)
        nn.init.normal_(self.tokens.weight, std=config.d_model**-0.5 if config.scale_embeddings else 0.02)
        added = {"sinusoidal": SinusoidalPositions, "learned": LearnedPositions}.get(config.positions)
        self.positions = None if added is None else added(config.max_positions, config.d_model)
        self.token_types = (
            nn.Embedding(config.type_vocab_size, config.d_model) if config.type_vocab_size else None
        )
        self.norm = layer_norm(config) if config.embedding_norm else None
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, ids: torch.Tensor, *, start: int = 0, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """ids (B, N) at positions start .. start + N - 1, token_type_ids (B, N) or None -> (B, N, D)."""
        check_ids(ids, "ids", self.tokens.num_embeddings)
        check_length(start + ids.shape[1], self.max_positions)
        x = self.tokens(ids) * self.scale  # (B, N, D)
        if self.positions is not None:
            x = self.positions(x, start)  # (B, N, D)
        if self.token_types is not None:
            types = torch.zeros_like(ids) if token_type_ids is None else token_type_ids  # (B, N)
            check_ids(types, "token_type_ids", self.token_types.num_embeddings, shape=tuple(ids.shape))
            x = x + self.token_types(types)  # (B, N, D)
        if self.norm is not None:
            x = self.norm(x)  # (B, N, D)
        return self.dropout(x)  # (B, N, D)


def check_ids(ids: object, name: str, vocab_size: int, *, shape: tuple[int, ...] | None = None) -> None:
    """Raise unless ids is an integer tensor (B, N) (of `shape` if given) with values in [0, vocab_size)."""
    if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError(
            f"{name} must be an integer tensor (B, N), got {getattr(ids, 'dtype', type(ids).__name__)}"
        )
    if ids.dim() != 2 or (shape is not None and tuple(ids.shape) != shape):
        raise ValueError(f"{name} must have shape {shape or '(B, N)'}, got {tuple(ids.shape)}")
    if torch.compiler.is_compiling():  # a data-dependent branch would break the graph: checked when it runs
        in_range = ((ids >= 0) & (ids < vocab_size)).all()
        torch._assert_async(in_range, f"{name} must lie in [0, {vocab_size})")
    elif ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(
            f"{name} must lie in [0, {vocab_size}), got values from {ids.min().item()} to {ids.max().item()}"
        )
