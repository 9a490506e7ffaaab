"""One-line messages for configuration mistakes, raised before any training starts."""

from __future__ import annotations

import difflib
import errno
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    InstantiationException,
    OverrideParseException,
)
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from unet_lab.arguments import InvalidArgumentError


class InputError(ValueError):
    """Bad input found before training: the one-line message names the key or the file."""


class ConfigError(InputError):
    """A config key has a wrong name or value; the message names the key."""


class RunFault(Exception):
    """The machine stopped a run (a full disk, a read-only folder): the one-line message names
    the file, and says what was kept and how to continue."""


# Where the user's HYDRA_FULL_ERROR choice is kept (see full_traceback_asked).
FULL_ERROR_ENV = "UNET_LAB_FULL_ERROR"
# OSError numbers of storage faults: no space, quota exceeded, read-only file system.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def storage_fault(exc: BaseException) -> OSError | None:
    """The storage fault (``STORAGE_ERRNOS``) behind ``exc``, following its causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in STORAGE_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None


def config_error(exc: BaseException, key: str) -> InputError | None:
    """The :class:`InputError` behind a failed instantiation of config node ``key``: a bad
    argument (out of range, unknown) becomes a ConfigError naming the key, a data problem is
    passed on; None for other causes."""
    cause = exc.__cause__ if isinstance(exc, InstantiationException) else exc
    if isinstance(cause, InputError):  # a data problem found while building: already named
        return cause
    nested = re.search(r"\nfull_key: ([\w.]+)\s*$", str(exc))
    if nested:  # Hydra names the nested node that failed (a transform inside a pipeline)
        key = nested.group(1)
    if isinstance(cause, InvalidArgumentError):
        return ConfigError(
            f"{key}.{cause.name}={cause.value!r} is not valid: expected {cause.expected}"
        )
    if isinstance(cause, TypeError):
        match = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
        if match:
            return ConfigError(f"{key}.{match.group(1)} is not an argument of {key}")
    if isinstance(cause, ValueError | MisconfigurationException):  # a library's own check
        lines = str(cause).splitlines()
        if len(lines) >= 3 and "validation error" in lines[0]:  # pydantic (albumentations)
            reason = lines[2].split(" [type=")[0].strip()
            return ConfigError(f"{key}.{lines[1].strip()} is not valid: {reason.lower()}")
        return ConfigError(f"{key}: {lines[0] if lines else type(cause).__name__}")
    return None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unreadable_override(override: str, exc: BaseException) -> ConfigError:
    """The error for a command-line override that Hydra's grammar cannot read."""
    return ConfigError(
        f"cannot read the override {override!r}: {first_line(exc)} (quote a value with braces "
        "or other special characters for Hydra: \"key='value'\")"
    )


def one_line(exc: BaseException) -> str | None:
    """A one-line description of a configuration error, or None for other exceptions."""
    if isinstance(exc, InputError | RunFault):
        return str(exc)
    if isinstance(exc, OverrideParseException):
        return str(unreadable_override(exc.override, exc))
    wrapped = _wrapped_input_error(exc)
    if wrapped is not None:
        return str(wrapped)
    cause = exc.__cause__ if isinstance(exc, ConfigCompositionException) else exc
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        return _omegaconf_message(cause)
    if isinstance(exc, ConfigCompositionException):
        text = " ".join(str(exc).split())
        return text.split(" Config search path:")[0]  # the search path: not the user's mistake
    return None


def _wrapped_input_error(exc: BaseException) -> InputError | None:
    """The :class:`InputError` inside OmegaConf's or Hydra's exceptions: one raised by our
    resolvers (``hydra/launcher=slurm_ddp``'s checks) is the context of OmegaConf's
    ``InterpolationResolutionError``."""
    current: BaseException | None = exc
    seen: set[int] = set()
    while isinstance(current, OmegaConfBaseException | HydraException) and id(current) not in seen:
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return current if isinstance(current, InputError) else None


def _omegaconf_message(exc: OmegaConfBaseException) -> str:
    key = str(exc.full_key)
    message = str(getattr(exc, "msg", "") or exc).splitlines()[0]
    parent = getattr(exc, "parent_node", None)
    if "not in struct" in message or "Missing key" in message:
        name = key.rsplit(".", 1)[-1]
        known = list(parent.keys()) if isinstance(parent, DictConfig) else []
        hint = difflib.get_close_matches(name, [str(k) for k in known], n=1)
        group = key.rsplit(".", 1)[0] if "." in key else "the config"
        text = f"unknown config key '{key}'"
        if hint:
            text += f" (did you mean '{key.rsplit('.', 1)[0]}.{hint[0]}'?)"
        if known:
            text += f"; {group} has: " + ", ".join(str(k) for k in known if k != "_target_")
        return text
    return f"{key}: {message}"


def exit_with(message: str) -> NoReturn:
    """Prints the one-line error, and how to see the traceback, then exits with code 2."""
    print(f"error: {message}", file=sys.stderr)
    print("(set HYDRA_FULL_ERROR=1 for the full traceback)", file=sys.stderr)
    raise SystemExit(2)


def full_traceback_asked() -> bool:
    """Whether the user asked for full tracebacks (``HYDRA_FULL_ERROR=1``). While the train
    command runs, it sets ``HYDRA_FULL_ERROR=1`` for Hydra itself (so that exceptions reach our
    one-line messages instead of Hydra's printer) and keeps the user's choice in
    ``UNET_LAB_FULL_ERROR``, which its DDP rank processes inherit."""
    recorded = os.environ.get(FULL_ERROR_ENV)
    if recorded is not None:
        return recorded == "1"
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


@contextmanager
def input_errors_exit(full_traceback: bool | None = None) -> Iterator[None]:
    """Turns configuration and data mistakes raised inside into :func:`exit_with`; other
    exceptions pass unchanged, and so does everything when ``full_traceback`` is asked for
    (default: :func:`full_traceback_asked`)."""
    if full_traceback is None:
        full_traceback = full_traceback_asked()
    try:
        yield
    except Exception as exc:
        message = None if full_traceback else one_line(exc)
        if message is None:
            raise
        exit_with(message)
