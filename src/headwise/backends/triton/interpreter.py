"""Whether Triton's CPU interpreter is asked for: read by the package and by kernels.py (which rebuilds
jit.py's kernels when the answer changed since they were decorated), without importing Triton."""

from __future__ import annotations

import os


def interpreting() -> bool:
    """Whether TRITON_INTERPRET asks for Triton's CPU interpreter (read as Triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on")
