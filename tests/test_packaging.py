"""setup.cfg must list every subpackage: `find:` cannot see mapped folders (ARCHITECTURE.md)."""
from __future__ import annotations

import configparser
import importlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOP = ("target", "scsi", "storage", "replication", "tools")


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def test_every_package_folder_is_listed() -> None:
    cfg = _setup_cfg()
    listed = {p.strip() for p in cfg["options"]["packages"].split() if p.strip()}
    found = set()
    for top in TOP:
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO)
            found.add("sanlab." + ".".join(rel.parts))
    assert found == listed


def test_package_dir_maps_top_level_folders() -> None:
    cfg = _setup_cfg()
    mapping = {}
    for line in cfg["options"]["package_dir"].strip().splitlines():
        name, _, folder = line.partition("=")
        mapping[name.strip()] = folder.strip()
    assert mapping == {f"sanlab.{t}": t for t in TOP}


def test_wrong_import_name_is_refused() -> None:
    # From the repository root `scsi` would import as a second copy of `sanlab.scsi`.
    for top in TOP:
        try:
            importlib.import_module(top)
        except ImportError as exc:
            assert "sanlab." + top in str(exc)
        else:  # pragma: no cover - the guard is missing
            raise AssertionError(f"{top} imported under its folder name")


def test_console_script() -> None:
    cfg = _setup_cfg()
    assert "sanlab = sanlab.tools.cli:main" in cfg["options.entry_points"]["console_scripts"]
