"""Which model to inspect: the shipped "minilm" (all-MiniLM-L6-v2 on headwise's encoder), or any Hugging Face
model folder on disk (config.json, the weights as safetensors, the tokenizer files), loaded with transformers
from that folder only: nothing is downloaded.

    "minilm" | PATH -> load_model(source) -> (model, tokenizer), in eval mode, eager attention (the weights)

transformers' "Loading weights" progress bar is off while it loads (unless progress=True), so that the
command line's stderr holds only errors.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..checks import boolean
from ..optional import require
from .quiet import load_report_silenced

MINILM = "minilm"
INSTALL_TRANSFORMERS = "pip install transformers"


def model_source(value: str | Path) -> str | Path:
    """ "minilm", or a folder with a config.json (a Hugging Face model folder), as a Path; else a ValueError
    saying what was expected."""
    if value == MINILM:
        return MINILM
    folder = Path(value)
    if not (folder / "config.json").is_file():
        found = "is not a folder" if not folder.is_dir() else "has no config.json"
        raise ValueError(
            f"expected {MINILM!r} or a Hugging Face model folder (config.json, model.safetensors, tokenizer "
            f"files), got {str(value)!r}, which {found}"
        )
    return folder


def load_model(source: str | Path, *, progress: bool = False) -> tuple[torch.nn.Module, object]:
    """(model, tokenizer) for model_source(source): MiniLM on headwise's encoder with its Tokenizer, or the
    folder's model (transformers' AutoModel, the bare model without a task head) with its AutoTokenizer,
    in eval mode, with eager attention so that it returns its weights. progress: leave transformers'
    "Loading weights" progress bar on stderr; by default it is turned off for the load and back on after."""
    source, progress = model_source(source), boolean(progress, "progress")
    if source == MINILM:
        from ..nn.pretrained import load_minilm

        return load_minilm()
    require("transformers", purpose=f"reading the model folder {str(source)!r}", install=INSTALL_TRANSFORMERS)
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    silenced = not progress and logging.is_progress_bar_enabled()
    if silenced:
        logging.disable_progress_bar()
    try:
        with load_report_silenced():  # lm_head.weight UNEXPECTED, for a causal LM read as its base model
            model = AutoModel.from_pretrained(source, attn_implementation="eager", local_files_only=True)
    finally:
        if silenced:
            logging.enable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    return model.eval(), tokenizer
