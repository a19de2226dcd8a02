"""A BERT encoder on headwise's own Embeddings and Encoder, and a BERT checkpoint's weights renamed onto it.

    token ids (B, N) -> Embeddings: token + learned position + token-type vectors, LayerNorm (B, N, D)
      -> Encoder: post-norm layers, each self-attention then a GELU feed-forward (B, N, D)

config_from_bert reads a Hugging Face config.json; the weights are read with safetensors and renamed onto
headwise's parameters (BERT's separate query/key/value matrices become one fused in_proj_weight =
[W_q; W_k; W_v]). transformers is not needed: the tests compare every hidden state and every head's
attention weights with its BertModel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...checks import boolean
from ...optional import require
from ..config import ACTIVATIONS, TransformerConfig
from ..layers import Embeddings
from ..models import Encoder

INSTALL_EXTRA = "pip install 'headwise[pretrained]'"

# BERT's config.json -> TransformerConfig: the keys that must be there, and how each becomes a field.
_BERT_FIELDS = {
    "vocab_size": "vocab_size",
    "hidden_size": "d_model",
    "num_attention_heads": "num_heads",
    "intermediate_size": "d_ff",
    "num_hidden_layers": "num_encoder_layers",
    "layer_norm_eps": "layer_norm_eps",
    "max_position_embeddings": "max_positions",
    "type_vocab_size": "type_vocab_size",
}
# hidden_act -> headwise's activation name ("gelu" is the exact, erf one in both).
_BERT_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
# Keys whose value headwise cannot honour unless it is the one given here.
_BERT_REQUIRED_VALUES = {
    "position_embedding_type": "absolute",
    "is_decoder": False,
    "add_cross_attention": False,
    "chunk_size_feed_forward": 0,
}
# The checkpoint's tensors that the encoder does not use: the position-ids buffer and the [CLS] pooler.
_IGNORED = re.compile(r"embeddings\.position_ids|pooler\..*")
# Within encoder layer i: BERT's module -> headwise's (under encoder.layers.i).
_LAYER_MODULES = {
    "attention.output.dense": "self_attn.out_proj",
    "attention.output.LayerNorm": "self_attn_block.norm",
    "intermediate.dense": "feed_forward.linear1",
    "output.dense": "feed_forward.linear2",
    "output.LayerNorm": "feed_forward_block.norm",
}
_EMBEDDING_MODULES = {
    "word_embeddings": "tokens",
    "position_embeddings": "positions",
    "token_type_embeddings": "token_types",
    "LayerNorm": "norm",
}
_QKV = ("query", "key", "value")  # the rows of in_proj_weight, in this order: [W_q; W_k; W_v]


def config_from_bert(data: dict[str, Any]) -> TransformerConfig:
    """The TransformerConfig of a Hugging Face BERT config.json (as a dict): post-norm layers, learned
    positions, token types and a LayerNorm after the embeddings, no final norm, no decoder.

    A missing key or a value headwise's encoder cannot reproduce (relative positions, a decoder, an unknown
    activation, different dropout on the attention weights and on the hidden states) is a ValueError."""
    if not isinstance(data, dict):
        raise TypeError(f"a BERT config must be a dict (config.json), got {type(data).__name__}")
    model_type = data.get("model_type", "bert")
    if model_type != "bert":
        raise ValueError(f"config.json: model_type must be 'bert', got {model_type!r}")
    missing = [key for key in (*_BERT_FIELDS, "hidden_act") if key not in data]
    if missing:
        raise ValueError(f"config.json lacks the BERT key(s) {missing}")
    for key, expected in _BERT_REQUIRED_VALUES.items():
        if key in data and data[key] != expected:
            raise ValueError(
                f"config.json: {key} = {data[key]!r} is not supported; headwise's BERT encoder needs "
                f"{expected!r}"
            )
    activation = _BERT_ACTIVATIONS.get(data["hidden_act"])
    if activation is None or activation not in ACTIVATIONS:
        raise ValueError(
            f"config.json: hidden_act must be one of {sorted(_BERT_ACTIVATIONS)}, got {data['hidden_act']!r}"
        )
    dropouts = {data.get(key, 0.1) for key in ("hidden_dropout_prob", "attention_probs_dropout_prob")}
    if len(dropouts) != 1:
        raise ValueError(
            "config.json: hidden_dropout_prob and attention_probs_dropout_prob differ "
            f"({data.get('hidden_dropout_prob')} and {data.get('attention_probs_dropout_prob')}); headwise "
            "uses one dropout probability for both"
        )
    return TransformerConfig(
        **{field: data[key] for key, field in _BERT_FIELDS.items()},
        num_decoder_layers=0,
        dropout=dropouts.pop(),
        activation=activation,
        norm_first=False,
        final_norm=False,
        bias=True,
        positions="learned",
        scale_embeddings=False,
        tie_embeddings=False,
        embedding_norm=True,
    )


@dataclass
class BertOutput:
    """What the encoder computed, named as Hugging Face's BertModel names it.

    last_hidden_state: (B, N, D), the last layer's output.
    hidden_states: L + 1 tensors (B, N, D): the embeddings' output, then each layer's.
    attentions: L tensors (B, H, N, N), each layer's softmax weights per head (query rows, key columns),
        when asked with output_attentions=True; else None.
    """

    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...]
    attentions: tuple[torch.Tensor, ...] | None = None


class BertEncoder(nn.Module):
    """A BERT encoder on headwise: Embeddings then Encoder, (B, N) token ids -> (B, N, D) vectors.

    The parameters are headwise's (embeddings.tokens, encoder.layers.i.self_attn.in_proj_weight, ...);
    `load_bert_weights` fills them from a Hugging Face checkpoint."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        output_attentions: bool = False,
    ) -> BertOutput:
        """input_ids (B, N); attention_mask (B, N) of 1/True for a real token and 0/False for padding
        (default: all real); token_type_ids (B, N) (default: all 0) -> BertOutput.

        Padding is masked as keys only, as in BERT: a padding position still gets a vector (which mean
        pooling leaves out), computed from the real tokens."""
        boolean(output_attentions, "output_attentions")
        x = self.embeddings(input_ids, token_type_ids=token_type_ids)  # (B, N, D)
        padding_mask = None if attention_mask is None else real_tokens(attention_mask, tuple(input_ids.shape))
        stack = self.encoder(x, padding_mask=padding_mask, need_weights=output_attentions)
        return BertOutput(stack.last_hidden_state, stack.hidden_states, stack.attentions)


def real_tokens(attention_mask: object, shape: tuple[int, ...]) -> torch.Tensor:
    """Hugging Face's attention_mask (B, N) of 1 (a real token) and 0 (padding), ints, bools or floats ->
    headwise's key padding mask (B, N) bool, True = a real token."""
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a tensor (B, N), got {type(attention_mask).__name__}")
    if tuple(attention_mask.shape) != shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {shape}, got {tuple(attention_mask.shape)}"
        )
    if attention_mask.numel() and not ((attention_mask == 0) | (attention_mask == 1)).all():
        raise ValueError(
            "attention_mask must hold 1 (a real token) or 0 (padding), got values "
            f"{sorted(set(attention_mask.unique().tolist()))[:6]}"
        )
    return attention_mask != 0  # (B, N) bool


def bert_names(config: TransformerConfig) -> dict[str, tuple[str, int | None]]:
    """Every tensor a BERT checkpoint of this shape holds -> (headwise's parameter, row block or None).

    The query, key and value of layer i all go to encoder.layers.i.self_attn.in_proj_weight (and _bias),
    as row blocks 0, 1 and 2; every other tensor maps to one parameter whole."""
    names: dict[str, tuple[str, int | None]] = {}
    for kind in ("weight", "bias"):
        for bert, ours in _EMBEDDING_MODULES.items():
            if bert != "LayerNorm" and kind == "bias":
                continue  # embedding tables have no bias
            names[f"embeddings.{bert}.{kind}"] = (f"embeddings.{ours}.{kind}", None)
        for i in range(config.num_encoder_layers):
            for block, role in enumerate(_QKV):
                names[f"encoder.layer.{i}.attention.self.{role}.{kind}"] = (
                    f"encoder.layers.{i}.self_attn.in_proj_{kind}",
                    block,
                )
            for bert, ours in _LAYER_MODULES.items():
                names[f"encoder.layer.{i}.{bert}.{kind}"] = (f"encoder.layers.{i}.{ours}.{kind}", None)
    return names


def _canonical(name: str) -> str:
    """Older spellings of BERT names -> today's: a leading 'bert.' goes, LayerNorm gamma/beta ->
    weight/bias."""
    name = name.removeprefix("bert.")
    if ".LayerNorm." in name:
        name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))
    return name


def convert_bert_state_dict(
    tensors: dict[str, torch.Tensor], model: BertEncoder, *, source: str = "the checkpoint"
) -> dict[str, torch.Tensor]:
    """A BERT checkpoint's tensors (Hugging Face names) -> a state_dict for `model` (headwise's names).

    Strict: a tensor the model has no place for, a missing one, or one of the wrong shape is a ValueError
    naming it (`source` says where the tensors came from). The pooler and embeddings.position_ids are
    skipped: the sentence encoder does not use them."""
    expected = model.state_dict()
    targets = bert_names(model.config)
    blocks: dict[str, dict[int | None, torch.Tensor]] = {}
    unexpected = []
    for raw_name, tensor in tensors.items():
        name = _canonical(raw_name)
        if _IGNORED.fullmatch(name):
            continue
        if name not in targets:
            unexpected.append(raw_name)
            continue
        ours, block = targets[name]
        whole = tuple(expected[ours].shape)
        shape = whole if block is None else (whole[0] // len(_QKV), *whole[1:])  # one of W_q, W_k, W_v
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"{source}: tensor {raw_name!r} has shape {tuple(tensor.shape)} but the model built from "
                f"config.json expects {shape} (for {ours})"
            )
        blocks.setdefault(ours, {})[block] = tensor
    if unexpected:
        raise ValueError(
            f"{source} has {len(unexpected)} tensor(s) that a BERT encoder with "
            f"{model.config.num_encoder_layers} layers has no place for: {sorted(unexpected)[:8]}"
        )
    missing = [bert for bert, (ours, block) in targets.items() if block not in blocks.get(ours, {})]
    if missing:
        raise ValueError(f"{source} lacks {len(missing)} tensor(s) of the BERT encoder: {missing[:8]}")
    return {
        ours: parts[None] if None in parts else torch.cat([parts[b] for b in range(len(_QKV))])  # [q; k; v]
        for ours, parts in blocks.items()
    }


def load_bert_weights(model: BertEncoder, path: str | Path) -> BertEncoder:
    """Fill `model` with the weights of a BERT model.safetensors file (strictly: see
    convert_bert_state_dict); returns the model."""
    safetensors_torch = require(
        "safetensors.torch", purpose="headwise.nn.pretrained (reading the weights)", install=INSTALL_EXTRA
    )
    path = Path(path)
    tensors = safetensors_torch.load_file(str(path))
    model.load_state_dict(convert_bert_state_dict(tensors, model, source=str(path)), strict=True)
    return model
