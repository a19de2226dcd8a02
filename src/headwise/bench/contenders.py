"""The contenders: headwise and what a user would otherwise pick, at two levels.

- kernels, on q, k, v (B, H, N, Dh): headwise.attention with backend "auto" and with every backend in
  headwise.backends.BACKENDS (looked up at run time, so a new backend is timed without editing this file),
  torch's scaled_dot_product_attention (its default choice of kernel, and its math kernel), and a naive
  implementation in plain torch ops.
- modules, on x (B, N, E = H·Dh): headwise.MultiHeadAttention with its defaults, and
  torch.nn.MultiheadAttention (batch_first=True) with its defaults (need_weights=True) and with
  need_weights=False.

A contender's `prepare(config)` builds what it needs outside the timed region (a module, a mask) and returns
(forward, parameters): forward(*inputs) -> output, and the parameters whose gradients a training step makes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .. import backends
from ..functional import attention
from ..modules import MultiHeadAttention
from .grid import Config

Forward = Callable[..., torch.Tensor]
Prepared = tuple[Forward, Sequence[torch.Tensor]]

# The peers whose float32 variants run in bf16/fp16 configurations (auto may compute in float32 itself).
UPCAST = ("torch-sdpa", "naive", "hw-dense", "torch-MHA-nw")

# The headwise contender of each level; the ratios compare it with every other contender of its level.
HEADWISE = {"kernel": "hw-auto", "module": "hw-MHA"}


@dataclass(frozen=True)
class Contender:
    name: str
    level: str  # "kernel" (inputs q, k, v) or "module" (input x)
    description: str
    prepare: Callable[[Config], Prepared]
    low_precision_only: bool = False  # an upcast variant: runs only in bf16/fp16 configurations


def upcast(contender: Contender) -> Contender:
    """`contender` computed in float32 on bf16/fp16 inputs: its inputs (and, for a module, its weights)
    cast to float32, its output cast back, as a user would do by hand where bf16 is slow."""

    def prepare(config: Config) -> Prepared:
        forward, parameters = contender.prepare(replace(config, dtype="fp32"))
        parameters = tuple(parameters)
        dtype = config.torch_dtype

        def cast_forward(*inputs: torch.Tensor) -> torch.Tensor:
            return forward(*(t.float() for t in inputs)).to(dtype)

        return cast_forward, parameters

    description = f"{contender.description}, computed in float32 and cast back"
    return Contender(f"{contender.name}@fp32", contender.level, description, prepare, True)


def naive_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None = None
) -> torch.Tensor:
    """Textbook attention in plain torch ops, as nanoGPT writes it: softmax(q·kᵀ·scale + mask)·v.

    q (B, H, Nq, Dh), k and v (B, H, Nk, Dh), allowed (Nq, Nk) bool (True = may attend) or None
    -> (B, H, Nq, Dh). A row with nothing allowed gives NaN (headwise's backends give zeros there).
    """
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, Nq, Nk)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))  # (B, H, Nq, Nk)
    weights = torch.softmax(scores, dim=-1)  # (B, H, Nq, Nk)
    return weights @ v  # (B, H, Nq, Dh)


def lower_triangle(num_queries: int, num_keys: int) -> torch.Tensor:
    """The causal mask (Nq, Nk), True = may attend, aligned bottom-right as in headwise."""
    return torch.ones(num_queries, num_keys, dtype=torch.bool).tril(diagonal=num_keys - num_queries)


def _headwise_backend(backend: str) -> Contender:
    def prepare(config: Config) -> Prepared:
        def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return attention(q, k, v, causal=config.causal, backend=backend)

        return forward, ()

    return Contender(f"hw-{backend}", "kernel", f'headwise.attention(backend="{backend}")', prepare)


def _torch_sdpa(config: Config) -> Prepared:
    def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=config.causal)

    return forward, ()


def _torch_sdpa_math(config: Config) -> Prepared:
    def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, is_causal=config.causal)

    return forward, ()


def _naive(config: Config) -> Prepared:
    allowed = lower_triangle(config.n, config.n) if config.causal else None  # (N, N), built once

    def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return naive_attention(q, k, v, allowed)

    return forward, ()


def _module(config: Config, module: nn.Module) -> nn.Module:
    """`module` in config's dtype; in training mode for forward+backward, in evaluation mode otherwise."""
    return module.to(config.torch_dtype).train(config.backward)


def _headwise_module(config: Config) -> Prepared:
    module = _module(config, MultiHeadAttention(config.embed_dim, config.heads))

    def forward(x: torch.Tensor) -> torch.Tensor:
        return module(x, is_causal=config.causal)[0]  # (B, N, E)

    return forward, tuple(module.parameters())


def _torch_module(need_weights: bool) -> Callable[[Config], Prepared]:
    def prepare(config: Config) -> Prepared:
        module = _module(config, nn.MultiheadAttention(config.embed_dim, config.heads, batch_first=True))
        # torch needs a mask with its is_causal hint; True = may not attend, in torch's polarity.
        blocked = ~lower_triangle(config.n, config.n) if config.causal else None  # (N, N)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return module(x, x, x, attn_mask=blocked, is_causal=config.causal, need_weights=need_weights)[0]

        return forward, tuple(module.parameters())

    return prepare


def all_contenders() -> list[Contender]:
    """Every contender, headwise's first; the backends are read from headwise.backends.BACKENDS now; then
    the float32 variants of the peers a user would upcast by hand."""
    contenders = [
        _headwise_backend("auto"),
        *(_headwise_backend(name) for name in backends.BACKENDS),
        Contender(
            "torch-sdpa", "kernel", "F.scaled_dot_product_attention, torch's choice of kernel", _torch_sdpa
        ),
        Contender(
            "torch-math", "kernel", "F.scaled_dot_product_attention, SDPBackend.MATH", _torch_sdpa_math
        ),
        Contender("naive", "kernel", "softmax(q·kᵀ·scale + mask)·v in plain torch ops", _naive),
        Contender("hw-MHA", "module", "headwise.MultiHeadAttention, defaults", _headwise_module),
        Contender(
            "torch-MHA", "module", "nn.MultiheadAttention, defaults (need_weights=True)", _torch_module(True)
        ),
        Contender(
            "torch-MHA-nw", "module", "nn.MultiheadAttention, need_weights=False", _torch_module(False)
        ),
    ]
    by_name = {c.name: c for c in contenders}
    return [*contenders, *(upcast(by_name[name]) for name in UPCAST)]


def select(names: Sequence[str] | None) -> list[Contender]:
    """The contenders named in `names` (all of them for None), in the order of all_contenders()."""
    contenders = all_contenders()
    if names is None:
        return contenders
    known = [c.name for c in contenders]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown contender(s) {unknown}; choose from {known}")
    return [c for c in contenders if c.name in names]


@dataclass(frozen=True)
class Inputs:
    """A level's inputs for one configuration: (q, k, v) each (B, H, N, Dh), or (x,) (B, N, E); and the
    gradient of the output used by the backward pass, (B, H, N, Dh) or (B, N, E), or None."""

    tensors: tuple[torch.Tensor, ...]
    grad_out: torch.Tensor | None


def make_inputs(config: Config, level: str, seed: int = 0) -> Inputs:
    """Random inputs for `level` at `config`, requiring gradients for forward+backward."""
    generator = torch.Generator().manual_seed(seed)
    c = config
    shape = (c.batch, c.heads, c.n, c.head_dim) if level == "kernel" else (c.batch, c.n, c.embed_dim)
    count = 3 if level == "kernel" else 1

    def draw() -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(c.torch_dtype)

    tensors = tuple(draw().requires_grad_(c.backward) for _ in range(count))
    return Inputs(tensors, draw() if c.backward else None)


def make_step(contender: Contender, config: Config, inputs: Inputs) -> Callable[[], None]:
    """One timed call: a forward pass under inference_mode, or a training step's forward and backward
    (gradients reset to None first, as optimizer.zero_grad() does)."""
    forward, parameters = contender.prepare(config)
    leaves = (*inputs.tensors, *parameters)

    def inference() -> None:
        with torch.inference_mode():
            forward(*inputs.tensors)

    def training() -> None:
        for leaf in leaves:
            leaf.grad = None
        forward(*inputs.tensors).backward(inputs.grad_out)

    return training if config.backward else inference
