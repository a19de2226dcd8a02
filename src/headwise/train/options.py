"""How to train: TrainOptions, the training options saved in every checkpoint; from_dict rejects unknown
keys, and every field is checked."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..checks import (
    fraction,
    non_negative_int,
    non_negative_number,
    positive_int,
    positive_number,
    strict_from_dict,
)

MAX_LEARNING_RATE = 1.0  # AdamW moves each weight by about the learning rate a step: more is never useful


@dataclass(frozen=True)
class TrainOptions:
    """How to train; from_dict rejects unknown keys.

    steps: optimizer steps in all. batch_size: examples per step.
    learning_rate: the peak learning rate (at most MAX_LEARNING_RATE), reached after warmup_steps (linear
        from learning_rate / warmup_steps), then decayed along a cosine to final_lr_fraction · learning_rate
        at the last step.
    weight_decay: AdamW's, on the matrices only (not on biases and norms). beta2: AdamW's second beta.
    grad_clip: the largest gradient norm (larger ones are scaled down).
    eval_every, checkpoint_every: evaluate / save every that many steps (and after the last step).
    """

    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_every: int = 250
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every"):
            positive_int(getattr(self, name), name)
        non_negative_int(self.warmup_steps, "warmup_steps")
        if positive_number(self.learning_rate, "learning_rate") > MAX_LEARNING_RATE:
            raise ValueError(
                f"learning_rate must be a number in (0, {MAX_LEARNING_RATE:g}], got {self.learning_rate!r}"
            )
        positive_number(self.grad_clip, "grad_clip")
        fraction(self.final_lr_fraction, "final_lr_fraction")
        non_negative_number(self.weight_decay, "weight_decay")
        fraction(self.beta2, "beta2", below_one=True)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TrainOptions:
        """The options with these fields; an unknown key is an error that lists the known ones."""
        return strict_from_dict(cls, data, "training option")
