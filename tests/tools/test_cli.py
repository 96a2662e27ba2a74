"""The `sanlab` command: config errors name file, key and reason; clean shutdown on SIGTERM."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import SanlabProcess, need, run

pytestmark = pytest.mark.integration


def test_config_error_names_file_key_reason(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[[targets]]\nname = 'iqn.2026-11.org.sanlab:a'\n[[targets.luns]]\nlun = 0\nsize = 'lots'\n")
    cp = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "serve", "--config", str(cfg)],
                        capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert cp.returncode == 2
    assert str(cfg) in cp.stderr and "targets[0].luns[0].size" in cp.stderr and "not a size" in cp.stderr


def test_bad_portal_option(tmp_path: Path) -> None:
    cp = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "serve", "--portal", "nonsense"],
                        capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert cp.returncode == 2 and "--portal" in cp.stderr


def test_a_file_longer_than_the_configured_size_wins(tmp_path: Path) -> None:
    """What keeps a resize-lun across restarts: the LUN opens at the file's length when larger."""
    from sanlab.tools.cli import file_lun_size
    from sanlab.tools.config import LunConfig

    lc = LunConfig(lun=0, size=4 << 20, file=tmp_path / "lun0.img")
    assert file_lun_size(lc) == 4 << 20  # no file yet: the configured size
    lc.file.write_bytes(bytes(1 << 20))
    assert file_lun_size(lc) == 4 << 20  # a shorter file never shrinks the LUN
    with open(lc.file, "r+b") as f:
        f.truncate((8 << 20) + 100)  # grown, plus a partial block
    assert file_lun_size(lc) == 8 << 20  # whole blocks of the longer file
    lc.block_size = 4096
    lc.size = 4 << 20
    assert file_lun_size(lc) == 8 << 20


def test_default_data_dir_and_sigterm_flushes(sanlab_factory: Callable[..., SanlabProcess], tmp_path: Path) -> None:
    sp = sanlab_factory("""
[[targets]]
name = "iqn.2026-11.org.sanlab:array0"
[[targets.luns]]
lun = 0
size = "16MiB"
""")
    src = tmp_path / "w.img"
    src.write_bytes(b"\x5a" * (1 << 20))
    run([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(src), sp.url()])
    assert sp.stop(signal.SIGTERM) == 0
    log = sp.log()
    assert "server_stopped" in log
    with open(sp.data_dir / "array0-lun0.img", "rb") as f:
        assert f.read(1 << 20) == src.read_bytes()


def test_serve_without_arguments(tmp_path: Path) -> None:
    """`sanlab serve` alone: ./sanlab-data, target array0, 1 GiB sparse LUN 0, 0.0.0.0:3260."""
    import socket
    import time
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 3260)) == 0:
            pytest.fail("port 3260 is already taken on 127.0.0.1: the default `sanlab serve` cannot be checked; stop whatever listens there (another sanlab serve or tgtd)")
    proc = subprocess.Popen([sys.executable, "-m", "sanlab.tools.cli", "serve"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", 3260)) == 0:
                    break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.05)
        cp = run([need("iscsi-readcapacity16"), "iscsi://127.0.0.1:3260/iqn.2026-11.org.sanlab:array0/0"])
        assert "Totalsize:1073741824" in cp.stdout.replace(" ", "")
        img = tmp_path / "sanlab-data" / "array0-lun0.img"
        assert img.stat().st_size == 1 << 30 and img.stat().st_blocks * 512 < 1 << 20
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_config_drives_get_directories_only_inside_the_data_dir(tmp_path: Path) -> None:
    """Issue 12 item 7, the TOML side: `drives/d0.img` gets its directory in the data directory on first
    start; a drive elsewhere whose directory is missing stops the array with a message, making nothing."""
    outside = tmp_path / "elsewhere" / "deep"
    for drives, ok in ((["drives/d0.img", "drives/d1.img"], True), (["d0.img", f"{outside}/d1.img"], False)):
        run_dir = tmp_path / ("good" if ok else "bad")
        run_dir.mkdir()
        cfg = run_dir / "c.toml"
        cfg.write_text(f"[[raid_groups]]\nname = 'rg'\nlevel = 1\ndrives = {drives!r}\ndrive_size = '1MiB'\n"
                       "[[targets]]\nname = 'iqn.2026-11.org.sanlab:a'\n[[targets.luns]]\nlun = 0\nraid_group = 'rg'\n")
        cp = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "serve", "--config", str(cfg), "--data-dir",
                             str(run_dir / "data"), "--portal", "192.0.2.1:3260"], capture_output=True, text=True,
                            timeout=60, cwd=run_dir)
        if ok:  # the group was built (then the portal, TEST-NET-1, fails to bind)
            assert cp.returncode == 2 and (run_dir / "data" / "drives" / "d1.img").stat().st_size == 1 << 20, cp.stderr
        else:
            assert cp.returncode == 1, cp.stdout + cp.stderr
            assert f"raid_groups[0].drives[1]: directory {outside} does not exist" in cp.stderr, cp.stderr
            assert not (tmp_path / "elsewhere").exists() and not (run_dir / "data" / "d0.img").exists()
