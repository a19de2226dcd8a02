"""attention(q, k, v, ...): check the arguments, pick a backend, run it.

Shape legend: B batch, Nq / Nk query and key lengths, Hq / Hkv query and key/value heads (G = Hq / Hkv
query heads share one key/value head), Dh head width of queries and keys, Dv head width of values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import numbers
from collections.abc import Sequence

import torch

from . import ops
from .backends import BACKENDS, Choice, Request, choose
from .backends.dispatch import candidates
from .backends.reference import keep_nothing, log_sum_exp, masked_scores
from .backends.tuning import TUNER
from .checks import all_finite, fits_in_memory, one_thread, row_total
from .masks import Predicate, ScoreModifier, check_mask, split_causal, with_predicate
from .trace import tracing


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | Predicate | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
    return_lse: bool = False,
    score_mod: ScoreModifier | None = None,
    backend: str = "auto",
    kv_finite: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Scaled dot-product attention: softmax(q · kᵀ · scale + mask) · v, per head.

    Args:
        q: queries (B, Hq, Nq, Dh).
        k: keys (B, Hkv, Nk, Dh); Hq must be a multiple of Hkv (grouped-query attention: query head h
            uses key/value head h // (Hq / Hkv)).
        v: values (B, Hkv, Nk, Dv).
        mask: None; bool with True = may attend; or floating, added to the scaled scores (-inf = may not
            attend; cast to q's dtype). Broadcastable to (B, Hq, Nq, Nk). Or a `headwise.masks` predicate
            (causal, sliding_window, key_lengths, documents, prefix_lm, combined with & | ~): the chunked
            backend evaluates it block by block and skips blocks it rules out; others get it materialised.
        causal: each query sees only keys at or before its own position, aligned bottom-right when
            Nq != Nk (query i sees keys j <= i + Nk - Nq). Combines with `mask`.
        scale: multiplies the scores; defaults to 1 / sqrt(Dh).
        dropout_p: probability of zeroing an attention weight (kept ones are scaled by 1 / (1 - p)), using
            torch's random number generator. Pass 0.0 at evaluation time.
        return_weights: also return the weights that multiplied v (after dropout), (B, Hq, Nq, Nk).
        return_lse: also return lse (B, Hq, Nq) = log Σ exp(scaled, masked scores) over the keys (-inf for a
            query that sees none), in float32 or float64: with `attention_weights` it recomputes any slice
            of the weights exactly, and with `merge` it combines attention over separate key sets.
        score_mod: a `headwise.masks` score modifier (alibi(slopes) with one slope per query head,
            softcap(cap), or a chain a.then(b)) applied to the scaled scores before masking.
        backend: "auto" (the fastest backend that computes this function) or a name in
            `headwise.backends.BACKENDS`: "reference" (step by step, float64-capable, records traces) and
            the fast paths that the README's table lists; a backend asked for what its capabilities
            exclude raises a ValueError that says what.
        kv_finite: the caller knows that k and v hold no NaN or inf (headwise's KV cache knows it of its
            entries): their check is skipped, which matters when one query reads a long cache.

    Non-finite inputs follow one rule on every backend: a masked-out key never contributes, to values or
    gradients, and a query's row of out (weights, lse) is NaN exactly when the query itself holds a NaN
    or inf or it attends, with nonzero weight, to a key whose k or v does; gradients stay finite.
    Finite inputs whose scaled scores overflow the dtype (float32 q and k of 1e19 each, scale=1e308) are
    outside the rule and unchecked: those queries' rows may be NaN or not, by backend; other rows are exact.
    A CPU call whose output, gradients or (dense, reference) scores cannot fit in memory, or whose work
    passes MAX_CPU_FLOP, is refused before it starts (check_size).

    Returns:
        out (B, Hq, Nq, Dv), or a tuple (out, weights) / (out, lse) / (out, weights, lse) as asked. A query
        with nothing to attend to (every key masked) gets a row of zeros and zero gradients, never NaN.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    request, call = _prepare(
        q, k, v, mask, causal, scale, dropout_p, return_weights, return_lse, score_mod, kv_finite
    )
    if ops.covers(request, backend):  # torch.compile is tracing: one opaque op (headwise.ops)
        options = {
            name: call.keywords[name] for name in ("mask", "predicate", "scale", "dropout_p", "kv_finite")
        }
        return ops.attention(q, k, v, **options, backend=backend, training=request.requires_grad)
    choice = choose(backend, request, measure=lambda c: _measure(c, call, q, k, v, request.requires_grad))
    check_size(request, choice)
    out, weights, lse = call(choice, q, k, v)
    extras = [t for t, asked in ((weights, return_weights), (lse, return_lse)) if asked]
    return (out, *extras) if extras else out


def tune(q, k, v, **options) -> dict:
    """Measure now which backend and compute dtype "auto" should take for calls like
    `attention(q, k, v, **options)` on this machine (the inputs' requires_grad says whether a backward is
    timed too), keep the fastest for the call's key and write it to the dispatch cache
    (headwise.backends.tuning). -> {"choice": Choice, "ms": {candidate: median ms, or None when its first
    call was too slow to time further}, "cost_s": seconds the measurement took}."""
    request, call = _prepare(q, k, v, **{**_DEFAULTS, **options})
    return TUNER.tune(
        request, candidates(request), lambda c: _measure(c, call, q, k, v, request.requires_grad)
    )


# attention()'s options and their defaults, for tune(): derived, so that the two never drift apart.
_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(attention).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "backend"
}


def resolve(q, k, v, mask, causal, scale, dropout_p, backend, training, kv_finite):
    """For headwise.ops: the choice for a call that returns only out, differentiated when `training`
    (the same choice in the op's forward and its backward) -> (choice, call(choice, q, k, v))."""
    request, call = _prepare(q, k, v, mask, causal, scale, dropout_p, False, False, None, kv_finite)
    request = dataclasses.replace(request, requires_grad=training)
    choice = choose(backend, request, measure=lambda c: _measure(c, call, q, k, v, training))
    check_size(request, choice)
    return choice, call


MAX_CPU_FLOP = 10**17  # a CPU call's forward work at most: about a day at 1 TFLOP/s


def check_size(request: Request, choice: Choice) -> None:
    """Refuse, before any work, a CPU call that cannot finish (inputs may be stride-0 views of any size):
    its output (B, Hq, Nq, Dv), the gradients of q, k and v when a backward follows, and the scores
    (B, Hq, Nq, Nk) of a backend that holds them whole (one that returns weights: dense, reference) must
    fit in this machine's memory, and the forward's 2·B·Hq·Nq·Nk·(Dh + Dv) floating-point operations
    must stay under MAX_CPU_FLOP. A ValueError says which, with the sizes. Not checked while
    torch.compile traces through a call (its sizes may be symbolic, and Dynamo cannot trace the memory
    query); a compiled call that is headwise's op checks when the op runs."""
    if request.device.type != "cpu" or torch.compiler.is_compiling():
        return
    rows = request.batch * request.q_heads * request.num_queries  # B·Hq·Nq
    itemsize = choice.compute_dtype.itemsize
    shape = (request.batch, request.q_heads, request.num_queries, request.num_keys)  # (B, Hq, Nq, Nk)
    sizes = f"(B, Hq, Nq, Nk, Dh, Dv) = {(*shape, request.head_dim, request.value_dim)}"
    fits_in_memory(rows * request.value_dim * itemsize, f"the output of q, k and v {sizes}")
    if request.requires_grad:  # the gradients of q, k and v, as large as they are (their views expanded)
        keys = request.batch * request.kv_heads * request.num_keys * (request.head_dim + request.value_dim)
        fits_in_memory((rows * request.head_dim + keys) * itemsize, f"the gradients of q, k and v {sizes}")
    if BACKENDS[choice.backend].capabilities.weights:
        scores = f"backend {choice.backend!r}'s whole score matrix (B, Hq, Nq, Nk) for {sizes}"
        fits_in_memory(rows * request.num_keys * itemsize, scores)
    work = 2 * rows * request.num_keys * (request.head_dim + request.value_dim)
    if work > MAX_CPU_FLOP:
        raise ValueError(
            f"q, k and v {sizes} ask for {work:.2g} floating-point operations, more than a CPU call may "
            f"({MAX_CPU_FLOP:.0e}: about a day at 1 TFLOP/s); split the call or run it on a GPU"
        )


def _prepare(q, k, v, mask, causal, scale, dropout_p, return_weights, return_lse, score_mod, kv_finite):
    """Check a call's arguments -> (its Request, call(choice, q, k, v) -> (out, weights, lse))."""
    _check_inputs(q, k, v)
    batch, q_heads, num_queries, _ = q.shape
    target = (batch, q_heads, num_queries, k.shape[2])  # (B, Hq, Nq, Nk)
    mask, predicate = _check_masks(mask, causal, target, q)
    _check_score_mod(score_mod, target)
    scale = _check_scale(scale, q.shape[-1])
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be a number in [0, 1), got {dropout_p!r}")
    flags = {"return_weights": return_weights, "return_lse": return_lse, "kv_finite": kv_finite}
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__} {flag!r:.40}")
    request = Request(
        q.device,
        q.dtype,
        return_weights=bool(return_weights),
        tracing=tracing(),
        return_lse=bool(return_lse),
        batch=batch,
        q_heads=q_heads,
        kv_heads=k.shape[1],
        num_queries=num_queries,
        num_keys=k.shape[2],
        head_dim=q.shape[-1],
        value_dim=v.shape[-1],
        mask="none" if mask is None else ("bool" if mask.dtype == torch.bool else "float"),
        mask_requires_grad=mask is not None and mask.requires_grad,
        predicate=predicate,
        score_mod=score_mod,
        dropout_p=float(dropout_p),
        # torch.jit.trace checks its graph by tracing again without gradients: one choice for both.
        requires_grad=torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and any(t.requires_grad for t in (q, k, v)),
        deterministic=torch.are_deterministic_algorithms_enabled(),
        transforms=_transforms_active(),
    )
    call = functools.partial(
        _run,
        mask=mask,
        predicate=predicate,
        scale=scale,
        dropout_p=float(dropout_p),
        score_mod=score_mod,
        return_weights=bool(return_weights),
        return_lse=bool(return_lse),
        kv_finite=kv_finite,
    )
    return request, call


def _run(choice: Choice, q, k, v, *, kv_finite: bool, **options):
    """Run `choice` on q, k, v (validated), holding every backend to one rule for non-finite inputs (NaN
    or ±inf anywhere in q, k or v): a masked-out key never contributes, to values or gradients, and a
    query's row of out, weights and lse is NaN exactly when the query itself is non-finite or it attends
    with nonzero weight to a key whose k or v is, the weights being those of the inputs with their
    non-finite entries set to 0 (as `_run_careful` computes them). Gradients stay finite (a NaN row passes
    none back). Under torch.func's transforms (vmap, grad, jacrev), which allow no data-dependent branch,
    and while torch.jit.trace records (a branch would be frozen into the graph), every call takes the
    careful path (exact for finite inputs too), so the rule holds per sample under vmap and in a traced
    graph. Inside `headwise.trace()` the steps are recorded as the textbook computes them, NaN spreading as
    it does, and so are the calls torch.compile traces through (those returning weights or lse: see
    headwise.ops). -> (out, weights or None, lse or None).

    Otherwise the call runs as if its inputs were finite, and what it produced decides (`_follows_rule`):
    out's row sums (one pass over out, B·Hq·Nq·Dv) and a sum over k unless the caller knows k and v are
    finite (KVCache), q's rows only where out's row came out exactly 0. When those show a non-finite
    entry the careful path reruns the call (with the same dropout draws). Why nothing else is needed,
    without a score modifier (scores = scale·q·kᵀ + mask):

    - k finite, q_i finite: every score of query i is finite (or the mask's -inf), so a row that attends
      with nonzero weight, or even zero weight, to a non-finite v multiplies it (w·inf, 0·NaN) and comes
      out non-finite. A backend that skips a masked key never reads its v, forward or backward.
    - q_i non-finite: each of its unmasked scores is ±inf or NaN; a NaN or a +inf (the row's maximum, then
      exp(inf - inf)) makes the row NaN; all -inf, or every key masked, leaves it as a fully masked row:
      exactly 0. Hence the check of q's rows where out's row sums to 0.
    - k non-finite is why k is read: with k_jd = -inf and q_id > 0 the score is -inf, key j gets weight 0
      and out and lse are those of key j masked out, bit for bit the same as for a finite k_j whose weight
      underflows to 0 (-1e6 in place of -inf); the rule gives NaN to the first (the weight with k_jd set
      to 0 is nonzero) and not to the second, so no function of out and lse can tell them apart.

    A score modifier may map an infinite score to a finite one (softcap: cap·tanh(±inf / cap) = ±cap), so
    calls with one check q, k and v before running (one sum each)."""
    if tracing() or torch.compiler.is_compiling():  # compiled code traced through: no data-dependent branch
        return _run_finite(choice, q, k, v, **options)
    if _transforms_active() or torch.jit.is_tracing():
        return _run_careful(choice, q, k, v, **options)
    if options["score_mod"] is not None:
        finite = all_finite(*((q,) if kv_finite else (q, k, v)))
        return (_run_finite if finite else _run_careful)(choice, q, k, v, **options)
    dropout = options["dropout_p"] > 0.0
    rng_state = ops._rng_state(options["dropout_p"], q.device) if dropout else None
    result = _run_finite(choice, q, k, v, **options)
    if _follows_rule(result[0], q, None if kv_finite else k):
        return result
    if dropout:  # the careful run draws the weights' dropout as the finite run did
        ops._generator(q.device).set_state(rng_state)
    return _run_careful(choice, q, k, v, **options)


def _follows_rule(out: torch.Tensor, q: torch.Tensor, k: torch.Tensor | None) -> bool:
    """Whether a run as if finite, out (B, Hq, Nq, Dv) of q (B, Hq, Nq, Dh) and k (B, Hkv, Nk, Dh) (None:
    known finite), is what the non-finite rule gives (see `_run`): out and k finite, and q finite in the
    rows whose out sums to exactly 0. On one CPU thread (checks.one_thread: a busy machine delays every
    parallel region); one sync on CUDA (two when some row of out sums to 0)."""
    wide = torch.promote_types(out.dtype, torch.float32)
    with one_thread(out), torch.no_grad():
        rows = out.sum(-1)  # (B, Hq, Nq), in out's dtype (checks.row_total): NaN and ±inf survive a sum
        total = rows.sum(dtype=wide) if k is None else rows.sum(dtype=wide) + row_total(k)  # ()
        if bool(rows.all() & total.isfinite()):  # no row sums to 0 (NaN counts as nonzero)
            return True
    # A row of out that sums to 0: a fully masked row, or where a non-finite query would hide.
    return bool(total.isfinite()) and all_finite(q[rows == 0])  # q[rows == 0]: (rows, Dh)


def _transforms_active() -> bool:
    """Whether a torch.func transform (vmap, grad, jvp, jacrev, ...) is running this call."""
    return torch._C._are_functorch_transforms_active()


def _run_careful(choice: Choice, q, k, v, **options):
    """The non-finite rule without a data-dependent branch: non-finite entries zeroed (torch.where), each key
    flagged in an extra value column (1 where its k or v is non-finite), and the rows that see a flagged key
    with nonzero weight, or whose query is non-finite, set to NaN. -> (out, weights or None, lse or None)."""
    finite_q, finite_k, finite_v = (torch.isfinite(t) for t in (q, k, v))  # bool, shaped as q, k, v
    bad_query = ~finite_q.all(-1)  # (B, Hq, Nq)
    bad_key = ~(finite_k.all(-1) & finite_v.all(-1))  # (B, Hkv, Nk)
    q, k, v = (torch.where(f, t, 0.0) for f, t in ((finite_q, q), (finite_k, k), (finite_v, v)))
    marked = torch.cat([v, bad_key[..., None].to(v.dtype)], dim=-1)  # (B, Hkv, Nk, Dv + 1): a flag column
    out, weights, lse = _run_finite(choice, q, k, marked, **options)  # out (B, Hq, Nq, Dv + 1)
    sees_bad = bad_query | (out[..., -1] > 0)  # (B, Hq, Nq): Σ_j weight_ij · bad_j > 0
    out = out[..., :-1].masked_fill(sees_bad[..., None], float("nan"))  # (B, Hq, Nq, Dv)
    weights = None if weights is None else weights.masked_fill(sees_bad[..., None], float("nan"))
    lse = None if lse is None else lse.masked_fill(sees_bad, float("nan"))
    return out, weights, lse


def _run_finite(choice: Choice, q, k, v, *, mask, predicate, **options):
    """Run `choice` on q, k, v (validated, finite): the predicate materialised into the mask for a backend
    that does not take predicates; the inputs cast to the choice's compute dtype and out and weights cast
    back (lse stays in its float32/float64). -> (out, weights or None, lse or None)."""
    backend = BACKENDS[choice.backend]
    dtype, compute = q.dtype, choice.compute_dtype
    if predicate is not None and not backend.capabilities.predicates:
        target = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])  # (B, Hq, Nq, Nk)
        mask = with_predicate(mask, predicate, target, compute, q.device)  # (B|1, Hq|1, Nq, Nk)
        predicate = None
    if compute != dtype:
        q, k, v = (t.to(compute) for t in (q, k, v))  # a copy of each in the compute dtype
        mask = mask.to(compute) if mask is not None and mask.is_floating_point() else mask
    out, weights, lse = backend.run(q, k, v, mask=mask, predicate=predicate, **options)
    if compute != dtype:
        out = out.to(dtype)
        weights = None if weights is None else weights.to(dtype)
    return out, weights, lse


def _measure(choice: Choice, call, q, k, v, backward: bool) -> None:
    """One call of `choice` on random inputs shaped as q, k, v (and its backward when the call has one):
    what the tuner times."""
    devices = [q.device] if q.device.type == "cuda" else []
    # Its random inputs (and dropout) leave the caller's random stream where it was.
    with (
        torch.random.fork_rng(devices, device_type=q.device.type),
        torch.enable_grad() if backward else contextlib.nullcontext(),
    ):
        inputs = [torch.randn_like(t).requires_grad_(backward) for t in (q, k, v)]  # (B, H, N, D) each
        out, _, _ = call(choice, *inputs)
        if backward:
            out.backward(torch.ones_like(out))


def attention_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    lse: torch.Tensor | None = None,
    *,
    rows: slice | Sequence[int] | torch.Tensor | None = None,
    heads: slice | Sequence[int] | torch.Tensor | None = None,
    mask: torch.Tensor | Predicate | None = None,
    causal: bool = False,
    scale: float | None = None,
    score_mod: ScoreModifier | None = None,
) -> torch.Tensor:
    """The exact attention weights of any slice of queries and heads, from a fast run's lse.

    weights = exp(scaled, masked scores - lse): one (rows × Nk) block per head instead of the whole
    (Nq × Nk) matrix. Pass the q, k, mask, causal and scale of the run that produced lse (from
    `attention(..., return_lse=True)`); with lse=None it is computed from the same scores (a softmax over
    the selected rows). Dropout is not applied: these are the softmax probabilities.

    Args:
        q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), lse (B, Hq, Nq) or None.
        rows: the query positions to return (default all); heads: the query heads (default all).
    Returns:
        weights (B, len(heads), len(rows), Nk); a query that sees no key gets a row of zeros.
    """
    _check_inputs(q, k, k)
    batch, q_heads, num_queries, _ = q.shape
    if lse is not None and (
        not isinstance(lse, torch.Tensor) or tuple(lse.shape) != (batch, q_heads, num_queries)
    ):
        got = tuple(lse.shape) if isinstance(lse, torch.Tensor) else type(lse).__name__
        raise ValueError(f"lse must have shape (B, Hq, Nq) = {(batch, q_heads, num_queries)}, got {got}")
    if lse is not None and (lse.dtype not in (torch.float32, torch.float64) or lse.device != q.device):
        raise TypeError(
            f"lse has dtype {lse.dtype} on {lse.device}; expected float32 or float64 on {q.device}, as "
            "attention(..., return_lse=True) returns it"
        )
    target = (batch, q_heads, num_queries, k.shape[2])  # (B, Hq, Nq, Nk)
    mask, predicate = _check_masks(mask, causal, target, q)
    if predicate is not None:
        mask = with_predicate(mask, predicate, target, q.dtype, q.device)  # (B|1, Hq|1, Nq, Nk)
    _check_score_mod(score_mod, target)
    scale = _check_scale(scale, q.shape[-1])
    rows = _selection(rows, "rows", num_queries, "Nq", q.device)  # (R,)
    heads = _selection(heads, "heads", q_heads, "Hq", q.device)  # (H',)
    keys = k[:, heads // (q_heads // k.shape[1])]  # (B, H', Nk, Dh): each query head's key head
    queries = q[:, heads][:, :, rows]  # (B, H', R, Dh)
    piece = None if mask is None else mask.expand(target)[:, heads][:, :, rows]  # (B, H', R, Nk)
    scores = masked_scores(
        queries,
        keys,
        scale=scale,
        mask=piece,
        score_mod=score_mod,
        heads=heads,
        rows=rows,
        num_queries=num_queries,
        dtype=torch.promote_types(q.dtype, torch.float32) if lse is None else lse.dtype,
        recorder=keep_nothing,
    )  # (B, H', R, Nk)
    row_lse = log_sum_exp(scores) if lse is None else lse[:, heads][:, :, rows]  # (B, H', R)
    return torch.exp(scores - row_lse.masked_fill(row_lse == float("-inf"), 0.0)[..., None])


def _selection(chosen: object, name: str, size: int, axis: str, device) -> torch.Tensor:
    """The indices (n,) that `chosen` (None for all, a slice, a sequence of ints or an integer tensor)
    selects of range(size), or a TypeError / IndexError naming the argument. A sequence is checked in
    Python, a tensor by its values (while torch.compile traces: when the graph runs, not to break it)."""
    every = torch.arange(size, device=device)  # (size,)
    if chosen is None or isinstance(chosen, slice):  # as Python indexes: a negative step counts down
        picked = range(size) if chosen is None else range(size)[chosen]
        return torch.arange(picked.start, picked.stop, picked.step, device=device)  # (n,)
    integers = isinstance(chosen, Sequence) and all(_is_int(i) for i in chosen)
    tensor = isinstance(chosen, torch.Tensor) and chosen.dim() == 1
    if not (integers or (tensor and not chosen.dtype.is_floating_point and chosen.dtype != torch.bool)):
        raise TypeError(f"{name} must be None, a slice, or a sequence or 1-D tensor of ints, got {chosen!r}")
    if integers:
        if not all(-size <= i < size for i in chosen):
            raise IndexError(f"{name} must index range({size}) ({axis} = {size}), got {list(chosen)}")
        return every[torch.tensor(list(chosen), dtype=torch.int64, device=device)]
    in_range = ((chosen >= -size) & (chosen < size)).all()
    if torch.compiler.is_compiling():
        torch._assert_async(in_range, f"{name} must index range({size}) ({axis} = {size})")
    elif not bool(in_range):
        raise IndexError(f"{name} must index range({size}) ({axis} = {size}), got {chosen.tolist()}")
    return every[chosen.to(device)]


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_masks(mask: object, causal: object, target: tuple[int, int, int, int], q: torch.Tensor):
    """Check `mask` and `causal`, and normalise them once: -> (tensor mask or None, predicate or None).

    A float mask is cast to q's dtype; causal=True becomes the causal() predicate, combined (&) with a
    predicate mask. Backends that take predicates get it as is; the others get it materialised."""
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if isinstance(mask, Predicate):
        mask.check(*target)
    elif mask is not None:
        check_mask(mask, "mask", target, q.device)
        if mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))  # (B|1, Hq|1, Nq|1, Nk|1)
    return split_causal(mask, causal)


def _check_inputs(q: object, k: object, v: object) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.dtype.is_floating_point:
            raise TypeError(
                f"{name} has dtype {t.dtype}; attention needs a floating dtype (float32, bfloat16, ...)"
            )
        if t.dim() != 4:
            layout = "(B, Hq, Nq, Dh)" if name == "q" else f"(B, Hkv, Nk, {'Dh' if name == 'k' else 'Dv'})"
            raise ValueError(f"{name} must be 4-D {layout}, got shape {tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device} and {v.device}")
    if not (q.shape[0] == k.shape[0] == v.shape[0]):
        raise ValueError(
            f"q, k and v must have one batch size B, got {q.shape[0]}, {k.shape[0]} and {v.shape[0]}"
        )
    if k.shape[1] != v.shape[1]:
        raise ValueError(f"k and v must have the same number of heads Hkv, got {k.shape[1]} and {v.shape[1]}")
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v must have the same length Nk, got {k.shape[2]} and {v.shape[2]}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same head width Dh, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[1] == 0 or q.shape[1] == 0 or q.shape[1] % k.shape[1] != 0:
        raise ValueError(
            f"the query heads Hq = {q.shape[1]} must be a positive multiple of the key/value heads "
            f"Hkv = {k.shape[1]}"
        )


def _check_score_mod(score_mod: object, target: tuple[int, int, int, int]) -> None:
    if score_mod is None:
        return
    if not isinstance(score_mod, ScoreModifier):
        raise TypeError(
            "score_mod must be a headwise.masks score modifier (alibi, softcap) or None, "
            f"got {type(score_mod).__name__}"
        )
    score_mod.check(*target)


def _check_scale(scale: object, head_dim: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(head_dim) if head_dim > 0 else 1.0
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a number or None (for 1/sqrt(Dh)), got {type(scale).__name__}")
    if not torch.compiler.is_compiling() and not math.isfinite(scale):  # compiled: a float may be symbolic
        raise ValueError(f"scale must be finite, got {scale!r}")
    return float(scale)
