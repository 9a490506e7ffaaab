"""The package's shape: imports run one way (no cycle, no leaf importing upward, no command
importing another), modules stay small, the top level stays a short list, and every
``_target_`` in ``conf/`` names something that exists."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import yaml

PACKAGE = Path(__file__).resolve().parents[1] / "unet_lab"
CONF = PACKAGE.parent / "conf"
MAX_LINES = 400
MAX_TOP_LEVEL_MODULES = 8
# Each folder (or top-level module) and the layers it may import from; a layer imports only
# layers below it (commands -> training/inference -> runs/config/data/models/metrics -> leaves).
LEAVES = {"arguments", "errors"}
ALLOWED = {
    "arguments": set(),
    "errors": {"arguments"},
    "losses": LEAVES | {"models"},
    "metrics": set(LEAVES),
    "models": set(LEAVES),
    "data": set(LEAVES),
    "config": set(LEAVES),
    "runs": set(LEAVES),
    "pictures": LEAVES | {"data"},
    "inference": LEAVES | {"config", "data", "models", "runs", "metrics"},
    "training": LEAVES
    | {"config", "data", "models", "runs", "metrics", "losses", "inference", "pictures"},
    "autoplan": LEAVES
    | {"config", "data", "models", "runs", "metrics", "losses", "inference", "pictures"}
    | {"training"},
    "crossval": LEAVES | {"config", "data", "models", "runs", "metrics", "inference", "training"},
    "commands": LEAVES
    | {"config", "data", "models", "runs", "metrics", "losses", "inference", "pictures"}
    | {"training", "autoplan", "crossval"},
    "cli": set(),  # imports its commands by name, when one runs
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    _module_name(path): path
    for path in sorted(PACKAGE.rglob("*.py"))
    if "conf" not in path.relative_to(PACKAGE).parts
}


def _imports(name: str) -> set[str]:
    """The unet_lab modules that ``name`` imports (a package's ``__init__`` counts as the
    package); ``from package import module`` counts as importing the module."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("unet_lab")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("unet_lab"):
            module = str(node.module)
            for alias in node.names:
                found.add(
                    f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module
                )
    return found & set(MODULES)


GRAPH = {name: _imports(name) for name in MODULES}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "package"


def test_the_graph_is_read() -> None:
    assert "unet_lab.training.build" in GRAPH["unet_lab.training.run"]
    assert "unet_lab.runs.checkpoints" in GRAPH["unet_lab.inference.trained"]


def test_no_import_cycle() -> None:
    """Module-level imports, package ``__init__`` files included, form no cycle. A module's
    import of a package above it is left out: that package's ``__init__`` runs first anyway."""
    graph = {
        name: {dep for dep in deps if not name.startswith(f"{dep}.")}
        for name, deps in GRAPH.items()
    }
    state: dict[str, str] = {}
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_imports_run_one_way() -> None:
    wrong = [
        f"{name} imports {dep}"
        for name, deps in GRAPH.items()
        if _layer(name) in ALLOWED
        for dep in deps
        if _layer(dep) != _layer(name) and _layer(dep) not in ALLOWED[_layer(name)]
    ]
    assert not wrong, "\n".join(wrong)


def test_commands_never_import_each_other() -> None:
    commands = {name for name in GRAPH if name.startswith("unet_lab.commands.")}
    wrong = [f"{name} imports {dep}" for name in commands for dep in GRAPH[name] & commands]
    assert not wrong, "\n".join(wrong)


def test_every_cli_command_has_its_module() -> None:
    from unet_lab.cli import COMMANDS

    for name, command in COMMANDS.items():
        module = importlib.import_module(f"unet_lab.commands.{command.module}")
        assert callable(module.main), name
    assert {f"unet_lab.commands.{c.module}" for c in COMMANDS.values()} == {
        name for name in MODULES if name.startswith("unet_lab.commands.")
    }


def test_modules_are_small_and_the_top_level_short() -> None:
    lines = {path: len(path.read_text().splitlines()) for path in MODULES.values()}
    long = [f"{path}: {count} lines" for path, count in lines.items() if count > MAX_LINES]
    assert not long, "\n".join(long)
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def _targets(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["_target_"]] if isinstance(node.get("_target_"), str) else []
        return found + [t for value in node.values() for t in _targets(value)]
    if isinstance(node, list):
        return [t for value in node for t in _targets(value)]
    return []


CONF_TARGETS = sorted(
    {
        target
        for path in CONF.rglob("*.yaml")
        for target in _targets(yaml.safe_load(path.read_text()))
    }
)


@pytest.mark.parametrize("target", CONF_TARGETS)
def test_every_config_target_exists(target: str) -> None:
    module, _, name = target.rpartition(".")
    assert hasattr(importlib.import_module(module), name), target


def test_targets_are_found() -> None:
    assert "unet_lab.training.callbacks.ElapsedTime" in CONF_TARGETS
    assert "unet_lab.runs.compare.SweepSummary" in CONF_TARGETS
