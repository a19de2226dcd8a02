"""Checkpoints: a folder with the model's weights, the optimizer's state and a JSON file that says what
they are, written so that a run resumes exactly and an interrupted save never leaves a broken checkpoint.

    <folder>/checkpoint.json      task, model class and TransformerConfig, vocabulary, step, seed, training
                                  options, metric history, losses, the optimizer's hyperparameters, and the
                                  SHA-256 of the two tensor files and of the document itself
    <folder>/model.safetensors    the weights (a tied output head is stored once, under the embeddings)
    <folder>/optimizer.safetensors  AdamW's per-parameter state ("state.<index>.<name>")

There is no random-number state to save: training derives every step's randomness from (seed, step).

A save refuses non-finite weights or optimizer state, checks the document it is about to write against
the schema that loading applies, writes a temporary folder next to the target, then renames it into place
(headwise.files.replacing_folder). Loading checks every file (a regular file, present, matching its
checksum), every key of checkpoint.json (its type and range, and its consistency with the others) and every
tensor (names, shapes, finite values), and names the file and key at fault. A save killed between its two
renames leaves complete checkpoints beside the folder only: find_checkpoint finds the newest, and
recover_checkpoint puts it back in place.

    checkpoint_json.py     checkpoint.json: its keys, its checks, the files' SHA-256
    checkpoint_tensors.py  the two safetensors files: split, joined and checked
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..files import folder_leftovers, folder_target, remove_folder_leftovers, replacing_folder
from ..nn.config import TransformerConfig
from ..optional import require
from .checkpoint_json import (
    ADAM_STATE,
    CONFIG_FILE,
    FILES,
    FORMAT,
    MODEL_FILE,
    OPTIMIZER_FILE,
    VERSION,
    CheckpointError,
    check_document,
    document_sha256,
    file_sha256,
    verified_document,
)
from .checkpoint_tensors import (
    join_optimizer_state,
    load_weights,
    non_finite,
    read_tensors,
    some_of,
    split_optimizer_state,
    unique_tensors,
)
from .tasks import task_class
from .tasks.base import CharVocab, Task, build_model

CHECKPOINT_FOLDER = "checkpoint"  # in a run's output folder
INSTALL = "pip install 'headwise[train]'"


@dataclass
class Checkpoint:
    """A model and what is needed to use it or to resume its training.

    task: the task's name (a key of headwise.train.tasks.TASKS); task_params: the task's parameters.
    model: a Transformer (seq2seq tasks) or LanguageModel; config: its TransformerConfig.
    vocab: the CharVocab: vocab.encode(text) -> ids, vocab.decode(ids) -> text.
    step: optimizer steps taken; seed: the run's seed; options: the training options (a dict).
    metrics: one dict per evaluation ({"step": ..., "train_loss": ..., the task's metrics}).
    losses: the training loss of every step; elapsed_s: training time so far, in seconds.
    optimizer_state: AdamW's state_dict() (for resuming), or None (only at step 0, or when loaded
    with_optimizer=False).
    """

    task: str
    model: nn.Module
    vocab: CharVocab
    task_params: dict = field(default_factory=dict)
    step: int = 0
    seed: int = 0
    options: dict = field(default_factory=dict)
    metrics: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    elapsed_s: float = 0.0
    optimizer_state: dict | None = None
    path: Path | None = None

    @property
    def config(self) -> TransformerConfig:
        """The model's TransformerConfig (headwise's Transformer and LanguageModel keep theirs)."""
        config = self.model.config
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"the checkpoint's model has no TransformerConfig, got {type(config).__name__}")
        return config

    def make_task(self) -> Task:
        """The task object with this checkpoint's parameters (the shakespeare task reads its data)."""
        try:
            task = task_class(self.task)(**self.task_params)
        except ValueError as error:
            raise CheckpointError(f"{self._file(CONFIG_FILE)}: {error}") from None
        if task.vocab != self.vocab:
            raise CheckpointError(
                f"the {self.task!r} task's vocabulary ({len(task.vocab)} tokens) differs from the "
                f"checkpoint's ({len(self.vocab)} tokens): the data changed since it was trained"
            )
        return task

    def restore_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Load optimizer_state into `optimizer` (AdamW, made for this model), after checking that it fits:
        the same parameter groups with the same hyperparameters (but the learning rate, which every step
        sets) and, for every parameter it has state for, AdamW's state tensors of the parameter's shape."""
        if self.optimizer_state is None:
            return
        file = self._file(OPTIMIZER_FILE)
        groups = self.optimizer_state["param_groups"]
        sizes = [len(group["params"]) for group in optimizer.param_groups]
        if [len(group["params"]) for group in groups] != sizes:
            raise CheckpointError(
                f"{file}: the saved optimizer has parameter groups of sizes "
                f"{[len(group['params']) for group in groups]}, this model's has {sizes}"
            )
        for index, (saved, live) in enumerate(zip(groups, optimizer.param_groups, strict=True)):
            for key in sorted((set(saved) | set(live)) - {"params", "lr"}):  # lr: set at every step
                if saved.get(key, "missing") != live.get(key, "missing"):
                    raise CheckpointError(
                        f"{self._file(CONFIG_FILE)}: optimizer.param_groups[{index}].{key} is "
                        f"{saved.get(key, 'missing')!r}, but this run's AdamW (its training options, this "
                        f"torch) has {live.get(key, 'missing')!r}"
                    )
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        for index, values in self.optimizer_state["state"].items():
            if not 0 <= index < len(parameters):
                raise CheckpointError(
                    f"{file}: state for parameter {index}, but the model has {len(parameters)}"
                )
            missing = [name for name in ADAM_STATE if name not in values]
            if missing:
                raise CheckpointError(f"{file}: the state of parameter {index} lacks {missing}")
            for name, value in values.items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != parameters[index].shape:
                    raise CheckpointError(
                        f"{file}: state.{index}.{name} has shape {tuple(value.shape)}, but parameter {index} "
                        f"has shape {tuple(parameters[index].shape)}"
                    )
        optimizer.load_state_dict(self.optimizer_state)

    def _file(self, name: str) -> str:
        return str(self.path / name) if self.path is not None else name


def has_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a checkpoint (something named checkpoint.json is there)."""
    return os.path.lexists(Path(folder) / CONFIG_FILE)


def save_checkpoint(checkpoint: Checkpoint, folder: str | os.PathLike) -> Path:
    """Write `checkpoint` to `folder` (through a symbolic link; replacing a checkpoint there only once the
    new one is complete); returns the folder. Refuses to replace a folder that is not a checkpoint
    (FileExistsError), to save non-finite weights or optimizer state (FloatingPointError), and to write what
    load_checkpoint would refuse (ValueError)."""
    safetensors_torch = require("safetensors.torch", purpose="saving a checkpoint", install=INSTALL)
    target = check_checkpoint_target(folder)
    model_tensors = unique_tensors(checkpoint.model.state_dict())
    optimizer_tensors, optimizer_json = split_optimizer_state(checkpoint.optimizer_state)
    for name, tensors in ((MODEL_FILE, model_tensors), (OPTIMIZER_FILE, optimizer_tensors)):
        bad = non_finite(tensors)
        if bad:
            raise FloatingPointError(
                f"not saving the checkpoint of step {checkpoint.step} to {folder}: its {name} would hold "
                f"NaN or infinite values (in {some_of(bad)})"
            )
    with replacing_folder(target) as temporary:
        safetensors_torch.save_file(model_tensors, temporary / MODEL_FILE, metadata={"format": "pt"})
        safetensors_torch.save_file(optimizer_tensors, temporary / OPTIMIZER_FILE, metadata={"format": "pt"})
        document = {
            "format": FORMAT,
            "version": VERSION,
            "headwise_version": __version__,
            "torch_version": torch.__version__,
            "task": checkpoint.task,
            "task_params": checkpoint.task_params,
            "model_class": type(checkpoint.model).__name__,
            "config": checkpoint.config.to_dict(),
            "vocab": checkpoint.vocab.to_dict(),
            "step": checkpoint.step,
            "seed": checkpoint.seed,
            "options": checkpoint.options,
            "metrics": checkpoint.metrics,
            "losses": checkpoint.losses,
            "elapsed_s": checkpoint.elapsed_s,
            "optimizer": optimizer_json,
            "sha256": {name: file_sha256(temporary / name) for name in (MODEL_FILE, OPTIMIZER_FILE)},
        }
        document = json.loads(json.dumps(document, allow_nan=False))  # as loading reads it: tuples are lists
        document["sha256"][CONFIG_FILE] = document_sha256(document)
        try:
            check_document(document)
        except (TypeError, ValueError) as error:
            raise ValueError(f"not saving the checkpoint to {folder}: {CONFIG_FILE}: {error}") from None
        text = json.dumps(document, indent=1, allow_nan=False)
        (temporary / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")
    return Path(folder)


def check_checkpoint_target(folder: str | os.PathLike) -> Path:
    """The folder that saving a checkpoint to `folder` writes (through a symbolic link), after checking
    that it may: missing, empty, or holding a checkpoint. Else a FileExistsError: not overwriting it."""
    target = folder_target(folder)
    if target.exists() and not (target.is_dir() and (has_checkpoint(target) or not any(target.iterdir()))):
        raise FileExistsError(f"{folder} exists and is not a headwise checkpoint: not overwriting it")
    return target


def load_checkpoint(
    path: str | os.PathLike, *, device: torch.device | str = "cpu", with_optimizer: bool = True
) -> Checkpoint:
    """The checkpoint in `path` (a checkpoint folder, or a run's output folder that holds one in
    "checkpoint/"; see find_checkpoint), its model on `device` in eval mode; a CheckpointError names the
    file (and the key or tensor) at fault."""
    safetensors_torch = require("safetensors.torch", purpose="loading a checkpoint", install=INSTALL)
    folder = find_checkpoint(path)
    document = verified_document(folder)
    config = TransformerConfig.from_dict(document["config"])
    try:
        model = build_model(document["model_class"], config)
    except ValueError as error:  # too large for this machine
        raise CheckpointError(f"{folder / CONFIG_FILE}: config: {error}") from None
    weights = read_tensors(safetensors_torch, folder / MODEL_FILE)
    floating = {tensor.dtype for tensor in weights.values() if tensor.is_floating_point()}
    if len(floating) == 1:  # a run trained in float64 (say) resumes in float64
        model = model.to(floating.pop())
    load_weights(model, weights, folder / MODEL_FILE)
    optimizer_state = None
    if with_optimizer:
        tensors = read_tensors(safetensors_torch, folder / OPTIMIZER_FILE)
        optimizer_state = join_optimizer_state(tensors, document["optimizer"], folder / OPTIMIZER_FILE)
    return Checkpoint(
        task=document["task"],
        model=model.to(device).eval(),
        vocab=CharVocab.from_dict(document["vocab"]),
        task_params=document["task_params"],
        step=document["step"],
        seed=document["seed"],
        options=document["options"],
        metrics=document["metrics"],
        losses=document["losses"],
        elapsed_s=document["elapsed_s"],
        optimizer_state=optimizer_state,
        path=folder,
    )


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint folder at `path`, or at `path`/checkpoint; where neither holds one, the newest
    complete checkpoint that an interrupted save left beside them. FileNotFoundError if there is none."""
    path = Path(path)
    folders = (path, path / CHECKPOINT_FOLDER)
    for folder in folders:
        if has_checkpoint(folder):
            return folder
    leftovers = [leftover for folder in folders for leftover in folder_leftovers(folder)]
    newest = _newest_complete(leftovers)
    if newest is not None:
        return newest
    hint = f"; an interrupted save left only incomplete ones, in {leftovers[0].parent}" if leftovers else ""
    raise FileNotFoundError(
        f"no checkpoint at {path}: expected a folder with {', '.join(FILES)} (or a run's folder with them "
        f"in {CHECKPOINT_FOLDER}/){hint}"
    )


def recover_checkpoint(folder: str | os.PathLike) -> Path | None:
    """Finish a save into `folder` that was interrupted (killed) before it could clean up: of `folder` and
    the complete checkpoints left beside it, the newest (by step) takes the place of `folder`, and the
    leftovers are removed. Returns the leftover put in place, or None. A damaged checkpoint in `folder` is
    left as it is, leftovers included, for its owner to look at; so are incomplete leftovers when there
    is nothing complete to recover."""
    leftovers = folder_leftovers(folder)
    if not leftovers:
        return None
    target = folder_target(folder)
    present = has_checkpoint(target)
    if present and _newest_complete([target]) is None:
        return None
    newest = _newest_complete([*leftovers, *([target] if present else [])])
    if newest is None:
        return None
    if newest == target:
        remove_folder_leftovers(target)
        return None
    with replacing_folder(target) as temporary:  # removes the leftovers once the copy is in place
        for file in newest.iterdir():
            shutil.copy2(file, temporary / file.name)
    return newest


def _newest_complete(folders: Iterable[Path]) -> Path | None:
    """Of `folders`, the complete checkpoint (see verified_document) with the most steps, or None."""
    complete = []
    for folder in folders:
        try:
            complete.append((verified_document(folder)["step"], folder.stat().st_mtime, folder))
        except (OSError, CheckpointError):
            continue
    return max(complete)[-1] if complete else None
