"""Argument checks shared by the public constructors.

Constructors raise :class:`InvalidArgumentError`, which names the argument; the command line adds
the config group in front of it (``model.depth``) so users see the exact key to fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class InvalidArgumentError(ValueError):
    """A constructor argument has a value outside what it accepts."""

    def __init__(self, name: str, value: Any, expected: str) -> None:
        self.name = name
        self.value = value
        self.expected = expected
        super().__init__(f"{name}={value!r} is not valid: expected {expected}")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else :class:`InvalidArgumentError` naming ``name``."""
    choices = tuple(choices)
    if value not in choices:
        raise InvalidArgumentError(name, value, "one of " + ", ".join(choices))
    return value


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` if it is an integer (not a bool) in ``low..high`` (bounds included, None: open)."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not is_int or (low is not None and value < low) or (high is not None and value > high):
        raise InvalidArgumentError(name, value, _range_text("an integer", low, high))
    return value


def check_float(
    name: str, value: Any, low: float | None = None, high: float | None = None
) -> float:
    """``value`` as a float if it is a number (not a bool) in ``low..high`` (bounds included)."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or (low is not None and value < low) or (high is not None and value > high):
        raise InvalidArgumentError(name, value, _range_text("a number", low, high))
    return float(value)


def per_axis(value: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """One size per spatial axis from one for all axes (an int) or one per axis (a sequence,
    e.g. a network's per-axis pooling grid ``size_multiple``)."""
    if isinstance(value, int):
        return (value,) * spatial_dims
    return tuple(int(v) for v in value)


def _range_text(kind: str, low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{kind} in {low}..{high}"
    if low is not None:
        return f"{kind} >= {low}"
    if high is not None:
        return f"{kind} <= {high}"
    return kind
