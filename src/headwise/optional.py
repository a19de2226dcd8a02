"""Optional packages: import one, or fail with the command that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, *, purpose: str, install: str) -> ModuleType:
    """Import `module`, or raise ImportError saying what needs it (`purpose`) and how to get it
    (`install`, e.g. "pip install 'headwise[train]'")."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{purpose} needs the package {module!r}, which is missing: {install}") from error
