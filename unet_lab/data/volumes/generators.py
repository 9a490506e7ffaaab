"""numpy random generators as plain values (a name, lists of 32-bit words, ints) that
checkpoints keep and ``torch.load(weights_only=True)`` reads back, so a resumed run draws the
patches and augmentations that the uninterrupted run would have drawn."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_WORD = 2**32
_WORDS = 4  # PCG64's state and increment are 128-bit integers


def _to_words(value: int) -> list[int]:
    return [(value >> (32 * i)) % _WORD for i in range(_WORDS)]


def _from_words(words: Sequence[int]) -> int:
    return sum(int(w) << (32 * i) for i, w in enumerate(words))


def generator_state(rng: np.random.Generator) -> dict[str, Any]:
    """The state of a PCG64 generator (numpy's default) as plain values."""
    state = rng.bit_generator.state
    return {
        "bit_generator": state["bit_generator"],
        "state": _to_words(state["state"]["state"]),
        "inc": _to_words(state["state"]["inc"]),
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


def generator_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    """A generator whose next draws are those that followed :func:`generator_state`."""
    if state.get("bit_generator") != "PCG64":
        raise ValueError(f"not a PCG64 generator state: {state.get('bit_generator')!r}")
    generator = np.random.PCG64()
    generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": _from_words(state["state"]), "inc": _from_words(state["inc"])},
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }
    return np.random.Generator(generator)
