"""Masks: True = may attend (boolean) or a float added to the scores (-inf = may not attend).

Causal masks are aligned bottom-right: with Nq queries and Nk keys, query i may see key j when
j <= i + (Nk - Nq), so the last query sees the last key (as in FlashAttention >= 2.1 and in KV-cache
decoding). When Nq > Nk the first Nq - Nk queries see nothing and their output is zero.

The package, in the order of the data flow:
- tensors: tensor masks (causal_mask, combine, to_additive, check_mask, check_padding_mask);
- predicates: masks as rules of the indices, evaluated block by block: the Predicate base class, its
  block bounds and the combinators &, | and ~ (And, Or, Not);
- rules: the predicates users build (causal, sliding_window, key_lengths, documents, prefix_lm) and
  split_causal (causal=True becoming causal());
- spec: a predicate as a string and tensors, for torch's custom op (what torch.compile traces);
- score_mods: changes to the scaled scores before masking (alibi, softcap, chained with .then());
- pictures: what print() shows of a predicate or a modifier;
- common: the index tensors and argument checks they share.

How to add a mask (a new predicate), in five steps:

1. The class, in rules.py beside the others: a subclass of predicates.Predicate made a frozen dataclass by
   common.rule (fields of plain numbers: equal by value) or common.data_rule (fields holding tensors: equal
   only to itself). It must define `title` (a property: the call that makes it, e.g. "causal()", which
   repr() shows) and `allowed(batch_idx, head_idx, q_idx, kv_idx, num_queries, num_keys)`, the elementwise
   rule: index tensors (B, 1, 1, 1), (1, H, 1, 1), (Nq_block, 1), (1, Nk_block) -> bool broadcastable to
   (B, H, Nq_block, Nk_block), True = may attend, in tensor operations only (flex calls it as its mask_mod).
2. Its block bounds, so that chunked and blocksparse skip what it rules out: the vectorised
   `blocks_empty` / `blocks_full(q_starts, q_ends, k_starts, k_ends, num_queries, num_keys)`, bounds
   (Qn, 1) and (1, Kn) int64 -> bool broadcastable to (Qn, Kn), True only when no pair (every pair) of the
   block is allowed: False is always safe, and the default (nothing known, never skip). The scalar
   `block_is_empty` / `block_is_full` follow from them (a subclass may define those instead; the plan then
   asks them block by block). A predicate holding data also defines `check(batch, heads, num_queries,
   num_keys)`, a ValueError naming its argument when the data does not fit the call, and `sizes()`, the
   (B, Nq, Nk) its data fixes (None where any fits).
3. Its constructor, a function in rules.py that checks its arguments (common.check_counts,
   common.check_tensor) and returns the class; both exported here (the import and __all__).
4. Its spec, in spec.py: a branch in `_encode` (by exact type) and one in `_build`, so that torch.compile
   keeps it as data (headwise::predicate_attention) instead of materialising it into a dense (B, H, Nq, Nk)
   mask. The Triton backend compiles the kinds its make_plan knows and materialises the others.
5. Its tests: a case in tests/mask_catalogue.py's catalogue(), the predicate and its dense reference by
   loops(); tests/masks/test_masks.py holds it to that reference elementwise, block by block and in its
   bounds (test_block_bounds_are_never_wrong), and, through `everything`, tests/backends/test_blocksparse.py
   checks that the plan never skips a visible pair, blocksparse equals the reference with gradients, the
   spec round-trips; and its refusals are in test_bad_arguments_raise_with_a_message.
"""

from .predicates import And, Not, Or, Predicate
from .rules import (
    Causal,
    Documents,
    KeyLengths,
    PrefixLM,
    SlidingWindow,
    causal,
    documents,
    key_lengths,
    prefix_lm,
    sliding_window,
    split_causal,
)
from .score_mods import ALiBi, Chain, ScoreModifier, Softcap, alibi, alibi_slopes, softcap
from .tensors import Mask, causal_mask, check_mask, check_padding_mask, combine, to_additive, with_predicate

__all__ = [
    "ALiBi",
    "And",
    "Causal",
    "Chain",
    "Documents",
    "KeyLengths",
    "Mask",
    "Not",
    "Or",
    "Predicate",
    "PrefixLM",
    "ScoreModifier",
    "SlidingWindow",
    "Softcap",
    "alibi",
    "alibi_slopes",
    "causal",
    "causal_mask",
    "check_mask",
    "check_padding_mask",
    "combine",
    "documents",
    "key_lengths",
    "prefix_lm",
    "sliding_window",
    "softcap",
    "split_causal",
    "to_additive",
    "with_predicate",
]
