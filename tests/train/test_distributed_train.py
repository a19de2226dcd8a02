"""headwise train on several processes (DistributedDataParallel on gloo, 2 ranks of this machine): the same
steps as one process with the same global batch (float64), each rank on its own rows of every batch,
checkpoints written by rank 0 alone and resumed on any number of processes, and `headwise train --nproc`."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel

from headwise.distributed.data_parallel import Ranks, start_local_ranks
from headwise.train import loop
from headwise.train.checkpoint import load_checkpoint
from headwise.train.loop import SLOW_IMPORTS, new_run, train
from headwise.train.options import TrainOptions
from headwise.train.tasks import get_task

pytestmark = pytest.mark.slow  # on 2 cores at load 6 to 8: the ranks' fixture 50 s, the CLI's test 60 s

TINY_MODEL = {"d_model": 16, "num_heads": 2, "d_ff": 32, "num_encoder_layers": 1, "num_decoder_layers": 1}
TINY_OPTIONS = {"batch_size": 8, "warmup_steps": 2}

WORLD = 2  # P
STEPS, HALF = 6, 3  # a run's steps, and where a run stops to be resumed
TIMEOUT_S = 120  # for one collective: a rank that waits longer fails the test
EXACT = 1e-12  # float64: P ranks and one process differ only in the order of the sums


def tiny_run(steps: int = STEPS, dropout: float = 0.0, dtype: torch.dtype = torch.float64):
    """The dates task and a fresh run of a tiny encoder-decoder in `dtype`, its global batch of 8,
    evaluated and saved at the last step only (and when stopped: each save draws loss.png, which takes
    longer than the steps)."""
    task = get_task("dates", eval_examples=24)
    config = dataclasses.replace(task.default_config(), **TINY_MODEL, dropout=dropout)
    options = TrainOptions(steps=steps, eval_every=steps, checkpoint_every=steps, **TINY_OPTIONS)
    run = new_run(task, config, options, seed=0)
    run.model.to(dtype)
    return task, run


def outcome(run) -> dict:
    """What a run ended with: its losses, metrics (without the times) and weights."""
    return {
        "losses": list(run.losses),
        "metrics": [{k: v for k, v in m.items() if k != "elapsed_s"} for m in run.metrics],
        "weights": {name: tensor.detach().clone() for name, tensor in run.model.state_dict().items()},
    }


# What each rank runs.


def rank_main(rank: int, folder: str) -> dict:
    folder = Path(folder)
    results = {}

    task, run = tiny_run()
    with (
        mock.patch.object(loop, "save_checkpoint", wraps=loop.save_checkpoint) as saves,
        mock.patch.object(task, "loss", wraps=task.loss) as losses,
    ):
        train(run, task, folder / "straight-on-2", quiet=True)
    results["straight"] = outcome(run)
    results["saves"] = saves.call_count
    training = [call for call in losses.call_args_list if isinstance(call.args[0], DistributedDataParallel)]
    results["rows"] = [call.args[1]["target_out"] for call in training]  # per step (B/P, 11)

    task, run = tiny_run()
    train(run, task, folder / "saved-on-2", quiet=True, stop_at=HALF)

    resumed = load_checkpoint(folder / "saved-on-1")  # the test process saved it, at step HALF
    train(resumed, task, folder / "saved-on-1", quiet=True)
    results["resumed"] = outcome(resumed)

    # dropout: rank r's masks come from (seed, step, r), so a run on the same P resumes exactly
    task, run = tiny_run(4, dropout=0.1, dtype=torch.float32)
    train(run, task, folder / "dropout-straight", quiet=True)
    results["dropout straight"] = outcome(run)
    task, run = tiny_run(4, dropout=0.1, dtype=torch.float32)
    train(run, task, folder / "dropout-halves", quiet=True, stop_at=2)
    resumed = load_checkpoint(folder / "dropout-halves")
    train(resumed, task, folder / "dropout-halves", quiet=True)
    results["dropout halves"] = outcome(resumed)

    errors = {}
    task, run = tiny_run()
    run.options = {**run.options, "batch_size": 7}
    try:
        train(run, task, folder / "odd", quiet=True)
    except ValueError as error:
        errors["batch"] = str(error)

    def fail():
        raise FileExistsError("only rank 0 saw this")

    try:
        Ranks.of().from_rank_zero(fail)
    except FileExistsError as error:
        errors["from rank 0"] = str(error)
    results["errors"] = errors
    return results


# What the test process checks.


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """One start of the 2 ranks for every check (each start costs seconds): each rank's results, the
    folder they trained in, and what one process made."""
    folder = tmp_path_factory.mktemp("ranks")
    task, run = tiny_run()
    train(run, task, folder / "saved-on-1", quiet=True, stop_at=HALF)  # save on 1, resume on 2
    cpu = torch.device("cpu")
    results = start_local_ranks(
        rank_main, (str(folder),), WORLD, cpu, timeout_s=TIMEOUT_S, preload=SLOW_IMPORTS
    )
    task, alone = tiny_run()
    train(alone, task, folder / "straight-on-1", quiet=True)
    return results, folder, outcome(alone)


def assert_same_run(got: dict, expected: dict, tolerance: float = 0.0) -> None:
    """The same losses, metrics and weights: each to `tolerance` times the largest magnitude of its kind
    (each weight tensor's own), or exactly."""

    def close(mine, theirs, what):
        largest = max(1.0, torch.as_tensor(theirs, dtype=torch.float64).abs().max().item())
        torch.testing.assert_close(
            mine, theirs, rtol=0.0, atol=tolerance * largest, msg=lambda m: f"{what}: {m}"
        )

    close(got["losses"], expected["losses"], "losses")
    assert [m.keys() for m in got["metrics"]] == [m.keys() for m in expected["metrics"]]
    for index, (mine, theirs) in enumerate(zip(got["metrics"], expected["metrics"], strict=True)):
        assert mine["step"] == theirs["step"]
        close(list(mine.values()), list(theirs.values()), f"metrics[{index}]")
    assert got["weights"].keys() == expected["weights"].keys()
    for name, tensor in got["weights"].items():
        assert tensor.dtype == expected["weights"][name].dtype, name
        close(tensor, expected["weights"][name], name)


def test_two_ranks_take_the_steps_of_one_process(ranks):
    """float64, no dropout: the loss of every step, the evaluations and the weights after 6 steps on 2
    ranks equal one process's with the same global batch, to 1e-12; the ranks agree exactly."""
    results, _, alone = ranks
    assert len(alone["losses"]) == STEPS
    assert_same_run(results[0]["straight"], alone, EXACT)
    assert_same_run(results[1]["straight"], results[0]["straight"])


def test_each_rank_trains_on_its_own_rows_of_the_global_batch(ranks):
    """Rank r's share of step s is rows [r·B/P, (r+1)·B/P) of the batch one process makes for step s."""
    results, _, _ = ranks
    task, run = tiny_run()
    size = TrainOptions.from_dict(run.options).batch_size
    for step in range(STEPS):
        whole = task.batch(run.seed, step, size)["target_out"]  # (B, 11)
        shares = [result["rows"][step] for result in results]  # P × (B/P, 11)
        assert [len(share) for share in shares] == [size // WORLD] * WORLD
        assert torch.equal(torch.cat(shares), whole), f"step {step}"


def test_checkpoints_are_written_by_rank_zero_alone(ranks):
    """The save at the last step, by rank 0 only; the checkpoint holds the ranks' run (float64 weights
    and all)."""
    results, folder, _ = ranks
    assert [result["saves"] for result in results] == [1, 0]
    saved = outcome(load_checkpoint(folder / "straight-on-2"))
    assert_same_run(saved, results[0]["straight"])


def test_a_run_saved_on_two_ranks_resumes_on_one_and_the_other_way(ranks):
    """Stopped at step 3 on 2 ranks and resumed on one process, or stopped on one and resumed on 2
    ranks: the same 6 steps as one process straight through, to 1e-12 (float64)."""
    results, folder, alone = ranks
    assert load_checkpoint(folder / "saved-on-2").step == HALF
    resumed = load_checkpoint(folder / "saved-on-2")
    train(resumed, resumed.make_task(), folder / "saved-on-2", quiet=True)
    assert_same_run(outcome(resumed), alone, EXACT)
    assert_same_run(results[0]["resumed"], alone, EXACT)


def test_with_dropout_a_run_resumes_exactly_on_the_same_ranks(ranks):
    """Dropout 0.1, float32: stopped at step 2 of 4 and resumed on the same 2 ranks, bit for bit the run
    that went straight through."""
    results, _, _ = ranks
    for result in results:
        assert_same_run(result["dropout halves"], result["dropout straight"])


def test_errors_are_raised_on_every_rank_alike(ranks):
    """A global batch that does not split, and an error that only rank 0 met (passed to the others)."""
    results, _, _ = ranks
    for result in results:
        assert result["errors"] == {
            "batch": "batch_size (7) must be a multiple of the number of processes (2): each process "
            "trains on batch_size / 2 examples of every batch",
            "from rank 0": "only rank 0 saw this",
        }


CLI_TINY = ["--set", "d_model=16", "--set", "num_heads=2", "--set", "d_ff=32", "--set", "batch_size=8",
            "--set", "eval_examples=24", "--set", "num_encoder_layers=1", "--set", "num_decoder_layers=1",
            "--set", "dropout=0.0"]  # fmt: skip


def cli_output(done: subprocess.CompletedProcess) -> None:
    """What a 4-step run with an evaluation every 2 steps prints on 2 processes: rank 0 alone."""
    assert done.returncode == 0, done.stderr
    assert "steps 0 -> 4 of 8 examples (4 per process) on 2 processes on cpu" in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 2", "step 4"], done.stderr
    assert "train loss" in lines[0] and "(mean of the last 2 steps)" in lines[0]
    assert done.stdout.count("held-out exact match") == 1, done.stdout
    assert "4 steps in" in done.stdout and "on 2 processes on cpu" in done.stdout


def test_cli_on_two_processes_with_nproc_and_with_torchrun(tmp_path):
    """`headwise train --nproc 2` and `torchrun --nproc-per-node 2 --no-python headwise train`, each in a
    fresh process: rank 0 alone prints; the two write the same checkpoint, bit for bit (the same shares of
    the same batches); one process resumes it; a batch that does not split is one error line, exit code 1."""
    arguments = ["train", "--task", "dates", "--steps", "4", "--eval-every", "2", *CLI_TINY]
    environment = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def headwise(*launcher, out, nproc=()):
        return subprocess.run(
            [*launcher, *arguments, "--out", str(tmp_path / out), *nproc],
            capture_output=True, text=True, timeout=300, env=environment,
        )  # fmt: skip

    cli_output(headwise(sys.executable, "-m", "headwise.cli.main", out="nproc", nproc=("--nproc", "2")))
    bin_folder = Path(sys.executable).parent
    torchrun = [str(bin_folder / "torchrun"), "--standalone", "--nproc-per-node", "2", "--no-python"]
    cli_output(headwise(*torchrun, str(bin_folder / "headwise"), out="torchrun"))
    spawned, launched = (outcome(load_checkpoint(tmp_path / out)) for out in ("nproc", "torchrun"))
    assert_same_run(launched, spawned)

    from headwise.cli.main import main  # the CLI's imports, for this test only

    code = main([*arguments[:3], "--steps", "6", "--out", str(tmp_path / "nproc"), "--resume", "--quiet"])
    assert code == 0 and load_checkpoint(tmp_path / "nproc").step == 6

    odd = headwise(sys.executable, "-m", "headwise.cli.main", out="odd", nproc=("--nproc", "3"))
    assert odd.returncode == 1
    errors = [line for line in odd.stderr.splitlines() if line.startswith("headwise train: error")]
    assert errors == [
        "headwise train: error: batch_size (8) must be a multiple of the number of processes (3): each "
        "process trains on batch_size / 3 examples of every batch"
    ], odd.stderr
    assert not (tmp_path / "odd" / "checkpoint").exists()
