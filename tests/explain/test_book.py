"""`headwise explain --book`: Raschka's "Build a Large Language Model from Scratch", chapter 3, sections 3.3
to 3.6, held to the values the book prints; and MultiHeadAttention's out_dim and qkv_bias, which the book's
weight-split module needs.

BOOK_PRINTS are the 44 printed outputs of rasbt/LLMs-from-scratch, ch03/01_main-chapter-code/ch03.ipynb
(torch 2.4; every print() after the torch version), copied here so that nothing downloads; grad_fn and the
"Attention weights:", "Sum:" and "All row sums:" prefixes are left out, the labels of "Row 2 sum:",
"keys.shape:" and the like are the names.
"""

from __future__ import annotations

import ast
import copy
import sys
from io import StringIO

import pytest
import torch
from oracle import assert_by_ratio
from test_explain import assert_printed, sections, tables
from torch import nn

import headwise
from headwise.cli.main import main
from headwise.explain.book.chapter import chapter
from headwise.explain.book.printout import Printout
from headwise.explain.example import Example, run_example
from headwise.explain.walkthrough import lecture_report
from headwise.pages import html
from headwise.pages.html import decode_array, read_report_data

BOOK_PRINTS = [  # (section, the book's name, what the notebook prints), in the book's order
    ("3.3.1", "attn_scores_2", "tensor([0.9544, 1.4950, 1.4754, 0.8434, 0.7070, 1.0865])"),
    ("3.3.1", "res", "tensor(0.9544)"),
    ("3.3.1", "torch.dot(inputs[0], query)", "tensor(0.9544)"),
    ("3.3.1", "attn_weights_2_tmp", "tensor([0.1455, 0.2278, 0.2249, 0.1285, 0.1077, 0.1656])"),
    ("3.3.1", "attn_weights_2_tmp.sum()", "tensor(1.0000)"),
    ("3.3.1", "attn_weights_2_naive", "tensor([0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581])"),
    ("3.3.1", "attn_weights_2_naive.sum()", "tensor(1.)"),
    ("3.3.1", "attn_weights_2", "tensor([0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581])"),
    ("3.3.1", "attn_weights_2.sum()", "tensor(1.)"),
    ("3.3.1", "context_vec_2", "tensor([0.4419, 0.6515, 0.5683])"),
    (
        "3.3.2",
        "attn_scores",
        """
    tensor([[0.9995, 0.9544, 0.9422, 0.4753, 0.4576, 0.6310],
            [0.9544, 1.4950, 1.4754, 0.8434, 0.7070, 1.0865],
            [0.9422, 1.4754, 1.4570, 0.8296, 0.7154, 1.0605],
            [0.4753, 0.8434, 0.8296, 0.4937, 0.3474, 0.6565],
            [0.4576, 0.7070, 0.7154, 0.3474, 0.6654, 0.2935],
            [0.6310, 1.0865, 1.0605, 0.6565, 0.2935, 0.9450]])""",
    ),
    (
        "3.3.2",
        "attn_scores",
        """
    tensor([[0.9995, 0.9544, 0.9422, 0.4753, 0.4576, 0.6310],
            [0.9544, 1.4950, 1.4754, 0.8434, 0.7070, 1.0865],
            [0.9422, 1.4754, 1.4570, 0.8296, 0.7154, 1.0605],
            [0.4753, 0.8434, 0.8296, 0.4937, 0.3474, 0.6565],
            [0.4576, 0.7070, 0.7154, 0.3474, 0.6654, 0.2935],
            [0.6310, 1.0865, 1.0605, 0.6565, 0.2935, 0.9450]])""",
    ),
    (
        "3.3.2",
        "attn_weights",
        """
    tensor([[0.2098, 0.2006, 0.1981, 0.1242, 0.1220, 0.1452],
            [0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581],
            [0.1390, 0.2369, 0.2326, 0.1242, 0.1108, 0.1565],
            [0.1435, 0.2074, 0.2046, 0.1462, 0.1263, 0.1720],
            [0.1526, 0.1958, 0.1975, 0.1367, 0.1879, 0.1295],
            [0.1385, 0.2184, 0.2128, 0.1420, 0.0988, 0.1896]])""",
    ),
    ("3.3.2", "Row 2 sum", "1.0"),
    ("3.3.2", "All row sums", "tensor([1.0000, 1.0000, 1.0000, 1.0000, 1.0000, 1.0000])"),
    (
        "3.3.2",
        "all_context_vecs",
        """
    tensor([[0.4421, 0.5931, 0.5790],
            [0.4419, 0.6515, 0.5683],
            [0.4431, 0.6496, 0.5671],
            [0.4304, 0.6298, 0.5510],
            [0.4671, 0.5910, 0.5266],
            [0.4177, 0.6503, 0.5645]])""",
    ),
    ("3.3.2", "Previous 2nd context vector", "tensor([0.4419, 0.6515, 0.5683])"),
    ("3.4.1", "query_2", "tensor([0.4306, 1.4551])"),
    ("3.4.1", "keys.shape", "torch.Size([6, 2])"),
    ("3.4.1", "values.shape", "torch.Size([6, 2])"),
    ("3.4.1", "attn_score_22", "tensor(1.8524)"),
    ("3.4.1", "attn_scores_2", "tensor([1.2705, 1.8524, 1.8111, 1.0795, 0.5577, 1.5440])"),
    ("3.4.1", "attn_weights_2", "tensor([0.1500, 0.2264, 0.2199, 0.1311, 0.0906, 0.1820])"),
    ("3.4.1", "context_vec_2", "tensor([0.3061, 0.8210])"),
    (
        "3.4.2",
        "sa_v1(inputs)",
        """
    tensor([[0.2996, 0.8053],
            [0.3061, 0.8210],
            [0.3058, 0.8203],
            [0.2948, 0.7939],
            [0.2927, 0.7891],
            [0.2990, 0.8040]])""",
    ),
    (
        "3.4.2",
        "sa_v2(inputs)",
        """
    tensor([[-0.0739,  0.0713],
            [-0.0748,  0.0703],
            [-0.0749,  0.0702],
            [-0.0760,  0.0685],
            [-0.0763,  0.0679],
            [-0.0754,  0.0693]])""",
    ),
    (
        "3.5.1",
        "attn_weights",
        """
    tensor([[0.1921, 0.1646, 0.1652, 0.1550, 0.1721, 0.1510],
            [0.2041, 0.1659, 0.1662, 0.1496, 0.1665, 0.1477],
            [0.2036, 0.1659, 0.1662, 0.1498, 0.1664, 0.1480],
            [0.1869, 0.1667, 0.1668, 0.1571, 0.1661, 0.1564],
            [0.1830, 0.1669, 0.1670, 0.1588, 0.1658, 0.1585],
            [0.1935, 0.1663, 0.1666, 0.1542, 0.1666, 0.1529]])""",
    ),
    (
        "3.5.1",
        "mask_simple",
        """
    tensor([[1., 0., 0., 0., 0., 0.],
            [1., 1., 0., 0., 0., 0.],
            [1., 1., 1., 0., 0., 0.],
            [1., 1., 1., 1., 0., 0.],
            [1., 1., 1., 1., 1., 0.],
            [1., 1., 1., 1., 1., 1.]])""",
    ),
    (
        "3.5.1",
        "masked_simple",
        """
    tensor([[0.1921, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000],
            [0.2041, 0.1659, 0.0000, 0.0000, 0.0000, 0.0000],
            [0.2036, 0.1659, 0.1662, 0.0000, 0.0000, 0.0000],
            [0.1869, 0.1667, 0.1668, 0.1571, 0.0000, 0.0000],
            [0.1830, 0.1669, 0.1670, 0.1588, 0.1658, 0.0000],
            [0.1935, 0.1663, 0.1666, 0.1542, 0.1666, 0.1529]])""",
    ),
    (
        "3.5.1",
        "masked_simple_norm",
        """
    tensor([[1.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000],
            [0.5517, 0.4483, 0.0000, 0.0000, 0.0000, 0.0000],
            [0.3800, 0.3097, 0.3103, 0.0000, 0.0000, 0.0000],
            [0.2758, 0.2460, 0.2462, 0.2319, 0.0000, 0.0000],
            [0.2175, 0.1983, 0.1984, 0.1888, 0.1971, 0.0000],
            [0.1935, 0.1663, 0.1666, 0.1542, 0.1666, 0.1529]])""",
    ),
    (
        "3.5.1",
        "masked",
        """
    tensor([[0.2899,   -inf,   -inf,   -inf,   -inf,   -inf],
            [0.4656, 0.1723,   -inf,   -inf,   -inf,   -inf],
            [0.4594, 0.1703, 0.1731,   -inf,   -inf,   -inf],
            [0.2642, 0.1024, 0.1036, 0.0186,   -inf,   -inf],
            [0.2183, 0.0874, 0.0882, 0.0177, 0.0786,   -inf],
            [0.3408, 0.1270, 0.1290, 0.0198, 0.1290, 0.0078]])""",
    ),
    (
        "3.5.1",
        "attn_weights",
        """
    tensor([[1.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000],
            [0.5517, 0.4483, 0.0000, 0.0000, 0.0000, 0.0000],
            [0.3800, 0.3097, 0.3103, 0.0000, 0.0000, 0.0000],
            [0.2758, 0.2460, 0.2462, 0.2319, 0.0000, 0.0000],
            [0.2175, 0.1983, 0.1984, 0.1888, 0.1971, 0.0000],
            [0.1935, 0.1663, 0.1666, 0.1542, 0.1666, 0.1529]])""",
    ),
    (
        "3.5.2",
        "dropout(example)",
        """
    tensor([[2., 2., 0., 2., 2., 0.],
            [0., 0., 0., 2., 0., 2.],
            [2., 2., 2., 2., 0., 2.],
            [0., 2., 2., 0., 0., 2.],
            [0., 2., 0., 2., 0., 2.],
            [0., 2., 2., 2., 2., 0.]])""",
    ),
    (
        "3.5.2",
        "dropout(attn_weights)",
        """
    tensor([[2.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000],
            [0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000],
            [0.7599, 0.6194, 0.6206, 0.0000, 0.0000, 0.0000],
            [0.0000, 0.4921, 0.4925, 0.0000, 0.0000, 0.0000],
            [0.0000, 0.3966, 0.0000, 0.3775, 0.0000, 0.0000],
            [0.0000, 0.3327, 0.3331, 0.3084, 0.3331, 0.0000]])""",
    ),
    ("3.5.3", "batch.shape", "torch.Size([2, 6, 3])"),
    (
        "3.5.3",
        "context_vecs",
        """
    tensor([[[-0.4519,  0.2216],
             [-0.5874,  0.0058],
             [-0.6300, -0.0632],
             [-0.5675, -0.0843],
             [-0.5526, -0.0981],
             [-0.5299, -0.1081]],

            [[-0.4519,  0.2216],
             [-0.5874,  0.0058],
             [-0.6300, -0.0632],
             [-0.5675, -0.0843],
             [-0.5526, -0.0981],
             [-0.5299, -0.1081]]])""",
    ),
    ("3.5.3", "context_vecs.shape", "torch.Size([2, 6, 2])"),
    (
        "3.6.1",
        "context_vecs",
        """
    tensor([[[-0.4519,  0.2216,  0.4772,  0.1063],
             [-0.5874,  0.0058,  0.5891,  0.3257],
             [-0.6300, -0.0632,  0.6202,  0.3860],
             [-0.5675, -0.0843,  0.5478,  0.3589],
             [-0.5526, -0.0981,  0.5321,  0.3428],
             [-0.5299, -0.1081,  0.5077,  0.3493]],

            [[-0.4519,  0.2216,  0.4772,  0.1063],
             [-0.5874,  0.0058,  0.5891,  0.3257],
             [-0.6300, -0.0632,  0.6202,  0.3860],
             [-0.5675, -0.0843,  0.5478,  0.3589],
             [-0.5526, -0.0981,  0.5321,  0.3428],
             [-0.5299, -0.1081,  0.5077,  0.3493]]])""",
    ),
    ("3.6.1", "context_vecs.shape", "torch.Size([2, 6, 4])"),
    (
        "3.6.2",
        "context_vecs",
        """
    tensor([[[0.3190, 0.4858],
             [0.2943, 0.3897],
             [0.2856, 0.3593],
             [0.2693, 0.3873],
             [0.2639, 0.3928],
             [0.2575, 0.4028]],

            [[0.3190, 0.4858],
             [0.2943, 0.3897],
             [0.2856, 0.3593],
             [0.2693, 0.3873],
             [0.2639, 0.3928],
             [0.2575, 0.4028]]])""",
    ),
    ("3.6.2", "context_vecs.shape", "torch.Size([2, 6, 2])"),
    (
        "3.6.2",
        "a @ a.transpose(2, 3)",
        """
    tensor([[[[1.3208, 1.1631, 1.2879],
              [1.1631, 2.2150, 1.8424],
              [1.2879, 1.8424, 2.0402]],

             [[0.4391, 0.7003, 0.5903],
              [0.7003, 1.3737, 1.0620],
              [0.5903, 1.0620, 0.9912]]]])""",
    ),
    (
        "3.6.2",
        "First head",
        """
    tensor([[1.3208, 1.1631, 1.2879],
            [1.1631, 2.2150, 1.8424],
            [1.2879, 1.8424, 2.0402]])""",
    ),
    (
        "3.6.2",
        "Second head",
        """
    tensor([[0.4391, 0.7003, 0.5903],
            [0.7003, 1.3737, 1.0620],
            [0.5903, 1.0620, 0.9912]])""",
    ),
]
RASCHKA_INPUTS = [  # the book's `inputs`, as its code writes them
    [0.43, 0.15, 0.89],
    [0.55, 0.87, 0.66],
    [0.57, 0.85, 0.64],
    [0.22, 0.58, 0.33],
    [0.77, 0.25, 0.10],
    [0.05, 0.80, 0.55],
]
# The book's hands-on test (3.6.2, seed 123, d_in=3, d_out=2, two heads, the batch of two, dropout 0.0).
HANDS_ON = BOOK_PRINTS[-5][2]


def printed(text: str) -> torch.Tensor:
    """A value as the notebook prints it, read back: 'tensor([[0.2899, -inf], ...])', 'torch.Size([6, 2])'
    (the sizes) or a Python float '1.0' -> float64."""
    inner = text.strip()
    for wrapper in ("tensor(", "torch.Size("):
        inner = inner.removeprefix(wrapper).removesuffix(")") if inner.startswith(wrapper) else inner
    return torch.tensor(ast.literal_eval(inner.replace("inf", "1e999")), dtype=torch.float64)


def assert_as_printed(values: torch.Tensor, text: str, what: str) -> None:
    """`values` rounded to 4 decimals are the numbers the book prints (-inf where it prints -inf)."""
    expected = printed(text)
    assert tuple(values.shape) == tuple(expected.shape), what
    assert torch.equal(values.isinf(), expected.isinf()), what
    finite = expected.isfinite()
    difference = (values.round(decimals=4) - expected)[finite].abs().max().item()
    assert difference <= 1e-12, f"{what}: {values.round(decimals=4)} != {expected}"


@pytest.fixture(scope="module")
def printouts() -> list[Printout]:
    return chapter()[0]


def test_the_book_leaves_torch_s_generator_as_it_was() -> None:
    torch.manual_seed(2024)
    expected = torch.rand(3)
    torch.manual_seed(2024)
    chapter()  # seeds the global generator with 123 and 789, as the book does
    assert torch.equal(torch.rand(3), expected)


def test_headwise_computes_every_value_the_book_prints(printouts: list[Printout]) -> None:
    assert [(p.section, p.name) for p in printouts] == [(section, name) for section, name, _ in BOOK_PRINTS]
    for printout, (section, name, text) in zip(printouts, BOOK_PRINTS, strict=True):
        assert_as_printed(printout.value, text, f"{section} {name}")
    assert all(check.passed for p in printouts for check in p.checks)


def test_the_terminal_prints_every_value_in_the_books_order() -> None:
    buffer = StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", buffer)
        patch.setenv("COLUMNS", "80")  # as wide as the terminal: here, 80 columns
        assert main(["explain", "--book"]) == 0
    lines = buffer.getvalue().splitlines()
    assert not [line for line in lines if len(line) > 80]
    headers = [
        i for i, line in enumerate(lines) if any(line.startswith(f"{n}  (") for _, n, _ in BOOK_PRINTS)
    ]
    assert len(headers) == len(BOOK_PRINTS)
    for start, end, (section, name, text) in zip(
        headers, [*headers[1:], len(lines)], BOOK_PRINTS, strict=True
    ):
        shape = printed(text).shape
        assert lines[start].startswith(f"{name}  ({', '.join(map(str, shape))})"), (section, name)
        cells = [float(cell) for _, rows in tables(lines[start:end]) for row in rows for cell in row[1:]]
        assert_as_printed(torch.tensor(cells, dtype=torch.float64).reshape(shape), text, f"{section} {name}")
    assert "✓ all 8 checks passed" in lines[-1]


def test_the_page_holds_every_value_and_the_heads_of_3_6_2(tmp_path) -> None:
    page = tmp_path / "book.html"
    assert main(["explain", "--book", "--html", str(page)]) == 0
    data = read_report_data(page.read_text(encoding="utf-8"))
    assert [step["name"] for step in data["steps"]] == [
        f"{section} {name}" for section, name, _ in BOOK_PRINTS
    ]
    for step, (_, name, text) in zip(data["steps"], BOOK_PRINTS, strict=True):
        values = torch.stack([decode_array(matrix["values"]) for matrix in step["matrices"]])  # (M, R, C)
        assert_as_printed(values.reshape(printed(text).shape), text, name)
    (maps,) = data["attention"]
    weights = decode_array(maps["weights"])  # (1, 2, 6, 6): one layer, the two heads
    assert weights.shape == (1, 2, 6, 6)
    assert torch.equal(weights.triu(diagonal=1), torch.zeros(1, 2, 6, 6))  # causal


# MultiHeadAttention as the book's module needs it: d_in -> d_out projections, out_proj d_out -> d_out,
# qkv_bias.


class BookMultiHeadAttention(nn.Module):
    """The book's weight-split MultiHeadAttention (section 3.6.2), as printed there, without dropout."""

    def __init__(self, d_in: int, d_out: int, context_length: int, num_heads: int, qkv_bias: bool = False):
        super().__init__()
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, num_tokens, _ = x.shape
        shape = (b, num_tokens, self.num_heads, self.head_dim)
        keys = self.W_key(x).view(shape).transpose(1, 2)
        queries = self.W_query(x).view(shape).transpose(1, 2)
        values = self.W_value(x).view(shape).transpose(1, 2)
        attn_scores = queries @ keys.transpose(2, 3)
        attn_scores.masked_fill_(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        context_vec = (attn_weights @ values).transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)
        return self.out_proj(context_vec)


def headwise_like(
    reference: BookMultiHeadAttention, d_in: int, qkv_bias: bool
) -> headwise.MultiHeadAttention:
    """headwise's module with the book module's weights: d_out = H·Dh, out_proj d_out -> d_out."""
    module = headwise.MultiHeadAttention(
        d_in, reference.num_heads, head_dim=reference.head_dim, out_dim=reference.d_out, qkv_bias=qkv_bias
    )
    roles = (reference.W_query, reference.W_key, reference.W_value)
    state = {
        "in_proj_weight": torch.cat([layer.weight for layer in roles]),  # (3·d_out, d_in)
        "out_proj.weight": reference.out_proj.weight,  # (d_out, d_out)
        "out_proj.bias": reference.out_proj.bias,  # (d_out,)
    }
    if qkv_bias:
        state["in_proj_bias"] = torch.cat([layer.bias for layer in roles])  # (3·d_out,)
    module.load_state_dict(state)
    return module


def book_steps(reference: BookMultiHeadAttention, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The book's forward pass (3.6.2's code, as BookMultiHeadAttention runs it) kept step by step, under
    the walkthrough's names; the weights as the lecture writes them, d_in × d_out (nn.Linear's weight
    transposed)."""
    b, num_tokens, _ = x.shape
    shape = (b, num_tokens, reference.num_heads, reference.head_dim)
    queries, keys, values = (layer(x) for layer in (reference.W_query, reference.W_key, reference.W_value))
    q, k, v = (t.view(shape).transpose(1, 2) for t in (queries, keys, values))
    attn_scores = q @ k.transpose(2, 3)
    masked = attn_scores.masked_fill(reference.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
    scaled = masked / k.shape[-1] ** 0.5
    attn_weights = torch.softmax(scaled, dim=-1)
    by_head = attn_weights @ v
    context = by_head.transpose(1, 2).contiguous().view(b, num_tokens, reference.d_out)
    torch.manual_seed(123)  # dropout as the book's module with dropout=0.5 draws it in training mode
    dropped = nn.Dropout(0.5).train()(attn_weights)
    return {
        "inputs": x,
        "W_query": reference.W_query.weight.T,
        "W_key": reference.W_key.weight.T,
        "W_value": reference.W_value.weight.T,
        "queries": queries,
        "keys": keys,
        "values": values,
        "unrolled": queries,
        "queries_by_head": q,
        "keys_by_head": k,
        "values_by_head": v,
        "scores": attn_scores,
        "masked_scores": masked,
        "scaled_scores": scaled,
        "weights": attn_weights,
        "dropout": dropped,
        "context_by_head": by_head,
        "context": context,
        "out_proj": reference.out_proj.weight.T,
        "output": reference.out_proj(context),
    }


def test_the_default_walkthrough_is_the_books_hands_on_test_number_for_number() -> None:
    """`headwise explain`: every number it prints is the book's module's (drawn by the book's code after
    torch.manual_seed(123), run with the book's code, in float64) to 4 decimals, the output is what the
    book prints, and the steps come in the lectures' order under the lectures' stages."""
    buffer = StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", buffer)
        patch.setenv("COLUMNS", "80")
        assert main(["explain"]) == 0
    out = buffer.getvalue()
    assert not [line for line in out.splitlines() if len(line) > 80]
    assert out.rstrip().endswith("✓ all 13 checks passed")
    torch.manual_seed(123)
    reference = BookMultiHeadAttention(3, 2, 6, num_heads=2).double()  # W_query, W_key, W_value, out_proj
    inputs = torch.tensor(RASCHKA_INPUTS, dtype=torch.float64)  # (6, 3)
    with torch.no_grad():
        expected = book_steps(reference, torch.stack((inputs, inputs)))  # batch (2, 6, 3)
    printed_steps = sections(out)
    assert [name for name, _, _ in printed_steps][:5] == ["inputs", "head_dim", "W_query", "W_key", "W_value"]
    shapes = {name: shape for name, shape, _ in printed_steps}
    assert (
        shapes["inputs"] == (2, 6, 3) and shapes["scores"] == (2, 2, 6, 6) and shapes["output"] == (2, 6, 2)
    )
    for name, _, lines in printed_steps:
        found = tables(lines)
        if name == "head_dim":
            assert found[0][0] == ["d_in", "d_out", "num_heads", "head_dim"]
            assert found[0][1] == [["width", "3", "2", "2", "1"]]
            continue
        value = expected[name]
        if name in ("W_query", "W_key", "W_value"):
            matrices = [value]  # (d_in, d_out), no bias (qkv_bias=False)
        elif name == "out_proj":
            matrices = [value, reference.out_proj.bias[None]]
        elif name in ("inputs", "output"):
            matrices = list(value)  # both batch elements
        else:
            matrices = list(value[0].reshape(-1, *value.shape[-2:]))  # batch 0: (H, R, C) or (1, R, C)
        assert len(found) == len(matrices), name
        for (_, rows), matrix in zip(found, matrices, strict=True):
            for row, true in zip(rows, matrix, strict=True):
                assert_printed(row[1:], true)
    for (_, rows), batch in zip(tables(sections(out)[-1][2]), printed(HANDS_ON), strict=True):
        assert [[float(cell) for cell in row[1:]] for row in rows] == batch.tolist()  # as the book prints
    stages = [line for line in out.splitlines() if line.startswith("Lecture step ")]
    assert [int(line.split()[2].rstrip(".")) for line in stages] == list(range(1, 11))
    assert "Lecture step 2. Decide the output width d_out and the number of heads" in out
    assert "shape (b, num_heads, num_tokens, head_dim) = (B, H, Nq, Dh)" in out


def test_the_wide_example_is_one_flag_away(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--example", "wide"]) == 0
    wide = capsys.readouterr().out
    assert "widths        d_in = 3, d_out = 4, num_heads = 2, head_dim = 2" in wide
    assert "1. inputs  (1, 6, 3)" in wide
    assert main(["explain", "--heads", "1"]) == 0  # an option starts from the wide example
    assert "MultiHeadAttention(3, 1, head_dim=3)" in capsys.readouterr().out
    for arguments, message in [
        (["--example", "book", "--heads", "1"], "--example book is the book's hands-on test as it is"),
        (["--example", "tall"], "argument --example: expected one of book, wide, got 'tall'"),
        (["--example", "wide", "--book"], "--example ('wide') chooses the walkthrough's example"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["explain", *arguments])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_out_dim_and_qkv_bias_compute_the_books_module(qkv_bias: bool) -> None:
    d_in, d_out, heads, tokens = 5, 6, 3, 7  # odd widths, d_out != d_in, heads of width 2
    torch.manual_seed(0)
    reference = BookMultiHeadAttention(d_in, d_out, tokens, heads, qkv_bias=qkv_bias).double()
    module = headwise_like(reference, d_in, qkv_bias)  # float32, equal to the reference (drawn in float32)
    x = torch.randn(2, tokens, d_in, dtype=torch.float64)  # (B, N, d_in)
    golden = reference(x)  # (B, N, d_out), float64
    baseline = copy.deepcopy(reference).float()(x.float())  # the same plain-PyTorch ops in float32
    fast, _ = module(x.float(), is_causal=True)  # (B, N, d_out)
    assert_by_ratio(fast, golden, baseline, k=2)
    exact, _ = module.double()(x, is_causal=True)
    torch.testing.assert_close(exact, golden, rtol=0, atol=1e-14)
    assert (module.in_proj_bias is not None) == qkv_bias and module.out_proj.bias is not None


def test_the_defaults_are_unchanged_and_qkv_bias_follows_bias() -> None:
    default = headwise.MultiHeadAttention(8, 2)
    assert default.out_dim == 8 and default.out_proj.weight.shape == (8, 8)
    assert default.in_proj_bias is not None and default.out_proj.bias is not None
    no_bias = headwise.MultiHeadAttention(8, 2, bias=False)
    assert no_bias.in_proj_bias is None and no_bias.out_proj.bias is None
    only_qkv = headwise.MultiHeadAttention(8, 2, bias=False, qkv_bias=True)
    assert torch.equal(only_qkv.in_proj_bias, torch.zeros(24)) and only_qkv.out_proj.bias is None
    assert set(only_qkv.state_dict()) == {"in_proj_weight", "in_proj_bias", "out_proj.weight"}


def test_out_dim_and_qkv_bias_are_checked_and_torch_refuses_them() -> None:
    with pytest.raises(ValueError, match="out_dim must be a positive integer, got 0"):
        headwise.MultiHeadAttention(4, 2, out_dim=0)
    with pytest.raises(TypeError, match=r"qkv_bias must be a bool or None .*got str"):
        headwise.MultiHeadAttention(3, 2, head_dim=1, qkv_bias="no")
    for module in (
        headwise.MultiHeadAttention(4, 2, out_dim=6),
        headwise.MultiHeadAttention(4, 2, qkv_bias=False),
    ):
        with pytest.raises(ValueError, match=r"out_dim=.*qkv_bias=.*bias="):
            module.to_torch()


def test_the_book_replaces_the_lectures_example(capsys: pytest.CaptureFixture[str]) -> None:
    for arguments, message in [
        (["--book", "--heads", "3"], "--book replaces the lectures' example; leave out --heads"),
        (["--book", "--by-hand"], "not allowed with argument"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["explain", *arguments])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.browser
def test_the_book_page_in_a_browser(tmp_path) -> None:
    """--book --html in Chromium (as tests/chromium.py drives it): the steps in the book's order, the
    ✓ checks beside them, 3.5.1's -inf printed as −∞; and the model view's choice of colour scale."""
    browsing = pytest.importorskip("chromium")  # Playwright, and the system's Chromium
    if not browsing.CHROMIUM.exists():
        pytest.skip(f"{browsing.CHROMIUM} is missing")
    page_path = tmp_path / "book.html"
    assert main(["explain", "--book", "--html", str(page_path)]) == 0
    with browsing.sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(browsing.CHROMIUM), args=browsing.CHROMIUM_ARGS
        )
        try:
            seen = browsing.open_report(chromium, page_path)
            page = seen.page
            names = page.locator("[data-testid=step]").evaluate_all("items => items.map(i => i.dataset.name)")
            assert names == [f"{section} {name}" for section, name, _ in BOOK_PRINTS]
            checks = page.locator("[data-testid=checks] li.passed").all_text_contents()
            assert len(checks) == 8 and checks[0].startswith("✓ equal to res")
            masked = page.locator('[data-testid=step][data-name="3.5.1 masked"]')
            assert masked.locator("td", has_text="−∞").count() == 15
            browsing.screenshot(masked, "book-masked.png", tmp_path)
            seen.check()
            # The model view's scale: each map to its own largest weight, or one scale from 0 to 1 (which
            # changes the picture of a map whose weights stay below 1: no causal first row).
            flat = html.write_html(lecture_report(run_example(Example(causal=False))), tmp_path / "flat.html")
            seen = browsing.open_report(chromium, flat)
            page = seen.page
            note = page.locator("[data-testid=model-view-note]")
            assert (
                "1 layer × 2 heads" in note.text_content() and "its own largest weight" in note.text_content()
            )
            cell = "[data-testid=model-cell][data-head='1']"
            page.locator(cell).scroll_into_view_if_needed()
            page.wait_for_selector(f"{cell}[data-drawn=true]")
            own = seen.pixels(f"{cell} canvas")
            page.locator("[data-testid=model-view-absolute]").check()
            assert "every map coloured on one scale, from 0 (white) to 1 (dark)" in note.text_content()
            page.locator(cell).scroll_into_view_if_needed()
            page.wait_for_selector(f"{cell}[data-drawn=true]")
            assert seen.pixels(f"{cell} canvas")["hash"] != own["hash"]
            seen.check()
        finally:
            chromium.close()
