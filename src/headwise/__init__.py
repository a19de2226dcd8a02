"""headwise: exact multi-head attention for PyTorch, traced step by step.

Conventions: tensors are (B, H, N, Dh) inside; masks are True = may attend (or floats added to the
scores); causal attention is aligned bottom-right; a query with nothing to attend to gets zeros.

`import headwise` loads the core only (attention, masks, backends, modules, the trace). The names that come
from the applications, `show` (headwise.inspection), are imported on first use (PEP 562's module
`__getattr__`), so a program that never draws a head view never imports the views.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import compat
from .cache import KVCache
from .functional import attention, attention_weights
from .merge import merge
from .modules import MultiHeadAttention
from .trace import Step, Trace, trace

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports it on first use
    from .inspection import show

LAZY = {"show": "headwise.inspection"}  # a name from an application: the module it comes from

__all__ = [
    "KVCache",
    "MultiHeadAttention",
    "Step",
    "Trace",
    "attention",
    "attention_weights",
    "compat",
    "merge",
    "show",
    "trace",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """An application's name (LAZY), imported on first use and kept; any other name is an AttributeError."""
    if name not in LAZY:
        raise AttributeError(f"module 'headwise' has no attribute {name!r}")
    value = getattr(importlib.import_module(LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names with the lazy ones (dir(headwise) and tab completion list `show` before its use)."""
    return sorted(set(globals()) | set(__all__))
