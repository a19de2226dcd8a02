"""Record every step of the attention computation, with its tensor, formula and a plain sentence.

    with headwise.trace() as t:
        y, _ = mha(x)
    t["weights"].tensor        # (B, Hq, Nq, Nk)

While a trace is active, attention runs on the reference backend (the only one that shows its steps).
With no trace active, `record` is one context-variable lookup and nothing is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

# name -> (formula, sentence), in the order of the computation.
STEP_TEXT: dict[str, tuple[str, str]] = {
    "inputs": (
        "x",
        "The input: one embedding vector per token (token embedding + position embedding in a first layer).",
    ),
    "kv_inputs": (
        "m",
        "Cross-attention: a second sequence (say, the encoder's output) supplies the keys and values.",
    ),
    "queries": (
        "queries = x · W_qᵀ + b_q",
        "Each token's query: what this position is looking for in the others.",
    ),
    "keys": (
        "keys = x · W_kᵀ + b_k   (m for x in cross-attention)",
        "Each token's key: what this position offers to be matched against.",
    ),
    "values": (
        "values = x · W_vᵀ + b_v   (m for x in cross-attention)",
        "Each token's value: the content it hands on when it is attended to.",
    ),
    "queries_by_head": (
        "queries.view(B, N, H, Dh).transpose(1, 2)",
        "One projection made every head's queries; unroll the last axis into heads and group by head.",
    ),
    "keys_by_head": (
        "keys.view(B, N, Hkv, Dh).transpose(1, 2)",
        "The keys, split into heads the same way (Hkv key heads; each serves Hq/Hkv query heads).",
    ),
    "values_by_head": (
        "values.view(B, N, Hkv, Dh).transpose(1, 2)",
        "The values, split into heads the same way.",
    ),
    "scores": (
        "scores = queries · keysᵀ",
        "The dot product of every query with every key: a large score means a good match.",
    ),
    "scaled_scores": (
        "scaled_scores = scores · scale   (scale = 1/√Dh unless given)",
        "Divide by √Dh so that the scores do not grow with the head width and the softmax stays soft.",
    ),
    "modified_scores": (
        "scores = score_mod(scaled_scores)",
        "A score modifier changes the scores before masking: ALiBi subtracts a penalty growing with "
        "distance, a softcap squashes them into (-cap, cap).",
    ),
    "masked_scores": (
        "masked_scores = scaled_scores + mask   (-inf where not allowed)",
        "Positions a query may not see (the future, padding) get -inf, so they receive zero weight.",
    ),
    "weights": (
        "weights = softmax(masked_scores) over the keys",
        "Each row becomes a probability distribution: how much each query attends to each key.",
    ),
    "dropout": (
        "weights = dropout(weights, p)   (kept weights × 1/(1 - p))",
        "Training only: some weights are zeroed at random and the rest scaled up to keep the expectation.",
    ),
    "context_by_head": (
        "context = weights · values",
        "Each query's new vector: the values averaged with its attention weights, per head.",
    ),
    "context": (
        "context.transpose(1, 2).reshape(B, N, H · Dh)",
        "The heads' context vectors concatenated side by side, one row per token.",
    ),
    "output": (
        "output = context · W_oᵀ + b_o",
        "The output projection mixes the heads' results back into the model width.",
    ),
}


@dataclass(frozen=True)
class Step:
    """One recorded step: its name, a detached copy of its tensor, the formula and a sentence."""

    name: str
    tensor: torch.Tensor
    formula: str
    sentence: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)


class Trace:
    """The steps recorded inside one `with headwise.trace()` block, in order."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def __getitem__(self, key: str | int) -> Step:
        """`t["weights"]`: the first step of that name; `t[3]`: the fourth step."""
        if isinstance(key, int):
            return self.steps[key]
        for step in self.steps:
            if step.name == key:
                return step
        raise KeyError(f"no step named {key!r} in this trace; recorded steps: {self.names()}")

    def all(self, name: str) -> list[Step]:
        """Every step of that name (one per attention call: layers, repeated calls)."""
        return [step for step in self.steps if step.name == name]

    def names(self) -> list[str]:
        return [step.name for step in self.steps]

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return f"Trace({', '.join(f'{s.name}{list(s.shape)}' for s in self.steps)})"


_active: ContextVar[Trace | None] = ContextVar("headwise_trace", default=None)


@contextmanager
def trace() -> Iterator[Trace]:
    """Record the steps of every attention computed inside the block (on the reference backend)."""
    recorder = Trace()
    token = _active.set(recorder)
    try:
        yield recorder
    finally:
        _active.reset(token)


@contextmanager
def untraced() -> Iterator[None]:
    """Record nothing inside, even within a `trace()` block: headwise's custom op runs this way, so that
    a compiled graph records nothing whether its op runs while a trace is active or not."""
    token = _active.set(None)
    try:
        yield
    finally:
        _active.reset(token)


def tracing() -> bool:
    """True inside a `trace()` block, outside code that torch.compile traces (a compiled graph records
    nothing: run the model eagerly to trace it; Dynamo cannot read a ContextVar without a graph break)."""
    return not torch.compiler.is_compiling() and _active.get() is not None


def record(name: str, tensor: torch.Tensor) -> None:
    """Keep a copy of `tensor` as step `name` if a trace is active; otherwise do nothing."""
    if torch.compiler.is_compiling():
        return
    recorder = _active.get()
    if recorder is None:
        return
    formula, sentence = STEP_TEXT[name]
    recorder.steps.append(Step(name, tensor.detach().clone(), formula, sentence))
