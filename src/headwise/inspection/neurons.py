"""The neuron view (as bertviz's): how one head's query for one token meets every key, element by element.

    model reads text (read()), each layer's queries and keys kept (queries_and_keys):
      headwise's models (MiniLM): headwise.trace() records queries_by_head (1, Hq, N, Dh), keys_by_head
        (1, Hkv, N, Dh) and masked_scores (1, Hq, N, N)
      Hugging Face models: for that one read, the attention implementation RECORDING keeps the query
        (1, Hq, N, Dh) and key (1, Hkv, N, Dh) each layer hands its attention function (after the rotary
        positions of Llama and any query/key norm: what the scores are made of), then runs the layer's own
        eager attention on them, so the weights are the model's
    for head h and query token i:
      query q_i (1, Dh)  ·  keys k_j (N, Dh)  ->  q_i ⊙ k_j (N, Dh)  -> Σ over Dh, × scale, + mask: scores
        (N, 1) -> softmax: weights (N, 1)

The steps come out as the walkthrough's labelled matrices, so the report's page draws them (with the
layer's head view), and `headwise.show`'s frame or `.save` shows it. Encoders and decoders only (one
sequence's self-attention), and scores of the form above: a model that caps them (Gemma 2) is refused.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch

from ..checks import non_negative_int
from ..pages.model import HeadMaps, Matrix, NeuronData, Report, WalkStep
from ..trace import trace
from .analysis import token_position
from .reading import read
from .show import Shown
from .words import MERGED, as_pieces, merged_weights, pieces_argument, split_words

NEURON_PAGE_LIMIT = 1 << 20  # weights (L·H·N·N) past which the page's neuron view keeps the chosen layer
RECORDING = "headwise_neurons"  # the attn_implementation that keeps a Hugging Face model's queries and keys


@dataclass(frozen=True)
class QueriesAndKeys:
    """One layer's self-attention over one text, float64: queries (Hq, N, Dh), keys (Hkv, N, Dh) (Hq/Hkv
    query heads share each key head), masked_scores (Hq, N, N) = scale · q · kᵀ + mask, -inf where a query
    may not look."""

    queries: torch.Tensor
    keys: torch.Tensor
    masked_scores: torch.Tensor


_recorded: ContextVar[list[QueriesAndKeys] | None] = ContextVar("headwise_neurons", default=None)


def queries_and_keys(
    model: torch.nn.Module, tokenizer: object, text: str, *, pieces: str = "words"
) -> tuple[HeadMaps, tuple[QueriesAndKeys, ...]]:
    """`model` reading `text`: its self-attention maps (as read() gives them, the model's own weights, the
    tokens shown as `pieces` says) and each layer's queries and keys per head (one per token). `model` is
    headwise's BertEncoder (MiniLM) or a Hugging Face encoder or decoder (BERT, GPT-2, Llama, ...), whose
    attention implementation is restored afterwards."""
    from ..nn.pretrained import BertEncoder

    if isinstance(model, BertEncoder):
        with trace() as steps:
            (maps,) = read(model, tokenizer, text, pieces=pieces)
        recorded = zip(
            steps.all("queries_by_head"), steps.all("keys_by_head"), steps.all("masked_scores"), strict=True
        )
        found = tuple(
            QueriesAndKeys(*(step.tensor[0].to(torch.float64) for step in three)) for three in recorded
        )
        return maps, found
    config = getattr(model, "config", None)
    set_implementation = getattr(model, "set_attn_implementation", None)  # a PreTrainedModel's
    if set_implementation is None or config is None:
        raise TypeError(
            "model must be headwise's BertEncoder (MiniLM) or a Hugging Face model (a transformers "
            f"PreTrainedModel), got {type(model).__name__}"
        )
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            "model must be an encoder or a decoder: the neuron view follows one sequence's self-attention, "
            f"got the encoder-decoder {type(model).__name__}"
        )
    previous = config._attn_implementation
    layers: list[QueriesAndKeys] = []
    token = _recorded.set(layers)
    try:
        set_implementation(_register())
        (maps,) = read(model, tokenizer, text, pieces=pieces)
    finally:
        set_implementation(previous)
        _recorded.reset(token)
    return maps, tuple(layers)


def _register() -> str:
    """Register RECORDING with transformers (idempotent): the attention function below, and eager's masks
    (additive floats, 0 where a query may look and the dtype's minimum where not), as eager gets them."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import eager_mask

    AttentionInterface.register(RECORDING, _recording_attention)
    AttentionMaskInterface.register(RECORDING, eager_mask)
    return RECORDING


def _recording_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers' attention-function contract: query (B, Hq, Nq, Dh), key and value (B, Hkv, Nk, Dh),
    attention_mask (B, 1, Nq, ≥Nk) float or None, kwargs with `scaling` (None: 1/√Dh). Keeps batch row 0's
    queries, keys and masked scores, then returns the eager_attention_forward of the layer's own modeling
    file: (output (B, Nq, Hq, Dh), weights (B, Hq, Nq, Nk))."""
    eager: Callable[..., tuple[torch.Tensor, torch.Tensor | None]] | None = getattr(
        sys.modules[type(module).__module__], "eager_attention_forward", None
    )
    if eager is None:
        raise TypeError(
            f"the neuron view runs a layer's own eager attention; {type(module).__name__}'s module "
            f"{type(module).__module__} has no eager_attention_forward"
        )
    if kwargs.get("softcap") is not None:
        raise ValueError(
            f"the neuron view shows weights = softmax(scale · q · kᵀ + mask); {type(module).__name__} also "
            f"caps its scores (softcap={kwargs['softcap']}), which the view does not draw"
        )
    layers = _recorded.get()
    if layers is not None:
        layers.append(_masked_scores(query[0], key[0], attention_mask, kwargs.get("scaling")))
    return eager(module, query, key, value, attention_mask, **kwargs)


def _masked_scores(
    queries: torch.Tensor, keys: torch.Tensor, attention_mask: torch.Tensor | None, scale: float | None
) -> QueriesAndKeys:
    """queries (Hq, Nq, Dh), keys (Hkv, Nk, Dh), attention_mask (1, 1, Nq, ≥Nk) additive or None -> the
    layer's QueriesAndKeys in float64, the scores computed as eager computes them."""
    queries, keys = queries.to(torch.float64), keys.to(torch.float64)
    scale = queries.shape[-1] ** -0.5 if scale is None else scale
    group = queries.shape[0] // keys.shape[0]  # G query heads share one key head
    scores = queries @ keys.repeat_interleave(group, dim=0).transpose(-1, -2) * scale  # (Hq, Nq, Nk)
    if attention_mask is not None:
        mask = attention_mask[0, :, :, : keys.shape[1]]  # (1, Nq, Nk): eager's slice of the mask
        blocked = mask <= torch.finfo(mask.dtype).min  # (1, Nq, Nk): where eager's mask forbids
        scores = (scores + mask.to(torch.float64)).masked_fill(blocked, float("-inf"))  # (Hq, Nq, Nk)
    return QueriesAndKeys(queries, keys, scores)


def query_position(token: str | int, raw: tuple[str, ...]) -> int:
    """The position of `token`: a position, a word (its first piece), a piece as words show it, or a raw
    token (its first occurrence); a ValueError naming the tokens otherwise."""
    labels, words = split_words(raw)
    if isinstance(token, str):
        for word, positions in words:
            if token == word:
                return positions[0]
        if token in labels:
            return labels.index(token)
    return token_position(token, raw, "token")


def neuron_view(
    model: torch.nn.Module,
    tokenizer: object,
    text: str,
    *,
    layer: int,
    head: int,
    token: str | int,
    pieces: str = "words",
) -> Shown:
    """Head `head` of layer `layer` of `model` (as queries_and_keys takes it) reading `text`: the query of
    `token` (a word, a token, its first occurrence, or a position; a word of several pieces: its first),
    every key, their element-wise products, the masked scores and the weights, with that layer's head
    view. The tokens shown as `pieces` says (words.as_pieces); with "merged", a last step: the query word's
    weights on each word (its pieces' rows averaged, each key word's pieces summed)."""
    pieces = pieces_argument(pieces)
    maps, layers = queries_and_keys(model, tokenizer, text, pieces="raw")
    layer, head = non_negative_int(layer, "layer"), non_negative_int(head, "head")
    heads = maps.weights.shape[1]
    if layer >= len(layers) or head >= heads:
        raise ValueError(f"layer and head must be below {len(layers)} and {heads}, got {layer} and {head}")
    raw = maps.query_tokens
    i = query_position(token, raw)
    labels, words = split_words(raw)
    tokens = raw if pieces == "raw" else labels
    chosen = layers[layer]
    group = heads // chosen.keys.shape[0]  # G query heads share one key head
    q = chosen.queries[head, i]  # (Dh,)
    k = chosen.keys[head // group]  # (N, Dh)
    weights = maps.weights[layer]  # (H, N, N)
    features, query = tuple(str(d) for d in range(q.shape[0])), tokens[i]
    # name, formula, sentence, axes, values, rows, columns
    matrices: tuple[
        tuple[str, str, str, tuple[str, ...], torch.Tensor, tuple[str, ...], tuple[str, ...]], ...
    ] = (
        (
            "query",
            "q_i",
            f"The query of {query!r}: what it looks for.",
            ("1", "Dh"),
            q[None],
            (query,),
            features,
        ),
        ("keys", "k_j", "Every token's key: what it offers.", ("Nk", "Dh"), k, tokens, features),
        (
            "query × key",
            "q_i ⊙ k_j",
            "Element by element: where query and key agree (both large, of one sign) the score grows; each "
            "row sums to the dot product q_i · k_j.",
            ("Nk", "Dh"),
            q[None] * k,  # (N, Dh)
            tokens,
            features,
        ),
        (
            "scores",
            "q_i · k_j · scale + mask",
            "Each row's sum, scaled (by 1/√Dh unless the model says otherwise); -inf where the query may not "
            "look (the tokens after it, in a decoder).",
            ("Nk", "1"),
            chosen.masked_scores[head, i][:, None],  # (N, 1)
            tokens,
            ("score",),
        ),
        (
            "weights",
            "softmax over j of the scores",
            f"How much {query!r} attends to each token.",
            ("Nk", "1"),
            weights[head, i][:, None],  # (N, 1)
            tokens,
            ("weight",),
        ),
    )
    if pieces == "merged":
        w = next(index for index, (_, positions) in enumerate(words) if i in positions)
        by_word = merged_weights(weights[head], words, words)[w]  # (Wk,): the query word's row
        names = tuple(word for word, _ in words)
        matrices += (
            (
                "weights by word",
                "mean over the query word's pieces, sum over each key word's",
                f"How much {names[w]!r} attends to each word: {MERGED}.",
                ("Wk", "1"),
                by_word[:, None],  # (Wk, 1)
                names,
                ("weight",),
            ),
        )
    walk = tuple(
        WalkStep(name, formula, sentence, tuple(values.shape), axes, (Matrix(values, rows, columns),))
        for name, formula, sentence, axes, values, rows, columns in matrices
    )
    # Every layer for the page to pick from, or the chosen one alone when all would make a heavy page.
    kept = range(len(layers)) if maps.weights.numel() <= NEURON_PAGE_LIMIT else range(layer, layer + 1)
    neurons = NeuronData(
        tokens,
        torch.stack([layers[k].queries for k in kept]),  # (L', Hq, N, Dh)
        torch.stack([layers[k].keys for k in kept]),  # (L', Hkv, N, Dh)
        torch.stack([layers[k].masked_scores for k in kept]),  # (L', Hq, N, N)
        maps.weights[kept.start : kept.stop],  # (L', Hq, N, N)
        (kept.index(layer), head, i),
        tuple(kept),
    )
    layer_maps = as_pieces(
        HeadMaps(f"self-attention, layer {layer}", raw, raw, weights[None]), pieces
    )  # (1, H, N, N), or (1, H, W, W) merged
    title = f"Neuron view: layer {layer}, head {head}, query {query!r}"
    description = (
        f"{type(model).__name__} reading {text!r}. The steps below are this layer, head and query; the "
        "neuron view at the end of the page picks any other."
    )
    return Shown(Report(title, description, walk, (layer_maps,), neurons=neurons))
