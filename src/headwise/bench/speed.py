"""The speed benchmark: every contender at every configuration of the grid, interleaved, in one run.

For each configuration: build the inputs once per level; for each contender, refuse it if its memory or
call time, predicted from a smaller N, is over the cap or the limit, else warm it up (measuring both);
then time the admitted ones round-robin in shuffled order until the time budget is spent; report the
median, GFLOP/s, and the ratio of each peer's time to headwise's.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch

from .console import Progress, progress_bar
from .contenders import HEADWISE, Contender, Inputs, make_inputs, make_step, select
from .grid import FLOP_FORMULAS, LEVELS, MASKS, MODES, Config, flops
from .measure import (
    GB,
    MB,
    PROBE_N,
    Guard,
    Measurement,
    machine,
    matmul_ceiling,
    measure_call,
    time_interleaved,
)
from .options import GridSettings, add_common_arguments, positive, settings_from_args
from .report import plot_speed, publish, speed_markdown


@dataclass(frozen=True, kw_only=True)
class SpeedSettings(GridSettings):
    budget_s: float  # per configuration, once every contender has run min_reps times
    max_reps: int
    min_reps: int = 3
    warmup: int = 1
    max_call_s: float = 60.0  # skip a contender whose call would take longer (predicted from a smaller N)
    ceiling_size: int = 2048


PRESETS = {
    "quick": SpeedSettings(
        sizes=(128, 512, 1024), dtypes=("fp32",), modes=("fwd",), masks=("none",), budget_s=1.0, max_reps=10
    ),
    "full": SpeedSettings(
        sizes=(128, 512, 1024, 2048, 4096, 8192),
        dtypes=("fp32", "bf16"),
        modes=MODES,
        masks=MASKS,
        budget_s=10.0,
        max_reps=50,
    ),
}


def _warm_up(step: Callable[[], None], times: int) -> Measurement:
    """Run step `times` times (at least once); the memory and time of the first run."""
    first = measure_call(step)
    for _ in range(times - 1):
        step()
    return first


def _probe(contender: Contender, config: Config, guard: Guard) -> None:
    """Measure the contender at PROBE_N, so that the guard can extrapolate to config."""
    small = config.at(PROBE_N)
    step = make_step(contender, small, make_inputs(small, contender.level))
    guard.record(contender.name, small, measure_call(step))


def _admit(
    contender: Contender, config: Config, inputs: Inputs, guard: Guard, warmup: int
) -> tuple[Callable[[], None] | None, dict]:
    """(the contender's warmed-up step, its first call's memory and time) or (None, why it does not run)."""
    try:
        if guard.needs_probe(contender.name, config):
            _probe(contender, config, guard)
        reason = guard.refusal(contender.name, config)
        if reason is not None:
            return None, {"status": "skipped", "reason": reason}
        step = make_step(contender, config, inputs)
        first = _warm_up(step, warmup)
    except Exception as error:  # e.g. a backend that cannot serve this configuration
        return None, {"status": "error", "reason": f"{type(error).__name__}: {error}"}
    guard.record(contender.name, config, first)
    return step, {"peak_mb": first.peak_bytes / MB, "first_call_ms": first.seconds * 1e3}


def _summary(times: list[float], work: float) -> dict:
    median = statistics.median(times)
    return {
        "status": "ok",
        "ms": median * 1e3,
        "gflops": work / median / 1e9,
        "reps": len(times),
        "times_ms": [round(t * 1e3, 4) for t in times],
    }


def ratios(outcomes: dict[str, dict], levels: dict[str, str]) -> dict[str, dict[str, float]]:
    """{headwise contender: {peer: peer's ms / headwise's ms}} per level (above 1: headwise is faster)."""
    result = {}
    for level, ours in HEADWISE.items():
        if outcomes.get(ours, {}).get("status") != "ok":
            continue
        peers = [n for n, lvl in levels.items() if lvl == level and n != ours]
        result[ours] = {
            peer: outcomes[peer]["ms"] / outcomes[ours]["ms"]
            for peer in peers
            if outcomes.get(peer, {}).get("status") == "ok"
        }
    return result


def run_config(config: Config, contenders: list[Contender], settings: SpeedSettings, guard: Guard) -> dict:
    """Time every contender at one configuration; a row of the results."""
    levels = {c.name: c.level for c in contenders}
    inputs = {level: make_inputs(config, level) for level in LEVELS if level in levels.values()}
    steps, outcomes = {}, {}
    low_precision = config.torch_dtype in (torch.bfloat16, torch.float16)
    for contender in contenders:
        if contender.low_precision_only and not low_precision:
            outcomes[contender.name] = {"status": "n/a"}  # a float32 variant of a float32 configuration
            continue
        step, outcome = _admit(contender, config, inputs[contender.level], guard, settings.warmup)
        outcomes[contender.name] = outcome
        if step is not None:
            steps[contender.name] = step
    times = time_interleaved(steps, settings.budget_s, settings.min_reps, settings.max_reps)
    work = {level: flops(config, level) for level in inputs}
    for name, seconds in times.items():
        outcomes[name] = {**_summary(seconds, work[levels[name]]), **outcomes[name]}
    return {
        "config": asdict(config),
        "flops": work,
        "contenders": outcomes,
        "ratios": ratios(outcomes, levels),
    }


def run_speed(settings: SpeedSettings, progress: Progress | None = None) -> dict:
    """The whole benchmark: the matmul ceiling per dtype, then every configuration. Returns the results as
    a JSON-ready dict; `progress(label, done, total)` hears about each step."""
    where = machine()  # the load average before the benchmark adds its own
    contenders = select(settings.contenders)
    configs = settings.configs()
    total = len(settings.dtypes) + len(configs)
    report = progress or (lambda label, done, total: None)
    ceilings = {}
    for done, dtype in enumerate(settings.dtypes):
        report(f"{dtype} matmul {settings.ceiling_size}³", done, total)
        ceilings[dtype] = matmul_ceiling(
            dtype, settings.ceiling_size, settings.budget_s, settings.min_reps, settings.max_reps
        )
    guard = Guard(int(settings.cap_gb * GB), settings.max_call_s)
    rows = []
    for done, config in enumerate(configs, start=len(settings.dtypes)):
        report(config.label(), done, total)
        rows.append(run_config(config, contenders, settings, guard))
    report("done", total, total)
    return {
        "benchmark": "speed",
        "machine": where,
        "settings": asdict(settings),
        "flop_formulas": FLOP_FORMULAS,
        "ceiling": ceilings,
        "contenders": {c.name: {"level": c.level, "description": c.description} for c in contenders},
        "results": rows,
    }


def add_arguments(parser: argparse.ArgumentParser, preset: str) -> None:
    """The speed benchmark's options, shared by `headwise bench` (preset "quick") and benchmarks/speed.py
    ("full")."""
    add_common_arguments(parser, PRESETS, preset)
    timing = parser.add_argument_group("timing")
    timing.add_argument("--budget", dest="budget_s", type=positive(float), help="seconds per configuration")
    timing.add_argument("--reps", dest="max_reps", type=positive(int), help="at most this many repetitions")
    timing.add_argument(
        "--min-reps", type=positive(int), help="at least this many, budget or not (default 3)"
    )
    timing.add_argument(
        "--warmup", type=positive(int), help="untimed calls of each contender first (default 1)"
    )
    timing.add_argument(
        "--max-call",
        dest="max_call_s",
        type=positive(float),
        help="skip a contender whose call would take longer, predicted from a smaller N (default 60 s)",
    )
    timing.add_argument(
        "--ceiling-size", type=positive(int), help="n of the n³ matmul ceiling (default 2048)"
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark the options describe with a progress bar; print the markdown, write the files."""
    settings = settings_from_args(args, PRESETS)
    settings = replace(settings, min_reps=min(settings.min_reps, settings.max_reps))
    with progress_bar() as progress:
        results = run_speed(settings, progress)
    publish(results, speed_markdown, plot_speed, args.out)
    return 0
