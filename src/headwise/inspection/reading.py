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

import torch

from ..explain.report import HeadMaps
from .maps import head_maps
from .words import as_pieces, pieces_argument


def read(
    model: torch.nn.Module, tokenizer: object, text: str, *, target: str | None = None, pieces: str = "words"
) -> tuple[HeadMaps, ...]:
    """Every kind of attention of `model` reading `text` (one sentence, no padding); an encoder-decoder's
    decoder reading `target` (default: `text`), a ValueError for any other model given a target; the tokens
    shown as `pieces` says (words, raw or merged: words.as_pieces)."""
    pieces = pieces_argument(pieces)
    return tuple(as_pieces(maps, pieces) for maps in _read(model, tokenizer, text, target))


def _read(model: torch.nn.Module, tokenizer: object, text: str, target: str | None) -> tuple[HeadMaps, ...]:
    """read()'s maps with the tokenizer's own tokens."""
    from ..nn.pretrained import BertEncoder

    _text(text, "text", "the text the model reads")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    encoder_decoder = getattr(getattr(model, "config", None), "is_encoder_decoder", False)
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
    start = model.config.decoder_start_token_id
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
