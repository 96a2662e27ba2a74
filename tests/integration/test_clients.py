"""`sanlab serve` driven by real iSCSI clients (libiscsi tools, qemu-img) over loopback TCP."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import TARGET, SanlabProcess, need, run

pytestmark = pytest.mark.integration

SMALL = """
[[targets]]
name = "iqn.2026-11.org.sanlab:array0"
[[targets.luns]]
lun = 0
size = "64MiB"
[[targets.luns]]
lun = 1
size = "8MiB"
block_size = 4096
"""


def login_statuses(sp: SanlabProcess) -> list[str]:
    out = []
    for line in sp.log().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "login_failed":
            out.append(ev["status"])
    return out


def test_discovery_lists_target_and_portal(sanlab: SanlabProcess) -> None:
    cp = run([need("iscsi-ls"), "-s", f"iscsi://{sanlab.portal}"])
    assert f"Target:{TARGET}" in cp.stdout
    assert f"Portal:{sanlab.portal},1" in cp.stdout
    # -s logs in to each target and lists its LUNs: the default LUN 0 is a 1 GiB disk.
    assert re.search(r"Lun:0\s+Type:DIRECT_ACCESS", cp.stdout), cp.stdout


def test_inquiry(sanlab: SanlabProcess) -> None:
    cp = run([need("iscsi-inq"), sanlab.url()])
    assert "Vendor:SANLAB" in cp.stdout.replace(" ", "")
    cp = run([need("iscsi-inq"), "-e", "1", "-c", "128", sanlab.url()])
    assert "Unit Serial Number" in cp.stdout or "serial" in cp.stdout.lower(), cp.stdout
    cp = run([need("iscsi-inq"), "-e", "1", "-c", "131", sanlab.url()])
    assert "NAA" in cp.stdout, cp.stdout


def test_readcapacity16_default_lun_is_1gib(sanlab: SanlabProcess) -> None:
    cp = run([need("iscsi-readcapacity16"), sanlab.url()])
    assert "LOGICALBLOCKLENGTHINBYTES:512" in cp.stdout.replace(" ", ""), cp.stdout
    assert "Totalsize:1073741824" in cp.stdout.replace(" ", ""), cp.stdout
    data = sanlab.data_dir / "array0-lun0.img"
    assert data.exists() and data.stat().st_size == 1 << 30
    assert data.stat().st_blocks * 512 < 1 << 20, "the default LUN file must be sparse"


def test_4k_lun_capacity(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    sp = sanlab_factory(SMALL)
    cp = run([need("iscsi-readcapacity16"), sp.url(1)])
    assert "LOGICALBLOCKLENGTHINBYTES:4096" in cp.stdout.replace(" ", ""), cp.stdout
    assert "Totalsize:8388608" in cp.stdout.replace(" ", ""), cp.stdout


def test_qemu_img_roundtrip_32mib(sanlab_factory: Callable[..., SanlabProcess], tmp_path: Path) -> None:
    sp = sanlab_factory(SMALL)
    src = tmp_path / "random.img"
    src.write_bytes(os.urandom(32 << 20))
    run([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(src), sp.url()], timeout=300)
    out = tmp_path / "out.img"
    run([need("qemu-img"), "dd", "-f", "raw", "-O", "raw", "bs=1M", "count=32", f"if={sp.url()}", f"of={out}"],
        timeout=300)
    assert out.read_bytes() == src.read_bytes()
    # The bytes are really on the LUN's backing file, where the array put them.
    with open(sp.data_dir / "array0-lun0.img", "rb") as f:
        assert f.read(32 << 20) == src.read_bytes()


CHAP = """
[[targets]]
name = "iqn.2026-11.org.sanlab:array0"
[targets.chap]
username = "alice"
secret = "alice-secret-123"
[[targets.luns]]
lun = 0
size = "16MiB"
"""

MUTUAL = CHAP + """
[targets.mutual_chap]
username = "array0"
secret = "array0-secret-456"
"""


def test_chap_right_secret_works_wrong_fails(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    sp = sanlab_factory(CHAP)
    run([need("iscsi-inq"), sp.url(user="alice", secret="alice-secret-123")])
    bad = run([need("iscsi-inq"), sp.url(user="alice", secret="wrong-secret-999")], check=False)
    assert bad.returncode != 0
    none = run([need("iscsi-inq"), sp.url()], check=False)
    assert none.returncode != 0
    # Both refusals are Authentication failure, status class 2 detail 1 (RFC 7143 §11.13.5).
    assert login_statuses(sp).count("0x0201") == 2, sp.log()[-3000:]


def test_libiscsi_with_chap_credentials_against_chap_target(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    # `iscsi-ls -s` logs in twice: a discovery session (no CHAP configured for discovery, so the
    # target answers AuthMethod=None and libiscsi repeats its InitiatorName and SessionType in the
    # next Login Request) and then a CHAP login to each target it found (RFC 7143 §6.2).
    sp = sanlab_factory(CHAP)
    cp = run([need("iscsi-ls"), "-s", f"iscsi://alice%alice-secret-123@{sp.portal}"])
    assert f"Target:{TARGET}" in cp.stdout, cp.stdout
    assert re.search(r"Lun:0\s+Type:DIRECT_ACCESS", cp.stdout), cp.stdout
    cp = run([need("iscsi-inq"), sp.url(user="alice", secret="alice-secret-123")])
    assert "Vendor:SANLAB" in cp.stdout.replace(" ", ""), cp.stdout
    assert login_statuses(sp) == [], sp.log()[-3000:]
    logins = [json.loads(line) for line in sp.log().splitlines() if '"login_complete"' in line]
    assert [(ev["session_type"], ev.get("user")) for ev in logins] == [
        ("Discovery", None), ("Normal", "alice"), ("Normal", "alice")], logins


def test_libiscsi_with_credentials_against_no_auth_target(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    # Credentials the target does not ask for: it answers AuthMethod=None, libiscsi repeats
    # InitiatorName, TargetName and SessionType with its operational keys, and the login goes on.
    sp = sanlab_factory(SMALL)
    cp = run([need("iscsi-ls"), "-s", f"iscsi://alice%alice-secret-123@{sp.portal}"])
    assert f"Target:{TARGET}" in cp.stdout, cp.stdout
    assert re.search(r"Lun:1\s+Type:DIRECT_ACCESS", cp.stdout), cp.stdout
    cp = run([need("iscsi-inq"), sp.url(user="alice", secret="alice-secret-123")])
    assert "Vendor:SANLAB" in cp.stdout.replace(" ", ""), cp.stdout
    cp = run([need("iscsi-readcapacity16"), sp.url(1, user="alice", secret="alice-secret-123")])
    assert "Totalsize:8388608" in cp.stdout.replace(" ", ""), cp.stdout
    assert login_statuses(sp) == [], sp.log()[-3000:]


def test_mutual_chap(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    sp = sanlab_factory(MUTUAL)
    run([need("iscsi-inq"), sp.url(user="alice", secret="alice-secret-123", target_user="array0",
                                   target_password="array0-secret-456")])
    # The initiator checks the target's answer: a wrong expected target secret fails on the client side.
    bad = run([need("iscsi-inq"), sp.url(user="alice", secret="alice-secret-123", target_user="array0",
                                         target_password="not-the-secret")], check=False)
    assert bad.returncode != 0


def test_header_digest(sanlab_factory: Callable[..., SanlabProcess], tmp_path: Path) -> None:
    # libiscsi 1.19's tools override the URL's header_digest with "None,CRC32C" (and we rightly pick
    # the initiator's first choice, None), so QEMU's own header-digest option forces CRC32C here.
    sp = sanlab_factory(SMALL)
    src = tmp_path / "d.img"
    src.write_bytes(os.urandom(4 << 20))
    opts = (f"driver=iscsi,transport=tcp,portal={sp.portal},target={TARGET},lun=0,"
            "header-digest=crc32c")
    run([need("qemu-img"), "convert", "-n", "-f", "raw", "--target-image-opts", str(src), opts], timeout=120)
    out = tmp_path / "out.img"
    run([need("qemu-img"), "convert", "--image-opts", opts, "-O", "raw", str(out)], timeout=120)
    assert out.read_bytes()[:4 << 20] == src.read_bytes()
    logins = [json.loads(l) for l in sp.log().splitlines() if '"login_complete"' in l]
    assert len(logins) == 2 and all(ev.get("header_digest") == "CRC32C" for ev in logins), logins


ACL = """
[[targets]]
name = "iqn.2026-11.org.sanlab:array0"
initiators = ["iqn.2026-11.org.sanlab:allowed"]
[[targets.luns]]
lun = 0
size = "16MiB"
"""


def test_acl_refuses_unknown_initiator(sanlab_factory: Callable[..., SanlabProcess]) -> None:
    sp = sanlab_factory(ACL)
    run([need("iscsi-inq"), "-i", "iqn.2026-11.org.sanlab:allowed", sp.url()])
    bad = run([need("iscsi-inq"), "-i", "iqn.2026-11.org.sanlab:stranger", sp.url()], check=False)
    assert bad.returncode != 0
    assert login_statuses(sp) == ["0x0202"], sp.log()[-3000:]
    # Discovery does not reveal the target to the stranger either.
    cp = run([need("iscsi-ls"), "-i", "iqn.2026-11.org.sanlab:stranger", f"iscsi://{sp.portal}"], check=False)
    assert TARGET not in cp.stdout
