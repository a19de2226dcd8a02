"""A training step of headwise's LanguageModel, compiled and eager, against the same decoder-only model
built from torch.nn.TransformerEncoderLayer (causal mask), compiled and eager: ratios in one run.

.venv/bin/python benchmarks/compile.py [--steps 12] [--dropout 0.1] [--out benchmarks/results/compile-cpu.md]

One step = forward, cross-entropy, backward and an AdamW update; B sequences of N tokens, post-norm ReLU
layers, float32. Compilation happens before timing; every repetition runs each contender once in a freshly
shuffled order (headwise.bench.measure.time_interleaved), and medians are reported. --out appends.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from headwise.bench.measure import machine, time_interleaved
from headwise.nn.config import TransformerConfig
from headwise.nn.models import LanguageModel

B, N, D, H, LAYERS, D_FF, VOCAB = 8, 256, 256, 8, 4, 1024, 2000
DROPOUT = 0.1  # the default of --dropout


class TorchDecoderOnly(nn.Module):
    """Token + learned position embeddings, torch's encoder layers under a causal mask, a linear head."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, D)
        self.positions = nn.Embedding(N, D)
        layer = nn.TransformerEncoderLayer(D, H, D_FF, dropout, batch_first=True)
        self.layers = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.head = nn.Linear(D, VOCAB)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(N), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) + self.positions.weight[: ids.shape[1]]  # (B, N, D)
        return self.head(self.layers(x, mask=self.causal, is_causal=True))  # (B, N, V)


def headwise_model(dropout: float) -> nn.Module:
    config = TransformerConfig(
        vocab_size=VOCAB,
        d_model=D,
        num_heads=H,
        d_ff=D_FF,
        num_decoder_layers=LAYERS,
        dropout=dropout,
        positions="learned",
        max_positions=N,
    )
    model = LanguageModel(config)
    return _Logits(model)


class _Logits(nn.Module):
    """LanguageModel's logits alone, as the torch model returns them."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids).logits  # (B, N, V)


def training_step(model: nn.Module, compiled: bool):
    """-> step(): one forward, loss, backward and AdamW update of `model` (compiled or eager)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if compiled else model
    ids = torch.randint(VOCAB, (B, N))  # (B, N)

    def step() -> None:
        logits = forward(ids[:, :-1])  # (B, N - 1, V)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed repetitions (each runs every contender)")
    parser.add_argument("--dropout", type=float, default=DROPOUT, help="on every dropout of both models")
    parser.add_argument("--out", type=Path, default=None, help="also write a Markdown table here")
    args = parser.parse_args()
    torch.manual_seed(0)
    contenders = {
        "headwise LanguageModel, compiled": training_step(headwise_model(args.dropout), compiled=True),
        "headwise LanguageModel, eager": training_step(headwise_model(args.dropout), compiled=False),
        "torch.nn decoder, compiled": training_step(TorchDecoderOnly(args.dropout), compiled=True),
        "torch.nn decoder, eager": training_step(TorchDecoderOnly(args.dropout), compiled=False),
    }
    compile_s = {}
    for name, step in contenders.items():
        begin = time.perf_counter()
        step()  # compiles (the compiled ones) and warms up
        step()
        compile_s[name] = time.perf_counter() - begin
    times = time_interleaved(contenders, budget_s=math.inf, min_reps=args.steps, max_reps=args.steps)
    median_ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    base = median_ms["headwise LanguageModel, compiled"]
    where = machine()
    lines = [
        f"Training step, B={B} N={N - 1} D={D} H={H} layers={LAYERS} d_ff={D_FF} V={VOCAB} "
        f"dropout={args.dropout}, "
        f"float32; CPU kind {where['cpu_kind']} ({where['cpu']}, {where['threads']} threads, "
        f"load {where['load_average']}), torch {where['torch']}; median of {args.steps} interleaved steps.",
        "",
        "| contender | median ms / step | × headwise compiled | first two steps (s, incl. compile) |",
        "|---|---:|---:|---:|",
    ]
    for name, ms in median_ms.items():
        lines.append(f"| {name} | {ms:.1f} | {ms / base:.2f} | {compile_s[name]:.1f} |")
    table = "\n".join(lines)
    print(table)
    print(json.dumps({"machine": where, "median_ms": median_ms}, indent=1))
    if args.out is not None:
        command = f"`.venv/bin/python benchmarks/compile.py --steps {args.steps} --dropout {args.dropout}`"
        previous = args.out.read_text() if args.out.exists() else "# torch.compile: a training step\n"
        args.out.write_text(f"{previous}\n{command}\n\n{table}\n")


if __name__ == "__main__":
    main()
