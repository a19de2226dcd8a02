"""The training loop of `headwise train`: AdamW with a linear warmup and a cosine decay, gradient clipping,
periodic evaluation and checkpoints, a progress bar on stderr, and a loss-curve PNG (display.py).

    run = new_run(task, config, options, seed)          # or load_checkpoint(out) to resume
    result = train(run, task, out)                       # -> out/checkpoint/, out/loss.png

Every step's randomness (its batch, and dropout) is a function of (seed, step), and a checkpoint holds the
weights and the optimizer's state after a whole step, so stopping and resuming gives exactly the weights
of an uninterrupted run (on the same device, with the same number of threads). Ctrl-C stops after the
current step (and evaluation) and saves a checkpoint; a second Ctrl-C stops at once, without saving. A
step whose loss, gradients or updated weights are NaN or infinite stops training with a FloatingPointError
that names it, before anything is saved.

In a torch.distributed process group (torchrun, or `headwise train --nproc P`), each of the P ranks trains
on its share of every global batch with DistributedDataParallel (headwise.distributed.data_parallel):
without dropout, the steps of one process with the same global batch, up to rounding. Rank 0 alone
evaluates, saves and shows progress; the ranks agree on every step's loss and on stopping, and an error
on rank 0 is raised on every rank. A checkpoint does not depend on P, so a run resumes on any P. With
dropout, rank r draws its masks from (seed, step, r): a run resumes exactly on the same P, and on another
P continues with other masks.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import torch
from torch import nn

from ..checks import fits_in_memory
from ..distributed.data_parallel import Ranks
from ..files import file_target
from ..nn.config import TransformerConfig
from ..optional import require
from .checkpoint import CHECKPOINT_FOLDER, INSTALL, Checkpoint, check_checkpoint_target, save_checkpoint
from .display import PLOT_FILE, describe_evaluation, plot_losses, progress_bar
from .options import TrainOptions
from .tasks.base import Task, check_seed, derive_seed, to_device

# What train() imports at its first use, slowly: a fork server that starts ranks imports them for all
# (AdamW's constructor imports torch._dynamo; the loss curve, matplotlib).
SLOW_IMPORTS = ("torch._dynamo", "matplotlib.pyplot")


@dataclass
class TrainResult:
    """What train() did: the run (a Checkpoint, at its last step), the last evaluation, whether it was
    interrupted, and the wall-clock seconds of this call."""

    run: Checkpoint
    metrics: dict[str, float] | None
    interrupted: bool
    wall_s: float
    checkpoint: Path
    plot: Path | None


def learning_rate_at(step: int, options: TrainOptions) -> float:
    """The learning rate of step `step` (0-based): linear warmup, then cosine decay to the final fraction."""
    peak = options.learning_rate
    if step < options.warmup_steps:
        return peak * (step + 1) / options.warmup_steps
    decay_steps = max(1, options.steps - options.warmup_steps - 1)
    progress = min(1.0, (step - options.warmup_steps) / decay_steps)
    low = peak * options.final_lr_fraction
    return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * progress))


def resolve_device(device: str) -> torch.device:
    """ "cpu", "cuda" (an error if torch has no GPU) or "auto" (cuda if there is one) -> a torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but torch {torch.__version__} sees no CUDA GPU")
    return torch.device(device)


def new_run(task: Task, config: TransformerConfig, options: TrainOptions, seed: int) -> Checkpoint:
    """A fresh run at step 0: the task's model, initialised from `seed`."""
    seed = check_seed(seed)
    check_batch_fits(config, options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        model = task.build_model(config)
    return Checkpoint(
        task=task.name,
        model=model,
        vocab=task.vocab,
        task_params=dict(task.params),
        seed=seed,
        options=options.to_dict(),
    )


def make_optimizer(model: nn.Module, options: TrainOptions) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices (≥ 2-D parameters) and none on biases and norms."""
    parameters = list(model.parameters())  # a tied matrix once
    return torch.optim.AdamW(
        [
            {"params": [p for p in parameters if p.dim() >= 2], "weight_decay": options.weight_decay},
            {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=options.learning_rate,
        betas=(0.9, options.beta2),
    )


def train(
    run: Checkpoint,
    task: Task,
    out: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    quiet: bool = False,
    stop_at: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train `run` (fresh, or loaded to resume) from run.step to its options' steps, saving checkpoints in
    out/checkpoint and the loss curve in out/loss.png.

    stop_at: stop (and save) after this step, as an interrupt would. on_step(step) is called after each
    step. Progress goes to stderr unless `quiet`. Returns a TrainResult; the run's model is left on
    `device`, in eval mode.

    When torch.distributed is initialised, every rank of the default process group calls train() with
    the same run, and the options' batch_size is the global batch (a multiple of P); see the module's
    docstring. The result is the same on every rank.
    """
    require("safetensors", purpose="headwise train (checkpoints)", install=INSTALL)
    require("matplotlib", purpose="headwise train (the loss curve)", install=INSTALL)
    if run.task != task.name:
        raise ValueError(f"the run is for the {run.task!r} task, but the task given is {task.name!r}")
    if run.vocab != task.vocab:
        raise ValueError(
            f"the run's vocabulary ({len(run.vocab)} tokens) differs from the {task.name!r} task's "
            f"({len(task.vocab)} tokens)"
        )
    options = TrainOptions.from_dict(run.options)
    ranks = Ranks.of()
    ranks.check_batch(options.batch_size)
    _check_fits(run.config, task)
    check_batch_fits(run.config, options)
    if run.step and run.optimizer_state is None:
        raise ValueError(
            f"the run is at step {run.step} but has no optimizer state (loaded with with_optimizer=False?): "
            "resuming with a fresh AdamW would not continue it"
        )
    device = resolve_device(device) if isinstance(device, str) else device
    out = Path(out)
    check_checkpoint_target(out / CHECKPOINT_FOLDER)  # before training, not at the first save
    if out.is_dir():
        file_target(out / PLOT_FILE)
    model = run.model.to(device)
    optimizer = make_optimizer(model, options)
    run.restore_optimizer(optimizer)
    trained = ranks.wrap(model, device)  # the model, or DistributedDataParallel around it
    started, elapsed_before = time.perf_counter(), run.elapsed_s
    metrics = run.metrics[-1] if run.metrics else None
    interrupted = False
    saved_at = run.step

    def save() -> None:
        nonlocal saved_at
        saved_at = run.step
        run.elapsed_s = elapsed_before + time.perf_counter() - started
        run.optimizer_state = optimizer.state_dict()

        def write() -> None:
            save_checkpoint(run, out / CHECKPOINT_FOLDER)
            plot_losses(run, task, out / PLOT_FILE)

        ranks.from_rank_zero(write)

    silent = quiet or not ranks.is_zero
    with progress_bar(silent, options.steps, run.step) as progress, _Interrupts() as interrupts:
        for step in range(run.step, options.steps):
            loss = _train_step(model, trained, optimizer, task, run, step, options, device, ranks)
            run.step = step + 1
            run.losses.append(loss)
            if run.step % options.eval_every == 0 or run.step == options.steps:
                metrics = ranks.from_rank_zero(
                    lambda: _evaluate(model, task, run, options, started, elapsed_before)
                )
                run.metrics.append(metrics)
                progress.log(describe_evaluation(task, metrics, options))
            if run.step % options.checkpoint_every == 0 or run.step == options.steps:
                save()
            progress.advance(loss, metrics, task)
            if on_step is not None:
                on_step(run.step)
            if (ranks.any(interrupts.requested) or run.step == stop_at) and run.step < options.steps:
                if saved_at != run.step:
                    save()
                interrupted = True
                break
    run.elapsed_s = elapsed_before + time.perf_counter() - started
    model.eval()
    plot = out / PLOT_FILE
    return TrainResult(
        run,
        metrics,
        interrupted,
        time.perf_counter() - started,
        out / CHECKPOINT_FOLDER,
        plot if plot.exists() else None,
    )


def check_batch_fits(config: TransformerConfig, options: TrainOptions) -> None:
    """A ValueError with both sizes if this machine could not hold a training batch: the embeddings and
    every layer keep at least their output (B, N, D) for the backward pass (N up to max_positions), so
    that an absurd batch_size is refused before the batch is made."""
    layers = config.num_encoder_layers + config.num_decoder_layers
    fits_in_memory(
        4 * options.batch_size * config.max_positions * config.d_model * (layers + 1),
        f"a training batch of {options.batch_size:,} sequences of up to {config.max_positions:,} tokens (the "
        "float32 outputs of the embeddings and of every layer, kept for the backward pass)",
    )


def _check_fits(config: TransformerConfig, task: Task) -> None:
    block = getattr(task, "block_size", None)
    if block is not None and config.max_positions < block:
        raise ValueError(
            f"the model's max_positions ({config.max_positions}) must be at least the task's block_size "
            f"({block})"
        )


def _train_step(
    model: nn.Module,
    trained: nn.Module,
    optimizer: torch.optim.Optimizer,
    task: Task,
    run: Checkpoint,
    step: int,
    options: TrainOptions,
    device: torch.device,
    ranks: Ranks,
) -> float:
    """One optimizer step on the batch of `step` (0-based), this rank's share of it; returns the whole
    batch's loss. Its randomness is seeded from (seed, step) alone (and the rank, on P > 1). A
    FloatingPointError stops training at the step whose loss, gradients or updated weights are NaN or
    infinite, before anything non-finite can be saved (on every rank alike). `trained` is the model, or
    DistributedDataParallel around it."""
    learning_rate = learning_rate_at(step, options)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    dropout = ("rank", ranks.rank) if ranks.world > 1 else ()
    torch.manual_seed(derive_seed(run.seed, "step", step, *dropout))  # dropout, if the model has any
    batch = to_device(ranks.share(task.batch(run.seed, step, options.batch_size)), device)  # B/P rows
    trained.train()
    loss = task.loss(trained, batch)
    batch_loss = ranks.mean(loss)
    if not math.isfinite(batch_loss):
        _diverged(f"the training loss is {batch_loss}", step, options)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # with DistributedDataParallel, the gradients averaged over the ranks
    norm = nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
    if not torch.isfinite(norm):
        _diverged(f"the gradients' norm is {norm.item()}", step, options)
    optimizer.step()
    if not bool(torch.stack([p.isfinite().all() for p in model.parameters()]).all()):
        bad = [name for name, p in model.named_parameters() if not bool(p.isfinite().all())]
        shown = ", ".join(bad[:3]) + (" ..." if len(bad) > 3 else "")
        _diverged(f"the update made weights NaN or infinite ({shown})", step, options)
    return batch_loss


def _diverged(what: str, step: int, options: TrainOptions) -> NoReturn:
    raise FloatingPointError(
        f"training diverged at step {step + 1}: {what}; nothing of this step was saved (the last checkpoint "
        f"is intact); try a lower learning_rate (now {options.learning_rate:g})"
    )


def _evaluate(
    model: nn.Module, task: Task, run: Checkpoint, options: TrainOptions, started: float, before: float
) -> dict[str, float]:
    """The metrics of an evaluation on the held-out data (run.metrics' next entry)."""
    since = run.losses[-min(len(run.losses), options.eval_every) :]
    metrics = {
        "step": run.step,
        "train_loss": sum(since) / max(1, len(since)),
        **task.evaluate(model),
        "elapsed_s": before + time.perf_counter() - started,
    }
    return metrics


class _Interrupts:
    """While active (in the main thread), the first Ctrl-C sets `requested`; a second raises
    KeyboardInterrupt at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None  # signal's handler

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
