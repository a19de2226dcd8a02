"""What the page's "your own numbers" section starts from: a run's inputs and weights in the lecture's layout
(Playground), which the page's script recomputes as the reader edits them.
"""

from __future__ import annotations

import torch

from ..pages.model import Playground
from .example import EXAMPLES, Run, run_example

PLAYGROUND_MAX = 16  # tokens, d_in and d_out at most: beyond, the page has no "your own numbers"


def playground_of(run: Run, name: str) -> Playground:
    """The run's inputs (batch 0) and weights in the lecture's layout, for the page to recompute."""
    module = run.module
    (w_q, b_q), (w_k, b_k), (w_v, b_v) = module.projections()  # W (d_out, d_in) each, b (d_out,) or None
    zeros = torch.zeros(w_q.shape[0], dtype=torch.float64)
    w_query, w_key, w_value = (w.detach().T.to(torch.float64) for w in (w_q, w_k, w_v))  # (d_in, d_out)
    b_query, b_key, b_value = (zeros if b is None else b.detach().to(torch.float64) for b in (b_q, b_k, b_v))
    out_bias = module.out_proj.bias
    return Playground(
        name,
        tuple(run.example.tokens),
        run.trace["inputs"].tensor[0].to(torch.float64),  # (N, d_in)
        w_query,
        w_key,
        w_value,
        b_query,  # (d_out,) each
        b_key,
        b_value,
        module.out_proj.weight.detach().T.to(torch.float64),  # (d_out, out)
        torch.zeros(module.out_dim, dtype=torch.float64) if out_bias is None else out_bias.detach().double(),
        module.num_heads,
        run.example.causal,
    )


def playgrounds_of(run: Run) -> tuple[Playground, ...]:
    """What the page's "your own numbers" offers: the run's example, then the other named examples
    (example.EXAMPLES) when it is one of them; none for cross-attention (the section edits one sequence)
    or past PLAYGROUND_MAX tokens or features (a table of inputs to edit that size helps nobody)."""
    example = run.example
    if example.kv_tokens is not None or max(len(example.tokens), example.dim, example.d_out) > PLAYGROUND_MAX:
        return ()
    names = [name for name, one in EXAMPLES.items() if one == example]
    if not names:
        return (playground_of(run, "yours"),)
    others = [playground_of(run_example(e), n) for n, e in EXAMPLES.items() if n != names[0]]
    return (playground_of(run, names[0]), *others)
