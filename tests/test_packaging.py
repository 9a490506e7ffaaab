"""The wheel holds every package and every config: pyproject.toml's [tool.setuptools] lists
every package (conf/ ships as ``unet_lab.conf``) and its package-data patterns match every YAML
under conf/, at any depth. A new subpackage or config file that the lists miss fails here."""

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

CONF = REPO / "conf"
PACKAGE = REPO / "unet_lab"


def _source_files(root: Path) -> list[Path]:
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


def _packages(root: Path, name: str) -> set[str]:
    """``name`` and the dotted names of the folders below ``root`` that hold an __init__.py."""
    return {
        ".".join([name, *init.parent.relative_to(root).parts])
        for init in root.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


def _setuptools_table() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_pyproject_lists_every_package() -> None:
    table = _setuptools_table()
    assert table["package-dir"] == {"unet_lab.conf": "conf"}
    expected = _packages(PACKAGE, "unet_lab") | _packages(CONF, "unet_lab.conf")
    assert "unet_lab.conf" in expected and "unet_lab.models" in expected
    assert set(table["packages"]) == expected


def test_package_data_matches_every_config_at_any_depth() -> None:
    patterns = _setuptools_table()["package-data"]["unet_lab.conf"]
    matched = {path for pattern in patterns for path in CONF.glob(pattern)}  # setuptools' globs
    configs = set(CONF.rglob("*.yaml"))
    assert any(len(path.relative_to(CONF).parts) == 3 for path in configs)  # hydra/launcher/
    assert sorted(configs - matched) == []


def test_the_wheel_holds_every_module_data_file_and_config(wheel: Path) -> None:
    """Built as `pip wheel .` builds it (conftest's ``wheel``, shared with test_cli.py)."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = [f"unet_lab/{p.relative_to(PACKAGE).as_posix()}" for p in _source_files(PACKAGE)]
    expected += [
        f"unet_lab/conf/{p.relative_to(CONF).as_posix()}"
        for p in _source_files(CONF)
        if p.suffix in (".py", ".yaml")
    ]
    assert "unet_lab/conf/hydra/launcher/slurm_ddp.yaml" in expected
    assert sorted(set(expected) - names) == []


def test_git_ignores_no_source_file() -> None:
    """A package folder named like a run folder (``runs/``) once went missing from clean clones:
    no file of the package, its configs or the tests may match a .gitignore pattern."""
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    roots = (PACKAGE, CONF, REPO / "tests")
    files = [str(path.relative_to(REPO)) for root in roots for path in _source_files(root)]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        input="\n".join(files), cwd=REPO, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    assert ignored == []
