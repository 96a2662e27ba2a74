"""Command devices on real arrays over iSCSI (issue 16): raw command blocks through the project's
initiator with their exact sense, per-initiator results, the ACL, and the in-band command line
(``sanlab --cmddev``) answering as the management socket does, up to a pair formed, split and
deleted between two arrays through array A's command device."""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from sanlab.replication.cmddev_client import CommandDeviceRefused, find_command_device, submit
from sanlab.replication.command_block import Command, CommandBlock, EditedData, ResultStatus
from sanlab.scsi.task import ScsiStatus
from sanlab.target.chap import ChapCredentials
from sanlab.target.initiator import InitiatorConfig, IscsiSession, LoginFailed
from sanlab.tools.operations import PROCESS_NUMBERS
from tests.conftest import SanlabProcess, free_port, start_sanlab

pytestmark = pytest.mark.integration

A = "iqn.2026-11.org.sanlab:array-a"
B = "iqn.2026-11.org.sanlab:array-b"
HOST1 = "iqn.1994-05.com.example:host1"
HOST2 = "iqn.1994-05.com.example:host2"
CLI = "iqn.2026-11.org.sanlab:cli"
USER, SECRET = "a-user", "a-secret-1234"
LUN = 9


def a_config(b_portal: str) -> str:
    """Array A: ACL (hosts, the CLI, array B), CHAP on its target, a command device at LUN 9."""
    return f"""
initiator_name = "{A}"
[[remotes]]
name = "array-b"
portal = "{b_portal}"
target = "{B}"
[[targets]]
name = "{A}"
initiators = ["{HOST1}", "{HOST2}", "{CLI}", "{B}"]
[targets.chap]
username = "{USER}"
secret = "{SECRET}"
[[targets.luns]]
lun = 0
file = "lun0.img"
size = "4MiB"
[[targets.luns]]
lun = {LUN}
command_device = true
"""


def b_config(a_portal: str) -> str:
    return f"""
initiator_name = "{B}"
[[remotes]]
name = "array-a"
portal = "{a_portal}"
target = "{A}"
chap_user = "{USER}"
chap_secret = "{SECRET}"
[[targets]]
name = "{B}"
[[targets.luns]]
lun = 0
file = "lun0.img"
size = "4MiB"
"""


class Arrays:
    def __init__(self, tmp: Path) -> None:
        pa, pb = free_port("127.0.0.1"), free_port("127.0.0.2")
        (tmp / "a").mkdir()
        (tmp / "b").mkdir()
        self.a = start_sanlab(tmp / "a", a_config(f"127.0.0.2:{pb}"), "127.0.0.1", pa)
        self.b = start_sanlab(tmp / "b", b_config(f"127.0.0.1:{pa}"), "127.0.0.2", pb)
        self.url = f"iscsi://127.0.0.1:{pa}/{A}/{LUN}"

    def cli(self, *words: str, cmddev: bool, sp: SanlabProcess | None = None) -> subprocess.CompletedProcess[str]:
        sp = sp or self.a
        env = dict(os.environ, SANLAB_CHAP_USER=USER, SANLAB_CHAP_SECRET=SECRET)
        pre = ["--cmddev", self.url] if cmddev else []
        post = [] if cmddev else ["--data-dir", str(sp.data_dir)]
        return subprocess.run([sys.executable, "-m", "sanlab.tools.cli", *pre, *words, *post], capture_output=True,
                              text=True, timeout=120, env=env)

    def both(self, *words: str) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        """The same command through the command device and through the socket."""
        return self.cli(*words, cmddev=True), self.cli(*words, cmddev=False)


@pytest.fixture
def arrays(tmp_path: Path) -> Iterator[Arrays]:
    ar = Arrays(tmp_path)
    yield ar
    for sp in (ar.a, ar.b):
        assert sp.stop() == 0, sp.log()[-3000:]
        assert "connection_crashed" not in sp.log() and "mgmt_op_failed" not in sp.log()


def session(ar: Arrays, initiator: str = HOST1, chap: bool = True) -> IscsiSession:
    cfg = InitiatorConfig(initiator_name=initiator, command_timeout=60.0, reconnect=False,
                          chap=ChapCredentials(USER, SECRET.encode()) if chap else None)
    return IscsiSession(ar.a.host, ar.a.port, A, cfg)


def block(ident: int, op: str, **args: Any) -> CommandBlock:
    return CommandBlock(ident, (Command(PROCESS_NUMBERS[op], args),))


async def write_raw(s: IscsiSession, raw: bytes) -> tuple[int, tuple[int, int, int, bytes] | None]:
    raw += bytes(-len(raw) % 512)
    cdb = bytes([0x2A, 0, 0, 0, 0, 0, 0]) + (len(raw) // 512).to_bytes(2, "big") + b"\0"
    await s.clear_unit_attentions(LUN)
    r = await s.execute(LUN, cdb, raw)
    sense = r.sense
    return r.status, (sense.key, sense.asc, sense.ascq, bytes(sense.sks or b"")) if sense else None


async def read_edited(s: IscsiSession) -> EditedData:
    return EditedData.decode(await s.read16(LUN, 0, 64, 512))


def test_raw_blocks_their_errors_and_results_per_initiator(arrays: Arrays) -> None:
    ar = arrays

    async def go() -> None:
        async with session(ar) as s1, session(ar, HOST2) as s2:
            assert await find_command_device(s1) == LUN  # by REPORT LUNS and INQUIRY's product
            assert await s1.read_capacity16(LUN) == (8192, 512)
            await s1.clear_unit_attentions(LUN)
            assert await read_edited(s1) == EditedData(0, ())  # a READ before any WRITE: the empty result
            # Malformed blocks: 05h/26h/00h, SKSV=1 C/D=0 and the byte of the field.
            bad = bytearray(block(1, "show").encode())
            bad[4] = 2  # VERSION
            assert await write_raw(s1, bytes(bad)) == (ScsiStatus.CHECK_CONDITION, (5, 0x26, 0, b"\x80\x00\x04"))
            bad = bytearray(block(1, "show").encode())
            bad[0:4] = b"XXXX"
            assert await write_raw(s1, bytes(bad)) == (ScsiStatus.CHECK_CONDITION, (5, 0x26, 0, b"\x80\x00\x00"))
            unknown = CommandBlock(1, (Command(0x7777),)).encode()
            assert await write_raw(s1, unknown) == (ScsiStatus.CHECK_CONDITION, (5, 0x26, 0, b"\x80\x00\x14"))
            # A refused pair instruction: 05h/80h/01h at its PROCESS NUMBER, the reason in the edited data.
            refused = block(7, "pair_create", name="p9", pvol=f"{A}/0", remote="nowhere", svol=f"{B}/0").encode()
            assert await write_raw(s1, refused) == (ScsiStatus.CHECK_CONDITION, (5, 0x80, 1, b"\x80\x00\x14"))
            edited = await read_edited(s1)
            assert edited.identification == 7
            res = edited.results[0]
            assert (res.status, res.array) == (ResultStatus.PAIR_INSTRUCTION_REFUSED, "array-a")
            assert "nowhere" in res.output
            # An operation that fails otherwise: GOOD, and the reason in the edited data.
            out = await submit(s1, LUN, block(8, "delete_volume", name="nope"))
            assert out.results[0].status == ResultStatus.REFUSED and "nope" in out.results[0].output
            out = await submit(s1, LUN, block(9, "create_lu", name="x"))
            assert out.results[0].status == ResultStatus.INVALID_ARGUMENTS
            assert "missing argument" in out.results[0].output
            # Two initiators: each reads its own result, whatever the other wrote last.
            assert (await write_raw(s1, block(101, "display_command_devices").encode()))[0] == ScsiStatus.GOOD
            assert (await write_raw(s2, block(202, "pair_display").encode()))[0] == ScsiStatus.GOOD
            e1, e2 = await read_edited(s1), await read_edited(s2)
            assert e1.identification == 101 and e1.results[0].output["array"] == "array-a"
            assert e1.results[0].output["command_devices"] == [{"target": A, "lun": LUN, "source": "config"}]
            assert e2.identification == 202 and e2.results[0].output == []
            # A new WRITE before the READ replaces the block: the newest wins.
            await write_raw(s1, block(301, "show").encode())
            await write_raw(s1, block(302, "display_remotes").encode())
            e1 = await read_edited(s1)
            assert e1.identification == 302 and e1.results[0].output[0]["name"] == "array-b"
            assert (await read_edited(s2)).identification == 202
        # A new session (a new I_T nexus) starts with the empty result.
        async with session(ar) as s3:
            await s3.clear_unit_attentions(LUN)
            assert await read_edited(s3) == EditedData(0, ())
            with pytest.raises(CommandDeviceRefused) as e:
                bad_block = CommandBlock(1, (Command(0x7777),))
                await submit(s3, LUN, bad_block)
            assert e.value.sense is not None and e.value.sense.field_pointer is not None

    asyncio.run(go())


def test_the_acl_and_chap_keep_others_out(arrays: Arrays) -> None:
    ar = arrays

    async def login(initiator: str, chap: bool) -> None:
        async with session(ar, initiator, chap) as s:
            await s.clear_unit_attentions(LUN)

    with pytest.raises(LoginFailed):
        asyncio.run(login("iqn.1994-05.com.example:stranger", True))  # not in the ACL
    with pytest.raises(LoginFailed):
        asyncio.run(login(HOST1, False))  # no CHAP
    cp = ar.cli("show", cmddev=True)
    assert cp.returncode == 0
    env = dict(os.environ, SANLAB_CHAP_USER=USER, SANLAB_CHAP_SECRET="wrong-secret-1234")
    cp = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "--cmddev", ar.url, "show"], capture_output=True,
                        text=True, timeout=60, env=env)
    assert cp.returncode == 2 and "authentication failed" in cp.stderr
    assert "wrong-secret" not in cp.stderr + cp.stdout and SECRET not in cp.stderr + cp.stdout
    cp = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "--cmddev", ar.url, "--initiator-name",
                         "iqn.1994-05.com.example:stranger", "show"], capture_output=True, text=True, timeout=60,
                        env=dict(os.environ, SANLAB_CHAP_USER=USER, SANLAB_CHAP_SECRET=SECRET))
    assert cp.returncode == 2 and "not authorized" in cp.stderr


def _timeless(text: str) -> str:
    """``show`` with the background tasks' running times (which differ between two calls) left out."""
    return re.sub(r"\b\d+(h\d+m|m\d+s|s)\b", "T", re.sub(r'"seconds": [0-9.]+', '"seconds": T', text))


def _same(pair: tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]) -> str:
    cmd, sock = pair
    assert (cmd.returncode, _timeless(cmd.stdout), cmd.stderr) == (sock.returncode, _timeless(sock.stdout),
                                                                   sock.stderr), (cmd, sock)
    return cmd.stdout


def test_the_command_line_in_band_answers_as_the_socket(arrays: Arrays) -> None:
    ar = arrays
    _same(ar.both("show"))
    _same(ar.both("show", "--json"))
    _same(ar.both("admin", "show"))
    drives = ["admin", "create-raid-group", "name=rg0", "level=1", "drives=d0.img,d1.img", "drive_size=16MiB"]
    assert ar.cli(*drives, cmddev=True).returncode == 0  # made through the command device
    create = ("admin", "create-volume", "name=v0", "size=8MiB")
    cmd = ar.cli(*create, cmddev=True)
    assert cmd.returncode == 0 and json.loads(cmd.stdout)["name"] == "v0"
    assert ar.cli("admin", "delete-volume", "name=v0", cmddev=False).returncode == 0
    sock = ar.cli(*create, cmddev=False)
    assert (cmd.returncode, cmd.stdout, cmd.stderr) == (sock.returncode, sock.stdout, sock.stderr)
    # Refusals and mistakes: the same message and exit status.
    taken = ar.both(*create)
    assert taken[0].returncode == 1 and "v0" in taken[0].stderr and _same(taken) == ""
    _same(ar.both("admin", "create-lu", "name=x"))
    _same(ar.both("remote", "display", "--json"))
    _same(ar.both("pair", "display", "--json"))
    # A command device made at run time serves too, and goes again.
    made = ar.cli("admin", "create-command-device", f"target={A}", "lun=10", cmddev=True)
    assert made.returncode == 0, made.stderr
    env = dict(os.environ, SANLAB_CHAP_USER=USER, SANLAB_CHAP_SECRET=SECRET)
    other = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "--cmddev", ar.url[:-1] + "10", "admin",
                            "display-command-devices"], capture_output=True, text=True, timeout=60, env=env)
    assert other.returncode == 0, other.stderr
    assert {"target": A, "lun": 10, "source": "catalog"} in json.loads(other.stdout)["command_devices"]
    gone = ar.cli("admin", "delete-command-device", f"target={A}", "lun=9", cmddev=False)
    assert gone.returncode == 1 and "configuration file" in gone.stderr
    assert ar.cli("admin", "delete-command-device", f"target={A}", "lun=10", cmddev=True).returncode == 0


def test_a_pair_formed_split_and_deleted_through_a_command_device(arrays: Arrays) -> None:
    ar = arrays
    created = ar.cli("pair", "create", "p0", "--pvol", f"{A}/0", "--remote", "array-b", "--svol", f"{B}/0",
                     cmddev=True)
    assert created.returncode == 0, created.stderr + ar.a.log()[-3000:]
    assert json.loads(created.stdout)["role"] == "P-VOL"
    assert ar.cli("pair", "wait", "p0", "--state", "PAIR", "--timeout", "60", cmddev=True).returncode == 0
    again = ar.both("pair", "create", "p0", "--pvol", f"{A}/0", "--remote", "array-b", "--svol", f"{B}/0")
    assert again[0].returncode == 1 and _same(again) == ""  # refused alike (already in a pair)
    split = ar.cli("pair", "split", "p0", cmddev=True)
    assert split.returncode == 0, split.stderr
    rows = json.loads(_same(ar.both("pair", "display", "--json")))
    assert rows[0]["state"] == "PSUS"
    b_rows = json.loads(ar.cli("pair", "display", "--json", cmddev=False, sp=ar.b).stdout)
    assert b_rows[0]["state"] == "SSUS"
    _same(ar.both("pair", "display"))
    deleted = ar.cli("pair", "delete", "p0", cmddev=True)
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(_same(ar.both("pair", "display", "--json"))) == []
    assert json.loads(ar.cli("pair", "display", "--json", cmddev=False, sp=ar.b).stdout) == []

