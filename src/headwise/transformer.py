"""The transformer around the attention, in the order the data flows.

    token ids (B, N) -> Embeddings: token vectors (+ position vectors) (B, N, D)
      -> Encoder: EncoderLayer × L, each self-attention then a position-wise FeedForward, with residuals
      -> Decoder: DecoderLayer × L, each masked self-attention, cross-attention into the encoder's output
         (when there is an encoder), then a FeedForward
      -> a linear head to one score per vocabulary entry (B, N, V)

Every layer is post-norm (x = norm(x + sublayer(x)), as in "Attention Is All You Need" and BERT) or
pre-norm (x = x + sublayer(norm(x)), as in GPT-2 and most models since), set by one small frozen
TransformerConfig. The parameter names follow the roles (self_attn, cross_attn, feed_forward and their
norms); EncoderDecoder.from_torch maps torch.nn.Transformer's names onto them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .cache import KVCache
from .checks import non_negative_int, positive_int, positive_number, probability
from .generation import evaluating, generate
from .modules import MultiHeadAttention
from .positions import LearnedPositions, Rotary, SinusoidalPositions, alibi_positions, check_length

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact (erf), as BERT and torch.nn.Transformer's "gelu"
    "gelu_tanh": functools.partial(F.gelu, approximate="tanh"),  # GPT-2's
    "silu": F.silu,
}
POSITIONS = ("sinusoidal", "learned", "rotary", "alibi", "none")


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
        layer_norm_eps, bias (in every linear layer and LayerNorm).
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
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
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
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TransformerConfig:
        """The config with these fields; an unknown key is an error that lists the known ones."""
        if not isinstance(data, dict):
            raise TypeError(f"a TransformerConfig is made from a dict, got {type(data).__name__}")
        known = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown TransformerConfig field(s) {unknown}; the fields are {known}")
        return cls(**data)


@dataclass
class LayerOutput:
    """A layer's output (B, N, D) and, when asked, its attention weights per head: self-attention
    (B, Hq, N, Nk) and, in a decoder layer, cross-attention (B, Hq, N, Ns)."""

    hidden: torch.Tensor
    self_attention: torch.Tensor | None = None
    cross_attention: torch.Tensor | None = None


@dataclass
class StackOutput:
    """What a stack of layers computed.

    last_hidden_state: (B, N, D), after the final norm if the stack has one.
    hidden_states: the stack's input, then each layer's output (before the final norm): L + 1 × (B, N, D).
    attentions: one (B, Hq, N, Nk) tensor per layer when asked, else None.
    cross_attentions: in a decoder with an encoder, one (B, Hq, N, Ns) per layer when asked, else None.
    """

    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...]
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


class FeedForward(nn.Module):
    """The position-wise feed-forward network, (B, N, D) -> (B, N, D):
    linear2(dropout(activation(linear1(x))))."""

    def __init__(
        self, d_model: int, d_ff: int, *, activation: str = "relu", dropout: float = 0.0, bias: bool = True
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation_name = activation
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


def _norm(config: TransformerConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias)


class _Sublayer(nn.Module):
    """One residual block around a sublayer (attention or feed-forward), pre-norm or post-norm."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.norm_first = config.norm_first
        self.norm = _norm(config)
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
        if self.cross_attn is not None:
            x, cross_weights = self.cross_attn_block(
                x,
                lambda h: self.cross_attn(
                    h,
                    memory,
                    key_padding_mask=memory_padding_mask,
                    need_weights=need_weights,
                    average_attn_weights=False,
                ),
            )  # (B, N, D)
        return LayerOutput(self._feed_forward(x), self_weights, cross_weights)


class Encoder(nn.Module):
    """A stack of EncoderLayers and, with config.final_norm, a LayerNorm: (B, N, D) -> (B, N, D)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_encoder_layers))
        self.norm = _norm(config) if config.final_norm else None

    def forward(
        self, x: torch.Tensor, *, padding_mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> StackOutput:
        """x (B, N, D), padding_mask (B, N) bool, True = a real token -> StackOutput."""
        outputs = []
        for layer in self.layers:
            outputs.append(
                layer(
                    outputs[-1].hidden if outputs else x, padding_mask=padding_mask, need_weights=need_weights
                )
            )
        return _stack_output(x, outputs, self.norm, need_weights, cross=False)


class Decoder(nn.Module):
    """A stack of DecoderLayers and, with config.final_norm, a LayerNorm: (B, N, D) -> (B, N, D)."""

    def __init__(self, config: TransformerConfig, *, cross_attention: bool = True) -> None:
        super().__init__()
        self.cross_attention = cross_attention
        self.layers = nn.ModuleList(
            DecoderLayer(config, cross_attention=cross_attention) for _ in range(config.num_decoder_layers)
        )
        self.norm = _norm(config) if config.final_norm else None

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        padding_mask: torch.Tensor | None = None,
        memory_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        cache: KVCache | None = None,
    ) -> StackOutput:
        """x (B, N, D), memory (B, Ns, D) or None -> StackOutput; a cache has one layer per DecoderLayer."""
        if cache is not None and cache.num_layers != len(self.layers):
            raise ValueError(f"cache has {cache.num_layers} layers but the decoder has {len(self.layers)}")
        outputs = []
        for index, layer in enumerate(self.layers):
            outputs.append(
                layer(
                    outputs[-1].hidden if outputs else x,
                    memory,
                    padding_mask=padding_mask,
                    memory_padding_mask=memory_padding_mask,
                    need_weights=need_weights,
                    cache=cache,
                    cache_layer=index if cache is not None else 0,
                )
            )
        return _stack_output(x, outputs, self.norm, need_weights, cross=self.cross_attention)

    def new_cache(self, max_length: int | None = None) -> KVCache:
        """An empty KVCache with one layer per DecoderLayer."""
        return KVCache(len(self.layers), max_length=max_length)


def _stack_output(x, outputs: list[LayerOutput], norm, need_weights: bool, *, cross: bool) -> StackOutput:
    hidden_states = (x, *(output.hidden for output in outputs))  # L + 1 × (B, N, D)
    last = hidden_states[-1] if norm is None else norm(hidden_states[-1])  # (B, N, D)
    return StackOutput(
        last,
        hidden_states,
        tuple(output.self_attention for output in outputs) if need_weights else None,
        tuple(output.cross_attention for output in outputs) if need_weights and cross else None,
    )


class EncoderDecoder(nn.Module):
    """The encoder and decoder stacks without embeddings, as torch.nn.Transformer (batch first):
    source (B, Ns, D), target (B, Nt, D) -> (B, Nt, D)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def forward(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        *,
        source_padding_mask: torch.Tensor | None = None,
        target_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """source (B, Ns, D), target (B, Nt, D), padding masks (B, Ns) / (B, Nt) bool with True = a real
        token (torch.nn.Transformer's are the opposite: pass ~its_mask) -> (B, Nt, D). The target
        attends causally to itself."""
        memory = self.encoder(source, padding_mask=source_padding_mask).last_hidden_state  # (B, Ns, D)
        return self.decoder(
            target, memory, padding_mask=target_padding_mask, memory_padding_mask=source_padding_mask
        ).last_hidden_state  # (B, Nt, D)

    @classmethod
    def from_torch(cls, model: nn.Transformer) -> EncoderDecoder:
        """The same network with a torch.nn.Transformer's weights (headwise is batch first: transpose
        the inputs of a model made with batch_first=False)."""
        if not isinstance(model, nn.Transformer):
            raise TypeError(f"model must be a torch.nn.Transformer, got {type(model).__name__}")
        first = model.encoder.layers[0]
        activation = {F.relu: "relu", F.gelu: "gelu"}.get(first.activation)
        if activation is None:
            raise ValueError(f"unsupported activation {first.activation!r}: expected relu or gelu")
        config = TransformerConfig(
            d_model=model.d_model,
            num_heads=model.nhead,
            d_ff=first.linear1.out_features,
            num_encoder_layers=len(model.encoder.layers),
            num_decoder_layers=len(model.decoder.layers),
            dropout=first.dropout.p,
            activation=activation,
            norm_first=first.norm_first,
            final_norm=model.encoder.norm is not None,
            layer_norm_eps=first.norm1.eps,
            bias=first.linear1.bias is not None,
            positions="none",
        )
        weight = first.linear1.weight
        converted = cls(config).to(device=weight.device, dtype=weight.dtype)
        converted.load_state_dict({_torch_name_to_ours(name): t for name, t in model.state_dict().items()})
        return converted.train(model.training)


_TORCH_NAMES = {
    "encoder": {"linear1": "feed_forward.linear1", "linear2": "feed_forward.linear2",
                "norm1": "self_attn_block.norm", "norm2": "feed_forward_block.norm"},
    "decoder": {"linear1": "feed_forward.linear1", "linear2": "feed_forward.linear2",
                "multihead_attn": "cross_attn", "norm1": "self_attn_block.norm",
                "norm2": "cross_attn_block.norm", "norm3": "feed_forward_block.norm"},
}  # fmt: skip


def _torch_name_to_ours(name: str) -> str:
    """'decoder.layers.0.norm2.weight' -> 'decoder.layers.0.cross_attn_block.norm.weight'."""
    parts = name.split(".")
    if len(parts) > 3 and parts[1] == "layers":
        parts[3] = _TORCH_NAMES[parts[0]].get(parts[3], parts[3])
    return ".".join(parts)


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
        self.norm = _norm(config) if config.embedding_norm else None
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
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(
            f"{name} must lie in [0, {vocab_size}), got values from {ids.min().item()} to {ids.max().item()}"
        )


class _Head(nn.Module):
    """The embeddings and the output head shared by both models."""

    def _build_head(self, config: TransformerConfig) -> None:
        self.config = config
        self.embeddings = Embeddings(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embeddings.tokens.weight  # (V, D), one matrix for both


@dataclass
class Seq2SeqOutput:
    """logits (B, Nt, V) and the encoder's and decoder's StackOutputs (attentions when asked)."""

    logits: torch.Tensor
    encoder: StackOutput
    decoder: StackOutput


class Transformer(_Head):
    """The encoder-decoder transformer of "Attention Is All You Need": source ids (B, Ns) and target ids
    (B, Nt) -> scores for the next target token (B, Nt, V). One vocabulary and one embedding table serve
    both sides."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self._build_head(config)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(
        self,
        source_ids: torch.Tensor,
        *,
        padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> StackOutput:
        """source_ids (B, Ns), padding_mask (B, Ns) with True = a real token -> the encoder's StackOutput."""
        return self.encoder(self.embeddings(source_ids), padding_mask=padding_mask, need_weights=need_weights)

    def decode(
        self,
        target_ids: torch.Tensor,
        memory: torch.Tensor,
        *,
        memory_padding_mask: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, StackOutput]:
        """target_ids (B, Nt) (the new tokens, with a cache), memory (B, Ns, D) -> logits (B, Nt, V) and
        the decoder's StackOutput."""
        start = 0 if cache is None else cache.length
        decoded = self.decoder(
            self.embeddings(target_ids, start=start),
            memory,
            padding_mask=padding_mask,
            memory_padding_mask=memory_padding_mask,
            need_weights=need_weights,
            cache=cache,
        )
        return self.lm_head(decoded.last_hidden_state), decoded  # (B, Nt, V)

    def forward(
        self,
        source_ids: torch.Tensor,
        target_ids: torch.Tensor,
        *,
        source_padding_mask: torch.Tensor | None = None,
        target_padding_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> Seq2SeqOutput:
        """source_ids (B, Ns), target_ids (B, Nt) (teacher forcing: the target shifted right, after a start
        token) -> Seq2SeqOutput with logits (B, Nt, V)."""
        encoded = self.encode(source_ids, padding_mask=source_padding_mask, need_weights=output_attentions)
        logits, decoded = self.decode(
            target_ids,
            encoded.last_hidden_state,
            memory_padding_mask=source_padding_mask,
            padding_mask=target_padding_mask,
            need_weights=output_attentions,
        )
        return Seq2SeqOutput(logits, encoded, decoded)

    @torch.no_grad()
    def generate(
        self,
        source_ids: torch.Tensor,
        *,
        start_token: int,
        max_new_tokens: int,
        stop_token: int | None = None,
        source_padding_mask: torch.Tensor | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Translate: source_ids (B, Ns) -> the new target tokens (B, n ≤ max_new_tokens), each sequence
        padded with stop_token after it stops. temperature 0 is greedy; top_k keeps the k likeliest. Runs in
        evaluation mode (no dropout) and puts the model's mode back."""
        with evaluating(self):  # no dropout while generating
            memory = self.encode(source_ids, padding_mask=source_padding_mask).last_hidden_state  # (B, Ns, D)
            start = torch.full(
                (source_ids.shape[0], 1), start_token, dtype=torch.long, device=source_ids.device
            )

            def step(tokens: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
                logits, _ = self.decode(tokens, memory, memory_padding_mask=source_padding_mask, cache=cache)
                return logits  # (B, n, V)

            return generate(
                step,
                start,
                max_new_tokens=max_new_tokens,
                max_positions=self.config.max_positions,
                cache=self.decoder.new_cache() if use_cache else None,
                stop_token=stop_token,
                temperature=temperature,
                top_k=top_k,
                generator=generator,
            )


@dataclass
class LanguageModelOutput:
    """logits (B, N, V) and the decoder's StackOutput (attentions when asked)."""

    logits: torch.Tensor
    decoder: StackOutput


class LanguageModel(_Head):
    """A decoder-only language model (as GPT): token ids (B, N) -> scores for the next token (B, N, V)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self._build_head(config)
        self.decoder = Decoder(config, cross_attention=False)

    def forward(
        self,
        ids: torch.Tensor,
        *,
        padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        output_attentions: bool = False,
    ) -> LanguageModelOutput:
        """ids (B, N) (the new tokens, with a cache) -> LanguageModelOutput with logits (B, N, V)."""
        start = 0 if cache is None else cache.length
        decoded = self.decoder(
            self.embeddings(ids, start=start),
            padding_mask=padding_mask,
            need_weights=output_attentions,
            cache=cache,
        )
        return LanguageModelOutput(self.lm_head(decoded.last_hidden_state), decoded)  # logits (B, N, V)

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: torch.Tensor,
        *,
        max_new_tokens: int,
        stop_token: int | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """prompt_ids (B, N) -> the new tokens (B, n ≤ max_new_tokens); see Transformer.generate."""
        with evaluating(self):  # no dropout while generating
            check_ids(prompt_ids, "prompt_ids", self.config.vocab_size)
            return generate(
                lambda tokens, cache: self(tokens, cache=cache).logits,
                prompt_ids,
                max_new_tokens=max_new_tokens,
                max_positions=self.config.max_positions,
                cache=self.decoder.new_cache() if use_cache else None,
                stop_token=stop_token,
                temperature=temperature,
                top_k=top_k,
                generator=generator,
            )
