"""`headwise.pages.html` without a browser: the page is self-contained, user text cannot escape its
JSON block, and the numbers embedded in it are the report's (exactly while small; attention weights of
larger maps to 4 decimals, other large matrices to float16's 3 significant digits).

tests/pages/test_browser.py opens the same pages in Chromium and reuses the reports built here."""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import os
import re

import pytest
import torch

from headwise.explain.by_hand import by_hand_report
from headwise.explain.example import Example, run_example
from headwise.explain.walkthrough import lecture_report
from headwise.pages import html
from headwise.pages.model import HeadMaps, Matrix, Report, WalkStep

HOSTILE = "</script><script>alert(1)</script>"
QUOTES = "\"'&<>"
LONG_TOKENS = 512
LONG_SIZE_MB = 12  # the 512-token walkthrough with 2 layers × 4 heads of maps; about 8 MB
LONG_MAPS_SIZE_MB = 2.5  # the same maps alone; about 1 MB
FIXED4_ERROR = 0.5e-4 + 1e-12  # "fixed4" rounds to 4 decimals
HALF_ERROR = 2.0**-11  # float16 keeps 11 significant bits


def lecture() -> Report:
    """The lectures' example: 6 tokens, 2 heads, causal."""
    return lecture_report(run_example(Example()))


def hostile_report() -> Report:
    """A report whose every piece of text tries to close the script block or break an attribute."""
    tokens = (HOSTILE, QUOTES, "plain", "<b>bold</b>")
    weights = torch.tensor(
        [[0.5, 0.5, 0, 0], [0.25] * 4, [0, 0, 1, 0], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64
    )
    matrix = Matrix(
        weights,
        rows=tokens,
        columns=(HOSTILE, "b", "c", QUOTES),
        caption=f"caption {HOSTILE}",
        cells=tuple(tuple(f"{value:g}{HOSTILE}" for value in row) for row in weights.tolist()),
    )
    step = WalkStep(HOSTILE, f"formula {HOSTILE}", f"sentence {QUOTES}", (4, 4), ("Nq", "Nk"), (matrix,))
    maps = HeadMaps(f"self {HOSTILE}", tokens, tokens, weights[None, None])  # (1, 1, 4, 4)
    return Report(f"title {HOSTILE} {QUOTES}", f"description {HOSTILE}", (step,), (maps,))


@functools.cache
def long_report(tokens: int = LONG_TOKENS, *, steps: bool = True) -> Report:
    """A 512-token report: the walkthrough of 4 heads (causal) and its maps in 2 layers × 4 heads, the
    second layer from a run without a mask. Built once per process: do not change its tensors."""
    words = tuple(f"w{i}" for i in range(tokens))
    first = lecture_report(run_example(Example(tokens=words, dim=16, heads=4, head_dim=4)))
    second = lecture_report(
        run_example(Example(tokens=words, dim=16, heads=4, head_dim=4, seed=7, causal=False))
    )
    weights = torch.cat([first.attention[0].weights, second.attention[0].weights])  # (2, 4, N, N)
    maps = HeadMaps("self-attention", words, words, weights)
    return Report(first.title, first.description, first.steps if steps else (), (maps,))


def script_and_style(page: str) -> tuple[str, str]:
    """The inline code of a page: the text of its <script> (not the JSON block) and of its <style>."""
    (script,) = re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    (style,) = re.findall(r"<style>(.*?)</style>", page, flags=re.DOTALL)
    return script, style


def all_matrices(report: Report, data: dict) -> list[tuple[Matrix, dict]]:
    """Each Matrix of the report with its embedded form."""
    return [
        (matrix, embedded)
        for step, step_data in zip(report.steps, data["steps"], strict=True)
        for matrix, embedded in zip(step.matrices, step_data["matrices"], strict=True)
    ]


@pytest.fixture(scope="module")
def lecture_page() -> tuple[Report, str]:
    report = lecture()
    return report, html.render_html(report)


def test_the_page_needs_no_network(lecture_page: tuple[Report, str]) -> None:
    _, page = lecture_page
    assert not re.search(r"\b(https?|ftp|wss?|data|blob):", page, flags=re.IGNORECASE), "a URL in the page"
    for code in script_and_style(page):
        assert not re.search(r"[\"'(]//", code), "a protocol-relative URL in the code"
    for needle in ("<link", " src=", "url(", "@import", "<iframe", "<img", "fetch(", "xmlhttprequest"):
        assert needle not in page.lower(), needle
    assert page.count("<script") == 2  # the JSON block and the inline code, nothing loaded
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src 'none'" in policy


def test_only_the_page_s_own_code_may_run(lecture_page: tuple[Report, str]) -> None:
    """The policy names the inline script and style by hash: the browser runs them and nothing else."""
    _, page = lecture_page
    script, style = script_and_style(page)
    policy = re.search(r'content="(default-src[^"]+)"', page).group(1)
    for directive, code in (("script-src", script), ("style-src", style)):
        digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_the_script_is_every_piece_in_order(lecture_page: tuple[Report, str]) -> None:
    """The page's script is the pieces html.SCRIPT lists, in that order, inside one strict-mode function,
    and SCRIPT lists every assets/*.js."""
    _, page = lecture_page
    script, _ = script_and_style(page)
    assets = importlib.resources.files("headwise.pages").joinpath("assets")
    assert sorted(html.SCRIPT) == sorted(item.name for item in assets.iterdir() if item.name.endswith(".js"))
    assert script.startswith("(function () {\n'use strict';\n") and script.endswith("\n})();\n")
    places = [script.index(assets.joinpath(name).read_text(encoding="utf-8")) for name in html.SCRIPT]
    assert places == sorted(places)


def test_user_text_cannot_leave_the_json_block() -> None:
    report = hostile_report()
    page = html.render_html(report)
    assert "<script>alert(1)" not in page and HOSTILE not in page and "<b>bold" not in page
    assert page.count("</script>") == 2 and page.count("<script") == 2
    assert (
        "<title>title &lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt; &quot;&#x27;&amp;&lt;&gt;" in page
    )
    data = html.read_report_data(page)  # the JSON parsed back from the page
    assert data == html.report_data(report)
    assert data["title"] == report.title and data["description"] == report.description
    (step,) = data["steps"]
    assert (step["name"], step["formula"], step["sentence"]) == (
        HOSTILE,
        f"formula {HOSTILE}",
        f"sentence {QUOTES}",
    )
    (matrix,) = step["matrices"]
    original = report.steps[0].matrices[0]
    assert tuple(matrix["rows"]) == original.rows and tuple(matrix["columns"]) == original.columns
    assert matrix["caption"] == original.caption
    assert tuple(map(tuple, matrix["cells"])) == original.cells
    (maps,) = data["attention"]
    assert maps["title"] == report.attention[0].title
    assert tuple(maps["query_tokens"]) == tuple(maps["key_tokens"]) == report.attention[0].query_tokens
    assert torch.equal(html.decode_array(maps["weights"]), report.attention[0].weights)


def test_the_lecture_s_numbers_are_embedded_exactly(lecture_page: tuple[Report, str]) -> None:
    report, page = lecture_page
    data = html.read_report_data(page)
    assert [step["name"] for step in data["steps"]] == [step.name for step in report.steps]
    for step, embedded in zip(report.steps, data["steps"], strict=True):
        assert embedded["shape"] == list(step.shape) and embedded["axes"] == list(step.axes)
        assert embedded["lecture"] == step.lecture != ""  # the book's code for every step
    steps = {step["name"]: step for step in data["steps"]}
    assert steps["weights"]["lecture"].startswith("attn_weights = torch.softmax(")
    # The weights as steps, the table named as the step (d_in × d_out, as the lecture writes them).
    assert [m["caption"] for m in steps["W_query"]["matrices"]] == ["W_query", "b_q"]
    assert steps["W_query"]["lecture_axes"] == ["d_in", "d_out"] and steps["W_query"]["axes"] == ["D", "H·Dh"]
    assert steps["masked_scores"]["stage"].startswith("8. Attention weights")
    checks = [(check["passed"], check["text"]) for step in data["steps"] for check in step["checks"]]
    assert len(checks) == 11 and all(passed for passed, _ in checks)  # the terminal's 11 checks
    assert steps["weights"]["checks"][0]["text"].startswith("each row of weights sums to 1")
    for matrix, embedded in all_matrices(report, data):
        assert embedded["values"]["encoding"] == "float64"
        assert torch.equal(html.decode_array(embedded["values"]), matrix.values)  # -inf included
    (maps,) = data["attention"]
    assert torch.equal(html.decode_array(maps["weights"]), report.attention[0].weights)  # (1, 2, 6, 6)


def test_the_exercise_by_hand_renders_with_its_printed_cells() -> None:
    report = by_hand_report()
    data = html.read_report_data(html.render_html(report))
    for matrix, embedded in all_matrices(report, data):
        assert tuple(map(tuple, embedded["cells"])) == matrix.cells  # fractions such as 27/32, as printed
        assert torch.equal(html.decode_array(embedded["values"]), matrix.values)
    assert [maps["title"] for maps in data["attention"]] == ["weights A by hand", "weights A"]
    for maps, embedded in zip(report.attention, data["attention"], strict=True):
        assert torch.equal(html.decode_array(embedded["weights"]), maps.weights)


def test_an_empty_report_renders() -> None:
    data = html.read_report_data(html.render_html(Report("nothing", "no steps, no maps", (), ())))
    assert data["steps"] == [] and data["attention"] == []


def test_a_512_token_report_stays_small_and_close(tmp_path) -> None:
    """2 layers × 4 heads of 512 tokens: the weights to 4 decimals, the walkthrough's large matrices
    as float16 (masked scores stay -inf), and a file of a few megabytes."""
    report = long_report()
    path = html.write_html(report, tmp_path / "long.html")
    assert os.listdir(tmp_path) == ["long.html"]  # no temporary file left behind
    size_mb = path.stat().st_size / 1e6
    print(f"512-token report, walkthrough and 2 × 4 maps: {size_mb:.1f} MB")
    assert size_mb < LONG_SIZE_MB
    data = html.read_report_data(path.read_text(encoding="utf-8"))
    (maps,) = data["attention"]
    assert maps["weights"]["encoding"] == "fixed4" and maps["weights"]["shape"] == [2, 4, 512, 512]
    error = (html.decode_array(maps["weights"]) - report.attention[0].weights).abs().max().item()
    assert error <= FIXED4_ERROR
    for matrix, embedded in all_matrices(report, data):
        stored = html.decode_array(embedded["values"])
        if matrix.values.numel() <= html.EXACT_LIMIT:
            assert torch.equal(stored, matrix.values)
            continue
        assert embedded["values"]["encoding"] == "float16"
        finite = matrix.values.isfinite()
        assert torch.equal(stored.isfinite(), finite) and (stored[~finite] == matrix.values[~finite]).all()
        assert torch.allclose(stored[finite], matrix.values[finite], rtol=HALF_ERROR, atol=1e-7)


def test_the_maps_of_512_tokens_alone_take_about_a_megabyte() -> None:
    size_mb = len(html.render_html(long_report(steps=False)).encode()) / 1e6
    print(f"512-token maps alone, 2 × 4: {size_mb:.2f} MB")
    assert size_mb < LONG_MAPS_SIZE_MB


@pytest.mark.parametrize(
    ("values", "weights", "encoding", "tolerance"),
    [
        (torch.rand(3, 5, dtype=torch.float64), False, "float64", 0.0),
        (torch.rand(2, 3, 40, 40, dtype=torch.float64).softmax(-1), True, "fixed4", FIXED4_ERROR),
        (torch.rand(80, 80, dtype=torch.float64), False, "float16", HALF_ERROR),  # not weights: relative
        (torch.randn(80, 80, dtype=torch.float64) * 1e5, False, "float32", 2.0**-24),  # past float16's range
        (torch.zeros(0, 7, dtype=torch.float64), False, "float64", 0.0),
    ],
)
def test_arrays_travel_as_chosen(
    values: torch.Tensor, weights: bool, encoding: str, tolerance: float
) -> None:
    encoded = html.encode_array(values, weights=weights)
    assert encoded["encoding"] == encoding and encoded["shape"] == list(values.shape)
    stored = html.decode_array(encoded)
    if encoding == "fixed4":
        assert (stored - values).abs().max() <= tolerance
    else:
        assert torch.allclose(stored, values, rtol=tolerance, atol=2.0**-25)  # float16's subnormals


def test_non_contiguous_and_float32_inputs_encode_their_own_values() -> None:
    values = torch.arange(200 * 60, dtype=torch.float32).reshape(200, 60).T[:, ::2]  # (60, 100), a view
    assert torch.equal(html.decode_array(html.encode_array(values, "float32")), values.double())
    assert torch.equal(html.decode_array(html.encode_array(values, "float64")), values.double())


def test_an_unknown_encoding_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown encoding 'int8'"):
        html.encode_array(torch.zeros(2), "int8")


def test_write_html_replaces_the_file_atomically(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "report.html"
    path.write_text("old", encoding="utf-8")
    html.write_html(lecture(), path)
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert os.listdir(tmp_path) == ["report.html"]

    def fail(*args: object) -> None:
        raise OSError("disk full")

    path.write_text("old", encoding="utf-8")
    monkeypatch.setattr(html.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        html.write_html(lecture(), path)
    assert path.read_text(encoding="utf-8") == "old"  # untouched
    assert os.listdir(tmp_path) == ["report.html"]  # and the temporary file removed


def test_read_report_data_wants_a_report_page() -> None:
    with pytest.raises(ValueError, match="no <script"):
        html.read_report_data("<html></html>")


def test_the_page_offers_your_own_numbers_for_small_examples() -> None:
    from headwise.explain.example import EXAMPLES
    from headwise.explain.playground import PLAYGROUND_MAX

    def names(example: Example) -> list[str]:
        data = html.report_data(lecture_report(run_example(example)))
        return [playground["name"] for playground in data["playgrounds"]]

    assert names(EXAMPLES["book"]) == ["book", "wide"] and names(EXAMPLES["wide"]) == ["wide", "book"]
    assert names(Example(tokens=("a", "b", "c"))) == ["yours"]
    assert names(Example(tokens=tuple(f"w{i}" for i in range(PLAYGROUND_MAX + 1)))) == []  # too many to edit
    assert names(Example(kv_tokens=("x", "y"), causal=False)) == []  # two sequences: none
    book = html.report_data(lecture_report(run_example(EXAMPLES["book"])))["playgrounds"][0]
    assert book["heads"] == 2 and book["causal"] and book["w_query"]["shape"] == [3, 2]
    inputs = html.decode_array(book["inputs"])  # (6, 3): the book's rows
    assert inputs.shape == (6, 3) and inputs[0].tolist() == [0.43, 0.15, 0.89]
