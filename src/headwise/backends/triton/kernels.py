"""The host side of the Triton kernels (jit.py): launch configurations, the arguments every kernel shares,
and `forward` and `backward`, which launch them.

The package imports this module when a call first runs, and rebuilds it (importlib.reload) when
TRITON_INTERPRET has changed since; jit.py, whose decorators read the variable, is rebuilt with it.
`INTERPRETED` says how the kernels were built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from . import jit
from .interpreter import interpreting

if TYPE_CHECKING:
    from . import Plan

if interpreting() != jit.INTERPRETED:  # jit.py was built under the other TRITON_INTERPRET: decorate again
    importlib.reload(jit)
INTERPRETED = jit.INTERPRETED  # how the kernels were built


@dataclass(frozen=True)
class Tiles:
    """A launch configuration: BLOCK_M queries by BLOCK_N keys per tile."""

    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 1


def _candidates(kernel: str, width: int, dtype: torch.dtype) -> list[Tiles]:
    """Launch configurations to try in order, for a padded head width `width` (the larger of BLOCK_D and
    BLOCK_DV): the first that fits the GPU's shared memory and registers is kept (`_launch`). Untuned:
    starting points from Triton's fused-attention tutorial, halved as the heads widen."""
    if INTERPRETED:
        return [Tiles(16, 16)]
    wide = dtype == torch.float32  # 4-byte tiles take twice the shared memory
    if kernel == "forward":
        first = {64: Tiles(128, 64, 4, 3), 128: Tiles(128, 64, 8, 3), 256: Tiles(64, 32, 4, 2)}
    elif kernel == "dk_dv":  # BLOCK_N keys held, BLOCK_M queries streamed
        first = {64: Tiles(32, 128, 4, 3), 128: Tiles(32, 64, 8, 2), 256: Tiles(16, 32, 4, 1)}
    else:  # dq: BLOCK_M queries held, BLOCK_N keys streamed
        first = {64: Tiles(128, 32, 4, 3), 128: Tiles(64, 32, 8, 2), 256: Tiles(32, 16, 4, 1)}
    start = first[min(256, max(64, width if not wide else 2 * width))]
    tiles, seen = [], set()
    block_m, block_n, stages = start.block_m, start.block_n, start.num_stages
    while True:  # shrink: fewer stages first, then the larger block side
        tile = Tiles(block_m, block_n, start.num_warps if block_m * block_n >= 64 * 32 else 4, stages)
        if tile not in seen:
            seen.add(tile)
            tiles.append(tile)
        if stages > 1:
            stages -= 1
        elif max(block_m, block_n) > 16:
            block_m, block_n = (block_m // 2, block_n) if block_m >= block_n else (block_m, block_n // 2)
        else:
            return tiles


_CHOSEN: dict[tuple, int] = {}  # the index in `_candidates` that compiled, per kernel and specialisation


def _launch(
    kernel: Any,
    name: str,
    count: Callable[[Tiles], int],
    args: tuple[object, ...],
    flags: dict[str, object],
    width: int,
    dtype: torch.dtype,
    tiles: Tiles | None,
) -> None:
    """kernel[grid](*args, **flags) with the first configuration that fits; count(tiles) -> programs."""
    candidates = [tiles] if tiles is not None else _candidates(name, width, dtype)
    key = (name, width, dtype, tuple(sorted(flags.items())))
    start = _CHOSEN.get(key, 0) if tiles is None else 0
    for index in range(start, len(candidates)):
        tile = candidates[index]
        programs = count(tile)
        if programs == 0:
            return
        try:
            _run(kernel, programs, args, {**flags, "BLOCK_M": tile.block_m, "BLOCK_N": tile.block_n}, tile)
        except OutOfResources:
            continue
        if tiles is None:
            _CHOSEN[key] = index
        return
    raise RuntimeError(
        f"the triton backend found no tile size for its {name} kernel that fits this GPU (head width "
        f"{width}, {dtype}); use backend='sdpa' or backend='chunked'"
    )


def _run(
    kernel: Any, programs: int, args: tuple[object, ...], constexprs: dict[str, object], tile: Tiles
) -> None:
    """kernel[(programs,)](*args, **constexprs) with `tile`'s warps and stages."""
    kernel[(programs,)](*args, **constexprs, num_warps=tile.num_warps, num_stages=tile.num_stages)


def _block_width(width: int) -> int:
    """A head width padded to a power of two >= 16 (tl.dot's smallest operand side)."""
    return max(16, triton.next_power_of_2(width))


class _Call:
    """The arguments every kernel shares, from q, k, v and a Plan (see the package's `Plan`)."""

    def __init__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: Plan) -> None:
        self.batch, self.heads, self.num_queries, self.head_dim = q.shape
        self.kv_heads, self.num_keys, self.value_dim = k.shape[1], k.shape[2], v.shape[-1]
        self.block_d, self.block_dv = _block_width(self.head_dim), _block_width(self.value_dim)
        self.width = max(self.block_d, self.block_dv)
        self.dtype = q.dtype
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        self.acc_dtype = acc
        device = q.device
        keep = 1.0 / (1.0 - plan.dropout_p)
        softcap = plan.softcap if plan.softcap is not None else 1.0
        params = torch.tensor([plan.scale, softcap, keep], dtype=acc, device=device)  # (3,)
        dummy = torch.zeros(1, dtype=torch.int32, device=device)
        slopes = plan.slopes.to(device, acc).contiguous() if plan.slopes is not None else params
        row_lo, row_hi = plan.row_range if plan.row_range is not None else (dummy, dummy)
        col_lo, col_hi = plan.col_range if plan.col_range is not None else (dummy, dummy)
        q_doc, k_doc = plan.documents if plan.documents is not None else (dummy, dummy)
        mask = plan.dense if plan.dense is not None else dummy.view(1, 1, 1, 1)  # (B, Hq, Nq, Nk) view
        left, right = plan.window if plan.window is not None else (0, 0)
        self.common = (
            params, slopes, row_lo, row_hi, col_lo, col_hi, q_doc, k_doc, mask, *mask.stride(),
            self.heads, self.heads // self.kv_heads, self.num_queries, self.num_keys,
            self.head_dim, self.value_dim, left, right, float(plan.dropout_p), int(plan.seed),
        )  # fmt: skip
        tf32 = q.dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest"
        self.flags = {
            "WINDOW": plan.window is not None,
            "RANGES": plan.row_range is not None,
            "DOCS": plan.documents is not None,
            "MASK": 0 if plan.dense is None else (1 if plan.dense.dtype == torch.uint8 else 2),
            "ALIBI": plan.alibi,
            "SOFTCAP": plan.softcap is not None,
            "DROPOUT": plan.dropout_p > 0,
            "ACC": tl.float64 if acc == torch.float64 else tl.float32,
            "PRECISION": "tf32" if tf32 and not INTERPRETED else "ieee",
            "BLOCK_D": self.block_d,
            "BLOCK_DV": self.block_dv,
        }

    def device(self, tensor: torch.Tensor) -> torch.cuda.device | _Nothing:
        """The CUDA device context of `tensor`, or one that does nothing (the interpreter's CPU tensors)."""
        return torch.cuda.device(tensor.device) if tensor.device.type == "cuda" else _Nothing()


class _Nothing:
    """A context that does nothing."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> Literal[False]:
        return False


def _last_stride_one(t: torch.Tensor) -> torch.Tensor:
    """t, or a contiguous copy when its last dimension is strided (the kernels read rows whole)."""
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: Plan, tiles: Tiles | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv) -> out (B, Hq, Nq, Dv) in q's dtype and
    lse (B, Hq, Nq) in float32 (float64 for float64 inputs). tiles: a fixed launch configuration."""
    q, k, v = (_last_stride_one(t) for t in (q, k, v))
    call = _Call(q, k, v, plan)
    out = torch.empty(*q.shape[:3], v.shape[-1], dtype=q.dtype, device=q.device)  # (B, Hq, Nq, Dv)
    lse = torch.empty(q.shape[:3], dtype=call.acc_dtype, device=q.device)  # (B, Hq, Nq)
    args = (q, k, v, out, lse, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *call.common)
    rows = call.batch * call.heads
    with call.device(q):
        _launch(
            jit.attention_forward, "forward", lambda t: triton.cdiv(call.num_queries, t.block_m) * rows,
            args, call.flags, call.width, q.dtype, tiles,
        )  # fmt: skip
    return out, lse


def backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    d_out: torch.Tensor,
    d_lse: torch.Tensor,
    plan: Plan,
    deterministic: bool,
    tiles: Tiles | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients (dq, dk, dv) of q, k and v, in their dtypes, given d_out (B, Hq, Nq, Dv) and d_lse
    (B, Hq, Nq) (the gradient reaching lse, or zeros)."""
    q, k, v = (_last_stride_one(t) for t in (q, k, v))
    call = _Call(q, k, v, plan)
    d_out = d_out.to(q.dtype).contiguous()  # (B, Hq, Nq, Dv)
    d_lse = d_lse.to(call.acc_dtype).contiguous()  # (B, Hq, Nq)
    delta = torch.empty_like(lse)  # (B, Hq, Nq): rowsum(dO ∘ O) - d_lse
    d_k = torch.empty(k.shape, dtype=k.dtype, device=k.device)  # (B, Hkv, Nk, Dh), contiguous
    d_v = torch.empty(v.shape, dtype=v.dtype, device=v.device)  # (B, Hkv, Nk, Dv)
    if deterministic:
        d_q = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # (B, Hq, Nq, Dh)
    else:
        d_q = torch.zeros(q.shape, dtype=call.acc_dtype, device=q.device)  # summed by atomic adds
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3])
    total_rows = call.batch * call.heads * call.num_queries
    with call.device(q):
        if total_rows > 0:
            block = 64 if call.block_dv <= 128 and not INTERPRETED else 16
            _run(
                jit.attention_backward_delta, triton.cdiv(total_rows, block),
                (out, d_out, d_lse, delta, total_rows, call.value_dim),
                {"ACC": call.flags["ACC"], "BLOCK_M": block, "BLOCK_DV": call.block_dv}, Tiles(block, 1),
            )  # fmt: skip
        kv_rows = call.batch * call.kv_heads
        _launch(
            jit.attention_backward_dk_dv, "dk_dv", lambda t: triton.cdiv(call.num_keys, t.block_n) * kv_rows,
            (q, k, v, d_out, lse, delta, d_k, d_v, d_q, *strides, *call.common),
            {**call.flags, "ATOMIC_DQ": not deterministic}, call.width, q.dtype, tiles,
        )  # fmt: skip
        if deterministic:
            rows = call.batch * call.heads
            _launch(
                jit.attention_backward_dq, "dq", lambda t: triton.cdiv(call.num_queries, t.block_m) * rows,
                (q, k, v, d_out, lse, delta, d_q, *strides, *call.common),
                call.flags, call.width, q.dtype, tiles,
            )  # fmt: skip
    return d_q.to(q.dtype), d_k, d_v
