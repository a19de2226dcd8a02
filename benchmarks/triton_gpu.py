"""The triton backend on a GPU: speed against SDPA's flash kernel, masks, determinism, large-N accuracy.

    .venv/bin/python benchmarks/triton_gpu.py                 # CUDA: results/triton-gpu-<device>.json, .md
    .venv/bin/python benchmarks/triton_gpu.py --quick         # N <= 4096, 50 determinism runs, accuracy at 8k
    .venv/bin/python benchmarks/triton_gpu.py --compile-only  # no GPU needed: compile the kernels, sm80+90
    TRITON_INTERPRET=1 .venv/bin/python benchmarks/triton_gpu.py --smoke  # the whole script, tiny, on the CPU

Without CUDA (and without --compile-only or --smoke) it prints why and exits with status 77, the "skipped"
status of automake and meson, so that a caller can tell "not run" (77) from "passed" (0) and "failed" (1: a
correctness or determinism check failed).

What one run measures, in bf16 (float32 in --smoke):
1. the matmul ceiling: torch.matmul TFLOP/s on 8192³ in the same run;
2. forward and forward+backward, Dh 64 and 128, N = 1k … 16k, causal or not, B·N = 16k tokens and
   H·Dh = 2048 (FlashAttention's benchmark convention): headwise's triton backend (atomic dQ, and the
   deterministic backward) against F.scaled_dot_product_attention with SDPBackend.FLASH_ATTENTION; TFLOP/s
   with FLOPs 4·B·H·N²·Dh (halved when causal), forward+backward 3.5× that;
3. masks at N = 4k and 16k (Dh 128, B = 1, H = 16): a causal sliding window (left 512) and causal packed
   documents, each as a predicate (compiled into the kernel, blocks skipped), as a dense bool tensor (read
   tile by tile), through SDPA with the dense mask (its memory-efficient kernel), and through FlexAttention
   (torch.compile'd, with a block mask) where it runs; TFLOP/s count only the allowed (query, key) pairs;
4. determinism: the backward 250 times (Dh 128, N = 4096, causal), gradients compared bitwise with the
   first run, for the deterministic kernels (must all match) and the atomic dQ (reported);
5. accuracy at large N: N = 16384, GQA (Hq = 8, Hkv = 2), Dh 128, causal, bf16: out, dq, dk, dv against the
   chunked backend in float64 on the GPU by the ratio rule (k = 2 for out, 3 for gradients), with the
   reference backend in bf16 as the baseline; SDPA flash's error is shown beside it.
Median times from triton.testing.do_bench (L2 flushed between runs).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import itertools
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import headwise
from headwise import masks

SKIPPED = 77  # automake's and meson's "skipped" exit status
RESULTS = Path(__file__).parent / "results"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/triton_gpu.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N <= 4096, 50 determinism runs")
    parser.add_argument("--compile-only", action="store_true", help="compile for sm80/sm90; needs no GPU")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (TRITON_INTERPRET=1)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output prefix (default results/triton-gpu-<device>)"
    )
    args = parser.parse_args(argv)
    try:
        import triton  # noqa: F401
    except ImportError:
        print("benchmarks/triton_gpu.py needs Triton: pip install 'headwise[gpu]'", file=sys.stderr)
        return SKIPPED
    if args.compile_only:
        return compile_only()
    if args.smoke:
        if os.environ.get("TRITON_INTERPRET") != "1":
            print(
                "--smoke runs the kernels under Triton's interpreter: set TRITON_INTERPRET=1", file=sys.stderr
            )
            return SKIPPED
        settings = Settings.smoke()
    elif not torch.cuda.is_available():
        print(
            "benchmarks/triton_gpu.py measures the triton backend on a CUDA GPU, and this machine has none "
            f"(torch {torch.__version__}, torch.cuda.is_available() is False): nothing measured. "
            "--compile-only checks that the kernels compile for sm80/sm90 without a GPU.",
            file=sys.stderr,
        )
        return SKIPPED
    elif os.environ.get("TRITON_INTERPRET") == "1":
        print(
            "TRITON_INTERPRET=1 would time Triton's CPU interpreter: unset it (or use --smoke)",
            file=sys.stderr,
        )
        return 1
    else:
        settings = Settings.quick() if args.quick else Settings.full()
    return run(settings, args.out)


class Settings:
    """One run's sizes; `device` is cuda, or cpu for --smoke."""

    def __init__(self, **values):
        self.__dict__.update(values)

    @classmethod
    def full(cls):
        return cls(
            device="cuda", dtype=torch.bfloat16, sizes=(1024, 2048, 4096, 8192, 16384), head_dims=(64, 128),
            tokens=16384, width=2048, mask_sizes=(4096, 16384), window=512, mask_heads=16,
            determinism_runs=250, determinism_n=4096, accuracy_n=16384, ceiling=8192, flex=True,
        )  # fmt: skip

    @classmethod
    def quick(cls):
        settings = cls.full()
        settings.__dict__.update(sizes=(1024, 2048, 4096), mask_sizes=(4096,), determinism_runs=50)
        settings.accuracy_n = 8192
        return settings

    @classmethod
    def smoke(cls):
        return cls(
            device="cpu", dtype=torch.float32, sizes=(32, 64), head_dims=(32,), tokens=64, width=64,
            mask_sizes=(64,), window=16, mask_heads=2, determinism_runs=3, determinism_n=32, accuracy_n=48,
            ceiling=256, flex=False,
        )  # fmt: skip


# Timing -------------------------------------------------------------------------------------------------


def median_ms(fn, cuda: bool, grads=()) -> float:
    """The median time of fn() in milliseconds; gradients of `grads` reset to None before each call."""
    if cuda:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, grad_to_none=list(grads), return_mode="median"))
    times = []
    for _ in range(3):  # --smoke: the CPU
        for t in grads:
            t.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[1]


def attention_flops(batch, heads, nq, nk, head_dim, causal, backward) -> float:
    """4·B·H·Nq·Nk·Dh (halved when causal), 3.5× with the backward (FlashAttention's convention)."""
    forward = 4 * batch * heads * nq * nk * head_dim / (2 if causal else 1)
    return forward * (3.5 if backward else 1.0)


def step(forward, inputs, d_out, backward):
    """A callable timing forward (under inference_mode) or forward+backward."""

    def infer():
        with torch.inference_mode():
            forward(*inputs)

    def train():
        forward(*inputs).backward(d_out)

    return train if backward else infer


# Contenders ---------------------------------------------------------------------------------------------


def triton_attention(mask=None, causal=False, deterministic=False):
    from headwise.backends.triton import attention_with_lse

    tensor, predicate = masks.split_causal(mask, causal)

    def run(q, k, v):
        return attention_with_lse(q, k, v, mask=tensor, predicate=predicate, deterministic=deterministic)[0]

    return run


def sdpa_flash(causal):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run(q, k, v):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(
                q, k, v, is_causal=causal
            )  # Nq = Nk: top-left is bottom-right

    return run


def sdpa_masked(dense):
    def run(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=dense)  # the memory-efficient kernel

    return run


def flex(predicate, batch, heads, n, device):
    """FlexAttention with the predicate as a block mask, compiled; raises where it cannot run."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask_mod(b, h, q_idx, kv_idx):
        return predicate.allowed(b, h, q_idx, kv_idx, n, n)

    block_mask = create_block_mask(mask_mod, batch, None, n, n, device=device)
    compiled = torch.compile(flex_attention)

    def run(q, k, v):
        return compiled(q, k, v, block_mask=block_mask)

    return run


# Sections -----------------------------------------------------------------------------------------------


def ceiling(settings) -> dict:
    n = settings.ceiling
    a = torch.randn(n, n, device=settings.device, dtype=settings.dtype)
    ms = median_ms(lambda: a @ a, settings.device == "cuda")
    return {"size": n, "ms": ms, "tflops": 2 * n**3 / ms / 1e9}


def speed(settings, peak) -> list[dict]:
    rows = []
    for head_dim in settings.head_dims:
        heads = settings.width // head_dim
        for n in settings.sizes:
            batch = max(1, settings.tokens // n)
            q, k, v, d_out = inputs(settings, batch, heads, heads, n, n, head_dim)
            for causal in (False, True):
                for backward in (False, True):
                    contenders = {
                        "triton": triton_attention(causal=causal),
                        "sdpa-flash": sdpa_flash(causal),
                    }
                    if backward:
                        contenders["triton-deterministic"] = triton_attention(
                            causal=causal, deterministic=True
                        )
                    flops = attention_flops(batch, heads, n, n, head_dim, causal, backward)
                    row = {
                        "dtype": str(settings.dtype), "head_dim": head_dim, "n": n, "batch": batch,
                        "heads": heads, "causal": causal, "pass": "fwd+bwd" if backward else "fwd",
                    }  # fmt: skip
                    for name, forward in contenders.items():
                        row[name] = timed(forward, (q, k, v), d_out, backward, flops, peak)
                    rows.append(row)
                    print(describe(row), flush=True)
    return rows


def mask_comparison(settings, peak) -> list[dict]:
    rows = []
    batch, heads, head_dim = 1, settings.mask_heads, 128 if settings.device == "cuda" else 32
    for n in settings.mask_sizes:
        q, k, v, d_out = inputs(settings, batch, heads, heads, n, n, head_dim)
        lengths = document_lengths(n, seed=n)
        ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))[None]  # (1, N)
        cases = {
            f"sliding_window({settings.window}, 0)": masks.sliding_window(settings.window, 0),
            f"documents({len(lengths)} docs) & causal": masks.documents(ids.to(settings.device))
            & masks.causal(),
        }
        for title, predicate in cases.items():
            dense = predicate.materialize(batch, 1, n, n, device=settings.device)  # (1, 1, N, N) bool
            allowed = int(dense.sum().item()) * heads
            contenders = {
                "triton (predicate)": triton_attention(mask=predicate),
                "triton (dense mask)": triton_attention(mask=dense),
                "sdpa (dense mask)": sdpa_masked(dense),
            }
            if settings.flex:
                try:
                    contenders["flex (block mask)"] = flex(predicate, batch, heads, n, settings.device)
                except Exception as error:  # FlexAttention missing or refusing: say so in the table
                    contenders["flex (block mask)"] = error
            for backward in (False, True):
                flops = 4 * batch * allowed * head_dim * (3.5 if backward else 1.0)
                row = {
                    "mask": title, "n": n, "heads": heads, "head_dim": head_dim,
                    "pass": "fwd+bwd" if backward else "fwd", "density": allowed / (heads * n * n),
                }  # fmt: skip
                for name, forward in contenders.items():
                    if isinstance(forward, Exception):
                        row[name] = {"error": f"{type(forward).__name__}: {forward}"[:200]}
                    else:
                        row[name] = timed(forward, (q, k, v), d_out, backward, flops, peak)
                rows.append(row)
                print(describe(row), flush=True)
    return rows


def determinism(settings) -> dict:
    n, heads, head_dim = settings.determinism_n, 16 if settings.device == "cuda" else 2, 128
    head_dim = head_dim if settings.device == "cuda" else 32
    q, k, v, d_out = inputs(settings, 2, heads, heads, n, n, head_dim)
    result = {"runs": settings.determinism_runs, "n": n, "heads": heads, "head_dim": head_dim, "causal": True}
    for name, deterministic in (("deterministic", True), ("atomic dQ", False)):
        forward = triton_attention(causal=True, deterministic=deterministic)
        first, differing = None, 0
        for _ in range(settings.determinism_runs):
            grads = gradients(forward, q, k, v, d_out)
            if first is None:
                first = grads
            elif not all(torch.equal(a, b) for a, b in zip(first, grads, strict=True)):
                differing += 1
        result[name] = {"runs differing from the first": differing}
        print(f"determinism, {name}: {differing} of {settings.determinism_runs - 1} runs differ", flush=True)
    result["ok"] = result["deterministic"]["runs differing from the first"] == 0
    return result


def accuracy(settings) -> dict:
    """bf16 at large N against float64 (chunked backend, memory linear in N) by the ratio rule; N halves
    while the dense baseline does not fit in memory."""
    n = settings.accuracy_n
    while True:
        try:
            return accuracy_at(settings, n)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            print(f"accuracy at N = {n}: out of memory (the dense baseline), trying N = {n // 2}", flush=True)
            n //= 2


def accuracy_at(settings, n) -> dict:
    head_dim = 128 if settings.device == "cuda" else 32
    q, k, v, d_out = inputs(settings, 1, 8, 2, n, n, head_dim)

    def run(fn, *tensors):
        return (fn(*tensors).detach(), *gradients(fn, *tensors, d_out.to(tensors[0].dtype)))

    golden = run(
        lambda q, k, v: headwise.attention(q, k, v, causal=True, backend="chunked"),
        q.double(), k.double(), v.double(),
    )  # fmt: skip
    baseline = run(lambda q, k, v: headwise.attention(q, k, v, causal=True, backend="reference"), q, k, v)
    fast = run(triton_attention(causal=True), q, k, v)
    flash = None
    if settings.device == "cuda":
        flash = run(
            lambda q, k, v: sdpa_flash(True)(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1)), q, k, v
        )
    result = {"n": n, "heads": "8 query, 2 key/value", "head_dim": head_dim, "dtype": str(settings.dtype)}
    ok = True
    for i, (what, ratio) in enumerate((("out", 2), ("dq", 3), ("dk", 3), ("dv", 3))):
        error = (fast[i].double() - golden[i]).abs().max().item()
        base = (baseline[i].double() - golden[i]).abs().max().item()
        floor = 4 * torch.finfo(settings.dtype).eps * max(1.0, golden[i].abs().max().item())
        passed = error <= ratio * base + floor
        ok &= passed
        result[what] = {"triton error": error, "baseline error": base, "k": ratio, "passed": passed}
        if flash is not None:
            result[what]["sdpa flash error"] = (flash[i].double() - golden[i]).abs().max().item()
        print(f"accuracy {what}: triton {error:.3g}, baseline {base:.3g} (k = {ratio}): {passed}", flush=True)
    result["ok"] = ok
    return result


# Helpers ------------------------------------------------------------------------------------------------


def inputs(settings, batch, heads, kv_heads, nq, nk, head_dim, seed=0):
    """q (B, Hq, Nq, Dh), k, v (B, Hkv, Nk, Dh) requiring gradients, and d_out (B, Hq, Nq, Dh)."""
    gen = torch.Generator(device=settings.device).manual_seed(seed)

    def draw(*shape):
        return torch.randn(shape, generator=gen, device=settings.device).to(settings.dtype)

    q = draw(batch, heads, nq, head_dim).requires_grad_()
    k, v = (draw(batch, kv_heads, nk, head_dim).requires_grad_() for _ in range(2))
    return q, k, v, draw(batch, heads, nq, head_dim)


def gradients(forward, q, k, v, d_out):
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    return torch.autograd.grad(forward(q, k, v), (q, k, v), d_out)


def timed(forward, tensors, d_out, backward, flops, peak) -> dict:
    try:
        ms = median_ms(step(forward, tensors, d_out, backward), d_out.is_cuda, tensors if backward else ())
    except Exception as error:  # out of memory, a kernel that refuses: a cell that says so
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"error": f"{type(error).__name__}: {error}"[:200]}
    return {"ms": ms, "tflops": flops / ms / 1e9, "of_matmul": flops / ms / 1e9 / peak}


def document_lengths(n, seed) -> list[int]:
    """Packed documents of random lengths (64 tokens and up) filling n."""
    gen = torch.Generator().manual_seed(seed)
    cuts = sorted(torch.randperm(n // 64 - 1, generator=gen)[: max(1, n // 2048)].add(1).mul(64).tolist())
    bounds = [0, *cuts, n]
    return [b - a for a, b in itertools.pairwise(bounds)]


def describe(row) -> str:
    cells = [f"{key}={value}" for key, value in row.items() if not isinstance(value, dict)]
    for key, value in row.items():
        if isinstance(value, dict):
            cells.append(
                f"{key}: " + (f"{value['ms']:.3g} ms {value['tflops']:.1f} TF" if "ms" in value else "error")
            )
    return " ".join(cells)


def machine(settings) -> dict:
    import triton

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "headwise": importlib.metadata.version("headwise"),
        "python": platform.python_version(),
    }
    if settings.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info |= {"device": props.name, "capability": f"{props.major}.{props.minor}",
                 "memory_gb": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda}  # fmt: skip
    else:
        info |= {"device": "cpu (Triton interpreter, --smoke)", "platform": platform.platform()}
    return info


def compile_only() -> int:
    """Compile every kernel, for the configurations the benchmark runs, for sm80 and sm90."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("--compile-only needs the GPU kernels: unset TRITON_INTERPRET", file=sys.stderr)
        return 1
    import triton_compile

    from headwise.backends.triton import kernels, make_plan

    ids = torch.arange(4096).div(1000, rounding_mode="floor")[None]  # (1, N), packed
    cases = [
        ("causal", None, True, None, 0.0),
        ("window", masks.sliding_window(512, 0), False, None, 0.0),
        ("documents & causal", masks.documents(ids) & masks.causal(), False, None, 0.0),
        ("dense bool mask", torch.ones(1, 1, 4096, 4096, dtype=torch.bool), False, None, 0.0),
        ("softcap, alibi, dropout", None, True, masks.softcap(30.0).then(masks.alibi(torch.ones(8))), 0.1),
    ]
    failures = 0
    for arch in (80, 90):
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            for head_dim in (64, 128, 256, 96):
                for title, mask, causal, mod, p in (
                    cases if head_dim == 128 and dtype == torch.bfloat16 else cases[:1]
                ):
                    q = torch.empty(1, 8, 4096, head_dim, dtype=dtype)
                    k = torch.empty(1, 2, 4096, head_dim, dtype=dtype)
                    plan = make_plan(q, k, *masks.split_causal(mask, causal), 0.1, p, 1234 if p else 0, mod)
                    for deterministic in (False, True):
                        try:
                            with triton_compile.compile_only(arch) as records:
                                out, lse = kernels.forward(q, k, k, plan)
                                kernels.backward(q, k, k, out, lse, out, lse, plan, deterministic)
                        except Exception as error:
                            failures += 1
                            print(f"sm{arch} {dtype} Dh {head_dim} {title}: FAILED {error}", flush=True)
                            continue
                        chosen = [r for r in records if r["fits"]]
                        summary = ", ".join(
                            f"{r['kernel'].removeprefix('attention_')} "
                            f"{r['tiles'].block_m}×{r['tiles'].block_n} {r['shared'] // 1024} KiB"
                            for r in chosen
                        )
                        print(f"sm{arch} {str(dtype)[6:]:8s} Dh {head_dim:3d} {title:24s} "
                              f"{'det' if deterministic else 'atomic'}: {summary}", flush=True)  # fmt: skip
    print("compiled everything" if not failures else f"{failures} configurations failed to compile")
    return 1 if failures else 0


def run(settings, out: Path | None) -> int:
    torch.manual_seed(0)
    info = machine(settings)
    print(f"{info['device']}: torch {info['torch']}, triton {info['triton']}", flush=True)
    top = ceiling(settings)
    print(f"matmul ceiling: {top['tflops']:.1f} TFLOP/s ({top['size']}³)", flush=True)
    results = {
        "benchmark": "triton_gpu",
        "machine": info,
        "settings": {k: (list(v) if isinstance(v, tuple) else str(v)) for k, v in settings.__dict__.items()},
        "flop_formulas": {
            "forward": "4·B·H·Nq·Nk·Dh, halved when causal (masks: 4·Dh·(allowed pairs))",
            "forward+backward": "3.5 × forward",
            "matmul ceiling": "2·n³ for an (n, n) @ (n, n) product in the same dtype",
        },
        "ceiling": top,
    }
    results["speed"] = speed(settings, top["tflops"])
    results["masks"] = mask_comparison(settings, top["tflops"])
    results["determinism"] = determinism(settings)
    results["accuracy"] = accuracy(settings)
    slug = re.sub(r"[^a-z0-9]+", "-", info["device"].lower()).strip("-")
    prefix = out or RESULTS / f"triton-gpu-{slug}"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    prefix.with_suffix(".md").write_text(markdown(results))
    print(f"wrote {prefix}.json and {prefix}.md")
    return 0 if results["determinism"]["ok"] and results["accuracy"]["ok"] else 1


def markdown(results) -> str:
    info, top = results["machine"], results["ceiling"]
    lines = [
        "# The triton backend on a GPU",
        "",
        f"{info['date']} · {info['device']} · torch {info['torch']} · triton {info['triton']}",
        "",
        f"Matmul ceiling, same run: {top['tflops']:.1f} TFLOP/s ({top['size']}³). "
        "Cells: median ms / TFLOP/s (% of the matmul ceiling).",
        "FLOPs: " + "; ".join(f"{k}: {v}" for k, v in results["flop_formulas"].items()) + ".",
        "",
        "## Speed (B·N = 16k tokens, H·Dh = 2048)",
        "",
    ]
    lines += table(results["speed"], ("dtype", "head_dim", "n", "causal", "pass"))
    lines += ["", "## Masks (B = 1, causal windows and documents)", ""]
    lines += table(results["masks"], ("mask", "n", "pass", "density"))
    det, acc = results["determinism"], results["accuracy"]
    lines += ["", "## Determinism", ""]
    lines += [
        f"Backward {det['runs']} times (N = {det['n']}, H = {det['heads']}, Dh = {det['head_dim']}, "
        f"causal): deterministic kernels, {det['deterministic']['runs differing from the first']} runs "
        f"differ from the first; atomic dQ, {det['atomic dQ']['runs differing from the first']}."
    ]
    lines += ["", f"## Accuracy at N = {acc['n']} ({acc['dtype']}, {acc['heads']} heads, causal)", ""]
    lines += ["| | triton error | baseline error (reference, same dtype) | k | passed | SDPA flash error |"]
    lines += ["| - | -: | -: | -: | - | -: |"]
    for what in ("out", "dq", "dk", "dv"):
        r = acc[what]
        flash = f"{r['sdpa flash error']:.3g}" if "sdpa flash error" in r else ""
        errors = f"{r['triton error']:.3g} | {r['baseline error']:.3g}"
        lines.append(f"| {what} | {errors} | {r['k']} | {r['passed']} | {flash} |")
    return "\n".join(lines) + "\n"


def table(rows, keys) -> list[str]:
    if not rows:
        return []
    names = [name for name, value in rows[0].items() if isinstance(value, dict)]
    header = [*keys, *names]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" - " for _ in header) + "|"]
    for row in rows:
        cells = [f"{row[key]:.3f}" if isinstance(row[key], float) else str(row[key]) for key in keys]
        for name in names:
            cell = row.get(name, {})
            if "ms" in cell:
                cells.append(f"{cell['ms']:.3g} / {cell['tflops']:.1f} ({cell['of_matmul']:.0%})")
            else:
                cells.append(cell.get("error", "")[:40])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
