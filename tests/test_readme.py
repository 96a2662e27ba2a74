"""README.md's storage walk-through, run as written against real arrays, so the text cannot drift from the code.

The commands are read from the fenced ``sh`` block(s) of the "Storage: RAID groups, LDEVs, virtual
volumes" section and run one by one through the shell, in order, from a fresh temporary directory
(the data directory is the default ``./sanlab-data``), against a real ``sanlab serve`` started there
and a second array serving the external volume as the README describes it
(``lab/examples/external-b.toml``).  The one thing changed in the commands is the peer's port: a free
one instead of 3260, so the test runs beside an array a developer has on the standard port.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import REPO, SanlabProcess, free_port, need, run

pytestmark = pytest.mark.integration

SECTION = "## Storage: RAID groups, LDEVs, virtual volumes"
PEER_PORTAL = "127.0.0.2:3260"
"""Where the README says the second array serves (external-b.toml's portal)."""
PEER_TARGET = "iqn.2026-11.org.sanlab:array-b"
MiB = 1 << 20


def walkthrough_commands(readme: str) -> list[str]:
    """The command lines of the section's fenced ``sh`` blocks (blank and comment-only lines dropped)."""
    start = readme.index(SECTION)
    nxt = readme.find("\n## ", start + len(SECTION))
    section = readme[start:nxt if nxt != -1 else len(readme)]
    blocks = re.findall(r"^```sh\n(.*?)^```", section, flags=re.S | re.M)
    return [line.strip() for block in blocks for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_walkthrough_is_found_and_covers_the_storage_operations() -> None:
    cmds = walkthrough_commands((REPO / "README.md").read_text())
    ops = [shlex.split(c, comments=True)[1:3] for c in cmds]
    for needed in (["admin", "create-raid-group"], ["admin", "rearrange"], ["admin", "add-external"],
                   ["migrate", "start"], ["admin", "migrate-detach"], ["admin", "replace-drive"]):
        assert needed in ops, (needed, cmds)
    # A rearrangement names a group created before it; a migration goes into a volume created for it.
    text = "\n".join(cmds)
    assert text.index("name=rg1") < text.index("group=rg1")
    assert any(PEER_PORTAL in c and PEER_TARGET in c for c in cmds)


def _serve(cwd: Path, host: str, port: int, *args: str) -> SanlabProcess:
    log_path = cwd / f"sanlab-{host}-{port}.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "sanlab.tools.cli", "serve", "--portal", f"{host}:{port}",
                                 "--log-format", "json", *args], stdout=logf, stderr=subprocess.STDOUT, cwd=cwd)
    sp = SanlabProcess(proc, host, port, cwd / "sanlab-data", log_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sanlab exited with {proc.returncode}:\n{sp.log()}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return sp
        except OSError:
            time.sleep(0.05)
    sp.stop(signal.SIGKILL)
    raise AssertionError(f"sanlab did not listen on {host}:{port}:\n{sp.log()}")


@pytest.fixture
def arrays(tmp_path: Path) -> Iterator[tuple[SanlabProcess, SanlabProcess]]:
    """This array (default data directory under the temporary cwd) and the peer the README names."""
    peer = _serve(tmp_path, "127.0.0.2", free_port("127.0.0.2"), "--config",
                  str(REPO / "lab" / "examples" / "external-b.toml"), "--data-dir", "data-b")
    try:
        array = _serve(tmp_path, "127.0.0.1", free_port())
    except BaseException:
        peer.stop()
        raise
    yield array, peer
    rc = array.stop()
    peer.stop()
    assert rc == 0, array.log()[-4000:]
    assert "connection_crashed" not in array.log() and "mgmt_op_failed" not in array.log(), array.log()[-4000:]


def test_readme_storage_walkthrough_runs_as_written(arrays: tuple[SanlabProcess, SanlabProcess],
                                                    tmp_path: Path) -> None:
    array, peer = arrays
    cmds = walkthrough_commands((REPO / "README.md").read_text())
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")

    # What the peer's LUN holds: the migration must bring exactly this over.
    peer_data = tmp_path / "peer.img"
    peer_data.write_bytes(os.urandom(64 * MiB))
    run([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(peer_data),
         f"iscsi://{peer.portal}/{PEER_TARGET}/0"], timeout=300)
    host_data = tmp_path / "host.img"
    host_data.write_bytes(os.urandom(32 * MiB))

    for cmd in cmds:
        typed = cmd.replace(PEER_PORTAL, peer.portal)
        cp = subprocess.run(typed, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert cp.returncode == 0, f"README command failed: {cmd}\nexit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
        if "export lu=lu0" in cmd:
            # A host fills LU lu0 as soon as it is exported; the drive failure, rebuild and LDEV
            # move that follow must not change a byte of it.
            run([need("qemu-img"), "convert", "-n", "-f", "raw", "-O", "raw", str(host_data), array.url(1)],
                timeout=300)

    def sanlab(*words: str) -> str:
        # From the same directory: the default ./sanlab-data, as the commands above used.
        cp = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", *words], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        return cp.stdout

    view = json.loads(sanlab("show", "--json"))
    status = json.loads(sanlab("migrate", "status", "--json"))
    groups = {g["name"]: g for g in view["raid_groups"]}
    assert sorted(groups) == ["rg0", "rg1"]
    assert groups["rg0"]["degraded"] is False
    assert [d["state"] for d in groups["rg0"]["drives"]] == ["online"] * 4
    assert groups["rg0"]["drives"][2]["path"].endswith("d2-new.img")
    vols = {v["name"]: v for v in view["volumes"]}
    assert vols["vol0"]["ldevs"][0].startswith("rg1:") and all(d.startswith("rg0:") for d in vols["vol0"]["ldevs"][1:])
    assert {(e["lun"], e["lu"]) for e in view["exports"]} == {(1, "lu0"), (2, "lu1")}
    assert [e["name"] for e in view["external_volumes"]] == ["b-lun0"]
    assert any(r["volume"] == "vol1" and r["state"] == "detached" for r in status), status

    # The data: lu0 kept every byte through the drive failure, rebuild and move; lu1 holds the peer's.
    out = tmp_path / "out.img"
    run([need("qemu-img"), "convert", "-f", "raw", "-O", "raw", array.url(1), str(out)], timeout=300)
    assert out.read_bytes() == host_data.read_bytes()
    run([need("qemu-img"), "convert", "-f", "raw", "-O", "raw", array.url(2), str(out)], timeout=300)
    assert out.read_bytes() == peer_data.read_bytes()
    # Detached: the peer can go away and vol1 still serves everything.
    assert peer.stop() == 0
    run([need("qemu-img"), "convert", "-f", "raw", "-O", "raw", array.url(2), str(out)], timeout=300)
    assert out.read_bytes() == peer_data.read_bytes()
