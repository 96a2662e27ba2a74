"""Topology files and lab plans (issue 18), without a network: every shipped topology parses, its
plan names short enough interfaces and rewrites the example configurations so each array reaches
its peers over the links; bad files are answered naming the file and the key; and a quick lab on
loopback (no namespaces, as for a user who is not root) comes up with its pair and goes down
leaving no process."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sanlab.tools.config import parse_config
from sanlab.tools.lab import (alive, down, load_lab, netem_args, pair_row, route_through_delay_lines, save_state,
                              site_pid, up)
from sanlab.tools.lab_plan import plan, to_toml
from sanlab.tools.lab_topology import TOPOLOGIES, LabError, LinkSpec, load_topology
from tests.conftest import REPO


def test_every_shipped_topology_plans_in_both_modes(tmp_path: Path) -> None:
    names = {p.stem for p in TOPOLOGIES.glob("*.toml")}
    assert {"two-site", "three-site", "relay-fanout"} <= names
    for name in names:
        topo = load_topology(TOPOLOGIES / f"{name}.toml")
        for mode in ("netns", "loopback"):
            lab = plan(topo, tmp_path, mode)
            for s in lab.sites.values():
                assert len(s.host_veth) <= 15 and len(lab.bridge) <= 15  # IFNAMSIZ
                cfg = parse_config(tomllib.loads(to_toml(s.config)), str(s.config_file), s.data_dir)  # sanlab reads it
                assert cfg.remotes, (name, s.name)
                assert f"{s.address}:3260" in [f"{h}:{p}" for h, p in cfg.server.portals]
                if mode == "loopback":
                    assert s.address.startswith("127.") and not s.namespace
            for ln in lab.links:
                assert len(ln.dev_a) <= 15 and len(ln.dev_b) <= 15
    # three-site in namespaces: B knows A and C by the example's names, at their link addresses.
    lab = plan(load_topology(TOPOLOGIES / "three-site.toml"), tmp_path, "netns")
    b = {r["name"]: r for r in lab.sites["b"].config["remotes"]}
    ab, bc = lab.links
    assert b["array-a"]["portals"] == [f"{ab.addr_a}:3260"] and b["array-c"]["portals"] == [f"{bc.addr_b}:3260"]
    assert lab.sites["a"].address == "10.77.1.10" and lab.bridge_address == "10.77.1.1/24"
    assert [r["name"] for r in lab.sites["a"].config["remotes"]] == ["array-b"]  # no link to C: no remote
    assert lab.sites["c"].config["targets"][0]["luns"][-1]["lun"] == 1  # the topology's extra LUN
    assert lab.sites["b"].config["server"]["portals"] == ["10.77.1.11:3260", f"{ab.addr_b}:3260", f"{bc.addr_a}:3260"]
    fan = plan(load_topology(TOPOLOGIES / "relay-fanout.toml"), tmp_path, "netns")
    assert "array-d" in {r["name"] for r in fan.sites["b"].config["remotes"]}  # added for the B-D link
    assert plan(load_topology(TOPOLOGIES / "three-site.toml"), tmp_path, "loopback").sites["b"].address == "127.77.1.11"


def test_netem_arguments_carry_delay_loss_and_rate() -> None:
    assert netem_args(LinkSpec("a", "b", 0.2)) == ["netem", "delay", "0.2ms"]
    assert netem_args(LinkSpec("a", "b", 20, 1.5, "100mbit")) == ["netem", "delay", "20ms", "loss", "1.5%",
                                                                  "rate", "100mbit"]


@pytest.mark.parametrize("body, message", [
    ('[[sites]]\nname = "a"\nconfig = "nowhere.toml"\n', "config"),
    ('[[sites]]\nname = "A-1"\nconfig = "x.toml"\n', "lower-case"),
    ('bogus = 1\n', "unknown key(s) bogus"),
    ('subnet = "10.77.0.0/24"\nlink_subnet = "10.77.0.0/16"\n[[sites]]\nname = "a"\nconfig = "x.toml"\n', "overlap"),
    ('[[sites]]\nname = "a"\nconfig = "x.toml"\n[[links]]\nbetween = ["a", "z"]\n', "links[0]"),
    ('[[sites]]\nname = "a"\nconfig = "x.toml"\n[[sites]]\nname = "b"\nconfig = "x.toml"\n'
     '[[pairs]]\nname = "p"\npvol = "a:0"\nsvol = "b:0"\n', "no link between a and b"),
    ('[[sites]]\nname = "a"\nconfig = "x.toml"\n[[sites]]\nname = "b"\nconfig = "x.toml"\n'
     '[[links]]\nbetween = ["a", "b"]\n[[pairs]]\nname = "p"\nmode = "async"\npvol = "a:0"\nsvol = "b:0"\n',
     "needs journal and remote_journal"),
])
def test_bad_topologies_are_refused_naming_file_and_key(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "x.toml").write_text('[[targets]]\nname = "iqn.2026-11.org.sanlab:x"\n')
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(LabError) as err:
        load_topology(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_lab_up_list_and_unknown_name() -> None:
    listed = subprocess.run([str(REPO / "lab" / "up"), "--list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "three-site" in listed.stdout and "relay-fanout" in listed.stdout
    bad = subprocess.run([str(REPO / "lab" / "up"), "four-site"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "no topology file" in bad.stderr


@pytest.mark.integration
def test_quick_loopback_lab_comes_up_with_its_pair_and_goes_down(tmp_path: Path) -> None:
    """The fallback where namespaces are unavailable: arrays on 127.x, a clear warning, a real pair."""
    topo = tmp_path / "mini.toml"
    ex = REPO / "lab" / "examples"
    topo.write_text(f'description = "mini"\nsubnet = "10.77.9.0/24"\nlink_subnet = "10.78.9.0/24"\n'
                    f'[[sites]]\nname = "a"\nconfig = "{ex}/sync-a.toml"\n'
                    f'[[sites]]\nname = "b"\nconfig = "{ex}/sync-b.toml"\n'
                    f'[[links]]\nbetween = ["a", "b"]\ndelay_ms = 20\n'
                    f'[[pairs]]\nname = "p0"\npvol = "a:0"\nsvol = "b:0"\n')
    said: list[str] = []
    root = tmp_path / "labs"
    try:
        lab = up(str(topo), root, loopback=True, say=said.append)
        assert any("delays and loss are NOT applied" in m for m in said), said
        assert lab.sites["a"].address == "127.77.9.10"
        row = pair_row(lab.sites["a"], "p0")
        assert row["state"] == "PAIR" and row["copied_bytes"] == 64 << 20
        assert "portal 127.77.9.11:3260" in said[-1] and "pair display --data-dir" in said[-1]
        pids = [site_pid(s) for s in lab.sites.values()]
        assert all(pids)
    finally:
        down("mini", root, say=said.append)
    assert not any(alive(pid) for pid in pids if pid)
    assert down("mini", root, say=said.append) == []  # idempotent: nothing left to do
    assert "lab mini is down" in said[-1]
    # lab/down of a lab that never came up is fine too.
    cp = subprocess.run([sys.executable, "-m", "sanlab.tools.lab", "down", str(topo), "--dir", str(tmp_path / "none")],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr



def test_without_netem_each_delayed_links_remotes_go_through_its_delay_line(tmp_path: Path) -> None:
    """route_through_delay_lines (no sch_netem): both ends of each delayed link reach the peer at
    127.0.0.1:13260+N in their own namespace; the lab's state keeps it for arrays restarted later."""
    lab = plan(load_topology(TOPOLOGIES / "three-site.toml"), tmp_path, "netns")
    lab.delay_lines = True
    route_through_delay_lines(lab)
    remotes = {s: {r["name"]: r["portals"] for r in lab.sites[s].config["remotes"]} for s in ("a", "b", "c")}
    assert remotes == {"a": {"array-b": ["127.0.0.1:13260"]},
                       "b": {"array-a": ["127.0.0.1:13260"], "array-c": ["127.0.0.1:13261"]},
                       "c": {"array-b": ["127.0.0.1:13261"]}}
    lab.root.mkdir(parents=True)
    save_state(lab)
    again = load_lab("three-site", tmp_path)
    assert again.delay_lines and again.sites["c"].config["remotes"][0]["portals"] == ["127.0.0.1:13261"]
