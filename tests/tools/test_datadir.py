"""One array per data directory: the lock, and a second `sanlab serve` on a directory in use."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from sanlab.tools.datadir import LOCK_NAME, DataDirBusy, DataDirLock
from tests.conftest import TARGET, SanlabProcess, free_port, need, run, start_sanlab

PEER_TARGET = "iqn.2026-11.org.sanlab:peer"


def test_second_lock_on_a_directory_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    first = DataDirLock(data)
    first.acquire()
    assert data.is_dir() and (data / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert sorted(p.name for p in data.iterdir()) == [LOCK_NAME]  # nothing else is created
    # flock locks belong to the open file: a second open in this very process is refused too.
    with pytest.raises(DataDirBusy) as err:
        DataDirLock(data).acquire(pid_wait=0)
    assert err.value.pid == os.getpid() and f"in use by sanlab process {os.getpid()}" in str(err.value)
    first.release()
    with DataDirLock(data) as again:
        assert again.held


def test_lock_held_by_another_process_and_dropped_when_it_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from sanlab.tools.datadir import DataDirLock; DataDirLock(Path(sys.argv[1])).acquire(); "
         "print('locked', flush=True); time.sleep(60)", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirBusy) as err:
            DataDirLock(tmp_path).acquire()
        assert err.value.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the lock with the process (kill -9): no stale lock, though its pid stays in the file.
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(holder.pid)
    lock = DataDirLock(tmp_path)
    lock.acquire()
    assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    lock.release()


def _snapshot(data_dir: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every file of the directory: inode, size, mtime and (for small ones) the bytes."""
    out = {}
    for p in sorted(data_dir.rglob("*")):
        st = p.lstat()
        small = p.is_file() and st.st_size < 1 << 20
        out[str(p.relative_to(data_dir))] = (st.st_ino, st.st_size, st.st_mtime_ns,
                                             p.read_bytes() if small else b"")
    return out


def _logins(sp: SanlabProcess) -> list[dict[str, object]]:
    return [ev for line in sp.log().splitlines() if '"login_complete"' in line
            for ev in [json.loads(line)]]


@pytest.mark.integration
def test_second_serve_on_a_busy_data_directory_leaves_the_first_alone(
        sanlab_factory: Callable[..., SanlabProcess], tmp_path: Path) -> None:
    # A peer array, so that the config has an external volume a second process would log in to.
    peer = sanlab_factory(f'[[targets]]\nname = "{PEER_TARGET}"\n[[targets.luns]]\nlun = 0\nsize = "4MiB"\n')
    config = f"""
initiator_name = "iqn.2026-11.org.sanlab:first"
[[raid_groups]]
name = "rgc"
level = 1
drive_size = "8MiB"
drives = ["c0.img", "c1.img"]
[[external_volumes]]
name = "ext"
portal = "{peer.portal}"
target = "{PEER_TARGET}"
[[targets]]
name = "{TARGET}"
[[targets.luns]]
lun = 0
size = "16MiB"
[[targets.luns]]
lun = 1
raid_group = "rgc"
[[targets.luns]]
lun = 2
external = "ext"
"""
    first = sanlab_factory(config)
    sanlab = [sys.executable, "-m", "sanlab.tools.cli"]
    run(sanlab + ["admin", "create-raid-group", "name=rg0", "level=1", "drives=r0.img,r1.img", "drive_size=16MiB",
                  "--data-dir", str(first.data_dir)])
    peer_logins = len(_logins(peer))
    before = _snapshot(first.data_dir)
    assert {"sanlab.sock", "catalog.db", LOCK_NAME, "c0.img", "r0.img"} <= before.keys(), before.keys()
    assert (first.data_dir / LOCK_NAME).read_text().strip() == str(first.proc.pid)

    cfg = first.data_dir.parent / "sanlab.toml"  # the same config file, the same data directory
    for portal in (f"127.0.0.1:{free_port()}", first.portal):  # another portal, then the same (busy) one
        second = subprocess.Popen(sanlab + ["serve", "--config", str(cfg), "--data-dir", str(first.data_dir),
                                            "--portal", portal, "--log-format", "json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        try:
            out, err = second.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            second.send_signal(signal.SIGTERM)
            second.communicate(timeout=30)
            pytest.fail(f"a second sanlab serve on {first.data_dir} ({portal}) started serving")
        assert second.returncode == 1, (portal, out, err)
        assert f"in use by sanlab process {first.proc.pid}" in err and str(first.data_dir) in err, err
        # It stopped before anything else: no log line about drives, LUNs, externals or the socket.
        assert not re.search(r"raid_group_ready|lun_ready|mgmt_listening|login", out + err), out + err

    # The first array's socket, catalog, drives and lock are as they were, byte for byte.
    assert _snapshot(first.data_dir) == before
    assert len(_logins(peer)) == peer_logins, "the second process logged in to the external volume"
    # ... and it still answers its management socket and its hosts.
    cp = run(sanlab + ["show", "--json", "--data-dir", str(first.data_dir)])
    groups = json.loads(cp.stdout)["raid_groups"]
    assert [(g["name"], g["config"]) for g in groups] == [("rg0", False), ("rgc", True)], groups
    cp = run([need("iscsi-ls"), "-s", f"iscsi://{first.portal}"])
    assert f"Target:{TARGET}" in cp.stdout and re.search(r"Lun:2\s+Type:DIRECT_ACCESS", cp.stdout), cp.stdout
    assert first.proc.poll() is None


@pytest.mark.integration
def test_after_kill_9_the_next_serve_takes_the_directory_over(tmp_path: Path) -> None:
    first = start_sanlab(tmp_path)
    try:
        first.stop(signal.SIGKILL)
        # The kernel released the lock; the socket file stayed behind with nobody answering on it.
        assert (first.data_dir / "sanlab.sock").exists()
        second = start_sanlab(tmp_path)
        try:
            run([sys.executable, "-m", "sanlab.tools.cli", "show", "--data-dir", str(second.data_dir)])
            assert (second.data_dir / LOCK_NAME).read_text().strip() == str(second.proc.pid)
            assert "mgmt_stale_socket_removed" in second.log()
        finally:
            assert second.stop() == 0
        assert not (second.data_dir / "sanlab.sock").exists()  # a clean exit removes its own socket
    finally:
        first.stop(signal.SIGKILL)
