"""Section 3.6: multi-head attention, the wrapper of heads and the weight splits, every value it prints."""

from __future__ import annotations

import torch

from ...functional import attention
from ...trace import Trace
from ..answers import matches
from .printout import Printout, book_inputs, context_shape, features, traced
from .weights import (
    D_OUT,
    SEED,
    linear_layers,
    linear_module,
    weight_split_module,
)

# 3.6.2's tensor `a` of shape (b, num_heads, num_tokens, head_dim) = (1, 2, 3, 4), as printed in the book
HEADS_EXAMPLE = (
    (
        (0.2745, 0.6584, 0.2775, 0.8573),
        (0.8993, 0.0390, 0.9268, 0.7388),
        (0.7179, 0.7058, 0.9156, 0.4340),
    ),
    (
        (0.0772, 0.3565, 0.1479, 0.5331),
        (0.4066, 0.2318, 0.4545, 0.9737),
        (0.4606, 0.5159, 0.4220, 0.5786),
    ),
)


def multi_head_attention(causal_context: torch.Tensor) -> tuple[list[Printout], Trace]:
    """3.6: the wrapper of two CausalAttention heads (side by side: headwise's context with two heads, the
    first being 3.5.3's `causal_context` (2, 6, 2) again), the weight-split MultiHeadAttention (seed 123,
    d_out = 2, two heads of width 1, out_proj with a bias) and the batched matrix product of 3.6.2's tensor
    `a`. Also returns the trace of the weight-split module, whose weights the head view draws."""
    batch = torch.stack((book_inputs(), book_inputs()))  # (2, 6, 3)
    wrapper = traced(linear_module(linear_layers(SEED, 6)), batch, is_causal=True)
    split = traced(weight_split_module(), batch, is_causal=True)
    a = torch.tensor(HEADS_EXAMPLE, dtype=torch.float64)[
        None
    ]  # (1, 2, 3, 4) = (b, num_heads, num_tokens, head_dim)
    products = traced(attention, a, a, a)["scores"].tensor  # (1, 2, 3, 3)
    columns = [f"h{h}:{i}" for h in range(2) for i in range(D_OUT)]
    printouts = [
        Printout(
            "3.6.1",
            "context_vecs",
            "mha = MultiHeadAttentionWrapper(d_in, d_out, 6, 0.0, num_heads=2)",
            "Two causal heads side by side (columns h0:0, h0:1 from head 0, h1:0, h1:1 from head 1): "
            "head 0 is 3.5.3's CausalAttention, drawn first.",
            wrapper["context"].tensor,
            ("b", "num_tokens", "num_heads·d_out"),
            tuple(columns),
            (matches(wrapper["context"].tensor[..., :D_OUT], causal_context, "head 0 is 3.5.3's result"),),
        ),
        context_shape("3.6.1", wrapper["context"].tensor),
        Printout(
            "3.6.2",
            "context_vecs",
            "mha = MultiHeadAttention(d_in, d_out=2, 6, 0.0, num_heads=2)",
            "Weight splits: one W_query (3 × 2) split into two heads of width 1, then out_proj (2 × 2, with "
            "a bias): headwise.MultiHeadAttention(3, 2, head_dim=1, out_dim=2, qkv_bias=False).",
            split["output"].tensor,
            ("b", "num_tokens", "d_out"),
            features(D_OUT),
        ),
        context_shape("3.6.2", split["output"].tensor),
        Printout(
            "3.6.2",
            "a @ a.transpose(2, 3)",
            "a @ a.transpose(2, 3)   (a: (1, 2, 3, 4))",
            "A batched matrix product multiplies each head's matrix with its own transpose "
            "(first_head @ first_head.T, second_head @ second_head.T): headwise's scores step.",
            products,
            ("b", "num_heads", "num_tokens", "num_tokens"),
            features(3),
        ),
        *(
            Printout(
                "3.6.2",
                f"{which} head",
                f"{which.lower()}_head = a[0, {head}, :, :]; {which.lower()}_head @ {which.lower()}_head.T",
                f"The {which.lower()} head alone: the same numbers as head {head} of the batched product.",
                a[0, head] @ a[0, head].T,
                ("num_tokens", "num_tokens"),
                features(3),
                (
                    matches(
                        products[0, head], a[0, head] @ a[0, head].T, f"head {head} of a @ a.transpose(2, 3)"
                    ),
                ),
            )
            for head, which in enumerate(("First", "Second"))
        ),
    ]
    return printouts, split
