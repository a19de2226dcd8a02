"""The documented import path of the positions; the code lives in headwise.nn.positions."""

from .nn.positions import (
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
