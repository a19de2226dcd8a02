"""Section 3.5: causal attention, its mask and dropout (CausalAttention), every value it prints."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...masks import causal_mask, to_additive
from ..answers import matches
from ..example import LECTURE_TOKENS
from .printout import CONTEXT_LENGTH, Printout, book_inputs, context_shape, features, shape_of, traced
from .weights import (
    D_OUT,
    SEED,
    SEED_V2,
    book_seed,
    linear_layers,
    linear_module,
)

DROPOUT = 0.5  # the book's dropout rate in 3.5.2


def causal_attention() -> list[Printout]:
    """3.5: sa_v2's weights masked after the softmax and renormalised, then with -inf before it; dropout
    after torch.manual_seed(123); CausalAttention on a batch of two (seed 123)."""
    module = linear_module(linear_layers(SEED_V2, 3))  # sa_v2's weights
    x = book_inputs()[None]  # (1, 6, 3)
    plain = traced(module, x)
    weights = plain["weights"].tensor[0, 0]  # (6, 6)
    allowed = causal_mask(CONTEXT_LENGTH, CONTEXT_LENGTH)  # (6, 6), True = may attend
    masked_simple = weights * allowed  # (6, 6)
    renormalised = masked_simple / masked_simple.sum(dim=-1, keepdim=True)  # (6, 6)
    causal = traced(module, x, is_causal=True)
    dropping = linear_module(linear_layers(SEED_V2, 3), dropout=DROPOUT).train()
    book_seed(SEED)
    dropped = traced(dropping, x, is_causal=True)
    book_seed(SEED)
    example = F.dropout(torch.ones(CONTEXT_LENGTH, CONTEXT_LENGTH, dtype=torch.float64), DROPOUT)  # (6, 6)
    batch = torch.stack((book_inputs(), book_inputs()))  # (2, 6, 3) = (b, num_tokens, d_in)
    ca = traced(linear_module(linear_layers(SEED, 3)), batch, is_causal=True)
    tokens, square = LECTURE_TOKENS, ("num_tokens", "num_tokens")
    s = "3.5.1"
    return [
        Printout(
            s,
            "attn_weights",
            "attn_weights = torch.softmax(attn_scores / keys.shape[-1]**0.5, dim=-1)",
            "sa_v2's weights, before any mask: every token attends to every token.",
            weights,
            square,
            tokens,
        ),
        Printout(
            s,
            "mask_simple",
            "mask_simple = torch.tril(torch.ones(context_length, context_length))",
            "The causal mask (headwise.masks.causal_mask): 1 where a token may see a key, at or before it.",
            allowed.to(torch.float64),
            square,
            tokens,
        ),
        Printout(
            s,
            "masked_simple",
            "masked_simple = attn_weights * mask_simple",
            "The weights above the diagonal zeroed: the rows no longer sum to 1.",
            masked_simple,
            square,
            tokens,
        ),
        Printout(
            s,
            "masked_simple_norm",
            "masked_simple_norm = masked_simple / row_sums",
            "Each row divided by its sum: a distribution over the visible tokens again.",
            renormalised,
            square,
            tokens,
        ),
        Printout(
            s,
            "masked",
            "masked = attn_scores.masked_fill(mask.bool(), -torch.inf)",
            "The -inf trick: the scores of future tokens set to -inf (headwise adds its mask as 0 / -inf).",
            plain["scores"].tensor[0, 0] + to_additive(allowed, torch.float64),
            square,
            tokens,
        ),
        Printout(
            s,
            "attn_weights",
            "attn_weights = torch.softmax(masked / keys.shape[-1]**0.5, dim=-1)",
            "The softmax gives exactly 0 to -inf: the same weights as masked_simple_norm, in one step.",
            causal["weights"].tensor[0, 0],
            square,
            tokens,
            (matches(causal["weights"].tensor[0, 0], renormalised, "equal to masked_simple_norm"),),
        ),
        Printout(
            "3.5.2",
            "dropout(example)",
            "torch.manual_seed(123); dropout = torch.nn.Dropout(0.5)",
            "Dropout on a matrix of ones: about half the entries zeroed, the rest scaled by 1/(1 - 0.5) = 2.",
            example,
            square,
            tokens,
        ),
        Printout(
            "3.5.2",
            "dropout(attn_weights)",
            "torch.manual_seed(123); dropout(attn_weights)",
            "The same draw on the causal weights (headwise's dropout step, in training mode only).",
            dropped["dropout"].tensor[0, 0],
            square,
            tokens,
        ),
        Printout(
            "3.5.3",
            "batch.shape",
            "batch = torch.stack((inputs, inputs), dim=0); batch.shape",
            "Two inputs with six tokens each, each token 3 wide.",
            shape_of(batch),
            (),
            ("b", "num_tokens", "d_in"),
        ),
        Printout(
            "3.5.3",
            "context_vecs",
            "torch.manual_seed(123); ca = CausalAttention(d_in, d_out, 6, 0.0)",
            "A batch of two copies of the inputs through causal attention: two equal (6, 2) results.",
            ca["context"].tensor,
            ("b", "num_tokens", "d_out"),
            features(D_OUT),
        ),
        context_shape("3.5.3", ca["context"].tensor),
    ]
