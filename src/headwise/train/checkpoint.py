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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..checks import (
    finite_number,
    fraction,
    known_keys,
    non_negative_int,
    non_negative_number,
    of_type,
    positive_number,
)
from ..files import folder_leftovers, folder_target, kind_of, remove_folder_leftovers, replacing_folder
from ..nn.config import TransformerConfig
from ..optional import require
from .options import TrainOptions
from .tasks import task_class
from .tasks.base import CharVocab, Task, build_model, check_seed

FORMAT = "headwise-checkpoint"
VERSION = 2  # 2: checkpoint.json covered by its own SHA-256, every key required
CHECKPOINT_FOLDER = "checkpoint"  # in a run's output folder
CONFIG_FILE = "checkpoint.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
FILES = (CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE)
INSTALL = "pip install 'headwise[train]'"
MAX_JSON_BYTES = 1 << 30  # a million steps of losses take about 20 MB
KEYS = (
    "format", "version", "headwise_version", "torch_version", "task", "task_params", "model_class",
    "config", "vocab", "step", "seed", "options", "metrics", "losses", "elapsed_s", "optimizer", "sha256",
)  # fmt: skip
METRIC_KEYS = ("step", "train_loss", "loss", "elapsed_s")  # in every evaluation, with the task's metric
GROUP_KEYS = ("params", "lr", "betas", "eps", "weight_decay")  # in every AdamW parameter group
ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")  # of every parameter AdamW has stepped
OPTIMIZER_ENTRY = re.compile(r"state\.(\d+)\.(\w+)")


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
        return self.model.config

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
    model_tensors = _unique_tensors(checkpoint.model.state_dict())
    optimizer_tensors, optimizer_json = _split_optimizer_state(checkpoint.optimizer_state)
    for name, tensors in ((MODEL_FILE, model_tensors), (OPTIMIZER_FILE, optimizer_tensors)):
        bad = _non_finite(tensors)
        if bad:
            raise FloatingPointError(
                f"not saving the checkpoint of step {checkpoint.step} to {folder}: its {name} would hold "
                f"NaN or infinite values (in {_some(bad)})"
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
            "sha256": {name: _sha256(temporary / name) for name in (MODEL_FILE, OPTIMIZER_FILE)},
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
    document = _verified_document(folder)
    config = TransformerConfig.from_dict(document["config"])
    try:
        model = build_model(document["model_class"], config)
    except ValueError as error:  # too large for this machine
        raise CheckpointError(f"{folder / CONFIG_FILE}: config: {error}") from None
    weights = _read_tensors(safetensors_torch, folder / MODEL_FILE)
    floating = {tensor.dtype for tensor in weights.values() if tensor.is_floating_point()}
    if len(floating) == 1:  # a run trained in float64 (say) resumes in float64
        model = model.to(floating.pop())
    _load_weights(model, weights, folder / MODEL_FILE)
    optimizer_state = None
    if with_optimizer:
        tensors = _read_tensors(safetensors_torch, folder / OPTIMIZER_FILE)
        optimizer_state = _join_optimizer_state(tensors, document["optimizer"], folder / OPTIMIZER_FILE)
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
    """Of `folders`, the complete checkpoint (see _verified_document) with the most steps, or None."""
    complete = []
    for folder in folders:
        try:
            complete.append((_verified_document(folder)["step"], folder.stat().st_mtime, folder))
        except (OSError, CheckpointError):
            continue
    return max(complete)[-1] if complete else None


def _verified_document(folder: Path) -> dict:
    """checkpoint.json of `folder`, checked (see _read_json), after checking that both tensor files are
    regular files that match the SHA-256 it records."""
    document = _read_json(folder / CONFIG_FILE)
    for name in (MODEL_FILE, OPTIMIZER_FILE):
        file = folder / name
        _check_regular_file(file)
        if _sha256(file) != document["sha256"][name]:
            raise CheckpointError(
                f"{file} does not match the SHA-256 recorded in {folder / CONFIG_FILE}: the file is "
                "truncated, corrupt or from another checkpoint"
            )
    return document


def _read_json(file: Path) -> dict:
    """checkpoint.json, read and checked: a regular file of readable JSON, the schema (check_document),
    and the SHA-256 it records of itself."""
    _check_regular_file(file)
    size = file.stat().st_size
    if size > MAX_JSON_BYTES:
        raise CheckpointError(f"{file} has {size:,} bytes, more than a checkpoint's {MAX_JSON_BYTES:,}")
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: bad UTF-8, bad JSON, an integer of 5,000 digits
        raise CheckpointError(
            f"{file} is not readable JSON ({error}): the file is truncated or corrupt"
        ) from None
    except RecursionError:
        raise CheckpointError(f"{file} is nested too deeply to be a checkpoint") from None
    try:
        check_document(document)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{file}: {error}") from None
    if document_sha256(document) != document["sha256"][CONFIG_FILE]:
        raise CheckpointError(
            f"{file} does not match the SHA-256 recorded in it: it was edited, or is corrupt"
        )
    return document


def _check_regular_file(file: Path) -> None:
    """A CheckpointError unless `file` is a regular file (through links), naming what it is instead."""
    kind = kind_of(file)
    if kind == "missing":
        raise CheckpointError(f"{file} is missing: the checkpoint is incomplete")
    if kind is not None:
        raise CheckpointError(f"{file} is {kind}, not a file: the checkpoint is damaged")


def check_document(document: object) -> None:
    """Raise a TypeError or ValueError that names the key at fault unless `document` is a checkpoint.json
    that this headwise writes: every key of KEYS and no other, each of its type and in its range, and the
    keys consistent with each other (the task's model class and parameters, the vocabulary's size, one loss
    per step, AdamW's state only at step 0 left out)."""
    of_type(document, dict, "the document")
    if document.get("format") != FORMAT:
        raise ValueError(f'not a headwise checkpoint: expected "format": {FORMAT!r}')
    if document.get("version") != VERSION:
        raise ValueError(
            f"checkpoint version {document.get('version')!r:.20}; this headwise reads version {VERSION} "
            "(a checkpoint of an older headwise must be trained again)"
        )
    known_keys(document, KEYS, "key")
    missing = [key for key in KEYS if key not in document]
    if missing:
        raise ValueError(f"the key(s) {missing} are missing")
    for key in ("headwise_version", "torch_version", "task", "model_class"):
        of_type(document[key], str, key)
    task = task_class(document["task"])
    _within("task_params", task.check_params, document["task_params"])
    if document["model_class"] != task.model_class:
        raise ValueError(
            f"model_class: the {task.name!r} task trains a {task.model_class}, got "
            f"{document['model_class']!r}"
        )
    config = _within("config", TransformerConfig.from_dict, document["config"])
    vocab = _within("vocab", CharVocab.from_dict, document["vocab"])
    if config.vocab_size != len(vocab):
        raise ValueError(
            f"config.vocab_size is {config.vocab_size} but the vocabulary has {len(vocab)} tokens"
        )
    step = non_negative_int(document["step"], "step")
    check_seed(document["seed"])
    _within("options", TrainOptions.from_dict, document["options"])
    for key, complete in (("task_params", task.defaults), ("options", TrainOptions.__dataclass_fields__)):
        missing = sorted(set(complete) - set(document[key]))
        if missing:
            raise ValueError(f"{key} lacks {missing}: a checkpoint records every one, defaults included")
    non_negative_number(document["elapsed_s"], "elapsed_s")
    if len(of_type(document["losses"], list, "losses")) != step:
        raise ValueError(f"losses must hold one loss per step ({step}), got {len(document['losses'])}")
    for index, loss in enumerate(document["losses"]):
        finite_number(loss, f"losses[{index}]")
    _check_metrics(document["metrics"], task.metric, step)
    _check_optimizer(document["optimizer"], step)
    checksums = known_keys(of_type(document["sha256"], dict, "sha256"), FILES, "sha256 file")
    for name in FILES:
        if not isinstance(checksums.get(name), str) or not re.fullmatch(r"[0-9a-f]{64}", checksums[name]):
            raise ValueError(f"sha256.{name} must be a SHA-256 in hex, got {checksums.get(name)!r:.100}")


def _within(key: str, check: Callable, value: object):
    """check(value), with the key named in front of its TypeError or ValueError."""
    try:
        return check(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{key}: {error}") from None


def _check_metrics(metrics: object, metric: str, step: int) -> None:
    """One dict per evaluation: the step (ascending, at most `step`), the training and held-out losses, the
    time, and the task's `metric`, all finite numbers."""
    previous = 0
    for index, entry in enumerate(of_type(metrics, list, "metrics")):
        name = f"metrics[{index}]"
        of_type(entry, dict, name)
        missing = [key for key in (*METRIC_KEYS, metric) if key not in entry]
        if missing:
            raise ValueError(f"{name} lacks {missing}")
        for key, value in entry.items():
            finite_number(value, f"{name}.{key}")
        if not isinstance(entry["step"], int) or not previous < entry["step"] <= step:
            raise ValueError(
                f"{name}.step must be an integer in ({previous}, {step}] (after the previous evaluation, at "
                f"most the checkpoint's step), got {entry['step']!r}"
            )
        previous = entry["step"]


def _check_optimizer(optimizer: object, step: int) -> None:
    """AdamW's parameter groups (or null at step 0) and its scalar state entries."""
    known_keys(of_type(optimizer, dict, "optimizer"), ("param_groups", "scalars"), "optimizer key")
    groups = optimizer.get("param_groups")
    if groups is None:
        if step:
            raise ValueError(
                f"optimizer.param_groups is missing at step {step}: resuming would restart AdamW's moments"
            )
    else:
        numbered = []
        for index, group in enumerate(of_type(groups, list, "optimizer.param_groups")):
            name = f"optimizer.param_groups[{index}]"
            missing = [key for key in GROUP_KEYS if key not in of_type(group, dict, name)]
            if missing:
                raise ValueError(f"{name} lacks {missing}")
            numbered += of_type(group["params"], list, f"{name}.params")
            positive_number(group["lr"], f"{name}.lr")
            positive_number(group["eps"], f"{name}.eps")
            non_negative_number(group["weight_decay"], f"{name}.weight_decay")
            betas = group["betas"]
            if not isinstance(betas, list) or len(betas) != 2:
                raise ValueError(f"{name}.betas must be a list of two numbers in [0, 1), got {betas!r:.100}")
            for beta in betas:
                fraction(beta, f"{name}.betas", below_one=True)
            for key, value in group.items():
                if key not in GROUP_KEYS:
                    of_type(value, (bool, int, float, str, type(None)), f"{name}.{key}")
        if numbered != list(range(len(numbered))):
            raise ValueError(
                f"optimizer.param_groups: the params must number the parameters 0, 1, 2, ... in order, got "
                f"{numbered!r:.100}"
            )
    for key, value in of_type(optimizer.get("scalars", {}), dict, "optimizer.scalars").items():
        if not OPTIMIZER_ENTRY.fullmatch(key):
            raise ValueError(f"optimizer.scalars: unexpected entry {key!r} (expected 'state.<index>.<name>')")
        finite_number(value, f"optimizer.scalars.{key}")


def document_sha256(document: dict) -> str:
    """The SHA-256 of `document` without its own checksum (sha256["checkpoint.json"]), written canonically
    (sorted keys, no spaces): any change to a value changes it, a change of layout does not."""
    checksums = {name: value for name, value in document["sha256"].items() if name != CONFIG_FILE}
    text = json.dumps({**document, "sha256": checksums}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors that hold a NaN or an infinity."""
    return [
        name
        for name, tensor in tensors.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def _some(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


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


def _join_optimizer_state(tensors: dict[str, torch.Tensor], saved: dict, file: Path) -> dict | None:
    """The inverse of _split_optimizer_state, after checking the tensors: named "state.<index>.<name>",
    finite, and AdamW's second moments and step counts >= 0."""
    if saved["param_groups"] is None:
        return None
    bad = _non_finite(tensors)
    if bad:
        raise CheckpointError(f"{file}: NaN or infinite values in {_some(bad)}")
    state: dict[int, dict[str, object]] = {}
    for key, value in [*tensors.items(), *saved["scalars"].items()]:
        entry = OPTIMIZER_ENTRY.fullmatch(key)
        if entry is None:
            raise CheckpointError(
                f"{file}: unexpected optimizer entry {key!r} (expected 'state.<index>.<name>')"
            )
        index, name = int(entry[1]), entry[2]
        if name in ("exp_avg_sq", "max_exp_avg_sq", "step") and bool((torch.as_tensor(value) < 0).any()):
            raise CheckpointError(f"{file}: {key} has negative values, which AdamW never makes")
        state.setdefault(index, {})[name] = value
    groups = [
        {
            key: tuple(value) if isinstance(value, list) and key != "params" else value
            for key, value in group.items()
        }
        for group in saved["param_groups"]
    ]  # JSON made the tuples (AdamW's betas) lists
    return {"state": state, "param_groups": groups}


def _read_tensors(safetensors_torch, file: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors_torch.load_file(file)
    except Exception as error:  # safetensors raises its own SafetensorError, and OSError
        raise CheckpointError(f"{file} is not a readable safetensors file ({error})") from None


def _load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], file: Path) -> None:
    """Copy `tensors` into `model`, after checking that they are exactly the model's (names and shapes)
    and finite."""
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
    bad = _non_finite(tensors)
    if bad:
        raise CheckpointError(f"{file}: NaN or infinite weights in {_some(bad)}")
    with torch.no_grad():
        state = model.state_dict()
        for name, tensor in tensors.items():
            state[name].copy_(tensor)
