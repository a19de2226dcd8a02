"""The predicates users build: causal(), sliding_window(), key_lengths(), documents() and prefix_lm().

Each is a class (Causal, SlidingWindow, KeyLengths, Documents, PrefixLM) with its elementwise rule `allowed`
and its vectorised block bounds `blocks_empty` / `blocks_full`, and a constructor that checks its arguments.
Positions are aligned bottom-right: query i stands at key position i + Nk - Nq. split_causal turns
headwise.attention's causal=True into causal(), once, on entry. The base class and &, |, ~ are in
predicates.py.
"""

from __future__ import annotations

import numbers

import torch

from .common import check_counts, check_tensor, data_rule, describe, non_decreasing, rule
from .predicates import Or, Predicate
from .tensors import Mask

MAX_WINDOW_SIDE = 2**62  # a sliding window's side: key positions are int64, and no sequence is this long


@rule
class Causal(Predicate):
    """Query i sees the keys j <= i + Nk - Nq (aligned bottom-right: the last query sees the last key)."""

    @property
    def title(self) -> str:
        return "causal()"

    @property
    def translation_invariant(self) -> bool:
        return True

    def allowed(
        self,
        batch_idx: torch.Tensor,
        head_idx: torch.Tensor,
        q_idx: torch.Tensor,
        kv_idx: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        return kv_idx <= q_idx + (num_keys - num_queries)  # (Nq_block, Nk_block)

    def blocks_empty(
        self,
        q_starts: torch.Tensor,
        q_ends: torch.Tensor,
        k_starts: torch.Tensor,
        k_ends: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        return k_starts > q_ends - 1 + (num_keys - num_queries)  # a block's last query sees none of its keys

    def blocks_full(
        self,
        q_starts: torch.Tensor,
        q_ends: torch.Tensor,
        k_starts: torch.Tensor,
        k_ends: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        return k_ends - 1 <= q_starts + (num_keys - num_queries)  # its first query sees all of its keys


@rule
class SlidingWindow(Predicate):
    """Query i sees the keys j with own - left <= j <= own + right, own = i + Nk - Nq its position."""

    left: int
    right: int

    @property
    def title(self) -> str:
        return f"sliding_window(left={self.left}, right={self.right})"

    @property
    def translation_invariant(self) -> bool:
        return True

    def allowed(
        self,
        batch_idx: torch.Tensor,
        head_idx: torch.Tensor,
        q_idx: torch.Tensor,
        kv_idx: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        own = q_idx + (num_keys - num_queries)  # (Nq_block, 1): each query's own key position
        return (kv_idx >= own - self.left) & (kv_idx <= own + self.right)  # (Nq_block, Nk_block)

    def blocks_empty(
        self,
        q_starts: torch.Tensor,
        q_ends: torch.Tensor,
        k_starts: torch.Tensor,
        k_ends: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        shift = num_keys - num_queries
        return (k_ends - 1 < q_starts + shift - self.left) | (k_starts > q_ends - 1 + shift + self.right)

    def blocks_full(
        self,
        q_starts: torch.Tensor,
        q_ends: torch.Tensor,
        k_starts: torch.Tensor,
        k_ends: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        shift = num_keys - num_queries
        return (k_starts >= q_ends - 1 + shift - self.left) & (k_ends - 1 <= q_starts + shift + self.right)


@data_rule
class KeyLengths(Predicate):
    """Keys at positions >= lengths[b] are padding, seen by no query; lengths () or (B,), integer."""

    lengths: torch.Tensor  # () or (B,)
    shortest: int  # the smallest and largest length, so that block bounds need no tensor work
    longest: int
    argument: str = "lengths"  # the name the caller gave the lengths, for error messages

    @property
    def title(self) -> str:
        return f"key_lengths({describe(self.lengths)})"

    def allowed(
        self,
        batch_idx: torch.Tensor,
        head_idx: torch.Tensor,
        q_idx: torch.Tensor,
        kv_idx: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        lengths = self.lengths.to(kv_idx.device)  # () or (B,)
        if lengths.dim() == 1:
            lengths = lengths[batch_idx]  # (B, 1, 1, 1)
        return kv_idx < lengths  # (B|1, 1, 1, Nk_block)

    def blocks_empty(
        self,
        q_starts: torch.Tensor,
        q_ends: torch.Tensor,
        k_starts: torch.Tensor,
        k_ends: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        return k_starts >= self.longest

    def blocks_full(
        self,
        q_starts: torch.Tensor,
        q_ends: torch.Tensor,
        k_starts: torch.Tensor,
        k_ends: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        return k_ends <= self.shortest

    def check(self, batch: int, heads: int, num_queries: int, num_keys: int) -> None:
        if self.lengths.dim() == 1 and self.lengths.shape[0] != batch:
            raise ValueError(
                f"{self.argument} has {self.lengths.shape[0]} entries but the batch has B = {batch}; "
                "expected one length per batch element"
            )

    def sizes(self) -> tuple[int | None, int | None, int | None]:
        return (self.lengths.shape[0] if self.lengths.dim() == 1 else None, None, None)


@data_rule
class Documents(Predicate):
    """A query sees only the keys of its own document: query_doc_ids (B, Nq), key_doc_ids (B, Nk)."""

    query_doc_ids: torch.Tensor  # (B, Nq)
    key_doc_ids: torch.Tensor  # (B, Nk)
    packed: bool  # both non-decreasing along the sequence: a block's end ids bound the ids inside it

    @property
    def title(self) -> str:
        keys = "" if self.key_doc_ids is self.query_doc_ids else f", {describe(self.key_doc_ids)}"
        return f"documents({describe(self.query_doc_ids)}{keys})"

    def allowed(
        self,
        batch_idx: torch.Tensor,
        head_idx: torch.Tensor,
        q_idx: torch.Tensor,
        kv_idx: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        query_ids = self.query_doc_ids.to(q_idx.device)[batch_idx, q_idx]  # (B, 1, Nq_block, 1)
        key_ids = self.key_doc_ids.to(kv_idx.device)[batch_idx, kv_idx]  # (B, 1, 1, Nk_block)
        return query_ids == key_ids  # (B, 1, Nq_block, Nk_block)

    def blocks_empty(
        self,
        q_starts: torch.Tensor,
        q_ends: torch.Tensor,
        k_starts: torch.Tensor,
        k_ends: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        ends = self._block_ends(q_starts, q_ends, k_starts, k_ends)
        if ends is None:
            return torch.tensor(False)
        q_first, q_last, k_first, k_last = ends  # each (B, Qn, 1) or (B, 1, Kn)
        return ((q_last < k_first) | (k_last < q_first)).all(0)  # (Qn, Kn): no overlap of the id ranges

    def blocks_full(
        self,
        q_starts: torch.Tensor,
        q_ends: torch.Tensor,
        k_starts: torch.Tensor,
        k_ends: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        ends = self._block_ends(q_starts, q_ends, k_starts, k_ends)
        if ends is None:
            return torch.tensor(False)
        q_first, q_last, k_first, k_last = ends  # each (B, Qn, 1) or (B, 1, Kn)
        return ((q_first == q_last) & (q_last == k_first) & (k_first == k_last)).all(0)  # one document

    def _block_ends(
        self, q_starts: torch.Tensor, q_ends: torch.Tensor, k_starts: torch.Tensor, k_ends: torch.Tensor
    ) -> tuple[torch.Tensor, ...] | None:
        """The ids of each block's first and last query, (B, Qn, 1), and first and last key, (B, 1, Kn),
        when the ids are packed (so they bound the ids in between); else None. An empty block's ends are
        clamped into the sequence: it is then judged as a neighbour, which no caller relies on."""
        queries, keys = self.query_doc_ids, self.key_doc_ids  # (B, Nq), (B, Nk)
        if not self.packed or 0 in (queries.shape[1], keys.shape[1]):
            return None
        device = queries.device
        q_index = [t.to(device).clamp(0, queries.shape[1] - 1) for t in (q_starts, q_ends - 1)]  # (Qn, 1)
        k_index = [t.to(device).clamp(0, keys.shape[1] - 1) for t in (k_starts, k_ends - 1)]  # (1, Kn)
        return (*(queries[:, i] for i in q_index), *(keys[:, i] for i in k_index))

    def check(self, batch: int, heads: int, num_queries: int, num_keys: int) -> None:
        for name, ids, axis, length in (
            ("query_doc_ids", self.query_doc_ids, "Nq", num_queries),
            ("key_doc_ids", self.key_doc_ids, "Nk", num_keys),
        ):
            if tuple(ids.shape) != (batch, length):
                expected = f"(B, {axis}) = {(batch, length)}"
                raise ValueError(f"{name} has shape {tuple(ids.shape)}, expected {expected}")

    def sizes(self) -> tuple[int | None, int | None, int | None]:
        return (self.query_doc_ids.shape[0], self.query_doc_ids.shape[1], self.key_doc_ids.shape[1])


class PrefixLM(Or):
    """causal() | the keys of the prefix: bidirectional within the prefix, causal after it."""

    @property
    def title(self) -> str:
        second = self.second
        assert isinstance(second, KeyLengths)  # as prefix_lm() makes it
        return f"prefix_lm({describe(second.lengths)})"


def causal() -> Causal:
    """Query i sees the keys j <= i + Nk - Nq: aligned bottom-right, so the last query sees the last key
    (FlashAttention >= 2.1, KV-cache decoding); with Nq > Nk the first Nq - Nk queries see nothing."""
    return Causal()


def sliding_window(left: int, right: int = 0) -> SlidingWindow:
    """Query i sees the keys j with own - left <= j <= own + right, where own = i + Nk - Nq is its
    bottom-right aligned position (FlashAttention's window_size=(left, right)).

    With right=0 the window is causal: no key after the query's own position. left=right=0 is the diagonal
    alone; a side at least as long as the sequence does not limit that side (at most 2**62).
    """
    check_counts(left=left, right=right)
    for name, side in (("left", left), ("right", right)):
        if side > MAX_WINDOW_SIDE:  # its positions are int64 tensors
            raise ValueError(
                f"{name} must be at most 2**62 (a side as long as the sequence already leaves it unlimited), "
                f"got {side:.3g}"
            )
    return SlidingWindow(int(left), int(right))


def key_lengths(lengths: torch.Tensor | int) -> KeyLengths:
    """Key padding: the keys at positions >= lengths[b] are padding that no query sees.

    lengths: integer tensor (B,), or one int for every batch element; a length >= Nk means no padding.
    """
    return _key_lengths(lengths, "lengths")


def documents(query_doc_ids: torch.Tensor, key_doc_ids: torch.Tensor | None = None) -> Documents:
    """Packed sequences: a query sees only the keys of its own document.

    query_doc_ids: integer (B, Nq), the document of each query; key_doc_ids: integer (B, Nk), the document
    of each key, by default query_doc_ids (self-attention). `documents(ids) & causal()` is causal language
    modelling over packed documents. When both are non-decreasing along the sequence (packed), the
    block_is_empty/block_is_full bounds read the ids at the block's ends; otherwise they say False.
    """
    check_tensor(query_doc_ids, "query_doc_ids", "an integer tensor of shape (B, Nq)", dims=(2,))
    key_doc_ids = query_doc_ids if key_doc_ids is None else key_doc_ids
    check_tensor(key_doc_ids, "key_doc_ids", "an integer tensor of shape (B, Nk)", dims=(2,))
    if key_doc_ids.shape[0] != query_doc_ids.shape[0] or key_doc_ids.device != query_doc_ids.device:
        raise ValueError(
            f"key_doc_ids has {key_doc_ids.shape[0]} rows on {key_doc_ids.device} but query_doc_ids has "
            f"{query_doc_ids.shape[0]} on {query_doc_ids.device}; expected one row per batch element in "
            "both, on one device"
        )
    packed = non_decreasing(query_doc_ids) and non_decreasing(key_doc_ids)
    return Documents(query_doc_ids, key_doc_ids, packed)


def prefix_lm(prefix_lengths: torch.Tensor | int) -> PrefixLM:
    """Prefix language modelling: every query sees the keys before prefix_lengths[b] (bidirectional
    within the prefix), and causal() after it (bottom-right aligned).

    prefix_lengths: integer tensor (B,), or one int for every batch element.
    """
    return PrefixLM(Causal(), _key_lengths(prefix_lengths, "prefix_lengths"))


def _key_lengths(lengths: object, name: str) -> KeyLengths:
    """KeyLengths from an int or an integer tensor () or (B,) of non-negative lengths, checked as `name`."""
    if isinstance(lengths, numbers.Integral) and not isinstance(lengths, bool):
        lengths = torch.tensor(int(lengths))  # ()
    lengths = check_tensor(lengths, name, "an int or an integer tensor of shape (B,)", dims=(0, 1))
    if (lengths < 0).any():
        raise ValueError(f"{name} must be >= 0, got {lengths.tolist()}")
    shortest, longest = (int(lengths.min()), int(lengths.max())) if lengths.numel() else (0, 0)
    return KeyLengths(lengths, shortest, longest, name)


def split_causal(mask: Mask | Predicate | None, causal: bool) -> tuple[Mask | None, Predicate | None]:
    """A mask argument (a tensor, a Predicate or None) and a causal flag, normalised as headwise.attention
    does: -> (tensor mask or None, predicate or None), causal=True becoming causal() (& a predicate mask)."""
    predicate, tensor = (mask, None) if isinstance(mask, Predicate) else (None, mask)
    if causal:
        predicate = Causal() if predicate is None else predicate & Causal()
    return tensor, predicate
