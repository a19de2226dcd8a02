"""How much each output token draws on each input token across all layers: attention rollout and attention
flow (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020).

Both start from each layer's attention averaged over heads, with the residual connection added as an
identity and the rows renormalised:

    A_l = ½ · mean over heads of W_l + ½ · I                    (N, N), each row sums to 1

    rollout = A_L · ... · A_2 · A_1                             (N, N): a path's weight is the product of
                                                                its edges', summed over all paths
    flow[i, j] = max-flow from output token i (after layer L) to input token j (before layer 1) in the
                 layered graph whose edge (layer l, query q) -> (layer l - 1, key k) has capacity A_l[q, k];
                 each row then divided by its sum

Rows are output tokens, columns input tokens; each row sums to 1.
"""

from __future__ import annotations

import torch

from ..explain.report import HeadMaps
from ..optional import require


def residual_attention(maps: HeadMaps) -> torch.Tensor:
    """(L, N, N): each layer's weights averaged over heads, plus the identity of the residual connection,
    rows renormalised to sum to 1."""
    n = len(maps.query_tokens)
    if maps.key_tokens != maps.query_tokens:
        raise ValueError(
            f"{maps.title}: rollout and flow follow self-attention through the layers; got "
            f"{n} query tokens over {len(maps.key_tokens)} different key tokens"
        )
    mixed = maps.weights.to(torch.float64).mean(dim=1) + torch.eye(n, dtype=torch.float64)  # (L, N, N)
    return mixed / mixed.sum(dim=-1, keepdim=True)  # (L, N, N)


def rollout(maps: HeadMaps) -> torch.Tensor:
    """Attention rollout (N, N): A_L · ... · A_1, row i the share of output token i on each input token."""
    layers = residual_attention(maps)  # (L, N, N)
    joint = layers[0]  # (N, N)
    for layer in layers[1:]:
        joint = layer @ joint  # (N, N)
    return joint


def flow(maps: HeadMaps) -> torch.Tensor:
    """Attention flow (N, N): the maximum flow from each output token to each input token through the
    layers (capacities A_l), each row normalised to sum to 1. Uses networkx (a requirement of torch).

    N² max-flow problems over (L + 1)·N nodes: 8 to 25 s for MiniLM's 6 layers over 16 tokens on a shared
    2-core machine, growing as N⁴; rollout takes a millisecond."""
    networkx = require("networkx", purpose="headwise.inspection.flow", install="pip install networkx")
    layers = residual_attention(maps)  # (L, N, N)
    depth, n = layers.shape[0], layers.shape[1]
    graph = networkx.DiGraph()
    for level in range(1, depth + 1):
        capacities = layers[level - 1].tolist()  # (N, N): query at `level`, key at `level - 1`
        for query in range(n):
            for key in range(n):
                graph.add_edge((level, query), (level - 1, key), capacity=capacities[query][key])
    flows = torch.tensor(
        [
            [networkx.maximum_flow_value(graph, (depth, output), (0, source)) for source in range(n)]
            for output in range(n)
        ],
        dtype=torch.float64,
    )  # (N, N)
    return flows / flows.sum(dim=-1, keepdim=True)
