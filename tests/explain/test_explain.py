"""`headwise explain`: the walkthrough of the lectures' example and the pencil-and-paper exercise, run
in-process through the CLI and read back from what it prints."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from fractions import Fraction
from io import StringIO

import pytest
import torch
from oracle import SELF_ATTENTION_STEPS

import headwise
from headwise.cli.main import main
from headwise.explain import example, terminal
from headwise.explain.exercise import FEATURES, W_KEY, W_QUERY, W_VALUE
from headwise.inspection import reports
from headwise.pages.html import read_report_data
from headwise.trace import STEP_TEXT

RASCHKA = [  # Build a Large Language Model from Scratch, chapter 3
    [0.43, 0.15, 0.89],
    [0.55, 0.87, 0.66],
    [0.57, 0.85, 0.64],
    [0.22, 0.58, 0.33],
    [0.77, 0.25, 0.10],
    [0.05, 0.80, 0.55],
]
TOKENS = ["Your", "journey", "starts", "with", "one", "step"]
TWELVE = "the quick brown fox jumps over the lazy dog and runs away"
# The walkthrough in the lectures' order: the inputs, head_dim, the module's weights, the projections, the
# queries unrolled before the transpose, the scores masked then scaled (the lecture's order), the softmax,
# dropout (in training mode), the context, out_proj and the output.
WALKTHROUGH_STEPS = [
    "inputs",
    "head_dim",
    "W_query",
    "W_key",
    "W_value",
    *SELF_ATTENTION_STEPS[1:4],  # queries, keys, values
    "unrolled",
    *SELF_ATTENTION_STEPS[4:8],  # queries, keys and values by head, scores
    "masked_scores",
    "scaled_scores",
    "weights",
    "dropout",
    *SELF_ATTENTION_STEPS[-3:-1],  # context by head, context
    "out_proj",
    "output",
]
WEIGHT_STEPS = {"W_query": 0, "W_key": 1, "W_value": 2, "out_proj": 3}  # in [*module.projections(), out_proj]
HEADER = re.compile(r"^(\d+)\. (\w+)(?:  \(([\d, ]*)\))? ?─*$")


@pytest.fixture(autouse=True)
def eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The walkthrough is as wide as the terminal: the tests read an 80-column one."""
    monkeypatch.setenv("COLUMNS", "80")


def explain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run `headwise explain ARGS` in-process: (exit code, stdout). Nothing may go to stderr."""
    code = main(["explain", *args])
    out, err = capsys.readouterr()
    assert err == ""
    return code, out


def run_once(*args: str) -> str:
    """The output of `headwise explain ARGS`, for module-scoped fixtures (capsys is per test)."""
    buffer = StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", buffer)
        patch.setenv("COLUMNS", "80")
        assert main(["explain", *args]) == 0
    return buffer.getvalue()


@pytest.fixture(scope="module")
def default_output() -> str:
    """The wide example (headwise's own, one sequence): what the options change."""
    return run_once("--example", "wide")


@pytest.fixture(scope="module")
def by_hand_output() -> str:
    return run_once("--by-hand")


def sections(out: str) -> list[tuple[str, tuple[int, ...], list[str]]]:
    """The printed steps in order: (name, shape, the lines under the step's header)."""
    found: list[tuple[str, tuple[int, ...], list[str]]] = []
    for line in out.splitlines():
        match = HEADER.match(line)
        if match:
            assert int(match[1]) == len(found) + 1, line
            shape = tuple(int(n) for n in match[3].split(", ")) if match[3] else ()
            found.append((match[2], shape, []))
        elif found:
            found[-1][2].append(line)
    return found


def section(out: str, name: str) -> list[str]:
    return next(lines for step, _, lines in sections(out) if step == name)


def tables(lines: list[str]) -> list[tuple[list[str], list[list[str]]]]:
    """The matrices printed in a step: (column labels, rows of [row label, cells...]), in order."""
    found = []
    for i, line in enumerate(lines):
        if line.strip() and set(line.strip()) == {"─"}:
            header = lines[i - 1].split()
            rows = []
            for row in lines[i + 1 :]:
                cells = row.split()
                if len(cells) != len(header) + 1 or cells[0] in ("✓", "✗", "…", "head", "batch"):
                    break
                rows.append(cells)
            found.append((header, rows))
    return found


def assert_printed(cells: list[str], expected: torch.Tensor) -> None:
    """Printed numbers equal the tensor: integers exactly, others to the 4 printed decimals."""
    assert len(cells) == len(expected)
    for cell, true in zip(cells, expected.tolist(), strict=True):
        if re.fullmatch(r"-?\d+|-inf", cell):
            assert float(cell) == true, (cell, true)
        else:
            assert math.isclose(float(cell), true, abs_tol=5.1e-5), (cell, true)


def assert_fits(out: str) -> None:
    long = [line for line in out.splitlines() if len(line) > 80]
    assert not long, long


# The walkthrough of the lectures' example.


def test_default_walkthrough_fits_80_columns_and_passes_every_check(default_output: str) -> None:
    assert_fits(default_output)
    marks = [line[0] for line in default_output.splitlines() if line[:1] in ("✓", "✗")]
    assert marks == ["✓"] * 12  # 11 checks and the summary
    assert default_output.rstrip().endswith("✓ all 11 checks passed")
    for claim in (
        "num_heads · head_dim = 2 · 2 = 4 = d_out",
        "queries = x @ W_query + b_q",
        "masked_scores / √head_dim equals headwise's scores · 1/√Dh + mask",
        "in training each weight is dropped (0) or kept × 1/(1 - p) = 2",
        "at evaluation dropout is off",
        "each row of weights sums to 1",
        "the 30 masked entries (-inf) get weight exactly 0",
        "context = [head 0 | head 1]",
        "output = context @ out_proj + b_o",
    ):
        assert f"✓ {claim}" in default_output


def test_every_step_is_printed_in_order_with_its_shape_and_formula(default_output: str) -> None:
    printed = sections(default_output)
    assert [name for name, _, _ in printed] == WALKTHROUGH_STEPS
    shapes = dict((name, shape) for name, shape, _ in printed)
    assert shapes["inputs"] == (1, 6, 3)
    assert shapes["head_dim"] == ()
    assert shapes["W_query"] == (3, 4)  # W_qᵀ: (d_in, d_out) = (D, H·Dh)
    assert shapes["queries"] == (1, 6, 4)  # two heads of width 2: 3 is not divisible by 2
    assert shapes["unrolled"] == (1, 6, 2, 2)  # (B, N, H, Dh), before the transpose
    assert shapes["scores"] == (1, 2, 6, 6)
    assert shapes["out_proj"] == (4, 3)
    assert shapes["output"] == (1, 6, 3)
    for name, shape, lines in printed:
        if shape:
            assert lines[0].startswith("shape ("), name  # the lectures' names, then the legend's
            lines = lines[1:]
        assert lines[1].startswith("book: "), name  # the lectures' code under ours
        if name in STEP_TEXT and name not in ("queries", "keys", "values", "masked_scores", "output"):
            formula, sentence = STEP_TEXT[name]
            if name not in ("scaled_scores", "dropout"):  # written in the lectures' order and names
                assert lines[0] == formula
            assert " ".join(sentence.split()) in " ".join(" ".join(lines).split())  # wrapped at spaces


def test_the_walkthrough_follows_the_lectures_steps_in_order(default_output: str) -> None:
    """LECTURES.md, lecture 1, steps 1 to 9: the step that shows each, and what it must say there."""
    lecture = [
        ("1. inputs (b, num_tokens, d_in)", "inputs", "shape (b, num_tokens, d_in) = (B, Nq, D)"),
        ("2. d_out and the heads", "head_dim", "head_dim = d_out / num_heads = 4 / 2 = 2"),
        ("3. W_query", "W_query", "shape (d_in, d_out) = (D, H·Dh) W_query = W_qᵀ"),
        ("3. W_key", "W_key", "nn.Linear(d_in, d_out"),
        ("3. W_value", "W_value", "nn.Linear(d_in, d_out"),
        ("4. queries", "queries", "(b, num_tokens, d_out)"),
        ("4. keys", "keys", "keys = self.W_key(x)"),
        ("4. values", "values", "values = self.W_value(x)"),
        ("5. unroll", "unrolled", "shape (b, num_tokens, num_heads, head_dim) = (B, Nq, H, Dh)"),
        ("6. transpose", "queries_by_head", "shape (b, num_heads, num_tokens, head_dim) = (B, H, Nq, Dh)"),
        ("7. attention scores", "scores", "attn_scores = queries @ keys.transpose(2, 3)"),
        ("8. causal mask", "masked_scores", "-torch.inf"),
        ("8. scale by √head_dim", "scaled_scores", "(1/√2 = 0.7071)"),
        ("8. softmax", "weights", "attn_weights = torch.softmax("),
        ("8. dropout", "dropout", "training, p = 0.5"),
        ("9. context vectors", "context_by_head", "context_vec = (attn_weights @ values)"),
        ("9. combine heads", "context", "view(b, num_tokens, self.d_out)"),
        ("9. output projection", "out_proj", "self.out_proj = nn.Linear(d_out, d_out)"),
        ("9. output projection", "output", "context_vec = self.out_proj(context_vec)"),
    ]
    names = [name for name, _, _ in sections(default_output)]
    places = [names.index(name) for _, name, _ in lecture]
    assert places == sorted(places)  # in the lectures' order
    for what, name, said in lecture:
        header = next(
            line for line in default_output.splitlines() if line.startswith(f"{names.index(name) + 1}. ")
        )
        text = " ".join(" ".join([header, *section(default_output, name)]).split())
        assert said in text, what
    assert "Columns hH:i: feature i of head H" in default_output
    stages = [line for line in default_output.splitlines() if line.startswith("Lecture step ")]
    assert [int(line.split()[2].rstrip(".")) for line in stages] == list(range(1, 10))


def test_printed_numbers_are_those_of_an_independent_run(default_output: str) -> None:
    torch.manual_seed(123)
    module = headwise.MultiHeadAttention(3, 2, head_dim=2, dtype=torch.float64)
    x = torch.tensor([RASCHKA], dtype=torch.float64)  # (1, 6, 3)
    with torch.no_grad(), headwise.trace() as expected:
        module(x, is_causal=True)

    projections = [*module.projections(), (module.out_proj.weight, module.out_proj.bias)]
    letters = {"W_query": "q", "W_key": "k", "W_value": "v", "out_proj": "o"}
    masked = expected["masked_scores"].tensor  # headwise's: scaled, then masked
    for name, _, lines in sections(default_output):
        printed = tables(lines)
        if name in WEIGHT_STEPS:  # Wᵀ (in, out) = (d_in, d_out), then the bias as one row
            weight, bias = projections[WEIGHT_STEPS[name]]
            rows = ["h0:0", "h0:1", "h1:0", "h1:1"] if name == "out_proj" else ["0", "1", "2"]  # H·Dh or D
            matrices, labels = [weight.detach().T, bias.detach()[None]], [rows, [f"b_{letters[name]}"]]
        elif name in ("head_dim", "dropout"):
            continue  # widths, and a pass in training mode: tested on their own
        else:
            if name == "masked_scores":  # the lecture's order: masked first, scaled next
                source = expected["scores"].tensor.masked_fill(masked.isinf(), float("-inf"))
            elif name == "scaled_scores":
                source = masked
            else:
                source = expected["queries" if name == "unrolled" else name].tensor
            matrices = list(source.flatten(0, -3))  # (H, N, ·) or (1, N, ·)
            labels = [TOKENS] * len(matrices)
        assert len(printed) == len(matrices), name
        for (_, rows), matrix, label in zip(printed, matrices, labels, strict=True):
            assert [row[0] for row in rows] == label
            for row, true in zip(rows, matrix, strict=True):
                assert_printed(row[1:], true)


def test_embedding_rows_and_causal_weights_read_as_in_the_book(default_output: str) -> None:
    (header, rows), *_ = tables(section(default_output, "inputs"))
    assert header == ["0", "1", "2"]
    assert [[float(cell) for cell in row[1:]] for row in rows] == RASCHKA
    head_0, head_1 = tables(section(default_output, "weights"))
    assert head_0[0] == TOKENS
    for _, rows in (head_0, head_1):
        assert rows[0] == ["Your", "1", "0", "0", "0", "0", "0"]  # the first token sees only itself
        for i, row in enumerate(rows):
            assert row[i + 2 :] == ["0"] * (5 - i)  # exactly 0 after the diagonal
            assert math.isclose(sum(map(float, row[1:])), 1.0, abs_tol=6 * 5e-5)
    masked = tables(section(default_output, "masked_scores"))[0][1]
    assert masked[1][3:] == ["-inf"] * 4


def test_no_causal_masks_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = explain(capsys, "--no-causal")
    assert code == 0
    for _, rows in tables(section(out, "masked_scores")):
        assert all(cell != "-inf" for row in rows for cell in row[1:])
    for _, rows in tables(section(out, "weights")):
        assert all(float(cell) > 0 for row in rows for cell in row[1:])
    assert "✓ nothing is masked, so every key gets a weight above 0" in out


def test_cross_attention_takes_keys_and_values_from_a_second_sequence(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = explain(capsys, "--cross")
    assert code == 0
    assert_fits(out)
    printed = sections(out)
    assert [name for name, _, _ in printed] == ["inputs", "kv_inputs", *WALKTHROUGH_STEPS[1:]]
    shapes = dict((name, shape) for name, shape, _ in printed)
    assert shapes["kv_inputs"] == (1, 7, 3)
    assert shapes["weights"] == (1, 2, 6, 7)  # 6 queries, 7 keys: not square
    (header, rows), _ = tables(section(out, "weights"))
    assert header[:2] == ["Ton", "voyage"] and len(header) == 7
    assert [row[0] for row in rows] == TOKENS
    assert re.search(r"^mask\s+none", out, re.MULTILINE)  # cross-attention is not causal unless asked
    assert "✓ keys = m @ W_key + b_k" in out
    assert out.rstrip().endswith("✓ all 11 checks passed")


def test_causal_cross_attention_explains_queries_that_see_no_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = explain(capsys, "--cross", "ein Schritt", "--causal")
    assert code == 0
    for _, rows in tables(section(out, "weights")):
        # Aligned bottom-right: query i sees keys j <= i - 4; the first four see none.
        assert [row[1:] for row in rows[:4]] == [["0", "0"]] * 4
        assert rows[4][1:] == ["1", "0"]
    assert "or to 0 for Your, journey, starts, with" in out
    assert out.rstrip().endswith("✓ all 11 checks passed")


def test_twelve_tokens_fit_by_eliding_columns(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = explain(capsys, "--tokens", TWELVE, "--heads", "3", "--dim", "6", "--seed", "7")
    assert code == 0
    assert_fits(out)
    (header, rows), _, _ = tables(section(out, "weights"))
    assert "…" in header and header[-1] == "away"
    assert [row[0] for row in rows] == TWELVE.split()
    assert "columns hidden to fit 80 columns" in "\n".join(section(out, "weights"))
    assert out.rstrip().endswith("✓ all 12 checks passed")  # the 11, and the repeated word's


def test_a_wider_terminal_shows_every_column(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "150")
    code, out = explain(capsys, "--tokens", TWELVE, "--heads", "3", "--dim", "6", "--seed", "7")
    assert code == 0
    (header, _), _, _ = tables(section(out, "weights"))
    assert header == TWELVE.split() and "columns hidden" not in out
    assert 80 < max(map(len, out.splitlines())) <= 150


def test_heads_and_head_dim_set_the_shapes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = explain(capsys, "--dim", "4", "--heads", "3", "--head-dim", "1")
    assert code == 0
    shapes = {name: shape for name, shape, _ in sections(out)}
    assert shapes["inputs"] == (1, 6, 4)  # the book's rows are 3 wide: D = 4 draws its own vectors
    assert shapes["queries"] == (1, 6, 3)  # H·Dh = 3 · 1
    assert shapes["weights"] == (1, 3, 6, 6)
    assert shapes["output"] == (1, 6, 4)
    assert len(tables(section(out, "weights"))) == 3  # one matrix per head
    assert tables(section(out, "context"))[0][0] == ["h0:0", "h1:0", "h2:0"]


def test_a_failed_check_is_marked_and_fails_the_walkthrough(capsys: pytest.CaptureFixture[str]) -> None:
    run = example.run_example(example.WIDE)
    with torch.no_grad():
        run.module.out_proj.bias += 1.0  # the traced output no longer comes from these weights
    assert not terminal.walkthrough(run, terminal.make_console())
    out = capsys.readouterr().out
    assert "✗ output = context @ out_proj + b_o, recomputed: max difference 1" in out
    assert out.rstrip().endswith("✗ 1 of 11 checks failed")


def test_a_repeated_word_gets_the_same_embedding(capsys: pytest.CaptureFixture[str]) -> None:
    _, out = explain(capsys, "--tokens", TWELVE)
    (_, rows), *_ = tables(section(out, "inputs"))
    assert rows[0][1:] == rows[6][1:]  # "the" twice
    assert rows[0][1:] != rows[1][1:]
    assert "✓ 'the' repeated: one embedding, so identical queries, keys, values wherever it" in out


# The pencil-and-paper exercise.


def matmul(a: list[list[int]], b: list[list[int]]) -> list[list[int]]:
    """The pencil's matrix product, in plain integers."""
    return [[sum(x * y for x, y in zip(row, column, strict=True)) for column in transpose(b)] for row in a]


def transpose(a: list[list]) -> list[list]:
    return [list(column) for column in zip(*a, strict=True)]


def panel(out: str, title: str) -> list[list[str]]:
    """The rows ([label, cells...]) of the panel titled `title`, read from its columns of the output."""
    lines = out.splitlines()
    alone = re.compile(rf"(?:^|\s\s){re.escape(title)}(?:\s\s|$)")  # a title, not a word in a sentence
    i = next(i for i, line in enumerate(lines) if alone.search(line))
    start = lines[i].index(title, alone.search(lines[i]).start())
    after = re.search(r"\s{2,}\S", lines[i][start + len(title) :])
    end = None if after is None else start + len(title) + after.start() + len(after[0]) - 1
    header = lines[i + 1][start:end].split()
    rows = []
    for line in lines[i + 3 :]:
        cells = line[start:end].split()
        if len(cells) != len(header) + 1:
            break
        rows.append(cells)
    return rows


def test_by_hand_fits_and_marks_the_approximations(by_hand_output: str) -> None:
    assert_fits(by_hand_output)
    headers = [line for line in by_hand_output.splitlines() if re.match(r"^\d\. ", line)]
    assert len(headers) == 9
    assert headers[2].startswith("3. prepare: copy Q, write K transposed")  # the lecture's step 2
    approximate = [header.split(" ─")[0] for header in headers if "≈" in header]
    assert approximate == [
        "5. ≈ scale: floor(x/2) for x/√3  (approximation)",
        "6. ≈ softmax, e^x: 3^x for e^x  (approximation)",
    ]
    assert by_hand_output.rstrip().endswith("✓ all 4 checks passed")


def test_by_hand_numbers_are_the_pencil_and_paper_ones(by_hand_output: str) -> None:
    x, w_q, w_k, w_v = (m.tolist() for m in (FEATURES, W_QUERY, W_KEY, W_VALUE))
    queries, keys, values = matmul(w_q, x), matmul(w_k, x), matmul(w_v, x)
    scores = matmul(transpose(keys), queries)  # (4, 4): column j = query j
    halves = [[s // 2 for s in row] for row in scores]
    powers = [[3**h for h in row] for row in halves]
    sums = [sum(column) for column in transpose(powers)]

    def printed(title: str) -> list[list[int]]:
        return [[int(cell) for cell in row[1:]] for row in panel(by_hand_output, title)]

    assert printed("Q") == queries
    assert printed("V") == values
    assert printed("Kᵀ") == transpose(keys) and printed("Q (copied)") == queries
    assert printed("Kᵀ·Q") == scores
    assert printed("by hand: floor(x/2)") == halves
    assert printed("by hand: 3^x") == powers
    assert printed("by hand: Σ 3^x") == [sums]
    assert max(map(max, scores)) <= 7 and min(map(min, scores)) >= 0  # small enough for pencil and paper

    weights = [[Fraction(cell) for cell in row[1:]] for row in panel(by_hand_output, "by hand: A")]
    assert weights == [[Fraction(p, s) for p, s in zip(row, sums, strict=True)] for row in powers]
    assert all(sum(column) == 1 for column in transpose(weights))  # each column of A sums to 1
    context = [[Fraction(cell) for cell in row[1:]] for row in panel(by_hand_output, "by hand: Z")]
    assert context == [
        [sum(v * a for v, a in zip(row, column, strict=True)) for column in transpose(weights)]
        for row in values
    ]


def test_by_hand_exact_values_are_headwise_reference(by_hand_output: str) -> None:
    q, k, v = (
        torch.tensor(m, dtype=torch.float64).T[None, None]  # (1, 1, 4, 3)
        for m in (
            matmul(W_QUERY.tolist(), FEATURES.tolist()),
            matmul(W_KEY.tolist(), FEATURES.tolist()),
            matmul(W_VALUE.tolist(), FEATURES.tolist()),
        )
    )
    out, weights = headwise.attention(q, k, v, backend="reference", return_weights=True)
    scaled = (q @ k.transpose(-2, -1))[0, 0].T / math.sqrt(3)  # (4, 4), column j = query j
    for title, expected in (
        ("exact: x/√3", scaled),
        ("exact: e^x", scaled.exp()),
        ("exact: A", weights[0, 0].T),
        ("exact: Z", out[0, 0].T),
    ):
        rows = panel(by_hand_output, title)
        assert len(rows) == len(expected), title
        for row, true in zip(rows, expected, strict=True):
            for cell, number in zip(row[1:], true.tolist(), strict=True):
                assert math.isclose(float(cell), number, abs_tol=5.1e-4), (title, cell, number)
    assert "✓ each column of A by hand sums to 1, exactly (as fractions)" in by_hand_output
    assert "✓ Kᵀ·Q by hand equals headwise's scores" in by_hand_output


TEACHER = {  # a teacher's own exercise: 3 tokens of 4 features through one 4-2 head
    "X": [[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]],
    "W_Q": [[1, 0, 1, 0], [0, 1, 0, 1]],
    "W_K": [[1, 1, 0, 0], [0, 0, 1, 1]],
    "W_V": [[1, 0, 0, 1], [0, 2, 1, 0]],
}


SECOND = {  # a second 4-2 head for TEACHER's tokens
    "W_Q2": [[0, 1, 0, 1], [1, 0, 0, 0]],
    "W_K2": [[0, 0, 1, 1], [1, 1, 0, 0]],
    "W_V2": [[1, 1, 0, 0], [0, 0, 1, 1]],
}
RULES = {"divide_by": 1, "power_base": 2, "decimals": 2}


def test_a_teachers_own_exercise_is_worked_like_the_lectures(tmp_path, capsys) -> None:
    exercise = tmp_path / "exercise.json"
    exercise.write_text(json.dumps(TEACHER), encoding="utf-8")
    code, out = explain(capsys, "--by-hand", "--input", str(exercise))
    assert code == 0 and out.rstrip().endswith("✓ all 4 checks passed")
    assert_fits(out)
    assert "3 tokens x1..x3 of 4 features through one 4-2 head" in out
    x, w_q, w_k, w_v = (TEACHER[name] for name in ("X", "W_Q", "W_K", "W_V"))
    queries, keys, values = matmul(w_q, x), matmul(w_k, x), matmul(w_v, x)
    scores = matmul(transpose(keys), queries)  # (3, 3): column j = query j

    def printed(title: str) -> list[list[int]]:
        return [[int(cell) for cell in row[1:]] for row in panel(out, title)]

    assert printed("Q") == queries and printed("V") == values and printed("Kᵀ·Q") == scores
    assert printed("by hand: floor(x/2)") == [[s // 2 for s in row] for row in scores]
    q, k, v = (torch.tensor(m, dtype=torch.float64).T[None, None] for m in (queries, keys, values))
    _, weights = headwise.attention(q, k, v, backend="reference", return_weights=True)  # scale 1/√2
    for row, true in zip(panel(out, "exact: A"), weights[0, 0].T, strict=True):
        assert [float(cell) for cell in row[1:]] == pytest.approx(true.tolist(), abs=5.1e-4)
    assert "two such 4-2 heads side by side make 4-4 multi-head" in " ".join(out.split())
    page = tmp_path / "exercise.html"
    assert main(["explain", "--by-hand", "--input", str(exercise), "--html", str(page)]) == 0
    data = read_report_data(page.read_text(encoding="utf-8"))
    assert data["steps"][0]["name"] == "inputs: X (4×3) and the weights W_Q, W_K, W_V (2×4)"
    assert [maps["query_tokens"] for maps in data["attention"]] == [["x1", "x2", "x3"]] * 2
    checks = [check for step in data["steps"] for check in step["checks"]]  # the terminal's, on the page
    assert len(checks) == 4 and all(check["passed"] for check in checks)
    assert checks[0]["text"] == "Kᵀ·Q by hand equals headwise's scores (q·kᵀ, transposed), exactly"


def refused_exercise(path, content: str, message: str, capsys):
    """Write `content` to `path`, run `explain --by-hand --input path`: exit 2 with `message` in one
    argument error, no traceback. -> path."""
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--by-hand", "--input", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --input: " in err and message in err and "Traceback" not in err, err
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "is not JSON"),
        (
            json.dumps({**TEACHER, "W_O": [[1]]}),
            "must give the matrices ['X', 'W_Q', 'W_K', 'W_V'], optionally a second head",
        ),
        (json.dumps({**TEACHER, "W_Q2": TEACHER["W_Q"]}), "['W_Q2', 'W_K2', 'W_V2'] (all three)"),
        (
            json.dumps({**TEACHER, **SECOND, "W_K2": [[-1, 0, 0, 0], [0, 0, 0, 0]]}),
            "the scores Kᵀ·Q of W_Q2, W_K2 must be >= 0",
        ),
        (json.dumps({**TEACHER, "rules": {"round": 2}}), "rules must be an object with some of the keys"),
        (json.dumps({**TEACHER, "rules": {"power_base": 1}}), "rules: power_base must be an integer from 2"),
        (json.dumps({**TEACHER, "rules": {"decimals": "2"}}), "rules: decimals must be an integer from 1"),
        (json.dumps({**TEACHER, "X": [[1, 0], [1]]}), "X must be a list of equally long, non-empty lists"),
        (
            json.dumps({**TEACHER, "W_Q": [[1, 0, 1.5, 0], [0, 1, 0, 1]]}),
            "W_Q must hold integers from -9 to 9",
        ),
        (json.dumps({**TEACHER, "W_K": [[1, 1, 0], [0, 0, 1]]}), "W_K must be d_k × d = d_k × 4 (X's d)"),
        (
            json.dumps({**TEACHER, "W_K": [[-1, 0, 0, 0], [0, 0, 0, 0]]}),
            "the scores Kᵀ·Q of W_Q, W_K must be >= 0",
        ),
        (  # 2^64 overflowed int64 (a traceback: Fraction(0, 0)); 3^81 gave negative "powers"
            json.dumps({"X": [[8]], "W_Q": [[1]], "W_K": [[1]], "W_V": [[1]], "rules": {"divide_by": 1}}),
            "reach 64, so by hand 3^floor(64/1) = 3.43e+30 (at most 1,000,000 by pencil)",
        ),
    ],
)
def test_an_exercise_file_it_cannot_use_is_an_argument_error(tmp_path, capsys, content, message) -> None:
    exercise = refused_exercise(tmp_path / "exercise.json", content, message, capsys)
    with pytest.raises(SystemExit):
        main(["explain", "--input", str(exercise)])
    assert "is an exercise for --by-hand; add --by-hand" in capsys.readouterr().err


def as_csv(exercise: dict) -> str:
    """An exercise in the CSV layout: per matrix a line with its name, then its rows; the rules as
    name,value lines; with a comment and blank lines, as a teacher might write it."""
    lines = ["# a teacher's exercise"]
    for name, value in exercise.items():
        rows = value.items() if name == "rules" else value
        lines += ["", name, *(",".join(map(str, row)) for row in rows)]
    return "\n".join(lines) + "\n"


def rounded(value: Fraction, decimals: int = 2) -> Fraction:
    """Half away from zero, as with pencil and paper."""
    scaled = abs(value) * 10**decimals
    whole = math.floor(scaled) + (scaled - math.floor(scaled) >= Fraction(1, 2))
    return Fraction(whole if value >= 0 else -whole, 10**decimals)


def test_a_csv_exercise_with_two_heads_and_rules(tmp_path, capsys) -> None:
    """Two heads worked one after the other and stacked (the lecture's "two 6-3 heads make 6-6"), with the
    teacher's rules: floor(x/1), 2^x, A and Z rounded to 2 decimals (Z from the rounded A)."""
    exercise = {**TEACHER, **SECOND, "rules": RULES}
    csv_file = tmp_path / "exercise.csv"
    csv_file.write_text(as_csv(exercise), encoding="utf-8")
    code, out = explain(capsys, "--by-hand", "--input", str(csv_file))
    assert code == 0 and out.rstrip().endswith("✓ all 9 checks passed")
    assert_fits(out)
    assert "3 tokens x1..x3 of 4 features through two 4-2 heads side by side" in out
    headers = [line.split(" ─")[0] for line in out.splitlines() if re.match(r"^\d+\. ", line)]
    assert len(headers) == 19  # inputs, 8 steps of head 0, head 1's weights and its 8 steps, the stack
    assert headers[9] == "10. head 1: its weights W_Q2, W_K2, W_V2 (2×4)"  # heads from 0, as in explain
    assert headers[13] == "14. ≈ head 1: scale: floor(x/1) for x/√2  (approximation)"
    assert headers[18] == "19. heads side by side: Z = [Z0; Z1] (4×3)"
    x = TEACHER["X"]
    stacked_by_hand, stacked_exact = [], []
    for head, (w_q, w_k, w_v) in enumerate(
        [(TEACHER["W_Q"], TEACHER["W_K"], TEACHER["W_V"]), tuple(SECOND.values())]  # heads 0 and 1
    ):
        queries, keys, values = matmul(w_q, x), matmul(w_k, x), matmul(w_v, x)
        scores = matmul(transpose(keys), queries)  # (3, 3): column j = query j
        powers = [[2**s for s in row] for row in scores]  # floor(x/1) = x
        sums = [sum(column) for column in transpose(powers)]
        weights = [[rounded(Fraction(p, s)) for p, s in zip(row, sums, strict=True)] for row in powers]
        context = [
            [rounded(sum(v * a for v, a in zip(row, col, strict=True))) for col in transpose(weights)]
            for row in values
        ]
        assert [[int(c) for c in row[1:]] for row in panel(out, f"by hand: 2^x (head {head})")] == powers
        assert [[Fraction(c) for c in row[1:]] for row in panel(out, f"by hand: A{head}")] == weights
        assert [row[1:] for row in panel(out, f"by hand: Z{head}")] == [
            [f"{float(z):.2f}" for z in row] for row in context
        ]
        stacked_by_hand += context
        q, k, v = (torch.tensor(m, dtype=torch.float64).T[None, None] for m in (queries, keys, values))
        stacked_exact += headwise.attention(q, k, v, backend="reference")[0, 0].T.tolist()  # (2, 3)
    assert "✓ each column of A1 by hand sums to 1 within its rounding (at most 0.015 off)" in out
    assert [[Fraction(c) for c in row[1:]] for row in panel(out, "by hand: Z")] == stacked_by_hand
    assert [row[0] for row in panel(out, "by hand: Z")] == ["h0:1", "h0:2", "h1:1", "h1:2"]
    for row, true in zip(panel(out, "exact: Z"), stacked_exact, strict=True):
        assert [float(cell) for cell in row[1:]] == pytest.approx(true, abs=5.1e-4)
    json_file = tmp_path / "exercise.json"
    json_file.write_text(json.dumps(exercise), encoding="utf-8")
    assert explain(capsys, "--by-hand", "--input", str(json_file)) == (0, out)  # the same exercise


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1,0\nX\n1\n", "exercise.csv, line 1: expected a block's name (X, W_Q, W_K, W_V, rules)"),
        ("X\n1,0\nX\n1,0\n", "exercise.csv, line 3: a second block named 'X'"),
        (
            as_csv(TEACHER).replace("0,1,1", "0,one,1", 1),
            "X must hold integers from -9 to 9 (pencil and paper), got 'one'",
        ),
        (as_csv(TEACHER).replace("1,0,1\n", "1,0\n", 1), "X must be a list of equally long, non-empty lists"),
        (
            as_csv({**TEACHER, "rules": {"decimals": 2}}).replace("decimals,2", "decimals,2,3"),
            "each line of the rules block must be name,value",
        ),
        (
            as_csv({**TEACHER, "rules": {"decimals": 2}}).replace("decimals,2", "decimals,two"),
            "rules: decimals must be an integer from 1 to 4, got 'two'",
        ),
        (as_csv({"X": TEACHER["X"]}), "must give the matrices ['X', 'W_Q', 'W_K', 'W_V']"),
    ],
)
def test_a_csv_exercise_it_cannot_use_is_an_argument_error(tmp_path, capsys, content, message) -> None:
    refused_exercise(tmp_path / "exercise.csv", content, message, capsys)


def test_an_exercise_file_is_json_or_csv(tmp_path, capsys) -> None:
    exercise = tmp_path / "exercise.txt"
    exercise.write_text(json.dumps(TEACHER), encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--by-hand", "--input", str(exercise)])
    assert exit_info.value.code == 2
    assert "exercise.txt must be a .json or a .csv file, got .txt" in capsys.readouterr().err


# A pretrained model's heads in the terminal.

SENTENCE = "The cat sat on the mat."
MINILM_TOKENS = ("[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]")


@pytest.fixture(scope="module")
def minilm_weights() -> torch.Tensor:
    """all-MiniLM-L6-v2's weights reading SENTENCE: (6, 12, 9, 9)."""
    (maps,) = reports.minilm_report(SENTENCE).attention
    assert maps.query_tokens == MINILM_TOKENS
    return maps.weights


def summary_rows(out: str) -> list[list[str]]:
    """The rows under the summary's `layer head 1st 2nd 3rd` header: [layer, head, key, weight, ...]."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() == ["layer", "head", "1st", "2nd", "3rd"])
    return [line.split() for line in lines[start + 2 :] if line.strip()]


@pytest.mark.parametrize(("token", "query"), [("cat", 2), (None, 1), ("-1", 8), ("MAT", 6)])
def test_a_models_summary_lists_each_heads_strongest_keys(capsys, minilm_weights, token, query) -> None:
    code, out = explain(capsys, "--model", "minilm", SENTENCE, *(() if token is None else ("--token", token)))
    assert code == 0
    assert_fits(out)
    assert f"self-attention: query {query} {MINILM_TOKENS[query]} " in out  # the default skips [CLS]
    rows = summary_rows(out)
    assert [(int(row[0]), int(row[1])) for row in rows] == [(L, h) for L in range(6) for h in range(12)]
    for row in rows:
        weights = minilm_weights[int(row[0]), int(row[1]), query].tolist()  # (Nk,) this head's row
        ranked = sorted(range(len(weights)), key=lambda key: -weights[key])
        printed_keys, printed_weights = row[2::2], [float(w) for w in row[3::2]]
        assert printed_weights == [round(weights[key], 2) for key in ranked[:3]], row
        assert printed_weights == sorted(printed_weights, reverse=True)
        for key, weight in zip(printed_keys, printed_weights, strict=True):  # ties may come in any order
            assert any(MINILM_TOKENS[k] == key and round(weights[k], 2) == weight for k in ranked[:4]), row


def test_a_model_folders_summary_covers_every_kind_of_attention(tmp_path, capsys) -> None:
    """An encoder-decoder's three kinds of attention, each for its own query "animal", against the weights
    of the model's own transformers class."""
    pytest.importorskip("transformers")
    from tiny_models import SENTENCE as TEXT
    from tiny_models import reference_weights, save_tiny

    folder = save_tiny("bart", tmp_path)
    capsys.readouterr()  # what saving the folder printed
    code, out = explain(capsys, "--model", str(folder), TEXT, "--token", "animal")
    assert code == 0
    kinds = reference_weights("bart", folder)
    headers = [line.split(" ─")[0] for line in out.splitlines() if ": query " in line]
    assert [header.split(": query ")[0] for header in headers] == list(kinds)
    blocks = out.split("\nlayer ")[1:]  # one table per kind of attention
    for (query_tokens, key_tokens, weights), header, block in zip(
        kinds.values(), headers, blocks, strict=True
    ):
        query = query_tokens.index(next(t for t in query_tokens if "animal" in t.lower()))
        assert header.endswith(f"query {query} {query_tokens[query]}")
        layers, heads = weights.shape[:2]
        rows = [line.split() for line in block.splitlines()[2:] if line.strip()][: layers * heads]
        assert [(int(row[0]), int(row[1])) for row in rows] == [
            (L, h) for L in range(layers) for h in range(heads)
        ]
        for row in rows:
            strongest = weights[int(row[0]), int(row[1]), query].tolist()  # (Nk,)
            assert [float(w) for w in row[3::2]] == [round(w, 2) for w in sorted(strongest, reverse=True)[:3]]
            for key, weight in zip(row[2::2], row[3::2], strict=True):  # ties may come in any order
                assert any(
                    t == key and f"{w:.2f}" == weight for t, w in zip(key_tokens, strongest, strict=True)
                )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "minilm", SENTENCE, "--token", "dog"], "argument --token: 'dog' is none of the tokens"),
        (
            ["--model", "minilm", SENTENCE, "--token", "9"],
            "argument --token: 9 is not a position: expected 0 to 8",
        ),
        (
            ["--by-hand", "--token", "1"],
            "--token ('1') chooses a query token of --model or --checkpoint only",
        ),
        (["--model", "minilm", SENTENCE, "--token", "1", "--html", "x.html"], "leave out --html and --png"),
    ],
)
def test_a_token_it_cannot_find_is_an_argument_error(capsys, args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", *args])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert message in err and "Traceback" not in err, err
    assert out == ""


def test_the_query_is_a_position_or_a_word() -> None:
    tokens = ("<s>", "un", "##believ", "##able", "un", "</s>")
    assert reports.query_position(tokens) == 1  # the first token that is not a special one
    assert reports.query_position(("[CLS]", "[SEP]")) == 0  # only special tokens: the first
    assert reports.query_position(tokens, "believ") == 2  # WordPiece's ## need not be typed
    assert reports.query_position(tokens, "UN") == 1  # the first occurrence, any case
    assert reports.query_position(tokens, "-2") == 4
    assert reports.query_position(tokens, "</s>") == 5
    assert reports.query_position(("The", "Ġcat", "Ġsat"), "cat") == 1  # GPT-2's word mark
    assert reports.query_position(("▁The", "▁cat"), "CAT") == 1  # SentencePiece's (Llama, T5)
    assert reports.query_position(("in", "1990", "."), "1990") == 1  # a number that is a word
    with pytest.raises(ValueError, match="'--1' is none of the tokens"):
        reports.query_position(tokens, "--1")  # int('--1') failed before


# The command line.


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dim", "0"], "argument --dim: expected an integer from 1 to 512, got '0'"),
        (["--heads", "-1"], "argument --heads: expected an integer from 1 to 16, got '-1'"),
        (["--head-dim", "two"], "argument --head-dim: expected an integer from 1 to 512, got 'two'"),
        (["--seed", "-5"], "argument --seed: expected an integer from 0 to"),
        (["--tokens", "   "], "argument --tokens: expected at least one word, got '   '"),
        (["--cross", ""], "argument --cross: expected at least one word"),
        (
            ["--by-hand", "--dim", "4", "--no-causal"],
            "--by-hand replaces the lectures' example; leave out --dim, --causal",
        ),
    ],
)
def test_bad_options_exit_2_naming_the_option(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["explain", *args])
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert message in err
    assert "Traceback" not in err


def test_without_rich_it_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)  # what `import rich` meets when rich is not installed
    assert main(["explain"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "pip install 'headwise[cli]'" in err


@pytest.mark.slow
def test_the_console_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "headwise.cli.main", "explain", "--tokens", "one step", "--heads", "1"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [name for name, _, _ in sections(result.stdout)] == WALKTHROUGH_STEPS
    assert result.stdout.rstrip().endswith("✓ all 11 checks passed")


# Outputs, odd arguments and what reaches the terminal (issue 12).


def explain_fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run `headwise explain ARGS`, which must exit with code 2 and a one-line error; returns that line."""
    with pytest.raises(SystemExit) as exit_:
        main(["explain", *args])
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    return err.splitlines()[-1]


def test_html_is_written_through_a_symbolic_link(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "target.html"
    target.write_text("stale")
    (tmp_path / "link.html").symlink_to("target.html")
    assert main(["explain", "--html", str(tmp_path / "link.html")]) == 0
    assert (tmp_path / "link.html").is_symlink() and target.read_text().startswith("<!DOCTYPE html>")
    assert capsys.readouterr().out == f"wrote {tmp_path / 'link.html'}\n"


def test_outputs_that_are_not_files_or_folders_are_refused(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    (tmp_path / "folder").mkdir()
    line = explain_fails(capsys, "--html", str(tmp_path / "folder"))
    assert line.endswith(
        f"argument --html: {tmp_path / 'folder'} is a directory: give the name of a file to write"
    )
    os.mkfifo(tmp_path / "fifo")
    assert "argument --html: " in explain_fails(capsys, "--html", str(tmp_path / "fifo"))
    assert (tmp_path / "fifo").is_fifo()
    missing = explain_fails(capsys, "--html", str(tmp_path / "nowhere" / "page.html"))
    assert f"the folder {tmp_path / 'nowhere'} does not exist" in missing
    (tmp_path / "file").write_text("data")
    line = explain_fails(capsys, "--png", str(tmp_path / "file"))
    assert line.endswith(
        f"argument --png: {tmp_path / 'file'} is a file, not a folder (it is created if missing)"
    )
    assert "Errno" not in line and (tmp_path / "file").read_text() == "data"
    assert explain_fails(capsys, "--html", "").endswith(
        "argument --html: expected a path, got an empty string"
    )
    assert sorted(os.listdir(tmp_path)) == ["fifo", "file", "folder"]  # and no hidden temporary file


@pytest.mark.parametrize("option", ["--html", "--png", "--tokens", "--cross", "--checkpoint"])
def test_undecodable_arguments_are_one_line_errors(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    argument = b"caf\xe9.html".decode("utf-8", "surrogateescape")  # as Python hands over a Latin-1 argument
    line = explain_fails(capsys, option, argument)
    assert line.endswith(f"argument {option}: expected UTF-8 text, got the bytes b'caf\\xe9.html'")


def test_the_tokens_are_capped(capsys: pytest.CaptureFixture[str]) -> None:
    line = explain_fails(capsys, "--html", "page.html", "--tokens", " ".join(["word"] * 10_000))
    assert "argument --tokens: expected at most 512 words" in line and "got 10000" in line
    assert "at most 512" in explain_fails(capsys, "--cross", " ".join(["word"] * 513))


def test_control_characters_in_tokens_are_shown_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = explain(capsys, "--tokens", "\x1b]0;PWNED\x07 \x1b[2J \u202eevil", "--heads", "1")
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b]0;PWNED\\x07 \\x1b[2J \\u202eevil" in out  # the tokens line
    assert re.search(r"^\\x1b\[2J ", out, re.MULTILINE)  # a row label


def test_an_ascii_terminal_gets_the_symbols_spelt_out() -> None:
    """PYTHONIOENCODING=ascii: no UnicodeEncodeError; ·, ᵀ, √, ✓ and the rules in ASCII, other characters
    escaped, control characters escaped as everywhere."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "headwise.cli.main",
            "explain",
            "--tokens",
            "café \x1b[2J one",
            "--heads",
            "1",
        ],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "ascii", "COLUMNS": "80"},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode("ascii", "backslashreplace")
    out = result.stdout.decode("ascii")  # nothing but ASCII
    assert "B batch * N tokens (Nq queries, Nk keys) * D width" in out
    assert "W_query = W_q^T  (queries = x @ W_query + b_q)" in out
    assert "(1/sqrt 3 = 0.5774)" in out
    assert out.rstrip().endswith("+ all 11 checks passed")
    assert "Nq = 3: caf\\xe9 \\x1b[2J one" in out and "\x1b" not in out
    assert not [line for line in out.splitlines() if len(line) > 80]


def test_labels_are_cut_by_cells_not_characters() -> None:
    """A wide (CJK) token took two cells a character and overflowed the summary's column (review)."""
    from rich.cells import cell_len

    assert [cell_len(terminal.cut(label, 7)) for label in ("漢字" * 4, "abcdefghij", "ab")] == [7, 7, 2]
    assert terminal.cut("漢字" * 4, 7) == "漢字漢…"
