"""Callbacks without state of their own, run as one Lightning callback.

Lightning calls each of its hooks on every callback, six of them on every training step, each
call through a profiler context: about 10 microseconds per callback and hook on a 2-core AMD
EPYC (Zen 5), most of the framework's time per step with a small network.
:class:`CallbackGroup` is one callback that calls, for each hook, only those of its callbacks
that implement it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint, EarlyStopping, ProgressBar

# Every hook a callback may implement (Lightning calls them by name).
HOOKS = tuple(
    name
    for name in dir(pl.Callback)
    if (name.startswith("on_") or name in ("setup", "teardown"))
    and callable(getattr(pl.Callback, name))
)


def groupable(callback: pl.Callback) -> bool:
    """Whether ``callback`` can run inside a group: it keeps no state in checkpoints (its
    ``state_dict`` is Lightning's empty one) and Lightning does not look for it by type
    (checkpoints, early stopping, the progress bar)."""
    stateless = (type(callback).state_dict is pl.Callback.state_dict
                 and type(callback).load_state_dict is pl.Callback.load_state_dict)  # fmt: skip
    return stateless and not isinstance(callback, Checkpoint | EarlyStopping | ProgressBar)


class CallbackGroup(pl.Callback):
    """Runs ``callbacks`` (each :func:`groupable`) as one callback: each hook calls, in order,
    those of them that implement it.

    Args:
        callbacks: the callbacks, in the order their hooks run.
    """

    def __init__(self, callbacks: Sequence[pl.Callback]) -> None:
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            if not groupable(callback):
                raise ValueError(f"{type(callback).__name__} cannot run in a callback group")
        for hook in HOOKS:
            implemented = [
                getattr(c, hook)
                for c in self.callbacks
                if getattr(type(c), hook) is not getattr(pl.Callback, hook)
            ]
            if implemented:
                setattr(self, hook, _calling(implemented))
        # Lightning reads it at every hook call (to name the profiler's record): made once.
        self._state_key = "CallbackGroup[" + ",".join(c.state_key for c in self.callbacks) + "]"

    @property
    def state_key(self) -> str:
        return self._state_key

    def __repr__(self) -> str:
        return f"CallbackGroup({', '.join(type(c).__name__ for c in self.callbacks)})"


def _calling(hooks: list[Callable[..., Any]]) -> Callable[..., None]:
    if len(hooks) == 1:
        return hooks[0]

    def call(*args: Any, **kwargs: Any) -> None:
        for hook in hooks:
            hook(*args, **kwargs)

    return call


def grouped(callbacks: Sequence[pl.Callback]) -> list[pl.Callback]:
    """``callbacks`` with the :func:`groupable` ones run as one :class:`CallbackGroup`, placed
    where the first of them was; the others keep their order around it."""
    members = [c for c in callbacks if groupable(c)]
    if len(members) < 2:
        return list(callbacks)
    out: list[pl.Callback] = []
    for callback in callbacks:
        if callback is members[0]:
            out.append(CallbackGroup(members))
        elif callback not in members:
            out.append(callback)
    return out
