"""How fast `headwise explain --html` pages are written and become ready in a real browser.

    .venv/bin/python benchmarks/html_ready.py [--tokens 512] [--layers 6] [--heads 12] [--repeats 3]

Builds a report of random attention maps of the given size (MiniLM's 6 × 12 heads by default), with a
walkthrough step of one (N, N) matrix per head, writes the page, opens it in Debian's Chromium through
Playwright (the test suite's flags, network blocked) and prints the file size, the time to write it and
the median time until the page marks itself ready (body[data-ready=true]). Needs `.[dev]` and
/usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from headwise.pages.html import write_html
from headwise.pages.model import HeadMaps, Matrix, Report, WalkStep

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def random_report(tokens: int, layers: int, heads: int) -> Report:
    """Maps (L, H, N, N) of softmax-normalised random scores, and a walkthrough step of H (N, N) matrices."""
    generator = torch.Generator().manual_seed(0)
    names = tuple(f"t{i}" for i in range(tokens))
    scores = torch.randn(layers, heads, tokens, tokens, generator=generator, dtype=torch.float64) * 3
    weights = scores.softmax(dim=-1)  # (L, H, N, N)
    step = WalkStep(
        "weights",
        "weights = softmax(masked_scores) over the keys",
        "Each row becomes a probability distribution.",
        (1, heads, tokens, tokens),
        ("B", "H", "Nq", "Nk"),
        tuple(Matrix(weights[0, h], names, names, f"head {h}") for h in range(heads)),
    )
    return Report(
        "html_ready benchmark",
        f"{tokens} random tokens",
        (step,),
        (HeadMaps("self-attention", names, names, weights),),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    report = random_report(args.tokens, args.layers, args.heads)
    with tempfile.TemporaryDirectory() as folder:
        page_path = Path(folder) / "report.html"
        start = time.perf_counter()
        write_html(report, page_path)
        write_s = time.perf_counter() - start
        size_mb = page_path.stat().st_size / 1e6
        ready = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for _ in range(args.repeats):
                page = browser.new_page()
                page.route(
                    "**/*",
                    lambda route: (
                        route.continue_() if route.request.url.startswith("file:") else route.abort()
                    ),
                )
                start = time.perf_counter()
                page.goto(page_path.as_uri())
                page.wait_for_selector("body[data-ready=true]", timeout=120_000)
                ready.append(time.perf_counter() - start)
                page.close()
            browser.close()
    print(
        f"{args.tokens} tokens, {args.layers} layers × {args.heads} heads: page {size_mb:.1f} MB written "
        f"in {write_s:.2f} s; ready in Chromium after {statistics.median(ready):.2f} s "
        f"(median of {args.repeats}: {', '.join(f'{s:.2f}' for s in ready)})"
    )


if __name__ == "__main__":
    main()
