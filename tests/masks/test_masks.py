"""Mask predicates and score modifiers, each held to a dense reference written here with plain loops
(or torch.tril), block by block as a chunked backend asks for them, and drawn as text."""

from __future__ import annotations

import math

import pytest
import torch
from mask_catalogue import B, catalogue, everything
from oracle import naive_attention

import headwise
from headwise.masks import (
    Predicate,
    alibi,
    alibi_slopes,
    causal,
    documents,
    key_lengths,
    prefix_lm,
    sliding_window,
    softcap,
    to_additive,
)

SIZES = [(1, 1), (5, 5), (4, 9), (9, 4), (7, 3), (3, 7), (0, 4), (4, 0)]  # (Nq, Nk)


def dense(predicate: Predicate, nq: int, nk: int, heads: int = 1) -> torch.Tensor:
    """predicate.materialize(...) expanded to (B, H, Nq, Nk), after checking its shape."""
    mask = predicate.materialize(B, heads, nq, nk)  # (B|1, H|1, Nq, Nk)
    assert mask.dtype == torch.bool and mask.dim() == 4 and mask.shape[2:] == (nq, nk), mask.shape
    return mask.expand(B, heads, nq, nk)


def rectangles(n: int) -> list[tuple[int, int]]:
    """Every non-empty range [start, end) within [0, n)."""
    return [(start, end) for start in range(n) for end in range(start + 1, n + 1)]


def tiles(n: int, size: int) -> list[tuple[int, int]]:
    """[start, end) ranges of `size` covering [0, n), the last one ragged."""
    return [(start, min(start + size, n)) for start in range(0, n, size)]


# Each predicate against its dense reference ---------------------------------------------------------------


@pytest.mark.parametrize("nq, nk", SIZES)
def test_each_predicate_matches_its_dense_reference(nq, nk):
    for predicate, expected in catalogue(nq, nk).values():
        assert torch.equal(dense(predicate, nq, nk), expected), predicate


@pytest.mark.parametrize("nq, nk", SIZES)
def test_combinators_are_the_elementwise_and_or_not(nq, nk):
    cases = list(catalogue(nq, nk).values())
    for first, dense_first in cases:
        for second, dense_second in cases[::3]:
            assert torch.equal(dense(first & second, nq, nk), dense_first & dense_second), (first, second)
            assert torch.equal(dense(first | second, nq, nk), dense_first | dense_second), (first, second)
        assert torch.equal(dense(~first, nq, nk), ~dense_first), first


def test_window_special_cases_and_causality_with_right_zero():
    for nq, nk in SIZES:
        everything_visible = torch.ones(B, 1, nq, nk, dtype=torch.bool)
        assert torch.equal(dense(sliding_window(nk + nq, 0), nq, nk), dense(causal(), nq, nk))
        assert torch.equal(dense(sliding_window(nk + nq, nk + nq), nq, nk), everything_visible)
        for left in range(4):  # right=0 never looks past the causal diagonal
            assert not (dense(sliding_window(left), nq, nk) & ~dense(causal(), nq, nk)).any()


def test_empty_lengths_and_prefixes():
    nothing = key_lengths(torch.tensor([0, 0])).materialize(B, 1, 3, 4)
    assert not nothing.any()
    assert torch.equal(dense(prefix_lm(0), 3, 5), dense(causal(), 3, 5))  # no prefix: plain causal
    assert dense(prefix_lm(5), 3, 5).all()  # all prefix: bidirectional


# Blocks as a chunked backend asks for them ----------------------------------------------------------------


@pytest.mark.parametrize("nq, nk", [(7, 11), (11, 7), (8, 8)])
@pytest.mark.parametrize("block_q, block_k", [(1, 1), (2, 3), (4, 4), (3, 5), (16, 16)])
def test_blocks_reassemble_to_the_dense_mask(nq, nk, block_q, block_k):
    for predicate, expected in everything(nq, nk):
        rows = []
        for q_start, q_end in tiles(nq, block_q):
            row = []
            for k_start, k_end in tiles(nk, block_k):
                block = predicate.block(q_start, q_end, k_start, k_end, nq, nk, batch=B, heads=3)
                assert block.dim() == 4 and block.dtype == torch.bool
                row.append(block.expand(B, 3, q_end - q_start, k_end - k_start))
            rows.append(torch.cat(row, dim=3))  # (B, H, Nq_block, Nk)
        assert torch.equal(torch.cat(rows, dim=2), expected.expand(B, 3, nq, nk)), predicate


def test_blocks_stay_block_sized():
    """A block is built from index ranges: it never grows to (Nq, Nk), nor over dims a rule ignores."""
    assert causal().block(4, 8, 0, 4, 4096, 4096, batch=8, heads=16).shape == (1, 1, 4, 4)
    lengths = key_lengths(torch.tensor([3, 9]))
    assert lengths.block(0, 4, 8, 12, 4096, 4096, batch=2, heads=16).shape == (2, 1, 1, 4)
    assert (causal() & lengths).block(0, 4, 0, 4, 4096, 4096, batch=2, heads=16).shape == (2, 1, 4, 4)


def every_block(expected: torch.Tensor):
    """(bounds, the block of `expected`) for every rectangle of queries and keys of the dense mask
    expected (B, 1, Nq, Nk); bounds = (q_start, q_end, k_start, k_end, Nq, Nk)."""
    nq, nk = expected.shape[2:]
    for q_start, q_end in rectangles(nq):
        for k_start, k_end in rectangles(nk):
            block = expected[:, :, q_start:q_end, k_start:k_end]  # (B, 1, Nq_block, Nk_block)
            yield (q_start, q_end, k_start, k_end, nq, nk), block


@pytest.mark.parametrize("nq, nk", [(5, 7), (7, 5), (6, 6), (1, 4)])
def test_block_bounds_are_never_wrong(nq, nk):
    """block_is_empty only when nothing in the block is allowed, block_is_full only when everything is."""
    for predicate, expected in everything(nq, nk):
        for bounds, block in every_block(expected):
            assert not (predicate.block_is_empty(*bounds) and block.any()), (predicate, bounds)
            assert not (predicate.block_is_full(*bounds) and not block.all()), (predicate, bounds)


@pytest.mark.parametrize("nq, nk", [(5, 7), (7, 5), (6, 6)])
def test_block_bounds_are_exact_for_positions_and_lengths(nq, nk):
    """Causal, windows and lengths know exactly which blocks are empty or full; a prefix LM knows exactly
    which are empty (its full bound is only conservative)."""
    for name, (predicate, expected) in catalogue(nq, nk).items():
        if not name.startswith(("causal", "window", "length", "prefix")):
            continue
        for bounds, block in every_block(expected):
            assert predicate.block_is_empty(*bounds) == (not block.any()), (predicate, bounds)
            if not name.startswith("prefix"):
                assert predicate.block_is_full(*bounds) == bool(block.all()), (predicate, bounds)


def test_blocks_above_the_causal_diagonal_are_empty():
    for nq, nk in [(16, 16), (8, 16)]:  # 4 × 4 blocks; with Nq < Nk the diagonal moves right
        shift = (nk - nq) // 4  # in blocks
        for qb, (q_start, q_end) in enumerate(tiles(nq, 4)):
            for kb, (k_start, k_end) in enumerate(tiles(nk, 4)):
                bounds = (q_start, q_end, k_start, k_end, nq, nk)
                assert causal().block_is_empty(*bounds) == (kb > qb + shift)
                assert causal().block_is_full(*bounds) == (kb < qb + shift)


def test_prefix_lm_blocks_inside_the_prefix_are_full():
    prefix = prefix_lm(4)  # 8 × 8 in 4 × 4 blocks: the prefix block and the one below it need no mask
    assert prefix.block_is_full(0, 4, 0, 4, 8, 8) and prefix.block_is_full(4, 8, 0, 4, 8, 8)
    assert prefix.block_is_empty(0, 4, 4, 8, 8, 8)
    assert not prefix.block_is_empty(4, 8, 4, 8, 8, 8) and not prefix.block_is_full(4, 8, 4, 8, 8, 8)


def test_packed_documents_skip_the_blocks_between_documents():
    ids = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0]])  # (B, N)
    packed = documents(ids)
    assert packed.block_is_full(0, 4, 0, 4, 8, 8) and packed.block_is_full(4, 8, 4, 8, 8, 8)
    assert not packed.block_is_empty(4, 8, 0, 4, 8, 8)  # the second sequence is one document
    assert documents(ids[:1]).block_is_empty(4, 8, 0, 4, 8, 8)
    assert (documents(ids[:1]) & causal()).block_is_empty(0, 4, 4, 8, 8, 8)
    shuffled = documents(torch.tensor([[1, 0, 1, 0]]))
    assert not shuffled.block_is_empty(0, 1, 1, 2, 4, 4) and not shuffled.block_is_full(0, 1, 0, 1, 4, 4)


def test_value_semantics():
    assert causal() == causal() and sliding_window(2, 1) == sliding_window(2, 1) != sliding_window(2)
    assert causal() & sliding_window(3) == causal() & sliding_window(3)
    lengths = torch.tensor([1, 2])
    assert key_lengths(lengths) != key_lengths(lengths)  # tensors compare by identity
    assert len({causal(), causal(), sliding_window(1), key_lengths(lengths) | causal()}) == 3  # hashable


# Score modifiers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nq, nk", SIZES)
def test_alibi_matches_the_formula(nq, nk):
    slopes = torch.tensor([0.5, 0.25, 1 / 3], dtype=torch.float64)  # (H,)
    scores = torch.randn(B, 3, nq, nk, dtype=torch.float64)  # (B, H, Nq, Nk)
    expected = scores.clone()
    for h in range(3):
        for i in range(nq):
            for j in range(nk):
                expected[:, h, i, j] -= slopes[h] * abs(i + nk - nq - j)
    assert torch.allclose(alibi(slopes).dense(scores), expected, rtol=0, atol=1e-15)


def test_softcap_matches_the_formula_and_bounds_the_scores():
    scores = torch.randn(B, 3, 5, 7, dtype=torch.float64) * 100  # (B, H, Nq, Nk)
    capped = softcap(20.0).dense(scores)
    assert torch.equal(capped, 20.0 * torch.tanh(scores / 20.0))
    assert capped.abs().max() < 20.0
    assert torch.allclose(softcap(1e6).dense(scores), scores, rtol=1e-6)  # a large cap changes little


def test_modifiers_chain_in_order():
    slopes = torch.tensor([0.5, 0.125], dtype=torch.float64)  # (H,)
    scores = torch.randn(B, 2, 4, 6, dtype=torch.float64) * 10  # (B, H, Nq, Nk)
    distance = (torch.arange(4)[:, None] + 2 - torch.arange(6)[None, :]).abs()  # (Nq, Nk)
    bias = -slopes[:, None, None] * distance  # (H, Nq, Nk)
    capped_first = softcap(3.0).then(alibi(slopes)).dense(scores)
    assert torch.allclose(capped_first, 3.0 * torch.tanh(scores / 3.0) + bias, rtol=0, atol=1e-14)
    biased_first = alibi(slopes).then(softcap(3.0)).dense(scores)
    assert torch.allclose(biased_first, 3.0 * torch.tanh((scores + bias) / 3.0), rtol=0, atol=1e-14)


@pytest.mark.parametrize("block_q, block_k", [(1, 1), (2, 3), (4, 4), (16, 16)])
def test_modifier_blocks_reassemble_to_the_dense_result(block_q, block_k):
    nq, nk = 7, 11
    modifier = softcap(5.0).then(alibi(alibi_slopes(4, torch.float64)))
    scores = torch.randn(B, 4, nq, nk, dtype=torch.float64) * 10  # (B, H, Nq, Nk)
    rows = [
        torch.cat(
            [modifier.block(scores[:, :, qs:qe, ks:ke], qs, ks, nq, nk) for ks, ke in tiles(nk, block_k)],
            dim=3,
        )
        for qs, qe in tiles(nq, block_q)
    ]
    assert torch.equal(torch.cat(rows, dim=2), modifier.dense(scores))


def paper_slopes(n: int) -> list[float]:
    """get_slopes from the ALiBi paper's code (github.com/ofirpress/attention_with_linear_biases)."""

    def get_slopes_power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        ratio = start
        return [start * ratio**i for i in range(n)]

    if math.log2(n).is_integer():
        return get_slopes_power_of_2(n)
    closest_power_of_2 = 2 ** math.floor(math.log2(n))
    return (
        get_slopes_power_of_2(closest_power_of_2)
        + paper_slopes(2 * closest_power_of_2)[0::2][: n - closest_power_of_2]
    )


def test_alibi_slopes_are_the_papers():
    for heads in range(1, 33):
        expected = torch.tensor(paper_slopes(heads), dtype=torch.float64)
        assert torch.allclose(alibi_slopes(heads, torch.float64), expected, rtol=1e-12, atol=0), heads
    assert torch.equal(alibi_slopes(8, torch.float64), 2.0 ** (-torch.arange(1, 9, dtype=torch.float64)))
    assert alibi_slopes(12).dtype == torch.float32 and alibi_slopes(12).shape == (12,)


# Through attention(), end to end --------------------------------------------------------------------------


def test_materialized_predicates_run_through_attention():
    nq, nk, heads = 5, 7, 2
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, heads, nq, 8, dtype=torch.float64, generator=gen)  # (B, H, Nq, Dh)
    k = torch.randn(B, heads, nk, 8, dtype=torch.float64, generator=gen)  # (B, H, Nk, Dh)
    v = torch.randn(B, heads, nk, 4, dtype=torch.float64, generator=gen)  # (B, H, Nk, Dv)
    slopes = torch.tensor([0.5, 0.25], dtype=torch.float64)  # (H,)
    distance = (torch.arange(nq)[:, None] + nk - nq - torch.arange(nk)[None, :]).abs()  # (Nq, Nk)
    bias = -slopes[:, None, None] * distance  # (H, Nq, Nk)
    for predicate, expected in everything(nq, nk)[::2]:
        mask = predicate.materialize(B, heads, nq, nk)  # (B|1, H|1, Nq, Nk)
        out = headwise.attention(q, k, v, mask=mask, backend="reference")
        assert torch.allclose(out, naive_attention(q, k, v, mask=expected)[0], rtol=0, atol=1e-12), predicate
        with_alibi = to_additive(mask, torch.float64) + alibi(slopes).dense(torch.zeros(B, heads, nq, nk))
        out = headwise.attention(q, k, v, mask=with_alibi, backend="reference")
        golden = naive_attention(q, k, v, mask=bias.masked_fill(~expected, float("-inf")))[0]
        assert torch.allclose(out, golden, rtol=0, atol=1e-12), predicate


# Pictures -------------------------------------------------------------------------------------------------


PICTURES = [
    (
        causal().picture(4, 6),
        """causal(): 4 queries × 6 keys
■ ■ ■ · · ·
■ ■ ■ ■ · ·
■ ■ ■ ■ ■ ·
■ ■ ■ ■ ■ ■""",
    ),
    (
        causal().picture(5, 3),
        """causal(): 5 queries × 3 keys
· · ·
· · ·
■ · ·
■ ■ ·
■ ■ ■""",
    ),
    (
        sliding_window(1, 2).picture(5, 5),
        """sliding_window(left=1, right=2): 5 queries × 5 keys
■ ■ ■ · ·
■ ■ ■ ■ ·
· ■ ■ ■ ■
· · ■ ■ ■
· · · ■ ■""",
    ),
    (
        key_lengths(torch.tensor([3, 1])).picture(2, 5),
        """key_lengths([3, 1]): 2 queries × 5 keys, batch 0
■ ■ ■ · ·
■ ■ ■ · ·""",
    ),
    (
        str(documents(torch.tensor([[0, 0, 1, 1, 1]]))),
        """documents([[0, 0, 1, 1, 1]]): 5 queries × 5 keys, batch 0
■ ■ · · ·
■ ■ · · ·
· · ■ ■ ■
· · ■ ■ ■
· · ■ ■ ■""",
    ),
    (
        prefix_lm(3).picture(5, 5),
        """prefix_lm(3): 5 queries × 5 keys
■ ■ ■ · ·
■ ■ ■ · ·
■ ■ ■ · ·
■ ■ ■ ■ ·
■ ■ ■ ■ ■""",
    ),
    (
        (~(causal() | sliding_window(0, 1)) & key_lengths(5)).picture(4, 6),
        """~(causal() | sliding_window(left=0, right=1)) & key_lengths(5): 4 queries × 6 keys
· · · · ■ ·
· · · · · ·
· · · · · ·
· · · · · ·""",
    ),
    (
        alibi(torch.tensor([0.5, 0.25])).picture(3, 4),
        """alibi([0.5, 0.25])
bias of head 0 (slope 0.5), 3 queries × 4 keys:
-0.50  0.00 -0.50 -1.00
-1.00 -0.50  0.00 -0.50
-1.50 -1.00 -0.50  0.00""",
    ),
    (
        str(softcap(2)),
        """softcap(2): a score s becomes 2 · tanh(s / 2)
s       -6.00 -2.00 -0.50  0.00  0.50  2.00  6.00
capped  -1.99 -1.52 -0.49  0.00  0.49  1.52  1.99""",
    ),
]


@pytest.mark.parametrize("drawn, expected", PICTURES)
def test_pictures(drawn, expected):
    assert drawn == expected


def test_print_draws_eight_by_eight_within_80_columns():
    """Every picture starts with the predicate's call; its rows (and, for one predicate or modifier, the
    whole picture) fit in 80 columns. A long combination's title may be longer."""
    ids = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2]] * 2)  # (B, N)
    singles = [case for case, _ in catalogue(8, 8).values()] + [documents(ids) & causal()]
    singles += [alibi(alibi_slopes(8)), softcap(30.0)]
    chained = softcap(30.0).then(alibi(alibi_slopes(8)))
    for shown in [case for case, _ in everything(8, 8)] + singles + [chained]:
        title, *rows = str(shown).splitlines()
        assert title.startswith(repr(shown)) and all(len(row) <= 80 for row in rows), str(shown)
        assert shown not in singles or len(title) <= 80, title
    assert str(causal()) == causal().picture(8, 8) and len(str(causal()).splitlines()) == 9
    assert causal().picture(2, 41).splitlines()[2] == "■" * 41  # too wide to space out


# Bad arguments --------------------------------------------------------------------------------------------

IDS = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 2, 2]])  # (B, N)

BAD = [
    (lambda: sliding_window(-1), ValueError, r"left must be >= 0, got -1"),
    (lambda: sliding_window(1.5), TypeError, r"left must be an int, got float"),
    (lambda: sliding_window(2, right=True), TypeError, r"right must be an int, got bool"),
    (
        lambda: key_lengths([3, 4]),
        TypeError,
        r"lengths must be an int or an integer tensor of shape \(B,\), got list",
    ),
    (lambda: key_lengths(torch.tensor([1.0])), TypeError, r"lengths must be .*, got dtype torch.float32"),
    (lambda: key_lengths(torch.tensor([[1]])), ValueError, r"lengths must be .*\(B,\), got shape \(1, 1\)"),
    (lambda: key_lengths(torch.tensor([2, -1])), ValueError, r"lengths must be >= 0, got \[2, -1\]"),
    (lambda: key_lengths(-1), ValueError, r"lengths must be >= 0, got -1"),
    (lambda: prefix_lm(torch.tensor([True])), TypeError, r"prefix_lengths must be .*, got dtype torch.bool"),
    (lambda: prefix_lm(-2), ValueError, r"prefix_lengths must be >= 0, got -2"),
    (
        lambda: documents(IDS[0]),
        ValueError,
        r"query_doc_ids must be an integer tensor of shape \(B, Nq\), got shape \(5,\)",
    ),
    (lambda: documents(IDS.float()), TypeError, r"query_doc_ids must be .*, got dtype torch.float32"),
    (
        lambda: documents(IDS, "keys"),
        TypeError,
        r"key_doc_ids must be an integer tensor of shape \(B, Nk\), got str",
    ),
    (lambda: documents(IDS, IDS[:1]), ValueError, r"key_doc_ids has 1 rows .* query_doc_ids has 2"),
    (
        lambda: key_lengths(torch.tensor([3, 4])).materialize(3, 1, 4, 4),
        ValueError,
        r"lengths has 2 entries but the batch has B = 3",
    ),
    (
        lambda: prefix_lm(torch.tensor([3, 4])).materialize(1, 1, 4, 4),
        ValueError,
        r"prefix_lengths has 2 entries",
    ),
    (
        lambda: documents(IDS).materialize(2, 1, 6, 5),
        ValueError,
        r"query_doc_ids has shape \(2, 5\), expected \(B, Nq\) = \(2, 6\)",
    ),
    (
        lambda: documents(IDS, IDS[:, :4]).materialize(2, 1, 5, 5),
        ValueError,
        r"key_doc_ids has shape \(2, 4\), expected \(B, Nk\) = \(2, 5\)",
    ),
    (
        lambda: (causal() & documents(IDS)).materialize(1, 1, 5, 5),
        ValueError,
        r"query_doc_ids has shape \(2, 5\)",
    ),
    (
        lambda: causal().block(3, 2, 0, 4, 4, 4),
        ValueError,
        r"q_start = 3, q_end = 2; expected 0 <= q_start <= q_end <= 4",
    ),
    (
        lambda: causal().block(0, 2, 0, 5, 4, 4),
        ValueError,
        r"k_end = 5; expected 0 <= k_start <= k_end <= 4 \(num_keys\)",
    ),
    (lambda: causal().block(0, 2, 0, 4, 4, 4, batch=0.5), TypeError, r"batch must be an int, got float"),
    (lambda: causal().materialize(1, 1, -1, 4), ValueError, r"num_queries must be >= 0, got -1"),
    (
        lambda: causal() & torch.ones(2, 2, dtype=torch.bool),
        TypeError,
        r"& combines a Predicate with another Predicate, got Tensor",
    ),
    (lambda: causal() | 3, TypeError, r"\| combines a Predicate with another Predicate, got int"),
    (
        lambda: alibi(torch.tensor([1, 2])),
        TypeError,
        r"slopes must be a floating tensor of shape \(H,\), got dtype torch.int64",
    ),
    (lambda: alibi(torch.ones(2, 2)), ValueError, r"slopes must be .*, got shape \(2, 2\)"),
    (
        lambda: alibi(torch.tensor([0.5, float("nan")])),
        ValueError,
        r"slopes must be finite, got \[0.5, nan\]",
    ),
    (
        lambda: alibi(alibi_slopes(4)).dense(torch.zeros(1, 3, 2, 2)),
        ValueError,
        r"alibi has 4 slopes but the scores have H = 3 heads",
    ),
    (
        lambda: softcap(1.0).dense(torch.zeros(2, 2)),
        ValueError,
        r"scores must be a floating tensor \(B, H, Nq, Nk\), got shape \(2, 2\)",
    ),
    (
        lambda: softcap(1.0).dense(torch.zeros(1, 1, 2, 2, dtype=torch.long)),
        TypeError,
        r"scores must be .*, got dtype torch.int64",
    ),
    (
        lambda: softcap(1.0).block(torch.zeros(1, 1, 2, 2), 1, 0, 2, 2),
        ValueError,
        r"q_start = 1, q_end = 3; expected",
    ),
    (
        lambda: softcap(1.0).block(torch.zeros(1, 1, 2, 2), -1, 0, 2, 2),
        ValueError,
        r"q_start must be >= 0, got -1",
    ),
    (
        lambda: softcap(1.0).then(causal()),
        TypeError,
        r"then\(\) combines a ScoreModifier with another ScoreModifier, got Causal",
    ),
    (lambda: softcap(0), ValueError, r"cap must be a finite number > 0, got 0"),
    (lambda: softcap(float("inf")), ValueError, r"cap must be a finite number > 0, got inf"),
    (lambda: softcap("1"), TypeError, r"cap must be a number, got str"),
    (lambda: softcap(True), TypeError, r"cap must be a number, got bool"),
    (lambda: alibi_slopes(0), ValueError, r"num_heads must be >= 1, got 0"),
    (lambda: alibi_slopes(2.0), TypeError, r"num_heads must be an int, got float"),
]


@pytest.mark.parametrize("call, error, message", BAD)
def test_bad_arguments_raise_with_a_message(call, error, message):
    with pytest.raises(error, match=message):
        call()
