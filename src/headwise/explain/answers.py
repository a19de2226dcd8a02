"""What a learner should see in a traced run, checked from the trace's own tensors and the module's weights.

Each check belongs to the step after which it can be made: `checks_after(step_name, run)`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from ..pages.model import Check
from .example import Run

TOLERANCE = 1e-12  # float64 round-off: a recomputation in another order may differ in the last bits
ROLES = ("queries", "keys", "values")
WEIGHTS = {"queries": "query", "keys": "key", "values": "value"}  # W_query makes the queries, ...


def matches(actual: torch.Tensor, expected: torch.Tensor, claim: str) -> Check:
    """The claim holds when `actual` and `expected` (same shape) agree to float64 round-off."""
    difference = (actual - expected).abs().max().item()
    return Check(difference <= TOLERANCE, f"{claim}: max difference {difference:.1g}")


def projection(run: Run, role: str) -> Check:
    """queries = x @ W_query + b_q (W_query = W_qᵀ), recomputed; keys and values likewise, from m in
    cross-attention; without the bias where the module has none (the book's qkv_bias=False)."""
    weight, bias = run.module.projections()[ROLES.index(role)]  # (H·Dh, D), (H·Dh,) or None
    cross = role != "queries" and "kv_inputs" in run.trace.names()
    source = run.trace["kv_inputs" if cross else "inputs"]
    expected = source.tensor @ weight.T  # (B, N, H·Dh)
    name = f"W_{WEIGHTS[role]}"
    if bias is None:
        claim = f"{role} = {source.formula} @ {name}, recomputed from {name}"
    else:
        expected = expected + bias  # (B, N, H·Dh)
        letter = role[0]
        claim = f"{role} = {source.formula} @ {name} + b_{letter}, recomputed from {name} and b_{letter}"
    return matches(run.trace[role].tensor, expected, claim)


def repeated_words_match(run: Run) -> Check | None:
    """A word that occurs twice gets one embedding, so (without positions) the same query, key and value
    in every place: attention alone cannot tell its copies apart. None when no word repeats."""
    tokens = run.example.tokens
    repeated = [word for word in dict.fromkeys(tokens) if tokens.count(word) > 1]
    if not repeated:
        return None
    roles = ROLES if run.example.kv_tokens is None else ROLES[:1]  # cross-attention: keys from other tokens
    same = True
    for word in repeated:
        places = [i for i, token in enumerate(tokens) if token == word]
        for role in roles:
            rows = run.trace[role].tensor[0, places]  # (copies, H·Dh)
            same &= bool((rows == rows[0]).all())
    names = ", ".join(repr(word) for word in repeated)
    return Check(
        same,
        f"{names} repeated: one embedding, so identical {', '.join(roles)} wherever it occurs; without "
        "positions (added to the embeddings in a first layer) attention cannot tell the copies apart",
    )


def rows_sum_to_one(run: Run) -> Check:
    """Each query's weights form a probability distribution; a query that sees no key gets zeros."""
    weights = run.trace["weights"].tensor  # (B, H, Nq, Nk)
    blind = (run.trace["masked_scores"].tensor == float("-inf")).all(dim=-1)  # (B, H, Nq)
    sums = weights.sum(dim=-1)  # (B, H, Nq)
    claim = "each row of weights sums to 1"
    blind_queries = blind.flatten(0, 1).any(dim=0).nonzero().flatten().tolist()  # positions in Nq
    if blind_queries:
        names = ", ".join(run.example.tokens[i] for i in blind_queries)
        claim += (
            f", or to 0 for {names}: causal attention aligned bottom-right puts the first "
            f"{len(blind_queries)} queries before every key, so they see none and their context is 0"
        )
    return matches(sums, (~blind).to(sums.dtype), claim)


def masked_weights_are_zero(run: Run) -> Check:
    """A -inf score gives a weight of exactly 0; every other score gives a weight above 0."""
    masked = run.trace["masked_scores"].tensor == float("-inf")  # (B, H, Nq, Nk)
    weights = run.trace["weights"].tensor  # (B, H, Nq, Nk)
    passed = bool((weights[masked] == 0).all() and (weights[~masked] > 0).all())
    if not masked.any():
        return Check(passed, "nothing is masked, so every key gets a weight above 0")
    count = int(masked.sum())
    return Check(passed, f"the {count} masked entries (-inf) get weight exactly 0, all others above 0")


def context_is_heads_side_by_side(run: Run) -> Check:
    """context is the heads' context vectors concatenated along the features, nothing more."""
    by_head = run.trace["context_by_head"].tensor  # (B, H, Nq, Dh)
    side_by_side = torch.cat(by_head.unbind(dim=1), dim=-1)  # (B, Nq, H·Dh)
    heads = " | ".join(f"head {h}" for h in range(by_head.shape[1]))
    passed = torch.equal(run.trace["context"].tensor, side_by_side)
    return Check(passed, f"context = [{heads}], the heads' context vectors side by side (exactly)")


def output_projection(run: Run) -> Check:
    """output = context @ out_proj + b_o (out_proj's weight transposed, W_oᵀ), recomputed."""
    out_proj = run.module.out_proj
    expected = run.trace["context"].tensor @ out_proj.weight.T + out_proj.bias  # (B, Nq, out_dim)
    claim = "output = context @ out_proj + b_o, recomputed"
    return matches(run.trace["output"].tensor, expected, claim)


CHECKS: dict[str, tuple[Callable[[Run], Check | None], ...]] = {
    "queries": (partial(projection, role="queries"),),
    "keys": (partial(projection, role="keys"),),
    "values": (partial(projection, role="values"), repeated_words_match),  # all three made by now
    "weights": (rows_sum_to_one, masked_weights_are_zero),
    "context": (context_is_heads_side_by_side,),
    "output": (output_projection,),
}


def checks_after(step_name: str, run: Run) -> list[Check]:
    """The checks that the step named `step_name` makes possible, in order (none for most steps)."""
    return [check for make in CHECKS.get(step_name, ()) if (check := make(run)) is not None]
