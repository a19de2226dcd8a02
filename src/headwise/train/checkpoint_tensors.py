"""The checkpoint's two safetensors files: the weights (a tied output head stored once) and AdamW's state
(its tensors apart from its JSON scalars and parameter groups, split on saving and joined back on
loading), each checked for names, shapes and finite values against the model and the document.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from .checkpoint_json import CONFIG_FILE, OPTIMIZER_ENTRY, CheckpointError


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors that hold a NaN or an infinity."""
    return [
        name
        for name, tensor in tensors.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def some_of(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict without aliases (a tied lm_head.weight is the embeddings' tensor): the first name of
    each tensor, on the CPU, contiguous."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    unique = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            unique[name] = tensor.detach().cpu().contiguous()
    return unique


def split_optimizer_state(state: dict | None) -> tuple[dict[str, torch.Tensor], dict]:
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


def join_optimizer_state(tensors: dict[str, torch.Tensor], saved: dict, file: Path) -> dict | None:
    """The inverse of split_optimizer_state, after checking the tensors: named "state.<index>.<name>",
    finite, and AdamW's second moments and step counts >= 0."""
    if saved["param_groups"] is None:
        return None
    bad = non_finite(tensors)
    if bad:
        raise CheckpointError(f"{file}: NaN or infinite values in {some_of(bad)}")
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


def read_tensors(safetensors_torch: ModuleType, file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors `file`, or a CheckpointError naming it."""
    try:
        return safetensors_torch.load_file(file)
    except Exception as error:  # safetensors raises its own SafetensorError, and OSError
        raise CheckpointError(f"{file} is not a readable safetensors file ({error})") from None


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], file: Path) -> None:
    """Copy `tensors` into `model`, after checking that they are exactly the model's (names and shapes)
    and finite."""
    expected = unique_tensors(model.state_dict())
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
    bad = non_finite(tensors)
    if bad:
        raise CheckpointError(f"{file}: NaN or infinite weights in {some_of(bad)}")
    with torch.no_grad():
        state = model.state_dict()
        for name, tensor in tensors.items():
            state[name].copy_(tensor)
