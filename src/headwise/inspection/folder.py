"""Which model to inspect: the shipped "minilm" (all-MiniLM-L6-v2 on headwise's encoder), or any Hugging Face
model folder on disk (config.json, the weights as safetensors, the tokenizer files), loaded with transformers
from that folder only: nothing is downloaded.

    "minilm" | PATH -> load_model(source) -> (model, tokenizer), in eval mode, eager attention (the weights)
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..optional import require

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


def load_model(source: str | Path) -> tuple[torch.nn.Module, object]:
    """(model, tokenizer) for model_source(source): MiniLM on headwise's encoder with its Tokenizer, or the
    folder's model (transformers' AutoModel, the bare model without a task head) with its AutoTokenizer,
    in eval mode, with eager attention so that it returns its weights."""
    source = model_source(source)
    if source == MINILM:
        from ..nn.pretrained import load_minilm

        return load_minilm()
    require("transformers", purpose=f"reading the model folder {str(source)!r}", install=INSTALL_TRANSFORMERS)
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(source, attn_implementation="eager", local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    return model.eval(), tokenizer
