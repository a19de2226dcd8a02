"""The triton backend's kernels compiled for a CUDA architecture without a GPU (triton_gpu.py --compile-only).

    with compile_only(90) as records:
        out, lse = kernels.forward(q, k, v, plan)  # compiled for sm90, not run; tensors may be on the CPU

Inside the block every launch of headwise.backends.triton.kernels goes through Triton's compiler and its
bundled ptxas for that architecture instead of running, and fails as the driver would where the kernel
needs more shared memory than the architecture has, so that `_launch` falls back to smaller tiles as it
does on a GPU.
"""

from __future__ import annotations

import contextlib

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.errors import OutOfResources

from headwise.backends.triton import kernels

# The shared memory one block may use, bytes, per CUDA compute capability (CUDA's programming guide).
SHARED_MEMORY = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 120: 101376}
_SIGNATURE_TYPES = {
    torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64",
    torch.int32: "i32", torch.int64: "i64", torch.uint8: "u8",
}  # fmt: skip


class _CompileOnly:
    """Compiles each launch for one CUDA architecture instead of running it (see `compile_only`)."""

    def __init__(self, arch: int):
        self.arch = arch
        self.records: list[dict] = []

    def compile(self, kernel, programs: int, args, constexprs: dict, tile: kernels.Tiles) -> None:
        """In place of kernels._run: compile `kernel` for `self.arch` and record it."""
        signature = {}
        for name, value in zip(kernel.arg_names, args, strict=False):
            if isinstance(value, torch.Tensor):
                signature[name] = "*" + _SIGNATURE_TYPES[value.dtype]
            elif isinstance(value, float):
                signature[name] = "fp32"
            else:
                signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
        signature.update(dict.fromkeys(constexprs, "constexpr"))
        compiled = triton.compile(
            ASTSource(kernel, signature, constexprs),
            target=GPUTarget("cuda", self.arch, 32),
            options={"num_warps": tile.num_warps, "num_stages": tile.num_stages},
        )
        shared, limit = compiled.metadata.shared, SHARED_MEMORY.get(self.arch, 101376)
        fits = shared <= limit
        self.records.append({"kernel": kernel.__name__, "tiles": tile, "shared": shared, "fits": fits})
        if not fits:  # what the driver would say when loading it
            raise OutOfResources(shared, limit, "shared memory")


@contextlib.contextmanager
def compile_only(arch: int):
    """Inside the block every launch compiles its kernel for CUDA compute capability `arch` (80: A100,
    90: H100) instead of running it, and records {"kernel", "tiles", "shared" (bytes), "fits"}: the GPU
    code path, checked on a machine without a GPU. Tensors may live on the CPU; outputs are left
    unwritten. The tile sizes chosen inside are forgotten after it (they hold for `arch`, not for this
    machine). Yields the list of records."""
    if kernels.INTERPRETED:
        raise RuntimeError(
            "compile_only needs the GPU kernels: unset TRITON_INTERPRET before importing triton"
        )
    checker = _CompileOnly(arch)
    run, chosen = kernels._run, kernels._CHOSEN
    kernels._run, kernels._CHOSEN = checker.compile, {}
    try:
        yield checker.records
    finally:
        kernels._run, kernels._CHOSEN = run, chosen
