"""The version is written once, as headwise.__version__: the package's metadata (pyproject.toml reads it with
setuptools' `attr:`), `headwise --version` and the module agree. .ci/wheel-check holds the built wheel's
name and metadata to the same value."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

import headwise
from headwise.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_reads_the_version_from_the_module():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # tomllib is Python 3.11's, not 3.10's
    tables = dict(re.findall(r"^\[([^\]]+)\]\n(.*?)(?=^\[|\Z)", pyproject, re.MULTILINE | re.DOTALL))
    assert re.search(r'^dynamic = \["version"\]', tables["project"], re.MULTILINE)
    assert not re.search(r"^version\b", tables["project"], re.MULTILINE)
    assert re.match(r'version = \{ attr = "headwise.__version__" \}', tables["tool.setuptools.dynamic"])


def test_metadata_cli_and_module_agree(capsys):
    assert re.fullmatch(r"\d+\.\d+\.\d+", headwise.__version__)
    assert importlib.metadata.version("headwise") == headwise.__version__
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out == f"headwise {headwise.__version__}\n"


def test_the_changelog_names_the_version():
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{headwise.__version__}]" in changelog
