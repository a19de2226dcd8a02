"""Section 3.4: self-attention with trainable weights (SelfAttention_v1 and _v2), every value it prints."""

from __future__ import annotations

from ..example import LECTURE_TOKENS
from .printout import Printout, book_inputs, features, shape_of, traced
from .weights import (
    D_OUT,
    SEED_V2,
    headwise_module,
    linear_layers,
    linear_module,
    rand_weights,
)


def trainable_attention() -> list[Printout]:
    """3.4: W_query, W_key, W_value = torch.rand(d_in, d_out) after torch.manual_seed(123); query_2 and
    its scores, weights (scaled by 1/√d_k) and context vector; SelfAttention_v1 with the same draws and
    SelfAttention_v2 (nn.Linear, seed 789)."""
    module = headwise_module(*rand_weights(3))  # W_query, W_key, W_value, as the book draws
    steps = traced(module, book_inputs()[None])  # (1, 6, 3) = (b, num_tokens, d_in)
    v2 = traced(linear_module(linear_layers(SEED_V2, 3)), book_inputs()[None])
    tokens, out = LECTURE_TOKENS, features(D_OUT)
    s = "3.4.1"
    return [
        Printout(
            s,
            "query_2",
            "query_2 = x_2 @ W_query",
            "The second token's query: its embedding times W_query (d_in × d_out = 3 × 2).",
            steps["queries"].tensor[0, 1],
            ("d_out",),
            out,
        ),
        *(
            Printout(
                s,
                f"{role}.shape",
                f"{role} = inputs @ W_{role[:-1]}; {role}.shape",
                f"Every token's {role[:-1]} at once: (num_tokens, d_out).",
                shape_of(steps[role].tensor[0]),
                (),
                ("num_tokens", "d_out"),
            )
            for role in ("keys", "values")
        ),
        Printout(
            s,
            "attn_score_22",
            "attn_score_22 = query_2.dot(keys[1])",
            "The score of query 2 against key 2.",
            steps["scores"].tensor[0, 0, 1, 1],
            (),
            ("ω22",),
        ),
        Printout(
            s,
            "attn_scores_2",
            "attn_scores_2 = query_2 @ keys.T",
            "Query 2's scores against all six keys.",
            steps["scores"].tensor[0, 0, 1],
            ("num_tokens",),
            tokens,
        ),
        Printout(
            s,
            "attn_weights_2",
            "attn_weights_2 = torch.softmax(attn_scores_2 / d_k**0.5, dim=-1)",
            f"Scaled by 1/√d_k = 1/√{D_OUT} (headwise's 1/√Dh), then the softmax.",
            steps["weights"].tensor[0, 0, 1],
            ("num_tokens",),
            tokens,
        ),
        Printout(
            s,
            "context_vec_2",
            "context_vec_2 = attn_weights_2 @ values",
            "Query 2's context vector: the values averaged with its weights.",
            steps["context"].tensor[0, 1],
            ("d_out",),
            out,
        ),
        Printout(
            "3.4.2",
            "sa_v1(inputs)",
            "torch.manual_seed(123); sa_v1 = SelfAttention_v1(d_in, d_out)",
            "The same weights in a class: every token's context vector (the second is context_vec_2).",
            steps["context"].tensor[0],
            ("num_tokens", "d_out"),
            out,
        ),
        Printout(
            "3.4.2",
            "sa_v2(inputs)",
            "torch.manual_seed(789); sa_v2 = SelfAttention_v2(d_in, d_out)",
            "nn.Linear layers instead of torch.rand: other initial weights, so other numbers.",
            v2["context"].tensor[0],
            ("num_tokens", "d_out"),
            out,
        ),
    ]
