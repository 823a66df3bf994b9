"""Argument checks of the model's public functions: a ValueError naming the
argument."""

import math


def positive(name, value):
    """``value`` as a float if it is a finite number > 0."""
    try:
        ok = math.isfinite(value) and value > 0
    except (TypeError, OverflowError):   # not a number; an int > 1e308
        ok = False
    if not ok or isinstance(value, bool):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def non_negative(name, value):
    """``value`` as a float if it is a finite number >= 0."""
    try:
        ok = math.isfinite(value) and value >= 0
    except (TypeError, OverflowError):   # not a number; an int > 1e308
        ok = False
    if not ok or isinstance(value, bool):
        raise ValueError(f"{name} must be a finite number >= 0, "
                         f"got {value!r}")
    return float(value)
