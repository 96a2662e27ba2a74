"""The operation table: the one declaration of every management operation, kept true to Admin and README.md."""
from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from sanlab.tools import operations
from sanlab.tools.admin import Admin
from sanlab.tools.array import ArrayState
from sanlab.tools.mgmt import MgmtServer
from sanlab.tools.operations import OPERATIONS, REQUIRED, ArgumentError, Domain, Kind, check_args, help_text, \
    lookup, parse_words
from tests.conftest import REPO

NOT_OPERATIONS = {"load", "close"}
"""Coroutine methods of the domains that are the array's own (start, shutdown), not the socket's."""


def _domain_class(domain: Domain) -> type:
    return Admin.DOMAINS.get(domain, Admin)  # Domain.VIEWS: the facade itself


def test_the_table_declares_every_operation_of_each_domain_with_its_signature() -> None:
    assert Admin.OPERATIONS == tuple(OPERATIONS)
    assert set(Admin.DOMAINS) | {Domain.VIEWS} == set(Domain)
    for domain in Domain:
        cls = _domain_class(domain)
        public = {n for n, f in inspect.getmembers(cls, inspect.iscoroutinefunction) if not n.startswith("_")
                  and n not in vars(ArrayState)}  # the state's helpers (persist) that the facade inherits
        declared = {op.name for op in OPERATIONS.values() if op.domain is domain}
        assert public - NOT_OPERATIONS <= declared, f"an operation of {cls.__name__} missing from tools/operations.py"
    for op in OPERATIONS.values():
        sig = inspect.signature(getattr(_domain_class(op.domain), op.name))
        params = [p for p in sig.parameters.values() if p.name != "self"]
        assert [p.name for p in params] == [p.name for p in op.params], op.name
        for declared_param, real in zip(op.params, params):
            default = REQUIRED if real.default is inspect.Parameter.empty else real.default
            assert declared_param.default == default, (op.name, declared_param.name, declared_param.default, default)
            if declared_param.kind is Kind.SIZE:
                # The value arrives as written ("1MiB"): the method must take text and convert it itself.
                assert declared_param.unit in ("bytes", "blocks"), (op.name, declared_param.name)
                assert "str" in str(real.annotation), (op.name, declared_param.name, real.annotation)
        assert op.doc and all(p.help for p in op.params)


async def test_the_socket_dispatches_through_the_table_to_each_domain(tmp_path: Path) -> None:
    """Admin.handler finds every declared operation as a bound method of its domain's object."""
    admin = Admin(tmp_path)
    for op in OPERATIONS.values():
        method = admin.handler(op)
        assert method.__name__ == op.name and isinstance(method.__self__, _domain_class(op.domain)), op.name
    await admin.close()


def test_check_args_speaks_the_command_lines_words() -> None:
    op = lookup("create-lu")
    assert lookup("create_lu") is op
    assert check_args(op, {"name": "a", "vvol": "1", "vstart": "0", "size": "1MiB"}) == \
        {"name": "a", "vvol": 1, "vstart": 0, "size": "1MiB"}  # the unit rides along for the array
    assert check_args(op, {"name": "a", "vvol": 1, "vstart": 0, "size": 2048, "multiple_virtualization": "yes"}) == \
        {"name": "a", "vvol": 1, "vstart": 0, "size": 2048, "multiple_virtualization": True}
    cases = {
        "create-lu: missing argument vvol=INT (virtual volume number)": {"name": "a", "vstart": 0, "size": 1},
        "create-lu: unknown argument sise= (did you mean size=?)": {"name": "a", "vvol": 1, "vstart": 0, "sise": 1},
        "create-lu: vvol=one is not a whole number (virtual volume number)":
            {"name": "a", "vvol": "one", "vstart": 0, "size": 1},
        "create-lu: size=1.5GiB is not a size: write a whole number (blocks) or one with a unit":
            {"name": "a", "vvol": 1, "vstart": 0, "size": "1.5GiB"},
        "create-lu: multiple_virtualization=maybe is not yes or no":
            {"name": "a", "vvol": 1, "vstart": 0, "size": 1, "multiple_virtualization": "maybe"},
        "show: unknown argument x= (it takes no arguments)": {"x": 1},
    }
    for message, args in cases.items():
        name = "show" if "x" in args else "create-lu"
        with pytest.raises(ArgumentError) as info:
            check_args(lookup(name), args)
        assert str(info.value).startswith(message), (message, str(info.value))
    with pytest.raises(ArgumentError, match=r"missing arguments name=TEXT \(LU name\), vvol=INT"):
        check_args(op, {"size": 1})
    with pytest.raises(ArgumentError, match=r"unknown operation 'create-lun' \(did you mean create-lu\?\)"):
        lookup("create-lun")


@pytest.mark.parametrize("op,key,value", [
    ("fail-drive", "index", "--5"), ("fail-drive", "index", "1e3"), ("fail-drive", "index", "٣"),
    ("fail-drive", "index", True), ("fail-drive", "index", 1.5), ("auto-tiering", "interval", "inf"),
    ("auto-tiering", "interval", "nan"), ("auto-tiering", "interval", "soon"), ("auto-tiering", "enable", 2),
    ("create-volume", "groups", 7), ("create-volume", "groups", ["rg0", 1]), ("create-volume", "name", 5),
    ("create-volume", "size", -1.0), ("create-volume", "size", True), ("create-volume", "size", "12 parsecs"),
])
def test_a_value_of_the_wrong_kind_is_an_argument_error(op: str, key: str, value: object) -> None:
    """Never a ValueError or TypeError out of the parsing: the command line would die with a traceback."""
    with pytest.raises(ArgumentError, match=rf"^{op}: {key}=.* is not "):
        lookup(op).param(key).coerce(op, value)  # type: ignore[union-attr]


def test_parse_words() -> None:
    op = lookup("create-volume")
    assert parse_words(op, ["name=v", "size=2GiB", "groups=rg0,rg1", "block-size=4096"]) == \
        {"name": "v", "size": "2GiB", "groups": ["rg0", "rg1"], "block_size": 4096}
    with pytest.raises(ArgumentError, match="'size' is not key=value"):
        parse_words(op, ["name=v", "size"])
    with pytest.raises(ArgumentError, match="size= is given twice"):
        parse_words(op, ["name=v", "size=1", "size=2"])


def test_help_lists_each_argument_with_kind_unit_and_default() -> None:
    for op in OPERATIONS.values():
        text = help_text(op)
        assert text.startswith(f"usage: sanlab admin {op.command}") and op.doc in text
        for p in op.params:
            (line,) = [ln for ln in text.splitlines() if ln.startswith(f"  {p.placeholder} ")]
            assert p.help in line
            assert ("(required)" in line) == p.required, line
            if not p.required:
                assert "(default: " in line, line
            if p.kind is Kind.SIZE:
                assert f"[bare number: {p.unit}]" in line, line
    create_vvol = help_text(lookup("create-vvol"))
    assert "multiple_virtualization=yes|no" in create_vvol and "(default: no)" in create_vvol
    assert "stripe_size=SIZE" in help_text(lookup("create-raid-group"))
    assert "(default: 65536 (64 KiB))" in help_text(lookup("create-raid-group"))


def test_readme_documents_every_operation_and_argument() -> None:
    """README.md's operation table has a row per operation naming all of its arguments."""
    readme = (REPO / "README.md").read_text()
    for op in OPERATIONS.values():
        rows = [ln for ln in readme.splitlines() if ln.startswith(f"| `{op.command}`")]
        assert len(rows) == 1, f"README.md has no row for {op.command}"
        for p in op.params:
            assert re.search(rf"`{p.name}=", rows[0]), f"README.md's {op.command} row lacks {p.name}="


async def test_the_socket_answers_json_clients_in_the_same_words(tmp_path: Path) -> None:
    admin = Admin(tmp_path)
    mgmt = MgmtServer(admin, tmp_path / "sanlab.sock")

    async def ask(op: str, **args: object) -> dict[str, object]:
        return await mgmt.handle(json.dumps({"op": op, "args": args}).encode())

    reply = await ask("create_lu", name="a", vstart=0, size=1)
    assert reply == {"ok": False, "error": "create-lu: missing argument vvol=INT (virtual volume number)"}
    reply = await ask("create_lu", name="a", vvol=1, vstart=0, sise=1)
    assert reply == {"ok": False, "error": "create-lu: unknown argument sise= (did you mean size=?)"}
    reply = await ask("create-raid-group", name="g", level=5, drives="a.img,b.img,c.img", drive_size="1MiB",
                      stripe_size="lots")
    assert reply["ok"] is False and str(reply["error"]).startswith("create-raid-group: stripe_size=lots is not a size")
    assert not (tmp_path / "a.img").exists()  # refused before anything was made
    reply = await ask("drop_everything")
    assert reply["ok"] is False and "unknown operation 'drop_everything'" in str(reply["error"])
    assert (await ask("show"))["ok"] is True
    await admin.close()


def test_every_size_argument_is_declared_with_its_unit() -> None:
    sizes = {(op.command, p.name): p.unit for op in OPERATIONS.values() for p in op.params if p.kind is Kind.SIZE}
    # The README's rule, spelt out: bytes for what is made of bytes, blocks for windows on volumes.
    assert sizes == {
        ("create-raid-group", "drive_size"): "bytes", ("create-raid-group", "stripe_size"): "bytes",
        ("create-raid-group", "ldev_size"): "bytes", ("create-volume", "size"): "bytes",
        ("create-volume", "block_size"): "bytes", ("create-vvol", "real_start"): "blocks",
        ("create-vvol", "size"): "blocks", ("create-lu", "vstart"): "blocks", ("create-lu", "size"): "blocks",
        ("resize-lun", "size"): "bytes", ("replace-drive", "rate"): "bytes", ("migrate-start", "start"): "blocks", ("migrate-start", "end"): "blocks",
        ("migrate-start", "chunk"): "blocks", ("journal-create", "size"): "bytes"}
    assert operations.SIZE_RULE.startswith("A size with a unit (B, KiB, MiB, GiB, TiB")


def test_every_operation_has_a_stable_process_number_documented_once() -> None:
    """tools/operations.py's PROCESS_NUMBERS: one per operation, all different, none reserved, and the
    table of docs/command-device.md says the same."""
    assert set(operations.PROCESS_NUMBERS) == set(OPERATIONS)
    numbers = list(operations.PROCESS_NUMBERS.values())
    assert len(set(numbers)) == len(numbers)
    assert not set(numbers) & set(operations.RESERVED_PROCESS_NUMBERS)
    assert all(0 < n <= 0xFFFF for n in numbers)
    for name, n in operations.PROCESS_NUMBERS.items():
        assert operations.by_process_number(n) is OPERATIONS[name]
    doc = (REPO / "docs" / "command-device.md").read_text()
    rows = dict(re.findall(r"^\| `([0-9A-F]{4})h` \| (`[a-z-]+`|\(reserved\)) \|", doc, re.M))
    expected = {f"{n:04X}": f"`{OPERATIONS[name].command}`" for name, n in operations.PROCESS_NUMBERS.items()}
    expected.update({f"{n:04X}": "(reserved)" for n in operations.RESERVED_PROCESS_NUMBERS})
    assert rows == expected
    assert operations.PAIR_INSTRUCTIONS <= set(OPERATIONS)
