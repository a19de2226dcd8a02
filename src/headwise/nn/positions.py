"""The documented import path headwise.nn.positions (a re-export): the positions live in headwise.positions,
in the core, since MultiHeadAttention applies rotary positions itself and the core imports nothing from nn."""

from ..positions import (
    LearnedPositions,
    Rotary,
    SinusoidalPositions,
    alibi_positions,
    check_length,
    sinusoidal,
)

__all__ = [
    "LearnedPositions",
    "Rotary",
    "SinusoidalPositions",
    "alibi_positions",
    "check_length",
    "sinusoidal",
]
