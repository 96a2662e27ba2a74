"""Encryption at rest on a real array (issue 19, Security): lab/examples/encrypted.toml served as
written, libiscsi's SANITIZE CRYPTOGRAPHIC ERASE test passing without skipping, the bytes on disk
not the host's, a wrong or exposed key refused with the files untouched, an encrypted RAID group."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from sanlab.tools.config import load_config
from tests.conftest import REPO, TARGET, SanlabProcess, free_port, need, run, start_sanlab

pytestmark = pytest.mark.integration

EXAMPLES = REPO / "lab" / "examples"


def _example(tmp: Path) -> Path:
    """lab/examples/encrypted.toml and its key copied to ``tmp``, the key made owner-only (git keeps no modes)."""
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLES / "encrypted.toml", tmp / "encrypted.toml")
    shutil.copy(EXAMPLES / "encrypted.key", tmp / "encrypted.key")
    os.chmod(tmp / "encrypted.key", 0o600)
    return tmp / "encrypted.toml"


def _serve_example(tmp: Path, started: list[SanlabProcess]) -> SanlabProcess:
    cfg = _example(tmp / "conf")
    sp = start_sanlab(tmp, extra=["--config", str(cfg)])
    started.append(sp)
    return sp


@pytest.fixture
def started() -> Callable[[], list[SanlabProcess]]:
    procs: list[SanlabProcess] = []
    yield procs  # type: ignore[misc]
    for sp in procs:
        rc = sp.stop()
        assert rc == 0, sp.log()[-4000:]


def _serve_fails(tmp: Path, config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "sanlab.tools.cli", "serve", "--config", str(config), "--data-dir",
            str(tmp / "data"), "--portal", f"127.0.0.1:{free_port()}"]
    cp = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=tmp, env={**os.environ, **(env or {})})
    assert cp.returncode != 0, cp.stdout + cp.stderr
    return cp


LIBISCSI_INITIATOR = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"
"""In the example's ACL; qemu-io logs in with it here."""


def _qemu_io(sp: SanlabProcess, command: str) -> str:
    host, port = sp.portal.rsplit(":", 1)
    opts = (f"driver=iscsi,transport=tcp,portal={host}:{port},target={TARGET},lun=0,"
            f"initiator-name={LIBISCSI_INITIATOR}")
    cp = run([need("qemu-io"), "--image-opts", "-c", command, opts])
    out = cp.stdout + cp.stderr
    assert "Pattern verification failed" not in out, out
    return out


def test_example_is_the_contract() -> None:
    cfg = load_config(EXAMPLES / "encrypted.toml")
    assert cfg.server.portals == [("127.0.0.1", 3260)]
    (t,) = cfg.targets
    (lun,) = t.luns
    assert (t.name, lun.lun, lun.size, lun.block_size) == (TARGET, 0, 64 << 20, 512)
    assert lun.encryption is not None and lun.encryption.key_file == EXAMPLES / "encrypted.key"
    text = (EXAMPLES / "encrypted.key").read_text()
    assert "DEMO KEY" in text and re.search(r"^[0-9a-f]{64}$", text, re.MULTILINE)


def test_crypto_erase_suite_runs_and_passes(tmp_path: Path, started: list[SanlabProcess]) -> None:
    sp = _serve_example(tmp_path, started)
    cp = run([need("iscsi-test-cu"), "--dataloss", "--allow-sanitize", "-V", "-t", "SCSI.Sanitize.CryptoErase",
              sp.url()], timeout=300, check=False)
    out = cp.stdout + cp.stderr
    m = re.search(r"^\s*tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out, re.MULTILINE)
    assert m and int(m.group(2)) == 1 and int(m.group(4)) == 0, out[-4000:]
    assert "[SKIPPED]" not in out.split("CUnit - A unit testing framework")[1], out[-4000:]
    assert "[SUCCESS] Blocks were wiped" in out, out[-4000:]
    assert '"crypto_erase_done"' in sp.log()
    assert "target_without_acl" not in sp.log(), "the example has an ACL"


def test_disk_holds_ciphertext_and_a_wrong_key_is_refused(tmp_path: Path, started: list[SanlabProcess]) -> None:
    need("qemu-io")
    sp = _serve_example(tmp_path, started)
    _qemu_io(sp, "write -P 0x61 0 1M")
    sp.stop()
    started.clear()
    lun_file = sp.data_dir / "encrypted-lun0.img"
    header = sp.data_dir / "encrypted-lun0.img.crypt"
    assert b"a" * 512 not in lun_file.read_bytes()[:2 << 20]
    before = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (lun_file, header)]

    # Another key: refused before anything is opened, nothing written.
    conf = tmp_path / "conf"
    (conf / "encrypted.key").write_text("# another key\n" + "5a" * 32 + "\n")
    cp = _serve_fails(tmp_path, conf / "encrypted.toml")
    assert "wrong key" in cp.stderr and "encrypted-lun0.img" in cp.stderr, cp.stderr
    # A key others can read: refused, naming the file and the fix.
    os.chmod(conf / "encrypted.key", 0o644)
    cp = _serve_fails(tmp_path, conf / "encrypted.toml")
    assert "mode 0644" in cp.stderr and "chmod 600" in cp.stderr and "targets[0].luns[0].encryption" in cp.stderr
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in (lun_file, header)] == before

    # The right key again: the host's data is back.
    shutil.copy(EXAMPLES / "encrypted.key", conf / "encrypted.key")
    os.chmod(conf / "encrypted.key", 0o600)
    sp = start_sanlab(tmp_path, extra=["--config", str(conf / "encrypted.toml")])
    started.append(sp)
    _qemu_io(sp, "read -P 0x61 0 1M")


RAID_CONFIG = """
[[raid_groups]]
name = "rg0"
level = 5
drive_size = "8MiB"
drives = ["drives/d0.img", "drives/d1.img", "drives/d2.img"]
encryption = {{ key_env = "SANLAB_RG0_KEY" }}
[[targets]]
name = "iqn.2026-11.org.sanlab:array0"
[[targets.luns]]
lun = 0
raid_group = "rg0"
"""


def test_encrypted_raid_group_with_a_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              started: list[SanlabProcess]) -> None:
    need("qemu-io")
    monkeypatch.setenv("SANLAB_RG0_KEY", "3c" * 32)
    sp = start_sanlab(tmp_path, RAID_CONFIG.format())
    started.append(sp)
    run(["qemu-io", "-f", "raw", "-c", "write -P 0x62 0 512k", sp.url()])
    run(["qemu-io", "-f", "raw", "-c", "read -P 0x62 0 512k", sp.url()])
    # No ACL here: the array said so at start, naming the target.
    warned = [line for line in sp.log().splitlines() if '"target_without_acl"' in line]
    assert len(warned) == 1 and TARGET in warned[0] and '"warning"' in warned[0], sp.log()[-2000:]
    sp.stop()
    started.clear()
    for d in (sp.data_dir / "drives").iterdir():
        assert b"b" * 512 not in d.read_bytes(), d
    assert (sp.data_dir / "raid-rg0.crypt").exists()
    monkeypatch.delenv("SANLAB_RG0_KEY")
    cp = _serve_fails(tmp_path, tmp_path / "sanlab.toml")
    assert "raid_groups[0].encryption" in cp.stderr and "SANLAB_RG0_KEY" in cp.stderr and "not set" in cp.stderr
    cp = _serve_fails(tmp_path, tmp_path / "sanlab.toml", env={"SANLAB_RG0_KEY": "3d" * 32})
    assert "wrong key" in cp.stderr and "RAID group rg0" in cp.stderr
