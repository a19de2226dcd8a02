"""What a benchmark measures: one configuration, the grid of them, and the FLOPs each one costs.

Shape legend: B batch, H heads, N sequence length (Nq = Nk = N), Dh head width, E = H·Dh model width.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
MODES = ("fwd", "fwd+bwd")
MASKS = ("none", "causal")
LEVELS = ("kernel", "module")

# FlashAttention's convention: the backward pass costs 2.5 forward passes (two matmuls recomputed or
# reused, four for the gradients), so forward+backward = 3.5 × forward. A linear layer's backward costs
# two forward passes (the gradients of its input and of its weight).
ATTENTION_BACKWARD_FACTOR = 2.5
LINEAR_BACKWARD_FACTOR = 2.0
FLOP_FORMULAS = {
    "kernel forward": "4·B·H·Nq·Nk·Dh (q·kᵀ and weights·v, 2 FLOPs per multiply-add), halved when causal",
    "kernel forward+backward": f"(1 + {ATTENTION_BACKWARD_FACTOR}) × kernel forward",
    "module forward": "kernel forward + 8·B·N·E² (the q, k, v and output projections, E = H·Dh)",
    "module forward+backward": f"(1 + {ATTENTION_BACKWARD_FACTOR}) × kernel forward "
    f"+ (1 + {LINEAR_BACKWARD_FACTOR}) × 8·B·N·E²",
    "matmul ceiling": "2·n³ for an (n, n) @ (n, n) product in the same dtype",
}


@dataclass(frozen=True)
class Config:
    """One point of the grid: q, k, v are (B, H, N, Dh) for kernels; x is (B, N, H·Dh) for modules."""

    dtype: str  # a key of DTYPES
    mode: str  # "fwd" or "fwd+bwd"
    causal: bool
    n: int
    batch: int = 4
    heads: int = 8
    head_dim: int = 64

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def embed_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def backward(self) -> bool:
        return self.mode == "fwd+bwd"

    def at(self, n: int) -> Config:
        """The same configuration at sequence length `n`."""
        return replace(self, n=n)

    def group(self) -> str:
        """The configuration without N, e.g. "bf16 fwd+bwd causal"."""
        return f"{self.dtype} {self.mode}{' causal' if self.causal else ''}"

    def label(self) -> str:
        return f"{self.group()} N={self.n}"


def attention_flops(config: Config) -> float:
    """FLOPs of attention on q, k, v (B, H, N, Dh): 4·B·H·N²·Dh forward, halved when causal, and 3.5× that
    for forward+backward."""
    c = config
    forward = 4 * c.batch * c.heads * c.n * c.n * c.head_dim / (2 if c.causal else 1)
    return forward * (1 + ATTENTION_BACKWARD_FACTOR) if c.backward else forward


def projection_flops(config: Config) -> float:
    """FLOPs of a module's four (E, E) projections on x (B, N, E): 8·B·N·E² forward, 3× with the backward."""
    forward = 8 * config.batch * config.n * config.embed_dim**2
    return forward * (1 + LINEAR_BACKWARD_FACTOR) if config.backward else forward


def flops(config: Config, level: str) -> float:
    """FLOPs of one call of a contender at `level` ("kernel" or "module")."""
    return attention_flops(config) + (projection_flops(config) if level == "module" else 0.0)


def grid(
    sizes: tuple[int, ...],
    dtypes: tuple[str, ...],
    modes: tuple[str, ...],
    masks: tuple[str, ...],
    **shape: int,
) -> list[Config]:
    """Every configuration, N innermost and ascending, so that a configuration's memory can be predicted from
    the same one at the previous N. `shape` sets batch, heads and head_dim."""
    return [
        Config(dtype, mode, mask == "causal", n, **shape)
        for dtype in dtypes
        for mode in modes
        for mask in masks
        for n in sorted(sizes)
    ]
