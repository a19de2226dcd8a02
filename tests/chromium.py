"""Debian's Chromium, headless, driven by Playwright, for the tests that open headwise's pages: a page opened
from a file:// URL with every other request blocked and recorded (Visit: what it tried to fetch, its
dialogs, its errors, how long it took to be ready), screenshots (copied to $HEADWISE_SCREENSHOTS for the
README's), and attention weights as the page holds them. Importing it skips the test without Playwright.

The browser is the system's (`make pytest` installs Debian's chromium package); nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

sync_api = pytest.importorskip("playwright.sync_api")

from headwise.pages import html  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 900}
READY_TIMEOUT_MS = 20_000
LINE_MIN = 0.01  # the head view (report-heads.js) draws no line for a weight below this

# The colours of a canvas: how many distinct ones, and a short fingerprint of its pixels.
CANVAS_PIXELS = """canvas => {
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = new Set();
  let hash = 0;
  for (let i = 0; i < data.length; i += 4) {
    colours.add((data[i] << 24) | (data[i + 1] << 16) | (data[i + 2] << 8) | data[i + 3]);
    hash = (hash * 31 + data[i] + 7 * data[i + 1] + 13 * data[i + 2] + 17 * data[i + 3]) | 0;
  }
  return {colours: colours.size, hash: hash};
}"""


@dataclass
class Visit:
    """An open report: the page, what it tried to fetch, the dialogs it opened, its errors, and how long
    it took to become ready (s)."""

    page: sync_api.Page
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ready_s: float = 0.0

    def check(self) -> None:
        """Nothing fetched, no dialog, no error: call at the end of each test."""
        assert self.requests == [], f"the page tried to reach {self.requests}"
        assert self.dialogs == [], f"the page opened dialogs {self.dialogs}"
        assert self.errors == [], f"the page reported errors {self.errors}"

    def pixels(self, selector: str) -> dict[str, int]:
        return self.page.locator(selector).first.evaluate(CANVAS_PIXELS)


def open_report(browser: sync_api.Browser, path: Path) -> Visit:
    """Open a report in a fresh context, every non-file request aborted and recorded, and wait until ready."""
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    page = context.new_page()
    seen = Visit(page)

    def route(route: sync_api.Route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            seen.requests.append(route.request.url)
            route.abort()

    def request(request: sync_api.Request) -> None:
        if not request.url.startswith("file:"):
            seen.requests.append(request.url)

    def dialog(dialog: sync_api.Dialog) -> None:
        seen.dialogs.append(dialog.message)
        dialog.dismiss()

    def console(message: sync_api.ConsoleMessage) -> None:
        if message.type == "error":
            seen.errors.append(message.text)

    context.route("**/*", route)
    page.on("request", request)
    page.on("dialog", dialog)
    page.on("pageerror", lambda error: seen.errors.append(str(error)))
    page.on("console", console)
    start = time.perf_counter()
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready=true]", timeout=READY_TIMEOUT_MS)
    seen.ready_s = time.perf_counter() - start
    return seen


def screenshot(
    target: sync_api.Page | sync_api.Locator, name: str, tmp_path: Path, *, readme: bool = True
) -> Path:
    """Save a screenshot in tmp_path and, for the README's (`readme`) when HEADWISE_SCREENSHOTS=DIR is
    set, copy it into DIR."""
    path = tmp_path / name
    target.screenshot(path=str(path))
    assert path.stat().st_size > 1000
    folder = os.environ.get("HEADWISE_SCREENSHOTS")
    if folder and readme:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(folder) / name)
    return path


def as_the_page_sees(weights: torch.Tensor) -> torch.Tensor:
    """Attention weights as the page holds them: exact float64, or (past html.EXACT_LIMIT values) the
    4-decimal ones as float32, so that comparisons with LINE_MIN come out the same."""
    encoded = html.encode_array(weights, weights=True)
    stored = html.decode_array(encoded)
    return stored if encoded["encoding"] == "float64" else stored.float().double()
