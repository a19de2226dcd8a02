"""A model's attention weights, as Hugging Face and headwise return them, turned into the report's HeadMaps.

attentions: L × (B, H, Nq, Nk), one tensor per layer (`output_attentions=True`), or one (L, H, Nq, Nk)
  -> HeadMaps(title, query_tokens, key_tokens, weights (L, H, Nq, Nk) float64) of one batch row
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..checks import non_negative_int
from ..pages.model import HeadMaps

Attentions = Sequence[torch.Tensor] | torch.Tensor  # L × (B, H, Nq, Nk), or (L, H, Nq, Nk)


def stacked_weights(attentions: Attentions, name: str = "attentions", batch_index: int = 0) -> torch.Tensor:
    """L × (B, H, Nq, Nk) (a tuple per layer) or (L, H, Nq, Nk) -> (L, H, Nq, Nk) float64 on the CPU, the
    weights of batch row `batch_index`. Refuses anything else with what it got and what it expected."""
    batch_index = non_negative_int(batch_index, "batch_index")
    if isinstance(attentions, torch.Tensor):
        if attentions.dim() != 4:
            raise ValueError(
                f"{name} as one tensor must be (L, H, Nq, Nk), got shape {tuple(attentions.shape)}; pass a "
                "model's per-layer tuple of (B, H, Nq, Nk) as it is"
            )
        weights = attentions  # (L, H, Nq, Nk)
    elif isinstance(attentions, Sequence) and attentions:
        shapes = [
            tuple(layer.shape) if isinstance(layer, torch.Tensor) else type(layer).__name__
            for layer in attentions
        ]
        if any(not isinstance(shape, tuple) or len(shape) != 4 for shape in shapes) or len(set(shapes)) != 1:
            raise ValueError(
                f"{name} must be one (B, H, Nq, Nk) tensor per layer, all of one shape, got {shapes}"
            )
        if batch_index >= shapes[0][0]:
            raise ValueError(f"batch_index must be below the batch size {shapes[0][0]}, got {batch_index}")
        weights = torch.stack([layer[batch_index] for layer in attentions])  # (L, H, Nq, Nk)
    elif isinstance(attentions, Sequence):
        raise ValueError(
            f"{name} is empty: the model returned no weights (a Hugging Face model returns them with "
            "output_attentions=True when loaded with attn_implementation='eager')"
        )
    else:
        raise TypeError(
            f"{name} must be a tuple of (B, H, Nq, Nk) tensors, one per layer, or an (L, H, Nq, Nk) tensor, "
            f"got {type(attentions).__name__}"
        )
    weights = weights.detach().to("cpu", torch.float64)  # (L, H, Nq, Nk)
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"{name} must be attention weights (finite and >= 0), got NaN, inf or negatives")
    return weights


def head_maps(
    title: str,
    attentions: Attentions,
    query_tokens: Sequence[str],
    key_tokens: Sequence[str] | None = None,
    *,
    name: str = "attentions",
    batch_index: int = 0,
) -> HeadMaps:
    """One kind of attention of one batch row as HeadMaps; key_tokens default to query_tokens
    (self-attention). The tokens must match the weights' Nq and Nk (a padded batch: pass the row's real
    tokens and weights sliced to them)."""
    query_tokens = _tokens(query_tokens, "tokens")
    key_tokens = query_tokens if key_tokens is None else _tokens(key_tokens, "key tokens")
    weights = stacked_weights(attentions, name, batch_index)  # (L, H, Nq, Nk)
    if tuple(weights.shape[2:]) != (len(query_tokens), len(key_tokens)):
        raise ValueError(
            f"{name} have Nq × Nk = {weights.shape[2]} × {weights.shape[3]} but there are "
            f"{len(query_tokens)} query tokens and {len(key_tokens)} key tokens; expected one token per row "
            "and per column"
        )
    return HeadMaps(title, query_tokens, key_tokens, weights)


def _tokens(tokens: Sequence[str], name: str) -> tuple[str, ...]:
    """A token list as a tuple of str, or a TypeError naming it."""
    if isinstance(tokens, str) or not isinstance(tokens, Sequence) or not tokens:
        raise TypeError(f"{name} must be a non-empty list of strings (one per position), got {tokens!r:.80}")
    if not all(isinstance(token, str) for token in tokens):
        raise TypeError(f"{name} must all be strings, got {[type(t).__name__ for t in tokens][:8]}")
    return tuple(tokens)
