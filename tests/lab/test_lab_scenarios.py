"""The two-site lab in network namespaces, driven as a user would (issue 18): ``lab/up two-site``,
``lab/scenario failover-drill`` and ``link-cut`` (and ``journal-full``), each report saying
verified with both sides' bytes equal, then ``lab/down`` leaving no namespace, array or veth.

Slow (about a minute each); run by the slow job.  Needs root and ``ip netns`` (skipped, saying so,
where namespaces cannot be made).  The lab lives in the test's temporary directory (``--dir``);
it is taken down at teardown whatever happened.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from sanlab.tools.lab import alive, netns_unavailable
from sanlab.tools.lab_plan import plan
from sanlab.tools.lab_topology import TOPOLOGIES, load_topology
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.integration]

LAB = REPO / "lab"


def lab_cmd(*words: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LAB / words[0]), *words[1:]], capture_output=True, text=True, timeout=timeout)


def leftovers(root: Path) -> list[str]:
    """Namespaces, links and arrays of the two-site lab still on the machine."""
    lab = plan(load_topology(TOPOLOGIES / "two-site.toml"), root, "netns")
    names = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    left = [s.namespace for s in lab.sites.values() if s.namespace in names]
    left += [dev for dev in [lab.bridge, *(s.host_veth for s in lab.sites.values())] if f" {dev}:" in links
             or f" {dev}@" in links]
    for s in lab.sites.values():
        for pid_text in [s.pid_file.read_text()] if s.pid_file.exists() else []:
            if alive(int(pid_text)):
                left.append(f"array pid {pid_text.strip()}")
    return left


@pytest.fixture(scope="module")
def two_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if why := netns_unavailable():
        pytest.skip(f"network namespaces unavailable here ({why}); the loopback fallback is tested in test_topologies")
    root = tmp_path_factory.mktemp("labs")
    up = lab_cmd("up", "two-site", "--dir", str(root))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "portal 10.77.0.10:3260" in up.stdout and "pair p0: a:0 -> b:0 sync in PAIR" in up.stdout
        yield root
    finally:
        lab_cmd("down", "two-site", "--dir", str(root))
        assert not leftovers(root)


def scenario(root: Path, name: str) -> dict[str, Any]:
    out = root / f"{name}.json"
    cp = lab_cmd("scenario", name, "two-site", "--dir", str(root), "--json", str(out))
    assert cp.returncode == 0, cp.stdout[-6000:] + cp.stderr[-3000:]
    assert "verified: yes" in cp.stdout
    report: dict[str, Any] = json.loads(out.read_text())
    assert report["verified"] and all(c["ok"] for c in report["checks"]), report
    return report


def test_failover_drill_verifies_and_copies_by_bitmap(two_site: Path) -> None:
    r = scenario(two_site, "failover-drill")
    f = r["facts"]
    assert f["sha256 a:0"] == f["sha256 b:0"]
    assert f["writes acknowledged at A before the kill"] > 0 and f["RPO (acknowledged writes lost)"] == 0
    assert 0 < f["bytes copied by the failback (swap at B)"] < f["volume bytes"]


def test_link_cut_suspends_and_resyncs_only_the_difference(two_site: Path) -> None:
    r = scenario(two_site, "link-cut")
    f = r["facts"]
    assert f["sha256 a:0"] == f["sha256 b:0"]
    assert 0 < f["bytes copied by the resync"] <= 2 * f["difference recorded while cut (bytes)"]
    assert f["bytes copied by the resync"] < f["volume bytes"] // 10


def test_journal_full_goes_pful_then_pfus_and_resyncs(two_site: Path) -> None:
    r = scenario(two_site, "journal-full")
    f = r["facts"]
    assert f["sha256 a:1"] == f["sha256 b:1"]
    assert f["seconds from the cut to PFUL"] <= f["seconds from the cut to PFUS"]
    assert 0 < f["bytes copied by the resync"] < f["volume bytes"] // 4


def test_status_page_and_metrics_show_the_whole_lab(two_site: Path) -> None:
    """What lab/README.md tells a user to watch: A's /topology reaches B over the site network and
    draws p0, and B's metrics show its half of p0 (the capture is read once the lab is down, below)."""
    with urllib.request.urlopen("http://10.77.0.10:8080/topology.json", timeout=30) as r:
        topo = json.load(r)
    arrays = {a["name"]: a for a in topo["arrays"]}
    assert set(arrays) == {"array-a", "array-b"} and all(a["error"] is None for a in arrays.values()), arrays
    assert [(x["pair"], x["from"], x["to"]) for x in topo["links"] if x["pair"] == "p0"] == [("p0", "array-a", "array-b")]
    with urllib.request.urlopen("http://10.77.0.11:8080/metrics", timeout=30) as r:
        metrics = r.read().decode()
    assert 'sanlab_pair_state{pair="p0",role="S-VOL",state="PAIR"} 1.0' in metrics


def test_lab_down_leaves_nothing_behind_and_the_capture_reads_in_tshark(two_site: Path) -> None:
    assert len(leftovers(two_site)) == 2 + 3 + 2  # up: two namespaces, bridge and two veths, two arrays
    down = lab_cmd("down", "two-site", "--dir", str(two_site))
    assert down.returncode == 0, down.stderr
    assert "namespace sanlab-two-site-a" in down.stdout and "bridge slb-" in down.stdout
    assert leftovers(two_site) == []
    again = lab_cmd("down", "two-site", "--dir", str(two_site))
    assert again.returncode == 0 and "lab two-site is down" in again.stdout
    # A's capture, complete now that A stopped, decodes as iSCSI with the pair's mirrored writes in it.
    if shutil.which("tshark") is None:
        pytest.fail("tshark is not installed (scripts/install-clients installs it)")
    cap = two_site / "two-site" / "a" / "capture.pcap"
    out = subprocess.run(["tshark", "-r", str(cap), "-d", "tcp.port==3260,iscsi", "-Y", "scsi_sbc.opcode == 0x8a",
                          "-T", "fields", "-e", "frame.number"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.split()) > 10  # the initial copy and the drills' mirrored WRITE(16)s



def test_three_site_lab_brings_up_its_cascade_over_a_delayed_long_link(tmp_path: Path) -> None:
    """lab/up three-site: A -> B sync, the cascade B -> C async over the 20 ms link, all in PAIR; a
    round trip from B to C over B's remote for C takes the link's delay both ways (netem, or the
    delay lines where the kernel lacks it); lab/down leaves no array, delay line or namespace."""
    if why := netns_unavailable():
        pytest.skip(f"network namespaces unavailable here ({why})")
    up = lab_cmd("up", "three-site", "--dir", str(tmp_path))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        for line in ("pair p0: a:0 -> b:0 sync in PAIR", "pair bc: b:0 -> c:0 async in PAIR",
                     "pair j1: b:1 -> c:1 async in PAIR"):
            assert line in up.stdout, up.stdout
        lab = plan(load_topology(TOPOLOGIES / "three-site.toml"), tmp_path, "netns")
        cfg = tomllib.loads(lab.sites["b"].config_file.read_text())
        portal = next(r["portals"][0] for r in cfg["remotes"] if r["target"] == lab.sites["c"].target)
        t0 = time.monotonic()
        cp = subprocess.run(["ip", "netns", "exec", lab.sites["b"].namespace, "iscsi-inq",
                             f"iscsi://{portal}/{lab.sites['c'].target}/0"], capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
        assert cp.returncode == 0, cp.stderr
        assert took >= 0.12, f"{took:.3f} s: the 20 ms link did not delay B -> C ({portal})"  # >= 3 round trips of 40 ms
        # lab/README's walk-through: the failover drill on this lab, then the cascade still feeds C.
        drill = lab_cmd("scenario", "failover-drill", "three-site", "--dir", str(tmp_path))
        assert drill.returncode == 0 and "verified: yes" in drill.stdout, drill.stdout[-4000:] + drill.stderr
        rows = {}
        for site in ("b", "c"):
            cp = subprocess.run([str(REPO / ".venv/bin/sanlab"), "pair", "display", "bc", "--json", "--data-dir",
                                 str(lab.sites[site].data_dir)], capture_output=True, text=True, timeout=60)
            rows[site] = json.loads(cp.stdout)[0]
        assert rows["b"]["state"] == rows["c"]["state"] == "PAIR", rows
        b_img, c_img = (lab.sites[x].data_dir / "lun0.img" for x in ("b", "c"))
        deadline = time.monotonic() + 60
        while b_img.read_bytes() != c_img.read_bytes():  # C restores what B relayed during the drill
            assert time.monotonic() < deadline, "C did not catch up with B after the drill"
            time.sleep(0.5)
    finally:
        down = lab_cmd("down", "three-site", "--dir", str(tmp_path))
    assert "lab three-site is down" in down.stdout, down.stdout + down.stderr
    assert not [ln for ln in subprocess.run(["pgrep", "-af", "sanlab.tools.delay_line"], capture_output=True,
                                            text=True).stdout.splitlines() if str(tmp_path) in ln or "13260" in ln]
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "sanlab-three-site" not in names
