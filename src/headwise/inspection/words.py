"""Sub-word tokens as words: how a tokenizer's pieces are shown, and a word's pieces merged into one.

    GPT-2 (byte-level BPE):  "Ġthe" starts a word (Ġ is its space), "vably" continues the one before
    SentencePiece (Llama, T5): "▁the" starts a word (▁ is its space), "ably" continues
    WordPiece (BERT, MiniLM):  "##ing" continues the word before, every other piece starts one
    special tokens ([CLS], <s>, </s>, <|endoftext|>, <pad>, ...) and pieces of punctuation alone are words of
    their own

pieces="raw" keeps the tokenizer's pieces as they are; "words" (the default of the views) shows each piece
as the text it stands for, a continuing piece after a "·" ("un", "·believ", "·ably"), one label per token;
"merged" makes each word one row and one column (MERGED, said on every view that shows it):

    weights (L, H, Nq, Nk) -> (L, H, Wq, Wk): a word's weight as a key is the sum over its key tokens (the
    share of attention it gets, so each row still sums to 1), its row as a query the mean over its query
    tokens (each piece's distribution counting once).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from ..pages.model import HeadMaps

PIECES = ("words", "raw", "merged")
MERGED = "a word's sub-tokens merged: weights summed over its key tokens, averaged over its query tokens"
WORD_STARTS = ("Ġ", "▁")  # GPT-2's byte-level space, SentencePiece's
CONTINUES = "##"  # WordPiece
CONTINUING = "·"  # how a continuing piece is shown
SPECIAL = re.compile(r"\[[A-Za-z_]+\]|<\|?/?[A-Za-z_]+\|?>")  # [CLS], [SEP], <s>, </s>, <|endoftext|>


def pieces_argument(value: object) -> str:
    """`value` if it is one of PIECES, else a ValueError naming the argument."""
    if value not in PIECES:
        raise ValueError(f"pieces must be one of {', '.join(PIECES)}, got {value!r:.40}")
    return value


def _punctuation(text: str) -> bool:
    return bool(text) and not any(character.isalnum() for character in text)


def split_words(tokens: Sequence[str]) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[int, ...]], ...]]:
    """The tokens' labels as words show them (one per token), and the words: (text, the positions of its
    pieces), in order. The tokenizer's kind is read from its pieces (module docstring)."""
    markers = any(token.startswith(WORD_STARTS) for token in tokens)
    labels: list[str] = []
    words: list[tuple[str, list[int]]] = []
    for i, token in enumerate(tokens):
        special = SPECIAL.fullmatch(token) is not None
        previous = words[-1][0] if words else None
        previous_closed = (
            previous is None or SPECIAL.fullmatch(previous) is not None or _punctuation(previous)
        )
        if special:
            starts, text = True, token
        elif markers:
            starts = token.startswith(WORD_STARTS) or previous_closed or _punctuation(token)
            text = token[1:] if token.startswith(WORD_STARTS) and len(token) > 1 else token
        else:
            starts = not (token.startswith(CONTINUES) and len(token) > 2) or previous_closed
            text = token if starts else token[len(CONTINUES) :]
        text = text.replace("Ċ", "⏎")  # GPT-2's newline
        if starts:
            labels.append(text)
            words.append((text, [i]))
        else:
            labels.append(CONTINUING + text)
            words[-1] = (words[-1][0] + text, [*words[-1][1], i])
    return tuple(labels), tuple((text, tuple(positions)) for text, positions in words)


def merged_weights(
    weights: torch.Tensor,
    query_words: Sequence[tuple[str, tuple[int, ...]]],
    key_words: Sequence[tuple[str, tuple[int, ...]]],
) -> torch.Tensor:
    """(..., Nq, Nk) -> (..., Wq, Wk): summed over each key word's pieces, averaged over each query word's."""
    nq, nk = weights.shape[-2:]
    keys = torch.zeros(nk, len(key_words), dtype=weights.dtype)  # (Nk, Wk): 1 where piece j is in word w
    for w, (_, positions) in enumerate(key_words):
        keys[list(positions), w] = 1
    queries = torch.zeros(len(query_words), nq, dtype=weights.dtype)  # (Wq, Nq): 1/count over a word
    for w, (_, positions) in enumerate(query_words):
        queries[w, list(positions)] = 1 / len(positions)
    return queries @ weights @ keys  # (..., Wq, Wk)


def as_pieces(maps: HeadMaps, pieces: str = "words") -> HeadMaps:
    """`maps` with its tokens shown as `pieces` says (module docstring): raw as they are, words relabelled,
    merged one row and column per word (the title says so)."""
    pieces = pieces_argument(pieces)
    if pieces == "raw":
        return maps
    query_labels, query_words = split_words(maps.query_tokens)
    key_labels, key_words = split_words(maps.key_tokens)
    if pieces == "words":
        return HeadMaps(maps.title, query_labels, key_labels, maps.weights, maps.pair_start)
    weights = merged_weights(maps.weights, query_words, key_words)  # (L, H, Wq, Wk)
    words = (tuple(text for text, _ in query_words), tuple(text for text, _ in key_words))
    start = maps.pair_start  # where sentence B starts: the word of its first piece
    pair_start = None if start is None else next(w for w, (_, at) in enumerate(query_words) if start in at)
    return HeadMaps(f"{maps.title} (words)", *words, weights, pair_start or None)
