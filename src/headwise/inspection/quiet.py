"""transformers' load report kept off stderr while headwise loads a folder for its views.

A causal-LM folder read as its base model (GPT2LMHeadModel's files through AutoModel's GPT2Model) leaves
the language-model head unused, and transformers prints a LOAD REPORT table ("lm_head.weight | UNEXPECTED")
for it: expected here, since the views need the attention alone. Warnings are lowered to errors while the
weights load, then the caller's verbosity is restored; errors still print.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def load_report_silenced() -> Iterator[None]:
    """transformers' verbosity at ERROR inside the block, the caller's restored after it."""
    from transformers.utils import logging

    previous = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(previous)
