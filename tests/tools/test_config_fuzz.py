"""Fuzzing the TOML configuration (tools/config.py): mutated valid configs.

Invariant (README "configuration error"): a config either loads or raises :class:`ConfigError`
naming the file and a key — never a KeyError, TypeError, ValueError or the like from deep inside.
The seeds are the repository's example configs (lab/examples/*.toml) and test_config.py's full
one; mutations replace a value by one of another type or range, delete a key, or add one, at any
depth, and a second family flips bytes of the TOML text itself.
"""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanlab.tools.config import ConfigError, load_config, parse_config
from tests.conftest import REPO
from tests.tools.test_config import FULL

SEEDS = [FULL] + [p.read_text() for p in sorted((REPO / "lab" / "examples").glob("*.toml"))]
DOCS = [tomllib.loads(s) for s in SEEDS]

VALUES = st.one_of(
    st.none().map(lambda _: {}), st.booleans(), st.integers(-2**63, 2**63 - 1), st.sampled_from([0, -1, 1 << 40]),
    st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["64MiB", "1.5GiB", "-1MiB", "0", "abc", "127.0.0.1:0", "[::1]:99999", "iqn.x", "CRC32C", "raid5",
                     "sync", "async", "never", "", "a" * 300]),
    st.lists(st.one_of(st.integers(-1, 5), st.text(max_size=5)), max_size=3),
    st.builds(lambda: [{}]), st.builds(lambda: [{"lun": 0}]),
)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in ``doc`` (tables and arrays of tables walked)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append(prefix + (k,))
            out += paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append(prefix + (i,))
            out += paths(v, prefix + (i,))
    return out


@st.composite
def mutated_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(draw(st.sampled_from(DOCS)))
    for _ in range(draw(st.integers(1, 3))):
        all_paths = paths(doc)
        if not all_paths:
            break
        path = draw(st.sampled_from(all_paths))
        parent: Any = doc
        for k in path[:-1]:
            parent = parent[k]
        what = draw(st.integers(0, 3))
        if what == 0:
            del parent[path[-1]]
        elif what == 1 and isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.sampled_from(["x", "size", "lun", "file", "level", "name"]))] = draw(VALUES)
        else:
            parent[path[-1]] = draw(VALUES)
    return doc


def loads_or_names_a_key(doc: dict[str, Any], tmp: Path) -> None:
    try:
        parse_config(doc, "fuzz.toml", tmp / "data")
    except ConfigError as exc:
        assert exc.source == "fuzz.toml" and exc.key and exc.reason, exc


FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(doc=mutated_docs())
def test_mutated_configs_load_or_name_a_key(doc: dict[str, Any], tmp_path: Path) -> None:
    loads_or_names_a_key(doc, tmp_path)


@st.composite
def mutated_text(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(SEEDS)).encode())
    for _ in range(draw(st.integers(1, 4))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.sampled_from(b"=[]\"'{},.0123456789\n #-xk"))
    return bytes(raw)


@FUZZ
@given(text=mutated_text())
def test_mutated_toml_text_loads_or_names_a_key(text: bytes, tmp_path: Path) -> None:
    cfg = tmp_path / "fuzz.toml"
    cfg.write_bytes(text)
    try:
        load_config(cfg, tmp_path / "data")
    except ConfigError as exc:
        assert exc.key and exc.reason, exc


@pytest.mark.slow
@settings(FUZZ, max_examples=10000)
@given(doc=mutated_docs())
def test_mutated_configs_explore(doc: dict[str, Any], tmp_path: Path) -> None:
    loads_or_names_a_key(doc, tmp_path)
