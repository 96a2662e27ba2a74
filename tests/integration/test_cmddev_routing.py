"""Commands routed between arrays (issue 16; seed 003 FIG. 22, 26-41), on real arrays over iSCSI.

A line A—B—C (remotes A↔B and B↔C only) with a host that talks to A alone: ``sanlab --cmddev A
--array array-c`` forms, shows, splits and deletes a pair on C; one block carries commands for A, B
and C along the path; a LUN of A that maps B's command device (an external volume) is B's command
device.  A mesh A-B, A-C, B-D, C-D: a command for D goes the fewest links, and on the other path
once the first one's link is down.
"""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from sanlab.replication.cmddev_client import submit
from sanlab.replication.command_block import Command, CommandBlock, ResultStatus, TransferDestination
from sanlab.target.initiator import InitiatorConfig, IscsiSession
from sanlab.tools.operations import PROCESS_NUMBERS
from tests.conftest import SanlabProcess, free_port, start_sanlab

pytestmark = pytest.mark.integration

LUN = 9


def iqn(name: str) -> str:
    return f"iqn.2026-11.org.sanlab:{name}"


def config(me: str, peers: dict[str, str]) -> str:
    """Array ``me`` with a remote to each peer (name → portal), LUNs 0 and 1 and a command device at 9."""
    remotes = "".join(f'[[remotes]]\nname = "{p}"\nportal = "{portal}"\ntarget = "{iqn(p)}"\n'
                      for p, portal in peers.items())
    return f"""initiator_name = "{iqn(me)}"
{remotes}
[[targets]]
name = "{iqn(me)}"
[[targets.luns]]
lun = 0
file = "lun0.img"
size = "2MiB"
[[targets.luns]]
lun = 1
file = "lun1.img"
size = "2MiB"
[[targets.luns]]
lun = {LUN}
command_device = true
"""


class Net:
    """Arrays on 127.0.0.N with remotes along ``edges``; the host's CLI reaches the first one only."""

    def __init__(self, tmp: Path, names: list[str], edges: list[tuple[str, str]]) -> None:
        self.hosts = {n: f"127.0.0.{i + 1}" for i, n in enumerate(names)}
        self.ports = {n: free_port(self.hosts[n]) for n in names}
        self.arrays: dict[str, SanlabProcess] = {}
        for n in names:
            peers = {b if a == n else a: "" for a, b in edges if n in (a, b)}
            peers = {p: f"{self.hosts[p]}:{self.ports[p]}" for p in peers}
            (tmp / n).mkdir()
            self.arrays[n] = start_sanlab(tmp / n, config(n, peers), self.hosts[n], self.ports[n])
        first = names[0]
        self.first = first
        self.url = f"iscsi://{self.hosts[first]}:{self.ports[first]}/{iqn(first)}/{LUN}"
        for n, sp in self.arrays.items():  # every link up before the host starts
            wanted = len({e for e in edges if n in e})
            deadline = time.monotonic() + 30
            while sum(r["link"] == "up" for r in self.socket(n, "remote", "display", "--json")) < wanted:
                assert time.monotonic() < deadline, sp.log()[-3000:]
                time.sleep(0.2)

    def run(self, words: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sanlab.tools.cli", *words], capture_output=True, text=True,
                              timeout=120)

    def socket(self, name: str, *words: str) -> Any:
        cp = self.run([*words, "--data-dir", str(self.arrays[name].data_dir)])
        assert cp.returncode == 0, cp.stderr
        return json.loads(cp.stdout)

    def inband(self, array: str | None, *words: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        pre = ["--cmddev", url or self.url] + (["--array", array] if array else [])
        return self.run([*pre, *words])

    def stop(self) -> None:
        for sp in self.arrays.values():
            if sp.proc.poll() is None:
                assert sp.stop() == 0, sp.log()[-3000:]


@pytest.fixture
def line(tmp_path: Path) -> Iterator[Net]:
    net = Net(tmp_path, ["array-a", "array-b", "array-c"], [("array-a", "array-b"), ("array-b", "array-c")])
    yield net
    net.stop()


def test_a_host_reaching_only_a_manages_a_pair_on_c(line: Net) -> None:
    net = line

    def c(*words: str) -> Any:
        cp = net.inband("array-c", *words)
        assert cp.returncode == 0, cp.stderr + net.arrays["array-b"].log()[-2000:]
        return json.loads(cp.stdout) if cp.stdout.strip() else None

    # The same answer as C's own socket gives.
    assert net.inband("array-c", "pair", "display", "--json").stdout == \
        net.run(["pair", "display", "--json", "--data-dir", str(net.arrays["array-c"].data_dir)]).stdout
    assert c("admin", "display-command-devices")["array"] == "array-c"
    created = c("pair", "create", "pc", "--pvol", f"{iqn('array-c')}/0", "--remote", "array-b",
                "--svol", f"{iqn('array-b')}/1")
    assert created["role"] == "P-VOL"
    assert net.inband("array-c", "pair", "wait", "pc", "--state", "PAIR", "--timeout", "60").returncode == 0
    assert [r["state"] for r in c("pair", "display", "--json")] == ["PAIR"]
    assert [r["role"] for r in net.socket("array-b", "pair", "display", "--json")] == ["S-VOL"]
    c("pair", "split", "pc")
    assert [r["state"] for r in net.socket("array-c", "pair", "display", "--json")] == ["PSUS"]
    c("pair", "delete", "pc")
    assert c("pair", "display", "--json") == [] and net.socket("array-b", "pair", "display", "--json") == []
    # A refusal at C comes back as C said it, with the CLI's exit status.
    bad = net.inband("array-c", "pair", "create", "px", "--pvol", f"{iqn('array-c')}/0", "--remote", "nowhere",
                     "--svol", f"{iqn('array-b')}/1")
    assert bad.returncode == 1 and "no remote called nowhere" in bad.stderr
    # An array nobody links to: unreachable, said by the array that could not send it on.
    lost = net.inband("array-z", "show")
    assert lost.returncode == 1 and "array-z" in lost.stderr
    assert "cmddev_forward" in net.arrays["array-a"].log() and "cmddev_forward" in net.arrays["array-b"].log()


def test_one_block_with_commands_for_a_b_and_c_along_the_path(line: Net) -> None:
    net = line
    number = PROCESS_NUMBERS["display_command_devices"]

    async def go() -> Any:
        cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:host1", command_timeout=60.0, reconnect=False)
        async with IscsiSession(net.hosts["array-a"], net.ports["array-a"], iqn("array-a"), cfg) as s:
            await s.clear_unit_attentions(LUN)
            block = CommandBlock(77, (Command(number), TransferDestination(("array-b",)), Command(number),
                                      TransferDestination(("array-c",)), Command(PROCESS_NUMBERS["pair_display"]),
                                      Command(number)))
            return await submit(s, LUN, block)

    edited = asyncio.run(go())
    assert edited.identification == 77
    assert [(r.array, r.status) for r in edited.results] == [
        ("array-a", ResultStatus.DONE), ("array-b", ResultStatus.DONE), ("array-c", ResultStatus.DONE),
        ("array-c", ResultStatus.DONE)]
    assert [r.output["array"] for r in (edited.results[0], edited.results[1], edited.results[3])] == \
        ["array-a", "array-b", "array-c"]
    # Each array's connection table: its own links, learned ones beyond.
    assert edited.results[1].output["connections"]["array-b"] == ["array-a", "array-c"]


def test_a_lun_mapping_a_remote_command_device_is_that_arrays(line: Net) -> None:
    """Seed 003 FIG. 22: A's LU 5 is a virtual volume on B's command device (an external volume)."""
    net = line
    b = f"{net.hosts['array-b']}:{net.ports['array-b']}"
    a_dir = str(net.arrays["array-a"].data_dir)
    for words in (["add-external", "name=bcmd", f"portal={b}", f"target={iqn('array-b')}", f"lun={LUN}"],
                  ["create-vvol", "vvol=1", "real=bcmd", "real_start=0", "size=8192"],
                  ["create-lu", "name=bcmd-lu", "vvol=1", "vstart=0", "size=8192"],
                  ["export", "lu=bcmd-lu", f"target={iqn('array-a')}", "lun=5"]):
        cp = net.run(["admin", *words, "--data-dir", a_dir])
        assert cp.returncode == 0, cp.stderr
    url = f"iscsi://{net.hosts['array-a']}:{net.ports['array-a']}/{iqn('array-a')}/5"
    cp = net.inband(None, "admin", "display-command-devices", url=url)
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout)["array"] == "array-b"
    cp = net.inband("array-c", "admin", "display-command-devices", url=url)  # and on from B to C
    assert cp.returncode == 0 and json.loads(cp.stdout)["array"] == "array-c"


def test_a_mesh_routes_over_the_fewest_links_and_around_a_link_down(tmp_path: Path) -> None:
    names = ["array-a", "array-b", "array-c", "array-d"]
    net = Net(tmp_path, names, [("array-a", "array-b"), ("array-a", "array-c"), ("array-b", "array-d"),
                                ("array-c", "array-d")])
    try:
        a_log = net.arrays["array-a"]
        cp = net.inband("array-d", "admin", "display-command-devices")
        assert cp.returncode == 0, cp.stderr
        assert json.loads(cp.stdout)["array"] == "array-d"
        first = [json.loads(ln) for ln in a_log.log().splitlines() if '"cmddev_forward"' in ln]
        assert [e["next_hop"] for e in first] == ["array-b"]  # two links either way: by name, via B
        net.arrays["array-b"].stop(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while [r["link"] for r in net.socket("array-a", "remote", "display", "array-b", "--json")] != ["down"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        cp = net.inband("array-d", "admin", "display-command-devices")
        assert cp.returncode == 0, cp.stderr + a_log.log()[-3000:]
        assert json.loads(cp.stdout)["array"] == "array-d"
        hops = [json.loads(ln)["next_hop"] for ln in a_log.log().splitlines() if '"cmddev_forward"' in ln]
        assert hops == ["array-b", "array-c"]
    finally:
        net.stop()
