"""The benchmarks: FLOP formulas, contenders that compute the same function, interleaving, the memory
guard, the writers on a tiny run, `headwise bench`, and the memory child. Nothing here asserts a time."""

from __future__ import annotations

import json
import os

import pytest
import torch

import headwise
from headwise.backends import tuning
from headwise.bench import contenders, measure, memory, report, speed
from headwise.bench.grid import Config, attention_flops, flops, projection_flops
from headwise.cli.main import build_parser, main

TINY = speed.SpeedSettings(
    sizes=(16,),
    dtypes=("fp32",),
    modes=("fwd", "fwd+bwd"),
    masks=("none", "causal"),
    budget_s=0.0,
    max_reps=1,
    min_reps=1,
    ceiling_size=32,
    batch=1,
    heads=2,
    head_dim=8,
)
# headwise's backends may decline a configuration with a ValueError (reported as an error in the results)
BACKEND_CONTENDERS = {f"hw-{name}" for name in headwise.backends.BACKENDS}


def test_flop_formulas_on_a_hand_computed_case():
    # B=2, H=3, N=5, Dh=7: 4·2·3·5·5·7 = 4200 forward; E = 21: projections 8·2·5·21² = 35280.
    config = Config("fp32", "fwd", False, 5, batch=2, heads=3, head_dim=7)
    assert attention_flops(config) == 4200
    assert attention_flops(Config("fp32", "fwd", True, 5, batch=2, heads=3, head_dim=7)) == 2100
    assert attention_flops(Config("fp32", "fwd+bwd", False, 5, batch=2, heads=3, head_dim=7)) == 4200 * 3.5
    assert projection_flops(config) == 35280
    assert flops(config, "kernel") == 4200
    assert flops(config, "module") == 4200 + 35280
    assert (
        flops(Config("fp32", "fwd+bwd", True, 5, batch=2, heads=3, head_dim=7), "module")
        == 2100 * 3.5 + 35280 * 3
    )


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("num_queries", "num_keys"), [(9, 9), (5, 12)])
def test_naive_attention_is_headwise_attention(causal, num_queries, num_keys):
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, num_queries, 8, generator=generator, dtype=torch.float64)
    k, v = (torch.randn(2, 3, num_keys, 8, generator=generator, dtype=torch.float64) for _ in range(2))
    allowed = contenders.lower_triangle(num_queries, num_keys) if causal else None
    expected = headwise.attention(q, k, v, causal=causal, backend="reference")
    torch.testing.assert_close(contenders.naive_attention(q, k, v, allowed), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_every_kernel_contender_computes_the_same_function(causal):
    config = Config("fp64", "fwd", causal, 24, batch=2, heads=2, head_dim=8)
    q, k, v = contenders.make_inputs(config, "kernel").tensors
    expected = headwise.attention(q, k, v, causal=causal, backend="reference")
    kernels = [c for c in contenders.all_contenders() if c.level == "kernel"]
    assert {"hw-auto", "torch-sdpa", "torch-math", "naive"} <= {c.name for c in kernels}
    assert {c.name for c in kernels} >= BACKEND_CONTENDERS
    for contender in kernels:
        if contender.low_precision_only:  # a float32 variant, for bf16/fp16 only: test_upcast_variants
            continue
        forward, _ = contender.prepare(config)
        try:
            out = forward(q, k, v)
        except ValueError:  # a backend that says it cannot serve this (e.g. a GPU-only one on the CPU)
            assert contender.name in BACKEND_CONTENDERS
            continue
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10, msg=contender.name)


def test_upcast_variants_compute_in_float32_and_return_the_input_dtype():
    config = Config("bf16", "fwd", True, 24, batch=2, heads=2, head_dim=8)
    q, k, v = contenders.make_inputs(config, "kernel").tensors
    expected = headwise.attention(q.float(), k.float(), v.float(), causal=True, backend="reference")
    upcast = [c for c in contenders.all_contenders() if c.low_precision_only and c.level == "kernel"]
    assert {c.name for c in upcast} == {f"{name}@fp32" for name in ("torch-sdpa", "naive", "hw-dense")}
    for contender in upcast:
        out = contender.prepare(config)[0](q, k, v)
        assert out.dtype == torch.bfloat16, contender.name
        torch.testing.assert_close(
            out, expected.bfloat16(), rtol=2**-8, atol=1e-6, msg=contender.name
        )  # 1 ulp


def test_steps_run_and_train():
    config = Config("fp32", "fwd+bwd", True, 16, batch=1, heads=2, head_dim=8)
    for contender in contenders.all_contenders():
        inputs = contenders.make_inputs(config, contender.level)
        try:
            contenders.make_step(contender, config, inputs)()
        except ValueError:  # a backend that declines this configuration
            assert contender.name in BACKEND_CONTENDERS
            continue
        assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in inputs.tensors), (
            contender.name
        )


def test_repetitions_interleave_every_step_once():
    calls = []
    steps = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = measure.time_interleaved(steps, budget_s=0.0, min_reps=3, max_reps=10)
    assert {name: len(t) for name, t in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(sorted(calls[i : i + 3]) == ["a", "b", "c"] for i in (0, 3, 6))


def test_guard_extrapolates_quadratically_and_probes_when_blind():
    config = Config("fp32", "fwd+bwd", False, 2048, batch=4, heads=8, head_dim=64)
    guard = measure.Guard(cap_bytes=3 * measure.GB // 2, max_call_s=10.0)
    assert guard.needs_probe("naive", config)  # 4 copies of the scores (B, H, N, N), 0.5 GB each: 2 GB
    guard.record("naive", config.at(1024), measure.Measurement(measure.GB // 4, seconds=0.5))
    assert not guard.needs_probe("naive", config)
    assert guard.refusal("naive", config) is None  # 1 GB, 2 s
    assert "needs ~4.0 GB" in guard.refusal("naive", config.at(4096))
    assert guard.refusal("naive", Config("bf16", "fwd+bwd", False, 4096)) is None  # nothing known there
    assert guard.needs_probe("naive", Config("bf16", "fwd+bwd", False, 4096))
    guard.record("slow", config.at(1024), measure.Measurement(0, seconds=3.0))
    assert "takes ~12 s a call" in guard.refusal("slow", config)


@pytest.fixture(scope="module")
def tiny_results():
    return speed.run_speed(TINY)


def test_writers_show_every_contender_and_the_ratios(tiny_results, tmp_path):
    names = [c.name for c in contenders.all_contenders()]
    contenders_by_name = {c.name: c for c in contenders.all_contenders()}
    markdown = report.speed_markdown(tiny_results)
    for name in names:
        assert f" {name} " in markdown
        assert f"vs {name}" in markdown or name in contenders.HEADWISE.values()
    assert markdown.count("\n| fp32 ") == 2 * len(TINY.configs())  # one row per configuration and level
    row = tiny_results["results"][-1]
    assert set(row["contenders"]) == set(names)
    for name, outcome in row["contenders"].items():
        upcast_of_fp32 = contenders_by_name[name].low_precision_only and outcome["status"] == "n/a"
        assert (
            outcome["status"] == "ok" or upcast_of_fp32 or (name in BACKEND_CONTENDERS and outcome["reason"])
        ), (
            name,
            outcome,
        )
    kernels = {c.name for c in contenders.all_contenders() if c.level == "kernel"}
    ran = {n for n in kernels - {"hw-auto"} if row["contenders"][n]["status"] == "ok"}  # hw-triton: CUDA only
    assert set(row["ratios"]["hw-auto"]) == ran
    assert set(row["ratios"]["hw-MHA"]) == {"torch-MHA", "torch-MHA-nw"}
    paths = report.write_outputs(tiny_results, markdown, tmp_path / "tiny", report.plot_speed)
    assert [p.name for p in paths] == ["tiny.json", "tiny.md", "tiny.png"]
    stored = json.loads(paths[0].read_text())
    assert stored["machine"]["torch"] == torch.__version__ and "cpu" in stored["machine"]
    assert "kernel forward" in stored["flop_formulas"]
    assert paths[2].read_bytes().startswith(b"\x89PNG")


def test_headwise_bench_prints_a_table(capsys):
    code = main(["bench", "--sizes", "32", "--reps", "1", "--ceiling-size", "32", "--batch", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "| dtype | pass |" in out and "vs torch-sdpa" in out and "vs torch-MHA-nw" in out
    assert "| fp32  |  fwd |        | 32 |" in out


def test_presets_and_overrides():
    args = build_parser().parse_args(
        ["bench", "--full", "--sizes", "64", "--budget", "2", "--quick", "--reps", "2"]
    )
    settings = speed.settings_from_args(args, speed.PRESETS)
    assert settings.sizes == (64,) and settings.budget_s == 2.0 and settings.max_reps == 2
    assert settings.dtypes == speed.PRESETS["quick"].dtypes  # the last preset flag wins
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--sizes", "0"])


@pytest.mark.slow
def test_memory_child_measures_a_positive_peak():
    config = Config("fp32", "fwd+bwd", False, 512, batch=1, heads=8, head_dim=64)
    outcome = memory.measure_in_child("naive", config, timeout_s=120)
    assert outcome["status"] == "ok", outcome
    assert outcome["peak_bytes"] > 8 * 512 * 512 * 4  # more than one copy of the scores (H, N, N)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cap-gb", "inf"], "argument --cap-gb: expected a positive float, got 'inf'"),
        (["--cap-gb", "nan"], "argument --cap-gb: expected a positive float, got 'nan'"),
        (
            ["--sizes", "300000", "--cap-gb", "1"],
            "the inputs alone of fp32 fwd N=300000 (B=4, H=8, Dh=64) take 6.9 GB, over the memory cap of "
            "1 GB",
        ),
        (["--sizes", "64", "--batch", "100000000", "--cap-gb", "8"], "over the memory cap of 8 GB"),
    ],
)
def test_bench_refuses_a_cap_it_cannot_keep_before_running(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *args])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err and "Traceback" not in err
    with pytest.raises(ValueError, match=r"the memory cap \(--cap-gb\) must be a finite number > 0, got inf"):
        speed.SpeedSettings(**{**TINY.__dict__, "cap_gb": float("inf")})
    with pytest.raises(SystemExit) as exit_info:  # benchmarks/memory.py
        memory.main(["--sizes", "300000", "--cap-gb", "1"])
    assert exit_info.value.code == 2 and "over the memory cap of 1 GB" in capsys.readouterr().err


def test_outputs_write_through_links_and_refuse_fifos(tiny_results, tmp_path):
    """Issue 12: the benchmark's files go through headwise.files.replacing, as every other writer: a link
    stays a link (its target is written), and a FIFO is refused at once instead of blocking."""
    markdown = report.speed_markdown(tiny_results)
    target = tmp_path / "kept.json"
    (tmp_path / "tiny.json").symlink_to(target)
    report.write_outputs(tiny_results, markdown, tmp_path / "tiny", report.plot_speed)
    assert (tmp_path / "tiny.json").is_symlink() and json.loads(target.read_text())["machine"]
    os.mkfifo(tmp_path / "fifo.md")
    with pytest.raises(OSError, match=r"fifo\.md is a FIFO"):
        report.write_outputs(tiny_results, markdown, tmp_path / "fifo", report.plot_speed)
    assert not (tmp_path / "fifo.json").exists()  # nothing written when one of the three cannot be


def test_headwise_tune_prints_each_choice_and_whether_it_was_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    tuning.forget()
    try:
        code = main(["tune", "--sizes", "32", "--dtypes", "fp32", "--modes", "fwd", "--masks", "none"])
    finally:
        tuning.forget()
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("| fp32 | fwd |")]
    written = row.endswith("| yes |")
    assert code == 0 and (written or row.endswith("| no: unsteady |"))
    assert (tmp_path / "headwise" / "dispatch.json").exists() == written
    assert ("measurements were unsteady" in out) == (not written)
