"""What a run of `headwise train` shows: a line per evaluation (its losses and the task's metric), the
progress bar on stderr (rich; nothing when quiet), and the loss curve as a PNG, written atomically.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..files import replacing
from ..optional import require
from .checkpoint import INSTALL, Checkpoint
from .options import TrainOptions
from .tasks.base import Task

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

PLOT_FILE = "loss.png"
METRIC_LABELS = {"exact_match": "held-out exact match (%)", "bpc": "validation bits per character"}


def describe_evaluation(task: Task, metrics: dict[str, float], options: TrainOptions) -> str:
    """One evaluation as a line: the training loss (the mean over the last min(step, eval_every) steps, as
    _evaluate takes it), the held-out loss and the task's metric."""
    steps = min(metrics["step"], options.eval_every)
    return (
        f"step {metrics['step']}: train loss {metrics['train_loss']:.4f} (mean of the last {steps} "
        f"steps), held-out loss {metrics['loss']:.4f}, {metric_text(task, metrics)}"
    )


def metric_text(task: Task, metrics: dict[str, float]) -> str:
    value = metrics[task.metric]
    shown = f"{100 * value:.2f}%" if task.metric == "exact_match" else f"{value:.4f}"
    return f"{task.metric} {shown}"


def plot_losses(run: Checkpoint, task: Task, path: Path) -> Path:
    """The loss curve: training loss per step (and its running mean), held-out loss and the task's metric at
    each evaluation; written to a temporary file, then renamed to `path`."""
    require("matplotlib", purpose="the loss curve", install=INSTALL)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5), dpi=110)
    try:
        steps = range(1, len(run.losses) + 1)
        axis.plot(steps, run.losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="training loss")
        window = max(1, len(run.losses) // 50)
        smooth = torch.tensor(run.losses).unfold(0, window, 1).mean(1).tolist() if run.losses else []
        axis.plot(
            range(window, len(run.losses) + 1), smooth, color="tab:blue", label=f"running mean ({window})"
        )
        evaluated = [m for m in run.metrics if m.get("loss") is not None]
        axis.plot([m["step"] for m in evaluated], [m["loss"] for m in evaluated], "o-", color="tab:orange",
                  label="held-out loss")  # fmt: skip
        axis.set(xlabel="step", ylabel="cross-entropy (nats per token)", yscale="log")
        axis.set_title(f"headwise train --task {run.task}: {run.step} steps, {run.elapsed_s:.0f} s")
        axis.grid(alpha=0.3)
        right = axis.twinx()
        scale = 100 if task.metric == "exact_match" else 1
        label = METRIC_LABELS.get(task.metric, f"held-out {task.metric}")
        right.plot([m["step"] for m in evaluated], [scale * m[task.metric] for m in evaluated], "s--",
                   color="tab:green", label=label)  # fmt: skip
        right.set_ylabel(label)
        lines = axis.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        axis.legend(lines, [str(line.get_label()) for line in lines], loc="center right")
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as temporary:
            figure.savefig(temporary)
    finally:
        plt.close(figure)
    return path


class ProgressBar:
    """The progress bar (rich, on stderr), or nothing when quiet."""

    def __init__(self, progress: Progress | None, task_id: TaskID | None) -> None:
        self.progress_bar, self._task_id = progress, task_id

    def advance(self, loss: float, metrics: dict[str, float] | None, task: Task) -> None:
        if self.progress_bar is not None and self._task_id is not None:
            shown = "" if metrics is None else f" · {metric_text(task, metrics)}"
            self.progress_bar.update(self._task_id, advance=1, status=f"this step's loss {loss:.4f}{shown}")

    def log(self, text: str) -> None:
        if self.progress_bar is not None:
            self.progress_bar.console.print(text, highlight=False)


@contextlib.contextmanager
def progress_bar(quiet: bool, total: int, done: int) -> Iterator[ProgressBar]:
    if quiet:
        yield ProgressBar(None, None)
        return
    require("rich", purpose="headwise train's progress bar", install=INSTALL)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield ProgressBar(progress, progress.add_task("training", total=total, completed=done, status=""))
