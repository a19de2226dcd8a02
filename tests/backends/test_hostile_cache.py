"""The dispatch cache ($XDG_CACHE_HOME/headwise/dispatch.json) under hostile files (issue 24): entries that
do not fit their key, a FIFO, deep nesting, links onto other files, a huge file, another user's folder,
concurrent tuners; then a property test over random states of the cache folder."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import headwise
from headwise.backends import BACKENDS, Choice, Request, cachefile, choose, tuning

SHAPE = (2, 4, 24, 8)  # (B, H, N, Dh) of the calls here


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """dispatch.json in a fresh cache folder (tmp_path/cache/headwise), an empty memory, tuning off."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HEADWISE_TUNE", "0")
    monkeypatch.setattr(tuning.TUNER, "enabled", None)
    monkeypatch.setattr(tuning, "STEADY", math.inf)  # every measurement written (steadiness: its own tests)
    tuning.forget()
    path = tmp_path / "cache" / "headwise" / "dispatch.json"
    path.parent.mkdir(parents=True)
    yield path
    tuning.forget()


def request_for(dtype: torch.dtype, requires_grad: bool = False) -> Request:
    batch, heads, length, width = SHAPE
    return Request(
        torch.device("cpu"), dtype, batch=batch, q_heads=heads, kv_heads=heads, num_queries=length,
        num_keys=length, head_dim=width, value_dim=width, requires_grad=requires_grad,
    )  # fmt: skip


def document(choices: dict) -> str:
    return json.dumps({"format": tuning.FORMAT, "torch": torch.__version__, "choices": choices})


def inputs(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(SHAPE, generator=gen, dtype=dtype) for _ in range(3))  # (B, H, N, Dh) each


def error_of_auto(dtype: torch.dtype) -> float:
    """max |auto - float64 reference| for a call in `dtype` (warnings let through)."""
    q, k, v = inputs(dtype)
    golden = headwise.attention(q.double(), k.double(), v.double(), backend="reference")
    return (headwise.attention(q, k, v).double() - golden).abs().max().item()


def one_warning(match: str):
    return pytest.warns(UserWarning, match=match)


# Entries that do not fit their key ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype,entry,reason",
    [
        (
            torch.float64,
            {"backend": "dense", "compute_dtype": "bfloat16"},
            "cannot be computed in 'bfloat16'",
        ),
        (
            torch.float32,
            {"backend": "chunked", "compute_dtype": "float16"},
            "cannot be computed in 'float16'",
        ),
        (torch.float32, {"backend": "reference", "compute_dtype": "float64"}, "cannot be computed in"),
        (torch.float32, {"backend": "flash3", "compute_dtype": "float32"}, "backend must be one of"),
        (torch.float32, {"backend": "dense", "compute_dtype": "__class__"}, "cannot be computed in"),
        (torch.float32, {"backend": ["dense"], "compute_dtype": "float32"}, "backend must be one of"),
        (torch.float32, {"backend": "dense", "compute_dtype": "float32", "extra": 1}, "an entry must be"),
        (torch.float32, "dense", "an entry must be"),
    ],
)
def test_an_entry_that_does_not_fit_its_key_is_ignored_with_one_warning(cache, dtype, entry, reason):
    """Before: a float64 call was computed in fp16 through such an entry (error 8e-4), float32 in bf16."""
    good = {tuning.key(request_for(torch.float32, True)): {"backend": "chunked", "compute_dtype": "float32"}}
    cache.write_text(document({tuning.key(request_for(dtype)): entry, **good}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        error = error_of_auto(dtype)
    (warning,) = [str(w.message) for w in caught if "headwise" in str(w.message)]  # one warning
    assert "ignoring 1 of the 2 entries" in warning and reason in warning
    assert error <= (1e-12 if dtype == torch.float64 else 1e-6)
    assert tuning.TUNER.lookup(request_for(torch.float32, True)) == Choice("chunked", torch.float32)


def test_a_bf16_key_may_be_computed_in_float32(cache):
    entry = {"backend": "dense", "compute_dtype": "float32"}
    cache.write_text(document({tuning.key(request_for(torch.bfloat16)): entry}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning
        assert choose("auto", request_for(torch.bfloat16)) == Choice("dense", torch.float32)


def test_a_key_that_names_no_dtype_is_ignored(cache):
    cache.write_text(document({"cpu | float77": {"backend": "dense", "compute_dtype": "float32"}}))
    with one_warning("names no input dtype"):
        assert tuning.TUNER.choices() == {}


# Files that are not a regular file of headwise's ----------------------------------------------------------


def test_a_fifo_is_refused_without_waiting(cache, tmp_path):
    """Before: every auto call and `headwise tune` blocked forever on open(). A child process, so that a
    regression fails on its timeout instead of hanging the suite."""
    os.mkfifo(cache)
    script = (
        "import warnings, torch, headwise\n"
        "from headwise.backends import tuning\n"
        "q = torch.randn(1, 2, 8, 4)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    out = headwise.attention(q, q, q)\n"
        "print(any('a FIFO' in str(w.message) for w in caught), torch.isfinite(out).all().item())\n"
        "tuning.enable()\n"
        "tuning.STEADY = float('inf')  # the measurement written, however busy the machine\n"
        "headwise.attention(q, q, q)\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
    assert cache.is_file() and not cache.is_symlink()  # the tuner replaced the FIFO with its file
    assert len(json.loads(cache.read_text())["choices"]) == 1


def test_a_deeply_nested_file_gives_a_warning_not_a_recursion_error(cache):
    cache.write_text('{"choices": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with one_warning("nested too deeply"):
        assert error_of_auto(torch.float32) <= 1e-6


def test_a_file_over_the_size_bound_is_not_read(cache):
    with open(cache, "wb") as file:
        file.truncate(tuning.MAX_CACHE_BYTES + 1)  # sparse: nothing to read but its size
    with one_warning("reads at most"):
        assert tuning.TUNER.choices() == {}


@pytest.mark.parametrize("target", ["file", "/dev/zero"])
def test_a_link_is_neither_read_nor_written_through(cache, tmp_path, target):
    """Before: tune ignored a link to a user's file as unreadable, then overwrote that file."""
    outside = tmp_path / "notes.txt"
    outside.write_text("the user's own notes")
    os.symlink(outside if target == "file" else target, cache)
    with one_warning("is a symbolic link"):
        assert tuning.TUNER.choices() == {}
    tuning.enable()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        headwise.attention(*inputs(torch.float32))
    assert outside.read_text() == "the user's own notes"
    assert not cache.is_symlink() and len(json.loads(cache.read_text())["choices"]) == 1


def test_a_lock_file_that_is_a_link_is_not_followed(cache, tmp_path):
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("untouched")
    os.symlink(outside, cache.with_name("dispatch.json.lock"))
    tuning.enable()
    with one_warning("could not write the dispatch cache"):
        out = headwise.attention(*inputs(torch.float32))
    assert torch.isfinite(out).all() and outside.read_text() == "untouched" and not cache.exists()


def test_a_folder_of_another_user_is_neither_read_nor_written(cache):
    if os.geteuid() != 0:
        pytest.skip("giving the folder to another user needs root")
    cache.write_text(
        document({tuning.key(request_for(torch.float32)): {"backend": "dense", "compute_dtype": "float32"}})
    )
    os.chown(cache.parent, 12345, 12345)
    with one_warning("belongs to another user"):
        assert tuning.TUNER.choices() == {}
    with one_warning("belongs to another user"):
        cachefile.write_choices(cache, {"k": Choice("dense", torch.float32)})
    assert len(json.loads(cache.read_text())["choices"]) == 1


# Concurrent tuners -----------------------------------------------------------------------------------------


def _tune_keys(folder: str, keys: list[str]) -> None:
    """A tuner in another process: merges its entries one by one, as `tune` does for each key it measures."""
    os.environ["XDG_CACHE_HOME"] = folder
    tuning.forget()
    for entry_key in keys:
        tuning.TUNER._choices = {
            **tuning.TUNER.choices(),
            **cachefile.write_choices(tuning.cache_path(), {entry_key: Choice("chunked", torch.float32)}),
        }


def key_number(n: int) -> str:
    return tuning.key(Request(torch.device("cpu"), torch.float32, num_queries=2**n, num_keys=2**n))


def run_tuners(folder: str, per_process: int, processes: int) -> dict:
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(
            target=_tune_keys, args=(folder, [key_number(p * per_process + i) for i in range(per_process)])
        )
        for p in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    return json.loads((Path(folder) / "headwise" / "dispatch.json").read_text())["choices"]


def test_concurrent_tuners_keep_every_entry(cache):
    """Before: two processes tuning 6 keys each left 6 of the 12."""
    choices = run_tuners(str(cache.parent.parent), per_process=6, processes=2)
    assert set(choices) == {key_number(n) for n in range(12)}
    assert not [
        p.name for p in cache.parent.iterdir() if p.name not in ("dispatch.json", "dispatch.json.lock")
    ]


# A property test over the states of the cache folder --------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ENTRY = st.fixed_dictionaries(
    {
        "backend": st.sampled_from([*BACKENDS, "flash3", ""]) | JSON,
        "compute_dtype": st.sampled_from(["float16", "bfloat16", "float32", "float64", "int8", "__doc__"])
        | JSON,
    }
)
DTYPES = [torch.float32, torch.float64, torch.bfloat16]
STATES = st.one_of(
    st.just(("missing", None)),
    st.tuples(st.just("bytes"), st.binary(max_size=64)),
    st.tuples(st.just("json"), JSON),
    st.tuples(
        st.just("entries"),
        st.dictionaries(
            st.sampled_from([tuning.key(request_for(d, g)) for d in DTYPES for g in (False, True)])
            | st.text(max_size=12),
            ENTRY | JSON,
            max_size=6,
        ),
    ),
    st.tuples(st.just("nested"), st.integers(2_000, 200_000)),
    st.tuples(
        st.sampled_from(["link to a file", "link to a fifo", "link to /dev/zero", "fifo", "folder"]),
        st.none(),
    ),
)


def make_state(path: Path, outside: Path, state: tuple) -> None:
    kind, value = state
    if kind == "bytes":
        path.write_bytes(value)
    elif kind == "json":
        path.write_text(json.dumps(value))
    elif kind == "entries":
        path.write_text(document(value))
    elif kind == "nested":
        path.write_text("[" * value + "]" * value)
    elif kind == "link to a file":
        os.symlink(outside / "notes.txt", path)
    elif kind == "link to a fifo":
        os.symlink(outside / "pipe", path)
    elif kind == "link to /dev/zero":
        os.symlink("/dev/zero", path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()


def snapshot(folder: Path) -> dict:
    """Every entry under `folder`: its kind and, for a regular file, its bytes."""
    return {
        str(p): (
            p.read_bytes() if p.is_file() and not p.is_symlink() and not p.is_fifo() else p.lstat().st_mode
        )
        for p in sorted(folder.rglob("*"))
    }


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(state=STATES, lock=st.sampled_from(["none", "file", "link"]), dtype=st.sampled_from(DTYPES),
       backward=st.booleans(), tune=st.booleans())  # fmt: skip
def test_any_cache_state_leaves_attention_correct_and_other_files_alone(state, lock, dtype, backward, tune):
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        outside = root / "outside"
        outside.mkdir()
        (outside / "notes.txt").write_text("the user's own notes")
        os.mkfifo(outside / "pipe")
        path = root / "cache" / "headwise" / "dispatch.json"
        path.parent.mkdir(parents=True)
        make_state(path, outside, state)
        if lock == "file":
            path.with_name("dispatch.json.lock").write_text("")
        elif lock == "link":
            os.symlink(outside / "notes.txt", path.with_name("dispatch.json.lock"))
        before = snapshot(outside)
        saved = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = str(root / "cache")
        tuning.forget()
        tuning.enable(tune)
        try:
            q, k, v = (t.requires_grad_(backward) for t in inputs(dtype, seed=1))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = headwise.attention(q, k, v)
            golden = headwise.attention(q.double(), k.double(), v.double(), backend="reference")
            tolerance = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 2e-2}[dtype]
            assert (out.double() - golden).abs().max().item() <= tolerance
            if backward:
                out.sum().backward()
                assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
        finally:
            tuning.TUNER.enabled = None
            tuning.forget()
            if saved is None:
                os.environ.pop("XDG_CACHE_HOME")
            else:
                os.environ["XDG_CACHE_HOME"] = saved
        assert snapshot(outside) == before
        assert {p.name for p in root.iterdir()} == {"outside", "cache"}
        leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
        assert leftovers == []


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(processes=st.integers(2, 4), per_process=st.integers(1, 5), state=STATES)
def test_concurrent_tuners_on_any_cache_keep_every_entry(processes, per_process, state):
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        (root / "outside").mkdir()
        (root / "outside" / "notes.txt").write_text("the user's own notes")
        os.mkfifo(root / "outside" / "pipe")
        path = root / "cache" / "headwise" / "dispatch.json"
        path.parent.mkdir(parents=True)
        if state[0] != "folder":  # a folder there cannot be replaced by a file: nothing is written
            make_state(path, root / "outside", state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            choices = run_tuners(str(root / "cache"), per_process, processes)
        assert {key_number(n) for n in range(processes * per_process)} <= set(choices)
        assert (root / "outside" / "notes.txt").read_text() == "the user's own notes"
