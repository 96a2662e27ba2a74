"""The plan of a multi-site lab (issue 18): every name, address and array configuration, computed
from a topology (``lab_topology.py``) without touching the system.

:func:`plan` gives a :class:`LabPlan`: each site's namespace, address, target and files
(:class:`SitePlan`), each link's veths and /30 (:class:`LinkPlan`), and each array's configuration
(:func:`site_config`: the example's, with the portal and remotes rewritten), which lab/up writes
with :func:`to_toml`.  ``lab.py`` brings the plan up and down; the drills are in ``lab_scenarios.py``.
"""
from __future__ import annotations

import ipaddress
import json
import tomllib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sanlab.tools.lab_topology import LabError, LinkSpec, SiteSpec, Topology

HTTP_PORT = 8080
"""Each array's status page, metrics and topology (``serve --http``) on its site address."""


@dataclass(slots=True)
class SitePlan:
    """One site of a lab: its namespace, address, array configuration and files."""
    name: str
    namespace: str
    """Empty in loopback mode."""
    address: str
    host_veth: str
    target: str
    dir: Path
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        """The array's data directory (``sanlab --data-dir``)."""
        return self.dir / "data"

    @property
    def capture_file(self) -> Path:
        """The pcap of every iSCSI connection of the array (``serve --capture``), complete once it stops."""
        return self.dir / "capture.pcap"

    @property
    def pid_file(self) -> Path:
        """The pid of the site's ``sanlab serve``, written by lab/up."""
        return self.dir / "sanlab.pid"

    @property
    def log_file(self) -> Path:
        """The array's log (JSON lines)."""
        return self.dir / "sanlab.log"

    @property
    def config_file(self) -> Path:
        """The array's configuration as lab/up wrote it."""
        return self.dir / "sanlab.toml"


@dataclass(slots=True)
class LinkPlan:
    """One link of a lab: the veth at each end (in the sites' namespaces) and its /30."""
    spec: LinkSpec
    dev_a: str
    dev_b: str
    addr_a: str
    addr_b: str
    prefix: int = 30

    def device(self, site: str) -> str:
        """The link's device in ``site``'s namespace."""
        return self.dev_a if site == self.spec.a else self.dev_b

    def address_of(self, site: str) -> str:
        """The link's address at ``site``."""
        return self.addr_a if site == self.spec.a else self.addr_b


@dataclass(slots=True)
class LabPlan:
    """Everything of one lab: mode, directories, bridge, sites and links."""
    topology: Topology
    mode: str
    """``netns`` or ``loopback``."""
    root: Path
    bridge: str
    bridge_address: str
    sites: dict[str, SitePlan]
    links: list[LinkPlan]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Pairs of the topology this build refused (create_pairs)."""
    delay_lines: bool = False
    """The kernel lacks ``sch_netem``: delayed links run through user-space delay lines (module docstring)."""

    def portal(self, site: str) -> str:
        """``HOST:PORT`` where hosts reach ``site``'s array."""
        return f"{self.sites[site].address}:{self.topology.port}"

    def volume(self, site_lun: tuple[str, int]) -> str:
        """``TARGET/LUN`` of a ``(site, lun)`` volume, as ``sanlab pair`` names it."""
        return f"{self.sites[site_lun[0]].target}/{site_lun[1]}"


def _tag(name: str) -> str:
    return f"{zlib.crc32(name.encode()):08x}"


def _first_target(cfg: dict[str, Any], where: Path) -> str:
    targets = cfg.get("targets") or []
    if not targets or "name" not in targets[0]:
        raise LabError(f"{where}: a site's config needs a [[targets]] table with a name")
    return str(targets[0]["name"])


def plan(topo: Topology, root: Path, mode: str) -> LabPlan:
    """Every name, address and array configuration of the lab ``topo`` in ``mode``."""
    tag = _tag(topo.name)
    hosts = list(topo.subnet.hosts())
    lab_root = root / topo.name
    if mode == "loopback":
        # 10.S.H.X -> 127.S.H.X: the same layout on addresses every Linux routes to lo.
        def where(a: ipaddress.IPv4Address) -> str:
            return str(ipaddress.IPv4Address((int(a) & 0x00FFFFFF) | (127 << 24)))
    else:
        def where(a: ipaddress.IPv4Address) -> str:
            return str(a)
    raw: dict[str, dict[str, Any]] = {}
    sites: dict[str, SitePlan] = {}
    for i, s in enumerate(topo.sites):
        raw[s.name] = tomllib.loads(s.config.read_text())
        sites[s.name] = SitePlan(
            s.name, f"sanlab-{topo.name}-{s.name}" if mode == "netns" else "", where(hosts[9 + i]),
            f"sl{tag}h{i}", _first_target(raw[s.name], s.config), lab_root / s.name)
    links: list[LinkPlan] = []
    for k, ln in enumerate(topo.links):
        base = int(topo.link_subnet.network_address) + 4 * k
        links.append(LinkPlan(ln, f"to-{ln.b}", f"to-{ln.a}", str(ipaddress.IPv4Address(base + 1)),
                              str(ipaddress.IPv4Address(base + 2))))
    lab = LabPlan(topo, mode, lab_root, f"slb-{tag}", f"{hosts[0]}/{topo.subnet.prefixlen}", sites, links)
    for s in topo.sites:
        sites[s.name].config = site_config(lab, s, raw[s.name])
    return lab


def site_config(lab: LabPlan, spec: SiteSpec, cfg: dict[str, Any]) -> dict[str, Any]:
    """The example's configuration with this site's portal, its extra LUNs, and one remote per
    linked site (the example's remote name for that target when it has one, else ``array-SITE``)
    reaching the peer over the link; remotes to arrays with no link are dropped (no path)."""
    out = dict(cfg)
    out.pop("data_dir", None)
    # Hosts come in on the site's address; peers over each link, to the link's address.
    portals = [lab.portal(spec.name)]
    if lab.mode == "netns":
        portals += [f"{ln.address_of(spec.name)}:{lab.topology.port}" for ln in lab.links
                    if spec.name in (ln.spec.a, ln.spec.b)]
    out["server"] = {**cfg.get("server", {}), "portals": portals}
    targets = [dict(t) for t in cfg.get("targets", [])]
    # A site's LUN replaces the example's LUN of that number (an example may already carry one
    # there for its own walk-through, e.g. sync-b's LUN 1), else it is added.
    extra = {int(x["lun"]): dict(x) for x in spec.luns}
    kept = [lun for lun in targets[0].get("luns", []) if int(lun.get("lun", -1)) not in extra]
    targets[0]["luns"] = kept + list(extra.values())
    out["targets"] = targets
    by_target = {str(r.get("target")): str(r["name"]) for r in cfg.get("remotes", [])}
    remotes = []
    for link in lab.links:
        if spec.name not in (link.spec.a, link.spec.b):
            continue
        peer = link.spec.b if spec.name == link.spec.a else link.spec.a
        p = lab.sites[peer]
        host = link.address_of(peer) if lab.mode == "netns" else p.address
        remotes.append({"name": by_target.get(p.target, f"array-{peer}"), "portals": [f"{host}:{lab.topology.port}"],
                        "target": p.target, "http": f"{p.address}:{HTTP_PORT}"})  # /topology walks there
    out["remotes"] = remotes
    return out


def remote_name(lab: LabPlan, at: str, peer: str) -> str:
    """The name site ``at`` knows site ``peer`` by."""
    for r in lab.sites[at].config["remotes"]:
        if r["target"] == lab.sites[peer].target:
            return str(r["name"])
    raise LabError(f"site {at} has no remote for site {peer} (no link between them)")


def to_toml(doc: dict[str, Any]) -> str:
    """TOML for the configuration shapes sanlab reads (scalars, lists of scalars, tables, arrays of
    tables); the standard library only reads TOML."""
    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise LabError(f"cannot write {v!r} as TOML")

    def table(d: dict[str, Any], prefix: str, lines: list[str]) -> None:
        for k, v in d.items():
            if not isinstance(v, dict) and not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v)):
                lines.append(f"{k} = {scalar(v)}")
        for k, v in d.items():
            name = f"{prefix}{k}"
            if isinstance(v, dict):
                lines.append(f"\n[{name}]")
                table(v, name + ".", lines)
            elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                for x in v:
                    lines.append(f"\n[[{name}]]")
                    table(x, name + ".", lines)
    lines: list[str] = ["# Written by lab/up from the topology; edits are lost at the next lab/up."]
    table(doc, "", lines)
    return "\n".join(lines) + "\n"
