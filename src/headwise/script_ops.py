"""headwise::attention_with_weights: the custom op that TorchScript calls when the weights are asked for.

TorchScript cannot call Python, so a scripted module reaches headwise's route through custom ops only:
headwise::attention (headwise.ops) for the output alone, and this op for the output with the weights, so
that a scripted compat.MultiheadAttention computes need_weights=True by the same route as an eager call
(arguments.describe -> running.pick -> running.run, with return_weights: the dense backend under auto)
instead of scoring on its own.

    headwise::attention_with_weights(q, k, v, mask, scale, dropout_p, training)
        -> (out (B, Hq, Nq, Dv), weights (B, Hq, Nq, Nk), rng_state)

mask None or a float mask broadcastable to (B, Hq, Nq, Nk), added to the scores. The weights are those
that multiplied v (after dropout). As headwise::attention, the forward draws its dropout from torch's
generator as an eager call does and returns the generator's state before the draws; the backward
recomputes the forward from it and differentiates out and weights together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .ops import _autograd_available, _fake_forward, _resolve
from .running import replaying, rng_state, run
from .trace import untraced

if TYPE_CHECKING:
    from .backends import Choice


def _run(choice: Choice, q: Tensor, k: Tensor, v: Tensor, options: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """running.run with the weights asked for -> out (B, Hq, Nq, Dv), weights (B, Hq, Nq, Nk)."""
    out, weights, _ = run(choice, q, k, v, **options)
    if weights is None:
        raise RuntimeError(f"backend {choice.backend!r} returned no weights, though asked for them")
    return out, weights


@torch.library.custom_op("headwise::attention_with_weights", mutates_args=())
def attention_with_weights_op(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, dropout_p: float, training: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """-> (out (B, Hq, Nq, Dv), weights (B, Hq, Nq, Nk), rng_state): see the module's docstring."""
    with _autograd_available(), untraced():
        choice, options = _resolve(q, k, v, mask, False, scale, dropout_p, "auto", training, False, True)
        state = rng_state(dropout_p, q.device)
        with torch.no_grad():
            out, weights = _run(choice, q, k, v, options)  # (B, Hq, Nq, Dv), (B, Hq, Nq, Nk)
    return out.contiguous(), weights.contiguous(), state


@attention_with_weights_op.register_fake
def _(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, dropout_p: float, training: bool
) -> tuple[Tensor, Tensor, Tensor]:
    out, state = _fake_forward(q, v, dropout_p)  # (B, Hq, Nq, Dv), the generator's state
    return out, q.new_empty((*q.shape[:-1], k.shape[2])), state  # weights (B, Hq, Nq, Nk)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor, Tensor]) -> None:
    q, k, v, mask, scale, dropout_p, training = inputs
    ctx.save_for_backward(q, k, v, mask, output[2])  # output[2]: the generator's state
    ctx.options = (scale, dropout_p, training)


def _backward(
    ctx: Any, d_out: Tensor, d_weights: Tensor, _d_rng_state: Tensor | None
) -> tuple[Tensor | None, ...]:
    """The forward recomputed (its dropout redrawn from the saved state) and differentiated."""
    q, k, v, mask, state = ctx.saved_tensors
    scale, dropout_p, training = ctx.options
    with _autograd_available(), untraced():
        choice, options = _resolve(q, k, v, mask, False, scale, dropout_p, "auto", training, False, True)
        with replaying(state, dropout_p, q.device), torch.enable_grad():
            inputs = [t.detach().requires_grad_() for t in (q, k, v)]
            out, weights = _run(choice, inputs[0], inputs[1], inputs[2], options)  # (B, Hq, Nq, Dv), (.., Nk)
            dq, dk, dv = torch.autograd.grad((out, weights), inputs, (d_out, d_weights))
    return dq, dk, dv, None, None, None, None


attention_with_weights_op.register_autograd(_backward, setup_context=_setup_context)
