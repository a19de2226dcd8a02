"""The neuron view (as bertviz's): how one head's query for one token meets every key, element by element.

    model reads text under headwise.trace() -> layer l's queries_by_head, keys_by_head (B, H, N, Dh),
      scaled_scores and weights (B, H, N, N)
    for head h and query token i:
      query q_i (1, Dh)  ·  keys k_j (N, Dh)  ->  q_i ⊙ k_j (N, Dh)  -> Σ over Dh, × 1/√Dh: scores (N, 1)
        -> softmax: weights (N, 1)

The steps come out as the walkthrough's labelled matrices, so the report's page draws them (with the
layer's head view), and `headwise.show`'s frame or `.save` shows it. The model must run its attention on
headwise's MultiHeadAttention (MiniLM, headwise's own models), the only modules that trace their queries
and keys.
"""

from __future__ import annotations

import torch

from ..checks import non_negative_int
from ..explain.report import HeadMaps, Matrix, Report, WalkStep
from ..trace import trace
from .analysis import token_position
from .show import Shown


def neuron_view(
    model: torch.nn.Module, tokenizer: object, text: str, *, layer: int, head: int, token: str | int
) -> Shown:
    """Head `head` of layer `layer` of a headwise model reading `text`: the query of `token` (a token, its
    first occurrence, or a position), every key, their element-wise products, the scaled scores and the
    weights, with that layer's head view."""
    from ..nn.pretrained import BertEncoder

    if not isinstance(model, BertEncoder):
        raise TypeError(
            f"model must run on headwise's attention (a headwise.nn.pretrained.BertEncoder, such as MiniLM), "
            f"got {type(model).__name__}"
        )
    tokens = tuple(tokenizer.tokens([text])[0])
    with trace() as steps, torch.no_grad():
        model(**tokenizer([text]))
    queries = steps.all("queries_by_head")  # L × (1, H, N, Dh)
    layer, head = non_negative_int(layer, "layer"), non_negative_int(head, "head")
    if layer >= len(queries) or head >= queries[0].shape[1]:
        raise ValueError(
            f"layer and head must be below {len(queries)} and {queries[0].shape[1]}, got {layer} and {head}"
        )
    i = token_position(token, tokens, "token")
    keys_by_head = steps.all("keys_by_head")[layer].tensor  # (1, Hkv, N, Dh)
    group = queries[layer].shape[1] // keys_by_head.shape[1]  # G query heads share one key head
    q = queries[layer].tensor[0, head, i].to(torch.float64)  # (Dh,)
    k = keys_by_head[0, head // group].to(torch.float64)  # (N, Dh)
    weights = steps.all("weights")[layer].tensor[0].to(torch.float64)  # (H, N, N)
    scores = steps.all("scaled_scores")[layer].tensor[0, head, i].to(torch.float64)  # (N,)
    features, query = tuple(str(d) for d in range(q.shape[0])), tokens[i]
    matrices = (  # name, formula, sentence, axes, values, rows, columns
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
            "q_i · k_j / √Dh",
            "Each row's sum, scaled.",
            ("Nk", "1"),
            scores[:, None],
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
    walk = tuple(
        WalkStep(name, formula, sentence, tuple(values.shape), axes, (Matrix(values, rows, columns),))
        for name, formula, sentence, axes, values, rows, columns in matrices
    )
    maps = HeadMaps(f"self-attention, layer {layer}", tokens, tokens, weights[None])  # (1, H, N, N)
    title = f"Neuron view: layer {layer}, head {head}, query {query!r}"
    return Shown(Report(title, f"{type(model).__name__} reading {text!r}.", walk, (maps,)))
