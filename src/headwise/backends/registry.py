"""The registry of backends: each module in MODULES, loaded as a Backend (its name, its `attention`, its
CAPABILITIES). The dispatcher, the tuner, the cache file's checks, the oracle grid (tests) and the
benchmarks read BACKENDS; it imports no part of the dispatch, so that nothing imports in a circle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .capabilities import Capabilities, Request

MODULES = ("reference", "sdpa", "chunked", "blocksparse", "dense", "triton", "flex")


@dataclass(frozen=True)
class Backend:
    name: str
    run: Callable[..., tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]
    capabilities: Capabilities

    def unsupported(self, request: Request) -> str | None:
        """What this backend cannot do for `request`, or None."""
        return self.capabilities.unsupported(request)


def _load(name: str) -> Backend:
    module = importlib.import_module(f"{__package__}.{name}")
    return Backend(name, module.attention, module.CAPABILITIES)


BACKENDS: dict[str, Backend] = {name: _load(name) for name in MODULES}
