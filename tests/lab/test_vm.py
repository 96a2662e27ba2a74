"""open-iscsi in a VM (issue 18, lab/vm): the Linux kernel initiator in a QEMU guest against real
`sanlab serve` processes.  The guest boots from `lab/vm build` (Debian packages, cached in
build/vm/); the slow tests run it: filesystem round trip, mutual CHAP, and the failover drill
(files fsync'd through A, A killed, takeover at B, the guest at B finds a clean ext4 with every md5).
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from sanlab.tools import vm
from tests.conftest import SanlabProcess, free_port, start_sanlab

REPO = Path(__file__).resolve().parents[2]
LAB_VM = str(REPO / "lab" / "vm")
TARGET = "iqn.2026-11.org.sanlab:vmt"
LUN = """
[[targets.luns]]
lun = 0
file = "lun0.img"
size = "64MiB"
"""


def lab_vm(*args: str, timeout: float = 580) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LAB_VM, *args], capture_output=True, text=True, timeout=timeout)


# -- fast: the runner's answers to bad options (no guest needed) --

@pytest.mark.parametrize(("args", "message"), [
    (["--portal", "127.0.0.2:3260"], "the guest reaches only 127.0.0.1 of the host's loopback"),
    (["--portal", "127.0.0.1"], "expected HOST:PORT"),
    (["--portal", "127.0.0.1:3260", "--chap", "alice"], "--chap 'alice': expected USER:SECRET"),
    (["--portal", "127.0.0.1:3260", "--mutual", "a:b-secret-12345"], "--mutual needs --chap"),
    (["--portal", "127.0.0.1:3260", "--script", "/nonexistent/s.sh"], "--script /nonexistent/s.sh"),
])
def test_run_refuses_bad_options_naming_them(tmp_path: Path, args: list[str], message: str) -> None:
    cp = lab_vm("run", "--dir", str(tmp_path), "--target", TARGET, *args, timeout=60)
    assert cp.returncode == 2
    assert message in cp.stderr, cp.stderr
    assert not (tmp_path / "debs").exists()  # refused before building anything


def test_run_without_a_build_says_so(tmp_path: Path) -> None:
    with pytest.raises(vm.VmError, match="run lab/vm build first"):
        vm.start("127.0.0.1:3260", TARGET, "true\n", tmp_path)


def test_portal_as_the_guest_dials_it() -> None:
    assert vm.guest_portal("127.0.0.1:3260") == "10.0.2.2:3260"
    assert vm.guest_portal("localhost:13260") == "10.0.2.2:13260"
    assert vm.guest_portal("192.0.2.7:3260") == "192.0.2.7:3260"


# -- slow: the guest itself --

@pytest.fixture(scope="module")
def guest() -> Path:
    """The built guest (lab/vm build installs qemu-system-x86 and kmod when missing)."""
    cp = lab_vm("build")
    if cp.returncode != 0 and shutil.which("qemu-system-x86_64") is None:
        pytest.skip(f"qemu-system-x86_64 cannot be installed: {cp.stderr.strip()[-500:]}")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    return vm.DEFAULT_DIR


@pytest.fixture
def arrays(tmp_path: Path) -> Iterator[list[SanlabProcess]]:
    started: list[SanlabProcess] = []
    yield started
    for sp in started:
        if sp.proc.poll() is None:
            sp.stop(signal.SIGKILL)


@pytest.mark.slow
def test_login_and_filesystem_round_trip(guest: Path, tmp_path: Path, arrays: list[SanlabProcess]) -> None:
    sp = start_sanlab(tmp_path, f'[[targets]]\nname = "{TARGET}"\n{LUN}')
    arrays.append(sp)
    cp = lab_vm("run", "--portal", sp.portal, "--target", TARGET)
    assert cp.returncode == 0, cp.stdout[-4000:] + cp.stderr
    assert f"Login to [iface: default, target: {TARGET}, portal: 10.0.2.2,{sp.port}] successful" in cp.stdout
    sums = re.findall(r"^([0-9a-f]{32})  (file\d)$", cp.stdout, re.M)
    assert len(sums) == 8
    assert all(f"{name}: OK" in cp.stdout for _, name in sums)
    assert "round trip verified" in cp.stdout
    # The bytes are on the array: the ext4 superblock magic (0xEF53 at 1024 + 56) in the LUN file.
    with open(sp.data_dir / "lun0.img", "rb") as f:
        f.seek(1024 + 56)
        assert f.read(2) == b"\x53\xef"
    # The script's exit code is the runner's: a failing script fails the run.
    bad = tmp_path / "bad.sh"
    bad.write_text('echo "about to fail on $DISK"\nfalse\necho not reached\n')
    cp = lab_vm("run", "--portal", sp.portal, "--target", TARGET, "--script", str(bad))
    assert cp.returncode == 1, cp.stdout[-3000:]
    assert "about to fail on /dev/sd" in cp.stdout and "not reached" not in cp.stdout


MUTUAL = f"""
[[targets]]
name = "{TARGET}"
[targets.chap]
username = "alice"
secret = "alice-secret-123"
[targets.mutual_chap]
username = "array0"
secret = "array0-secret-456"
{LUN}"""


@pytest.mark.slow
def test_mutual_chap_login(guest: Path, tmp_path: Path, arrays: list[SanlabProcess]) -> None:
    sp = start_sanlab(tmp_path, MUTUAL)
    arrays.append(sp)
    script = tmp_path / "s.sh"
    script.write_text('dd if="$DISK" bs=512 count=1 2>/dev/null | wc -c\nsanlab_logout\n')
    base = ["run", "--portal", sp.portal, "--target", TARGET, "--script", str(script)]
    cp = lab_vm(*base, "--chap", "alice:alice-secret-123", "--mutual", "array0:array0-secret-456")
    assert cp.returncode == 0, cp.stdout[-4000:] + cp.stderr
    assert re.search(r"^512$", cp.stdout, re.M)
    # A wrong secret either way is refused: no session, the runner says the login failed.
    for chap, mutual in (("alice:wrong-secret-9999", "array0:array0-secret-456"),
                         ("alice:alice-secret-123", "array0:wrong-secret-9999")):
        cp = lab_vm(*base, "--chap", chap, "--mutual", mutual)
        assert cp.returncode == 125, cp.stdout[-3000:]
        assert f"SANLAB-VM: login to {TARGET} at 10.0.2.2:{sp.port} failed" in cp.stdout


A = "iqn.2026-11.org.sanlab:array-a"
B = "iqn.2026-11.org.sanlab:array-b"


def pair_config(me: str, peer: str, peer_port: int) -> str:
    return f"""
initiator_name = "{me}"
[[remotes]]
name = "{'array-b' if peer == B else 'array-a'}"
portal = "127.0.0.1:{peer_port}"
target = "{peer}"
[[targets]]
name = "{me}"
{LUN}"""


def cli(sp: SanlabProcess, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sanlab.tools.cli", *words, "--data-dir", str(sp.data_dir)],
                          capture_output=True, text=True, timeout=120)


WRITE_AT_A = """
mkfs.ext4 -q -F "$DISK"
mkdir -p /mnt/lun
mount -t ext4 "$DISK" /mnt/lun
for i in 1 2 3 4 5 6; do
    dd if=/dev/urandom of=/mnt/lun/f$i bs=32k count=$i 2> /dev/null
    sync /mnt/lun/f$i          # fsync(2): acknowledged by A only once B has it (fence data)
done
sync /mnt/lun
(cd /mnt/lun && md5sum f*)
echo FILES-SYNCED
# Site A goes on writing, never synced, until the host kills the array and this guest.
i=0
while true; do dd if=/dev/urandom of=/mnt/lun/unsynced$i bs=4k count=4 2> /dev/null; i=$((i + 1)); done
"""


@pytest.mark.slow
def test_failover_drill_with_the_kernel_initiator(guest: Path, tmp_path: Path, arrays: list[SanlabProcess]) -> None:
    pa, pb = free_port("127.0.0.1"), free_port("127.0.0.1")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_sanlab(tmp_path / "a", pair_config(A, B, pb), "127.0.0.1", pa)
    arrays.append(a)
    b = start_sanlab(tmp_path / "b", pair_config(B, A, pa), "127.0.0.1", pb)
    arrays.append(b)
    cp = cli(a, "pair", "create", "p0", "--pvol", f"{A}/0", "--remote", "array-b", "--svol", f"{B}/0",
             "--fence", "data")
    assert cp.returncode == 0, cp.stderr
    for sp in (a, b):
        cp = cli(sp, "pair", "wait", "p0", "--state", "PAIR", "--timeout", "60")
        assert cp.returncode == 0, cp.stderr

    # Site A: the guest writes and fsyncs files through A, then keeps writing; A dies (kill -9)
    # and the guest with it (site A is gone).
    g = vm.start(a.portal, A, WRITE_AT_A)
    try:
        g.wait_for(vm.READY, vm.BOOT_TIMEOUT)
        g.wait_for("FILES-SYNCED", 300)
        a.stop(signal.SIGKILL)
        g.kill()
        console = g.console()
    finally:
        g.close()
    sums = re.findall(r"^([0-9a-f]{32})  (f\d)$", console.replace("\r", ""), re.M)
    assert [name for _, name in sums] == [f"f{i}" for i in range(1, 7)], console[-3000:]

    # Site B: takeover, then a guest at B recovers the journal, fsck -n must be clean, every
    # fsync'd file has its md5.
    cp = cli(b, "pair", "takeover", "p0")
    assert cp.returncode == 2, cp.stderr
    assert json.loads(cp.stdout)["takeover"] == "svol"
    md5_list = "".join(f"{s}  {n}\\n" for s, n in sums)
    check = f"""
mkdir -p /mnt/lun
mount -t ext4 "$DISK" /mnt/lun     # replays the journal A's death left, as any host would
umount /mnt/lun
fsck.ext4 -fn "$DISK"
echo FSCK-CLEAN
mount -t ext4 -o ro "$DISK" /mnt/lun
printf '{md5_list}' > /tmp/md5
(cd /mnt/lun && md5sum -c /tmp/md5)
umount /mnt/lun
sanlab_logout
"""
    script = tmp_path / "check.sh"
    script.write_text(check)
    cp = lab_vm("run", "--portal", b.portal, "--target", B, "--script", str(script))
    assert cp.returncode == 0, cp.stdout[-4000:] + cp.stderr
    assert "FSCK-CLEAN" in cp.stdout
    assert all(f"{name}: OK" in cp.stdout for _, name in sums), cp.stdout[-3000:]
