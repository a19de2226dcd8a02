"""Data parallelism for `headwise train`: the P processes (ranks) of a torch.distributed group each take a
fixed share of every global batch, and DistributedDataParallel averages their gradients, so that P ranks
take the steps that one process takes with the same global batch.

    ranks = Ranks.of(group)                     # P = 1, and no communication, without a process group
    mine = ranks.share(batch)                   # rows [r·B/P, (r+1)·B/P) of each (B, ...) tensor
    trained = ranks.wrap(model, device)         # DistributedDataParallel when P > 1
    loss = ranks.mean(local_loss)               # the global batch's mean, on every rank
    result = ranks.from_rank_zero(fn)           # fn() on rank 0; its result, or its error, on every rank

Every rank makes the whole global batch from (seed, step) and keeps its own rows, so the sharding is a
function of (seed, step, P, r) alone, and the ranks' rows together are the batch of one process, padded
alike. The mean of the ranks' mean losses is the batch's mean when every example predicts the same number
of tokens (the tasks' do); then the averaged gradients are the gradients of one process, up to rounding.

`start_local_ranks` starts P processes on this machine with a process group (gloo on CPUs, NCCL on GPUs)
made from a file store, for `headwise train --nproc P`; torchrun does the same across machines.
"""

from __future__ import annotations

import os
import pickle
import signal
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the P ranks of a process group (P = 1 and rank 0 without one)."""

    world: int = 1  # P
    rank: int = 0  # r
    group: dist.ProcessGroup | None = None

    @classmethod
    def of(cls, group: dist.ProcessGroup | None = None) -> Ranks:
        """The ranks of `group` (None: the default group, when torch.distributed is initialised)."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_world_size(group), dist.get_rank(group), group)

    @property
    def is_zero(self) -> bool:
        return self.rank == 0

    def check_batch(self, batch_size: int) -> None:
        """A ValueError unless the global batch splits into P equal shares."""
        if batch_size % self.world:
            raise ValueError(
                f"batch_size ({batch_size}) must be a multiple of the number of processes ({self.world}): "
                f"each process trains on batch_size / {self.world} examples of every batch"
            )

    def share(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's rows of a batch: each tensor (B, ...) -> (B/P, ...), rows [r·B/P, (r+1)·B/P)."""
        if self.world == 1:
            return batch
        size = next(iter(batch.values())).shape[0] // self.world  # B/P
        return {key: value.narrow(0, self.rank * size, size) for key, value in batch.items()}  # (B/P, ...)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """`model` in DistributedDataParallel when P > 1 (its backward averages the gradients over the
        ranks); `model` itself for one."""
        if self.world == 1:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, process_group=self.group)

    def mean(self, value: torch.Tensor) -> float:
        """The mean over the ranks of a scalar (every rank's share of a batch), on every rank."""
        if self.world == 1:
            return value.item()
        total = value.detach().double().reshape(1).clone()  # (1,)
        dist.all_reduce(total, group=self.group)
        return total.item() / self.world

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any rank, on every rank."""
        if self.world == 1:
            return flag
        count = torch.tensor([int(flag)], device=self._device())  # (1,)
        dist.all_reduce(count, group=self.group)
        return bool(count.item())

    def from_rank_zero(self, fn: Callable[[], T]) -> T:
        """fn() run on rank 0 only; its result on every rank, or on every rank the error it raised, so
        that no rank waits for a rank that failed (the result and the error are pickled)."""
        if self.world == 1:
            return fn()
        outcome: list[Any] = [None]  # rank 0's (kind, value), as broadcast_object_list unpickles it
        if self.is_zero:
            try:
                outcome[0] = ("result", fn())
            except Exception as error:  # every rank raises it below
                outcome[0] = ("error", error)
        dist.broadcast_object_list(outcome, src=dist.get_global_rank(self._group(), 0), group=self.group)
        kind, value = outcome[0]
        if kind == "error":
            raise value
        return value

    def _group(self) -> dist.ProcessGroup:
        """The process group of the collectives: self.group, else the default (WORLD) group."""
        group = dist.group.WORLD if self.group is None else self.group
        if group is None:
            raise RuntimeError("torch.distributed has no default process group: call init_process_group")
        return group

    def _device(self) -> torch.device:
        """Where this group's collectives take tensors: the current GPU for NCCL, else the CPU."""
        nccl = dist.get_backend(self._group()) == "nccl"
        return torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")


def backend_for(device: torch.device) -> str:
    """The torch.distributed backend for training on `device`: NCCL on GPUs, gloo on CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


def start_local_ranks(
    fn: Callable[..., T],
    args: tuple[object, ...],
    world: int,
    device: torch.device,
    *,
    timeout_s: float = 1800,
    preload: Sequence[str] = (),
) -> list[T]:
    """fn(rank, *args) in `world` new processes of this machine, each in a process group of them all
    (made from a file store; gloo on CPUs, NCCL on GPUs, rank r on GPU r), destroyed when fn returns;
    -> each rank's result (pickled back), once all are done. Each process gets this one's torch threads
    divided among them. A process that raises makes this raise torch.multiprocessing's
    ProcessRaisedException, with its traceback.

    Ctrl-C reaches the processes themselves (they are in this one's process group): while they run,
    this process ignores it and waits for them. A fork server that imported the main module, this one,
    fn's and those named in `preload` once starts the processes where there is one (Linux): each
    spawned process would import torch and headwise again. (The fork server starts once per Python
    process, at the first call: later calls reuse it, preload and all.)"""
    threads = max(1, torch.get_num_threads() // world)
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    if method == "forkserver":
        modules = dict.fromkeys(["__main__", __name__, fn.__module__, *preload])  # imported by the server
        mp.get_context("forkserver").set_forkserver_preload(list(modules))
    previous = signal.signal(signal.SIGINT, _wait_for_the_ranks)
    try:
        with tempfile.TemporaryDirectory(prefix="headwise-ranks-") as folder:
            context = mp.start_processes(
                _rank_main,
                args=(world, folder, device.type, threads, timeout_s, fn, args),
                nprocs=world,
                join=False,
                start_method=method,
            )
            while not context.join():
                pass
            return [_read_result(folder, rank) for rank in range(world)]
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_for_the_ranks(signum: int, frame: object) -> None:
    """SIGINT while the ranks run: theirs to handle (a first Ctrl-C saves after the step)."""


def _rank_main(
    rank: int,
    world: int,
    folder: str,
    device_type: str,
    threads: int,
    timeout_s: float,
    fn: Callable[..., object],
    args: tuple[object, ...],
) -> None:
    """One rank of start_local_ranks: fn(rank, *args) in the process group, its result pickled to folder."""
    torch.set_num_threads(threads)
    if device_type == "cuda":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group(
        backend_for(torch.device(device_type)),
        init_method=f"file://{os.path.join(folder, 'store')}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )
    try:
        result = fn(rank, *args)
    finally:
        dist.destroy_process_group()
    with open(os.path.join(folder, f"rank{rank}.pickle"), "wb") as file:
        pickle.dump(result, file)


def _read_result(folder: str, rank: int) -> Any:
    """What rank `rank` pickled into `folder`."""
    with open(os.path.join(folder, f"rank{rank}.pickle"), "rb") as file:
        return pickle.load(file)
