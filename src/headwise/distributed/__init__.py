"""Attention across processes (context parallelism) on torch.distributed: gloo on CPUs, NCCL on GPUs.

Each of the P ranks of a process group holds a shard of the sequence (its queries, keys and values);
`context_parallel_attention` passes the key/value blocks round a ring and combines the partial results
exactly with `headwise.merge`, forward and backward. `shard` and `unshard` cut a full sequence into a
layout ("contiguous" or "zigzag") and gather it back.

Import it as `import headwise.distributed`: `import headwise` alone does not load it.
"""

from .layout import LAYOUTS, shard, unshard
from .ring import context_parallel_attention

__all__ = ["LAYOUTS", "context_parallel_attention", "shard", "unshard"]
