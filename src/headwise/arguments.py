"""A call's arguments: checked once, on entry, and described as the Request the dispatcher reads.

`check` refuses bad arguments with an error that names the argument, what it got and what was expected;
`describe` turns checked ones into (Request, Options): the facts a backend's capabilities are matched
against, and the keyword arguments every run takes (running.run). causal=True becomes the causal()
predicate here, and stays one until a backend that wants a flag (SDPA's is_causal) or the custom op's
schema (headwise::attention's `causal: bool`) takes it.

Shape legend: B batch, Nq / Nk query and key lengths, Hq / Hkv query and key/value heads, Dh / Dv head
widths.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from .backends import Request
from .masks import Predicate, ScoreModifier, check_mask, split_causal
from .trace import tracing


def check(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | Predicate | None,
    causal: bool,
    scale: float | None,
    dropout_p: float,
    return_weights: bool,
    return_lse: bool,
    score_mod: ScoreModifier | None,
    kv_finite: bool,
) -> float:
    """Check a call's arguments (headwise.attention's) -> the scale to use (1 / sqrt(Dh) for None)."""
    check_inputs(q, k, v)
    target = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])  # (B, Hq, Nq, Nk)
    check_masks(mask, causal, target, q)
    check_score_mod(score_mod, target)
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be a number in [0, 1), got {dropout_p!r}")
    flags = {"return_weights": return_weights, "return_lse": return_lse, "kv_finite": kv_finite}
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__} {flag!r:.40}")
    return check_scale(scale, q.shape[-1])


def describe(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | Predicate | None,
    causal: bool,
    scale: float,
    dropout_p: float,
    return_weights: bool,
    return_lse: bool,
    score_mod: ScoreModifier | None,
    kv_finite: bool,
) -> tuple[Request, dict[str, Any]]:
    """Checked arguments -> (Request, options for running.run: mask, predicate, scale, dropout_p,
    score_mod, return_weights, return_lse, kv_finite). mask: a tensor mask, a Predicate or None."""
    mask, predicate = normalise_masks(mask, causal, q)
    batch, q_heads, num_queries, _ = q.shape
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
        transforms=torch._C._are_functorch_transforms_active(),
    )
    options = {
        "mask": mask,
        "predicate": predicate,
        "scale": scale,
        "dropout_p": float(dropout_p),
        "score_mod": score_mod,
        "return_weights": bool(return_weights),
        "return_lse": bool(return_lse),
        "kv_finite": kv_finite,
    }
    return request, options


def check_masks(mask: object, causal: object, target: tuple[int, int, int, int], q: torch.Tensor) -> None:
    """Check `mask` (a tensor mask, a Predicate or None) and `causal` against target (B, Hq, Nq, Nk)."""
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if isinstance(mask, Predicate):
        mask.check(*target)
    elif mask is not None:
        check_mask(mask, "mask", target, q.device)


def normalise_masks(
    mask: torch.Tensor | Predicate | None, causal: bool, q: torch.Tensor
) -> tuple[torch.Tensor | None, Predicate | None]:
    """A checked `mask` and `causal`, in the one form every later step takes: -> (tensor mask or None,
    predicate or None). A float mask is cast to q's dtype and any tensor mask viewed as 4-D; causal=True
    becomes the causal() predicate, combined (&) with a predicate mask. Backends that take predicates get
    it as is; the others get it materialised (running.run_finite)."""
    if isinstance(mask, torch.Tensor):
        if mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))  # (B|1, Hq|1, Nq|1, Nk|1)
    return split_causal(mask, causal)


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """A TypeError or ValueError unless q, k and v are 4-D floating tensors of one attention call."""
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


def check_score_mod(score_mod: object, target: tuple[int, int, int, int]) -> None:
    if score_mod is None:
        return
    if not isinstance(score_mod, ScoreModifier):
        raise TypeError(
            "score_mod must be a headwise.masks score modifier (alibi, softcap) or None, "
            f"got {type(score_mod).__name__}"
        )
    score_mod.check(*target)


def check_scale(scale: object, head_dim: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(head_dim) if head_dim > 0 else 1.0
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a number or None (for 1/sqrt(Dh)), got {type(scale).__name__}")
    if not torch.compiler.is_compiling() and not math.isfinite(scale):  # compiled: a float may be symbolic
        raise ValueError(f"scale must be finite, got {scale!r}")
    return float(scale)
