"""headwise: exact multi-head attention for PyTorch, traced step by step.

Conventions: tensors are (B, H, N, Dh) inside; masks are True = may attend (or floats added to the
scores); causal attention is aligned bottom-right; a query with nothing to attend to gets zeros.
"""

from . import compat
from .cache import KVCache
from .functional import attention, attention_weights
from .inspection import show
from .merge import merge
from .modules import MultiHeadAttention
from .trace import Step, Trace, trace

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
