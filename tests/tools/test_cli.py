"""The `sanlab` command: config errors name file, key and reason; clean shutdown on SIGTERM; admin help and show."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from sanlab.tools.cli import _print_show, ldev_ranges
from sanlab.tools.operations import OPERATIONS
from tests.conftest import TARGET, SanlabProcess, need, run

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
    from sanlab.tools.assemble import file_lun_size
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


def _sanlab(*words: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return subprocess.run([sys.executable, "-m", "sanlab.tools.cli", *words, *extra], capture_output=True, text=True,
                          timeout=120)


def test_admin_help_lists_operations_and_each_ones_arguments(tmp_path: Path) -> None:
    """`sanlab admin [OP] --help` from the operation table, with no array running."""
    cp = _sanlab("admin", "--help")
    assert cp.returncode == 0, cp.stderr
    for op in OPERATIONS.values():
        assert f"  {op.command} " in cp.stdout, op.command
    cp = _sanlab("admin", "create-volume", "--help")
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0] == ("usage: sanlab admin create-volume name=TEXT size=SIZE [block_size=SIZE] [groups=A,B,...] "
                        "[ldevs=A,B,...] [--data-dir DIR]")
    assert any("block_size=SIZE" in ln and "[bare number: bytes]" in ln and "(default: 512)" in ln for ln in lines)
    assert any(ln.lstrip().startswith("ldevs=A,B,...") and "GROUP:INDEX" in ln for ln in lines)
    cp = _sanlab("admin", "create-lu", "--help")
    assert "vstart=SIZE" in cp.stdout and "[bare number: blocks]" in cp.stdout
    assert "multiple_virtualization=yes|no" in cp.stdout

    # Wrong words are answered before the array is asked (there is none at this data directory).
    cp = _sanlab("admin", "create-lu", "name=a", "vvol=1", "vstart=0", "sise=1MiB", data_dir=tmp_path)
    assert cp.returncode == 2 and cp.stderr == "sanlab: create-lu: unknown argument sise= (did you mean size=?)\n"
    cp = _sanlab("admin", "create-lu", "name=a", "vstart=0", "size=1", data_dir=tmp_path)
    assert cp.returncode == 2 and "create-lu: missing argument vvol=INT (virtual volume number)" in cp.stderr
    cp = _sanlab("admin", "create-lun", data_dir=tmp_path)
    assert cp.returncode == 2 and "did you mean create-lu?" in cp.stderr
    cp = _sanlab("admin", data_dir=tmp_path)
    assert cp.returncode == 2 and "operations:" in cp.stderr
    cp = _sanlab("admin", "show", data_dir=tmp_path)
    assert cp.returncode == 2 and "no running array" in cp.stderr


def test_ldev_ranges() -> None:
    assert ldev_ranges([f"rg0:{i}" for i in range(256)]) == "rg0:0-255"
    assert ldev_ranges(["rg0:0", "rg0:1", "rg0:2", "rg0:3", "rg1:7"]) == "rg0:0-3,rg1:7"
    assert ldev_ranges(["rg0:4", "rg0:5", "rg1:0", "rg0:6", "rg0:8"]) == "rg0:4-5,rg1:0,rg0:6,rg0:8"  # volume order
    assert ldev_ranges(["a:b:1", "a:b:2"]) == "a:b:1-2" and ldev_ranges([]) == ""


def _view(**group: Any) -> dict[str, Any]:
    return {
        "ldev_size": 8 << 20,
        "raid_groups": [dict({"name": "rg0", "level": 5, "stripe_size": 65536, "capacity": 3 << 30,
                              "degraded": True, "rebuild_progress": 0.36, "ldevs": 384, "ldevs_free": 128,
                              "drives": [{"index": 0, "path": "d0", "state": "online"},
                                         {"index": 1, "path": "d1", "state": "rebuilding"}]}, **group)],
        "volumes": [{"name": "vol0", "blocks": 4194304, "block_size": 512,
                     "ldevs": [f"rg0:{i}" for i in range(256)], "moving": {}, "ldev_stats": []}],
        "vr_table": [{"vvol": 1, "real": "vol0", "real_start": 0, "size": 8192, "multiple_virtualization": True,
                      "multiple_virtualization_asked": False, "shares_with": [2], "block_size": 512},
                     {"vvol": 2, "real": "vol0", "real_start": 4096, "size": 8192, "multiple_virtualization": True,
                      "multiple_virtualization_asked": True, "shares_with": [1], "block_size": 512}],
        "luv_table": [{"lu": "lu0", "vvol": 1, "vstart": 0, "size": 2048, "multiple_virtualization": False,
                       "multiple_virtualization_asked": False, "shares_with": [], "block_size": 512}],
        "exports": [{"target": TARGET, "lun": 1, "lu": "lu0"}],
        "external_volumes": [],
        "background_tasks": [
            {"kind": "migration", "name": "vol1", "state": "running", "error": None,
             "context": {"volume": "vol1", "source": "b-lun0"}, "seconds": 75.2},
            {"kind": "rebuild", "name": "rg0", "state": "failed", "error": "VolumeError: rebuild of drive 1 stopped",
             "context": {"group": "rg0", "drive": 1}, "seconds": 3.0}],
    }


def test_show_is_readable(capsys: pytest.CaptureFixture[str]) -> None:
    _print_show(_view(rebuild_rate=12.5 * (1 << 20), rebuild_eta=65.0))
    out = capsys.readouterr().out
    assert "LDEV size: 8 MiB" in out
    (rg,) = [ln for ln in out.splitlines() if ln.startswith("  rg0 ")]
    assert "RAID 5" in rg and "3 GiB" in rg and "64 KiB" in rg and "384 (128 free)" in rg
    assert "rebuilding  36.0% at 12.50 MiB/s, ETA 1m05s" in rg and "1:rebuilding" in rg
    (vol,) = [ln for ln in out.splitlines() if ln.startswith("  vol0 ")]
    assert "2 GiB" in vol and "rg0:0-255" in vol and "rg0:1," not in vol
    (v1,) = [ln for ln in out.splitlines() if ln.startswith("  #1 ")]
    assert "8192 blocks (4 MiB)" in v1 and v1.endswith("yes: #2")
    (v2,) = [ln for ln in out.splitlines() if ln.startswith("  #2 ")]
    assert v2.endswith("yes: #1 (asked)")
    (lu,) = [ln for ln in out.splitlines() if ln.startswith("  lu0 ")]
    assert "2048 blocks (1 MiB)" in lu and lu.endswith("no")
    (mig,) = [ln for ln in out.splitlines() if ln.startswith("  migration ")]
    assert mig.split() == ["migration", "vol1", "volume=vol1", "source=b-lun0", "running", "1m15s"]
    (rebuild,) = [ln for ln in out.splitlines() if ln.split()[:2] == ["rebuild", "rg0"]]
    assert rebuild.split()[:5] == ["rebuild", "rg0", "group=rg0", "drive=1", "failed"]
    assert "  rebuild rg0: VolumeError: rebuild of drive 1 stopped" in out.splitlines()


def test_show_without_rate_and_eta_keys(capsys: pytest.CaptureFixture[str]) -> None:
    """The rebuild's rate and ETA are printed when the array gives them, and their absence is fine."""
    _print_show(_view())
    (rg,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  rg0 ")]
    assert "rebuilding  36.0%" in rg and "ETA" not in rg and "/s" not in rg
    _print_show(_view(rebuild_progress=None, rebuild_rate=None, rebuild_eta=None))
    (rg,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  rg0 ")]
    assert "degraded" in rg and "rebuilding " not in rg
    _print_show(_view(rebuild_progress=None, degraded=False))
    (rg,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  rg0 ")]
    assert " ok " in rg


def test_units_and_overlaps_through_sanlab_admin(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    """Issue 12 through a real `sanlab serve` and `sanlab admin`: ``size=1MiB`` of an LU on 512-byte blocks
    is 2048 blocks on the wire, and an LU over another LU's blocks is refused unless asked for."""
    sp = sanlab_factory(f'[[targets]]\nname = "{TARGET}"\n')

    def admin(*words: str, rc: int = 0) -> subprocess.CompletedProcess[str]:
        cp = _sanlab("admin", *words, data_dir=sp.data_dir)
        assert cp.returncode == rc, cp.stdout + cp.stderr
        return cp

    admin("create-raid-group", "name=rg0", "level=1", "drives=m0.img,m1.img", "drive_size=16MiB",
          "ldev_size=1MiB")
    admin("create-volume", "name=v0", "size=8MiB")
    admin("create-vvol", "vvol=1", "real=v0", "real_start=0", "size=4MiB")
    lu = json.loads(admin("create-lu", "name=lu0", "vvol=1", "vstart=1MiB", "size=1MiB").stdout)
    assert (lu["vstart"], lu["size"]) == (2048, 2048)
    admin("export", "lu=lu0", f"target={TARGET}", "lun=0")
    cp = run([need("iscsi-readcapacity16"), sp.url(0)])
    assert "Totalsize:1048576" in cp.stdout.replace(" ", ""), cp.stdout  # 2048 blocks of 512 bytes, not 512 MiB

    cp = admin("create-lu", "name=lu1", "vvol=1", "vstart=3MiB", "size=2MiB", rc=1)
    assert "outside #1 (8192 blocks)" in cp.stderr  # past the end of the virtual volume
    cp = admin("create-lu", "name=lu1", "vvol=1", "vstart=0", "size=1500B", rc=1)
    assert "create-lu: size=1500B (1500 bytes) is not a whole number of 512-byte blocks" in cp.stderr
    cp = admin("create-lu", "name=lu1", "vvol=1", "vstart=0", "size=2MiB", rc=1)
    assert ("sanlab: create-lu: LU lu1: blocks 0-4095 of virtual volume #1 are already mapped by LU lu0 and "
            "multiple virtualization was not asked for (add multiple_virtualization=yes") in cp.stderr
    cp = admin("create-vvol", "vvol=2", "real=v0", "real_start=4095", "size=1", rc=1)
    assert "already mapped by virtual volume #1" in cp.stderr
    admin("create-lu", "name=lu1", "vvol=1", "vstart=0", "size=2MiB", "multiple_virtualization=yes")
    admin("create-vvol", "vvol=2", "real=v0", "real_start=4MiB", "size=4MiB")

    view = json.loads(_sanlab("show", "--json", data_dir=sp.data_dir).stdout)
    assert [(r["lu"], r["size"], r["multiple_virtualization_asked"], r["shares_with"]) for r in view["luv_table"]] \
        == [("lu0", 2048, False, ["lu1"]), ("lu1", 4096, True, ["lu0"])]
    shown = _sanlab("show", data_dir=sp.data_dir).stdout
    (vol,) = [ln for ln in shown.splitlines() if ln.startswith("  v0 ")]
    assert "8 MiB" in vol and "rg0:0-7" in vol
    (lu1,) = [ln for ln in shown.splitlines() if ln.startswith("  lu1 ")]
    assert "4096 blocks (2 MiB)" in lu1 and lu1.endswith("yes: lu0 (asked)")
