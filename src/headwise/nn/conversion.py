"""From torch.nn.Transformer to headwise: its config, and its parameter names mapped onto headwise's.

torch's layers name their blocks by number (norm1, norm2, linear1, multihead_attn); headwise's name them by
role (self_attn_block.norm, cross_attn_block.norm, feed_forward.linear1, cross_attn). The attention
parameters (self_attn.in_proj_weight, out_proj, ...) have the same names and layout in both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TransformerConfig


def config_from_torch(model: nn.Transformer) -> TransformerConfig:
    """The TransformerConfig of a torch.nn.Transformer's stacks: no embeddings, no positions."""
    if not isinstance(model, nn.Transformer):
        raise TypeError(f"model must be a torch.nn.Transformer, got {type(model).__name__}")
    first = model.encoder.layers[0]
    activation = {F.relu: "relu", F.gelu: "gelu"}.get(first.activation)
    if activation is None:
        raise ValueError(f"unsupported activation {first.activation!r}: expected relu or gelu")
    return TransformerConfig(
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


def state_dict_from_torch(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torch.nn.Transformer's state_dict under headwise's parameter names (the same tensors)."""
    return {_torch_name_to_ours(name): tensor for name, tensor in state.items()}


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
