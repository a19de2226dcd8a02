"""What a picture of attention shows, apart from how it is drawn: the walkthrough's steps as labelled
matrices, and the attention weights of layers × heads with the tokens on both axes.

The renderers (html.py, png.py) draw a Report; the sources below (and explain/models.py for pretrained and
trained models) make one. Nothing here needs rich or matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from ..trace import STEP_TEXT
from .checks import TOLERANCE, Check, checks_after, matches
from .example import BOOK_CONTEXT_VECS, DROPOUT_SHOWN, EXAMPLES, Example, Run, dropout_trace, run_example

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
LEGEND = "B batch · N tokens (Nq queries, Nk keys) · D width · H heads · Dh head width"
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
PLAYGROUND_MAX = 16  # tokens, d_in and d_out at most: beyond, the page has no "your own numbers"
LETTERS = {"W_query": "q", "W_key": "k", "W_value": "v", "out_proj": "o"}


@dataclass(frozen=True)
class Matrix:
    """A step's values for one head (or the only matrix of a step without heads): values (R, C) with a
    label per row and per column, and the printed cells when they are not plain numbers (fractions)."""

    values: torch.Tensor
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    caption: str = ""
    cells: tuple[tuple[str, ...], ...] | None = None


@dataclass(frozen=True)
class WalkStep:
    """One step of the walkthrough: its name, formula, sentence, shape with the axes' letters, values, the
    lectures' code for it, and the checks its numbers make possible."""

    name: str
    formula: str
    sentence: str
    shape: tuple[int, ...]
    axes: tuple[str, ...]
    matrices: tuple[Matrix, ...]
    lecture: str = ""  # the lectures' code for the step, when they have one
    checks: tuple[Check, ...] = ()  # what the step's numbers bear out (shown with ✓ or ✗)
    stage: str = ""  # the lectures' step it belongs to, "8. Attention weights: ...", when it has one
    lecture_axes: tuple[str, ...] = ()  # the axes in the lectures' names (d_in, num_tokens, ...)


@dataclass(frozen=True)
class HeadMaps:
    """The attention weights of one kind of attention ("self-attention", "cross-attention", ...) in every
    layer and head: weights (L, H, Nq, Nk), row i the distribution of query token i over the key tokens."""

    title: str
    query_tokens: tuple[str, ...]
    key_tokens: tuple[str, ...]
    weights: torch.Tensor
    pair_start: int | None = None  # a sentence pair read as one sequence: where sentence B starts

    def __post_init__(self) -> None:
        if self.weights.dim() != 4 or tuple(self.weights.shape[2:]) != (
            len(self.query_tokens),
            len(self.key_tokens),
        ):
            raise ValueError(
                f"{self.title}: weights (L, H, Nq, Nk) = {tuple(self.weights.shape)} do not match "
                f"{len(self.query_tokens)} query tokens and {len(self.key_tokens)} key tokens"
            )
        if self.pair_start is not None and (
            isinstance(self.pair_start, bool)
            or not isinstance(self.pair_start, int)
            or self.query_tokens != self.key_tokens
            or not 0 < self.pair_start < len(self.query_tokens)
        ):
            raise ValueError(
                f"{self.title}: pair_start (where sentence B starts) must be a position from 1 to "
                f"{len(self.query_tokens) - 1} of a self-attention map, got {self.pair_start!r}"
            )


@dataclass(frozen=True)
class NeuronData:
    """What the neuron view's page picks from: one sequence's tokens (N), every layer's queries
    (L, Hq, N, Dh) and keys (L, Hkv, N, Dh) (Hq/Hkv query heads share a key head), the masked scores
    scale · q · kᵀ + mask and the weights (L, Hq, N, N), the [layer, head, query] shown first (the layer
    as an index into these), and the model's numbers of the L layers held (all, or the chosen one)."""

    tokens: tuple[str, ...]
    queries: torch.Tensor
    keys: torch.Tensor
    scores: torch.Tensor
    weights: torch.Tensor
    selected: tuple[int, int, int] = (0, 0, 0)
    layer_numbers: tuple[int, ...] | None = None  # None: 0, 1, ..., L - 1


@dataclass(frozen=True)
class Playground:
    """What the page's "your own numbers" section starts from and recomputes in the page: the example's
    name, the tokens (N),
    the inputs x (N, d_in), W_query, W_key, W_value (d_in, d_out) as the lecture writes them and their
    biases (d_out,) (zeros where the module has none), out_proj as W_o (d_out, out) and b_o (out,), the
    number of heads (head_dim = d_out / heads), and whether attention is causal."""

    name: str
    tokens: tuple[str, ...]
    inputs: torch.Tensor
    w_query: torch.Tensor
    w_key: torch.Tensor
    w_value: torch.Tensor
    b_query: torch.Tensor
    b_key: torch.Tensor
    b_value: torch.Tensor
    w_out: torch.Tensor
    b_out: torch.Tensor
    heads: int
    causal: bool


@dataclass(frozen=True)
class Report:
    """Everything one report shows: a title, a sentence on where the numbers come from, the walkthrough's
    steps (possibly none), the attention maps (possibly none), and the layers and heads of them the model
    view draws (bertviz's include_layers and include_heads; the head view has them all)."""

    title: str
    description: str
    steps: tuple[WalkStep, ...]
    attention: tuple[HeadMaps, ...]
    model_layers: tuple[int, ...] | None = None  # the layers the model view draws (None: all)
    model_heads: tuple[int, ...] | None = None  # the heads it draws (None: all)
    neurons: NeuronData | None = None  # every layer's queries and keys, for the neuron view's page
    playgrounds: tuple[
        Playground, ...
    ] = ()  # examples' modules and inputs to edit in the page, its own first


def caption(axes: tuple[str, ...], index: int, sizes: tuple[int, ...]) -> str:
    """'batch 1, head 0' for matrix `index` of the leading axes `axes` of sizes `sizes` (the book's b and
    num_heads, or the legend's B and H); '' without."""
    names = {"b": "batch", "B": "batch", "num_heads": "head", "H": "head"}
    if not axes:
        return ""
    positions = torch.unravel_index(torch.tensor(index), tuple(sizes))
    return ", ".join(f"{names.get(axis, axis)} {int(p)}" for axis, p in zip(axes, positions, strict=True))


def axis_labels(axis: str, size: int, example: Example) -> list[str]:
    """The labels along one axis: the tokens, the features (hN:i for feature i of head N), or indices."""
    if axis == "Nq":
        return list(example.tokens)
    if axis == "Nk":
        return list(example.key_tokens)
    if axis == "H·Dh":
        return [f"h{h}:{i}" for h in range(size // example.head_dim) for i in range(example.head_dim)]
    return [str(i) for i in range(size)]


def step_axes(name: str, run: Run) -> tuple[str, ...]:
    """AXES[name], the output's D written out_dim where the output projection is not D wide."""
    if name in ("out_proj", "output") and run.module.out_dim != run.example.dim:
        return tuple("out_dim" if axis == "D" else axis for axis in AXES[name])
    return AXES[name]


def stage(name: str, run: Run) -> str:
    """'8. Attention weights: ...': the lectures' step that the walkthrough step `name` belongs to."""
    number = 10 if name == "output" and run.example.book_weights else STAGE_OF[name]
    return f"{number}. {STAGES[number]}"


def matrices_of(
    tensor: torch.Tensor, axes: tuple[str, ...], example: Example, batches: int
) -> tuple[Matrix, ...]:
    """`tensor` (B, [H,] R, C) as one Matrix per head of each of the first `batches` batch elements, its
    rows and columns labelled, each captioned with its batch element (when B > 1) and head."""
    shown = tensor[:batches].to(torch.float64)  # (batches, [H,] R, C)
    rows, columns = (
        tuple(axis_labels(axis, size, example))
        for axis, size in zip(axes[-2:], shown.shape[-2:], strict=True)
    )
    leading = axes[:-2]
    named = tuple(axis for axis in leading if axis == "H" or (axis == "B" and example.batch > 1))
    flat = shown.reshape(-1, *shown.shape[-2:])  # (batches·H, R, C)
    sizes = shown.shape[:-2]
    return tuple(
        Matrix(matrix, rows, columns, caption(named, index, tuple(sizes[leading.index(a)] for a in named)))
        if named
        else Matrix(matrix, rows, columns)
        for index, matrix in enumerate(flat)
    )


def lecture_walk_step(
    name: str,
    tensor: torch.Tensor,
    formula: str,
    sentence: str,
    run: Run,
    *,
    batches: int = 1,
    checks: Sequence[Check] = (),
) -> WalkStep:
    """A step of the walkthrough: `tensor` (B, ...) drawn for its first `batches` batch elements, with its
    axes in the legend's letters and in the lectures' names, the lectures' code and stage."""
    axes = step_axes(name, run)
    return WalkStep(
        name,
        formula,
        sentence,
        tuple(tensor.shape),
        axes,
        matrices_of(tensor, axes, run.example, batches),
        LECTURE_CODE.get(name, ""),
        tuple(checks),
        stage(name, run),
        tuple(LECTURE_NAMES.get(axis, axis) for axis in axes),
    )


def traced_step(
    name: str, run: Run, *, batches: int = 1, formula: str | None = None, sentence: str = ""
) -> WalkStep:
    """The traced step `name` with its formula (or `formula`), its sentence (and `sentence` after it) and
    the checks it makes possible."""
    step = run.trace[name]
    return lecture_walk_step(
        name,
        step.tensor,
        step.formula if formula is None else formula,
        f"{step.sentence} {sentence}".strip(),
        run,
        batches=batches,
        checks=checks_after(name, run),
    )


def head_dim_step(run: Run) -> WalkStep:
    """Lecture step 2: the widths d_in, d_out and num_heads, and head_dim = d_out / num_heads."""
    example, module = run.example, run.module
    d_in, d_out, heads, head_dim = example.dim, example.d_out, example.heads, example.head_dim
    if example.book_weights:
        sentence = (
            f"The book's hands-on test chooses d_out = {d_out} and num_heads = {heads}, so each head is "
            f"{head_dim} wide (the book's class asserts that num_heads divides d_out). In headwise: "
            f"MultiHeadAttention(d_in, num_heads, head_dim=d_out // num_heads, out_dim=d_out, "
            "qkv_bias=False)."
        )
    else:
        widths = f"{d_in} is not divisible by {heads}, so " if d_in % heads else ""
        sentence = (
            f"headwise's MultiHeadAttention({d_in}, {heads}, head_dim={head_dim}): {widths}d_out = "
            f"num_heads · head_dim = {d_out}; the output projection maps it to {module.out_dim}."
        )
    values = torch.tensor([[d_in, d_out, heads, head_dim]], dtype=torch.float64)  # (1, 4)
    matrix = Matrix(values, ("width",), ("d_in", "d_out", "num_heads", "head_dim"))
    made = module.num_heads * module.head_dim
    check = Check(
        made == d_out == run.trace["queries"].shape[-1],
        f"num_heads · head_dim = {heads} · {head_dim} = {made} = d_out, the width of the queries",
    )
    return WalkStep(
        "head_dim",
        f"head_dim = d_out / num_heads = {d_out} / {heads} = {head_dim}",
        sentence,
        (),
        (),
        (matrix,),
        LECTURE_CODE["head_dim"],
        (check,),
        stage("head_dim", run),
    )


def weight_step(name: str, weight: torch.Tensor, bias: torch.Tensor | None, run: Run) -> WalkStep:
    """A projection's weights as the lectures write them, W_query = W_qᵀ (d_in, d_out), so that a token's
    row times W_query (plus the bias (d_out,)) is its query; `weight` is (H·Dh, D) as nn.Linear stores it;
    out_proj's W_o (out, H·Dh) makes (H·Dh, out)."""
    example = run.example
    letter = LETTERS[name]
    into, out_of = step_axes(name, run)
    transposed = weight.detach().T.to(torch.float64)  # (in, out)
    rows, columns = (
        tuple(axis_labels(axis, size, example))
        for axis, size in zip((into, out_of), transposed.shape, strict=True)
    )
    matrices = [Matrix(transposed, rows, columns, name)]
    if bias is not None:
        matrices.append(
            Matrix(bias.detach().to(torch.float64)[None], (f"b_{letter}",), columns, f"b_{letter}")
        )
    plus = f" + b_{letter}" if bias is not None else ", no bias"
    if name in ROLES:
        made = f"{ROLES[name]} = x @ {name}{plus}"
        drawn = (
            "drawn by nn.Linear(d_in, d_out, bias=False) after torch.manual_seed(123), in the book's order "
            "W_query, W_key, W_value, out_proj"
            if example.book_weights
            else f"drawn at random (seed {example.seed}) and learnt in training"
        )
        sentence = (
            f"The trainable weights that make the {ROLES[name]}, written d_in × d_out as the lecture writes "
            f"them (nn.Linear stores the transpose, W_{letter}): one column per output feature, {drawn}."
        )
    else:
        made = f"output = context @ out_proj{plus}"
        sentence = (
            "The output projection's weights: they mix the heads' side-by-side results into the output."
        )
    formula = f"{name} = W_{letter}ᵀ  ({made})"
    return WalkStep(
        name,
        formula,
        sentence,
        tuple(transposed.shape),
        (into, out_of),
        tuple(matrices),
        LECTURE_CODE[name],
        (),
        stage(name, run),
        tuple(LECTURE_NAMES.get(axis, axis) for axis in (into, out_of)),
    )


def projection_step(role: str, run: Run) -> WalkStep:
    """queries, keys or values: the traced step, its formula written with the lecture's weight."""
    name = next(weight for weight, made in ROLES.items() if made == role)
    bias = run.module.projections()[list(ROLES.values()).index(role)][1]
    source = "m" if role != "queries" and "kv_inputs" in run.trace.names() else "x"
    plus = f" + b_{LETTERS[name]}" if bias is not None else ""
    return traced_step(role, run, formula=f"{role} = {source} @ {name}{plus}")


def unrolled_step(run: Run) -> WalkStep:
    """The queries (B, Nq, H·Dh) viewed as (B, Nq, H, Dh), before the transpose that groups them by head:
    the same numbers, read with the last axis split into heads."""
    example = run.example
    queries = run.trace["queries"].tensor  # (B, Nq, H·Dh)
    shape = (*queries.shape[:2], example.heads, example.head_dim)  # (B, Nq, H, Dh)
    columns = tuple(axis_labels("H·Dh", queries.shape[-1], example))
    matrix = Matrix(queries[0].to(torch.float64), tuple(example.tokens), columns)
    sentence = (
        "Unroll the last axis into heads: view() moves no number, column hH:i is now feature i of head H. "
        "The keys and values are unrolled the same way; the transpose then groups each head's rows."
    )
    axes = AXES["unrolled"]
    return WalkStep(
        "unrolled",
        "queries.view(B, Nq, H, Dh)",
        sentence,
        shape,
        axes,
        (matrix,),
        LECTURE_CODE["unrolled"],
        (),
        stage("unrolled", run),
        tuple(LECTURE_NAMES[axis] for axis in axes),
    )


def lecture_masked(run: Run) -> torch.Tensor:
    """The scores, not yet scaled, with -inf where headwise masked them: (B, H, Nq, Nk)."""
    blocked = run.trace["masked_scores"].tensor == float("-inf")  # (B, H, Nq, Nk)
    return run.trace["scores"].tensor.masked_fill(blocked, float("-inf"))  # (B, H, Nq, Nk)


def masked_step(run: Run) -> WalkStep:
    """Lecture step 8 begins with the mask: the scores (not yet scaled) with -inf where the trace masked."""
    where = "the future" if run.example.causal else "nothing here"
    sentence = (
        f"{STEP_TEXT['masked_scores'][1]} The lecture masks, then scales; headwise scales, then masks: the "
        "same numbers, since -inf / √head_dim is still -inf."
    )
    formula = f"masked_scores = scores.masked_fill(mask, -inf)   (mask: {where})"
    return lecture_walk_step("masked_scores", lecture_masked(run), formula, sentence, run)


def scaled_step(run: Run) -> WalkStep:
    """The masked scores divided by √head_dim: headwise's masked scores (scaled first), checked."""
    head_dim = run.example.head_dim
    scale = 1 / math.sqrt(head_dim)
    headwise = run.trace["masked_scores"].tensor  # (B, H, Nq, Nk): scaled, then masked
    expected = lecture_masked(run) * scale  # (B, H, Nq, Nk)
    finite = torch.isfinite(expected)
    difference = (expected[finite] - headwise[finite]).abs().max().item() if finite.any() else 0.0
    check = Check(
        torch.equal(finite, torch.isfinite(headwise)) and difference <= TOLERANCE,
        f"masked_scores / √head_dim equals headwise's scores · 1/√Dh + mask (masking and scaling "
        f"commute): max difference {difference:.1g}",
    )
    formula = f"scaled_scores = masked_scores / √head_dim   (1/√{head_dim} = {scale:.4f})"
    sentence = STEP_TEXT["scaled_scores"][1]
    return lecture_walk_step("scaled_scores", headwise, formula, sentence, run, checks=(check,))


def dropout_step(run: Run) -> WalkStep:
    """Dropout with its numbers: the same pass in training mode with p = DROPOUT_SHOWN, and what happens at
    evaluation (nothing: the context uses the softmax's weights as they are)."""
    p, seed = DROPOUT_SHOWN, run.example.seed
    training = dropout_trace(run, p)
    dropped = training["dropout"].tensor  # (B, H, Nq, Nk)
    weights = training["weights"].tensor  # (B, H, Nq, Nk)
    kept = dropped != 0
    expected = torch.where(kept, weights / (1 - p), torch.zeros_like(weights))  # (B, H, Nq, Nk)
    evaluation = run.trace["weights"].tensor @ run.trace["values_by_head"].tensor  # (B, H, Nq, Dh)
    count = int((~kept[0] & (weights[0] > 0)).sum())
    checks = (
        matches(
            dropped, expected, f"in training each weight is dropped (0) or kept × 1/(1 - p) = {1 / (1 - p):g}"
        ),
        matches(
            run.trace["context_by_head"].tensor,
            evaluation,
            "at evaluation dropout is off: the context below is the softmax's weights times the values",
        ),
    )
    sentence = (
        f"{STEP_TEXT['dropout'][1]} Each weight is zeroed with probability p, the kept ones scaled by "
        f"1/(1 - p). Shown: module.train() with p = {p}, the masks drawn after "
        f"torch.manual_seed({seed}) ({count} of batch 0's non-zero weights dropped). At evaluation "
        "(module.eval()), as in the book's hands-on test (dropout=0.0), dropout passes the weights "
        "through unchanged: the steps below use the softmax's weights."
    )
    formula = f"weights = dropout(weights)   (training, p = {p}: kept × {1 / (1 - p):g}; evaluation: as is)"
    return lecture_walk_step("dropout", dropped, formula, sentence, run, checks=checks)


def output_step(run: Run) -> WalkStep:
    """The output, every batch element; for the book's example, compared with what the book prints."""
    example = run.example
    output = run.trace["output"].tensor  # (B, Nq, out_dim)
    checks = checks_after("output", run)
    sentence = ""
    if example.book_weights:
        printed = torch.tensor(BOOK_CONTEXT_VECS, dtype=torch.float64).expand_as(output)  # (B, Nq, d_out)
        rounded = output.mul(10**4).round().div(10**4)  # (B, Nq, d_out): to the book's 4 decimals
        first = ", ".join(f"{value:.4f}" for value in BOOK_CONTEXT_VECS[0])
        checks.append(
            Check(
                bool((rounded - printed).abs().max() < 1e-9),
                f"the book prints context_vecs = tensor([[[{first}], ...: the same {output.numel()} "
                "numbers, to its 4 decimals",
            )
        )
        sentence = (
            "The hands-on test's print(context_vecs): both batch elements (the same inputs, so the same "
            "numbers), as the book prints them."
        )
    step = run.trace["output"]
    formula = "output = context @ out_proj + b_o"
    sentence = f"{step.sentence} {sentence}".strip()
    return lecture_walk_step("output", output, formula, sentence, run, batches=example.batch, checks=checks)


def lecture_steps(run: Run) -> tuple[WalkStep, ...]:
    """Every step of the lectures' calculation (LECTURES.md, lecture 1) in their order and names: the
    inputs, d_out and head_dim, the weights W_query, W_key, W_value, the projections, the queries unrolled,
    then grouped by head, the scores, the mask, the scale, the softmax and dropout (its numbers in training
    mode, off at evaluation), the context, W_o and the output."""
    example, module = run.example, run.module
    projections = dict(zip(ROLES, module.projections(), strict=True))  # name -> (W (H·Dh, D), b or None)
    inputs = run.trace["inputs"]
    checks = []
    if example.batch > 1:
        x = inputs.tensor  # (B, Nq, D)
        checks.append(
            Check(bool((x == x[:1]).all()), f"the batch is {example.batch} copies of the inputs (exactly)")
        )
        copies = (
            f"The batch holds {example.batch} copies of the six tokens, as the book's hands-on test stacks "
            "them; the steps below show batch 0 (the others' numbers are the same), the output all of them."
        )
    else:
        copies = ""
    first = lecture_walk_step(
        "inputs",
        inputs.tensor,
        inputs.formula,
        f"{inputs.sentence} {copies}".strip(),
        run,
        batches=example.batch,
        checks=checks,
    )
    steps = [replace(first, lecture=BOOK_INPUTS_CODE) if example.batch > 1 else first]
    if "kv_inputs" in run.trace.names():
        steps.append(traced_step("kv_inputs", run))
    steps.append(head_dim_step(run))
    steps += [weight_step(name, *projections[name], run) for name in ROLES]
    steps += [projection_step(role, run) for role in ROLES.values()]
    steps.append(unrolled_step(run))
    steps += [
        traced_step(name, run) for name in ("queries_by_head", "keys_by_head", "values_by_head", "scores")
    ]
    steps += [masked_step(run), scaled_step(run), traced_step("weights", run), dropout_step(run)]
    steps += [traced_step("context_by_head", run), traced_step("context", run)]
    steps.append(weight_step("out_proj", module.out_proj.weight, module.out_proj.bias, run))
    steps.append(output_step(run))
    return tuple(steps)


def playground_of(run: Run, name: str) -> Playground:
    """The run's inputs (batch 0) and weights in the lecture's layout, for the page to recompute."""
    module = run.module
    weights, biases = zip(*module.projections(), strict=True)  # W (d_out, d_in) each, b (d_out,) or None
    width = weights[0].shape[0]
    zeros = torch.zeros(width, dtype=torch.float64)
    out_bias = module.out_proj.bias
    return Playground(
        name,
        tuple(run.example.tokens),
        run.trace["inputs"].tensor[0].to(torch.float64),  # (N, d_in)
        *(w.detach().T.to(torch.float64) for w in weights),  # (d_in, d_out) each
        *(zeros if b is None else b.detach().to(torch.float64) for b in biases),  # (d_out,) each
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


def lecture_report(run: Run) -> Report:
    """The lectures' example (or the example the options describe): every traced step, and its weights."""
    example = run.example
    weights = run.trace["weights"].tensor  # (B, H, Nq, Nk)
    kind = "self-attention" if example.kv_tokens is None else "cross-attention"
    mask = "causal" if example.causal else "no mask"
    drawn = (
        "drawn as the book's code draws them after torch.manual_seed(123)"
        if example.book_weights
        else f"drawn with seed {example.seed}"
    )
    batch = f"a batch of {example.batch} copies, " if example.batch > 1 else ""
    return Report(
        title=f"Multi-head {kind}, step by step",
        description=(
            f"{len(example.tokens)} tokens, {batch}d_in = D = {example.dim}, d_out = {example.d_out}, "
            f"{example.heads} heads of width head_dim = Dh = {example.head_dim}, {mask}, weights {drawn}; "
            f"every number comes from headwise's reference backend in float64. {HEAD_COLUMNS}"
        ),
        steps=lecture_steps(run),
        attention=(HeadMaps(kind, example.tokens, example.key_tokens, weights[0][None].to(torch.float64)),),
        playgrounds=playgrounds_of(run),
    )
