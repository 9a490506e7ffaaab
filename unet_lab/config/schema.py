"""Checks of the composed training config, before anything is built or trained.

The schema of a config node with a ``_target_`` is the signature of what it builds: its argument
names (an unknown key is an error) and their type hints (``depth: int``, ``up_mode: str``,
Lightning's ``precision: Literal[...]``). The constructors stay the one place that says what an
argument is, so there is no second copy to keep in step. On top of that:

- the top-level keys of ``conf/train.yaml`` have a typed schema of their own
  (:class:`RunSettings`);
- third-party arguments that would only fail once training started, or never, have ranges
  (:data:`RANGES`): a negative learning rate, ``trainer.max_epochs=-5``;
- our own constructors check the ranges of their arguments (``unet_lab.arguments``);
- choices that are each valid but do not fit together (a network too deep for the patch size,
  a monitored score nobody logs) are checked once data and network exist (:func:`check_fit`).

Every failure is a :class:`ConfigError` whose one-line message names the key.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import sys
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from unet_lab.arguments import InvalidArgumentError, per_axis
from unet_lab.errors import ConfigError, InputError, config_error, first_line

# Keys whose value our own code resolves before the target sees it (value: what it accepts).
OWN_VALUES: dict[str, tuple[Any, ...]] = {
    "trainer.precision": ("auto",),
    "model.spacing": ("auto",),
}

# Ranges (low, high; None: open) of arguments that their third-party class only checks late or
# never. Keys are config paths; a preset that drops a key drops its check.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "seed": (0, 2**32 - 1),
    "trainer.max_epochs": (-1, None),
    "trainer.min_epochs": (0, None),
    "trainer.max_steps": (-1, None),
    "trainer.num_nodes": (1, None),
    "trainer.accumulate_grad_batches": (1, None),
    "trainer.check_val_every_n_epoch": (1, None),
    "trainer.log_every_n_steps": (1, None),
    "trainer.num_sanity_val_steps": (-1, None),
    "trainer.gradient_clip_val": (0, None),
    "optimizer.lr": (0, None),
    "optimizer.weight_decay": (0, None),
    "optimizer.momentum": (0, None),
    "optimizer.eps": (0, None),
    "optimizer.alpha": (0, None),
    "callbacks.model_checkpoint.save_top_k": (-1, None),
}


@dataclass(frozen=True)
class RunSettings:
    """The top-level keys of ``conf/train.yaml`` (documented there)."""

    seed: int | None
    ckpt_path: str | None
    resume: bool | Literal["auto"]
    test: bool
    optimized_metric: str
    optimized_mode: Literal["max", "min"]


def check_config(cfg: DictConfig) -> None:
    """Raises a :class:`ConfigError` naming the first key whose name, type or range is wrong."""
    hints = typing.get_type_hints(RunSettings)
    for field in dataclasses.fields(RunSettings):
        if field.name in cfg:
            check_value(cfg[field.name], hints[field.name], field.name)
    for key, node in _target_nodes(cfg, ""):
        _check_node(node, key)
    for key, (low, high) in RANGES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if _is_number(value) and not _within(value, low, high):
            raise ConfigError(f"{key}={value!r} is not valid: expected {_range(low, high)}")


def _target_nodes(node: Any, key: str) -> Iterator[tuple[str, DictConfig]]:
    """Every node with a ``_target_`` under ``node`` (Hydra's own config left out)."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield key, node
        for name in node:
            if not (key == "" and name == "hydra"):
                yield from _target_nodes(node._get_node(name), _join(key, str(name)))
    elif isinstance(node, ListConfig):
        for index in range(len(node)):
            yield from _target_nodes(node._get_node(index), _join(key, str(index)))


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Within the block, ``logger`` logs nothing (our one-line error says it)."""
    named = logging.getLogger(logger)
    disabled = named.disabled
    named.disabled = True
    try:
        yield
    finally:
        named.disabled = disabled


def _check_node(node: DictConfig, key: str) -> None:
    target = node._target_
    try:
        with _quiet("hydra.utils"):  # it logs the failure too, in three lines
            built = get_object(target)
    except Exception as exc:
        cause = exc.__cause__ or exc.__context__ or exc  # Hydra wraps the ImportError
        moved = (
            " (0.2 moved unet-lab's modules: docs/changes.md)"
            if target.startswith("unet_lab.")
            else ""
        )
        raise ConfigError(
            f"{key}._target_={target!r} cannot be imported: {first_line(cause)}{moved}"
        ) from exc
    parameters = _parameters(built)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    for name in node:
        name = str(name)
        if name.startswith("_"):
            continue
        if name not in parameters:
            if takes_any:
                continue
            known = ", ".join(n for n in parameters if n not in ("self", "args", "kwargs"))
            raise ConfigError(f"{key}.{name} is not an argument of {key} ({target}: {known})")
        full_key = f"{key}.{name}"
        value = node[name]
        own_values = OWN_VALUES.get(full_key, ())
        if value in own_values:
            continue
        raw = node._get_node(name)
        if raw is not None and raw._is_interpolation():  # name the key the value comes from
            full_key = f"{full_key} (set by {raw._value()})"
        hint = parameters[name].annotation
        check_value(value, Literal[own_values] | hint if own_values else hint, full_key)


def _parameters(built: Any) -> dict[str, inspect.Parameter]:
    """The arguments of a class or function, with type hints evaluated where they can be (a
    hint that cannot be evaluated is not checked)."""
    try:
        signature = inspect.signature(built, eval_str=True)
    except Exception:  # one hint names something its module does not import at run time
        signature = inspect.signature(built)
        module = sys.modules.get(getattr(built, "__module__", ""), None)
        namespace = vars(module) if module else {}
        parameters = []
        for parameter in signature.parameters.values():
            annotation = parameter.annotation
            if isinstance(annotation, str):
                try:
                    annotation = eval(annotation, namespace)
                except Exception:
                    annotation = inspect.Parameter.empty
            parameters.append(parameter.replace(annotation=annotation))
        signature = signature.replace(parameters=parameters)
    return dict(signature.parameters)


def check_value(value: Any, hint: Any, key: str) -> None:
    """Raises a :class:`ConfigError` when ``value`` does not fit the type hint ``hint``."""
    if not _fits(value, hint):
        is_node = isinstance(value, DictConfig | ListConfig)
        shown = OmegaConf.to_container(value) if is_node else value
        raise ConfigError(f"{key}={shown!r} is not valid: expected {_describe(hint)}")


def _fits(value: Any, hint: Any) -> bool:
    if hint in (Any, inspect.Parameter.empty, object) or isinstance(hint, typing.TypeVar):
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _fits(value, args[0])
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if hint is None or hint is type(None):
        return value is None
    if isinstance(value, DictConfig) and "_target_" in value:
        return True  # built by Hydra; its own node is checked on its own
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return _is_number(value)
    if hint is str:
        return isinstance(value, str)
    if hint is Path:
        return isinstance(value, str | Path)
    container = origin or hint
    if not isinstance(container, type):
        return True  # Callable[...], protocols, generics we do not model
    if issubclass(container, Mapping):
        if not isinstance(value, DictConfig | Mapping):
            return False
        return len(args) != 2 or all(_fits(item, args[1]) for item in value.values())
    if issubclass(container, tuple) and args and args[-1] is not Ellipsis:
        if not isinstance(value, ListConfig | list | tuple) or len(value) != len(args):
            return False
        return all(_fits(item, arg) for item, arg in zip(value, args, strict=True))
    if issubclass(container, Sequence) and not issubclass(container, str):
        if not isinstance(value, ListConfig | list | tuple):
            return False
        return not args or all(_fits(item, args[0]) for item in value)
    return isinstance(value, container)  # an object type (a tensor, a transform): no YAML value


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _describe(args[0])
    if origin in (typing.Union, types.UnionType, Literal):
        choices = list(dict.fromkeys(str(choice) for choice in _literals(hint)))
        others = [_describe(arg) for arg in args if typing.get_origin(arg) is not Literal]
        if origin is not Literal and choices:
            others = [o for o in others if not o.startswith("one of")]
        parts = ["one of " + ", ".join(choices)] if choices else []
        values = [o for o in others if not o.endswith(_OBJECT)]  # what YAML can hold
        return " or ".join(dict.fromkeys([*parts, *(values or others)]))
    if hint is None or hint is type(None):
        return "null"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    container = origin or hint
    if not isinstance(container, type):
        return str(hint)
    if issubclass(container, Mapping):
        return "a mapping"
    if issubclass(container, tuple) and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    if issubclass(container, Sequence):
        return f"a list of {_describe(args[0])}" if args else "a list"
    return f"a {getattr(container, '__name__', container)}{_OBJECT}"


_OBJECT = " config (with _target_)"


def _literals(hint: Any) -> list[Any]:
    """The values of the ``Literal`` types in ``hint`` (a Literal or a Union of them)."""
    if typing.get_origin(hint) is Literal:
        return list(typing.get_args(hint))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [value for arg in typing.get_args(hint) for value in _literals(arg)]
    return []


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _within(value: float, low: float | None, high: float | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"a number in {low}..{high}"
    return f"a number >= {low}" if low is not None else f"a number <= {high}"


def check_fit(
    cfg: DictConfig,
    train_side: int | Sequence[int] | None,
    side_key: str,
    net: Any,
    metric_names: Sequence[str],
    data_dims: int,
) -> None:
    """Checks what needs the data and the network: the network is as many-dimensional as the
    data (a 3D network on 2D images would only fail in its first forward pass), the training
    inputs are large enough for the network's depth (and of a valid size for an unpadded one),
    and the optimized metric is one that training logs.

    Args:
        train_side: side of the square training inputs, or one side per axis (volume
            patches); None: varies, not checked.
        side_key: the config key that sets it (``data.patch_size``), for the message.
        net: the network; ``size_multiple`` (the pooling grid) and ``check_size`` (valid-size
            networks) are used when it has them.
        metric_names: the per-epoch scores training logs (``val/dice``, ...).
        data_dims: the data's spatial dimensions (2: images H x W).
    """
    if cfg.optimized_metric not in metric_names:
        shown = ", ".join(n for n in metric_names if "_" not in n.split("/", 1)[1])
        raise ConfigError(
            f"optimized_metric={cfg.optimized_metric!r} is not logged by training: expected "
            f"one of {shown} (or a per-class score such as val/dice_<class>)"
        )
    net_dims = getattr(net, "spatial_dims", data_dims)
    if net_dims != data_dims:
        raise ConfigError(
            f"model.spatial_dims={net_dims} builds a {net_dims}D network, but the data holds "
            f"{data_dims}D images: use model.spatial_dims={data_dims}"
        )
    multiple = getattr(net, "size_multiple", None)
    if train_side is None or multiple is None:
        return
    sides = [train_side] if isinstance(train_side, int) else [int(s) for s in train_side]
    given = train_side if isinstance(train_side, int) else list(sides)
    grid = per_axis(multiple, data_dims)
    short = [
        (side, need)
        for side, need in zip(per_axis(train_side, data_dims), grid, strict=True)
        if side < need
    ]
    if short:
        depth = getattr(net, "depth", max(grid).bit_length() - 1)
        side, need = min(short)
        unit = "px" if data_dims == 2 else "voxels"
        # Pooled along every axis at every level, the depth that fits follows from the side.
        fits = f"<={min(sides).bit_length() - 1}" if len(set(grid)) == 1 else " smaller"
        raise ConfigError(
            f"model.depth={depth} is too deep for {side} {unit} training inputs "
            f"({side_key}={given}): its deepest level needs at least {need} {unit} along that "
            f"axis; use model.depth{fits} or larger inputs"
        )
    check_size = getattr(net, "check_size", None)
    if check_size is not None and int(getattr(net, "output_margin", 0)) > 0:
        try:
            for side in sides:
                check_size(side)
        except InputError as exc:
            raise ConfigError(f"{side_key}={given} does not fit the model: {exc}") from exc


def check_optimizer(cfg: DictConfig, optimizer: Any, scheduler: Any | None) -> None:
    """Builds the optimizer and scheduler (``_partial_`` factories, completed only when training
    starts) once on a stand-in parameter, so that what they reject (an optimizer's ``betas``
    outside [0, 1), a scheduler's warm-up fraction above 1) fails now."""
    for key, build in (("optimizer", optimizer), ("scheduler", scheduler)):
        if build is None:
            continue
        try:
            if key == "optimizer":
                built = build([torch.zeros(1, requires_grad=True)])
            elif "total_steps" in inspect.signature(build).parameters:
                build(built, total_steps=100)
            else:
                build(built)
        except (ValueError, TypeError) as exc:
            if isinstance(exc, InvalidArgumentError):
                raise config_error(exc, key) or exc from exc
            raise ConfigError(f"{_key_named_in(cfg[key], key, str(exc))}: {exc}") from exc


def _key_named_in(node: DictConfig, key: str, message: str) -> str:
    """``key.<argument>`` for the argument a library's message speaks of ("Invalid beta
    parameter" -> ``optimizer.betas``), else ``key``."""
    words = message.lower().replace("_", " ")
    for name in map(str, node):
        stem = name.rstrip("s").replace("_", " ")
        if not name.startswith("_") and len(stem) >= 3 and stem in words:
            return f"{key}.{name}"
    return key
