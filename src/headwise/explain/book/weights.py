"""The book's weights, drawn exactly as its code draws them (torch.rand or torch.nn.Linear after
torch.manual_seed, in the book's order), loaded into a float64 headwise.MultiHeadAttention.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...modules import MultiHeadAttention

D_IN, D_OUT = 3, 2  # the book's d_in (the embedding width) and d_out
SEED = 123  # torch.manual_seed(123): the book's seed for its weights and its dropout
SEED_V2 = 789  # torch.manual_seed(789): the book's seed for SelfAttention_v2 (3.4.2, reused in 3.5.1)


def book_seed(seed: int) -> None:
    """torch.manual_seed(seed) as the book calls it, for the CPU generator alone (the book draws on the
    CPU; torch.manual_seed would reseed every GPU too, which chapter() does not restore)."""
    torch.default_generator.manual_seed(seed)


def rand_weights(count: int) -> list[torch.Tensor]:
    """`count` matrices torch.rand(d_in, d_out), drawn in order after the book's seed, as (d_out, d_in)
    float64 (the layout of nn.Linear's and headwise's weights: x @ W is F.linear(x, W.T))."""
    book_seed(SEED)
    return [torch.rand(D_IN, D_OUT).T.to(torch.float64) for _ in range(count)]


def linear_layers(seed: int, count: int, *, output: bool = False) -> list[nn.Linear]:
    """`count` nn.Linear(d_in, d_out, bias=False) drawn in order after torch.manual_seed(seed), then with
    `output` the book's out_proj nn.Linear(d_out, d_out): the book's initialisation order."""
    book_seed(seed)
    layers = [nn.Linear(D_IN, D_OUT, bias=False) for _ in range(count)]
    return [*layers, nn.Linear(D_OUT, D_OUT)] if output else layers


def headwise_module(
    w_query: torch.Tensor,
    w_key: torch.Tensor,
    w_value: torch.Tensor,
    *,
    num_heads: int = 1,
    out_proj: nn.Linear | None = None,
    dropout: float = 0.0,
) -> MultiHeadAttention:
    """A float64 MultiHeadAttention with weights W_query, W_key, W_value (H·Dh, d_in) split into
    `num_heads` heads, no biases on them; with `out_proj`, its weights as the output projection
    (H·Dh -> d_out), otherwise an output projection that the book's classes do not have (read the context
    step, before it)."""
    module = MultiHeadAttention(
        w_query.shape[1],  # d_in
        num_heads,
        head_dim=w_query.shape[0] // num_heads,
        out_dim=None if out_proj is None else out_proj.out_features,
        bias=out_proj is not None,
        qkv_bias=False,
        dropout=dropout,
        dtype=torch.float64,
    )
    with torch.no_grad():
        module.in_proj_weight.copy_(torch.cat((w_query, w_key, w_value)))  # (3·H·Dh, d_in): W_q; W_k; W_v
        if out_proj is not None:
            module.out_proj.weight.copy_(out_proj.weight)  # (d_out, H·Dh)
            module.out_proj.bias.copy_(out_proj.bias)  # (d_out,)
    return module.eval()


def linear_module(
    layers: list[nn.Linear], *, num_heads: int | None = None, **options: Any
) -> MultiHeadAttention:
    """headwise_module from the book's nn.Linear layers: W_query, W_key, W_value of each of the wrapper's
    heads in turn (one head per three layers), or of one set split into `num_heads` (weight splits)."""
    groups = [layers[i : i + 3] for i in range(0, len(layers), 3)]  # per head: W_query, W_key, W_value
    w_query, w_key, w_value = (torch.cat([group[role].weight for group in groups]) for role in range(3))
    return headwise_module(w_query, w_key, w_value, num_heads=num_heads or len(groups), **options)


def weight_split_module() -> MultiHeadAttention:
    """3.6.2's MultiHeadAttention(d_in=3, d_out=2, context_length=6, dropout=0.0, num_heads=2) as headwise's:
    W_query, W_key, W_value (nn.Linear(d_in, d_out, bias=False)) and out_proj (nn.Linear(d_out, d_out))
    drawn in that order after torch.manual_seed(123), split into two heads of width 1; float64, evaluation
    mode. The caller's random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        *layers, out_proj = linear_layers(SEED, 3, output=True)
    return linear_module(layers, num_heads=2, out_proj=out_proj)
