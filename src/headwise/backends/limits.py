"""What every flash-style backend (one that keeps (out, lse) instead of the weights) cannot do."""

from __future__ import annotations


def flash_limits(request) -> str | None:
    """The reason a backend that never holds the whole weight matrix cannot serve `request`, or None."""
    if request.return_weights:
        return "return the attention weights (use headwise.attention_weights with its lse)"
    if request.tracing:
        return "record a trace (only the reference backend shows its steps)"
    if request.mask_requires_grad:
        return "differentiate with respect to a float mask"
    return None
