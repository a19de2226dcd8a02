"""The lectures' example as a Report (headwise.pages.model): every step of a traced run as a WalkStep of
labelled matrices (steps.py), in the lectures' order and names (lecture.py), with the checks its numbers
bear out (answers.py), and the run's attention weights. Nothing here needs rich or matplotlib.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..pages.model import Check, HeadMaps, Matrix, Report, WalkStep
from ..trace import STEP_TEXT
from .answers import TOLERANCE, checks_after, matches
from .example import BOOK_CONTEXT_VECS, DROPOUT_SHOWN, Run, dropout_trace
from .lecture import (
    AXES,
    BOOK_INPUTS_CODE,
    HEAD_COLUMNS,
    LECTURE_CODE,
    LECTURE_NAMES,
    LETTERS,
    ROLES,
)
from .playground import playgrounds_of
from .steps import axis_labels, lecture_walk_step, stage, step_axes, traced_step


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
