"""Checkpoints: a folder with the model's weights, the optimizer's state and a JSON file that says what
they are, written so that a run resumes exactly and an interrupted save never leaves a broken checkpoint.

    <folder>/checkpoint.json      task, model class and TransformerConfig, vocabulary, step, seed, training
                                  options, metric history, losses, the optimizer's hyperparameters, and the
                                  SHA-256 of both tensor files
    <folder>/model.safetensors    the weights (a tied output head is stored once, under the embeddings)
    <folder>/optimizer.safetensors  the optimizer's per-parameter state ("state.<index>.<name>")

There is no random-number state to save: training derives every step's randomness from (seed, step).

A save writes a temporary folder next to the target, then renames it into place; an older checkpoint is
replaced only once the new one is complete, and a failed save removes its temporary folder. Loading checks
every file (present, complete, matching its checksum and the config) and names the one at fault.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..checks import non_negative_int
from ..files import fsync
from ..nn.config import TransformerConfig
from ..optional import require
from .tasks import TASKS, task_class
from .tasks.base import MODEL_CLASSES, CharVocab, Task

FORMAT = "headwise-checkpoint"
VERSION = 1
CONFIG_FILE = "checkpoint.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
FILES = (CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE)
INSTALL = "pip install 'headwise[train]'"
REQUIRED_KEYS = ("format", "version", "task", "task_params", "model_class", "config", "vocab", "step", "seed")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, truncated, corrupt or inconsistent files."""


@dataclass
class Checkpoint:
    """A model and what is needed to use it or to resume its training.

    task: the task's name (a key of headwise.train.tasks.TASKS); task_params: the task's parameters.
    model: a Transformer (seq2seq tasks) or LanguageModel; config: its TransformerConfig.
    vocab: the CharVocab: vocab.encode(text) -> ids, vocab.decode(ids) -> text.
    step: optimizer steps taken; seed: the run's seed; options: the training options (a dict).
    metrics: one dict per evaluation ({"step": ..., "train_loss": ..., the task's metrics}).
    losses: the training loss of every step; elapsed_s: training time so far, in seconds.
    optimizer_state: an optimizer's state_dict() (for resuming), or None.
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
        return self.model.config

    def make_task(self) -> Task:
        """The task object with this checkpoint's parameters (the shakespeare task reads its data)."""
        try:
            task = task_class(self.task)(**self.task_params)
        except ValueError as error:
            raise CheckpointError(f"{self._json_name()}: {error}") from None
        if task.vocab != self.vocab:
            raise CheckpointError(
                f"the {self.task!r} task's vocabulary ({len(task.vocab)} tokens) differs from the "
                f"checkpoint's ({len(self.vocab)} tokens): the data changed since it was trained"
            )
        return task

    def restore_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Load optimizer_state into `optimizer` (made for this model), after checking that it fits: the
        same parameter groups and, for every parameter, state tensors of its shape."""
        if self.optimizer_state is None:
            return
        file = self.path / OPTIMIZER_FILE if self.path is not None else OPTIMIZER_FILE
        groups = self.optimizer_state["param_groups"]
        sizes = [len(group["params"]) for group in optimizer.param_groups]
        if [len(group["params"]) for group in groups] != sizes:
            raise CheckpointError(
                f"{file}: the saved optimizer has parameter groups of sizes "
                f"{[len(group['params']) for group in groups]}, this model's has {sizes}"
            )
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        for index, values in self.optimizer_state["state"].items():
            for name, value in values.items():
                if not 0 <= index < len(parameters):
                    raise CheckpointError(
                        f"{file}: state for parameter {index}, but the model has {len(parameters)}"
                    )
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != parameters[index].shape:
                    raise CheckpointError(
                        f"{file}: state.{index}.{name} has shape {tuple(value.shape)}, but parameter {index} "
                        f"has shape {tuple(parameters[index].shape)}"
                    )
        optimizer.load_state_dict(self.optimizer_state)

    def _json_name(self) -> str:
        return str(self.path / CONFIG_FILE) if self.path is not None else CONFIG_FILE


def has_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a checkpoint (its checkpoint.json exists)."""
    return (Path(folder) / CONFIG_FILE).is_file()


def save_checkpoint(checkpoint: Checkpoint, folder: str | os.PathLike) -> Path:
    """Write `checkpoint` to `folder` (replacing a checkpoint there only once the new one is complete);
    returns the folder. Refuses to replace a folder that is not a checkpoint."""
    safetensors_torch = require("safetensors.torch", purpose="saving a checkpoint", install=INSTALL)
    folder = Path(folder)
    if folder.exists() and not (folder.is_dir() and (has_checkpoint(folder) or not any(folder.iterdir()))):
        raise FileExistsError(f"{folder} exists and is not a headwise checkpoint: not overwriting it")
    with _replace_atomically(folder) as temporary:
        model_tensors = _unique_tensors(checkpoint.model.state_dict())
        safetensors_torch.save_file(model_tensors, temporary / MODEL_FILE, metadata={"format": "pt"})
        optimizer_tensors, optimizer_json = _split_optimizer_state(checkpoint.optimizer_state)
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
            "sha256": {name: _sha256(temporary / name) for name in (MODEL_FILE, OPTIMIZER_FILE)},
        }
        text = json.dumps(_finite(document), indent=1, allow_nan=False)
        (temporary / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")
    return folder


def load_checkpoint(
    path: str | os.PathLike, *, device: torch.device | str = "cpu", with_optimizer: bool = True
) -> Checkpoint:
    """The checkpoint in `path` (a checkpoint folder, or a run's output folder that holds one in
    "checkpoint/"), its model on `device` in eval mode; a CheckpointError names the file at fault."""
    safetensors_torch = require("safetensors.torch", purpose="loading a checkpoint", install=INSTALL)
    folder = find_checkpoint(path)
    document = _read_json(folder / CONFIG_FILE)
    for name in (MODEL_FILE, OPTIMIZER_FILE):
        file = folder / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing: the checkpoint is incomplete")
        if _sha256(file) != document["sha256"][name]:
            raise CheckpointError(
                f"{file} does not match the SHA-256 recorded in {folder / CONFIG_FILE}: the file is "
                "truncated, corrupt or from another checkpoint"
            )
    model_class, config, vocab = _model_description(document, folder / CONFIG_FILE)
    model = MODEL_CLASSES[model_class](config)
    tensors = _read_safetensors(safetensors_torch, folder / MODEL_FILE)
    _load_weights(model, tensors, folder / MODEL_FILE)
    optimizer_state = None
    if with_optimizer:
        optimizer_tensors = _read_safetensors(safetensors_torch, folder / OPTIMIZER_FILE)
        optimizer_state = _join_optimizer_state(optimizer_tensors, document, folder / OPTIMIZER_FILE)
    return Checkpoint(
        task=document["task"],
        model=model.to(device).eval(),
        vocab=vocab,
        task_params=document["task_params"],
        step=document["step"],
        seed=document["seed"],
        options=document.get("options", {}),
        metrics=document.get("metrics", []),
        losses=document.get("losses", []),
        elapsed_s=document.get("elapsed_s", 0.0),
        optimizer_state=optimizer_state,
        path=folder,
    )


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint folder at `path`, or at `path`/checkpoint; FileNotFoundError if neither holds one."""
    path = Path(path)
    for folder in (path, path / "checkpoint"):
        if has_checkpoint(folder):
            return folder
    leftovers = sorted(path.parent.glob(f".{path.name}.old-*")) + sorted(path.glob(".checkpoint.old-*"))
    hint = (
        f"; an earlier save was interrupted while replacing it: the previous one is in {leftovers[0]}"
        if leftovers
        else ""
    )
    raise FileNotFoundError(
        f"no checkpoint at {path}: expected a folder with {', '.join(FILES)} (or a run's folder with them "
        f"in checkpoint/){hint}"
    )


@contextlib.contextmanager
def _replace_atomically(folder: Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to `folder`; when the block succeeds, it takes the place of
    `folder` (an old one is moved aside, then deleted); when it fails, the temporary folder is removed."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    old = temporary.with_name(temporary.name.replace(".tmp-", ".old-", 1))
    moved_aside = replaced = False
    try:
        yield temporary
        mask = _umask()
        for file in temporary.iterdir():
            file.chmod(0o666 & ~mask)  # as an ordinary file (temporary files are private)
            fsync(file)
        temporary.chmod(0o777 & ~mask)
        fsync(temporary)  # its entries too, before it is renamed into place
        if folder.exists():
            os.rename(folder, old)  # the old checkpoint stays whole until the new one is in place
            moved_aside = True
        os.rename(temporary, folder)
        replaced = True
        fsync(folder.parent)
    except BaseException:  # Ctrl-C included: put the old checkpoint back, remove the new one
        if moved_aside and not replaced:
            os.rename(old, folder)
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if moved_aside:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _finite(value: object) -> object:
    """`value` with every non-finite float replaced by None (JSON has no NaN or infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict without aliases (a tied lm_head.weight is the embeddings' tensor): the first name of
    each tensor, on the CPU, contiguous."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    unique = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            unique[name] = tensor.detach().cpu().contiguous()
    return unique


def _split_optimizer_state(state: dict | None) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state_dict -> its tensors {"state.<index>.<name>": tensor} and the rest, for JSON."""
    if state is None:
        return {}, {"param_groups": None, "scalars": {}}
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"state.{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], document: dict, file: Path) -> dict | None:
    """The inverse of _split_optimizer_state."""
    saved = document.get("optimizer") or {}
    if saved.get("param_groups") is None:
        return None
    state: dict[int, dict[str, object]] = {}
    for key, value in [*tensors.items(), *saved.get("scalars", {}).items()]:
        parts = key.split(".")
        if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit():
            raise CheckpointError(
                f"{file}: unexpected optimizer entry {key!r} (expected 'state.<index>.<name>')"
            )
        state.setdefault(int(parts[1]), {})[parts[2]] = value
    groups = [
        {
            key: tuple(value) if isinstance(value, list) and key != "params" else value
            for key, value in group.items()
        }
        for group in saved["param_groups"]
    ]  # JSON made the tuples (AdamW's betas) lists
    return {"state": state, "param_groups": groups}


def _read_json(file: Path) -> dict:
    """checkpoint.json, checked for its format and required keys."""
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"{file} is not readable JSON ({error}): the file is truncated or corrupt"
        ) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f'{file} is not a headwise checkpoint: expected "format": {FORMAT!r}')
    if document.get("version") != VERSION:
        raise CheckpointError(
            f"{file} has checkpoint version {document.get('version')!r}; this headwise reads version "
            f"{VERSION}"
        )
    missing = [key for key in (*REQUIRED_KEYS, "sha256") if key not in document]
    if missing:
        raise CheckpointError(f"{file} lacks the key(s) {missing}")
    if not isinstance(document["sha256"], dict) or set(document["sha256"]) != {MODEL_FILE, OPTIMIZER_FILE}:
        raise CheckpointError(
            f'{file}: "sha256" must give the checksums of {MODEL_FILE} and {OPTIMIZER_FILE}'
        )
    for key in ("step", "seed"):
        try:
            non_negative_int(document[key], key)
        except ValueError as error:
            raise CheckpointError(f"{file}: {error}") from None
    for key, kind in (("task_params", dict), ("options", dict), ("metrics", list), ("losses", list)):
        if not isinstance(document.get(key, kind()), kind):
            raise CheckpointError(f"{file}: {key!r} must be a {kind.__name__}, got {document[key]!r:.100}")
    if not all(isinstance(m, dict) for m in document.get("metrics", [])):
        raise CheckpointError(f"{file}: 'metrics' must be a list of dicts")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in document.get("losses", [])):
        raise CheckpointError(f"{file}: 'losses' must be a list of numbers")
    return document


def _model_description(document: dict, file: Path) -> tuple[str, TransformerConfig, CharVocab]:
    """The model class's name, the config and the vocabulary in checkpoint.json, checked."""
    if document["task"] not in TASKS:
        raise CheckpointError(f"{file}: unknown task {document['task']!r}; the tasks are {sorted(TASKS)}")
    model_class = document["model_class"]
    expected_class = TASKS[document["task"]].model_class
    if model_class != expected_class:
        raise CheckpointError(
            f"{file}: the {document['task']!r} task trains a {expected_class}, but model_class is "
            f"{model_class!r}"
        )
    try:
        config = TransformerConfig.from_dict(document["config"])
        vocab = CharVocab.from_dict(document["vocab"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{file}: {error}") from None
    if config.vocab_size != len(vocab):
        raise CheckpointError(
            f"{file}: config.vocab_size is {config.vocab_size} but the vocabulary has {len(vocab)} tokens"
        )
    return model_class, config, vocab


def _read_safetensors(safetensors_torch, file: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors_torch.load_file(file)
    except Exception as error:  # safetensors raises its own SafetensorError, and OSError
        raise CheckpointError(f"{file} is not a readable safetensors file ({error})") from None


def _load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], file: Path) -> None:
    """Copy `tensors` into `model`, after checking that they are exactly the model's (names and shapes)."""
    expected = _unique_tensors(model.state_dict())
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong_shape = [
        f"{name} {tuple(tensors[name].shape)} {tensors[name].dtype} (the config expects "
        f"{tuple(expected[name].shape)} {expected[name].dtype})"
        for name in expected
        if name in tensors
        and (tensors[name].shape != expected[name].shape or tensors[name].dtype != expected[name].dtype)
    ]
    if missing or unexpected or wrong_shape:
        details = [
            f"{label}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
            for label, names in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape or dtype", wrong_shape),
            )
            if names
        ]
        raise CheckpointError(f"{file} does not fit the model config in {CONFIG_FILE}: {'; '.join(details)}")
    with torch.no_grad():
        state = model.state_dict()
        for name, tensor in tensors.items():
            state[name].copy_(tensor)
