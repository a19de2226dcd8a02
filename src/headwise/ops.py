"""headwise's attention as one torch custom op, `torch.ops.headwise.attention`: what torch.compile traces.

torch.compile traces `headwise.attention` into a graph. Calls of the common kind (no returned weights or
lse, no score modifier, no mask that needs a gradient, no dropout on the CPU for the TRACED_WITH_DROPOUT
backends) become this one opaque, differentiable op, so the graph holds no backend internals (no
per-block loops, no Triton launch, no dispatch): the backend is chosen when the op runs, by the same rule
as an eager call (the measured choice when there is one, else the static table). TorchScript calls the op
too, dropout included.

    headwise::attention(q, k, v, mask, causal, scale, dropout_p, backend, training, kv_finite=False)
        -> (out, rng_state)
    headwise::attention_backward(d_out, q, k, v, mask, causal, scale, dropout_p, backend, training,
        kv_finite, rng_state) -> (dq, dk, dv)

    headwise::predicate_attention(q, k, v, predicate, predicate_tensors, scale, dropout_p, backend,
        training, kv_finite) -> (out, rng_state), and its headwise::predicate_attention_backward

q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv), mask None or a tensor mask as for
`headwise.attention`, out (B, Hq, Nq, Dv). A mask predicate other than causal() alone travels as data to
predicate_attention (`headwise.masks.spec`: its tree and int parameters in the string `predicate`, its
tensors, such as document ids, in `predicate_tensors`), so that the backend the op picks still sees the
structure and skips what it rules out; a predicate with no spec (a user's own class), or one beside a
tensor mask, is materialised into the mask of headwise::attention, whose schema TorchScript callers and
saved scripts rely on (headwise.compat). `training` says whether the call will be differentiated, so that
the forward and the backward pick the same backend. The forward draws its dropout masks from torch's
generator as an eager call does (the same masks from the same seed, and the generator left where an eager
call leaves it: a scripted model in training equals the eager one); `rng_state` (uint8 on the CPU, empty
without dropout) is the generator's state before the draws, from which the backward redraws the same
masks. The backward recomputes the forward of the same backend and differentiates it (one more forward per
backward than an eager call: the price of keeping every backend's own autograd behind one op).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .arguments import describe
from .masks import Causal, with_predicate
from .masks.spec import decode, encode
from .running import generator, pick, replaying, rng_state, run
from .trace import untraced

if TYPE_CHECKING:
    from .backends import Choice, Request
    from .masks import Predicate

# On the CPU, a call with dropout to these is traced through instead: the op's backward would draw every
# mask again (bernoulli_ was 31% of a compiled LanguageModel step, 1740 vs 1378 ms traced through:
# benchmarks/compile.py). The others keep the op (chunked draws from generators dynamo cannot trace).
TRACED_WITH_DROPOUT = frozenset({"auto", "sdpa", "dense"})


def covers(request: Request, backend: str) -> bool:
    """Whether an `attention` call becomes the custom op: while torch.compile traces, for calls that
    return only `out`, with no score modifier and no mask gradient, and without dropout unless `backend`
    on the CPU is one that is traced through with it (TRACED_WITH_DROPOUT)."""
    dropout_traced = request.device.type == "cpu" and backend in TRACED_WITH_DROPOUT
    return (
        torch.compiler.is_compiling()
        and not request.return_weights
        and not request.return_lse
        and request.score_mod is None
        and not request.mask_requires_grad
        and (request.dropout_p == 0.0 or not dropout_traced)
    )


def call_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None,
    predicate: Predicate | None,
    scale: float,
    dropout_p: float,
    kv_finite: bool,
    backend: str,
    training: bool,
) -> Tensor:
    """The custom op's call for a checked `headwise.attention` call: a predicate with a spec (and no tensor
    mask beside it) goes to headwise::predicate_attention as data; causal() alone, or any other predicate
    materialised into the tensor mask, to headwise::attention. -> out (B, Hq, Nq, Dv)."""
    options = (scale, dropout_p, backend, training, kv_finite)
    spec = None if predicate is None or mask is not None else encode(predicate)
    if spec is not None and type(predicate) is not Causal:
        return predicate_attention_op(q, k, v, *spec, *options)[0]
    causal = isinstance(predicate, Causal)
    if predicate is not None and not causal:
        target = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])  # (B, Hq, Nq, Nk)
        mask = with_predicate(mask, predicate, target, q.dtype, q.device)  # (B|1, Hq|1, Nq, Nk)
    return attention_op(q, k, v, mask, causal, *options)[0]


def _resolve(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | Predicate | None,
    causal: bool,
    scale: float,
    dropout_p: float,
    backend: str,
    training: bool,
    kv_finite: bool,
    return_weights: bool = False,
) -> tuple[Choice, dict[str, Any]]:
    """The op's call described (arguments.describe: its arguments were checked when it was traced, or
    come from a module's own weights under TorchScript) and its choice picked, differentiated when
    `training` (the same choice in the forward and its backward) -> (choice, options for running.run).
    return_weights: for headwise::attention_with_weights (script_ops)."""
    request, options = describe(
        q, k, v, mask, causal, scale, dropout_p, return_weights, False, None, kv_finite
    )
    request = dataclasses.replace(request, requires_grad=training)
    return pick(backend, request, q, k, v, options), options


def _forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | Predicate | None,
    causal: bool,
    scale: float,
    dropout_p: float,
    backend: str,
    training: bool,
    kv_finite: bool,
) -> tuple[Tensor, Tensor]:
    """Both ops' forward. mask: a tensor mask, a predicate or None. -> (out (B, Hq, Nq, Dv), rng_state):
    the chosen backend's forward, its dropout drawn as an eager call draws it, and the generator's state
    before the draws (for the backward)."""
    with _autograd_available(), untraced():
        # Chosen before the state is taken: a first call may measure (leaving the generator as it was).
        choice, options = _resolve(q, k, v, mask, causal, scale, dropout_p, backend, training, kv_finite)
        state = rng_state(dropout_p, q.device)
        with torch.no_grad():
            out, _, _ = run(choice, q, k, v, **options)  # (B, Hq, Nq, Dv)
    return out.contiguous(), state  # the layout the fake promises


def _backward(
    d_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | Predicate | None,
    causal: bool,
    scale: float,
    dropout_p: float,
    backend: str,
    training: bool,
    kv_finite: bool,
    state: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Both ops' backward: the same backend's forward recomputed (the same dropout masks, redrawn from
    `state`, the generator's before the forward's draws) and differentiated. -> (dq, dk, dv), shaped as
    q, k, v."""
    with _autograd_available(), untraced():
        choice, options = _resolve(q, k, v, mask, causal, scale, dropout_p, backend, training, kv_finite)
        with replaying(state, dropout_p, q.device), torch.enable_grad():
            inputs = [t.detach().requires_grad_() for t in (q, k, v)]
            out, _, _ = run(choice, *inputs, **options)  # (B, Hq, Nq, Dv)
            grads = torch.autograd.grad(out, inputs, d_out)  # dq, dk, dv
    dq, dk, dv = (g.contiguous() for g in grads)  # the layout the fake promises
    return dq, dk, dv


def _fake_forward(q: Tensor, v: Tensor, dropout_p: float) -> tuple[Tensor, Tensor]:
    """The ops' outputs as shapes: out (B, Hq, Nq, Dv) and the generator's state (empty without dropout)."""
    out = q.new_empty((*q.shape[:-1], v.shape[-1]))  # (B, Hq, Nq, Dv)
    size = generator(q.device).get_state().numel() if dropout_p > 0.0 else 0
    return out, torch.empty(size, dtype=torch.uint8)


# headwise::attention: a tensor mask (or none) and the causal flag ----------------------------------------


@torch.library.custom_op("headwise::attention", mutates_args=())
def attention_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    causal: bool,
    scale: float,
    dropout_p: float,
    backend: str,
    training: bool,
    kv_finite: bool = False,
) -> tuple[Tensor, Tensor]:
    """-> (out (B, Hq, Nq, Dv), rng_state): see _forward."""
    return _forward(q, k, v, mask, causal, scale, dropout_p, backend, training, kv_finite)


@attention_op.register_fake
def _(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    causal: bool,
    scale: float,
    dropout_p: float,
    backend: str,
    training: bool,
    kv_finite: bool = False,
) -> tuple[Tensor, Tensor]:
    return _fake_forward(q, v, dropout_p)


@torch.library.custom_op("headwise::attention_backward", mutates_args=())
def attention_backward_op(
    d_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    causal: bool,
    scale: float,
    dropout_p: float,
    backend: str,
    training: bool,
    kv_finite: bool,
    rng_state: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """-> (dq, dk, dv), shaped as q, k, v."""
    return _backward(d_out, q, k, v, mask, causal, scale, dropout_p, backend, training, kv_finite, rng_state)


@attention_backward_op.register_fake
def _(d_out: Tensor, q: Tensor, k: Tensor, v: Tensor, *options: object) -> tuple[Tensor, ...]:
    return tuple(t.new_empty(t.shape) for t in (q, k, v))


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    q, k, v, mask, causal, scale, dropout_p, backend, training, kv_finite = inputs
    ctx.save_for_backward(q, k, v, mask, output[1])  # output[1]: the generator's state
    ctx.options = (causal, scale, dropout_p, backend, training, kv_finite)


def _backward_of_attention(ctx: Any, d_out: Tensor, _d_rng_state: Tensor | None) -> tuple[Tensor | None, ...]:
    q, k, v, mask, rng_state = ctx.saved_tensors
    dq, dk, dv = attention_backward_op(d_out, q, k, v, mask, *ctx.options, rng_state)
    return dq, dk, dv, *(None,) * 7


attention_op.register_autograd(_backward_of_attention, setup_context=_setup_context)


# headwise::predicate_attention: a mask predicate as data (headwise.masks.spec) ---------------------------


@torch.library.custom_op("headwise::predicate_attention", mutates_args=())
def predicate_attention_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    predicate: str,
    predicate_tensors: list[Tensor],
    scale: float,
    dropout_p: float,
    backend: str,
    training: bool,
    kv_finite: bool,
) -> tuple[Tensor, Tensor]:
    """-> (out (B, Hq, Nq, Dv), rng_state), the predicate rebuilt from its spec: see _forward."""
    rule = decode(predicate, list(predicate_tensors))
    return _forward(q, k, v, rule, False, scale, dropout_p, backend, training, kv_finite)


@predicate_attention_op.register_fake
def _(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    predicate: str,
    predicate_tensors: list[Tensor],
    scale: float,
    dropout_p: float,
    *options: object,
) -> tuple[Tensor, Tensor]:
    return _fake_forward(q, v, dropout_p)


@torch.library.custom_op("headwise::predicate_attention_backward", mutates_args=())
def predicate_attention_backward_op(
    d_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    predicate: str,
    predicate_tensors: list[Tensor],
    scale: float,
    dropout_p: float,
    backend: str,
    training: bool,
    kv_finite: bool,
    rng_state: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """-> (dq, dk, dv), shaped as q, k, v."""
    rule = decode(predicate, list(predicate_tensors))
    return _backward(d_out, q, k, v, rule, False, scale, dropout_p, backend, training, kv_finite, rng_state)


@predicate_attention_backward_op.register_fake
def _(d_out: Tensor, q: Tensor, k: Tensor, v: Tensor, *options: object) -> tuple[Tensor, ...]:
    return tuple(t.new_empty(t.shape) for t in (q, k, v))


def _setup_predicate_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    q, k, v, predicate, tensors, *options = inputs
    ctx.save_for_backward(q, k, v, output[1], *tensors)
    ctx.predicate, ctx.options = predicate, options


def _backward_of_predicate_attention(
    ctx: Any, d_out: Tensor, _d_rng_state: Tensor | None
) -> tuple[Tensor | list[None] | None, ...]:
    q, k, v, rng_state, *tensors = ctx.saved_tensors
    options = (ctx.predicate, tensors, *ctx.options, rng_state)
    dq, dk, dv = predicate_attention_backward_op(d_out, q, k, v, *options)
    return dq, dk, dv, None, [None] * len(tensors), *(None,) * 5


predicate_attention_op.register_autograd(
    _backward_of_predicate_attention, setup_context=_setup_predicate_context
)


def _autograd_available() -> torch._C._ForceDispatchKeyGuard:
    """A custom op's implementation runs below autograd (its dispatch keys excluded): the backends'
    own autograd (and the tuner's timed backward) need it back inside."""
    excluded = torch._C._dispatch_tls_local_exclude_set()
    autograd = torch._C.DispatchKeySet(torch._C.DispatchKey.AutogradFunctionality)
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), excluded - autograd)
