"""The triton backend: fused FlashAttention-2 kernels of our own, forward and backward, written in Triton.

Fused kernels (one for the forward; two, or three when deterministic, for the backward): the scores never
leave the chip, memory is linear in the sequence length, and the mask is compiled into the kernels instead
of read from an (Nq, Nk) tensor where it can be:

- causal (bottom-right), sliding_window(left, right): a band around each query's own key position,
  tested on indices; the loops skip the key blocks outside it;
- key_lengths(...) and packed documents(...) (non-decreasing ids): an interval of keys per query, read
  from a small (B, Nq) table; the loops skip the key blocks outside it, per query block;
- documents(...) with unsorted ids: ids compared per tile;
- any other predicate (prefix_lm, |, ~) and tensor masks: a dense mask read tile by tile through its
  strides (broadcast axes cost nothing); bool masks keep, float masks add.

Score modifiers alibi(slopes) and softcap(cap) are applied in the kernel (one of each, in either order);
dropout draws Philox numbers from (seed, position), so the backward regenerates the forward's mask.
Grouped-query attention reads key/value head h // G for query head h; k and v are never repeated.
Head widths: any (padded inside the kernel to a power of two >= 16); the launch sizes are chosen for
32..256. fp16 and bf16 accumulate in float32; float32 runs in IEEE float32 unless
torch.set_float32_matmul_precision allows TF32. lse (B, Hq, Nq) is float32 (float64 for float64 inputs).

The backward is deterministic (two kernels, no atomics) when torch.use_deterministic_algorithms(True) is
on or `attention_with_lse(..., deterministic=True)` asks; otherwise dQ is summed with atomic adds.

Triton is optional (`pip install 'headwise[gpu]'`) and imported only when a call runs. On the CPU the
kernels run under Triton's interpreter while TRITON_INTERPRET=1 is set (tests; slow; float32, float16 and
float64, not bfloat16, whose tl.dot the interpreter gets wrong: triton-lang/triton#11584). Triton reads
the variable when its decorators run: for its own library (tl.max, tl.rand, ...) when the process first
imports triton, so set it before that; this backend's kernels are rebuilt when it changes between calls,
and a call refuses (saying why) where Triton's library was built the other way.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from ...masks import (
    ALiBi,
    And,
    Causal,
    Chain,
    Documents,
    KeyLengths,
    Predicate,
    SlidingWindow,
    Softcap,
    combine,
)
from ..capabilities import Capabilities, Rank
from ..plan import make_plan as block_plan
from .interpreter import interpreting

if TYPE_CHECKING:
    from ...masks import ScoreModifier
    from ..capabilities import Request

INSTALL = "pip install 'headwise[gpu]'"
PLAN_BLOCK = 64  # the block plan's blocks, for the key ranges of the predicates read as a dense mask
CUDA_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INTERPRETER_DTYPES = (torch.float32, torch.float16, torch.float64)


def _limits(request: Request) -> str | None:
    """What depends on the environment (Triton installed, its interpreter on) and on the modifier chain."""
    return _device_limits(request.device, request.dtype) or _modifier_limits(request.score_mod)


# Not under torch.func's transforms: an autograd.Function without setup_context, kernels with no vmap rule.
CAPABILITIES = Capabilities(
    lse=True,
    predicates=True,
    score_mods=frozenset({ALiBi, Softcap}),
    transforms=False,
    limits=_limits,
    rank=Rank(cuda=20, structured=0),  # first where it evaluates a predicate in the kernel
)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None,
    predicate: Predicate | None,
    scale: float,
    dropout_p: float,
    score_mod: ScoreModifier | None,
    return_weights: bool,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv) -> (out (B, Hq, Nq, Dv), None, lse)."""
    out, lse = attention_with_lse(
        q, k, v, mask=mask, predicate=predicate, scale=scale, dropout_p=dropout_p, score_mod=score_mod
    )
    return out, None, (lse if return_lse else None)


def attention_with_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    predicate: Predicate | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    score_mod: ScoreModifier | None = None,
    deterministic: bool | None = None,
    tiles: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """As `headwise.attention(..., backend="triton", return_lse=True)`: (out (B, Hq, Nq, Dv), lse (B, Hq,
    Nq)), both differentiable. q, k, v as validated by `headwise.attention`; mask None or a bool/float
    tensor broadcastable to (B, Hq, Nq, Nk); predicate None or a masks.Predicate (causal() for causal
    attention, bottom-right).

    deterministic: the atomics-free backward (bitwise reproducible); None follows
    torch.are_deterministic_algorithms_enabled(). tiles: (BLOCK_M, BLOCK_N), one launch configuration for
    every kernel (tests; by default the kernels pick theirs)."""
    reason = _modifier_limits(score_mod) or _device_limits(q.device, q.dtype)
    if reason is not None:
        raise ValueError(f"backend 'triton' cannot {reason}")
    kernels = _kernels()  # imports Triton, builds the kernels
    from .autograd import TritonAttention

    launch = None if tiles is None else kernels.Tiles(*tiles)
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    scaled = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    seed = int(torch.randint(2**62, (1,)).item()) if dropout_p > 0 else 0  # from torch's RNG: reproducible
    plan = make_plan(q, k, mask, predicate, scaled, float(dropout_p), seed, score_mod)
    return TritonAttention.apply(q, k, v, plan, bool(deterministic), launch)


@dataclass(frozen=True)
class Plan:
    """Everything the kernels need besides q, k and v: the mask in compiled form and the scalars.

    window: (left, right): query i sees keys own - left <= j <= own + right, own = i + Nk - Nq.
    row_range: (lo, hi) int32 (B, Nq): query i sees keys lo <= j < hi; col_range: (lo, hi) int32
    (B, Nk): key j is seen by queries lo <= i < hi (both non-decreasing, so each is the other's inverse).
    documents: (query ids (B, Nq), key ids (B, Nk)) int32, compared elementwise. dense: a (B, Hq, Nq, Nk)
    strided view, uint8 (1 = may attend) or float (added). alibi: 0 none, 1 before the softcap, 2 after.
    """

    scale: float
    dropout_p: float = 0.0
    seed: int = 0
    window: tuple[int, int] | None = None
    row_range: tuple[torch.Tensor, torch.Tensor] | None = None
    col_range: tuple[torch.Tensor, torch.Tensor] | None = None
    documents: tuple[torch.Tensor, torch.Tensor] | None = None
    dense: torch.Tensor | None = None
    slopes: torch.Tensor | None = None
    alibi: int = 0
    softcap: float | None = None


def make_plan(
    q: torch.Tensor,
    k: torch.Tensor,
    mask: torch.Tensor | None,
    predicate: Predicate | None,
    scale: float,
    dropout_p: float,
    seed: int,
    score_mod: ScoreModifier | None,
) -> Plan:
    """Compile the tensor mask, the predicate and the score modifiers of a call into a Plan."""
    batch, heads, num_queries = q.shape[:3]
    num_keys, device = k.shape[2], q.device
    far = num_queries + num_keys  # a window side this long does not limit that side
    left, right, windowed = far, far, False
    lo: torch.Tensor | None = None  # (B, Nq): the first key each query sees
    hi: torch.Tensor | None = None  # (B, Nq): past the last
    docs: tuple[torch.Tensor, torch.Tensor] | None = None
    dense = mask
    for term in _conjuncts(predicate) if predicate is not None else ():
        if type(term) is Causal:
            right, windowed = min(right, 0), True
        elif type(term) is SlidingWindow:
            left, right, windowed = min(left, term.left), min(right, term.right), True
        elif type(term) is KeyLengths:
            lengths = term.lengths.to(device, torch.int64).expand(batch)  # (B,)
            lo, hi = _intersect(
                lo, hi, torch.zeros(batch, num_queries, dtype=torch.int64, device=device),
                lengths[:, None].expand(batch, num_queries),
            )  # fmt: skip
        elif type(term) is Documents and term.packed:
            query_ids = term.query_doc_ids.to(device, torch.int64).contiguous()  # (B, Nq)
            key_ids = term.key_doc_ids.to(device, torch.int64).contiguous()  # (B, Nk), sorted
            first = torch.searchsorted(key_ids, query_ids)  # (B, Nq): the first key of each query's document
            lo, hi = _intersect(lo, hi, first, torch.searchsorted(key_ids, query_ids, right=True))
        elif type(term) is Documents and docs is None:
            docs = (
                term.query_doc_ids.to(device, torch.int32).contiguous(),
                term.key_doc_ids.to(device, torch.int32).contiguous(),
            )
        else:  # prefix_lm, |, ~, a second unsorted documents(): read as a dense mask, the loops bounded
            dense = combine(dense, term.materialize(batch, heads, num_queries, num_keys, device), q.dtype)
            # by the key range of the blocks the block plan finds visible (backends/plan.py)
            bounds = block_plan(term, num_queries, num_keys, PLAN_BLOCK, PLAN_BLOCK).key_bounds()  # (Nq,) x2
            lo, hi = _intersect(lo, hi, *(b.to(device).expand(batch, num_queries) for b in bounds))
    row_range = col_range = None
    if lo is not None and hi is not None:
        keys = torch.arange(num_keys, device=device).expand(batch, num_keys).contiguous()  # (B, Nk)
        lo, hi = lo.contiguous(), hi.contiguous()
        # The queries that see key j: those with lo <= j (a prefix, lo being non-decreasing) and hi > j.
        col_range = (
            torch.searchsorted(hi, keys, right=True).to(torch.int32),  # (B, Nk): count of hi <= j
            torch.searchsorted(lo, keys, right=True).to(torch.int32),  # (B, Nk): count of lo <= j
        )
        row_range = (lo.to(torch.int32), hi.to(torch.int32))  # (B, Nq) each
    if dense is not None:
        dense = dense.reshape((1,) * (4 - dense.dim()) + tuple(dense.shape))  # (B|1, Hq|1, Nq|1, Nk|1)
        dense = dense.expand(batch, heads, num_queries, num_keys)  # (B, Hq, Nq, Nk), stride 0: broadcast
        dense = dense.view(torch.uint8) if dense.dtype == torch.bool else dense
    kinds = _modifier_kinds(score_mod)
    assert kinds is not None  # attention_with_lse refused the others (_modifier_limits)
    slopes = next((m.slopes for m in _modifiers(score_mod) if isinstance(m, ALiBi)), None)
    softcap = next((m.cap for m in _modifiers(score_mod) if isinstance(m, Softcap)), None)
    alibi = 0 if "alibi" not in kinds else (1 if kinds[0] == "alibi" and "softcap" in kinds else 2)
    return Plan(
        scale=scale,
        dropout_p=dropout_p,
        seed=seed,
        window=(min(left, far), min(right, far)) if windowed else None,
        row_range=row_range,
        col_range=col_range,
        documents=docs,
        dense=dense,
        slopes=slopes,
        alibi=alibi,
        softcap=softcap,
    )


def _intersect(
    lo: torch.Tensor | None, hi: torch.Tensor | None, new_lo: torch.Tensor, new_hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two key intervals per query, (B, Nq) each -> their intersection."""
    if lo is None or hi is None:
        return new_lo, new_hi
    return torch.maximum(lo, new_lo), torch.minimum(hi, new_hi)


def _conjuncts(predicate: Predicate) -> list[Predicate]:
    """a & b & c -> [a, b, c]; anything else -> [itself]."""
    if type(predicate) is And:
        return _conjuncts(predicate.first) + _conjuncts(predicate.second)
    return [predicate]


def _modifiers(score_mod: ScoreModifier | None) -> list[ScoreModifier]:
    """A chain of score modifiers, flattened in the order they apply."""
    if score_mod is None:
        return []
    if type(score_mod) is Chain:
        return _modifiers(score_mod.first) + _modifiers(score_mod.second)
    return [score_mod]


def _modifier_kinds(score_mod: ScoreModifier | None) -> tuple[str, ...] | None:
    """("alibi",), ("softcap", "alibi"), ...: what the kernels apply, in order; None if they cannot."""
    names: dict[type[ScoreModifier], str] = {ALiBi: "alibi", Softcap: "softcap"}
    modifiers = _modifiers(score_mod)
    kinds = tuple(names[type(m)] for m in modifiers if type(m) in names)
    return kinds if len(kinds) == len(modifiers) and len(set(kinds)) == len(kinds) else None


def _modifier_limits(score_mod: ScoreModifier | None) -> str | None:
    """Why the kernels cannot apply this score modifier, or None."""
    if score_mod is not None and _modifier_kinds(score_mod) is None:
        return (
            f"apply the score modifier {score_mod.title} (it takes alibi and softcap, at most one of each, "
            "chained in either order)"
        )
    return None


def _device_limits(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why this device and dtype cannot run, or None."""
    if not _triton_installed():
        return f"run without Triton, which is not installed ({INSTALL})"
    if device.type not in ("cuda", "cpu"):
        return f"run on {device.type} (it runs on CUDA, or on the CPU under Triton's interpreter)"
    library = _library_interpreted()
    if not interpreting():
        if device.type == "cpu":
            return "run on the CPU unless TRITON_INTERPRET=1 turns on Triton's interpreter (slow; for tests)"
        if library:
            return (
                "run on CUDA in a process that imported triton under TRITON_INTERPRET=1 (Triton builds its "
                "own library for the interpreter at import); run the GPU work in another process"
            )
        if dtype not in CUDA_DTYPES:
            return f"run in {dtype} on CUDA (its kernels take float16, bfloat16 and float32)"
        return None
    if library is False:
        return (
            "run under Triton's interpreter: TRITON_INTERPRET=1 was set after triton was imported, and "
            "Triton builds its own library at import; set it before the first `import triton`"
        )
    if dtype == torch.bfloat16:
        return (
            "run bfloat16 under Triton's CPU interpreter, whose bf16 tl.dot is wrong "
            "(triton-lang/triton#11584); use float32"
        )
    if dtype not in INTERPRETER_DTYPES:
        return f"run in {dtype} under Triton's interpreter (it takes float32, float16 and float64)"
    return None


def _kernels() -> ModuleType:
    """The kernels module, built for the interpreter or the GPU as TRITON_INTERPRET says now: Triton reads
    the variable when its decorators run, so a module built the other way is rebuilt (importlib.reload)."""
    module = sys.modules.get(f"{__name__}.kernels")
    if module is None:
        return importlib.import_module(f"{__name__}.kernels")
    return module if interpreting() == module.INTERPRETED else importlib.reload(module)


def _library_interpreted() -> bool | None:
    """Whether Triton's own @jit library (tl.cdiv, tl.max, tl.rand) was built for the interpreter: Triton
    decides when it is imported. None when triton is not imported yet (it will follow TRITON_INTERPRET)."""
    if "triton.language" not in sys.modules:
        return None
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(sys.modules["triton.language"].cdiv, InterpretedFunction)


@functools.cache
def _triton_installed() -> bool:
    """Whether triton can be imported."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # sys.modules["triton"] = None hides it
        return False
