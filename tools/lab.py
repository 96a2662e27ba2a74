"""Multi-site labs on one machine (issue 18): ``lab/up NAME``, ``lab/down NAME``, ``lab/up --list``.

A topology file (``lab/topologies/NAME.toml``) names sites, each an array built on an example
configuration (its targets and LUN layout, maybe with extra LUNs), the links between sites with
their delay, loss and rate, and the pairs to form once the arrays run.  The lab is laid out as:

* each site a network namespace ``sanlab-NAME-SITE`` with ``eth0`` on the *host network*
  (``subnet``, a /24): its veth peer sits in a bridge of the root namespace, which holds the
  subnet's first address, so hosts in the root namespace reach every site's portal there;
* each link a veth pair straight between two site namespaces (``to-PEER`` at each end) on a /30 of
  ``link_subnet``, a range with no other route, so ``ip link set to-PEER down`` cuts exactly that
  link (replication traffic) while hosts keep their path; ``tc netem`` on both ends applies the
  link's one-way delay and loss (so the round trip is twice the delay);
* each array a ``sanlab serve`` started with ``ip netns exec``, its data directory, configuration
  (the example's, with the portal and remotes rewritten), log and pid file under
  ``/tmp/sanlab-lab/NAME/`` (``--dir``), remotes pointing at the peers' link addresses.

Where namespaces cannot be made (not root, or ``ip netns add`` fails) the same topology runs on
loopback addresses (``127.S.H.X`` for a subnet ``10.S.H.0/24``) with a warning that delays, loss
and link cuts are not available.  A kernel without ``sch_netem`` keeps the namespaces and puts a
user-space delay line (tools/delay_line.py) at each end of every delayed link, in the site's
namespace on 127.0.0.1, with the site's remote for that peer pointed at it: the replication
connections see the link's delay each way; loss and rates are then not applied (lab/up says so).

``lab/up`` starts from a fresh lab directory (a stopped lab's data is removed); ``lab/down`` stops
the arrays (SIGTERM, then SIGKILL after 15 s) and removes namespaces, veths and the bridge, keeps
the data for inspection, and may be run any number of times.

This module brings a lab up and down (network, delay lines, arrays, state, pairs) and holds the
``lab/up`` and ``lab/down`` commands; the topology file is read in ``lab_topology.py``, the plan
made from it (names, addresses, configurations) in ``lab_plan.py``, and the drills that run on a
lab are in ``lab_scenarios.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from sanlab.tools import mgmt
from sanlab.tools.admin import AdminError
from sanlab.tools.lab_plan import HTTP_PORT, LabPlan, LinkPlan, SitePlan, plan, remote_name, to_toml
from sanlab.tools.lab_topology import REPO, LabError, LinkSpec, list_topologies, load_topology, topology_path

DEFAULT_ROOT = Path("/tmp/sanlab-lab")
DELAY_LINE_PORT = 13260
"""First port of the delay lines (one per delayed link, on 127.0.0.1 of each end's namespace)."""
STOP_GRACE = 15.0
"""Seconds a SIGTERM'd array gets to shut down cleanly before SIGKILL."""
START_TIMEOUT = 30.0
PAIR_TIMEOUT = 120.0


# ---------------------------------------------------------------------------------------------
# Bringing it up and down


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a system command (ip, tc); LabError with its message when ``check`` and it fails."""
    cp = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and cp.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {(cp.stderr or cp.stdout).strip()}")
    return cp


def netns_unavailable() -> str:
    """Why network namespaces cannot be used here ('' when they can)."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "no ip command (apt-get install iproute2)"
    probe = f"sanlab-probe-{os.getpid()}"
    cp = sh("ip", "netns", "add", probe, check=False)
    if cp.returncode != 0:
        return f"ip netns add failed: {cp.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return ""


def netem_args(spec: LinkSpec) -> list[str]:
    """``tc qdisc`` arguments for the link's delay, loss and rate (one direction)."""
    args = ["netem", "delay", f"{spec.delay_ms:g}ms"]
    if spec.loss_percent:
        args += ["loss", f"{spec.loss_percent:g}%"]
    if spec.rate:
        args += ["rate", spec.rate]
    return args


def set_netem(lab: LabPlan, link: LinkPlan, spec: LinkSpec) -> str:
    """Apply ``spec``'s delay/loss/rate at both ends of ``link``; '' or why it could not be."""
    for site in (link.spec.a, link.spec.b):
        ns, dev = lab.sites[site].namespace, link.device(site)
        cp = sh("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", *netem_args(spec), check=False)
        if cp.returncode != 0:
            return cp.stderr.strip()
    return ""


def set_link(lab: LabPlan, a: str, b: str, up: bool) -> None:
    """Cut (``up=False``) or heal the link between sites a and b: its devices down/up at both ends."""
    if lab.mode != "netns":
        raise LabError("links can be cut only in network namespaces (this lab runs on loopback)")
    link = next((ln for ln in lab.links if {ln.spec.a, ln.spec.b} == {a, b}), None)
    if link is None:
        raise LabError(f"no link between {a} and {b}")
    for site in (a, b):
        sh("ip", "-n", lab.sites[site].namespace, "link", "set", link.device(site), "up" if up else "down")


def _network_up(lab: LabPlan) -> None:
    prefix = str(lab.topology.subnet.prefixlen)
    sh("ip", "link", "add", lab.bridge, "type", "bridge")
    sh("ip", "addr", "add", lab.bridge_address, "dev", lab.bridge)
    sh("ip", "link", "set", lab.bridge, "up")
    for s in lab.sites.values():
        sh("ip", "netns", "add", s.namespace)
        sh("ip", "-n", s.namespace, "link", "set", "lo", "up")
        sh("ip", "link", "add", s.host_veth, "type", "veth", "peer", "name", "eth0", "netns", s.namespace)
        sh("ip", "link", "set", s.host_veth, "master", lab.bridge)
        sh("ip", "link", "set", s.host_veth, "up")
        sh("ip", "-n", s.namespace, "addr", "add", f"{s.address}/{prefix}", "dev", "eth0")
        sh("ip", "-n", s.namespace, "link", "set", "eth0", "up")
    for ln in lab.links:
        na, nb = lab.sites[ln.spec.a].namespace, lab.sites[ln.spec.b].namespace
        sh("ip", "link", "add", ln.dev_a, "netns", na, "type", "veth", "peer", "name", ln.dev_b, "netns", nb)
        for ns, dev, addr in ((na, ln.dev_a, ln.addr_a), (nb, ln.dev_b, ln.addr_b)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/{ln.prefix}", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        if why := set_netem(lab, ln, ln.spec):
            lab.delay_lines = True
            msg = (f"WARNING: tc netem is unavailable ({why}; this kernel lacks sch_netem): each delayed link's "
                   "replication connections go through a user-space delay line in the sites' namespaces "
                   "(the link's delay each way); loss and rates are NOT applied; links can still be cut")
            if msg not in lab.warnings:
                lab.warnings.append(msg)
    if lab.delay_lines:
        route_through_delay_lines(lab)


def _network_down(lab: LabPlan) -> list[str]:
    """Remove what ``_network_up`` made (whatever of it exists); what was removed."""
    removed = []
    present = sh("ip", "netns", "list", check=False).stdout.split()
    for s in lab.sites.values():
        if s.namespace in present:
            sh("ip", "netns", "del", s.namespace)  # its veth ends, and so their peers, go with it
            removed.append(f"namespace {s.namespace}")
        if sh("ip", "link", "show", s.host_veth, check=False).returncode == 0:
            sh("ip", "link", "del", s.host_veth, check=False)
            removed.append(f"veth {s.host_veth}")
    if sh("ip", "link", "show", lab.bridge, check=False).returncode == 0:
        sh("ip", "link", "del", lab.bridge)
        removed.append(f"bridge {lab.bridge}")
    return removed


def delay_line_port(lab: LabPlan, link: LinkPlan) -> int:
    """The port a link's delay lines listen on (127.0.0.1 of each end's own namespace)."""
    return DELAY_LINE_PORT + lab.links.index(link)


def delay_line_pid_file(lab: LabPlan, site: str, peer: str) -> Path:
    """The pid file of ``site``'s delay line toward ``peer``."""
    return lab.root / f"delay-{site}-{peer}.pid"


def route_through_delay_lines(lab: LabPlan) -> None:
    """Point each site's remote over a delayed link at that link's delay line in its namespace
    (the configurations only; :func:`start_delay_lines` starts them)."""
    for ln in lab.links:
        if ln.spec.delay_ms <= 0:
            continue
        for site, peer in ((ln.spec.a, ln.spec.b), (ln.spec.b, ln.spec.a)):
            for r in lab.sites[site].config.get("remotes", []):
                if r["target"] == lab.sites[peer].target:
                    r["portals"] = [f"127.0.0.1:{delay_line_port(lab, ln)}"]


def start_delay_lines(lab: LabPlan) -> list[str]:
    """A delay line per end of each delayed link, in the end's namespace, forwarding to the peer's
    link address (tools/delay_line.py); what was started."""
    started = []
    for ln in lab.links:
        if ln.spec.delay_ms <= 0:
            continue
        for site, peer in ((ln.spec.a, ln.spec.b), (ln.spec.b, ln.spec.a)):
            s = lab.sites[site]
            cmd = ["ip", "netns", "exec", s.namespace, sys.executable, "-m", "sanlab.tools.delay_line",
                   "--listen", f"127.0.0.1:{delay_line_port(lab, ln)}",
                   "--to", f"{ln.address_of(peer)}:{lab.topology.port}", "--delay-ms", f"{ln.spec.delay_ms:g}"]
            with open(lab.root / f"delay-{site}-{peer}.log", "ab") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            delay_line_pid_file(lab, site, peer).write_text(f"{proc.pid}\n")
            started.append(f"site {site}: delay line to {peer} ({ln.spec.delay_ms:g} ms each way) pid {proc.pid}")
    return started


def stop_delay_lines(lab: LabPlan) -> list[str]:
    """Stop every delay line lab/up started (their pid files); what was stopped."""
    done = []
    for f in sorted(lab.root.glob("delay-*.pid")) if lab.root.exists() else []:
        try:
            pid = int(f.read_text().split()[0])
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            f.unlink(missing_ok=True)
            continue
        if b"sanlab.tools.delay_line" in argv and alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5.0
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
            done.append(f"delay line pid {pid} stopped ({f.stem})")
        f.unlink(missing_ok=True)
    return done


def start_site(lab: LabPlan, s: SitePlan) -> int:
    """Start site ``s``'s array (in its namespace) and wait until its portal answers; its pid."""
    s.data_dir.mkdir(parents=True, exist_ok=True)
    s.config_file.write_text(to_toml(s.config))
    # Every lab array serves its status page and captures its iSCSI connections (lab/README.md).
    cmd = [sys.executable, "-m", "sanlab.tools.cli", "serve", "--config", str(s.config_file),
           "--data-dir", str(s.data_dir), "--log-format", "json", "--http", f"{s.address}:{HTTP_PORT}",
           "--capture", str(s.capture_file)]
    if s.namespace:
        cmd = ["ip", "netns", "exec", s.namespace, *cmd]  # ip execs the command: the pid is the array's
    with open(s.log_file, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=s.dir, start_new_session=True)
    s.pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            tail = s.log_file.read_text(errors="replace")[-2000:]
            raise LabError(f"site {s.name}: sanlab serve exited with {proc.returncode}; {s.log_file}:\n{tail}")
        try:
            with socket.create_connection((s.address, lab.topology.port), timeout=0.5):
                return proc.pid
        except OSError:
            if time.monotonic() > deadline:
                raise LabError(f"site {s.name}: no answer at {lab.portal(s.name)} after {START_TIMEOUT:g} s") from None
            time.sleep(0.1)


def alive(pid: int) -> bool:
    """Process ``pid`` runs (exists and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a reaped child of ours may linger as a zombie: not running
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def _is_our_array(pid: int, s: SitePlan) -> bool:
    """The pid file's process is still this site's ``sanlab serve`` (not a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in argv and str(s.data_dir).encode() in argv


def stop_site(s: SitePlan, sig: int = signal.SIGTERM) -> str:
    """Stop site ``s``'s array: ``sig`` (SIGTERM: then SIGKILL after STOP_GRACE); what happened."""
    try:
        pid = int(s.pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return ""
    if not alive(pid) or not _is_our_array(pid, s):
        s.pid_file.unlink(missing_ok=True)
        return ""
    os.kill(pid, sig)
    deadline = time.monotonic() + (STOP_GRACE if sig == signal.SIGTERM else 5.0)
    how = "stopped" if sig == signal.SIGTERM else "killed"
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            how = "killed after SIGTERM timed out"
            deadline += 5.0
        time.sleep(0.05)
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child (scenarios restart arrays)
        except ChildProcessError:
            pass
    s.pid_file.unlink(missing_ok=True)
    return f"site {s.name}: array pid {pid} {how}"


def site_pid(s: SitePlan) -> int | None:
    """The pid of the site's running array, or None."""
    try:
        pid = int(s.pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if alive(pid) and _is_our_array(pid, s) else None


def state_file(root: Path, name: str) -> Path:
    """Where lab/up records a lab (topology file, mode, warnings, refused pairs)."""
    return root / name / "lab.json"


def save_state(lab: LabPlan) -> None:
    """Record ``lab`` for lab/down and lab/scenario."""
    state = {"topology": str(lab.topology.path), "mode": lab.mode, "warnings": lab.warnings, "notes": lab.notes,
             "delay_lines": lab.delay_lines}
    state_file(lab.root.parent, lab.topology.name).write_text(json.dumps(state, indent=2) + "\n")


def load_lab(name: str, root: Path) -> LabPlan:
    """The plan of lab ``name`` as ``lab/up`` made it (its state file), for down and scenarios."""
    sf = state_file(root, name)
    try:
        state = json.loads(sf.read_text())
    except FileNotFoundError:
        raise LabError(f"lab {name} is not up (no {sf}): run lab/up {name}") from None
    lab = plan(load_topology(Path(state["topology"])), root, state["mode"])
    lab.warnings = list(state.get("warnings", []))
    lab.notes = list(state.get("notes", []))
    if state.get("delay_lines"):
        lab.delay_lines = True
        route_through_delay_lines(lab)  # a scenario's restarted array keeps its delayed remotes
    return lab


def op(site: SitePlan, operation: str, /, **args: Any) -> Any:
    """One management operation at ``site``'s array (its socket, as ``sanlab`` sends it); the
    result, or LabError with the array's answer."""
    try:
        reply = mgmt.request(site.data_dir, operation, args)
    except AdminError as exc:
        raise LabError(f"site {site.name}: {exc}") from None
    if not reply.get("ok"):
        raise LabError(f"site {site.name}: {operation.replace('_', ' ')}: {reply.get('error')}")
    return reply["result"]


def pair_row(site: SitePlan, name: str) -> dict[str, Any]:
    """``sanlab pair display NAME --json``'s row at ``site``."""
    return dict(op(site, "pair_display", name=name)[0])


def wait_state(site: SitePlan, pair: str, state: str, timeout: float = PAIR_TIMEOUT) -> float:
    """Wait until ``pair`` is in ``state`` at ``site`` (``sanlab pair wait``); seconds it took."""
    t0 = time.monotonic()
    while True:
        try:
            now = pair_row(site, pair)["state"]
        except LabError:
            now = "SMPL"
        if now == state:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise LabError(f"site {site.name}: pair {pair} still {now} after {timeout:g} s (waited for {state})")
        time.sleep(0.2)


def create_pairs(lab: LabPlan, say: Any) -> list[str]:
    """Journals and pairs of the topology, each waited into PAIR; notes for pairs that need a
    feature this build refuses (e.g. a cascade)."""
    notes: list[str] = []
    for p in lab.topology.pairs:
        ps, ss = lab.sites[p.pvol[0]], lab.sites[p.svol[0]]
        args: dict[str, Any] = {"name": p.name, "pvol": lab.volume(p.pvol), "remote": remote_name(lab, ps.name, ss.name),
                                "svol": lab.volume(p.svol), "fence": p.fence}
        if p.group:
            args["group"] = p.group
        if p.mode == "async":
            for site, journal in ((ps, p.journal), (ss, p.remote_journal)):
                if not any(j.get("name") == journal for j in op(site, "journal_display")):
                    op(site, "journal_create", name=journal, size=p.journal_size, threshold=p.threshold,
                       full_timeout=p.full_timeout)
            args.update(mode="async", journal=p.journal, remote_journal=p.remote_journal)
        t0 = time.monotonic()
        refused = ""
        while True:  # the peer's portal may still be coming up
            try:
                op(ps, "pair_create", **args)
                break
            except LabError as exc:
                if "reachable" in str(exc) and time.monotonic() - t0 < START_TIMEOUT:
                    time.sleep(1.0)
                    continue
                if not p.requires:
                    raise
                refused = str(exc)
                break
        if refused:
            note = (f"NOTE: pair {p.name} ({p.pvol[0]}:{p.pvol[1]} -> {p.svol[0]}:{p.svol[1]} {p.mode}) needs the "
                    f"{p.requires} work, which this build refuses ({refused}); the rest of the lab runs without it")
            notes.append(note)
            say(note)
            continue
        took = wait_state(ps, p.name, "PAIR")
        say(f"pair {p.name}: {p.pvol[0]}:{p.pvol[1]} -> {p.svol[0]}:{p.svol[1]} {p.mode} in PAIR "
            f"({time.monotonic() - t0:.1f} s, initial copy {took:.1f} s)")
    return notes


def up(name: str, root: Path, loopback: bool = False, say: Any = print) -> LabPlan:
    """``lab/up NAME``: network, arrays, pairs; prints how to reach each array."""
    topo = load_topology(topology_path(name))
    why = "--loopback given" if loopback else netns_unavailable()
    lab = plan(topo, root, "loopback" if why else "netns")
    if why:
        lab.warnings.append(f"WARNING: network namespaces unavailable ({why}): the sites run on loopback "
                            "addresses; link delays and loss are NOT applied and links cannot be cut")
    if any(site_pid(s) for s in lab.sites.values()):
        raise LabError(f"lab {topo.name} is already up ({lab.root}): lab/down {topo.name} first")
    if lab.mode == "netns":
        taken = set(sh("ip", "netns", "list").stdout.split()) & {s.namespace for s in lab.sites.values()}
        if taken or sh("ip", "link", "show", lab.bridge, check=False).returncode == 0:
            # Another lab of this topology (maybe with another --dir) or one never taken down.
            raise LabError(f"lab {topo.name}'s network exists already ({', '.join(sorted(taken)) or lab.bridge}): "
                           f"lab/down {topo.name} [--dir DIR] first")
    if lab.root.exists():
        shutil.rmtree(lab.root)  # a fresh lab each time; lab/down keeps the data until then
    for s in lab.sites.values():
        s.dir.mkdir(parents=True)
    save_state(lab)
    try:
        if lab.mode == "netns":
            _network_up(lab)
        for w in lab.warnings:
            say(w)
        if lab.delay_lines:
            for m in start_delay_lines(lab):
                say(m)
        for s in lab.sites.values():
            pid = start_site(lab, s)
            say(f"site {s.name}: sanlab serve pid {pid} at {lab.portal(s.name)}"
                + (f" in namespace {s.namespace}" if s.namespace else ""))
        save_state(lab)
        lab.notes = create_pairs(lab, say)
        save_state(lab)
    except BaseException:
        down(topo.name, root, say=lambda _m: None)
        raise
    say(describe(lab))
    return lab


def describe(lab: LabPlan) -> str:
    """How to reach each array of a running lab."""
    topo = lab.topology
    cli = f"{REPO}/.venv/bin/sanlab"
    out = [f"\nlab {topo.name} is up: {topo.description}",
           f"mode: {'network namespaces' if lab.mode == 'netns' else 'loopback (no delays)'}; state in {lab.root}"]
    for s in lab.sites.values():
        out += [f"\nsite {s.name}: portal {lab.portal(s.name)}  target {s.target}",
                f"  data dir {s.data_dir}   log {s.log_file}" + (f"   namespace {s.namespace}" if s.namespace else ""),
                f"  {cli} pair display --data-dir {s.data_dir}",
                f"  {cli} show --data-dir {s.data_dir}",
                f"  iscsi-ls -s iscsi://{lab.portal(s.name)}",
                f"  status page http://{s.address}:{HTTP_PORT}/  (whole lab: /topology; Prometheus: /metrics)",
                f"  capture {s.capture_file}  (complete once the array stops: "
                f"tshark -r it -d tcp.port=={lab.topology.port},iscsi)"]
    for ln in lab.links:
        sp = ln.spec
        out.append(f"\nlink {sp.a}-{sp.b}: {sp.a}/{ln.dev_a} {ln.addr_a} <-> {sp.b}/{ln.dev_b} {ln.addr_b}, "
                   f"delay {sp.delay_ms:g} ms each way, loss {sp.loss_percent:g}%" + (f", rate {sp.rate}" if sp.rate else "")
                   + (" (delay by user-space delay lines: no sch_netem; loss and rate not applied)"
                      if lab.delay_lines and sp.delay_ms > 0 else ""))
    out.append(f"\nscenarios: lab/scenario --list;  take it down: lab/down {topo.name}")
    return "\n".join(out)


def down(name: str, root: Path, say: Any = print) -> list[str]:
    """``lab/down NAME``: stop the arrays, remove namespaces, veths and bridge; idempotent."""
    path = topology_path(name)
    name = path.stem
    sf = state_file(root, name)
    if sf.exists():
        lab = load_lab(name, root)
    else:
        topo = load_topology(path)
        lab = plan(topo, root, "netns" if os.geteuid() == 0 else "loopback")
    done = [m for s in lab.sites.values() if (m := stop_site(s))]
    done += stop_delay_lines(lab)
    if os.geteuid() == 0 and shutil.which("ip"):
        done += _network_down(lab)
    for m in done:
        say(m)
    say(f"lab {name} is down" + (f"; data kept in {lab.root}" if lab.root.exists() else ""))
    return done


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sanlab.tools.lab up|down`` (lab/up and lab/down call it)."""
    p = argparse.ArgumentParser(prog="lab", description="multi-site sanlab labs on one machine")
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="bring up topology NAME (lab/topologies/NAME.toml)")
    u.add_argument("name", metavar="NAME", nargs="?")
    u.add_argument("--list", action="store_true", help="list the topologies")
    u.add_argument("--loopback", action="store_true", help="run on 127.x addresses even where namespaces work")
    d = sub.add_parser("down", help="take lab NAME down")
    d.add_argument("name", metavar="NAME")
    for q in (u, d):
        q.add_argument("--dir", type=Path, default=DEFAULT_ROOT, help=f"where labs live (default {DEFAULT_ROOT})")
    args = p.parse_args(argv)
    try:
        if args.cmd == "up":
            if args.list:
                for t in list_topologies():
                    print(f"{t.name:<14} {t.description}")
                return 0
            if not args.name:
                p.error("up: give a topology NAME (lab/up --list lists them)")
            up(args.name, args.dir, args.loopback)
        else:
            down(args.name, args.dir)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
