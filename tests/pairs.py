"""torch modules and headwise's twins with the same random weights: torch's nn.MultiheadAttention with
random weights and biases beside a compat.MultiheadAttention that loaded its state_dict, in float64, and
the seeded float64 inputs they are run on (tests/compat/test_compat.py, tests/test_transforms.py)."""

from __future__ import annotations

import torch
from torch import nn

from headwise import compat

F64 = torch.float64


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and biases (torch starts its biases at zero, which would hide bias bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.5)
    return module


def make_pair(seed: int = 0, **options) -> tuple[nn.MultiheadAttention, compat.MultiheadAttention]:
    """torch's module with random weights and a compat module that loaded its state_dict."""
    theirs = randomize(nn.MultiheadAttention(**options, dtype=F64), seed)
    ours = compat.MultiheadAttention(**options, dtype=F64)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours
