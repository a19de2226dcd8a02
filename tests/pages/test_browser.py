"""The HTML report in a real browser: Debian's Chromium, headless, driven by Playwright.

Each page is opened from a file:// URL with every other request blocked (and none may be attempted); the
tests wait for <body data-ready="true">, then check that the maps are drawn, that choosing a head or a token
changes the head view, that a model-view cell opens its large view, that hostile text stays text, and that
a 512-token report is ready within seconds. Screenshots go to pytest's tmp_path and, when
HEADWISE_SCREENSHOTS=DIR is set, to DIR as well (the README's: HEADWISE_SCREENSHOTS=docs pytest ...).

The browser is the system's (`make pytest` installs Debian's chromium package); nothing is downloaded.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

sync_api = pytest.importorskip("playwright.sync_api")

from chromium import (  # noqa: E402
    CANVAS_PIXELS,
    CHROMIUM,
    CHROMIUM_ARGS,
    LINE_MIN,
    Visit,
    as_the_page_sees,
    open_report,
    screenshot,
)
from test_html import HOSTILE, hostile_report, lecture, long_report  # noqa: E402

import headwise  # noqa: E402
from headwise.explain.by_hand import by_hand_report  # noqa: E402
from headwise.explain.example import CROSS_TOKENS, EXAMPLES, Example, run_example  # noqa: E402
from headwise.explain.walkthrough import lecture_report  # noqa: E402
from headwise.pages import html  # noqa: E402
from headwise.pages.model import HeadMaps, Report  # noqa: E402

LONG_READY_S = 10.0  # generous: about 1 s on a shared 2-core machine
FIXED4_ERROR = 0.5e-4 + 1e-6  # 4 decimals, read back through float32

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} (Debian's chromium package) is missing: `make pytest` installs it; "
        "these tests never download a browser",
    ),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    """One headless Chromium for the module."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


SENTENCE = "The cat sat on the mat , and the dog watched it from the warm rug by the door ."


def patterns_report() -> Report:
    """3 layers × 6 heads over a 20-token sentence, each head one pattern that trained encoders show
    (previous token, next token, itself, the first token, a local window, punctuation) blended with some
    random attention: synthetic, to show the model view (and the README's screenshot of it) as a real
    model would fill it."""
    tokens = tuple(SENTENCE.split())
    n = len(tokens)
    positions = torch.arange(n, dtype=torch.float64)
    distance = positions[:, None] - positions[None, :]  # (N, N): query minus key
    punctuation = torch.tensor([token in {",", "."} for token in tokens], dtype=torch.float64)
    patterns = [
        (distance == 1).double(),  # the previous token
        (distance == -1).double(),  # the next token
        (distance == 0).double(),  # itself
        torch.zeros(n, n, dtype=torch.float64).index_fill_(1, torch.tensor([0]), 1.0),  # the first token
        (-distance.abs()).exp(),  # a local window
        punctuation.expand(n, n).clone(),  # the commas and full stops
    ]
    generator = torch.Generator().manual_seed(0)
    layers = []
    for layer in range(3):
        heads = []
        for head in range(6):
            pattern = patterns[(head + 2 * layer) % len(patterns)] + 1e-3  # (N, N), every row some weight
            noise = (3 * torch.randn(n, n, generator=generator, dtype=torch.float64)).softmax(-1)
            mix = 0.25 + 0.15 * layer  # deeper layers: broader, noisier
            heads.append((1 - mix) * pattern / pattern.sum(-1, keepdim=True) + mix * noise)
        layers.append(torch.stack(heads))
    maps = HeadMaps(
        "self-attention (synthetic patterns)", tokens, tokens, torch.stack(layers)
    )  # (3, 6, N, N)
    return Report(
        "Attention patterns (synthetic)", "Typical heads of a trained encoder, drawn by hand.", (), (maps,)
    )


def seq2seq_report() -> Report:
    """Three kinds of attention, as an encoder-decoder has them, from the lectures' example: encoder
    self-attention over the French tokens, decoder self-attention (causal), cross-attention (6 × 7)."""
    french = CROSS_TOKENS
    encoder = lecture_report(run_example(Example(tokens=french, causal=False))).attention[0]
    decoder = lecture_report(run_example(Example())).attention[0]
    cross = lecture_report(run_example(Example(kv_tokens=french, causal=False))).attention[0]
    maps = (
        HeadMaps("encoder self-attention", french, french, encoder.weights),
        HeadMaps("decoder self-attention", decoder.query_tokens, decoder.key_tokens, decoder.weights),
        HeadMaps("cross-attention", cross.query_tokens, cross.key_tokens, cross.weights),  # (1, 2, 6, 7)
    )
    return Report("Encoder-decoder", "Three kinds of attention.", (), maps)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The reports as files: the lecture, the exercise by hand, hostile text, and 512 tokens."""
    folder = tmp_path_factory.mktemp("reports")
    sources = {
        "lecture": lecture,
        "by-hand": by_hand_report,
        "hostile": hostile_report,
        "long": long_report,
        "patterns": patterns_report,
        "seq2seq": seq2seq_report,
        "empty": lambda: Report("Nothing to show", "No steps and no maps.", (), ()),
    }
    return {name: html.write_html(make(), folder / f"{name}.html") for name, make in sources.items()}


@pytest.fixture
def visit(browser: sync_api.Browser, reports: dict[str, Path]) -> Iterator[Callable[[str], Visit]]:
    """visit(name): open one of the reports in a fresh context (closed after the test)."""
    visits: list[Visit] = []

    def visit_report(name: str) -> Visit:
        visits.append(open_report(browser, reports[name]))
        return visits[-1]

    yield visit_report
    for seen in visits:
        seen.page.context.close()


@pytest.fixture(scope="module")
def long_page(browser: sync_api.Browser, reports: dict[str, Path]) -> Iterator[Visit]:
    """The 512-token report, opened once for the module's tests (8 MB: each opening costs a second)."""
    seen = open_report(browser, reports["long"])
    yield seen
    seen.page.context.close()


def lines_expected(
    weights: torch.Tensor, heads: list[int], *, query: int | None = None, key: int | None = None
) -> int:
    """How many lines the head view draws for a focused token: weights (H, Nq, Nk) >= LINE_MIN."""
    chosen = weights[heads]  # (h, Nq, Nk)
    chosen = chosen[:, query, :] if query is not None else chosen[:, :, key]
    return int((chosen >= LINE_MIN).sum())


def test_the_walkthrough_shows_every_step_in_order(visit: Callable[[str], Visit], tmp_path: Path) -> None:
    seen = visit("lecture")
    page = seen.page
    report = lecture()
    steps = page.locator("[data-testid=step]")
    assert steps.evaluate_all("items => items.map(item => item.dataset.name)") == [
        s.name for s in report.steps
    ]
    weights = page.locator("[data-testid=step][data-name=weights]")
    assert weights.locator("[data-testid=matrix]").count() == 2  # one per head, side by side
    assert weights.locator("figcaption").all_text_contents() == ["head 06 × 6", "head 16 × 6"]
    assert "weights = softmax(masked_scores)" in weights.locator(".formula").text_content()
    shape = "shape (1, 2, 6, 6) = (b, num_heads, num_tokens, num_tokens) = (B, H, Nq, Nk)"
    assert weights.locator(".shape").text_content() == shape
    first = weights.locator("[data-testid=matrix-table]").first
    printed = first.locator("tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].slice(1).map(c => c.textContent))"
    )
    expected = report.steps[[s.name for s in report.steps].index("weights")].matrices[0].values
    assert printed == [
        [str(int(v)) if v.is_integer() else f"{v:.4f}" for v in row] for row in expected.tolist()
    ]
    masked = page.locator("[data-testid=step][data-name=masked_scores] td", has_text="−∞")
    assert masked.count() == 2 * 15  # the causal mask hides 15 of 36 scores in each head
    seen.check()


def test_the_default_walkthrough_page_is_the_books_hands_on_test(
    browser: sync_api.Browser, tmp_path: Path
) -> None:
    """`headwise explain --html`: the lectures' ten steps as headings, in order, the shapes in the
    lectures' names beside headwise's, and the output as the book prints it."""
    page_path = tmp_path / "default.html"
    html.write_html(lecture_report(run_example(EXAMPLES["book"])), page_path)  # as `headwise explain --html`
    seen = open_report(browser, page_path)
    page = seen.page
    stages = page.locator("[data-testid=stage]").all_text_contents()
    assert [int(stage.split()[2].rstrip(".")) for stage in stages] == list(range(1, 11))
    assert stages[1].startswith("Lecture step 2. Decide the output width d_out")
    queries = page.locator("[data-testid=step][data-name=queries]")
    assert (
        queries.locator(".shape").text_content() == "shape (2, 6, 2) = (b, num_tokens, d_out) = (B, Nq, H·Dh)"
    )
    dropout = page.locator("[data-testid=step][data-name=dropout]")
    assert dropout.locator("figcaption").all_text_contents() == [
        "batch 0, head 06 × 6",
        "batch 0, head 16 × 6",
    ]
    output = page.locator("[data-testid=step][data-name=output] [data-testid=matrix-table]")
    assert output.count() == 2  # both batch elements, as the book prints them
    printed = output.first.locator("tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].slice(1).map(c => c.textContent))"
    )
    assert printed[0] == ["0.3190", "0.4858"] and printed[-1] == ["0.2575", "0.4028"]
    weights = page.locator("[data-testid=step][data-name=weights]")
    screenshot(weights, "report-walkthrough.png", tmp_path)
    seen.check()


def test_the_exercise_by_hand_prints_its_fractions(visit: Callable[[str], Visit]) -> None:
    seen = visit("by-hand")
    report = by_hand_report()
    last = report.steps[-1].matrices[0]  # Z by hand, in fractions
    table = seen.page.locator("[data-testid=step]").last.locator("[data-testid=matrix-table]").first
    printed = table.locator("tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].slice(1).map(c => c.textContent))"
    )
    assert tuple(map(tuple, printed)) == last.cells
    seen.check()


def test_heatmaps_are_drawn(long_page: Visit) -> None:
    seen = long_page
    page = seen.page
    canvas = page.locator("[data-testid=step][data-name=scores] [data-testid=heatmap]").first
    canvas.scroll_into_view_if_needed()
    page.wait_for_selector("[data-testid=step][data-name=scores] [data-testid=heatmap][data-drawn=true]")
    assert canvas.evaluate(CANVAS_PIXELS)["colours"] > 50  # a 512 × 512 map of scores, not one colour
    page.locator("#model-view").scroll_into_view_if_needed()
    page.wait_for_selector("[data-testid=model-cell][data-drawn=true]")
    cells = page.locator("[data-testid=model-cell]")
    assert cells.count() == 2 * 4
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=model-cell][data-drawn=true]').length === 8"
    )
    for k in range(8):
        assert cells.nth(k).locator("canvas").evaluate(CANVAS_PIXELS)["colours"] > 5
    seen.check()


def test_choosing_a_head_changes_the_head_view(visit: Callable[[str], Visit], tmp_path: Path) -> None:
    seen = visit("lecture")
    page = seen.page
    view = page.locator("[data-testid=head-view]")
    assert view.get_attribute("data-heads") == "0,1"
    weights = lecture().attention[0].weights[0]  # (H, Nq, Nk)
    assert int(view.get_attribute("data-lines")) == int((weights >= LINE_MIN).sum())
    screenshot(page.locator("#head-view"), "report-head-view-lecture.png", tmp_path, readme=False)
    both = seen.pixels("[data-testid=head-lines]")

    page.locator("[data-testid=head-button][data-head='1']").click()
    assert view.get_attribute("data-heads") == "1"
    assert page.locator("[data-testid=head-button][data-head='0']").get_attribute("aria-pressed") == "false"
    assert int(view.get_attribute("data-lines")) == int((weights[1] >= LINE_MIN).sum())
    assert seen.pixels("[data-testid=head-lines]")["hash"] != both["hash"]

    page.locator("[data-testid=head-button][data-head='1']").click()  # the only head again: all of them
    assert view.get_attribute("data-heads") == "0,1"
    page.locator("[data-testid=head-button][data-head='0']").click(modifiers=["Shift"])  # remove head 0
    assert view.get_attribute("data-heads") == "1"
    page.locator("[data-testid=head-all]").click()
    assert view.get_attribute("data-heads") == "0,1"
    assert seen.pixels("[data-testid=head-lines]")["hash"] == both["hash"]
    seen.check()


def test_a_token_focuses_its_lines(visit: Callable[[str], Visit]) -> None:
    seen = visit("lecture")
    page = seen.page
    view = page.locator("[data-testid=head-view]")
    weights = lecture().attention[0].weights[0]  # (H, Nq, Nk)
    before = seen.pixels("[data-testid=head-lines]")

    page.locator("[data-testid=query-token]").nth(5).hover()  # "step", the last query
    assert view.get_attribute("data-focus") == "query:5"
    assert int(view.get_attribute("data-lines")) == lines_expected(weights, [0, 1], query=5)
    assert seen.pixels("[data-testid=head-lines]")["hash"] != before["hash"]
    shaded = page.locator("[data-testid=key-token]").evaluate_all(
        "ks => ks.map(k => k.style.backgroundColor)"
    )
    assert all(shaded)  # the last query attends to every key: each shaded by its weight

    page.locator("h1").hover()  # leaving the tokens lets go of a hover
    assert view.get_attribute("data-focus") == ""
    page.locator("[data-testid=key-token]").nth(0).click()  # a click keeps the focus
    page.locator("h1").hover()
    assert view.get_attribute("data-focus") == "key:0"
    assert int(view.get_attribute("data-lines")) == lines_expected(weights, [0, 1], key=0)
    assert page.locator("[data-testid=key-token]").nth(0).get_attribute("aria-pressed") == "true"
    page.keyboard.press("Escape")
    assert view.get_attribute("data-focus") == ""
    assert seen.pixels("[data-testid=head-lines]")["hash"] == before["hash"]
    seen.check()


def test_a_model_view_cell_opens_its_large_view(long_page: Visit, tmp_path: Path) -> None:
    seen = long_page
    page = seen.page
    page.locator("#model-view").scroll_into_view_if_needed()
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=model-cell][data-drawn=true]').length === 8"
    )
    assert page.locator("[data-testid=model-cell]").first.get_attribute("data-downsampled") == "8"
    assert "downsampled" in page.locator("[data-testid=model-view-note]").text_content()
    screenshot(page.locator("#model-view"), "report-model-view-512.png", tmp_path, readme=False)

    large = page.locator("[data-testid=large-view]")
    assert not large.is_visible()
    page.locator("[data-testid=model-cell][data-layer='1'][data-head='2']").click()
    assert large.is_visible()
    assert (
        page.locator("[data-testid=large-view-title]").text_content() == "self-attention · layer 1 · head 2"
    )
    canvas = page.locator("[data-testid=large-view-canvas]")
    assert canvas.evaluate(CANVAS_PIXELS)["colours"] > 50

    # Hover over the cell of query 300, key 10: the tooltip names both tokens and gives the weight.
    query, key = 300, 10
    hover_cell(page, canvas, query, key)
    tooltip = page.locator("[data-testid=tooltip]").text_content()
    head, weight = tooltip.split("\nweight ")
    assert head == f"query {query} “w{query}” → key {key} “w{key}”"
    expected = long_report().attention[0].weights[1, 2, query, key].item()  # layer 1, head 2
    assert float(weight) == pytest.approx(expected, abs=FIXED4_ERROR) and len(weight.split(".")[1]) == 4
    assert page.evaluate(f"() => window.headwise.weight(0, 1, 2, {query}, {key})") == pytest.approx(
        expected, abs=FIXED4_ERROR
    )
    page.locator("[data-testid=large-view-close]").click()
    assert not large.is_visible()
    seen.check()


def test_the_large_view_prints_exact_weights_of_small_maps(visit: Callable[[str], Visit]) -> None:
    seen = visit("lecture")
    page = seen.page
    page.locator("[data-testid=model-cell][data-layer='0'][data-head='1']").click()
    canvas = page.locator("[data-testid=large-view-canvas]")
    assert int(float(canvas.get_attribute("data-cell-x"))) >= 34  # wide enough to print each weight
    hover_cell(page, canvas, 5, 0)  # query "step" attending to key "Your"
    weight = lecture().attention[0].weights[0, 1, 5, 0].item()
    assert (
        page.locator("[data-testid=tooltip]").text_content()
        == f"query 5 “step” → key 0 “Your”\nweight {weight!r}"
    )
    page.locator("[data-testid=large-view-close]").click()
    seen.check()


def hover_cell(page: sync_api.Page, canvas: sync_api.Locator, i: int, j: int) -> None:
    """Move the mouse over cell (i, j) of a heatmap canvas, by the geometry it records."""
    box = canvas.bounding_box()
    left, top, cell_x, cell_y = (
        float(canvas.get_attribute(f"data-{name}")) for name in ("left", "top", "cell-x", "cell-y")
    )
    page.mouse.move(box["x"] + left + (j + 0.5) * cell_x, box["y"] + top + (i + 0.5) * cell_y)


def test_hostile_text_is_shown_never_run(visit: Callable[[str], Visit]) -> None:
    seen = visit("hostile")
    page = seen.page
    report = hostile_report()
    assert page.locator("[data-testid=title]").text_content() == report.title
    assert page.title() == f"{report.title} · headwise"
    assert page.locator("[data-testid=query-token]").first.text_content() == HOSTILE
    assert page.locator("[data-testid=step] h3").text_content() == f"1.{HOSTILE}"
    assert page.locator("[data-testid=matrix-table] td").first.text_content() == f"0.5{HOSTILE}"
    assert page.evaluate("() => document.scripts.length") == 2  # nothing was added as markup
    assert page.locator("main b, main script").count() == 0
    page.locator("[data-testid=query-token]").first.hover()
    page.locator("[data-testid=model-cell]").first.click()
    assert (
        page.locator("[data-testid=large-view-title]").text_content()
        == f"{report.attention[0].title} · layer 0 · head 0"
    )
    page.keyboard.press("Escape")
    seen.check()  # and no alert fired


def test_512_tokens_are_ready_within_seconds(long_page: Visit, tmp_path: Path) -> None:
    seen = long_page
    print(f"512 tokens, walkthrough and 2 layers × 4 heads: ready in {seen.ready_s:.2f} s")
    assert seen.ready_s < LONG_READY_S
    page = seen.page
    note = page.locator("[data-testid=head-view-note]").text_content()
    assert "3 strongest links per head" in note
    view = page.locator("[data-testid=head-view]")
    page.locator("[data-testid=layer-select]").select_option("1")
    assert view.get_attribute("data-layer") == "1"
    page.locator("[data-testid=query-token]").nth(3).hover()
    assert view.get_attribute("data-focus") == "query:3"
    screenshot(page, "report-512-tokens.png", tmp_path, readme=False)
    seen.check()


def test_the_model_view_shows_every_layer_and_head(visit: Callable[[str], Visit], tmp_path: Path) -> None:
    seen = visit("patterns")
    page = seen.page
    page.locator("#model-view").scroll_into_view_if_needed()
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=model-cell][data-drawn=true]').length === 18"
    )
    cells = page.locator("[data-testid=model-cell]")
    assert cells.evaluate_all("cs => cs.map(c => c.dataset.layer + '/' + c.dataset.head)") == [
        f"{layer}/{head}" for layer in range(3) for head in range(6)
    ]
    fingerprints = {cells.nth(k).locator("canvas").evaluate(CANVAS_PIXELS)["hash"] for k in range(18)}
    assert len(fingerprints) == 18  # every head drawn, and drawn differently
    assert "downsampled" not in page.locator("[data-testid=model-view-note]").text_content()  # 20 tokens
    screenshot(page.locator("#model-view"), "report-model-view.png", tmp_path)
    page.locator("[data-testid=model-cell][data-layer='2'][data-head='3']").click()
    title = "self-attention (synthetic patterns) · layer 2 · head 3"
    assert page.locator("[data-testid=large-view-title]").text_content() == title
    screenshot(page, "report-large-view.png", tmp_path, readme=False)
    page.locator("[data-testid=large-view-to-head]").click()  # the same layer and head in the head view
    view = page.locator("[data-testid=head-view]")
    assert (view.get_attribute("data-layer"), view.get_attribute("data-heads")) == ("2", "3")
    seen.check()


def test_each_kind_of_attention_can_be_chosen(visit: Callable[[str], Visit]) -> None:
    seen = visit("seq2seq")
    page = seen.page
    report = seq2seq_report()
    titles = [maps.title for maps in report.attention]
    assert page.locator("[data-testid=head-map-select] option").all_text_contents() == titles
    view = page.locator("[data-testid=head-view]")
    assert page.locator("[data-testid=key-token]").count() == 7  # the encoder's French tokens

    page.locator("[data-testid=head-map-select]").select_option(label="cross-attention")
    cross = report.attention[2].weights[0]  # (H, 6, 7)
    assert page.locator("[data-testid=query-token]").all_text_contents() == list(
        report.attention[2].query_tokens
    )
    assert page.locator("[data-testid=key-token]").all_text_contents() == list(CROSS_TOKENS)
    assert int(view.get_attribute("data-lines")) == int((cross >= LINE_MIN).sum())

    page.locator("[data-testid=head-map-select]").select_option(label="decoder self-attention")
    page.locator("[data-testid=model-map-select]").select_option(label="cross-attention")
    assert page.locator("[data-testid=model-cell]").count() == 2
    page.locator("[data-testid=model-cell][data-head='1']").click()
    assert (
        page.locator("[data-testid=large-view-title]").text_content() == "cross-attention · layer 0 · head 1"
    )
    canvas = page.locator("[data-testid=large-view-canvas]")
    hover_cell(page, canvas, 5, 6)  # "step" attending to "pas"
    weight = cross[1, 5, 6].item()
    assert (
        page.locator("[data-testid=tooltip]").text_content()
        == f"query 5 “step” → key 6 “pas”\nweight {weight!r}"
    )
    page.locator("[data-testid=large-view-to-head]").click()  # the head view follows, to the cross-attention
    assert page.locator("[data-testid=head-map-select]").input_value() == "2"
    assert view.get_attribute("data-heads") == "1"
    assert int(view.get_attribute("data-lines")) == int((cross[1] >= LINE_MIN).sum())
    seen.check()


def test_no_section_stands_empty(visit: Callable[[str], Visit]) -> None:
    """A model's report (maps, no steps, as --model minilm's) has no "Step by step" section or link; one
    with nothing at all says so once."""
    seen = visit("patterns")
    page = seen.page
    assert page.locator("section.view > h2").all_text_contents() == ["Head view", "Model view"]
    assert page.locator("nav.sections a").all_text_contents() == ["Head view", "Model view"]
    assert page.locator("#walkthrough").count() == 0
    seen.check()
    seen = visit("empty")
    assert seen.page.locator("section.view").count() == 0
    assert seen.page.locator("[data-testid=nothing]").text_content() == (
        "This report has no steps and no maps."
    )
    seen.check()


def test_layers_and_tokens_of_a_deeper_model(visit: Callable[[str], Visit], tmp_path: Path) -> None:
    seen = visit("patterns")
    page = seen.page
    view = page.locator("[data-testid=head-view]")
    weights = as_the_page_sees(patterns_report().attention[0].weights)  # (3, 6, N, N)
    assert page.locator("[data-testid=layer-select] option").all_text_contents() == ["0", "1", "2"]
    first = seen.pixels("[data-testid=head-lines]")
    page.locator("[data-testid=layer-select]").select_option("2")
    assert view.get_attribute("data-layer") == "2"
    assert int(view.get_attribute("data-lines")) == int((weights[2] >= LINE_MIN).sum())
    assert seen.pixels("[data-testid=head-lines]")["hash"] != first["hash"]
    page.locator("[data-testid=layer-select]").select_option("0")
    page.locator("[data-testid=query-token]").nth(10).hover()  # "watched"
    assert view.get_attribute("data-focus") == "query:10"
    assert int(view.get_attribute("data-lines")) == lines_expected(weights[0], list(range(6)), query=10)
    screenshot(page.locator("#head-view"), "report-head-view.png", tmp_path)
    seen.check()


def test_the_head_view_filters_a_sentence_pair_and_the_model_view_a_subset(
    browser: sync_api.Browser, tmp_path: Path
) -> None:
    """A pair read as one sequence (sentence B from position 4): the head view draws all links, A's queries
    to B's keys, or B's to A's; the model view draws the layers and heads asked for (show(..., layers=,
    heads=)), in their own numbers."""
    torch.manual_seed(0)
    tokens = ("[CLS]", "the", "cat", "[SEP]", "it", "sat", "[SEP]")
    weights = torch.rand(3, 4, 7, 7, dtype=torch.float64).softmax(dim=-1)  # (L, H, N, N)
    maps = HeadMaps("self-attention", tokens, tokens, weights, pair_start=4)
    page_path = html.write_html(Report("pair", "a pair", (), (maps,), (1, 2), (0, 3)), tmp_path / "pair.html")
    seen = open_report(browser, page_path)
    page = seen.page
    view = page.locator("[data-testid=head-view]")
    pair = page.locator("[data-testid=pair-select]")
    assert pair.is_visible()
    layer = weights[0]  # (H, N, N): layer 0, every head shown
    expected = {
        "all": int((layer >= 0.01).sum()),
        "ab": int((layer[:, :4, 4:] >= 0.01).sum()),
        "ba": int((layer[:, 4:, :4] >= 0.01).sum()),
    }
    for choice, lines in expected.items():
        pair.select_option(choice)
        assert view.get_attribute("data-pair") == choice and view.get_attribute("data-lines") == str(lines)
    assert page.locator("[data-testid=key-token].sentence-b").count() == 3  # it, sat, [SEP]
    cells = page.locator("[data-testid=model-cell]")
    assert cells.evaluate_all("cells => cells.map(c => [c.dataset.layer, c.dataset.head])") == [
        ["1", "0"],
        ["1", "3"],
        ["2", "0"],
        ["2", "3"],
    ]
    assert (
        page.locator("[data-testid=model-view-note]")
        .text_content()
        .startswith("layers 1, 2 of 3 × heads 0, 3 of 4 of self-attention")
    )
    seen.check()
    single = html.write_html(
        Report("one", "one", (), (HeadMaps("self", tokens, tokens, weights),)), tmp_path / "one.html"
    )
    seen = open_report(browser, single)
    assert not seen.page.locator("[data-testid=pair-select]").is_visible()
    assert seen.page.locator("[data-testid=model-cell]").count() == 12
    seen.check()


def test_the_neuron_view_page_picks_layer_head_and_query(browser: sync_api.Browser, tmp_path: Path) -> None:
    """neuron_view(...).save: the page opens on the layer, head and query asked for, and any other picked
    in its selects shows that one's query, keys, products, scores and weights (as queries_and_keys and the
    model's own weights give them, to the 4 printed decimals)."""
    pytest.importorskip("transformers")
    from tiny_models import SENTENCE, save_tiny

    from headwise.inspection import load_model, neuron_view, queries_and_keys

    model, tokenizer = load_model(save_tiny("llama", tmp_path))  # grouped-query: 4 query heads, 2 key heads
    page_path = neuron_view(model, tokenizer, SENTENCE, layer=1, head=3, token="it").save(tmp_path / "n.html")
    maps, layers = queries_and_keys(model, tokenizer, SENTENCE, pieces="raw")
    seen = open_report(browser, page_path)
    page = seen.page
    section = page.locator("#neuron-view")
    i = maps.query_tokens.index("it")
    assert [section.get_attribute(f"data-{name}") for name in ("layer", "head", "query")] == [
        "1",
        "3",
        str(i),
    ]

    def printed(name: str) -> list[list[float]]:
        table = section.locator(f"[data-testid=neuron-matrix][data-name='{name}'] [data-testid=matrix-table]")
        rows = table.locator("tbody tr").evaluate_all(
            "rows => rows.map(r => [...r.cells].slice(1).map(c => c.textContent))"
        )
        return [[float(cell.replace("−∞", "-inf").replace("−", "-")) for cell in row] for row in rows]

    for layer, head, query in ((1, 3, i), (0, 1, 4)):
        for name, value in (("layer", layer), ("head", head), ("query", query)):
            page.locator(f"[data-testid=neuron-{name}]").select_option(str(value))
        q = layers[layer].queries[head, query]  # (Dh,)
        k = layers[layer].keys[head // 2]  # (N, Dh): query heads 2h and 2h+1 share key head h
        expected = {
            "query": q[None],
            "keys": k,
            "q": q[None] * k,
            "scores": layers[layer].masked_scores[head, query][:, None],
            "weights": maps.weights[layer, head, query][:, None],
        }
        for name, values in expected.items():
            shown = torch.tensor(printed(name), dtype=torch.float64)
            assert shown.shape == values.shape, name
            assert torch.equal(shown.isinf(), values.isinf()), name
            finite = values.isfinite()
            assert (shown[finite] - values[finite]).abs().max() <= 5.1e-5, (layer, head, query, name)
    screenshot(section, "report-neuron-view.png", tmp_path)
    seen.check()


def test_your_own_numbers_recompute_every_step_in_the_page(browser: sync_api.Browser, tmp_path: Path) -> None:
    """The default walkthrough's page: typed numbers in x, W_query, W_key and W_value recompute every step
    in the page, equal to headwise's own run of the same numbers in float64 (to round-off: the page adds
    each dot product in order, BLAS in blocks)."""
    run = run_example(EXAMPLES["book"])
    page_path = html.write_html(lecture_report(run), tmp_path / "own.html")
    seen = open_report(browser, page_path)
    page = seen.page

    def expected(module: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad(), headwise.trace() as steps:
            module(x[None], is_causal=True)
        names = ("queries", "keys", "values", "scores", "masked_scores", "weights", "context", "output")
        return {name: steps[name].tensor[0] for name in names}  # batch 0

    def agree(truth: dict[str, torch.Tensor]) -> None:
        computed = page.evaluate("window.headwise.playground()")
        for name, value in truth.items():
            got = torch.tensor(computed[name], dtype=torch.float64)
            assert got.shape == value.shape, name
            assert torch.equal(got.isinf(), value.isinf()), name
            finite = value.isfinite()
            assert (got[finite] - value[finite]).abs().max() <= 1e-14, name

    x = run.trace["inputs"].tensor[0].clone()  # (6, 3)
    agree(expected(run.module, x))
    module = copy.deepcopy(run.module)
    edits = [
        ("inputs", 0, 0, "1.5"),
        ("w_query", 1, 0, "-0.75"),
        ("w_key", 2, 1, "2"),
        ("w_value", 0, 1, "0.125"),
    ]
    for name, i, j, text in edits:
        cell = page.locator(
            f"[data-testid=playground-input][data-name={name}][data-row='{i}'][data-col='{j}']"
        )
        cell.fill(text)  # an input event per change
        if name == "inputs":
            x[i, j] = float(text)
        else:
            role = ("w_query", "w_key", "w_value").index(name)
            with torch.no_grad():  # W_query[i, j] is in_proj_weight's row role·d_out + j, column i
                module.in_proj_weight[role * module.head_dim * module.num_heads + j, i] = float(text)
    agree(expected(module, x))
    output = page.locator("[data-testid=playground-step][data-name=output] tbody tr").first
    first = output.locator("td").first.text_content()
    assert first == f"{expected(module, x)['output'][0, 0].item():.4f}"
    page.locator("[data-testid=playground-input][data-name=w_key]").first.fill("oops")
    assert "invalid" in page.locator("[data-testid=playground-input][data-name=w_key]").first.get_attribute(
        "class"
    )
    agree(expected(module, x))  # a cell that is not a number changes nothing
    page.locator("[data-testid=playground-reset]").click()
    agree(expected(run.module, run.trace["inputs"].tensor[0]))
    screenshot(page.locator("#playground"), "report-playground.png", tmp_path)
    page.locator("[data-testid=playground-example]").select_option(label="wide")  # another example
    wide = run_example(EXAMPLES["wide"])
    agree(expected(wide.module, wide.trace["inputs"].tensor[0]))
    assert page.locator("[data-testid=playground-input][data-name=w_query]").count() == 3 * 4  # d_out = 4
    seen.check()
