"""`headwise.show`: a model's heads in a notebook, drawn by the HTML report's head view and model view.

    show(outputs.attentions, tokens)              a Hugging Face or headwise model's weights, L × (B, H, N, N)
    show(out.decoder_attentions, target_tokens, cross_attentions=out.cross_attentions,
         source_tokens=source_tokens, encoder_attentions=out.encoder_attentions)   an encoder-decoder's three
    show(model, text="...", tokenizer=tokenizer)  a model reading a text (show("minilm", text=...), a folder)
    show(folder, text="...", target="...")       an encoder-decoder's decoder reading its own target text
    side_by_side(maps_1, maps_2, layer=3, head=1)  one head reading two texts, frames side by side

The result displays itself in Jupyter (`_repr_html_`): the report's page (pages/html.py) inside an iframe's
srcdoc, sandboxed to scripts only, with the page's own Content-Security-Policy (its script and style by hash,
no request of any kind), so it needs no network and nothing from the notebook. `.save(path)` writes the same
page as a file.

SideBySide's `.save` writes one file too: a page of frames whose srcdoc are the reports' pages. A srcdoc
frame takes on the policy of the page around it as well as its own (both hold), so the outer page carries
exactly the framed pages' policy (one policy: the same script and style, by hash) and nothing else: the
frames lose nothing, and the outer page, with no script or style of its own (its frames are sized by
attributes, not CSS), may run nothing but a copy of the report's script. The frames stay sandboxed to
scripts: an opaque origin each, unable to reach the outer page or each other.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..checks import non_negative_int, positive_int
from ..files import write_text
from ..pages.html import render_html, write_html
from ..pages.model import HeadMaps, Report
from .folder import load_model
from .maps import Attentions, head_maps
from .reading import read
from .words import MERGED, as_pieces, pieces_argument

FRAME_HEIGHT = 900  # px: the page scrolls inside the frame
# The policy of a page render_html wrote, as its meta element carries it.
POLICY = re.compile(r'<meta http-equiv="Content-Security-Policy" content="(?P<policy>[^"]*)">')


@dataclass(frozen=True, repr=False)
class Shown:
    """A report to display in a notebook (`_repr_html_`) or to save as one self-contained page (`save`);
    its text repr is one line saying what it holds."""

    report: Report
    height: int = FRAME_HEIGHT

    def __repr__(self) -> str:
        return f"<Shown {summary(self.report)}: display it in Jupyter, or .save('page.html')>"

    def page(self) -> str:
        """The report as its HTML page (what the frame shows and `save` writes)."""
        return render_html(self.report)

    def _repr_html_(self) -> str:
        return self.frame(f'style="width: 100%; height: {self.height}px; border: 1px solid #ddd;"')

    def frame(self, size: str) -> str:
        """An iframe whose srcdoc is the whole page, escaped as an attribute; sandbox="allow-scripts" (an
        opaque origin: the page cannot reach the notebook, its cookies or its storage); loading="lazy", so
        that the page's script runs once the frame is laid out (the head view sizes its drawing from it);
        `size`: the attributes that size it."""
        return (
            f'<iframe srcdoc="{html.escape(self.page(), quote=True)}" sandbox="allow-scripts" loading="lazy" '
            f'title="{html.escape(self.report.title, quote=True)}" {size}></iframe>'
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the page to `path` (atomically); returns the path."""
        return write_html(self.report, path)


@dataclass(frozen=True, repr=False)
class SideBySide:
    """Reports shown next to each other, each in its own frame: in one notebook output, or saved as one
    page (`save`)."""

    shown: tuple[Shown, ...]

    def __repr__(self) -> str:
        frames = " | ".join(summary(one.report) for one in self.shown)
        return f"<SideBySide of {len(self.shown)}: {frames}>"

    def _repr_html_(self) -> str:
        frames = "".join(
            f'<div style="flex: 1; min-width: 0;">{one._repr_html_()}</div>' for one in self.shown
        )
        return f'<div style="display: flex; gap: 8px;">{frames}</div>'

    def page(self) -> str:
        """One HTML page of the frames side by side, under the framed pages' own Content-Security-Policy
        (see the module's note): what `save` writes."""
        (policy,) = {_policy(one.page()) for one in self.shown}  # one policy for all
        width = 99 // len(self.shown)  # percent, the frames inline on one line
        frames = "\n".join(one.frame(f'width="{width}%" height="{one.height}"') for one in self.shown)
        title = " | ".join(one.report.title for one in self.shown)
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<meta name="generator" content="headwise">
<title>{html.escape(title)} · headwise</title>
</head>
<body>
{frames}
</body>
</html>
"""

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the page to `path` (atomically: a temporary file beside it, then a rename); returns it."""
        return write_text(path, self.page())


def summary(report: Report) -> str:
    """'Attention: every head (self-attention: 6 layers × 12 heads, 16 × 16 tokens; 5 steps)': a report in
    one line, for a text repr (the tensors stay out of it)."""
    kinds = ", ".join(
        f"{maps.title}: {maps.weights.shape[0]} layers × {maps.weights.shape[1]} heads, "
        f"{len(maps.query_tokens)} × {len(maps.key_tokens)} tokens"
        for maps in report.attention
    )
    steps = f"; {len(report.steps)} steps" if report.steps else ""
    return f"{report.title!r} ({kinds}{steps})"


def side_by_side(*maps: HeadMaps, layer: int, head: int, height: int = FRAME_HEIGHT) -> SideBySide:
    """Head `head` of layer `layer` reading each text (one HeadMaps per text, as read() returns them), in
    frames side by side: the same head on two sentences."""
    layer, head = non_negative_int(layer, "layer"), non_negative_int(head, "head")
    height = positive_int(height, "height")
    if len(maps) < 2 or not all(isinstance(one, HeadMaps) for one in maps):
        raise TypeError(
            f"side_by_side takes two or more HeadMaps, got {[type(one).__name__ for one in maps]}"
        )
    shown = []
    for one in maps:
        layers, heads = one.weights.shape[:2]
        if layer >= layers or head >= heads:
            raise ValueError(f"layer and head must be below {layers} and {heads}, got {layer} and {head}")
        chosen = one.weights[layer : layer + 1, head : head + 1]  # (1, 1, Nq, Nk)
        text = " ".join(one.query_tokens)
        title = f"{one.title}: layer {layer}, head {head}"
        report = Report(title, text, (), (HeadMaps(one.title, one.query_tokens, one.key_tokens, chosen),))
        shown.append(Shown(report, height))
    return SideBySide(tuple(shown))


def show(
    source: Attentions | torch.nn.Module | str | Path,
    tokens: Sequence[str] | None = None,
    *,
    text: str | None = None,
    target: str | None = None,
    tokenizer: object | None = None,
    cross_attentions: Attentions | None = None,
    source_tokens: Sequence[str] | None = None,
    encoder_attentions: Attentions | None = None,
    batch_index: int = 0,
    title: str | None = None,
    height: int = FRAME_HEIGHT,
    pieces: str = "words",
    text_pair: str | None = None,
    sentence_b_start: int | None = None,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> Shown:
    """The head view and model view of a model's attention, for a notebook cell or a file.

    Args:
        source: the attention weights, L × (B, H, Nq, Nk) per layer as `output_attentions=True` returns them
            (or one (L, H, Nq, Nk) tensor), with `tokens` (Nq of them); or a model (torch.nn.Module, with its
            `tokenizer`), "minilm" or a Hugging Face model folder, reading `text`; `target`: the text an
            encoder-decoder's decoder reads, teacher-forced (default: `text`).
        cross_attentions: an encoder-decoder's L × (B, H, Nt, Ns), `tokens` the decoder's (Nt) and
            `source_tokens` the encoder's (Ns); encoder_attentions: its L × (B, H, Ns, Ns).
        batch_index: which batch row to show. title: the page's title. height: the frame's, in px.
        pieces: the tokens shown as words (GPT-2's Ġ, SentencePiece's ▁ and WordPiece's ## read), "raw"
            as the tokenizer gives them, or "merged": one row and column per word (words.as_pieces).
        text_pair: a model reads `text` and this second sentence as one sequence; sentence_b_start: with
            weights and tokens, where sentence B begins. Either gives the head view its A → B / B → A filter.
        layers, heads: the layers and heads the model view draws (bertviz's include_layers and
            include_heads; default all), each a list of indices from 0.
    """
    pieces = pieces_argument(pieces)
    chosen = tuple(_indices(value, name) for value, name in ((layers, "layers"), (heads, "heads")))
    height = positive_int(height, "height")
    if isinstance(source, (torch.nn.Module, str, Path)):
        if sentence_b_start is not None:
            raise ValueError(
                "a model reads a sentence pair with text_pair=...; sentence_b_start goes with tokens"
            )
        if text is None or tokens is not None:
            raise ValueError(
                "a model reads text: pass show(model, text=..., tokenizer=...) or show('minilm', text=...), "
                f"not tokens (got tokens={tokens!r:.60}, text={text!r:.60})"
            )
        model, tokenizer = (source, tokenizer) if isinstance(source, torch.nn.Module) else load_model(source)
        if tokenizer is None:
            raise ValueError(
                f"a model needs its tokenizer: show(model, text=..., tokenizer=...), got {source}"
            )
        maps = read(model, tokenizer, text, target=target, pieces=pieces, text_pair=text_pair)
        name = type(model).__name__ if isinstance(source, torch.nn.Module) else str(source)
        description = f"{name} reading {text!r}" + ("." if target is None else f", its decoder {target!r}.")
    else:
        if tokens is None or text is not None or target is not None or text_pair is not None:
            raise ValueError(
                "attention weights come with their tokens: show(attentions, tokens), got "
                f"tokens={tokens!r:.60}, text={text!r:.60}, target={target!r:.60}, "
                f"text_pair={text_pair!r:.60}"
            )
        maps = _maps(tokens, source, cross_attentions, source_tokens, encoder_attentions, batch_index)
        if sentence_b_start is not None:
            if len(maps) != 1:
                raise ValueError(
                    "sentence_b_start marks a sentence pair in one self-attention, not an encoder-decoder"
                )
            maps = (replace(maps[0], pair_start=sentence_b_start),)  # checked as HeadMaps checks it
        maps = tuple(as_pieces(one, pieces) for one in maps)
        description = (
            f"{len(maps[0].weights)} layers × {maps[0].weights.shape[1]} heads, batch row {batch_index}."
        )
    if pieces == "merged":
        description = f"{description} Each word is one row and column: {MERGED}."
    for name, asked in zip(("layers", "heads"), chosen, strict=True):
        count = maps[0].weights.shape[0 if name == "layers" else 1]
        if asked is not None and max(asked) >= count:
            raise ValueError(f"{name} must be indices below {count}, got {list(asked)}")
    model_layers, model_heads = chosen
    report = Report(title or "Attention: every head", description, (), maps, model_layers, model_heads)
    return Shown(report, height)


def _indices(value: Sequence[int] | None, name: str) -> tuple[int, ...] | None:
    """A non-empty list of distinct indices from 0 as a sorted tuple, None as None, else a ValueError."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{name} must be a non-empty list of indices from 0, got {value!r:.60}")
    indices = tuple(non_negative_int(index, name) for index in value)
    if len(set(indices)) != len(indices):
        raise ValueError(f"{name} must not repeat an index, got {list(indices)}")
    return tuple(sorted(indices))


def _maps(
    tokens: Sequence[str],
    attentions: Attentions,
    cross_attentions: Attentions | None,
    source_tokens: Sequence[str] | None,
    encoder_attentions: Attentions | None,
    batch_index: int,
) -> tuple[HeadMaps, ...]:
    """The weights given to show() as HeadMaps: self-attention alone, or an encoder-decoder's kinds."""
    if cross_attentions is None and encoder_attentions is None:
        return (head_maps("self-attention", attentions, tokens, batch_index=batch_index),)
    if source_tokens is None:
        raise ValueError("cross_attentions and encoder_attentions need source_tokens, the encoder's tokens")
    maps = []
    if encoder_attentions is not None:
        maps.append(
            head_maps(
                "encoder self-attention",
                encoder_attentions,
                source_tokens,
                name="encoder_attentions",
                batch_index=batch_index,
            )
        )
    maps.append(head_maps("decoder self-attention", attentions, tokens, batch_index=batch_index))
    if cross_attentions is not None:
        maps.append(
            head_maps(
                "cross-attention",
                cross_attentions,
                tokens,
                source_tokens,
                name="cross_attentions",
                batch_index=batch_index,
            )
        )
    return tuple(maps)


def _policy(page: str) -> str:
    """The Content-Security-Policy of a page that headwise wrote (each carries one)."""
    found = POLICY.search(page)
    if found is None:
        raise ValueError("a framed page has no Content-Security-Policy <meta>")
    return found.group("policy")
