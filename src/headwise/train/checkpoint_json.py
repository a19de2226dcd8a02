"""checkpoint.json: what a checkpoint folder's document holds (FORMAT, VERSION, KEYS and the files it names)
and every check loading applies to it: each key's type and range and its consistency with the others
(check_document), its size, its own SHA-256 and the two tensor files' (verified_document). A
CheckpointError names the file and the key at fault.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..checks import (
    finite_number,
    fraction,
    known_keys,
    non_negative_int,
    non_negative_number,
    of_type,
    positive_number,
)
from ..files import kind_of
from ..nn.config import TransformerConfig
from .options import TrainOptions
from .tasks import task_class
from .tasks.base import CharVocab, check_seed

T = TypeVar("T")

FORMAT = "headwise-checkpoint"
VERSION = 2  # 2: checkpoint.json covered by its own SHA-256, every key required
CONFIG_FILE = "checkpoint.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
FILES = (CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE)
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


def verified_document(folder: Path) -> dict:
    """checkpoint.json of `folder`, checked (see _read_json), after checking that both tensor files are
    regular files that match the SHA-256 it records."""
    document = _read_json(folder / CONFIG_FILE)
    for name in (MODEL_FILE, OPTIMIZER_FILE):
        file = folder / name
        _check_regular_file(file)
        if file_sha256(file) != document["sha256"][name]:
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
    document = of_type(document, dict, "the document")
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


def _within(key: str, check: Callable[[Any], T], value: object) -> T:
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
        entry = of_type(entry, dict, name)
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
    optimizer = known_keys(
        of_type(optimizer, dict, "optimizer"), ("param_groups", "scalars"), "optimizer key"
    )
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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
