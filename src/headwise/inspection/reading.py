"""A model reading a text, its attention weights kept: every kind of attention it has, as HeadMaps.

    model, tokenizer, text -> tokens -> model(..., output_attentions=True)
      encoder or decoder:  "self-attention"                                 L × (1, H, N, N)
      encoder-decoder:     "encoder self-attention", "decoder self-attention" and "cross-attention"
                           (decoder queries over encoder keys)              L × (1, H, Nt, Ns)

The model is headwise's BertEncoder with its Tokenizer (MiniLM), or a Hugging Face model with its tokenizer
(loaded with attn_implementation="eager": the other implementations return no weights). An encoder-decoder's
decoder reads the same text, teacher-forced: its start token, then the text's tokens but the last, as when it
is trained to copy the text; row t of its maps predicts token t.
"""

from __future__ import annotations

import torch

from ..explain.report import HeadMaps
from .maps import head_maps


def read(model: torch.nn.Module, tokenizer: object, text: str) -> tuple[HeadMaps, ...]:
    """Every kind of attention of `model` reading `text` (one sentence, no padding)."""
    from ..nn.pretrained import BertEncoder

    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty string, the text the model reads, got {text!r:.80}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, BertEncoder):
        tokens = tokenizer.tokens([text])[0]
        with torch.no_grad():
            out = model(**tokenizer([text]), output_attentions=True)
        return (head_maps("self-attention", out.attentions, tokens),)
    batch = tokenizer(text, return_tensors="pt")  # input_ids (1, N), attention_mask (1, N), ...
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    config = model.config
    with torch.no_grad():
        if not getattr(config, "is_encoder_decoder", False):
            out = model(**batch, output_attentions=True)
            return (head_maps("self-attention", out.attentions, tokens),)
        start = config.decoder_start_token_id
        if start is None:
            raise ValueError(f"the encoder-decoder {type(model).__name__} has no decoder_start_token_id")
        decoder_ids = torch.cat(
            [torch.tensor([[start]]), batch["input_ids"][:, :-1]], dim=1
        )  # (1, N): the start token, then the text shifted right
        out = model(**batch, decoder_input_ids=decoder_ids, output_attentions=True)
    decoder_tokens = tokenizer.convert_ids_to_tokens(decoder_ids[0].tolist())
    return (
        head_maps("encoder self-attention", out.encoder_attentions, tokens, name="encoder_attentions"),
        head_maps(
            "decoder self-attention", out.decoder_attentions, decoder_tokens, name="decoder_attentions"
        ),
        head_maps("cross-attention", out.cross_attentions, decoder_tokens, tokens, name="cross_attentions"),
    )
