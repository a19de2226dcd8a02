"""Combine attention over disjoint key sets exactly: (out, lse) pairs merge associatively.

For one query, attention over keys A gives out_a = Σ_A p_j v_j / Σ_A p_j with lse_a = log Σ_A p_j
(p_j = exp(score_j)); over A ∪ B the normaliser is exp(lse_a) + exp(lse_b), so

    lse = log(exp(lse_a) + exp(lse_b)),    out = out_a · exp(lse_a - lse) + out_b · exp(lse_b - lse).

A query that sees no key in a set has lse = -inf and out = 0 there; one that sees no key in either gets
lse = -inf and out = 0. The chunked backend, split-KV decoding and attention across processes use this.
"""

from __future__ import annotations

import torch


def merge(
    out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out_a (..., Nq, Dv), lse_a (..., Nq)) and the same for B -> (out (..., Nq, Dv), lse (..., Nq)).

    lse is the log-sum-exp of the scaled, masked scores over the key set; -inf where a query sees no key.
    out takes out_a's dtype; the weights are computed in lse's dtype (float32 or float64).
    """
    for name, t in (("out_a", out_a), ("lse_a", lse_a), ("out_b", out_b), ("lse_b", lse_b)):
        if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
            got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"{name} must be a floating torch.Tensor, got {got}")
    if out_a.shape != out_b.shape or lse_a.shape != lse_b.shape or out_a.shape[:-1] != lse_a.shape:
        raise ValueError(
            "merge needs out_a and out_b of one shape (..., Nq, Dv) and lse_a and lse_b of shape (..., Nq), "
            f"got {tuple(out_a.shape)}, {tuple(out_b.shape)}, {tuple(lse_a.shape)}, {tuple(lse_b.shape)}"
        )
    seen = (lse_a > float("-inf")) | (lse_b > float("-inf"))  # (..., Nq)
    # logaddexp(-inf, -inf) is -inf but its gradient is NaN: feed it zeros there, then put -inf back.
    lse = torch.logaddexp(lse_a.masked_fill(~seen, 0.0), lse_b.masked_fill(~seen, 0.0)).masked_fill(
        ~seen, float("-inf")
    )
    safe_lse = torch.where(seen, lse, 0.0)  # keeps exp(-inf - -inf) = NaN out of the weights
    weight_a = torch.exp(lse_a - safe_lse).masked_fill(~seen, 0.0)  # (..., Nq), in [0, 1]
    weight_b = torch.exp(lse_b - safe_lse).masked_fill(~seen, 0.0)
    out = out_a * weight_a[..., None].to(out_a.dtype) + out_b * weight_b[..., None].to(out_b.dtype)
    return out, lse  # (..., Nq, Dv), (..., Nq)
