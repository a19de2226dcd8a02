"""The documented import path of the transformer; the code lives in headwise.nn.config, headwise.nn.layers
and headwise.nn.models."""

from .nn.config import ACTIVATIONS, POSITIONS, TransformerConfig
from .nn.layers import DecoderLayer, Embeddings, EncoderLayer, FeedForward, LayerOutput, check_ids
from .nn.models import (
    Decoder,
    Encoder,
    EncoderDecoder,
    LanguageModel,
    LanguageModelOutput,
    Seq2SeqOutput,
    StackOutput,
    Transformer,
)

__all__ = [
    "ACTIVATIONS",
    "POSITIONS",
    "Decoder",
    "DecoderLayer",
    "Embeddings",
    "Encoder",
    "EncoderDecoder",
    "EncoderLayer",
    "FeedForward",
    "LanguageModel",
    "LanguageModelOutput",
    "LayerOutput",
    "Seq2SeqOutput",
    "StackOutput",
    "Transformer",
    "TransformerConfig",
    "check_ids",
]
