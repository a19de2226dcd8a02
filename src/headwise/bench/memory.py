"""The memory benchmark: the peak resident memory growth of one forward+backward pass, each configuration
in a fresh process, so that no configuration's allocations (or the allocator's caches) hide another's.

The child (`python -m headwise.bench.memory --child SPEC`) warms the contender up at a tiny N, allocates
the inputs at the configuration, runs one step and prints {"peak_bytes", "seconds"} as JSON: the rise of
the resident memory above its level with the inputs in place, so gradients and everything the pass keeps
count, the inputs themselves do not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from .console import Progress, progress_bar
from .contenders import make_inputs, make_step, select
from .grid import Config
from .measure import GB, PROBE_N, Guard, Measurement, machine, measure_call
from .options import GridSettings, add_common_arguments, positive, settings_from_args
from .report import memory_markdown, plot_memory, publish

WARM_N = 64  # the child's first, unmeasured call: kernels and thread pools start up here


@dataclass(frozen=True, kw_only=True)
class MemorySettings(GridSettings):
    dtypes: tuple[str, ...] = ("fp32",)
    modes: tuple[str, ...] = ("fwd+bwd",)
    timeout_s: float = 900.0  # per child process
    batch: int = 1


PRESETS = {
    "quick": MemorySettings(sizes=(1024, 4096), masks=("none",)),
    "full": MemorySettings(sizes=(1024, 2048, 4096, 8192, 16384, 32768), masks=("none", "causal")),
}


def measure(name: str, config: Config) -> dict:
    """In this process: the peak memory growth and the time of one step of contender `name` at `config`."""
    (contender,) = select([name])
    warm = config.at(WARM_N)
    make_step(contender, warm, make_inputs(warm, contender.level))()
    run = measure_call(make_step(contender, config, make_inputs(config, contender.level)))
    return {"status": "ok", "peak_bytes": run.peak_bytes, "seconds": run.seconds}


def measure_in_child(name: str, config: Config, timeout_s: float) -> dict:
    """measure() in a fresh Python process; an error outcome if it fails, is killed or times out."""
    spec = json.dumps({"contender": name, "config": asdict(config)})
    command = [sys.executable, "-m", "headwise.bench.memory", "--child", spec]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"took longer than {timeout_s:g} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message (killed for memory?)"])[-1]
        return {"status": "error", "reason": f"exit code {done.returncode}: {last}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure_and_record(name: str, config: Config, guard: Guard, timeout_s: float) -> dict:
    outcome = measure_in_child(name, config, timeout_s)
    if outcome["status"] == "ok":
        guard.record(name, config, Measurement(outcome["peak_bytes"], outcome["seconds"]))
    return outcome


def _outcome(
    name: str, config: Config, guard: Guard, failed: dict[tuple[str, Config], int], timeout_s: float
) -> dict:
    """Measure contender `name` at `config` in a child, unless the guard predicts it over the memory cap or
    the time limit, or it already failed at a smaller N of the same configuration."""
    key = (name, config.at(0))
    if key in failed:
        return {"status": "skipped", "reason": f"failed at N={failed[key]}"}
    if guard.needs_probe(name, config):
        _measure_and_record(name, config.at(PROBE_N), guard, timeout_s)
    reason = guard.refusal(name, config)
    if reason is not None:
        return {"status": "skipped", "reason": reason}
    outcome = _measure_and_record(name, config, guard, timeout_s)
    if outcome["status"] != "ok":
        failed[key] = config.n
    return outcome


def run_memory(settings: MemorySettings, progress: Progress | None = None) -> dict:
    """Every contender at every configuration, one child process each; the results as a JSON-ready dict."""
    where = machine()
    contenders = select(settings.contenders)
    plan = [(contender, config) for contender in contenders for config in settings.configs()]
    report = progress or (lambda label, done, total: None)
    guard = Guard(int(settings.cap_gb * GB), settings.timeout_s)
    failed: dict[tuple[str, Config], int] = {}
    rows = []
    for done, (contender, config) in enumerate(plan):
        report(f"{contender.name} {config.label()}", done, len(plan))
        outcome = _outcome(contender.name, config, guard, failed, settings.timeout_s)
        rows.append({"contender": contender.name, "config": asdict(config), "outcome": outcome})
    report("done", len(plan), len(plan))
    return {
        "benchmark": "memory",
        "machine": where,
        "settings": asdict(settings),
        "contenders": {c.name: {"level": c.level, "description": c.description} for c in contenders},
        "results": rows,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/memory.py",
        description="Peak memory growth of one training step (forward+backward) per configuration, each "
        "in a fresh process; prints a markdown table.",
    )
    add_common_arguments(parser, PRESETS, "full")
    parser.add_argument("--timeout", dest="timeout_s", type=positive(float), help="seconds per child (900)")
    parser.add_argument("--child", metavar="SPEC", help=argparse.SUPPRESS)  # JSON: contender and config
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(measure(spec["contender"], Config(**spec["config"]))))
        return 0
    try:
        settings = settings_from_args(args, PRESETS)
    except ValueError as error:  # inputs over the memory cap
        parser.error(str(error))
    with progress_bar() as progress:
        results = run_memory(settings, progress)
    publish(results, memory_markdown, plot_memory, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
