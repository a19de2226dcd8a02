"""Section 3.3: self-attention without trainable weights, every value it prints."""

from __future__ import annotations

import torch

from ...functional import attention
from ..answers import matches
from ..example import LECTURE_TOKENS
from .printout import Printout, book_inputs, features, traced
from .weights import (
    D_IN,
)


def simplified_attention() -> list[Printout]:
    """3.3: attention without trainable weights, scores = plain dot products (scale 1), for the second
    token ("journey") and then for all tokens."""
    inputs = book_inputs()  # (6, 3)
    x = inputs[None, None]  # (1, 1, 6, 3) = (b, num_heads, num_tokens, d_in)
    one = traced(attention, x[:, :, 1:2], x, x, scale=1.0)  # the query "journey" against all tokens
    scores_2 = one["scores"].tensor[0, 0, 0]  # (6,)
    exp = torch.exp(scores_2)  # (6,)
    naive = exp / exp.sum()  # (6,)
    weights_2 = one["weights"].tensor[0, 0, 0]  # (6,)
    context_2 = one["context_by_head"].tensor[0, 0, 0]  # (3,)
    every = traced(attention, x, x, x, scale=1.0)
    weights = every["weights"].tensor[0, 0]  # (6, 6)
    scores = every["scores"].tensor[0, 0]  # (6, 6)
    res = sum(a * b for a, b in zip(inputs[0].tolist(), inputs[1].tolist(), strict=True))  # the book's loop
    loops = torch.tensor([[float(row @ column) for column in inputs] for row in inputs], dtype=torch.float64)
    tokens, dims = LECTURE_TOKENS, features(D_IN)
    s = "3.3.1"
    return [
        Printout(
            s,
            "attn_scores_2",
            "query = inputs[1]; attn_scores_2[i] = torch.dot(x_i, query)",
            "The query's dot product with each token: the unnormalised attention scores ω₂ᵢ.",
            scores_2,
            ("num_tokens",),
            tokens,
        ),
        Printout(
            s,
            "res",
            "res = Σ inputs[0][idx] * query[idx]   (= torch.dot(inputs[0], query))",
            "A dot product is the sum of elementwise products, here added up one by one.",
            torch.tensor(res, dtype=torch.float64),
            (),
            ("res",),
        ),
        Printout(
            s,
            "torch.dot(inputs[0], query)",
            "print(torch.dot(inputs[0], query))",
            "The same dot product at once: headwise's first score.",
            scores_2[0],
            (),
            ("dot",),
            (matches(scores_2[0], torch.tensor(res, dtype=torch.float64), "equal to res"),),
        ),
        Printout(
            s,
            "attn_weights_2_tmp",
            "attn_weights_2_tmp = attn_scores_2 / attn_scores_2.sum()",
            "Divided by their sum, the scores become weights that sum to 1 (not yet a softmax).",
            scores_2 / scores_2.sum(),
            ("num_tokens",),
            tokens,
        ),
        Printout(
            s,
            "attn_weights_2_tmp.sum()",
            "attn_weights_2_tmp.sum()",
            "They sum to 1.",
            (scores_2 / scores_2.sum()).sum(),
            (),
            ("sum",),
        ),
        Printout(
            s,
            "attn_weights_2_naive",
            "softmax_naive(x) = torch.exp(x) / torch.exp(x).sum(dim=0)",
            "The softmax: exponentials normalised, so the weights are positive and sum to 1.",
            naive,
            ("num_tokens",),
            tokens,
        ),
        Printout(
            s,
            "attn_weights_2_naive.sum()",
            "attn_weights_2_naive.sum()",
            "They sum to 1.",
            naive.sum(),
            (),
            ("sum",),
        ),
        Printout(
            s,
            "attn_weights_2",
            "attn_weights_2 = torch.softmax(attn_scores_2, dim=0)",
            "headwise's softmax over the keys (the reference backend): the same weights.",
            weights_2,
            ("num_tokens",),
            tokens,
            (matches(weights_2, naive, "equal to softmax_naive"),),
        ),
        Printout(
            s, "attn_weights_2.sum()", "attn_weights_2.sum()", "They sum to 1.", weights_2.sum(), (), ("sum",)
        ),
        Printout(
            s,
            "context_vec_2",
            "context_vec_2 = Σ attn_weights_2[i] * x_i",
            "The context vector z₂: the inputs averaged with the attention weights.",
            context_2,
            ("d_in",),
            dims,
        ),
        Printout(
            "3.3.2",
            "attn_scores",
            "for i, x_i in enumerate(inputs): for j, x_j in enumerate(inputs): torch.dot(x_i, x_j)",
            "Every token's dot product with every token, in two loops: one row of scores per query.",
            loops,
            ("num_tokens", "num_tokens"),
            tokens,
        ),
        Printout(
            "3.3.2",
            "attn_scores",
            "attn_scores = inputs @ inputs.T",
            "The same in one matrix product: headwise's scores.",
            scores,
            ("num_tokens", "num_tokens"),
            tokens,
            (matches(scores, loops, "equal to the loops' attn_scores"),),
        ),
        Printout(
            "3.3.2",
            "attn_weights",
            "attn_weights = torch.softmax(attn_scores, dim=-1)",
            "The softmax of each row: row i is how much token i attends to each token.",
            weights,
            ("num_tokens", "num_tokens"),
            tokens,
        ),
        Printout(
            "3.3.2",
            "Row 2 sum",
            "row_2_sum = sum([0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581])",
            "The second row's printed weights, added up: 1.",
            weights[1].round(decimals=4).sum(),
            (),
            ("sum",),
        ),
        Printout(
            "3.3.2",
            "All row sums",
            "attn_weights.sum(dim=-1)",
            "Every row sums to 1.",
            weights.sum(dim=-1),
            ("num_tokens",),
            tokens,
        ),
        Printout(
            "3.3.2",
            "all_context_vecs",
            "all_context_vecs = attn_weights @ inputs",
            "All context vectors at once; the second row is context_vec_2.",
            every["context_by_head"].tensor[0, 0],
            ("num_tokens", "d_in"),
            dims,
            (matches(every["context_by_head"].tensor[0, 0, 1], context_2, "row 2 is context_vec_2"),),
        ),
        Printout(
            "3.3.2",
            "Previous 2nd context vector",
            'print("Previous 2nd context vector:", context_vec_2)',
            "3.3.1's context_vec_2, the second row above.",
            context_2,
            ("d_in",),
            dims,
        ),
    ]
