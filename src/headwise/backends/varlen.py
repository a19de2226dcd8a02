"""Packed documents as one dense attention per document, batched by length (varlen style).

`documents(ids)` (and `documents(ids) & causal()`) over packed sequences, a query seeing the keys of
its own document only, is a batch of independent attentions: each document's queries, keys and values
are views of the sequence, consecutive documents of one length one batch of them, and each batch runs
through the sdpa backend (SDPA's fused kernel, causal by its is_causal flag; float32 training on the CPU
through flash_cpu's checked backward). The block-sparse backend hands such calls here; the outputs are
put back in sequence order (one copy of out).

It serves calls whose documents are long enough for a kernel call each to pay (MIN_LENGTH, and at most
MAX_RUNS runs of consecutive documents of one length); shorter ones share blocks better in the
block-sparse loop.

Shape legend: B batch, Hq / Hkv heads, N the sequence (Nq = Nk), Dh / Dv head widths; n documents of
one length L.
"""

from __future__ import annotations

import torch

from ..masks import And, Causal, Documents, Predicate
from . import sdpa

MIN_LENGTH = 128  # the shortest document that goes to a kernel call of its own
MAX_RUNS = 32  # the most kernel calls (runs of documents of one length) a call may make


def documents_of(predicate: Predicate | None) -> tuple[Documents, bool] | None:
    """(the Documents, whether causal() is and-ed to it) for documents(ids) or documents(ids) & causal()
    (either order) over packed ids, shared by queries and keys; else None."""
    terms = [predicate.first, predicate.second] if type(predicate) is And else [predicate]
    found = [t for t in terms if type(t) is Documents]
    causal = [t for t in terms if type(t) is Causal]
    if len(found) != 1 or len(found) + len(causal) != len(terms) or not found[0].packed:
        return None
    documents = found[0]
    same = documents.key_doc_ids is documents.query_doc_ids or torch.equal(
        documents.key_doc_ids, documents.query_doc_ids
    )
    return (documents, bool(causal)) if same else None


def runs(documents: Documents) -> list[list[tuple[int, int, int]]] | None:
    """Each batch row's documents as runs of consecutive documents of one length: per row, [(start,
    length L, count n), ...] in sequence order; None when a document is shorter than MIN_LENGTH or there
    are more than MAX_RUNS runs."""
    found = []
    for ids in documents.query_doc_ids:
        _, lengths = torch.unique_consecutive(ids, return_counts=True)  # (documents in the row,)
        row: list[tuple[int, int, int]] = []  # (start, L, n) of each run
        start = 0
        for length in lengths.tolist():
            if length < MIN_LENGTH:
                return None
            if row and row[-1][1] == length:
                row[-1] = (row[-1][0], length, row[-1][2] + 1)
            else:
                row.append((start, length, 1))
            start += length
        found.append(row)
    return found if sum(len(row) for row in found) <= MAX_RUNS else None


def per_document(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pieces: list[list[tuple[int, int, int]]],
    causal: bool,
    scale: float,
) -> torch.Tensor:
    """q (B, Hq, N, Dh), k (B, Hkv, N, Dh), v (B, Hkv, N, Dv), pieces from `runs` -> out (B, Hq, N, Dv),
    differentiable in q, k and v. A run of n documents of length L is one kernel call on views of q, k
    and v (n, H, L, D), no copy."""
    predicate = Causal() if causal else None
    rows = []
    for row, row_runs in enumerate(pieces):
        contexts = []
        for start, length, count in row_runs:
            queries, keys, values = (
                t[row, :, start : start + count * length].unflatten(1, (count, length)).transpose(0, 1)
                for t in (q, k, v)
            )  # (n, H, L, D), views
            context, _, _ = sdpa.attention(
                queries, keys, values, mask=None, predicate=predicate, scale=scale, dropout_p=0.0,
                score_mod=None, return_weights=False, return_lse=False,
            )  # fmt: skip  # (n, Hq, L, Dv)
            contexts.append(context.transpose(0, 1).flatten(1, 2))  # (Hq, n·L, Dv)
        rows.append(contexts[0] if len(contexts) == 1 else torch.cat(contexts, dim=1))  # (Hq, N, Dv)
    return rows[0][None] if len(rows) == 1 else torch.stack(rows)  # (B, Hq, N, Dv)
