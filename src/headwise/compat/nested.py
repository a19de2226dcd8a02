"""compat's nested tensors (batch first, ragged lengths): accepted wherever torch accepts them and also in
training and for cross-attention, without masks (as in torch), is_causal only where each query sequence is
as long as its keys. Each input is padded to its longest sequence, the module's forward runs on the padded
tensors with the padded keys masked, and the output is nested again; eager only (TorchScript takes no
nested tensors).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import ValueAssertionError


def forward_nested(
    forward: Callable[..., tuple[torch.Tensor, torch.Tensor | None]],
    batch_first: bool,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    attn_mask: torch.Tensor | None,
    **options: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The module's forward() for nested query (B, ragged L, E), key (B, ragged S, kdim), value (B, ragged S,
    vdim): `forward` (the module's, with batch_first) on them each padded to its longest sequence, the
    padded keys masked, the padded queries cut from the output (nested like query); the weights stay padded,
    (B, max L, max S) or (B, H, max L, max S)."""
    if not (query.is_nested and key.is_nested and value.is_nested):
        raise ValueAssertionError(
            "query, key and value must be all nested tensors or none, got "
            f"is_nested = {query.is_nested}, {key.is_nested}, {value.is_nested}"
        )
    if not batch_first:
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
        causal = torch.ones(padded_query.shape[1], padded_key.shape[1], dtype=torch.bool, device=query.device)
        causal = causal.triu(1)  # (max L, max S): True = blocked, torch's polarity
    output, weights = forward(
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


def _padding(nested: torch.Tensor, length: int) -> torch.Tensor:
    """(B, length) bool, True where the sequences of `nested` (B, ragged N, width) are padded to `length`."""
    lengths = torch.tensor([len(t) for t in nested.unbind()], device=nested.device)  # (B,)
    return torch.arange(length, device=nested.device) >= lengths[:, None]
