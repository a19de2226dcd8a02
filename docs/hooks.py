"""MkDocs hooks for the documentation site (mkdocs.yml names this file).

The benchmarks' plots live in benchmarks/results/, beside the tables that describe them: the site takes
them from there as they are (no copy in docs/), at performance/results/NAME.png.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).parents[1] / "benchmarks" / "results"
SITE_FOLDER = "performance/results"


def on_files(files: Files, config) -> Files:
    """Add every plot of benchmarks/results/ to the site's files."""
    for plot in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"{SITE_FOLDER}/{plot.name}", abs_src_path=str(plot)))
    return files


# nbconvert's page template loads MathJax and Mermaid from a CDN (an empty MathJax URL still leaves the
# tag); the notebook has neither formulas nor diagrams, and the site loads nothing from the network.
NETWORK_LOADERS = (
    re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S),
    re.compile(
        r'<script type="module">\s*document\.addEventListener\("DOMContentLoaded", async \(\) => \{'
        r'\s*const diagrams = document\.querySelectorAll\("\.jp-Mermaid.*?</script>',
        re.S,
    ),
)


def on_post_page(output: str, page, config) -> str:
    """A notebook's page without the template's loaders of MathJax and Mermaid."""
    if not page.file.src_uri.endswith(".ipynb"):
        return output
    for loader in NETWORK_LOADERS:
        output, found = loader.subn("", output)
        if not found:
            raise ValueError(
                f"{page.file.src_uri}: nbconvert's template changed: {loader.pattern[:40]!r} not found"
            )
    return output
