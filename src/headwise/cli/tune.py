"""`headwise tune`: measure, for a grid of shapes, which backend and compute dtype "auto" should take on this
machine, keep them in the dispatch cache, and print what was chosen and by how much it beats the static
table's choice and SDPA."""

from __future__ import annotations

import argparse
from typing import Any

from ..backends import tuning
from ..bench.console import progress_bar
from ..bench.contenders import make_inputs
from ..bench.grid import Config
from ..bench.options import GridSettings, add_common_arguments, settings_from_args
from ..functional import tune

PRESETS = {
    "quick": GridSettings(
        sizes=(128, 512, 1024), dtypes=("fp32", "bf16"), modes=("fwd", "fwd+bwd"), masks=("none",)
    ),
    "full": GridSettings(
        sizes=(128, 256, 512, 1024, 2048, 4096),
        dtypes=("fp32", "bf16"),
        modes=("fwd", "fwd+bwd"),
        masks=("none", "causal"),
    ),
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare `headwise tune` and its options."""
    parser = subparsers.add_parser(
        "tune",
        help="measure the fastest backend for each shape on this machine and remember it",
        description="For each configuration of the grid, time every backend that can serve it (in the "
        "input dtype and, for bf16/fp16, in float32), keep the static choice unless another beats it "
        "clearly, write it to the dispatch cache when the measurement was steady "
        f"({tuning.cache_path()}, under $XDG_CACHE_HOME when set), which backend='auto' then follows, and "
        "print the choices. The progress bar goes to stderr, the table to stdout.",
    )
    add_common_arguments(parser, PRESETS, default="quick")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Tune every configuration; print one row each."""
    settings = settings_from_args(args, PRESETS)
    configs = settings.configs()
    rows: list[tuple[Config, dict[str, Any]]] = []
    with progress_bar() as progress:
        for done, config in enumerate(configs):
            progress(config.label(), done, len(configs))
            q, k, v = make_inputs(config, "kernel").tensors  # (B, H, N, Dh) each
            report = tune(q, k, v, causal=config.causal)
            rows.append((config, report))
        progress("done", len(configs), len(configs))
    print(_table(rows))
    unsteady = sum(not report["steady"] for _, report in rows)
    print(f"\nCPU kind {tuning.cpu_kind()}; {len(rows) - unsteady} choices written to {tuning.cache_path()}")
    if unsteady:
        print(
            f"{unsteady} of {len(rows)} measurements were unsteady (the machine was busy): not written, "
            "the static choice kept there; run `headwise tune` again when the machine is quiet"
        )
    return 0


def _table(rows: list[tuple[Config, dict[str, Any]]]) -> str:
    """A markdown table: the choice per configuration, its time, its speed-up over the first candidate
    (the static table's choice) and over SDPA in the input dtype, and whether it was written (steady)."""
    lines = [
        "| dtype | pass | causal | N | chosen | ms | static choice | × static | × sdpa | tuning s "
        "| written |",
        "| --- | --- | --- | ---: | --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for config, report in rows:
        times = report["ms"]
        chosen = report["choice"].label(config.torch_dtype)
        static = next(iter(times))  # the candidates are timed in the static table's order
        cells = [config.dtype, config.mode, "causal" if config.causal else "", str(config.n), chosen]
        cells += [f"{times[chosen]:.3g}", static, _ratio(times.get(static), times[chosen])]
        cells += [_ratio(times.get("sdpa"), times[chosen]), f"{report['cost_s']:.2f}"]
        cells += ["yes" if report["steady"] else "no: unsteady"]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def _ratio(theirs: float | None, ours: float) -> str:
    return "" if theirs is None else f"{theirs / ours:.2f}×"
