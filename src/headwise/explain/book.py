"""Raschka's "Build a Large Language Model from Scratch", chapter 3, sections 3.3 to 3.6, by headwise.

Every value the chapter prints, with the book's seeds, shapes and order of initialisation: the book's
weights are drawn exactly as its code draws them (torch.rand or torch.nn.Linear after torch.manual_seed),
then loaded into headwise.MultiHeadAttention or passed to headwise.attention, which compute everything
else in float64 under headwise.trace(). The book's classes map onto headwise's one module:

    SelfAttention_v1, _v2, CausalAttention   MultiHeadAttention(d_in, 1, head_dim=d_out): its context step
    MultiHeadAttentionWrapper (2 heads)      MultiHeadAttention(d_in, 2, head_dim=d_out): its context step
    MultiHeadAttention (weight splits)       MultiHeadAttention(d_in, 2, head_dim=d_out // 2, out_dim=d_out,
                                                 qkv_bias=False): its output

The book's own classes (without an output projection) end at headwise's context step, before out_proj.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..functional import attention
from ..masks import causal_mask, to_additive
from ..modules import MultiHeadAttention
from ..trace import Trace, trace
from .checks import Check, matches
from .example import LECTURE_EMBEDDINGS, LECTURE_TOKENS
from .report import HeadMaps, Matrix, Report, WalkStep, caption

BOOK = 'Raschka, "Build a Large Language Model from Scratch", chapter 3'
SECTIONS = {  # the chapter's sections that print values, by number
    "3.3.1": "A simple self-attention mechanism without trainable weights",
    "3.3.2": "Computing attention weights for all input tokens",
    "3.4.1": "Computing the attention weights step by step",
    "3.4.2": "Implementing a compact SelfAttention class",
    "3.5.1": "Applying a causal attention mask",
    "3.5.2": "Masking additional attention weights with dropout",
    "3.5.3": "Implementing a compact causal self-attention class",
    "3.6.1": "Stacking multiple single-head attention layers",
    "3.6.2": "Implementing multi-head attention with weight splits",
}
D_IN, D_OUT = 3, 2  # the book's d_in (the embedding width) and d_out
CONTEXT_LENGTH = len(LECTURE_TOKENS)
DROPOUT = 0.5  # the book's dropout rate in 3.5.2
SEED = 123  # torch.manual_seed(123): the book's seed for its weights and its dropout
SEED_V2 = 789  # torch.manual_seed(789): the book's seed for SelfAttention_v2 (3.4.2, reused in 3.5.1)
# 3.6.2's tensor `a` of shape (b, num_heads, num_tokens, head_dim) = (1, 2, 3, 4), as printed in the book
HEADS_EXAMPLE = (
    (
        (0.2745, 0.6584, 0.2775, 0.8573),
        (0.8993, 0.0390, 0.9268, 0.7388),
        (0.7179, 0.7058, 0.9156, 0.4340),
    ),
    (
        (0.0772, 0.3565, 0.1479, 0.5331),
        (0.4066, 0.2318, 0.4545, 0.9737),
        (0.4606, 0.5159, 0.4220, 0.5786),
    ),
)


@dataclass(frozen=True)
class Printout:
    """One value the book prints: its section, the book's name and code for it, a sentence on what it is,
    the value as headwise computed it (float64, any shape up to (b, num_heads, num_tokens, num_tokens)),
    the book's names of its axes, the labels of its last axis (tokens or feature indices), and what it
    shows about the values before it."""

    section: str
    name: str
    code: str
    sentence: str
    value: torch.Tensor
    axes: tuple[str, ...]
    columns: tuple[str, ...]
    checks: tuple[Check, ...] = ()

    def matrices(self) -> tuple[Matrix, ...]:
        """The value as matrices (R, C): one per leading index (batch element or head), a vector as one
        row and a number as one cell (labelled "tensor", as the book prints them); rows of six are the
        tokens."""
        value = self.value.reshape((1,) * (2 - self.value.dim()) + tuple(self.value.shape))  # (..., R, C)
        count = value.shape[-2]
        rows = LECTURE_TOKENS if count == CONTEXT_LENGTH else ("tensor",) if count == 1 else features(count)
        flat = value.flatten(0, -3) if value.dim() > 2 else value[None]  # (M, R, C)
        leading = self.axes[:-2]
        return tuple(
            Matrix(matrix, rows, self.columns, caption(leading, index, value.shape[:-2]))
            for index, matrix in enumerate(flat)
        )


def book_inputs() -> torch.Tensor:
    """The book's `inputs`: the six tokens' embeddings (num_tokens, d_in) = (6, 3), float64."""
    return torch.tensor(LECTURE_EMBEDDINGS, dtype=torch.float64)


def features(width: int) -> tuple[str, ...]:
    """The labels of `width` features: '0', '1', ..."""
    return tuple(map(str, range(width)))


def traced(function, *args, **options) -> Trace:
    """The trace of `function(*args, **options)` (headwise.attention or a module), without gradients."""
    with torch.no_grad(), trace() as steps:
        function(*args, **options)
    return steps


def _seed(seed: int) -> None:
    """torch.manual_seed(seed) as the book calls it, for the CPU generator alone (the book draws on the
    CPU; torch.manual_seed would reseed every GPU too, which chapter() does not restore)."""
    torch.default_generator.manual_seed(seed)


def rand_weights(count: int) -> list[torch.Tensor]:
    """`count` matrices torch.rand(d_in, d_out), drawn in order after the book's seed, as (d_out, d_in)
    float64 (the layout of nn.Linear's and headwise's weights: x @ W is F.linear(x, W.T))."""
    _seed(SEED)
    return [torch.rand(D_IN, D_OUT).T.to(torch.float64) for _ in range(count)]


def linear_layers(seed: int, count: int, *, output: bool = False) -> list[nn.Linear]:
    """`count` nn.Linear(d_in, d_out, bias=False) drawn in order after torch.manual_seed(seed), then with
    `output` the book's out_proj nn.Linear(d_out, d_out): the book's initialisation order."""
    _seed(seed)
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


def linear_module(layers: list[nn.Linear], *, num_heads: int | None = None, **options) -> MultiHeadAttention:
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


def shape_of(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor's shape as the book prints it (torch.Size([6, 2])), as a vector of its sizes (float64)."""
    return torch.tensor(tuple(tensor.shape), dtype=torch.float64)


def context_shape(section: str, context: torch.Tensor) -> Printout:
    """The book's print("context_vecs.shape:", context_vecs.shape) after each of its classes."""
    return Printout(
        section,
        "context_vecs.shape",
        "context_vecs.shape",
        "(b, num_tokens, width): one context vector per token of each batch element.",
        shape_of(context),
        (),
        ("b", "num_tokens", "width"),
    )


def simplified_attention() -> list[Printout]:
    """3.3: attention without trainable weights, scores = plain dot products (scale 1), for the second
    token ("journey") and then for all tokens."""
    inputs = book_inputs()  # (6, 3)
    x = inputs[None, None]  # (1, 1, 6, 3) = (b, num_heads, num_tokens, d_in)
    one = traced(attention, x[:, :, 1:2], x, x, scale=1.0)  # the query "journey" against all tokens
    scores_2 = one["scores"].tensor[0, 0, 0]  # (6,)
    exp = torch.exp(scores_2)  # (6,)
    naive = exp / exp.sum()  # (6,)
    weights_2 = one["weights"].tensor[0, 0, 0]  # (6,)
    context_2 = one["context_by_head"].tensor[0, 0, 0]  # (3,)
    every = traced(attention, x, x, x, scale=1.0)
    weights = every["weights"].tensor[0, 0]  # (6, 6)
    scores = every["scores"].tensor[0, 0]  # (6, 6)
    res = sum(a * b for a, b in zip(inputs[0].tolist(), inputs[1].tolist(), strict=True))  # the book's loop
    loops = torch.tensor([[float(row @ column) for column in inputs] for row in inputs], dtype=torch.float64)
    tokens, dims = LECTURE_TOKENS, features(D_IN)
    s = "3.3.1"
    return [
        Printout(
            s,
            "attn_scores_2",
            "query = inputs[1]; attn_scores_2[i] = torch.dot(x_i, query)",
            "The query's dot product with each token: the unnormalised attention scores ω₂ᵢ.",
            scores_2,
            ("num_tokens",),
            tokens,
        ),
        Printout(
            s,
            "res",
            "res = Σ inputs[0][idx] * query[idx]   (= torch.dot(inputs[0], query))",
            "A dot product is the sum of elementwise products, here added up one by one.",
            torch.tensor(res, dtype=torch.float64),
            (),
            ("res",),
        ),
        Printout(
            s,
            "torch.dot(inputs[0], query)",
            "print(torch.dot(inputs[0], query))",
            "The same dot product at once: headwise's first score.",
            scores_2[0],
            (),
            ("dot",),
            (matches(scores_2[0], torch.tensor(res, dtype=torch.float64), "equal to res"),),
        ),
        Printout(
            s,
            "attn_weights_2_tmp",
            "attn_weights_2_tmp = attn_scores_2 / attn_scores_2.sum()",
            "Divided by their sum, the scores become weights that sum to 1 (not yet a softmax).",
            scores_2 / scores_2.sum(),
            ("num_tokens",),
            tokens,
        ),
        Printout(
            s,
            "attn_weights_2_tmp.sum()",
            "attn_weights_2_tmp.sum()",
            "They sum to 1.",
            (scores_2 / scores_2.sum()).sum(),
            (),
            ("sum",),
        ),
        Printout(
            s,
            "attn_weights_2_naive",
            "softmax_naive(x) = torch.exp(x) / torch.exp(x).sum(dim=0)",
            "The softmax: exponentials normalised, so the weights are positive and sum to 1.",
            naive,
            ("num_tokens",),
            tokens,
        ),
        Printout(
            s,
            "attn_weights_2_naive.sum()",
            "attn_weights_2_naive.sum()",
            "They sum to 1.",
            naive.sum(),
            (),
            ("sum",),
        ),
        Printout(
            s,
            "attn_weights_2",
            "attn_weights_2 = torch.softmax(attn_scores_2, dim=0)",
            "headwise's softmax over the keys (the reference backend): the same weights.",
            weights_2,
            ("num_tokens",),
            tokens,
            (matches(weights_2, naive, "equal to softmax_naive"),),
        ),
        Printout(
            s, "attn_weights_2.sum()", "attn_weights_2.sum()", "They sum to 1.", weights_2.sum(), (), ("sum",)
        ),
        Printout(
            s,
            "context_vec_2",
            "context_vec_2 = Σ attn_weights_2[i] * x_i",
            "The context vector z₂: the inputs averaged with the attention weights.",
            context_2,
            ("d_in",),
            dims,
        ),
        Printout(
            "3.3.2",
            "attn_scores",
            "for i, x_i in enumerate(inputs): for j, x_j in enumerate(inputs): torch.dot(x_i, x_j)",
            "Every token's dot product with every token, in two loops: one row of scores per query.",
            loops,
            ("num_tokens", "num_tokens"),
            tokens,
        ),
        Printout(
            "3.3.2",
            "attn_scores",
            "attn_scores = inputs @ inputs.T",
            "The same in one matrix product: headwise's scores.",
            scores,
            ("num_tokens", "num_tokens"),
            tokens,
            (matches(scores, loops, "equal to the loops' attn_scores"),),
        ),
        Printout(
            "3.3.2",
            "attn_weights",
            "attn_weights = torch.softmax(attn_scores, dim=-1)",
            "The softmax of each row: row i is how much token i attends to each token.",
            weights,
            ("num_tokens", "num_tokens"),
            tokens,
        ),
        Printout(
            "3.3.2",
            "Row 2 sum",
            "row_2_sum = sum([0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581])",
            "The second row's printed weights, added up: 1.",
            weights[1].round(decimals=4).sum(),
            (),
            ("sum",),
        ),
        Printout(
            "3.3.2",
            "All row sums",
            "attn_weights.sum(dim=-1)",
            "Every row sums to 1.",
            weights.sum(dim=-1),
            ("num_tokens",),
            tokens,
        ),
        Printout(
            "3.3.2",
            "all_context_vecs",
            "all_context_vecs = attn_weights @ inputs",
            "All context vectors at once; the second row is context_vec_2.",
            every["context_by_head"].tensor[0, 0],
            ("num_tokens", "d_in"),
            dims,
            (matches(every["context_by_head"].tensor[0, 0, 1], context_2, "row 2 is context_vec_2"),),
        ),
        Printout(
            "3.3.2",
            "Previous 2nd context vector",
            'print("Previous 2nd context vector:", context_vec_2)',
            "3.3.1's context_vec_2, the second row above.",
            context_2,
            ("d_in",),
            dims,
        ),
    ]


def trainable_attention() -> list[Printout]:
    """3.4: W_query, W_key, W_value = torch.rand(d_in, d_out) after torch.manual_seed(123); query_2 and
    its scores, weights (scaled by 1/√d_k) and context vector; SelfAttention_v1 with the same draws and
    SelfAttention_v2 (nn.Linear, seed 789)."""
    module = headwise_module(*rand_weights(3))  # W_query, W_key, W_value, as the book draws
    steps = traced(module, book_inputs()[None])  # (1, 6, 3) = (b, num_tokens, d_in)
    v2 = traced(linear_module(linear_layers(SEED_V2, 3)), book_inputs()[None])
    tokens, out = LECTURE_TOKENS, features(D_OUT)
    s = "3.4.1"
    return [
        Printout(
            s,
            "query_2",
            "query_2 = x_2 @ W_query",
            "The second token's query: its embedding times W_query (d_in × d_out = 3 × 2).",
            steps["queries"].tensor[0, 1],
            ("d_out",),
            out,
        ),
        *(
            Printout(
                s,
                f"{role}.shape",
                f"{role} = inputs @ W_{role[:-1]}; {role}.shape",
                f"Every token's {role[:-1]} at once: (num_tokens, d_out).",
                shape_of(steps[role].tensor[0]),
                (),
                ("num_tokens", "d_out"),
            )
            for role in ("keys", "values")
        ),
        Printout(
            s,
            "attn_score_22",
            "attn_score_22 = query_2.dot(keys[1])",
            "The score of query 2 against key 2.",
            steps["scores"].tensor[0, 0, 1, 1],
            (),
            ("ω22",),
        ),
        Printout(
            s,
            "attn_scores_2",
            "attn_scores_2 = query_2 @ keys.T",
            "Query 2's scores against all six keys.",
            steps["scores"].tensor[0, 0, 1],
            ("num_tokens",),
            tokens,
        ),
        Printout(
            s,
            "attn_weights_2",
            "attn_weights_2 = torch.softmax(attn_scores_2 / d_k**0.5, dim=-1)",
            f"Scaled by 1/√d_k = 1/√{D_OUT} (headwise's 1/√Dh), then the softmax.",
            steps["weights"].tensor[0, 0, 1],
            ("num_tokens",),
            tokens,
        ),
        Printout(
            s,
            "context_vec_2",
            "context_vec_2 = attn_weights_2 @ values",
            "Query 2's context vector: the values averaged with its weights.",
            steps["context"].tensor[0, 1],
            ("d_out",),
            out,
        ),
        Printout(
            "3.4.2",
            "sa_v1(inputs)",
            "torch.manual_seed(123); sa_v1 = SelfAttention_v1(d_in, d_out)",
            "The same weights in a class: every token's context vector (the second is context_vec_2).",
            steps["context"].tensor[0],
            ("num_tokens", "d_out"),
            out,
        ),
        Printout(
            "3.4.2",
            "sa_v2(inputs)",
            "torch.manual_seed(789); sa_v2 = SelfAttention_v2(d_in, d_out)",
            "nn.Linear layers instead of torch.rand: other initial weights, so other numbers.",
            v2["context"].tensor[0],
            ("num_tokens", "d_out"),
            out,
        ),
    ]


def causal_attention() -> list[Printout]:
    """3.5: sa_v2's weights masked after the softmax and renormalised, then with -inf before it; dropout
    after torch.manual_seed(123); CausalAttention on a batch of two (seed 123)."""
    module = linear_module(linear_layers(SEED_V2, 3))  # sa_v2's weights
    x = book_inputs()[None]  # (1, 6, 3)
    plain = traced(module, x)
    weights = plain["weights"].tensor[0, 0]  # (6, 6)
    allowed = causal_mask(CONTEXT_LENGTH, CONTEXT_LENGTH)  # (6, 6), True = may attend
    masked_simple = weights * allowed  # (6, 6)
    renormalised = masked_simple / masked_simple.sum(dim=-1, keepdim=True)  # (6, 6)
    causal = traced(module, x, is_causal=True)
    dropping = linear_module(linear_layers(SEED_V2, 3), dropout=DROPOUT).train()
    _seed(SEED)
    dropped = traced(dropping, x, is_causal=True)
    _seed(SEED)
    example = F.dropout(torch.ones(CONTEXT_LENGTH, CONTEXT_LENGTH, dtype=torch.float64), DROPOUT)  # (6, 6)
    batch = torch.stack((book_inputs(), book_inputs()))  # (2, 6, 3) = (b, num_tokens, d_in)
    ca = traced(linear_module(linear_layers(SEED, 3)), batch, is_causal=True)
    tokens, square = LECTURE_TOKENS, ("num_tokens", "num_tokens")
    s = "3.5.1"
    return [
        Printout(
            s,
            "attn_weights",
            "attn_weights = torch.softmax(attn_scores / keys.shape[-1]**0.5, dim=-1)",
            "sa_v2's weights, before any mask: every token attends to every token.",
            weights,
            square,
            tokens,
        ),
        Printout(
            s,
            "mask_simple",
            "mask_simple = torch.tril(torch.ones(context_length, context_length))",
            "The causal mask (headwise.masks.causal_mask): 1 where a token may see a key, at or before it.",
            allowed.to(torch.float64),
            square,
            tokens,
        ),
        Printout(
            s,
            "masked_simple",
            "masked_simple = attn_weights * mask_simple",
            "The weights above the diagonal zeroed: the rows no longer sum to 1.",
            masked_simple,
            square,
            tokens,
        ),
        Printout(
            s,
            "masked_simple_norm",
            "masked_simple_norm = masked_simple / row_sums",
            "Each row divided by its sum: a distribution over the visible tokens again.",
            renormalised,
            square,
            tokens,
        ),
        Printout(
            s,
            "masked",
            "masked = attn_scores.masked_fill(mask.bool(), -torch.inf)",
            "The -inf trick: the scores of future tokens set to -inf (headwise adds its mask as 0 / -inf).",
            plain["scores"].tensor[0, 0] + to_additive(allowed, torch.float64),
            square,
            tokens,
        ),
        Printout(
            s,
            "attn_weights",
            "attn_weights = torch.softmax(masked / keys.shape[-1]**0.5, dim=-1)",
            "The softmax gives exactly 0 to -inf: the same weights as masked_simple_norm, in one step.",
            causal["weights"].tensor[0, 0],
            square,
            tokens,
            (matches(causal["weights"].tensor[0, 0], renormalised, "equal to masked_simple_norm"),),
        ),
        Printout(
            "3.5.2",
            "dropout(example)",
            "torch.manual_seed(123); dropout = torch.nn.Dropout(0.5)",
            "Dropout on a matrix of ones: about half the entries zeroed, the rest scaled by 1/(1 - 0.5) = 2.",
            example,
            square,
            tokens,
        ),
        Printout(
            "3.5.2",
            "dropout(attn_weights)",
            "torch.manual_seed(123); dropout(attn_weights)",
            "The same draw on the causal weights (headwise's dropout step, in training mode only).",
            dropped["dropout"].tensor[0, 0],
            square,
            tokens,
        ),
        Printout(
            "3.5.3",
            "batch.shape",
            "batch = torch.stack((inputs, inputs), dim=0); batch.shape",
            "Two inputs with six tokens each, each token 3 wide.",
            shape_of(batch),
            (),
            ("b", "num_tokens", "d_in"),
        ),
        Printout(
            "3.5.3",
            "context_vecs",
            "torch.manual_seed(123); ca = CausalAttention(d_in, d_out, 6, 0.0)",
            "A batch of two copies of the inputs through causal attention: two equal (6, 2) results.",
            ca["context"].tensor,
            ("b", "num_tokens", "d_out"),
            features(D_OUT),
        ),
        context_shape("3.5.3", ca["context"].tensor),
    ]


def multi_head_attention(causal_context: torch.Tensor) -> tuple[list[Printout], Trace]:
    """3.6: the wrapper of two CausalAttention heads (side by side: headwise's context with two heads, the
    first being 3.5.3's `causal_context` (2, 6, 2) again), the weight-split MultiHeadAttention (seed 123,
    d_out = 2, two heads of width 1, out_proj with a bias) and the batched matrix product of 3.6.2's tensor
    `a`. Also returns the trace of the weight-split module, whose weights the head view draws."""
    batch = torch.stack((book_inputs(), book_inputs()))  # (2, 6, 3)
    wrapper = traced(linear_module(linear_layers(SEED, 6)), batch, is_causal=True)
    split = traced(weight_split_module(), batch, is_causal=True)
    a = torch.tensor(HEADS_EXAMPLE, dtype=torch.float64)[
        None
    ]  # (1, 2, 3, 4) = (b, num_heads, num_tokens, head_dim)
    products = traced(attention, a, a, a)["scores"].tensor  # (1, 2, 3, 3)
    columns = [f"h{h}:{i}" for h in range(2) for i in range(D_OUT)]
    printouts = [
        Printout(
            "3.6.1",
            "context_vecs",
            "mha = MultiHeadAttentionWrapper(d_in, d_out, 6, 0.0, num_heads=2)",
            "Two causal heads side by side (columns h0:0, h0:1 from head 0, h1:0, h1:1 from head 1): "
            "head 0 is 3.5.3's CausalAttention, drawn first.",
            wrapper["context"].tensor,
            ("b", "num_tokens", "num_heads·d_out"),
            tuple(columns),
            (matches(wrapper["context"].tensor[..., :D_OUT], causal_context, "head 0 is 3.5.3's result"),),
        ),
        context_shape("3.6.1", wrapper["context"].tensor),
        Printout(
            "3.6.2",
            "context_vecs",
            "mha = MultiHeadAttention(d_in, d_out=2, 6, 0.0, num_heads=2)",
            "Weight splits: one W_query (3 × 2) split into two heads of width 1, then out_proj (2 × 2, with "
            "a bias): headwise.MultiHeadAttention(3, 2, head_dim=1, out_dim=2, qkv_bias=False).",
            split["output"].tensor,
            ("b", "num_tokens", "d_out"),
            features(D_OUT),
        ),
        context_shape("3.6.2", split["output"].tensor),
        Printout(
            "3.6.2",
            "a @ a.transpose(2, 3)",
            "a @ a.transpose(2, 3)   (a: (1, 2, 3, 4))",
            "A batched matrix product multiplies each head's matrix with its own transpose "
            "(first_head @ first_head.T, second_head @ second_head.T): headwise's scores step.",
            products,
            ("b", "num_heads", "num_tokens", "num_tokens"),
            features(3),
        ),
        *(
            Printout(
                "3.6.2",
                f"{which} head",
                f"{which.lower()}_head = a[0, {head}, :, :]; {which.lower()}_head @ {which.lower()}_head.T",
                f"The {which.lower()} head alone: the same numbers as head {head} of the batched product.",
                a[0, head] @ a[0, head].T,
                ("num_tokens", "num_tokens"),
                features(3),
                (
                    matches(
                        products[0, head], a[0, head] @ a[0, head].T, f"head {head} of a @ a.transpose(2, 3)"
                    ),
                ),
            )
            for head, which in enumerate(("First", "Second"))
        ),
    ]
    return printouts, split


def chapter() -> tuple[list[Printout], torch.Tensor]:
    """Every value sections 3.3 to 3.6 print, in the book's order, and the attention weights
    (num_heads, num_tokens, num_tokens) of 3.6.2's weight-split module on the first batch element. The
    book seeds torch's global generator; the caller's state of it is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        causal = causal_attention()
        context = next(p.value for p in causal if p.name == "context_vecs")  # 3.5.3's (2, 6, 2)
        multi, split = multi_head_attention(context)
        printouts = simplified_attention() + trainable_attention() + causal + multi
    return printouts, split["weights"].tensor[0]


def book_report() -> Report:
    """The chapter as a Report: one step per printed value, named by section and the book's name, and
    3.6.2's attention weights for the head and model views."""
    printouts, weights = chapter()
    steps = tuple(
        WalkStep(
            f"{p.section} {p.name}",
            p.code,
            f"{SECTIONS[p.section]}. {p.sentence}",
            tuple(p.value.shape),
            p.axes,
            p.matrices(),
            checks=p.checks,
        )
        for p in printouts
    )
    return Report(
        title=f"{BOOK}, sections 3.3 to 3.6",
        description=(
            "Every value the chapter prints, computed by headwise in float64 with the book's seeds, shapes "
            "and order of initialisation; the head view shows 3.6.2's weight-split MultiHeadAttention."
        ),
        steps=steps,
        attention=(HeadMaps("causal self-attention (3.6.2)", LECTURE_TOKENS, LECTURE_TOKENS, weights[None]),),
    )
