"""Argument checks shared by the modules: each raises an error that names the argument and what it got."""

from __future__ import annotations

import math
import numbers


def positive_int(value: object, name: str) -> int:
    """`value` as an int (numpy's integers included, as torch accepts them), or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def probability(value: object, name: str) -> float:
    """`value` as a float in [0, 1) (a dropout probability), or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def positive_number(value: object, name: str) -> float:
    """`value` as a finite float > 0, or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def non_negative_int(value: object, name: str) -> int:
    """`value` as an int >= 0, or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)
