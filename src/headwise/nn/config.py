"""The shape of a model: one frozen TransformerConfig, every field checked, built from a dict strictly.

The activations and the kinds of positions a config may name live here too, so that checking a config
needs no model code.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..checks import boolean, non_negative_int, positive_int, positive_number, probability, strict_from_dict

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact (erf), as BERT and torch.nn.Transformer's "gelu"
    "gelu_tanh": functools.partial(F.gelu, approximate="tanh"),  # GPT-2's
    "silu": F.silu,
}
POSITIONS = ("sinusoidal", "learned", "rotary", "alibi", "none")


def check_activation(name: str) -> str:
    """`name` if it is one of ACTIVATIONS, or a ValueError that lists them."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return name


@dataclass(frozen=True)
class TransformerConfig:
    """The shape of a model; every field is checked, and from_dict rejects unknown keys.

    Args:
        vocab_size: tokens V in the vocabulary (0 for the stacks alone: Encoder, Decoder, EncoderDecoder).
        d_model: model width D. num_heads: query heads Hq. num_kv_heads: key/value heads (default Hq).
        d_ff: hidden width of the feed-forward network.
        num_encoder_layers, num_decoder_layers: layers in each stack.
        dropout: dropout on the attention weights, inside the feed-forward network and on each sublayer's
            output before the residual (as torch.nn.Transformer), in training mode.
        activation: the feed-forward nonlinearity, one of ACTIVATIONS.
        norm_first: pre-norm (True) or post-norm (False). final_norm: a LayerNorm after each stack.
        layer_norm_eps: the epsilon of every LayerNorm. bias: biases in every linear layer and LayerNorm.
        positions: "sinusoidal" or "learned" (added to the token embeddings), "rotary" (RoPE, in every
            self-attention), "alibi" (a per-head distance penalty on the self-attention scores) or "none".
        max_positions: the longest sequence the model accepts. rope_base: RoPE's base.
        scale_embeddings: multiply token embeddings by √D ("Attention Is All You Need").
        tie_embeddings: the output head shares the token embedding matrix.
        type_vocab_size: token-type (segment) embeddings, as BERT's; 0 for none.
        embedding_norm: a LayerNorm (and dropout) after the embeddings, as BERT's.
    """

    vocab_size: int = 0
    d_model: int = 128
    num_heads: int = 4
    num_kv_heads: int | None = None
    d_ff: int = 512
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    dropout: float = 0.1
    activation: str = "relu"
    norm_first: bool = False
    final_norm: bool = True
    layer_norm_eps: float = 1e-5
    bias: bool = True
    positions: str = "sinusoidal"
    max_positions: int = 512
    rope_base: float = 10000.0
    scale_embeddings: bool = True
    tie_embeddings: bool = True
    type_vocab_size: int = 0
    embedding_norm: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "num_encoder_layers", "num_decoder_layers", "type_vocab_size"):
            non_negative_int(getattr(self, name), name)
        for name in ("d_model", "num_heads", "d_ff", "max_positions"):
            positive_int(getattr(self, name), name)
        kv_heads = (
            self.num_heads if self.num_kv_heads is None else positive_int(self.num_kv_heads, "num_kv_heads")
        )
        if self.d_model % self.num_heads != 0 or self.num_heads % kv_heads != 0:
            raise ValueError(
                f"d_model ({self.d_model}) must be a multiple of num_heads ({self.num_heads}), and num_heads "
                f"a multiple of num_kv_heads ({kv_heads})"
            )
        probability(self.dropout, "dropout")
        check_activation(self.activation)
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {list(POSITIONS)}, got {self.positions!r}")
        if self.positions == "rotary" and self.head_dim % 2 != 0:
            raise ValueError(
                f"rotary positions need an even head width, got d_model/num_heads = {self.head_dim}"
            )
        positive_number(self.layer_norm_eps, "layer_norm_eps")
        positive_number(self.rope_base, "rope_base")
        for name in (
            "norm_first",
            "final_norm",
            "bias",
            "scale_embeddings",
            "tie_embeddings",
            "embedding_norm",
        ):
            boolean(getattr(self, name), name)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def parameter_count(self, *, encoder: bool) -> int:
        """The numbers in the weights of a model with this config, a tied output head counted once, without
        building it: a Transformer (encoder=True: embeddings, an encoder, a decoder with cross-attention,
        the head) or a LanguageModel (encoder=False: embeddings, a decoder without cross-attention, the
        head). The tests hold it to the models' own count."""
        d, bias = self.d_model, int(self.bias)
        kv_width = (self.num_kv_heads or self.num_heads) * self.head_dim  # Hkv·Dh
        attention = (d + 2 * kv_width) * (d + bias) + d * (d + bias)  # q, k, v and output projections
        feed_forward = 2 * d * self.d_ff + bias * (self.d_ff + d)
        norm = d * (1 + bias)
        encoder_layer = attention + feed_forward + 2 * norm
        decoder_layer = encoder_layer + (attention + norm if encoder else 0)
        final_norm = norm if self.final_norm else 0
        stacks = self.num_decoder_layers * decoder_layer + final_norm
        if encoder:
            stacks += self.num_encoder_layers * encoder_layer + final_norm
        embeddings = (
            (self.vocab_size + self.type_vocab_size) * d
            + (self.max_positions * d if self.positions == "learned" else 0)
            + (norm if self.embedding_norm else 0)
        )
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return embeddings + stacks + head

    def buffer_count(self) -> int:
        """The numbers in the tables a model with this config computes once and keeps (not weights): the
        sinusoidal positions, (max_positions, D)."""
        return self.max_positions * self.d_model if self.positions == "sinusoidal" else 0

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TransformerConfig:
        """The config with these fields; an unknown key is an error that lists the known ones."""
        return strict_from_dict(cls, data, "TransformerConfig field")
