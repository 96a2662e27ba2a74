"""Snapshots on a real array (issue 17): several snapshots taken under a numbered writer each read
back their instant (exported as read-only LUs), deleting one out of order keeps the others,
restore brings the original back, and everything survives kill -9 and a restart."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import full_file_system
from tests.integration.test_local_copy import T, Writer, array, last_seq  # noqa: F401 - array is a fixture

pytestmark = pytest.mark.integration


def _instant(w: Writer, base: bytes, view: bytes, before: float, after: float) -> int:
    """The writer's count the snapshot ``view`` holds; asserts it is one instant between ``before`` and ``after``."""
    k = last_seq(view) + 1
    acked_before = sum(1 for t in w.acked if t < before)
    issued_after = next((i for i, t in enumerate(w.issued) if t > after), len(w.issued))
    assert acked_before <= k <= issued_after
    assert view == w.image(base, k)
    return k


def test_snapshots_under_writes_delete_out_of_order_restore_and_restart(array: Any) -> None:  # noqa: F811
    ar = array(8)
    ar.qemu_write(0, 0, ar.size, 0x10)
    base = bytes([0x10]) * ar.size
    w = Writer(ar)
    w.start()
    times: dict[str, tuple[float, float]] = {}
    for n, name in enumerate(("s1", "s2", "s3")):
        time.sleep(0.4)
        before = time.monotonic()
        row = ar.ok("snapshot", "create", name, "--vol", f"{T}/0")
        times[name] = (before, time.monotonic())
        assert row["name"] == name and row["origin"] == f"{T}/0"
        ar.ok("snapshot", "export", name, "--target", T, "--lun", str(4 + n))
    time.sleep(0.4)
    w.finish()
    assert len(w.acked) > 30
    views = {name: ar.read(4 + n) for n, name in enumerate(("s1", "s2", "s3"))}
    ks = {name: _instant(w, base, views[name], *times[name]) for name in views}
    assert ks["s1"] < ks["s2"] < ks["s3"] < len(w.acked)  # three different instants
    assert ar.file(0) == w.image(base, len(w.acked))
    rows = ar.ok("snapshot", "list", "--json")
    assert [r["name"] for r in rows] == ["s1", "s2", "s3"] and all(r["pool_bytes"] > 0 for r in rows)

    # A snapshot LU is read-only.
    cp = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 1 0 4096", f"iscsi://{ar.sp.portal}/{T}/5"],
                        capture_output=True, text=True, timeout=60)
    assert "Input/output error" in cp.stderr + cp.stdout or cp.returncode != 0
    assert ar.read(5) == views["s2"]

    # Deleting the middle one (tracks it shares with s1 or s3 stay) keeps the others intact.
    assert ar.cli("snapshot", "delete", "s2").returncode == 1  # exported: refused
    ar.ok("snapshot", "unexport", "s2")
    ar.ok("snapshot", "delete", "s2")
    assert [r["name"] for r in ar.ok("snapshot", "list", "--json")] == ["s1", "s3"]
    assert ar.read(4) == views["s1"] and ar.read(6) == views["s3"]

    # Writes after more deletes and a restore: s3 keeps its instant, the original gets s1's.
    ar.qemu_write(0, 0, 2 << 20, 0x77)
    ar.ok("snapshot", "restore", "s1")
    assert ar.file(0) == views["s1"] == ar.read(0)
    assert ar.read(6) == views["s3"]

    # kill -9 and restart: maps, pool and exports come back.
    ar.sp.stop(signal.SIGKILL)
    ar.restart()
    assert ar.read(4) == views["s1"] and ar.read(6) == views["s3"]
    ar.qemu_write(0, 4 << 20, 1 << 20, 0x55)  # copy-on-write still works after the restart
    assert ar.read(6) == views["s3"]
    ar.ok("snapshot", "unexport", "s1")
    ar.ok("snapshot", "delete", "s1")
    assert ar.read(6) == views["s3"]
    ar.ok("snapshot", "restore", "s3")
    assert ar.file(0) == views["s3"]
    ar.ok("snapshot", "unexport", "s3")
    ar.ok("snapshot", "delete", "s3")
    assert ar.ok("snapshot", "list", "--json") == []
    assert ar.cli("snapshot", "delete", "s3").returncode == 1


def test_shared_pool_tracks_stay_until_the_last_snapshot_using_them_goes(array: Any) -> None:  # noqa: F811
    # The writer above overwrites every track between two snapshots; here tracks are shared on purpose.
    ar = array(8)
    mib = 1 << 20
    ar.qemu_write(0, 0, ar.size, 0x10)
    s1 = bytes([0x10]) * ar.size
    ar.ok("snapshot", "create", "s1", "--vol", f"{T}/0")
    ar.qemu_write(0, 0, mib, 0x21)
    s2 = bytes([0x21]) * mib + s1[mib:]
    ar.ok("snapshot", "create", "s2", "--vol", f"{T}/0")
    ar.ok("snapshot", "create", "s3", "--vol", f"{T}/0")  # nothing written between s2 and s3
    ar.qemu_write(0, 0, 4 * mib, 0x43)  # 0-1 MiB: s1's own slots, s2+s3 share; 1-4 MiB: one slot for all three
    rows = {r["name"]: r for r in ar.ok("snapshot", "list", "--json")}
    assert rows["s1"]["pool_bytes"] == rows["s2"]["pool_bytes"] == rows["s3"]["pool_bytes"] == 4 * mib
    for n, name in enumerate(("s1", "s2", "s3")):
        ar.ok("snapshot", "export", name, "--target", T, "--lun", str(4 + n))
    assert (ar.read(4), ar.read(5), ar.read(6)) == (s1, s2, s2)
    ar.ok("snapshot", "unexport", "s2")
    ar.ok("snapshot", "delete", "s2")
    # New copy-on-writes would reuse a slot freed too early and overwrite s3's (and s1's) tracks.
    ar.ok("snapshot", "create", "s4", "--vol", f"{T}/0")
    ar.qemu_write(0, 0, 8 * mib, 0x54)
    assert ar.read(4) == s1 and ar.read(6) == s2
    ar.ok("snapshot", "unexport", "s1")
    ar.ok("snapshot", "delete", "s1")
    ar.qemu_write(0, 0, 8 * mib, 0x65)
    assert ar.read(6) == s2
    ar.ok("snapshot", "restore", "s4")
    assert ar.file(0) == bytes([0x43]) * (4 * mib) + s1[4 * mib:]
    ar.ok("snapshot", "restore", "s3")
    assert ar.file(0) == s2


def test_kill_during_copy_on_write_keeps_every_snapshot_and_every_acknowledged_write(array: Any) -> None:  # noqa: F811
    ar = array(8)
    ar.qemu_write(0, 0, ar.size, 0x10)
    base = bytes([0x10]) * ar.size
    w = Writer(ar, seed=7)
    w.start()
    times = {}
    for n, name in enumerate(("k1", "k2")):
        time.sleep(0.3)
        before = time.monotonic()
        ar.ok("snapshot", "create", name, "--vol", f"{T}/0")
        times[name] = (before, time.monotonic())
        ar.ok("snapshot", "export", name, "--target", T, "--lun", str(4 + n))
    views = {name: ar.read(4 + n) for n, name in enumerate(("k1", "k2"))}
    ks = {name: _instant(w, base, views[name], *times[name]) for name in views}
    assert ks["k1"] < ks["k2"]
    ar.ok("snapshot", "create", "k3", "--vol", f"{T}/0")  # fresh: the writer's next writes copy on write
    time.sleep(0.05)
    ar.sp.stop(signal.SIGKILL)  # the writer is still writing
    w.stop.set()
    w.join(60)
    acked = len(w.acked)
    assert acked > ks["k2"]
    ar.restart()
    assert ar.read(4) == views["k1"] and ar.read(5) == views["k2"]
    img = ar.file(0)
    # Every acknowledged write is there, or a later write to the same block (maybe the one in flight).
    final = {w.lbas[i]: i for i in range(acked)}
    for lba, j in final.items():
        blk = img[lba * 512:lba * 512 + 4096]
        h = int.from_bytes(blk[:8], "big")
        assert j <= h < len(w.lbas) and w.lbas[h] == lba and blk == Writer.payload(h, lba)
    k3 = ar.ok("snapshot", "list", "k3", "--json")[0]
    assert k3["pool_bytes"] > 0  # copy-on-write of k3 had begun before the kill


def test_create_on_a_full_file_system_is_refused_naming_the_file_and_leaves_nothing(array: Any, tmp_path: Path) -> None:  # noqa: F811
    """The snapshots' directory on a full file system: `snapshot create` fails with the reason and the
    file, keeps no map file and no wrapper on the LU, and works once there is room."""
    ar = array(8)
    with full_file_system(tmp_path / "small") as small:
        (ar.sp.data_dir / "snapshots").symlink_to(small)
        cp = ar.cli("snapshot", "create", "s1", "--vol", f"{T}/0")
        assert cp.returncode != 0
        assert "No space left on device" in cp.stderr and "/snapshots/s1." in cp.stderr, cp.stderr
        assert [p.name for p in small.iterdir() if p.name.startswith("s1.")] == []  # the pool file may stay
        assert ar.ok("snapshot", "list", "--json") == []
        (small / "filler").unlink()
        assert ar.ok("snapshot", "create", "s1", "--vol", f"{T}/0")["name"] == "s1"
