"""Which model to inspect: the shipped "minilm" (all-MiniLM-L6-v2 on headwise's encoder), or any Hugging Face
model folder on disk (config.json, the weights as safetensors, the tokenizer files), loaded with transformers
from that folder only: nothing is downloaded.

    "minilm" | PATH -> load_model(source) -> (model, tokenizer), in eval mode, eager attention (the weights)

transformers' "Loading weights" progress bar is off while it loads (unless progress=True), so that the
command line's stderr holds only errors. A folder whose config describes a model larger than this
machine's memory is refused before anything is loaded (parameter_estimate), and weights that cannot be
read (a pickle that torch.load(weights_only=True) refuses, a damaged safetensors file) are a one-line
ValueError that names the folder.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..checks import boolean, fits_in_memory, printable
from ..optional import require
from .quiet import load_report_silenced

if TYPE_CHECKING:
    from transformers import PretrainedConfig

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
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging

    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True)
    except Exception as error:  # whatever transformers raises for a config it cannot use (its own classes)
        raise ValueError(f"cannot read {Path(source) / 'config.json'}: {_first_line(error)}") from None
    parameters, itemsize = parameter_estimate(config)
    fits_in_memory(parameters * itemsize, f"the model in {source} (at least {parameters:,} parameters)")
    silenced = not progress and logging.is_progress_bar_enabled()
    if silenced:
        logging.disable_progress_bar()
    try:
        with load_report_silenced():  # lm_head.weight UNEXPECTED, for a causal LM read as its base model
            model = AutoModel.from_pretrained(source, attn_implementation="eager", local_files_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"the weights in {source} are a pickle that torch.load(weights_only=True) refuses (loading it "
            "could run code): convert them to model.safetensors where you trust them"
        ) from None
    except (SafetensorError, EOFError, RuntimeError) as error:
        raise ValueError(f"cannot read the weights in {source}: {_first_line(error)}") from None
    finally:
        if silenced:
            logging.enable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    return model.eval(), tokenizer


def parameter_estimate(config: PretrainedConfig) -> tuple[int, int]:
    """A lower bound of the parameter count a Hugging Face config describes, and the bytes per parameter
    (its dtype's, else 2): per layer the four attention projections (4·D²) and the feed-forward's two
    (2·D·F, F = 4·D where the config names none), plus the token embeddings (V·D); biases, norms,
    positions and an encoder-decoder's second stack are left out, so a model that loads is never refused."""
    numbers = [getattr(config, name, None) for name in ("num_hidden_layers", "hidden_size", "vocab_size")]
    layers, width, vocab = (
        n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0 for n in numbers
    )
    feed_forward = getattr(config, "intermediate_size", None)
    if not isinstance(feed_forward, int) or feed_forward <= 0:
        feed_forward = 4 * width
    dtype = getattr(config, "dtype", None)
    itemsize = dtype.itemsize if isinstance(dtype, torch.dtype) else 2
    return layers * (4 * width * width + 2 * width * feed_forward) + vocab * width, itemsize


def _first_line(error: BaseException) -> str:
    """The first line of an error's message, made safe to print, at most 200 characters."""
    lines = str(error).strip().splitlines()
    return printable(lines[0] if lines else type(error).__name__)[:200]
