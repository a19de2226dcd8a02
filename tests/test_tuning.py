"""The tuner: measured choices per key, kept in memory and in the cache file, which survives corruption and
a torch upgrade; tuning on first use is opt-in and never runs where it must not."""

from __future__ import annotations

import json

import pytest
import torch

import headwise
from headwise.backends import Choice, Request, choose, tuning


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A fresh cache folder and an empty memory for each test; tuning as HEADWISE_TUNE says (unset)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("HEADWISE_TUNE", raising=False)
    monkeypatch.setattr(tuning.TUNER, "enabled", None)
    tuning.forget()
    yield tmp_path / "headwise" / "dispatch.json"
    tuning.forget()


def small_call(requires_grad=False):
    q, k, v = (torch.randn(2, 4, 96, 16, requires_grad=requires_grad) for _ in range(3))
    return q, k, v


def request_of(q, k, requires_grad=False) -> Request:
    return Request(
        q.device, q.dtype, batch=2, q_heads=4, kv_heads=4, num_queries=q.shape[2], num_keys=k.shape[2],
        head_dim=q.shape[3], value_dim=q.shape[3], requires_grad=requires_grad,
    )  # fmt: skip


def test_tuning_is_opt_in_and_persists_what_it_measured(cache):
    q, k, v = small_call()
    headwise.attention(q, k, v)
    assert not cache.exists()  # not opted in: the static table decided, nothing was measured
    tuning.enable()
    out = headwise.attention(q, k, v)
    torch.testing.assert_close(out, headwise.attention(q, k, v, backend="reference"), rtol=0, atol=1e-6)
    saved = json.loads(cache.read_text())
    assert saved["torch"] == torch.__version__ and len(saved["choices"]) == 1
    ((entry_key, entry),) = saved["choices"].items()
    assert entry_key == tuning.key(request_of(q, k))
    tuning.forget()  # a new process: the choice is read back from the file, and used without measuring
    tuning.enable(False)
    assert choose("auto", request_of(q, k)) == Choice(
        entry["backend"], getattr(torch, entry["compute_dtype"])
    )


def test_a_tuned_key_costs_under_a_second_and_nothing_after(cache):
    q, k, v = small_call(requires_grad=True)
    report = tuning.TUNER.tune(
        request_of(q, k, True), [Choice("sdpa", torch.float32), Choice("chunked", torch.float32)],
        lambda choice: headwise.attention(q, k, v, backend=choice.backend).sum().backward(),
    )  # fmt: skip
    assert report["cost_s"] < 1.0 and set(report["ms"]) == {"sdpa", "chunked"}
    assert tuning.TUNER.lookup(request_of(q, k, True)) == report["choice"]


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"format": 1, "torch": torch.__version__, "choices": {"k": {"backend": 3}}}),
    ],
)
def test_a_corrupt_cache_is_ignored_with_a_warning(cache, content):
    cache.parent.mkdir(parents=True)
    cache.write_text(content)
    q, k, v = small_call()
    with pytest.warns(UserWarning, match="headwise: ignoring"):
        out = headwise.attention(q, k, v)
    assert torch.isfinite(out).all()


def test_a_cache_from_another_torch_is_ignored(cache):
    q, k, _ = small_call()
    stale_key = tuning.key(request_of(q, k))
    cache.parent.mkdir(parents=True)
    old = {
        "format": tuning.FORMAT,
        "torch": "2.5.0",
        "choices": {stale_key: {"backend": "reference", "compute_dtype": "float32"}},
    }
    cache.write_text(json.dumps(old))
    with pytest.warns(UserWarning, match="another headwise format or torch version"):
        assert choose("auto", request_of(q, k)).backend != "reference"


def test_never_tunes_under_deterministic_algorithms_or_when_disabled(cache, monkeypatch):
    q, k, v = small_call()
    monkeypatch.setenv("HEADWISE_TUNE", "1")
    tuning.enable(False)  # the function wins over the variable
    headwise.attention(q, k, v)
    assert not cache.exists()
    tuning.TUNER.enabled = None  # as the variable says: on
    torch.use_deterministic_algorithms(True)
    try:
        headwise.attention(q, k, v)
    finally:
        torch.use_deterministic_algorithms(False)
    assert not cache.exists()
    headwise.attention(q, k, v)
    assert cache.exists()


def test_never_tunes_while_torch_compile_traces(cache):
    """A call that torch.compile traces through (here: one returning lse) never measures; a call that
    becomes headwise's custom op measures when the op runs, as an eager call does (headwise.ops)."""
    tuning.enable()
    traced_through = torch.compile(
        lambda q, k, v: headwise.attention(q, k, v, return_lse=True), backend="eager"
    )
    traced_through(*small_call())
    assert not cache.exists()
    opaque = torch.compile(lambda q, k, v: headwise.attention(q, k, v), backend="eager", fullgraph=True)
    opaque(*small_call())
    assert cache.exists()


def test_the_key_names_what_moves_the_ranking():
    q, k, _ = small_call()
    text = tuning.key(request_of(q, k, True))
    for part in (f"torch {torch.__version__}", "cpu:", "float32", "Nq 128", "Nk 128", "Dh 16", "fwd+bwd"):
        assert part in text
    assert tuning.key(request_of(q[:, :, :65], k)) == tuning.key(request_of(q[:, :, :96], k))  # one bucket


def test_headwise_tune_fills_the_cache_and_prints_its_choices(cache, capsys):
    from headwise.cli.main import main

    assert main(["tune", "--sizes", "16", "32", "--dtypes", "fp32", "--modes", "fwd", "--batch", "1"]) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| fp32")]
    assert len(rows) == 2 and all(" | fwd | " in row for row in rows)
    assert len(json.loads(cache.read_text())["choices"]) == 2
    assert f"choices written to {cache}" in printed
