"""The masks package's catalogue for the tests: each predicate (causal, key lengths, packed and unpacked
documents, prefix LM, sliding windows) and a few &, | and ~ of them, each with its dense reference
(B, 1, Nq, Nk) written with plain loops (or torch.tril). tests/masks/test_masks.py holds the predicates to
it; tests/backends/test_blocksparse.py runs the block-sparse backend on each."""

from __future__ import annotations

import torch

from headwise.masks import Predicate, causal, documents, key_lengths, prefix_lm, sliding_window

B = 2  # batch size of the data-dependent cases
WINDOWS = [(0, 0), (1, 0), (2, 1), (0, 3), (50, 0), (50, 50)]  # (left, right): 0 and beyond the length


def loops(nq: int, nk: int, rule) -> torch.Tensor:
    """The dense mask (B, 1, Nq, Nk) with rule(b, i, j) at each entry, by plain loops."""
    rows = [[[bool(rule(b, i, j)) for j in range(nk)] for i in range(nq)] for b in range(B)]
    return torch.tensor(rows, dtype=torch.bool).reshape(B, 1, nq, nk)


def catalogue(nq: int, nk: int) -> dict[str, tuple[Predicate, torch.Tensor]]:
    """Name -> (predicate, its dense reference (B, 1, Nq, Nk)) for attention with Nq queries, Nk keys."""
    gen = torch.Generator().manual_seed(100 * nq + nk)
    shift = nk - nq  # query i stands at key position i + shift
    lengths = torch.randint(0, nk + 2, (B,), generator=gen)  # (B,), some beyond Nk
    prefix = torch.randint(0, nk + 2, (B,), generator=gen)  # (B,)
    query_docs = torch.randint(0, 3, (B, nq), generator=gen).sort(dim=1).values  # (B, Nq), packed
    key_docs = torch.randint(0, 3, (B, nk), generator=gen).sort(dim=1).values  # (B, Nk), packed
    query_mixed = torch.randint(0, 3, (B, nq), generator=gen)  # (B, Nq), not packed
    key_mixed = torch.randint(0, 3, (B, nk), generator=gen)  # (B, Nk), not packed
    cases = {
        "causal": (causal(), torch.ones(nq, nk, dtype=torch.bool).tril(diagonal=shift).expand(B, 1, nq, nk)),
        "lengths": (key_lengths(lengths), loops(nq, nk, lambda b, i, j: j < lengths[b])),
        "length 3": (key_lengths(3), loops(nq, nk, lambda b, i, j: j < 3)),
        "packed": (
            documents(query_docs, key_docs),
            loops(nq, nk, lambda b, i, j: query_docs[b, i] == key_docs[b, j]),
        ),
        "mixed": (
            documents(query_mixed, key_mixed),
            loops(nq, nk, lambda b, i, j: query_mixed[b, i] == key_mixed[b, j]),
        ),
        "prefix": (prefix_lm(prefix), loops(nq, nk, lambda b, i, j: j <= i + shift or j < prefix[b])),
        "prefix 2": (prefix_lm(2), loops(nq, nk, lambda b, i, j: j <= i + shift or j < 2)),
    }
    if nq == nk:
        self_docs = loops(nq, nk, lambda b, i, j: key_mixed[b, i] == key_mixed[b, j])
        cases["self"] = (documents(key_mixed), self_docs)
    for left, right in WINDOWS:
        window = loops(
            nq, nk, lambda b, i, j, left=left, right=right: i + shift - left <= j <= i + shift + right
        )
        cases[f"window {left}, {right}"] = (sliding_window(left, right), window)
    return cases


def combinations(nq: int, nk: int) -> list[tuple[Predicate, torch.Tensor]]:
    """A few &, | and ~ of the catalogue's predicates, with their dense references."""
    cases = catalogue(nq, nk)
    (c, rc), (lengths, rl), (docs, rd) = cases["causal"], cases["lengths"], cases["packed"]
    (prefix, rp), (window, rw) = cases["prefix"], cases["window 2, 1"]
    return [
        (docs & c, rd & rc),
        (prefix | window, rp | rw),
        (~c & lengths, ~rc & rl),
        (~(docs | window), ~(rd | rw)),
    ]


def everything(nq: int, nk: int) -> list[tuple[Predicate, torch.Tensor]]:
    """The catalogue's predicates, then its combinations, each with its dense reference (B, 1, Nq, Nk)."""
    return list(catalogue(nq, nk).values()) + combinations(nq, nk)
