"""Attention across processes (context parallelism) on torch.distributed: gloo on CPUs, NCCL on GPUs.

Each of the P ranks of a process group holds a shard of the sequence (its queries, keys and values);
`context_parallel_attention` passes the key/value blocks round a ring and combines the partial results
exactly with `headwise.merge`, forward and backward. `shard` and `unshard` cut a full sequence into a
layout ("contiguous" or "zigzag") and gather it back. `data_parallel` holds what `headwise train` needs
on several processes: each rank's share of a batch, DistributedDataParallel, rank 0's work and its
errors passed to every rank, and the start of P local processes (`--nproc`).

Import it as `import headwise.distributed`: `import headwise` alone does not load it.
"""

from .layout import LAYOUTS, shard, unshard
from .ring import context_parallel_attention

__all__ = ["LAYOUTS", "context_parallel_attention", "shard", "unshard"]
