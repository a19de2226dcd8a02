"""The lectures' words for the walkthrough (LECTURES.md, lecture 1, and Raschka's chapter 3): each step's axes
in the shape legend's letters and in the lectures' names, the lectures' code for each step, the lectures'
ten stages and the stage of each step, and the names of the weights. Data only: walkthrough.py uses it to
label the steps, terminal.py to print the legend.
"""

from __future__ import annotations

# Each step's axes in the shape legend's letters (self-attention has Nq = Nk = N); the output's D is
# written out_dim where the output projection is not D wide (the book's d_out -> d_out).
PER_HEAD_SCORES = ("B", "H", "Nq", "Nk")
AXES: dict[str, tuple[str, ...]] = {
    "inputs": ("B", "Nq", "D"),
    "kv_inputs": ("B", "Nk", "D"),
    "W_query": ("D", "H·Dh"),
    "W_key": ("D", "H·Dh"),
    "W_value": ("D", "H·Dh"),
    "queries": ("B", "Nq", "H·Dh"),
    "keys": ("B", "Nk", "H·Dh"),
    "values": ("B", "Nk", "H·Dh"),
    "unrolled": ("B", "Nq", "H", "Dh"),
    "queries_by_head": ("B", "H", "Nq", "Dh"),
    "keys_by_head": ("B", "H", "Nk", "Dh"),
    "values_by_head": ("B", "H", "Nk", "Dh"),
    "scores": PER_HEAD_SCORES,
    "scaled_scores": PER_HEAD_SCORES,
    "masked_scores": PER_HEAD_SCORES,
    "weights": PER_HEAD_SCORES,
    "dropout": PER_HEAD_SCORES,
    "context_by_head": ("B", "H", "Nq", "Dh"),
    "context": ("B", "Nq", "H·Dh"),
    "out_proj": ("H·Dh", "D"),
    "output": ("B", "Nq", "D"),
}
# The same axes in the lectures' (and the book's) names: d_in = D, d_out = H·Dh, num_heads = H,
# head_dim = Dh (the book's d_k), num_tokens = N; out_dim (the output projection's width) is d_out too.
LECTURE_NAMES = {
    "B": "b",
    "Nq": "num_tokens",
    "Nk": "num_tokens",
    "D": "d_in",
    "H·Dh": "d_out",
    "H": "num_heads",
    "Dh": "head_dim",
    "out_dim": "d_out",
}
LECTURE_LEGEND = (
    "The lectures' names: b = B, num_tokens = N, d_in = D, d_out = H·Dh, num_heads = H, head_dim = Dh "
    "(the book's d_k)."
)
HEAD_COLUMNS = "Columns hH:i: feature i of head H (one projection makes the heads side by side)."
# The lectures' (and Raschka's chapter 3) code for each step of the walkthrough, in the book's names.
LECTURE_CODE: dict[str, str] = {
    "inputs": "x  # (b, num_tokens, d_in)",
    "head_dim": "assert d_out % num_heads == 0; self.head_dim = d_out // num_heads",
    "W_query": "self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)",
    "W_key": "self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)",
    "W_value": "self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)",
    "queries": "queries = self.W_query(x)  # (b, num_tokens, d_out)",
    "keys": "keys = self.W_key(x)",
    "values": "values = self.W_value(x)",
    "unrolled": "queries = queries.view(b, num_tokens, self.num_heads, self.head_dim)",
    "queries_by_head": "queries = queries.transpose(1, 2)  # (b, num_heads, num_tokens, head_dim)",
    "keys_by_head": "keys = keys.transpose(1, 2)",
    "values_by_head": "values = values.transpose(1, 2)",
    "scores": "attn_scores = queries @ keys.transpose(2, 3)",
    "masked_scores": "attn_scores.masked_fill_(mask_bool, -torch.inf)",
    "scaled_scores": "attn_scores / keys.shape[-1]**0.5",
    "weights": "attn_weights = torch.softmax(attn_scores / keys.shape[-1]**0.5, dim=-1)",
    "dropout": "attn_weights = self.dropout(attn_weights)",
    "context_by_head": "context_vec = (attn_weights @ values).transpose(1, 2)",
    "context": "context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)",
    "out_proj": "self.out_proj = nn.Linear(d_out, d_out)",
    "output": "context_vec = self.out_proj(context_vec)",
}
BOOK_INPUTS_CODE = "batch = torch.stack((inputs, inputs), dim=0)  # (b, num_tokens, d_in)"
# The lectures' steps (LECTURES.md, lecture 1); each walkthrough step is shown under the one it belongs to.
STAGES = {
    1: "Define the inputs: a batch of token embeddings",
    2: "Decide the output width d_out and the number of heads; head_dim = d_out / num_heads",
    3: "Initialise trainable W_query, W_key, W_value (d_in × d_out)",
    4: "Compute queries, keys, values",
    5: "Unroll the last dimension into heads",
    6: "Group by heads (transpose)",
    7: "Attention scores: queries @ keysᵀ per head",
    8: "Attention weights: causal mask, scale by √head_dim, softmax, dropout",
    9: "Context vectors: weights @ values per head, heads combined, the output projection",
    10: "The hands-on test: the book's printed context_vecs",
}
STAGE_OF = {
    "inputs": 1,
    "kv_inputs": 1,
    "head_dim": 2,
    "W_query": 3,
    "W_key": 3,
    "W_value": 3,
    "queries": 4,
    "keys": 4,
    "values": 4,
    "unrolled": 5,
    "queries_by_head": 6,
    "keys_by_head": 6,
    "values_by_head": 6,
    "scores": 7,
    "masked_scores": 8,
    "scaled_scores": 8,
    "weights": 8,
    "dropout": 8,
    "context_by_head": 9,
    "context": 9,
    "out_proj": 9,
    "output": 9,
}
ROLES = {"W_query": "queries", "W_key": "keys", "W_value": "values"}
LETTERS = {"W_query": "q", "W_key": "k", "W_value": "v", "out_proj": "o"}
