"""What a call asks of a backend (Request), what a backend can do and where auto ranks it (Capabilities,
Rank), and what auto picks (Choice), all as data.

The dispatcher and the oracle grid read a backend's Capabilities: `unsupported(request)` names the first
thing asked for that the backend cannot do, so `backend="x"` refuses with that reason, "auto" passes
over the backend, and the grid skips the case with the reason in the skip. Its `rank` places it in auto's
static order (tuning.static_choices), as Liger-Kernel's `register_op(..., preference_rank=)` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..masks import Chain, Predicate, ScoreModifier

FLOATING = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
DEVICES = frozenset({"cpu", "cuda"})


@dataclass(frozen=True)
class Request:
    """Every fact about a call that a backend may need, besides the tensors' values.

    Sizes: B batch, Hq / Hkv heads, Nq / Nk lengths, Dh / Dv head widths. mask: the kind of the tensor
    mask, "none", "bool" or "float"; predicate: the masks.Predicate the call carries (causal=True included,
    as causal()), before any backend materialises it. transforms: a torch.func transform (vmap, grad,
    jacrev) runs the call.
    """

    device: torch.device
    dtype: torch.dtype
    return_weights: bool = False
    tracing: bool = False
    return_lse: bool = False
    batch: int = 1
    q_heads: int = 1
    kv_heads: int = 1
    num_queries: int = 0
    num_keys: int = 0
    head_dim: int = 0
    value_dim: int = 0
    mask: str = "none"
    mask_requires_grad: bool = False
    predicate: Predicate | None = None
    score_mod: ScoreModifier | None = None
    dropout_p: float = 0.0
    requires_grad: bool = False
    deterministic: bool = False
    transforms: bool = False


@dataclass(frozen=True)
class Choice:
    """A backend and the dtype it computes in (the inputs are cast to it and the outputs back)."""

    backend: str
    compute_dtype: torch.dtype

    def label(self, input_dtype: torch.dtype) -> str:
        """'sdpa', or 'sdpa@float32' when the call is computed in another dtype than its inputs'."""
        if self.compute_dtype == input_dtype:
            return self.backend
        return f"{self.backend}@{str(self.compute_dtype).removeprefix('torch.')}"


@dataclass(frozen=True)
class Rank:
    """Where auto's static order puts a backend among those that can serve a call: lower first, per device
    (None: not ranked there; reachable by name, and by `headwise tune`). `structured` replaces the
    device's rank for calls with a structured predicate (tuning.structured: one a fused kernel would read
    materialised as an (Nq, Nk) mask, where this backend skips what the predicate rules out)."""

    cpu: int | None = None
    cuda: int | None = None
    structured: int | None = None

    def of(self, device: str, structured: bool) -> int | None:
        """The rank on `device` ("cpu", "cuda") for a call with (or without) a structured predicate."""
        plain = getattr(self, device, None)
        if plain is None or not structured or self.structured is None:
            return plain
        return self.structured


@dataclass(frozen=True)
class Capabilities:
    """What a backend computes. Each field is a fact; `unsupported` derives the refusals from them.

    devices / dtypes: where and in what it runs. weights: returns the attention weights. lse: returns
    log Σ exp(scores). trace: records the steps under headwise.trace(). predicates: takes a
    masks.Predicate itself (others get it materialised as a tensor mask). score_mods: the ScoreModifier
    classes it applies (a chain of them too). dropout: applies dropout_p > 0. mask_grad: differentiates
    with respect to a float mask. backward: the devices where it differentiates (None: all of `devices`).
    deterministic: gives the same bits on every run, as torch.use_deterministic_algorithms(True) asks.
    transforms: runs under torch.func's transforms (no data-dependent branch; no autograd.Function without
    setup_context and a vmap rule).
    limits: what depends on the environment rather than the call's kind (a package installed, an
    interpreter on), as a function of the request returning a reason or None. rank: its place in auto's
    static order (Rank; unranked by default).
    """

    devices: frozenset[str] = DEVICES
    dtypes: frozenset[torch.dtype] = FLOATING
    weights: bool = False
    lse: bool = False
    trace: bool = False
    predicates: bool = False
    score_mods: frozenset[type] = frozenset()
    dropout: bool = True
    mask_grad: bool = False
    backward: frozenset[str] | None = None
    deterministic: bool = True
    transforms: bool = True
    limits: Callable[[Request], str | None] | None = None
    rank: Rank = Rank()

    def unsupported(self, request: Request) -> str | None:
        """What this backend cannot do for `request` (to follow "cannot ..."), or None."""
        device = request.device.type
        if device not in self.devices:
            return f"run on {device} (it runs on {', '.join(sorted(self.devices))})"
        if request.dtype not in self.dtypes:
            names = ", ".join(sorted(str(d).removeprefix("torch.") for d in self.dtypes))
            return f"run in {request.dtype} (it takes {names})"
        if request.tracing and not self.trace:
            return "record a trace (only the reference backend shows its steps)"
        if request.return_weights and not self.weights:
            return "return the attention weights (use headwise.attention_weights with its lse)"
        if request.return_lse and not self.lse:
            return "return the log-sum-exp of the scores"
        if request.score_mod is not None and not _applies(request.score_mod, self.score_mods):
            return f"apply the score modifier {request.score_mod.title}"
        if request.dropout_p > 0 and not self.dropout:
            return "apply dropout"
        if request.mask_requires_grad and not self.mask_grad:
            return "differentiate with respect to a float mask"
        if request.requires_grad and device not in (self.devices if self.backward is None else self.backward):
            return f"differentiate on {device}"
        if request.deterministic and request.requires_grad and not self.deterministic:
            return "differentiate deterministically (torch.use_deterministic_algorithms(True) is on)"
        if request.transforms and not self.transforms:
            return "run under torch.func's transforms (vmap, grad, jacrev)"
        return None if self.limits is None else self.limits(request)


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a backend computes the scores q·kᵀ in: float32 for float16 inputs, whose range (65504)
    the product of moderate queries and keys exceeds (q = k = 40 everywhere at Dh = 64: 102400, inf
    before any scaling), the input dtype otherwise (bfloat16 has float32's range)."""
    return torch.float32 if dtype == torch.float16 else dtype


def _applies(score_mod: ScoreModifier, kinds: frozenset[type]) -> bool:
    """Whether every modifier in `score_mod` (a chain, or one) is of a kind in `kinds`."""
    if type(score_mod) is Chain:
        return _applies(score_mod.first, kinds) and _applies(score_mod.second, kinds)
    return type(score_mod) in kinds
