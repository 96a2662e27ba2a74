"""Backup of a divided copy on a real array (issue 17, seed 004 11th embodiment): `sanlab backup
create` while a writer keeps writing the original, `sanlab backup restore` into another LU."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_local_copy import BS, T, Writer, array  # noqa: F401 - array is a fixture

pytestmark = pytest.mark.integration

MIB = 1 << 20


def test_backup_of_a_divided_copy_under_writes_restores_byte_identical(array: Any, tmp_path: Path) -> None:  # noqa: F811
    ar = array(16)
    # The original: 0x33 but for a zero hole at 4-6 MiB (sparse in the image); LUN 2 all 0xEE.
    ar.qemu_write(0, 0, 4 * MIB, 0x33)
    ar.qemu_write(0, 6 * MIB, ar.size - 6 * MIB, 0x33)
    ar.qemu_write(2, 0, ar.size, 0xEE)
    base = bytes([0x33]) * (4 * MIB) + bytes(2 * MIB) + bytes([0x33]) * (ar.size - 6 * MIB)
    ar.create_and_split()  # during generation: the backup reads tracks still on the original
    w = Writer(ar)
    w.start()
    image = tmp_path / "c1.tar"
    cp = ar.cli("backup", "create", "--copy", "c1", "--file", str(image))
    assert cp.returncode == 0, cp.stderr + ar.sp.log()[-3000:]
    assert "%" in cp.stderr and "/s" in cp.stderr  # progress and rate
    done = json.loads(cp.stdout)
    w.finish()
    assert len(w.acked) > 20, "the writer kept writing during the backup"
    assert ar.file(0) != base  # the original moved on
    assert done["pair"] == "c1" and done["extent"] == [0, ar.size // BS] and done["block_size"] == BS
    assert done["zero_bytes"] == 2 * MIB and done["stored_bytes"] == ar.size - 2 * MIB
    with tarfile.open(image) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert names[-1] == "manifest.json" and len(names) == 1 + 14  # 16 chunks of 1 MiB, 2 of them zero
    assert [c["zero"] for c in manifest["chunks"]].count(True) == 2 and manifest["volume"] == f"{T}/1"

    cp = ar.cli("backup", "restore", "--file", str(image), "--to", f"{T}/2")
    assert cp.returncode == 0, cp.stderr + ar.sp.log()[-3000:]
    assert ar.read(2) == base  # the zero hole written over the 0xEE too
    assert ar.read(1) == base  # the copy's point-in-time image itself

    # One flipped byte in a stored chunk: refused before anything is written.
    ar.qemu_write(2, 0, ar.size, 0xEE)
    bad = tmp_path / "bad.tar"
    raw = bytearray(image.read_bytes())
    with tarfile.open(image) as tar:
        raw[tar.getmember("data/000000004096.raw").offset_data + 100] ^= 0xFF
    bad.write_bytes(raw)
    cp = ar.cli("backup", "restore", "--file", str(bad), "--to", f"{T}/2")
    assert cp.returncode == 1 and "SHA-256 mismatch" in cp.stderr and "LBA 4096" in cp.stderr, cp.stderr
    assert ar.file(2) == bytes([0xEE]) * ar.size


def test_extent_backup_and_refusals(array: Any, tmp_path: Path) -> None:  # noqa: F811
    ar = array(8)
    ar.qemu_write(0, 0, ar.size, 0x44)
    ar.qemu_write(2, 0, ar.size, 0xEE)
    ar.create()
    ar.wait("PAIR")
    image = tmp_path / "e.tar"
    cp = ar.cli("backup", "create", "--copy", "c1", "--file", str(image))
    assert cp.returncode == 1 and "not divided (PSUS)" in cp.stderr, cp.stderr
    assert not image.exists()
    ar.ok("copy", "split", "c1")
    ar.qemu_write(0, 0, ar.size, 0x55)  # after the division: not in the copy
    cp = ar.cli("backup", "create", "--copy", "c1", "--extent", "2048:1024", "--file", str(image))
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout)["extent"] == [2048, 1024]
    assert ar.cli("backup", "restore", "--file", str(image), "--to", f"{T}/2").returncode == 0
    want = bytearray([0xEE]) * ar.size
    want[2048 * BS:3072 * BS] = bytes([0x44]) * (1024 * BS)
    assert ar.file(2) == want
    cp = ar.cli("backup", "create", "--copy", "nope", "--file", str(image))
    assert cp.returncode == 1 and "no copy pair called nope" in cp.stderr


def test_backup_through_a_command_device(array: Any, tmp_path: Path) -> None:  # noqa: F811
    """Process numbers 0A07h-0A09h: the same backup and restore, sent as command blocks to LUN 3."""
    ar = array(4)
    ar.qemu_write(0, 0, ar.size, 0x66)
    ar.create()
    ar.wait("PAIR")
    ar.ok("copy", "split", "c1")
    ar.qemu_write(0, 0, ar.size, 0x67)  # after the division
    ar.ok("admin", "create-command-device", f"target={T}", "lun=3")
    url = f"iscsi://{ar.sp.portal}/{T}/3"
    image = tmp_path / "cd.tar"

    def cmddev(*words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "--cmddev", url, *words],
                              capture_output=True, text=True, timeout=120)
    cp = cmddev("backup", "create", "--copy", "c1", "--file", str(image))
    assert cp.returncode == 0, cp.stderr + ar.sp.log()[-2000:]
    cp = cmddev("backup", "restore", "--file", str(image), "--to", f"{T}/2")
    assert cp.returncode == 0, cp.stderr
    assert ar.file(2) == bytes([0x66]) * ar.size
