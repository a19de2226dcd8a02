"""`headwise explain --by-hand --worksheet FILE`: the printable worksheet, read back from the page it writes
(its questions with blanks, its answers after a page break), and opened in Chromium as printed."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from fractions import Fraction
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_explain import RULES, SECOND, TEACHER, as_csv, matmul, panel, rounded, transpose

from headwise.cli.main import main
from headwise.explain import hand_steps
from headwise.explain.exercise import FEATURES, W_KEY, W_QUERY, W_VALUE

CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class Table:
    """One captioned table of a worksheet: its section, class, column labels and rows (label, cells)."""

    section: str
    caption: str
    kind: str
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[str, list[str]]] = field(default_factory=list)

    def cells(self) -> list[list[str]]:
        return [cells for _, cells in self.rows]


class WorksheetReader(HTMLParser):
    """The tables of a worksheet page, the headings of its steps, and its scripts, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.section = ""
        self.tables: list[Table] = []
        self.headings: list[tuple[str, str]] = []  # (section, text)
        self.scripts = 0
        self._text: list[str] | None = None
        self._caption = ""
        self._cell: str | None = None  # "th", "td" while inside one

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            self.scripts += 1
        elif tag == "section" and attributes.get("class") in ("questions", "answers"):
            self.section = attributes["class"]
        elif tag in ("figcaption", "h2", "th", "td"):
            self._text, self._cell = [], tag if tag in ("th", "td") else None
        elif tag == "table":
            self.tables.append(Table(self.section, self._caption, attributes.get("class", "")))
        elif tag == "tr" and self.tables:
            self.tables[-1].rows.append(("", []))

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._text is None or tag not in ("figcaption", "h2", "th", "td"):
            return
        text, self._text = "".join(self._text).strip(), None
        if tag == "figcaption":
            self._caption = text
        elif tag == "h2":
            self.headings.append((self.section, text))
        else:
            table = self.tables[-1]
            label, cells = table.rows[-1]
            if tag == "td":
                cells.append(text)
            elif not cells and label == "" and len(table.rows) == 1:  # the header row
                if text:
                    table.columns.append(text)
            else:
                table.rows[-1] = (text, cells)

    def finished(self) -> WorksheetReader:
        for table in self.tables:
            table.rows = [row for row in table.rows if row[1]]  # the header row holds no cells
        return self


def read_worksheet(path: Path) -> tuple[str, WorksheetReader]:
    page = path.read_text(encoding="utf-8")
    reader = WorksheetReader()
    reader.feed(page)
    return page, reader.finished()


def write(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, WorksheetReader]:
    sheet = tmp_path / "worksheet.html"
    assert main(["explain", "--by-hand", *args, "--worksheet", str(sheet)]) == 0
    assert capsys.readouterr().out == f"wrote {sheet}\n"  # the worksheet only, no walkthrough
    return read_worksheet(sheet)


def test_the_lectures_worksheet_has_blanks_then_the_answers(tmp_path, capsys) -> None:
    page, sheet = write(tmp_path, capsys)
    style = re.search(r"<style>(.*?)</style>", page, flags=re.DOTALL)[1]
    digest = base64.b64encode(hashlib.sha256(style.encode("utf-8")).digest()).decode("ascii")
    policy = f"default-src 'none'; style-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    assert f'<meta http-equiv="Content-Security-Policy" content="{policy}">' in page
    assert sheet.scripts == 0 and "@media print" in style
    questions = [table for table in sheet.tables if table.section == "questions"]
    answers = [table for table in sheet.tables if table.section == "answers"]
    given = {table.caption: table.cells() for table in questions if table.kind == "filled"}
    x, w_q, w_k, w_v = (m.tolist() for m in (FEATURES, W_QUERY, W_KEY, W_VALUE))
    assert given == {
        name: [[str(e) for e in row] for row in m]
        for name, m in zip(("X", "W_Q", "W_K", "W_V"), (x, w_q, w_k, w_v), strict=True)
    }
    blanks = [table for table in questions if table.kind == "blank"]
    assert all(cell == "" for table in blanks for row in table.cells() for cell in row)
    # the answers fill each blank table, with the same labels, in the same order
    assert [(t.caption, t.columns, [r for r, _ in t.rows]) for t in answers] == [
        (t.caption, t.columns, [r for r, _ in t.rows]) for t in blanks
    ]
    assert [t.caption for t in answers] == [
        "Q",
        "K",
        "V",
        "Kᵀ",
        "Q (copied)",
        "Kᵀ·Q",
        "floor(x/2)",
        "3^x",
        "Σ 3^x",
        "A",
        "Z",
    ]
    queries, keys, values = matmul(w_q, x), matmul(w_k, x), matmul(w_v, x)
    powers = [[3 ** (s // 2) for s in row] for row in matmul(transpose(keys), queries)]
    sums = [sum(column) for column in transpose(powers)]
    filled = {t.caption: t.cells() for t in answers}
    assert filled["Q"] == [[str(q) for q in row] for row in queries]
    assert filled["3^x"] == [[str(p) for p in row] for row in powers]
    weights = [[Fraction(p, s) for p, s in zip(row, sums, strict=True)] for row in powers]
    assert filled["A"] == [[str(w) for w in row] for row in weights]
    context = [
        [sum(v * a for v, a in zip(row, col, strict=True)) for col in transpose(weights)] for row in values
    ]
    assert filled["Z"] == [[str(z) for z in row] for row in context]
    # the questions list every step; the answers every step there is something to work out in
    assert next(text for section, text in sheet.headings if section == "questions") == (
        "1. inputs: X (6×4) and the weights W_Q, W_K, W_V (3×6)"
    )
    assert len([h for h in sheet.headings if h[0] == "questions"]) == 9
    assert len([h for h in sheet.headings if h[0] == "answers"]) == 8
    assert page.index('<section class="answers">') > page.rindex('<td class="blank">')


def test_a_teachers_worksheet_follows_the_rules_and_stacks_two_heads(tmp_path, capsys) -> None:
    exercise = tmp_path / "exercise.csv"
    exercise.write_text(as_csv({**TEACHER, **SECOND, "rules": RULES}), encoding="utf-8")
    page, sheet = write(tmp_path, capsys, "--input", str(exercise))
    assert (
        "By hand, floor(x/1) stands for x/√2 and 2^x for e^x; A and Z are written rounded to 2 decimals."
        in page
    )
    answers = {t.caption: t for t in sheet.tables if t.section == "answers"}
    questions = [h for s, h in sheet.headings if s == "questions"]
    assert len(questions) == 19 and questions[-1] == "19. heads side by side: Z = [Z0; Z1] (4×3)"
    zs = []
    for w_q, w_k, w_v in ((TEACHER["W_Q"], TEACHER["W_K"], TEACHER["W_V"]), tuple(SECOND.values())):
        queries, keys, values = (matmul(w, TEACHER["X"]) for w in (w_q, w_k, w_v))
        powers = [[2**s for s in row] for row in matmul(transpose(keys), queries)]
        sums = [sum(column) for column in transpose(powers)]
        weights = [[rounded(Fraction(p, s)) for p, s in zip(row, sums, strict=True)] for row in powers]
        zs += [
            [rounded(sum(v * a for v, a in zip(row, col, strict=True))) for col in transpose(weights)]
            for row in values
        ]
    assert [r for r, _ in answers["Z"].rows] == ["h0:1", "h0:2", "h1:1", "h1:2"]
    assert answers["Z"].cells() == [[f"{float(z):.2f}" for z in row] for row in zs]
    assert {"A0", "A1", "Z0", "Z1", "2^x (head 1)"} <= answers.keys()


def test_worksheet_options_are_checked(tmp_path, capsys) -> None:
    for args, message in [
        (["--worksheet", str(tmp_path / "w.html")], "is a worksheet of --by-hand's exercise; add --by-hand"),
        (["--by-hand", "--worksheet", str(tmp_path)], "argument --worksheet: "),
        (["--by-hand", "--worksheet", str(tmp_path / "missing" / "w.html")], "does not exist"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["explain", *args])
        assert exit_info.value.code == 2
        out, err = capsys.readouterr()
        assert message in err and out == "" and "Traceback" not in err, err
    target = tmp_path / "kept.html"
    target.write_text("old", encoding="utf-8")
    link = tmp_path / "link.html"
    link.symlink_to(target)
    assert main(["explain", "--by-hand", "--worksheet", str(link)]) == 0
    assert link.is_symlink() and "<h1>Answers</h1>" in target.read_text(encoding="utf-8")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} (Debian's chromium package) is missing")
def test_printed_the_answers_start_a_page_of_their_own(tmp_path, capsys) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    from chromium import screenshot  # HEADWISE_SCREENSHOTS=docs: the README's copy too

    write(tmp_path, capsys)
    requests, errors = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page()
        page.on("request", lambda request: requests.append(request.url))
        page.on("console", lambda message: errors.append(message.text))
        page.goto((tmp_path / "worksheet.html").as_uri())
        blank = page.locator("td.blank").first.bounding_box()
        assert blank["width"] > 30 and blank["height"] > 20  # room to write in
        page.set_viewport_size({"width": 900, "height": 1100})
        screenshot(page, "worksheet.png", tmp_path)
        page.emulate_media(media="print")
        assert page.evaluate("getComputedStyle(document.querySelector('.answers')).breakBefore") == "page"
        assert page.locator(".screen-only").is_hidden()
        pdf = page.pdf(format="A4")
        browser.close()
    pages = len(re.findall(rb"/Type\s*/Page\b", pdf))
    assert pages >= 2
    assert errors == [] and requests == [(tmp_path / "worksheet.html").as_uri()]  # the page, nothing else


# The sample exercises shipped with headwise, the rules that destroy an exercise, the rounding rule and the
# unrounded fractions on the answer pages.

PAGE_6_3 = {  # the lecture page's 6-3 head, as its matrices are printed there (LECTURES.md, lecture 2)
    "X": [[0, 1, 0, 0], [0, 0, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 1, 1], [0, 0, 1, 1]],
    "W_Q": [[0, 0, 0, 0, 1, 0], [2, -1, 0, 0, 0, 1], [0, 1, 0, 0, 0, 2]],
    "W_K": [[2, -1, 0, 1, 0, 1], [-1, -1, 0, 1, 0, 2], [0, 2, 0, 0, 0, 0]],
    "W_V": [[0, 0, 1, 0, 0, -1], [1, 2, 0, 0, 0, 0], [-1, 0, 0, 0, 1, 0]],
}


def pencil(x, w_q, w_k, w_v, divide_by=2, power_base=3):
    """One head with pencil and paper, in Python integers and Fractions: (A (n, n), Z (d_k, n)), each
    column of A a query's weights (floor(x/divide_by) for x/√d_k, power_base^x for e^x)."""
    queries, keys, values = (matmul(w, x) for w in (w_q, w_k, w_v))
    powers = [[power_base ** (s // divide_by) for s in row] for row in matmul(transpose(keys), queries)]
    sums = [sum(column) for column in transpose(powers)]
    a = [[Fraction(p, s) for p, s in zip(row, sums, strict=True)] for row in powers]
    z = [[sum(v * w for v, w in zip(row, column, strict=True)) for column in transpose(a)] for row in values]
    return a, z


def read_sample_text(name: str, kind: str) -> dict:
    """A sample file as the package ships it, read with json or a few lines of plain CSV reading."""
    from headwise.explain.teaching import sample_file

    with sample_file(name, kind) as path:
        text = Path(path).read_text(encoding="utf-8")
    if kind == "json":
        return json.loads(text)
    blocks: dict = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        cells = line.split(",")
        if len(cells) == 1:
            name = cells[0]
            blocks[name] = {} if name == "rules" else []
        elif name == "rules":
            blocks[name][cells[0]] = int(cells[1])
        else:
            blocks[name].append([int(cell) for cell in cells])
    return blocks


@pytest.mark.parametrize("kind", ["json", "csv"])
@pytest.mark.parametrize("name", ["6-3", "6-6"])
def test_the_sample_exercises_are_worked_as_with_pencil_and_fractions(name: str, kind: str) -> None:
    from headwise.explain.teaching import read_sample, refusal

    data = read_sample_text(name, kind)
    assert {key: data[key] for key in PAGE_6_3} == PAGE_6_3  # the page's head (the first of two in 6-6)
    assert data["rules"] == {"divide_by": 2, "power_base": 3}  # spelt out for a teacher to change
    heads = [("W_Q", "W_K", "W_V")] + ([("W_Q2", "W_K2", "W_V2")] if name == "6-6" else [])
    exercise, where = read_sample(name, kind)
    assert Path(where).name == f"{name}.{kind}" and refusal(exercise) is None
    worked = hand_steps.work(exercise)
    assert len(worked.hands) == len(heads)
    for hand, names in zip(worked.hands, heads, strict=True):
        a, z = pencil(data["X"], *(data[n] for n in names))
        assert hand.weights == a and hand.context == z  # exact fractions, every entry
        assert all(sum(column) == 1 for column in transpose(a))
    assert all(check.passed for step in worked.steps for check in step.checks)


def test_explain_by_hand_starts_from_a_sample(capsys) -> None:
    assert main(["explain", "--by-hand", "--example", "6-6"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("sample 6-6: ") and first.endswith(
        "(.csv beside it); copy one to edit, then --input"
    )
    path = Path(first.removeprefix("sample 6-6: ").split(" (.csv")[0])
    assert json.loads(path.read_text(encoding="utf-8")) == read_sample_text("6-6", "json")
    assert "through two 6-3 heads side by side" in out and "19. heads side by side: Z = [Z0; Z1]" in out
    for args, message in [
        (["--example", "6-9"], "with --by-hand, expected a sample exercise (6-3: "),
        (["--example", "6-3", "--input", str(path)], "both give the exercise: keep one"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["explain", "--by-hand", *args])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            {"divide_by": 1},
            "the score 6 becomes 3^floor(6/1) = 729 by hand for e^(6/√3) = 31.9, 23 times more",
        ),
        (
            {"power_base": 9},
            "the score 6 becomes 9^floor(6/2) = 729 by hand for e^(6/√3) = 31.9, 23 times more",
        ),
    ],
)
def test_rules_that_destroy_the_exercise_are_refused_with_the_reason(
    tmp_path, capsys, rules, message
) -> None:
    exercise = tmp_path / "exercise.json"
    exercise.write_text(json.dumps({**PAGE_6_3, "rules": rules}), encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--by-hand", "--input", str(exercise)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err
    assert "refused when, for some score, the two are more than 10 times apart" in err
    for kept in ({"divide_by": 3}, {"power_base": 2}, {"decimals": 2}):  # worse, not destroyed
        exercise.write_text(json.dumps({**PAGE_6_3, "rules": kept}), encoding="utf-8")
        assert main(["explain", "--by-hand", "--input", str(exercise)]) == 0
        capsys.readouterr()


def test_the_sheet_states_the_rounding_rule_and_the_answers_give_the_fractions(tmp_path, capsys) -> None:
    exercise = tmp_path / "exercise.json"
    data = {**read_sample_text("6-6", "json"), "rules": {"decimals": 2}}
    exercise.write_text(json.dumps(data), encoding="utf-8")
    page, sheet = write(tmp_path, capsys, "--input", str(exercise))
    assert (
        "Rounding: each number of A is rounded half away from zero to 2 decimals, and Z is V times the "
        "rounded A, then rounded the same way" in page
    )
    answers = {t.caption: t for t in sheet.tables if t.section == "answers"}
    assert not [t for t in sheet.tables if t.section == "questions" and "unrounded" in t.caption]
    for head, names in enumerate([("W_Q", "W_K", "W_V"), ("W_Q2", "W_K2", "W_V2")]):
        a, z = pencil(data["X"], *(data[n] for n in names))
        for name, exact in ((f"A{head}", a), (f"Z{head}", z)):
            shown = answers[f"{name} unrounded (fractions)"].cells()
            assert [[Fraction(cell.split(" ≈ ")[0]) for cell in row] for row in shown] == exact
        rounded_a = [[f"{float(rounded(value)):.2f}" for value in row] for row in a]
        assert answers[f"A{head}"].cells() == rounded_a  # beside the unrounded fractions of the same A
    assert "Z unrounded (fractions)" in answers  # the heads' stack too


def test_the_terminal_states_the_rounding_rule_too(tmp_path, capsys) -> None:
    exercise = tmp_path / "exercise.json"
    exercise.write_text(json.dumps({**PAGE_6_3, "rules": {"decimals": 2}}), encoding="utf-8")
    assert main(["explain", "--by-hand", "--input", str(exercise)]) == 0
    printed = capsys.readouterr().out
    out = " ".join(printed.split())  # the sentence as printed, wrapped at spaces
    assert "Rounding: each number of A is rounded half away from zero to 2 decimals, and Z is V times" in out
    a, z = pencil(PAGE_6_3["X"], PAGE_6_3["W_Q"], PAGE_6_3["W_K"], PAGE_6_3["W_V"])
    for name, exact in (("A", a), ("Z", z)):  # the unrounded fractions under the rounded ones
        rows = panel(printed, f"{name} unrounded (fractions)")
        assert [[Fraction(cell) for cell in row[1:]] for row in rows] == exact
    assert main(["explain", "--by-hand", "--example", "6-3"]) == 0
    assert "Rounding:" not in capsys.readouterr().out  # fractions: nothing rounded
