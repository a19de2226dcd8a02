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
- spec: a predicate as a string and tensors, for torch's custom op (torch.compile, TorchScript);
- score_mods: changes to the scaled scores before masking (alibi, softcap, chained with .then());
- pictures: what print() shows of a predicate or a modifier;
- common: the index tensors and argument checks they share.
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
