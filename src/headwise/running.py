"""Running a chosen backend on a checked call: the non-finite rule, the compute dtype, the size check, the
tuner's measurement, and the generator state that dropout draws from.

The route of a call (headwise.attention, and headwise.ops when torch.compile or TorchScript calls the
custom op): arguments.check -> arguments.describe (Request, options) -> backends.choose (the backend and
its compute dtype) -> check_size -> run (the non-finite rule around run_finite, which casts to the compute
dtype, materialises a predicate for a backend that takes none, and calls the backend).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .backends import BACKENDS, Choice, Request, choose
from .checks import all_finite, check_threads, fits_in_memory, row_total
from .masks import with_predicate
from .trace import tracing

if TYPE_CHECKING:
    from .masks import Predicate

Result = tuple[Tensor, Tensor | None, Tensor | None]  # out, weights or None, lse or None


def run(choice: Choice, q: Tensor, k: Tensor, v: Tensor, *, kv_finite: bool, **options: Any) -> Result:
    """Run `choice` on q, k, v (validated), holding every backend to one rule for non-finite inputs (NaN
    or ±inf anywhere in q, k or v): a masked-out key never contributes, to values or gradients, and a
    query's row of out, weights and lse is NaN exactly when the query itself is non-finite or it attends
    with nonzero weight to a key whose k or v is, the weights being those of the inputs with their
    non-finite entries set to 0 (as `run_careful` computes them). Gradients stay finite (a NaN row passes
    none back). Under torch.func's transforms (vmap, grad, jacrev), which allow no data-dependent branch,
    and while torch.jit.trace records (a branch would be frozen into the graph), every call takes the
    careful path (exact for finite inputs too), so the rule holds per sample under vmap and in a traced
    graph. Inside `headwise.trace()` the steps are recorded as the textbook computes them, NaN spreading as
    it does, and so are the calls torch.compile traces through (those returning weights or lse: see
    headwise.ops). -> (out, weights or None, lse or None).

    Otherwise the call runs as if its inputs were finite, and what it produced decides (`follows_rule`):
    out's row sums (one pass over out, B·Hq·Nq·Dv), or its total and the kernel's lse where the backend's
    kernel made one (SDPA's CPU flash kernel), and a sum over k unless the caller knows k and v are
    finite (KVCache); q's rows only where out's row came out exactly 0 (or lse 0 or not finite). When
    those show a non-finite entry the careful path reruns the call (with the same dropout draws). Why
    nothing else is needed, without a score modifier (scores = scale·q·kᵀ + mask):

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
        return run_finite(choice, q, k, v, **options)
    if transforms_active() or torch.jit.is_tracing():
        return run_careful(choice, q, k, v, **options)
    if options["score_mod"] is not None:
        finite = all_finite(*((q,) if kv_finite else (q, k, v)))
        return (run_finite if finite else run_careful)(choice, q, k, v, **options)
    dropout = options["dropout_p"] > 0.0
    state = rng_state(options["dropout_p"], q.device) if dropout else None
    out, weights, lse = run_finite(choice, q, k, v, **options)
    # An lse not asked for is a kernel's own (the sdpa backend's CPU flash kernel), whose values for
    # non-finite inputs the tests pin; one asked for may be any backend's.
    own_lse = None if options["return_lse"] else lse  # (B, Hq, Nq) or None
    if follows_rule(out, q, None if kv_finite else k, own_lse):
        return out, weights, None if own_lse is not None else lse
    if state is not None:  # dropout: the careful run draws the weights' dropout as the finite run did
        generator(q.device).set_state(state)
    return run_careful(choice, q, k, v, **options)


def follows_rule(
    out: torch.Tensor, q: torch.Tensor, k: torch.Tensor | None, lse: torch.Tensor | None = None
) -> bool:
    """Whether a run as if finite, out (B, Hq, Nq, Dv) of q (B, Hq, Nq, Dh) and k (B, Hkv, Nk, Dh) (None:
    k and v known finite), is what the non-finite rule gives (see `run`): out and k finite, and q finite
    in the rows where a non-finite query could hide. Those rows are read off one row value per query:
    - lse (B, Hq, Nq), the kernel's own where it made one (the sdpa backend's CPU flash kernel): a
      non-finite query makes every score of its row ±inf or NaN, so its lse is inf or NaN, or, where
      every score is -inf (or the row fully masked), the kernel's value for an empty row (0; -inf
      elsewhere). Then out is read by one sum, and only when some row is to be looked at if k and v
      are known finite (out is then a weighted mean of v's finite rows wherever lse is finite).
    - otherwise out's row sums (one pass over out, in its dtype): finite exactly when out is, and 0
      in such a row, whose out is then all zeros.
    So the rows to look at are those whose value is non-finite or 0. A value r is finite and nonzero
    exactly when r + 1/r is (1/r overflows only for |r| < 2^-126 in float32, or a total for sums past
    3e38: those take the exact test below), so one total decides the common case, with one sync on CUDA
    (more when a row is to be looked at). The passes run on all CPU threads or on one
    (checks.check_threads: whichever has been faster, one on a busy machine)."""
    out = out.detach()  # the sums record nothing for autograd (cheaper than torch.no_grad's context)
    with check_threads(out) if k is None else check_threads(out, k):
        keys = 0.0 if k is None else row_total(k.detach())  # () tensor: NaN or ±inf if k holds one
        outs = None  # out's total, () tensor, where read
        if lse is None:
            rows = out.sum(-1)  # (B, Hq, Nq), in out's dtype (checks.row_total): NaN and ±inf survive a sum
            rows = rows if rows.dtype in (torch.float32, torch.float64) else rows.float()  # (B, Hq, Nq)
        else:
            rows = lse.detach()  # (B, Hq, Nq), float32 or float64
            outs = None if k is None else row_total(out)
        total = rows.reciprocal().add_(rows).sum() + keys  # () tensor
        if math.isfinite((total if outs is None else total + outs).item()):  # the one sync
            return True
        outs = (rows.sum() if lse is None else row_total(out)) if outs is None else outs
        finite = math.isfinite((outs + keys).item())
    # A non-finite or zero row value: a fully masked row, or where a non-finite query would hide.
    return finite and all_finite(q[~torch.isfinite(rows) | (rows == 0)])  # (rows, Dh)


def transforms_active() -> bool:
    """Whether a torch.func transform (vmap, grad, jvp, jacrev, ...) is running this call."""
    return torch._C._are_functorch_transforms_active()


def run_careful(choice: Choice, q: Tensor, k: Tensor, v: Tensor, **options: Any) -> Result:
    """The non-finite rule without a data-dependent branch: non-finite entries zeroed (torch.where), each key
    flagged in an extra value column (1 where its k or v is non-finite), and the rows that see a flagged key
    with nonzero weight, or whose query is non-finite, set to NaN. -> (out, weights or None, lse or None)."""
    finite_q, finite_k, finite_v = (torch.isfinite(t) for t in (q, k, v))  # bool, shaped as q, k, v
    bad_query = ~finite_q.all(-1)  # (B, Hq, Nq)
    bad_key = ~(finite_k.all(-1) & finite_v.all(-1))  # (B, Hkv, Nk)
    q, k, v = (torch.where(f, t, 0.0) for f, t in ((finite_q, q), (finite_k, k), (finite_v, v)))
    marked = torch.cat([v, bad_key[..., None].to(v.dtype)], dim=-1)  # (B, Hkv, Nk, Dv + 1): a flag column
    out, weights, lse = run_finite(choice, q, k, marked, **options)  # out (B, Hq, Nq, Dv + 1)
    sees_bad = bad_query | (out[..., -1] > 0)  # (B, Hq, Nq): Σ_j weight_ij · bad_j > 0
    out = out[..., :-1].masked_fill(sees_bad[..., None], float("nan"))  # (B, Hq, Nq, Dv)
    weights = None if weights is None else weights.masked_fill(sees_bad[..., None], float("nan"))
    lse = None if lse is None else lse.masked_fill(sees_bad, float("nan"))
    return out, weights, lse


def run_finite(
    choice: Choice,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None,
    predicate: Predicate | None,
    **options: Any,
) -> Result:
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


def pick(backend: str, request: Request, q: Tensor, k: Tensor, v: Tensor, options: dict[str, Any]) -> Choice:
    """The choice for `request` (backends.choose: by name, measured, or the static table; a first call
    may measure on random inputs shaped as q, k, v), refused before any work if it cannot finish."""
    choice = choose(backend, request, measure=measurer(options, q, k, v, request.requires_grad))
    check_size(request, choice)
    return choice


def measurer(
    options: dict[str, Any], q: Tensor, k: Tensor, v: Tensor, backward: bool
) -> Callable[[Choice], None]:
    """What the tuner times: measure(choice) runs `choice` with `options` (arguments.describe's) on random
    inputs shaped as q, k, v, and its backward when the call has one, leaving the caller's random stream
    where it was. The inputs are drawn once, on the first call, and not timed after: drawing them took as
    long as the call (3 randn_like at B=4, H=8, N=512, Dh=64: ~30 ms on one thread; SDPA's fp16
    forward: ~22 ms), which hid the candidates' differences under the same added time."""
    devices = [q.device] if q.device.type == "cuda" else []
    drawn: list[Tensor] = []

    def measure(choice: Choice) -> None:
        with (
            torch.random.fork_rng(devices, device_type=q.device.type),
            torch.enable_grad() if backward else contextlib.nullcontext(),
        ):
            if not drawn:
                drawn.extend(torch.randn_like(t) for t in (q, k, v))  # (B, H, N, D) each
            inputs = [t.detach().requires_grad_(backward) for t in drawn]  # fresh leaves: no grads pile up
            out, _, _ = run(choice, *inputs, **options)
            if backward:
                out.backward(torch.ones_like(out))

    return measure


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


def generator(device: torch.device) -> torch.Generator:
    """The default generator of `device`: the one dropout draws from."""
    if device.type == "cpu":
        return torch.default_generator
    index = torch.cuda.current_device() if device.index is None else device.index
    return torch.cuda.default_generators[index]


def rng_state(dropout_p: float, device: torch.device) -> Tensor:
    """The state of `device`'s generator now (uint8), or an empty tensor when there is no dropout."""
    if dropout_p == 0.0:
        return torch.empty(0, dtype=torch.uint8)
    return generator(device).get_state()


@contextlib.contextmanager
def replaying(state: Tensor, dropout_p: float, device: torch.device) -> Iterator[None]:
    """The generator of `device` set to `state` inside (the forward's draws replayed) and restored after,
    no other; nothing when there is no dropout."""
    if dropout_p == 0.0:
        yield
        return
    drawing = generator(device)
    before = drawing.get_state()
    drawing.set_state(state)
    try:
        yield
    finally:
        drawing.set_state(before)
