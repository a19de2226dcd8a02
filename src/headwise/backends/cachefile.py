"""The dispatch cache file: auto's measured choices, one JSON file per user, read and written so that no
file, folder or concurrent writer can harm the user.

The file is $XDG_CACHE_HOME/headwise/dispatch.json, else ~/.cache/headwise/dispatch.json:
{"format": FORMAT, "torch": version, "choices": {key: {"backend": name, "compute_dtype": "float32"}}},
the keys as tuning.key writes them. A corrupt file, or one written by another torch or format, is ignored
with a warning, never an error. Only a regular file of at most MAX_CACHE_BYTES in a folder of the user's
own is read (never a link, never waiting on a FIFO), each entry is checked against its key (the compute
dtype its input dtype allows, a backend that runs there), and writes merge into the file under a lock and
replace it in one step, never writing through a link.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from .capabilities import Choice
from .registry import BACKENDS

FORMAT = 1  # the cache file's layout; a file of another format is ignored


def cache_path() -> Path:
    """$XDG_CACHE_HOME/headwise/dispatch.json, else ~/.cache/headwise/dispatch.json."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "headwise" / "dispatch.json"


MAX_CACHE_BYTES = 4 << 20  # a cache file beyond 4 MiB (some 20,000 entries) is not read
COMPUTE_DTYPES = {  # a key's input dtype -> the dtypes its calls may be computed in
    "float64": ("float64",),
    "float32": ("float32",),
    "bfloat16": ("bfloat16", "float32"),
    "float16": ("float16", "float32"),
}


def read_choices(path: Path) -> dict[str, Choice]:
    """The choices in the cache file; {} without it. Anything but a regular file of at most
    MAX_CACHE_BYTES in a folder of the user's own (a link, a FIFO, a device, a huge file) is not opened
    for reading or refused at once, never waited on; a corrupt or stale file is ignored with a warning,
    and so, with one warning for all, are the entries that do not fit their key (see _entry)."""
    from ..files import own_folder, read_regular

    try:
        own_folder(path.parent)
        data = json.loads(read_regular(path, MAX_CACHE_BYTES, follow_links=False))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as error:  # RecursionError: JSON nested too deeply
        reason = "nested too deeply" if isinstance(error, RecursionError) else error
        warnings.warn(f"headwise: ignoring the unreadable dispatch cache {path}: {reason}", stacklevel=3)
        return {}
    written = (data.get("format"), data.get("torch")) if isinstance(data, dict) else None
    if written != (FORMAT, torch.__version__):
        warnings.warn(
            f"headwise: ignoring {path}: written by another headwise format or torch version "
            f"(now format {FORMAT}, torch {torch.__version__}); `headwise tune` measures again",
            stacklevel=3,
        )
        return {}
    entries = data.get("choices")
    if not isinstance(entries, dict):
        warnings.warn(f"headwise: ignoring the dispatch cache {path}: it has no choices", stacklevel=3)
        return {}
    choices, bad = {}, []
    for entry_key, entry in entries.items():
        try:
            choices[entry_key] = _entry(entry_key, entry)
        except ValueError as error:
            bad.append(str(error))
    if bad:
        warnings.warn(
            f"headwise: ignoring {len(bad)} of the {len(entries)} entries of the dispatch cache {path} "
            f"that do not fit their key (the first: {bad[0]}); auto decides for those keys as without them",
            stacklevel=3,
        )
    return choices


def _entry(entry_key: str, entry: object) -> Choice:
    """A cache entry {"backend": name, "compute_dtype": "float32"} under `entry_key` as a Choice, or a
    ValueError saying what does not fit: the compute dtype must be one the key's input dtype allows
    (COMPUTE_DTYPES: itself, and float32 for bf16/fp16), the backend a registered one that runs on the
    key's device in that dtype. Whether it serves each call is checked again when a call looks it up."""
    parts = entry_key.split(" | ")
    allowed = COMPUTE_DTYPES.get(parts[3]) if len(parts) > 3 else None
    if allowed is None:
        raise ValueError(f"the key {entry_key[:80]!r} names no input dtype")
    if not isinstance(entry, dict) or set(entry) != {"backend", "compute_dtype"}:
        raise ValueError(f"an entry must be {{'backend': ..., 'compute_dtype': ...}}, got {str(entry)[:80]}")
    backend, compute = entry["backend"], entry["compute_dtype"]
    if compute not in allowed:
        expected = " or ".join(allowed)
        raise ValueError(
            f"a {parts[3]} call cannot be computed in {str(compute)[:20]!r} (expected {expected})"
        )
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {str(backend)[:40]!r}")
    capabilities, device = BACKENDS[backend].capabilities, parts[0].split(":")[0]
    if device not in capabilities.devices or getattr(torch, compute) not in capabilities.dtypes:
        raise ValueError(f"backend {backend!r} does not run on {device} in {compute}")
    return Choice(backend, getattr(torch, compute))


def write_choices(path: Path, updates: dict[str, Choice]) -> dict[str, Choice]:
    """Merge `updates` into the cache file and -> the merged choices. Under an exclusive lock on a lock
    file beside it, the file is read again and replaced in one step with what it had plus `updates`, so
    concurrent tuners keep every entry; the file is replaced as a folder entry, never written through a
    link. A cache that cannot be written only warns (-> `updates`)."""
    from ..files import locked, own_folder, replace_entry

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        own_folder(path.parent)
        with locked(path.with_name(path.name + ".lock")):
            with warnings.catch_warnings():  # the first read warned about what it ignores
                warnings.simplefilter("ignore")
                merged = {**read_choices(path), **updates}
            entries = {
                k: {"backend": c.backend, "compute_dtype": str(c.compute_dtype).removeprefix("torch.")}
                for k, c in sorted(merged.items())
            }
            document = {"format": FORMAT, "torch": torch.__version__, "choices": entries}
            replace_entry(path, json.dumps(document, indent=1))
        return merged
    except OSError as error:
        warnings.warn(f"headwise: could not write the dispatch cache {path}: {error}", stacklevel=3)
        return updates
