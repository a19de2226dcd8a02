"""Masks: True = may attend (boolean) or a float added to the scores (-inf = may not attend).

Causal masks are aligned bottom-right: with Nq queries and Nk keys, query i may see key j when
j <= i + (Nk - Nq), so the last query sees the last key (as in FlashAttention >= 2.1 and in KV-cache
decoding). When Nq > Nk the first Nq - Nk queries see nothing and their output is zero.

Mask predicates say whether a query may attend to a key from their indices, without building the (Nq, Nk)
matrix, so that a chunked backend can ask for one block at a time and skip the blocks a predicate rules
out: causal(), sliding_window(), key_lengths(), documents() and prefix_lm(), combined with &, | and ~.
Score modifiers change the scaled scores before masking: alibi() and softcap(), chained with .then(), passed
to `attention(score_mod=...)`.
`print(predicate)` draws its pattern.

Index tensors broadcast against each other, as in FlexAttention's mask_mod: batch_idx (B, 1, 1, 1),
head_idx (1, H, 1, 1), q_idx (Nq_block, 1), kv_idx (1, Nk_block); num_queries and num_keys are the full
lengths Nq and Nk, which position-dependent rules need for the bottom-right alignment: query i stands at
key position i + Nk - Nq.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

Mask = torch.Tensor


def causal_mask(num_queries: int, num_keys: int, device: torch.device | str | None = None) -> Mask:
    """Bottom-right causal mask (Nq, Nk): True where query i may attend to key j <= i + Nk - Nq."""
    query_pos = torch.arange(num_queries, device=device)[:, None]  # (Nq, 1)
    key_pos = torch.arange(num_keys, device=device)[None, :]  # (1, Nk)
    return key_pos <= query_pos + (num_keys - num_queries)  # (Nq, Nk)


def to_additive(mask: Mask, dtype: torch.dtype) -> Mask:
    """A float mask to add to the scores: a boolean mask becomes 0 where allowed and -inf where not."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    return mask.to(dtype)


def combine(first: Mask | None, second: Mask | None, dtype: torch.dtype) -> Mask | None:
    """Both masks at once: AND of two boolean masks, otherwise the sum of their additive forms.

    Shapes broadcast against each other; a float result has `dtype`.
    """
    if first is None:
        return second if second is None or second.dtype == torch.bool else second.to(dtype)
    if second is None:
        return combine(second, first, dtype)
    if first.dtype == torch.bool and second.dtype == torch.bool:
        return first & second
    return to_additive(first, dtype) + to_additive(second, dtype)


def check_mask(
    mask: object,
    name: str,
    target: tuple[int, ...],
    device: torch.device,
) -> None:
    """Raise TypeError/ValueError unless `mask` is a bool or float tensor on `device` that broadcasts
    to `target`."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.dtype.is_floating_point:
        raise TypeError(
            f"{name} has dtype {mask.dtype}; expected torch.bool (True = may attend) "
            "or a floating dtype (added to the scores)"
        )
    if mask.device != device:
        raise ValueError(f"{name} is on {mask.device} but the queries are on {device}; move it with .to()")
    try:
        broadcast = torch.broadcast_shapes(mask.shape, target)
    except RuntimeError:
        broadcast = None
    if broadcast != torch.Size(target):
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)}, which does not broadcast to (B, Hq, Nq, Nk) = {target}"
        )


# Mask predicates ------------------------------------------------------------------------------------------

PICTURE_SIZE = 8  # queries and keys that print() draws, unless the predicate's data fixes them
PICTURE_WIDTH = 80  # a picture spaces its columns out while they fit in this many characters
_FEW = 8  # a data tensor with at most this many entries is written out in a title

_rule = dataclass(frozen=True, repr=False)  # a predicate or modifier of plain numbers: equal by value
_data_rule = dataclass(frozen=True, repr=False, eq=False)  # one holding tensors: equal only to itself


class Predicate:
    """A mask as a rule: True = the query may attend to the key.

    Subclasses are small frozen dataclasses that define `title` and `allowed`, and may sharpen
    `block_is_empty`, `block_is_full`, `check` and `sizes`. Combine with `&`, `|` and `~`; `print()` draws
    the pattern.
    """

    @property
    def title(self) -> str:
        """The call that makes this predicate, e.g. 'sliding_window(left=2, right=0)'."""
        raise NotImplementedError

    def allowed(self, batch_idx, head_idx, q_idx, kv_idx, num_queries: int, num_keys: int) -> torch.Tensor:
        """The mask at broadcasting indices: batch_idx (B, 1, 1, 1), head_idx (1, H, 1, 1), q_idx
        (Nq_block, 1), kv_idx (1, Nk_block) -> bool, broadcastable to (B, H, Nq_block, Nk_block)."""
        raise NotImplementedError

    def block_is_empty(self, q_start, q_end, k_start, k_end, num_queries, num_keys) -> bool:
        """True only when no query in [q_start, q_end) may see any key in [k_start, k_end), in any batch
        element or head: the block can be skipped. Cheap and conservative (False is always safe); the
        arguments are as for block() and, as this runs once per block, not checked."""
        return False

    def block_is_full(self, q_start, q_end, k_start, k_end, num_queries, num_keys) -> bool:
        """True only when every query in the block may see every key in it: the block needs no mask."""
        return False

    def check(self, batch: int, heads: int, num_queries: int, num_keys: int) -> None:
        """Raise ValueError unless the predicate's data fits attention of these sizes."""

    def sizes(self) -> tuple[int | None, int | None, int | None]:
        """(B, Nq, Nk) as fixed by the predicate's data, None where any size fits."""
        return (None, None, None)

    def block(self, q_start, q_end, k_start, k_end, num_queries, num_keys, batch=1, heads=1, device=None):
        """The mask of queries [q_start, q_end) and keys [k_start, k_end) of attention with Nq =
        num_queries, Nk = num_keys: bool (B|1, H|1, Nq_block|1, Nk_block|1), broadcastable to
        (B, H, q_end - q_start, k_end - k_start), built on `device` (default CPU)."""
        _check_block(q_start, q_end, k_start, k_end, num_queries, num_keys)
        _check_counts(batch=batch, heads=heads)
        self.check(batch, heads, num_queries, num_keys)
        indices = _indices(batch, heads, q_start, q_end, k_start, k_end, device)
        allowed = self.allowed(*indices, num_queries, num_keys)  # broadcastable to (B, H, Nq_block, Nk_block)
        return allowed[(None,) * (4 - allowed.dim())]  # 4-D

    def materialize(self, batch: int, heads: int, num_queries: int, num_keys: int, device=None) -> Mask:
        """The dense mask, bool (B|1, H|1, Nq, Nk) on `device` (default CPU): for dense backends and tests."""
        mask = self.block(0, num_queries, 0, num_keys, num_queries, num_keys, batch, heads, device)  # 4-D
        return mask.expand(*mask.shape[:2], num_queries, num_keys).contiguous()  # (B|1, H|1, Nq, Nk)

    def picture(self, num_queries: int | None = None, num_keys: int | None = None) -> str:
        """The pattern as text: a title line, then a row per query and a column per key, ■ = may attend,
        · = blocked. Batch element 0 and head 0; the sizes default to the data's, else to 8."""
        batch, data_queries, data_keys = self.sizes()
        num_queries = _first(num_queries, data_queries, PICTURE_SIZE)
        num_keys = _first(num_keys, data_keys, PICTURE_SIZE)
        grid = self.materialize(_first(batch, 1), 1, num_queries, num_keys)[0, 0]  # (Nq, Nk)
        where = "" if batch is None else ", batch 0"
        header = f"{self.title}: {num_queries} queries × {num_keys} keys{where}"
        gap = " " if 2 * num_keys <= PICTURE_WIDTH else ""
        return "\n".join([header, *(gap.join("■" if x else "·" for x in row) for row in grid.tolist())])

    def __str__(self) -> str:
        return self.picture()

    def __repr__(self) -> str:
        return self.title

    def __and__(self, other: Predicate) -> Predicate:
        return And(self, _check_kind(other, Predicate, "&"))

    def __or__(self, other: Predicate) -> Predicate:
        return Or(self, _check_kind(other, Predicate, "|"))

    def __invert__(self) -> Predicate:
        return Not(self)


@_rule
class Causal(Predicate):
    """Query i sees the keys j <= i + Nk - Nq (aligned bottom-right: the last query sees the last key)."""

    @property
    def title(self) -> str:
        return "causal()"

    def allowed(self, batch_idx, head_idx, q_idx, kv_idx, num_queries, num_keys):
        return kv_idx <= q_idx + (num_keys - num_queries)  # (Nq_block, Nk_block)

    def block_is_empty(self, q_start, q_end, k_start, k_end, num_queries, num_keys):
        return k_start > q_end - 1 + (num_keys - num_queries)  # the block's last query sees none of its keys

    def block_is_full(self, q_start, q_end, k_start, k_end, num_queries, num_keys):
        return k_end - 1 <= q_start + (num_keys - num_queries)  # its first query sees all of its keys


@_rule
class SlidingWindow(Predicate):
    """Query i sees the keys j with own - left <= j <= own + right, own = i + Nk - Nq its position."""

    left: int
    right: int

    @property
    def title(self) -> str:
        return f"sliding_window(left={self.left}, right={self.right})"

    def allowed(self, batch_idx, head_idx, q_idx, kv_idx, num_queries, num_keys):
        own = q_idx + (num_keys - num_queries)  # (Nq_block, 1): each query's own key position
        return (kv_idx >= own - self.left) & (kv_idx <= own + self.right)  # (Nq_block, Nk_block)

    def block_is_empty(self, q_start, q_end, k_start, k_end, num_queries, num_keys):
        shift = num_keys - num_queries
        return k_end - 1 < q_start + shift - self.left or k_start > q_end - 1 + shift + self.right

    def block_is_full(self, q_start, q_end, k_start, k_end, num_queries, num_keys):
        shift = num_keys - num_queries
        return k_start >= q_end - 1 + shift - self.left and k_end - 1 <= q_start + shift + self.right


@_data_rule
class KeyLengths(Predicate):
    """Keys at positions >= lengths[b] are padding, seen by no query; lengths () or (B,), integer."""

    lengths: torch.Tensor  # () or (B,)
    shortest: int  # the smallest and largest length, so that block bounds need no tensor work
    longest: int
    argument: str = "lengths"  # the name the caller gave the lengths, for error messages

    @property
    def title(self) -> str:
        return f"key_lengths({_describe(self.lengths)})"

    def allowed(self, batch_idx, head_idx, q_idx, kv_idx, num_queries, num_keys):
        lengths = self.lengths.to(kv_idx.device)  # () or (B,)
        if lengths.dim() == 1:
            lengths = lengths[batch_idx]  # (B, 1, 1, 1)
        return kv_idx < lengths  # (B|1, 1, 1, Nk_block)

    def block_is_empty(self, q_start, q_end, k_start, k_end, num_queries, num_keys):
        return k_start >= self.longest

    def block_is_full(self, q_start, q_end, k_start, k_end, num_queries, num_keys):
        return k_end <= self.shortest

    def check(self, batch, heads, num_queries, num_keys):
        if self.lengths.dim() == 1 and self.lengths.shape[0] != batch:
            raise ValueError(
                f"{self.argument} has {self.lengths.shape[0]} entries but the batch has B = {batch}; "
                "expected one length per batch element"
            )

    def sizes(self):
        return (self.lengths.shape[0] if self.lengths.dim() == 1 else None, None, None)


@_data_rule
class Documents(Predicate):
    """A query sees only the keys of its own document: query_doc_ids (B, Nq), key_doc_ids (B, Nk)."""

    query_doc_ids: torch.Tensor  # (B, Nq)
    key_doc_ids: torch.Tensor  # (B, Nk)
    packed: bool  # both non-decreasing along the sequence: a block's end ids bound the ids inside it

    @property
    def title(self) -> str:
        keys = "" if self.key_doc_ids is self.query_doc_ids else f", {_describe(self.key_doc_ids)}"
        return f"documents({_describe(self.query_doc_ids)}{keys})"

    def allowed(self, batch_idx, head_idx, q_idx, kv_idx, num_queries, num_keys):
        query_ids = self.query_doc_ids.to(q_idx.device)[batch_idx, q_idx]  # (B, 1, Nq_block, 1)
        key_ids = self.key_doc_ids.to(kv_idx.device)[batch_idx, kv_idx]  # (B, 1, 1, Nk_block)
        return query_ids == key_ids  # (B, 1, Nq_block, Nk_block)

    def block_is_empty(self, q_start, q_end, k_start, k_end, num_queries, num_keys):
        ends = self._block_ends(q_start, q_end, k_start, k_end)
        if ends is None:
            return False
        q_first, q_last, k_first, k_last = ends  # each (B,)
        return bool(((q_last < k_first) | (k_last < q_first)).all())  # no overlap of the id ranges

    def block_is_full(self, q_start, q_end, k_start, k_end, num_queries, num_keys):
        ends = self._block_ends(q_start, q_end, k_start, k_end)
        if ends is None:
            return False
        q_first, q_last, k_first, k_last = ends  # each (B,)
        return bool(((q_first == q_last) & (q_last == k_first) & (k_first == k_last)).all())  # one document

    def _block_ends(self, q_start, q_end, k_start, k_end) -> tuple[torch.Tensor, ...] | None:
        """The ids of the block's first and last query and first and last key, each (B,), when the ids are
        packed (so they bound the ids in between) and the block is not empty; else None."""
        if not self.packed or q_start == q_end or k_start == k_end:
            return None
        queries, keys = self.query_doc_ids, self.key_doc_ids  # (B, Nq), (B, Nk)
        return queries[:, q_start], queries[:, q_end - 1], keys[:, k_start], keys[:, k_end - 1]

    def check(self, batch, heads, num_queries, num_keys):
        for name, ids, axis, length in (
            ("query_doc_ids", self.query_doc_ids, "Nq", num_queries),
            ("key_doc_ids", self.key_doc_ids, "Nk", num_keys),
        ):
            if tuple(ids.shape) != (batch, length):
                expected = f"(B, {axis}) = {(batch, length)}"
                raise ValueError(f"{name} has shape {tuple(ids.shape)}, expected {expected}")

    def sizes(self):
        return (self.query_doc_ids.shape[0], self.query_doc_ids.shape[1], self.key_doc_ids.shape[1])


@_rule
class Not(Predicate):
    """Where `inner` blocks."""

    inner: Predicate

    @property
    def title(self) -> str:
        return f"~{_grouped(self.inner)}"

    def allowed(self, *index):
        return ~self.inner.allowed(*index)

    def block_is_empty(self, *block):
        return self.inner.block_is_full(*block)

    def block_is_full(self, *block):
        return self.inner.block_is_empty(*block)

    def check(self, *sizes):
        self.inner.check(*sizes)

    def sizes(self):
        return self.inner.sizes()


@_rule
class _Pair(Predicate):
    """Two predicates joined by an operator (And, Or)."""

    first: Predicate
    second: Predicate
    operator = "?"

    @property
    def title(self) -> str:
        return f"{_grouped(self.first)} {self.operator} {_grouped(self.second)}"

    def check(self, *sizes):
        self.first.check(*sizes)
        self.second.check(*sizes)

    def sizes(self):
        pairs = zip(self.first.sizes(), self.second.sizes(), strict=True)  # (B, Nq, Nk) of each
        return tuple(_first(mine, theirs) for mine, theirs in pairs)


class And(_Pair):
    """Where both predicates allow."""

    operator = "&"

    def allowed(self, *index):
        return self.first.allowed(*index) & self.second.allowed(*index)

    def block_is_empty(self, *block):
        return self.first.block_is_empty(*block) or self.second.block_is_empty(*block)

    def block_is_full(self, *block):
        return self.first.block_is_full(*block) and self.second.block_is_full(*block)


class Or(_Pair):
    """Where either predicate allows."""

    operator = "|"

    def allowed(self, *index):
        return self.first.allowed(*index) | self.second.allowed(*index)

    def block_is_empty(self, *block):
        return self.first.block_is_empty(*block) and self.second.block_is_empty(*block)

    def block_is_full(self, *block):
        return self.first.block_is_full(*block) or self.second.block_is_full(*block)


class PrefixLM(Or):
    """causal() | the keys of the prefix: bidirectional within the prefix, causal after it."""

    @property
    def title(self) -> str:
        return f"prefix_lm({_describe(self.second.lengths)})"


def causal() -> Causal:
    """Query i sees the keys j <= i + Nk - Nq: aligned bottom-right, so the last query sees the last key
    (FlashAttention >= 2.1, KV-cache decoding); with Nq > Nk the first Nq - Nk queries see nothing."""
    return Causal()


def sliding_window(left: int, right: int = 0) -> SlidingWindow:
    """Query i sees the keys j with own - left <= j <= own + right, where own = i + Nk - Nq is its
    bottom-right aligned position (FlashAttention's window_size=(left, right)).

    With right=0 the window is causal: no key after the query's own position. left=right=0 is the diagonal
    alone; a side at least as long as the sequence does not limit that side.
    """
    _check_counts(left=left, right=right)
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
    _check_tensor(query_doc_ids, "query_doc_ids", "an integer tensor of shape (B, Nq)", dims=(2,))
    key_doc_ids = query_doc_ids if key_doc_ids is None else key_doc_ids
    _check_tensor(key_doc_ids, "key_doc_ids", "an integer tensor of shape (B, Nk)", dims=(2,))
    if key_doc_ids.shape[0] != query_doc_ids.shape[0] or key_doc_ids.device != query_doc_ids.device:
        raise ValueError(
            f"key_doc_ids has {key_doc_ids.shape[0]} rows on {key_doc_ids.device} but query_doc_ids has "
            f"{query_doc_ids.shape[0]} on {query_doc_ids.device}; expected one row per batch element in "
            "both, on one device"
        )
    packed = _non_decreasing(query_doc_ids) and _non_decreasing(key_doc_ids)
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
    _check_tensor(lengths, name, "an int or an integer tensor of shape (B,)", dims=(0, 1))
    if (lengths < 0).any():
        raise ValueError(f"{name} must be >= 0, got {lengths.tolist()}")
    shortest, longest = (int(lengths.min()), int(lengths.max())) if lengths.numel() else (0, 0)
    return KeyLengths(lengths, shortest, longest, name)


# Score modifiers ------------------------------------------------------------------------------------------


class ScoreModifier:
    """A change to the scaled scores (B, H, Nq, Nk), made before masking.

    Subclasses are small frozen dataclasses that define `title` and `apply`. `a.then(b)` applies a, then
    b; the order matters (FlashAttention caps the scores, then adds ALiBi: `softcap(c).then(alibi(s))`).
    """

    @property
    def title(self) -> str:
        """The call that makes this modifier, e.g. 'softcap(30)'."""
        raise NotImplementedError

    def apply(self, scores, batch_idx, head_idx, q_idx, kv_idx, num_queries: int, num_keys: int):
        """scores (B, H, Nq_block, Nk_block) at indices broadcasting as for Predicate.allowed -> the
        changed scores, same shape and dtype."""
        raise NotImplementedError

    def check(self, batch: int, heads: int, num_queries: int, num_keys: int) -> None:
        """Raise ValueError unless the modifier's data fits attention of these sizes."""

    def heads(self) -> int | None:
        """The number of heads H fixed by the modifier's data, or None."""
        return None

    def block(self, scores: torch.Tensor, q_start: int, k_start: int, num_queries: int, num_keys: int):
        """scores (B, H, Nq_block, Nk_block) of the queries from q_start and the keys from k_start, in
        attention with Nq = num_queries, Nk = num_keys -> the changed scores (B, H, Nq_block, Nk_block)."""
        _check_tensor(scores, "scores", "a floating tensor (B, H, Nq, Nk)", dims=(4,), floating=True)
        _check_counts(q_start=q_start, k_start=k_start)
        batch, heads, rows, columns = scores.shape
        _check_block(q_start, q_start + rows, k_start, k_start + columns, num_queries, num_keys)
        self.check(batch, heads, num_queries, num_keys)
        indices = _indices(batch, heads, q_start, q_start + rows, k_start, k_start + columns, scores.device)
        return self.apply(scores, *indices, num_queries, num_keys)  # (B, H, Nq_block, Nk_block)

    def dense(self, scores: torch.Tensor) -> torch.Tensor:
        """scores (B, H, Nq, Nk) -> the changed scores (B, H, Nq, Nk)."""
        _check_tensor(scores, "scores", "a floating tensor (B, H, Nq, Nk)", dims=(4,), floating=True)
        return self.block(scores, 0, 0, scores.shape[2], scores.shape[3])  # (B, H, Nq, Nk)

    def then(self, other: ScoreModifier) -> Chain:
        """This modifier, then `other`."""
        return Chain(self, _check_kind(other, ScoreModifier, "then()"))

    def picture(self) -> str:
        """What the modifier does, as text."""
        return self.title

    def __str__(self) -> str:
        return self.picture()

    def __repr__(self) -> str:
        return self.title


@_data_rule
class ALiBi(ScoreModifier):
    """Adds -slopes[h] · |i + Nk - Nq - j|: a penalty growing with the distance from key j to query i's
    own (bottom-right aligned) position; slopes (H,)."""

    slopes: torch.Tensor  # (H,)

    @property
    def title(self) -> str:
        return f"alibi({_describe(self.slopes)})"

    def apply(self, scores, batch_idx, head_idx, q_idx, kv_idx, num_queries, num_keys):
        slopes = self.slopes.to(scores.device, scores.dtype)[head_idx]  # (1, H, 1, 1)
        distance = (q_idx + (num_keys - num_queries) - kv_idx).abs()  # (Nq_block, Nk_block)
        return scores - slopes * distance  # (B, H, Nq_block, Nk_block)

    def check(self, batch, heads, num_queries, num_keys):
        if self.slopes.shape[0] != heads:
            raise ValueError(
                f"alibi has {self.slopes.shape[0]} slopes but the scores have H = {heads} heads; "
                "expected one slope per query head"
            )

    def heads(self):
        return self.slopes.shape[0]

    def picture(self, num_queries: int = PICTURE_SIZE, num_keys: int = PICTURE_SIZE) -> str:
        """The title, then head 0's bias: a row per query, a column per key."""
        zeros = torch.zeros(1, self.heads(), num_queries, num_keys, dtype=torch.float64)  # (1, H, Nq, Nk)
        bias = self.dense(zeros)[0, 0]  # (Nq, Nk)
        header = f"bias of head 0 (slope {self.slopes[0].item():g}), {num_queries} queries × {num_keys} keys:"
        return "\n".join([self.title, header, *_number_rows(bias.tolist())])


@_rule
class Softcap(ScoreModifier):
    """Squashes the scores into (-cap, cap): s -> cap · tanh(s / cap)."""

    cap: float

    @property
    def title(self) -> str:
        return f"softcap({self.cap:g})"

    def apply(self, scores, batch_idx, head_idx, q_idx, kv_idx, num_queries, num_keys):
        return self.cap * torch.tanh(scores / self.cap)  # same shape as scores

    def picture(self) -> str:
        """The title, then a few scores and what they become."""
        ratios = torch.tensor([-3.0, -1.0, -0.25, 0.0, 0.25, 1.0, 3.0], dtype=torch.float64)  # (7,)
        samples = ratios * self.cap  # (7,)
        capped = self.dense(samples.view(1, 1, 1, -1)).flatten()  # (7,)
        rows = _number_rows([samples.tolist(), capped.tolist()])
        formula = f"a score s becomes {self.cap:g} · tanh(s / {self.cap:g})"
        return "\n".join([f"{self.title}: {formula}", f"s       {rows[0]}", f"capped  {rows[1]}"])


@_rule
class Chain(ScoreModifier):
    """`first`, then `second`."""

    first: ScoreModifier
    second: ScoreModifier

    @property
    def title(self) -> str:
        return f"{self.first.title}.then({self.second.title})"

    def apply(self, scores, *index):
        return self.second.apply(self.first.apply(scores, *index), *index)  # same shape as scores

    def check(self, *sizes):
        self.first.check(*sizes)
        self.second.check(*sizes)

    def heads(self):
        return _first(self.first.heads(), self.second.heads())

    def picture(self) -> str:
        return "\n".join([f"{self.title}: first", self.first.picture(), "then", self.second.picture()])


def alibi(slopes: torch.Tensor) -> ALiBi:
    """ALiBi (Press et al.): adds -slopes[h] · |i + Nk - Nq - j| to head h's scores, the distance being from
    query i's bottom-right aligned position, as FlashAttention's alibi_slopes. slopes: floating (H,), one
    per query head; alibi_slopes(H) gives the paper's."""
    _check_tensor(slopes, "slopes", "a floating tensor of shape (H,)", dims=(1,), floating=True)
    if not torch.isfinite(slopes).all():
        raise ValueError(f"slopes must be finite, got {slopes.tolist()}")
    return ALiBi(slopes)


def alibi_slopes(num_heads: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ALiBi paper's slopes (H,): 2^(-8h/H) for h = 1..H when H is a power of two; otherwise those of
    the largest power of two P < H, then the slopes of 2P with odd h (as in the paper's code)."""
    _check_counts(num_heads=num_heads)
    if num_heads == 0:
        raise ValueError("num_heads must be >= 1, got 0")
    power = 1 << (int(num_heads).bit_length() - 1)  # P, the largest power of two <= H
    slopes = [2.0 ** (-8 * h / power) for h in range(1, power + 1)]
    slopes += [2.0 ** (-8 * h / (2 * power)) for h in range(1, 2 * power, 2)][: num_heads - power]
    return torch.tensor(slopes, dtype=dtype)  # (H,)


def softcap(cap: float) -> Softcap:
    """Logit soft-capping (Gemma 2, Grok): scores -> cap · tanh(scores / cap), so |score| < cap."""
    if isinstance(cap, bool) or not isinstance(cap, numbers.Real):
        raise TypeError(f"cap must be a number, got {type(cap).__name__}")
    if not (math.isfinite(cap) and cap > 0):
        raise ValueError(f"cap must be a finite number > 0, got {cap!r}")
    return Softcap(float(cap))


# Helpers --------------------------------------------------------------------------------------------------


def _indices(batch, heads, q_start, q_end, k_start, k_end, device):
    """Index tensors of one block, broadcasting to (B, H, q_end - q_start, k_end - k_start)."""
    batch_idx = torch.arange(batch, device=device).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    head_idx = torch.arange(heads, device=device).view(1, -1, 1, 1)  # (1, H, 1, 1)
    q_idx = torch.arange(q_start, q_end, device=device)[:, None]  # (Nq_block, 1)
    kv_idx = torch.arange(k_start, k_end, device=device)[None, :]  # (1, Nk_block)
    return batch_idx, head_idx, q_idx, kv_idx


def _check_counts(**counts: object) -> None:
    """Raise unless each count is an int >= 0."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def _check_block(q_start, q_end, k_start, k_end, num_queries, num_keys) -> None:
    """Raise unless [q_start, q_end) lies in [0, num_queries) and [k_start, k_end) in [0, num_keys)."""
    _check_counts(num_queries=num_queries, num_keys=num_keys)
    _check_counts(q_start=q_start, q_end=q_end, k_start=k_start, k_end=k_end)
    for axis, start, end, length in (("q", q_start, q_end, num_queries), ("k", k_start, k_end, num_keys)):
        if not start <= end <= length:
            raise ValueError(
                f"the block has {axis}_start = {start}, {axis}_end = {end}; expected "
                f"0 <= {axis}_start <= {axis}_end <= {length} (num_{'queries' if axis == 'q' else 'keys'})"
            )


def _check_tensor(value: object, name: str, expected: str, dims: tuple[int, ...], floating=False) -> None:
    """Raise unless `value` is a tensor of floating (or, by default, integer) dtype with `dims` dimensions;
    `expected` says what was asked for."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    integer = not (value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool)
    if not (value.dtype.is_floating_point if floating else integer):
        raise TypeError(f"{name} must be {expected}, got dtype {value.dtype}")
    if value.dim() not in dims:
        raise ValueError(f"{name} must be {expected}, got shape {tuple(value.shape)}")


def _check_kind(value: object, kind: type, operator: str):
    """`value` itself, when it is a `kind` (Predicate or ScoreModifier) to combine by `operator`."""
    if not isinstance(value, kind):
        raise TypeError(
            f"{operator} combines a {kind.__name__} with another {kind.__name__}, got "
            f"{type(value).__name__}; make one with headwise.masks' constructors (causal(), alibi(), ...)"
        )
    return value


def _non_decreasing(ids: torch.Tensor) -> bool:
    """Whether each row of ids (B, N) is non-decreasing."""
    return bool((ids[:, 1:] >= ids[:, :-1]).all())


def _first(*values):
    """The first value that is not None (None if all are)."""
    return next((value for value in values if value is not None), None)


def _grouped(predicate: Predicate) -> str:
    """The predicate's title, in parentheses when it is an & or | of two others."""
    return f"({predicate.title})" if type(predicate) in (And, Or) else predicate.title


def _describe(data: torch.Tensor) -> str:
    """A data tensor for a title: its values when there are few, else its shape and dtype (<2×8 int64>)."""
    if data.numel() > _FEW:
        return f"<{'×'.join(map(str, data.shape))} {str(data.dtype).removeprefix('torch.')}>"
    return str(data.double().round(decimals=4).tolist() if data.dtype.is_floating_point else data.tolist())


def _number_rows(rows: list[list[float]]) -> list[str]:
    """Rows of numbers as lines of right-aligned columns, 2 decimals."""
    cells = [[f"{value + 0.0:.2f}" for value in row] for row in rows]  # + 0.0 turns -0.0 into 0.0
    width = max((len(cell) for row in cells for cell in row), default=0)
    return [" ".join(cell.rjust(width) for cell in row) for row in cells]
