"""Argument checks shared by the modules: each raises an error that names the argument and what it got."""

from __future__ import annotations

import numbers


def positive_int(value: object, name: str) -> int:
    """`value` as an int (numpy's integers included, as torch accepts them), or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
