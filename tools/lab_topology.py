"""Topology files of the multi-site lab (``lab/topologies/NAME.toml``, issue 18), parsed and checked.

A topology names its sites (each an array built on an example configuration, maybe with extra
LUNs), the links between them with their one-way delay, loss and rate, and the pairs lab/up forms
once the arrays run.  :func:`load_topology` turns a file into a :class:`Topology`, and every error
is a :class:`LabError` naming the file and the key.  The plan made from a topology is in
``lab_plan.py``; bringing it up and down in ``lab.py``.
"""
from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TOPOLOGIES = REPO / "lab" / "topologies"


class LabError(Exception):
    """A topology or lab problem, said in the user's terms (the file, the key, the reason)."""


@dataclass(frozen=True, slots=True)
class SiteSpec:
    """A site of a topology file: its name and the example configuration its array is built on."""
    name: str
    config: Path
    luns: tuple[dict[str, Any], ...] = ()
    """LUNs added to the example's first target, or replacing its LUN of that number (e.g. a small LUN
    for the journal-full drill)."""


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """A link between two sites: one-way delay, loss and rate (``tc netem`` at both ends)."""
    a: str
    b: str
    delay_ms: float = 0.0
    loss_percent: float = 0.0
    rate: str = ""
    """netem rate (e.g. ``100mbit``); empty: unlimited."""


@dataclass(frozen=True, slots=True)
class PairSpec:
    """A pair lab/up forms once the arrays run (``SITE:LUN`` volumes, journals for async)."""
    name: str
    pvol: tuple[str, int]
    svol: tuple[str, int]
    mode: str = "sync"
    fence: str = "data"
    group: str = ""
    journal: str = ""
    remote_journal: str = ""
    journal_size: str = "64MiB"
    threshold: int = 80
    full_timeout: float = 60.0
    requires: str = ""
    """A feature the pair needs that main may not have yet (``cascade``): a refusal is a warning."""


@dataclass(frozen=True, slots=True)
class Topology:
    """A parsed, checked topology file (lab/topologies/NAME.toml)."""
    name: str
    path: Path
    description: str
    subnet: ipaddress.IPv4Network
    link_subnet: ipaddress.IPv4Network
    port: int
    sites: tuple[SiteSpec, ...]
    links: tuple[LinkSpec, ...]
    pairs: tuple[PairSpec, ...]

    def site(self, name: str) -> SiteSpec:
        """The site called ``name``."""
        for s in self.sites:
            if s.name == name:
                return s
        raise LabError(f"{self.path}: no site {name!r} (sites: {', '.join(s.name for s in self.sites)})")

    def link(self, x: str, y: str) -> LinkSpec | None:
        """The link between sites x and y, if any."""
        for ln in self.links:
            if {ln.a, ln.b} == {x, y}:
                return ln
        return None


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = None) -> Any:
    if key not in table:
        if default is None:
            raise LabError(f"{where}: missing key {key!r}")
        return default
    value = table[key]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise LabError(f"{where}: {key} = {value!r} is not a {getattr(kind, '__name__', kind)}")
    return value


def _volume(text: str, sites: set[str], where: str) -> tuple[str, int]:
    site, _, lun = text.partition(":")
    if site not in sites or not lun.isdigit():
        raise LabError(f"{where}: {text!r} is not SITE:LUN with a site of this topology ({', '.join(sorted(sites))})")
    return site, int(lun)


def load_topology(path: Path) -> Topology:
    """Parse and check a topology file; every error names the file and the key."""
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise LabError(f"no topology file {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LabError(f"{path}: {exc}") from None
    known = {"description", "subnet", "link_subnet", "port", "sites", "links", "pairs"}
    if unknown := set(doc) - known:
        raise LabError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    nets = []
    for key, default in (("subnet", "10.77.0.0/24"), ("link_subnet", "10.78.0.0/24")):
        text = _get(doc, key, str, str(path), default)
        try:
            net = ipaddress.IPv4Network(text)
        except ValueError as exc:
            raise LabError(f"{path}: {key} = {text!r}: {exc}") from None
        if net.prefixlen > 24:
            raise LabError(f"{path}: {key} = {text!r} must be a /24 or larger")
        nets.append(net)
    if nets[0].overlaps(nets[1]):
        raise LabError(f"{path}: subnet and link_subnet overlap (a cut link would be routed around)")
    sites: list[SiteSpec] = []
    for i, t in enumerate(_get(doc, "sites", list, str(path))):
        where = f"{path}: sites[{i}]"
        name = _get(t, "name", str, where)
        if not name.isalnum() or not name.islower() or len(name) > 12:
            raise LabError(f"{where}: name {name!r} must be 1-12 lower-case letters or digits")
        if any(s.name == name for s in sites):
            raise LabError(f"{where}: site {name!r} declared twice")
        cfg = (path.parent / _get(t, "config", str, where)).resolve()
        if not cfg.is_file():
            raise LabError(f"{where}: config {cfg} does not exist")
        luns = tuple(dict(x) for x in _get(t, "luns", list, where, []))
        sites.append(SiteSpec(name, cfg, luns))
    if not sites:
        raise LabError(f"{path}: no sites")
    names = {s.name for s in sites}
    links: list[LinkSpec] = []
    for i, t in enumerate(_get(doc, "links", list, str(path), [])):
        where = f"{path}: links[{i}]"
        between = _get(t, "between", list, where)
        if len(between) != 2 or not set(between) <= names or between[0] == between[1]:
            raise LabError(f"{where}: between = {between!r} must name two different sites")
        delay = float(_get(t, "delay_ms", (int, float), where, 0.0))
        loss = float(_get(t, "loss_percent", (int, float), where, 0.0))
        if delay < 0 or not 0 <= loss <= 100:
            raise LabError(f"{where}: delay_ms must be >= 0 and loss_percent 0-100")
        links.append(LinkSpec(between[0], between[1], delay, loss, _get(t, "rate", str, where, "")))
    if len(links) > nets[1].num_addresses // 4:
        raise LabError(f"{path}: more links than /30s in link_subnet")
    pairs: list[PairSpec] = []
    for i, t in enumerate(_get(doc, "pairs", list, str(path), [])):
        where = f"{path}: pairs[{i}]"
        pvol = _volume(_get(t, "pvol", str, where), names, where)
        svol = _volume(_get(t, "svol", str, where), names, where)
        mode = _get(t, "mode", str, where, "sync")
        if mode not in ("sync", "async"):
            raise LabError(f"{where}: mode = {mode!r} must be sync or async")
        if not any({ln.a, ln.b} == {pvol[0], svol[0]} for ln in links):
            raise LabError(f"{where}: no link between {pvol[0]} and {svol[0]}")
        journal = _get(t, "journal", str, where, "")
        remote_journal = _get(t, "remote_journal", str, where, "")
        if mode == "async" and not (journal and remote_journal):
            raise LabError(f"{where}: an async pair needs journal and remote_journal")
        pairs.append(PairSpec(
            _get(t, "name", str, where), pvol, svol, mode, _get(t, "fence", str, where, "data"),
            _get(t, "group", str, where, ""), journal, remote_journal, _get(t, "journal_size", str, where, "64MiB"),
            int(_get(t, "threshold", int, where, 80)), float(_get(t, "full_timeout", (int, float), where, 60.0)),
            _get(t, "requires", str, where, "")))
    return Topology(path.stem, path, _get(doc, "description", str, str(path), ""), nets[0], nets[1],
                    int(_get(doc, "port", int, str(path), 3260)), tuple(sites), tuple(links), tuple(pairs))


def topology_path(name: str) -> Path:
    """A name of lab/topologies/ or a path to a topology file."""
    if "/" in name or name.endswith(".toml"):
        return Path(name)
    return TOPOLOGIES / f"{name}.toml"


def list_topologies() -> list[Topology]:
    """Every topology of lab/topologies/, parsed."""
    return [load_topology(p) for p in sorted(TOPOLOGIES.glob("*.toml"))]
