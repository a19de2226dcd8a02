"""A model reading a text, its attention weights kept: every kind of attention it has, as HeadMaps.

    model, tokenizer, text -> tokens -> model(..., output_attentions=True)
      encoder or decoder:  "self-attention"                                 L × (1, H, N, N)
      encoder-decoder:     "encoder self-attention", "decoder self-attention" and "cross-attention"
                           (decoder queries over encoder keys)              L × (1, H, Nt, Ns)

The model is headwise's BertEncoder with its Tokenizer (MiniLM), or a Hugging Face model with its tokenizer
(loaded with attn_implementation="eager": the other implementations return no weights). An encoder-decoder's
decoder reads its target, teacher-forced: its start token, then the target's tokens but the last, as when it
is trained to produce the target (a translation, a summary); row t of its maps predicts target token t. The
target is the text itself unless given (the model trained to copy it).

The tokens are shown as words (pieces="words": GPT-2's Ġ and SentencePiece's ▁ read as the spaces they are,
WordPiece's ## as a continuing piece), as the tokenizer gives them ("raw"), or one per word with a word's
sub-tokens merged ("merged"): see words.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from ..pages.model import HeadMaps
from .maps import head_maps
from .words import as_pieces, pieces_argument


def read(
    model: torch.nn.Module,
    tokenizer: Any,
    text: str,
    *,
    target: str | None = None,
    pieces: str = "words",
    text_pair: str | None = None,
) -> tuple[HeadMaps, ...]:
    """Every kind of attention of `model` reading `text` (one sentence, no padding); an encoder-decoder's
    decoder reading `target` (default: `text`), a ValueError for any other model given a target; the tokens
    shown as `pieces` says (words, raw or merged: words.as_pieces). `text_pair`: a second sentence read with
    the first as one sequence (a Hugging Face tokenizer's pair: BERT's [CLS] A [SEP] B [SEP]), the map's
    pair_start where it begins, for the head view's A → B and B → A."""
    pieces = pieces_argument(pieces)
    if text_pair is None:
        maps = _read(model, tokenizer, text, target)
    else:
        maps = (_read_pair(model, tokenizer, text, text_pair, target),)
    return tuple(as_pieces(one, pieces) for one in maps)


def _read_pair(
    model: torch.nn.Module, tokenizer: Any, text: str, text_pair: str, target: str | None
) -> HeadMaps:
    """A sentence pair through an encoder or a decoder with a Hugging Face tokenizer: one self-attention map
    whose pair_start is the first token of the second sentence (the tokenizer's sequence ids)."""
    _text(text, "text", "the text the model reads")
    _text(text_pair, "text_pair", "the second sentence of the pair")
    if target is not None or getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        raise ValueError("text_pair is a second sentence for an encoder or a decoder, read with the first")
    if not callable(getattr(tokenizer, "convert_ids_to_tokens", None)):
        raise ValueError(
            f"text_pair needs a Hugging Face tokenizer (its sentence pairs), got {type(tokenizer).__name__}"
        )
    batch = tokenizer(text, text_pair, return_tensors="pt")  # input_ids (1, N)
    second = [i for i, sequence in enumerate(batch.sequence_ids(0)) if sequence == 1]
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    maps = head_maps("self-attention", out.attentions, tokens)
    return replace(maps, pair_start=second[0] if second else None)


def _read(model: torch.nn.Module, tokenizer: Any, text: str, target: str | None) -> tuple[HeadMaps, ...]:
    """read()'s maps with the tokenizer's own tokens."""
    from ..nn.pretrained import BertEncoder

    _text(text, "text", "the text the model reads")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    config = getattr(model, "config", None)  # a Hugging Face model's
    encoder_decoder = getattr(config, "is_encoder_decoder", False)
    if target is not None and not encoder_decoder:
        raise ValueError(
            f"target is the text an encoder-decoder's decoder reads; {type(model).__name__} is not an "
            f"encoder-decoder (got target={target!r:.60})"
        )
    if isinstance(model, BertEncoder):
        tokens = tokenizer.tokens([text])[0]
        with torch.no_grad():
            out = model(**tokenizer([text]), output_attentions=True)
        return (head_maps("self-attention", out.attentions, tokens),)
    batch = tokenizer(text, return_tensors="pt")  # input_ids (1, Ns), attention_mask (1, Ns), ...
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    if not encoder_decoder:
        with torch.no_grad():
            out = model(**batch, output_attentions=True)
        return (head_maps("self-attention", out.attentions, tokens),)
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        raise ValueError(f"the encoder-decoder {type(model).__name__} has no decoder_start_token_id")
    _text(text if target is None else target, "target", "the text the decoder reads")
    labels = (  # (1, Nt): what the decoder learns to produce
        batch if target is None else tokenizer(text_target=target, return_tensors="pt")
    )["input_ids"]
    decoder_ids = torch.cat([torch.tensor([[start]]), labels[:, :-1]], dim=1)  # (1, Nt): shifted right
    with torch.no_grad():
        out = model(**batch, decoder_input_ids=decoder_ids, output_attentions=True)
    decoder_tokens = tokenizer.convert_ids_to_tokens(decoder_ids[0].tolist())
    return (
        head_maps("encoder self-attention", out.encoder_attentions, tokens, name="encoder_attentions"),
        head_maps(
            "decoder self-attention", out.decoder_attentions, decoder_tokens, name="decoder_attentions"
        ),
        head_maps("cross-attention", out.cross_attentions, decoder_tokens, tokens, name="cross_attentions"),
    )


def _text(value: object, name: str, what: str) -> str:
    """`value` if it is a string with something in it, else a ValueError naming the argument."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, {what}, got {value!r:.80}")
    return value
