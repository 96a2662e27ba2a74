"""Drills on a running lab (issue 18): ``lab/scenario SCENARIO TOPOLOGY``, each ending with a report.

* ``failover-drill``: a host writes a numbered stream at the P-VOL's site through our initiator;
  that array is killed (kill -9) mid-stream; ``sanlab pair takeover`` at the S-VOL's site; the host
  checks there that every acknowledged write is present (RPO in writes) and writes on; the dead
  array is started again; failback by ``pair swap`` at the S site then ``pair swap`` back, each
  copying by bitmap; both volumes are read through iSCSI and compared.
* ``link-cut``: the link under a sync pair is cut (its veths set down in both namespaces); the
  host's next write finds the pair suspended (fence ``data``: refused, then ``pair takeover`` at
  the P site lifts the fence; fence ``never``: acknowledged); the host writes on; the link is
  healed, ``pair resync`` copies the difference by bitmap (bytes copied against the volume size),
  and both volumes are read and compared.
* ``journal-full``: the link under an async pair with a small journal is cut; the host writes
  until the pair goes PFUL, then PFUS after the journal's full timeout, and writes more (into the
  bitmap); the link is healed, ``pair resync`` copies the difference, the secondary drains, both
  volumes are read and compared; the report gives the RPO the primary showed while cut.

Each step is carried out as ``sanlab`` would (the same management operations; the commands to type
are printed with each step) and timed.  The report ends ``verified: yes`` only when the bytes read
from both sites are equal and every acknowledged write is where it must be; the exit status is 0
then, 1 otherwise.  The lab is left as it was found (pairs back in PAIR, the same P-VOL site).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from sanlab.target.errors import IscsiError
from sanlab.target.initiator import InitiatorConfig, IscsiSession
from sanlab.tools.logging import setup_logging
from sanlab.tools.lab import DEFAULT_ROOT, load_lab, op, pair_row, set_link, start_site, stop_site, wait_state
from sanlab.tools.lab_plan import LabPlan, SitePlan
from sanlab.tools.lab_topology import REPO, LabError, PairSpec

T = TypeVar("T")
HOST_IQN = "iqn.1994-05.com.example:labhost"
BLOCK = 512
TRACK = 64 << 10
STREAM_LBA = 2048
"""The numbered stream starts at this block (1 MiB in): write i goes to block STREAM_LBA + i."""
MAGIC = b"SLABSTRM"


def stream_block(i: int, site: str) -> bytes:
    """Write ``i``'s block: magic, number, the site it was written at, repeated to 512 bytes."""
    unit = MAGIC + i.to_bytes(8, "big") + site.encode().ljust(16, b".")
    return (unit * (BLOCK // len(unit) + 1))[:BLOCK]


@dataclass(slots=True)
class Report:
    """What a scenario did (timed steps), its figures and its checks."""
    scenario: str
    lab: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def step(self, what: str, seconds: float, command: str = "") -> None:
        """Record and print one step, its duration and the command a user would type."""
        self.steps.append({"at": round(time.monotonic() - self.t0, 2), "seconds": round(seconds, 2), "step": what,
                           "command": command})
        print(f"[{time.monotonic() - self.t0:7.2f} s] {what} ({seconds:.2f} s)" + (f"\n            $ {command}" if command else ""),
              flush=True)

    def check(self, what: str, ok: bool) -> None:
        """Record and print one check."""
        self.checks.append((what, ok))
        print(f"            check: {what}: {'ok' if ok else 'FAILED'}", flush=True)

    @property
    def verified(self) -> bool:
        """Every check passed (and there was at least one)."""
        return bool(self.checks) and all(ok for _, ok in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``--json``)."""
        return {"scenario": self.scenario, "lab": self.lab, "verified": self.verified, "steps": self.steps,
                "facts": self.facts, "checks": [{"check": c, "ok": ok} for c, ok in self.checks]}

    def text(self) -> str:
        """The report printed at the end of a scenario."""
        out = [f"\n===== report: {self.scenario} on {self.lab} =====", "what was done (time into the drill, duration):"]
        out += [f"  {s['at']:7.2f} s  {s['seconds']:6.2f} s  {s['step']}" for s in self.steps]
        out.append("figures:")
        out += [f"  {k}: {v}" for k, v in self.facts.items()]
        out.append("checks:")
        out += [f"  [{'ok' if ok else 'FAILED'}] {c}" for c, ok in self.checks]
        out.append(f"verified: {'yes' if self.verified else 'NO'}")
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# The host: our initiator in the root namespace


def _config(timeout: float = 10.0) -> InitiatorConfig:
    # No reconnect: a host write to a dead array must fail, not wait for it to come back.
    return InitiatorConfig(initiator_name=HOST_IQN, command_timeout=timeout, reconnect=False)


def _portal(lab: LabPlan, site: str) -> tuple[str, int]:
    return lab.sites[site].address, lab.topology.port


def host_stream(lab: LabPlan, site: str, lun: int, first: int, count: int, stop: threading.Event | None = None,
                acked: list[int] | None = None) -> list[int]:
    """Write stream numbers first..first+count-1 at ``site`` (QD1, each acknowledged before the next),
    until done, ``stop`` is set or the array stops answering; the numbers acknowledged (appended to
    ``acked`` as they come, when given)."""
    acked = [] if acked is None else acked
    host, port = _portal(lab, site)

    async def go() -> None:
        async with IscsiSession(host, port, lab.sites[site].target, _config(5.0)) as s:
            await s.clear_unit_attentions(lun)
            for i in range(first, first + count):
                if stop is not None and stop.is_set():
                    return
                await s.write16(lun, STREAM_LBA + i, stream_block(i, site), BLOCK)
                acked.append(i)
    try:
        asyncio.run(go())
    except (IscsiError, OSError, TimeoutError) as exc:
        # The array died under the host (the drill's kill -9) or refused: acked says how far it got.
        print(f"            host at {site}: stream stopped after {len(acked)} writes: {exc!r}", flush=True)
    return acked


def host_write(lab: LabPlan, site: str, lun: int, lba: int, data: bytes) -> tuple[int, str]:
    """One WRITE(16) by the host: (SCSI status, 'key/asc/ascq' or '')."""
    host, port = _portal(lab, site)

    async def go() -> tuple[int, str]:
        async with IscsiSession(host, port, lab.sites[site].target, _config(30.0)) as s:
            await s.clear_unit_attentions(lun)
            cdb = bytes([0x8A, 0]) + lba.to_bytes(8, "big") + (len(data) // BLOCK).to_bytes(4, "big") + b"\0\0"
            r = await s.execute(lun, cdb, data)
            sense = f"{r.sense.key:x}/{r.sense.asc:02x}/{r.sense.ascq:02x}" if r.sense else ""
            return int(r.status), sense
    return asyncio.run(go())


def host_read(lab: LabPlan, site: str, lun: int) -> bytes:
    """The whole LUN as the host reads it at ``site`` (1 MiB READ(16)s)."""
    host, port = _portal(lab, site)

    async def go() -> bytes:
        async with IscsiSession(host, port, lab.sites[site].target, _config(30.0)) as s:
            await s.clear_unit_attentions(lun)
            blocks, bs = await s.read_capacity16(lun)
            step = (1 << 20) // bs
            out = bytearray()
            for lba in range(0, blocks, step):
                out += await s.read16(lun, lba, min(step, blocks - lba), bs)
            return bytes(out)
    return asyncio.run(go())


def present(data: bytes, i: int, site: str) -> bool:
    """Stream write ``i`` made at ``site`` is in ``data`` (a whole volume)."""
    off = (STREAM_LBA + i) * BLOCK
    return data[off:off + BLOCK] == stream_block(i, site)


# ---------------------------------------------------------------------------------------------
# Steps shared by the scenarios


def cli_text(site: SitePlan, *words: str) -> str:
    """The ``sanlab`` command line that does the same as a step, for the report."""
    return f"{REPO}/.venv/bin/sanlab {' '.join(words)} --data-dir {site.data_dir}"


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and the seconds it took."""
    t = time.monotonic()
    result = fn()
    return result, time.monotonic() - t


def sanlab_cli(site: SitePlan, *words: str) -> subprocess.CompletedProcess[str]:
    """The ``sanlab`` command itself, for the steps whose exit codes are the contract (takeover)."""
    return subprocess.run([sys.executable, "-m", "sanlab.tools.cli", *words, "--data-dir", str(site.data_dir)],
                          capture_output=True, text=True, timeout=180)


def retry_op(site: SitePlan, operation: str, timeout: float = 60.0, **args: Any) -> Any:
    """An operation that needs the peer, tried again while the healed link logs in again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return op(site, operation, **args)
        except LabError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def compare(report: Report, lab: LabPlan, x: tuple[str, int], y: tuple[str, int], settle: float = 0.0) -> bytes:
    """Read both volumes through iSCSI (again while they differ, up to ``settle`` seconds: an async
    secondary restoring) and record whether they are equal; x's bytes."""
    deadline = time.monotonic() + settle
    while True:
        (a, b), took = timed(lambda: (host_read(lab, *x), host_read(lab, *y)))
        if a == b or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    report.step(f"host read {len(a) >> 20} MiB from {x[0]}:{x[1]} and {y[0]}:{y[1]}", took)
    ha, hb = hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()
    report.facts[f"sha256 {x[0]}:{x[1]}"] = ha
    report.facts[f"sha256 {y[0]}:{y[1]}"] = hb
    report.facts["volume bytes"] = len(a)
    report.check(f"the bytes read at {x[0]} and {y[0]} are equal ({len(a)} bytes)", a == b)
    return a


def find_pair(lab: LabPlan, mode: str) -> PairSpec:
    """The lab's first pair of ``mode`` that lab/up formed."""
    for p in lab.topology.pairs:
        if p.mode != mode:
            continue
        try:
            pair_row(lab.sites[p.pvol[0]], p.name)
        except LabError:
            continue
        return p
    raise LabError(f"lab {lab.topology.name} has no {mode} pair running (lab/up {lab.topology.name} forms them)")


def restore_roles(report: Report, lab: LabPlan, p: PairSpec) -> None:
    """Put ``p`` back with its P-VOL at the topology's P site (a drill that swapped it)."""
    ps = lab.sites[p.pvol[0]]
    if pair_row(ps, p.name)["role"] != "P-VOL":
        _, took = timed(lambda: op(ps, "pair_swap", name=p.name, force=False))
        report.step(f"swap back at {ps.name}", took, cli_text(ps, "pair", "swap", p.name))
    wait_state(ps, p.name, "PAIR")


# ---------------------------------------------------------------------------------------------
# The scenarios


def failover_drill(lab: LabPlan, report: Report) -> None:
    """kill -9 the P-VOL's array under a host stream, takeover, failback, verify (module docstring)."""
    p = find_pair(lab, "sync")
    a, b = p.pvol[0], p.svol[0]
    sa, sb = lab.sites[a], lab.sites[b]
    lun_a, lun_b = p.pvol[1], p.svol[1]
    report.facts["pair"] = f"{p.name}: {a}:{lun_a} -> {b}:{lun_b} sync, fence {p.fence}"
    # 1. The host writes a numbered stream at A; A is killed under it.
    stop = threading.Event()
    acked: list[int] = []
    writer = threading.Thread(target=host_stream, args=(lab, a, lun_a, 1, 100000, stop, acked))
    t = time.monotonic()
    writer.start()
    while len(acked) < 300 and writer.is_alive() and time.monotonic() - t < 30:
        time.sleep(0.02)
    _, took_kill = timed(lambda: stop_site(sa, signal.SIGKILL))
    writer.join(60)
    stop.set()
    report.step(f"host wrote a numbered stream at {a} (QD1): {len(acked)} writes acknowledged; "
                f"{a}'s array killed (kill -9) mid-stream", time.monotonic() - t, f"kill -9 <pid of {sa.pid_file}>")
    report.facts["writes acknowledged at A before the kill"] = len(acked)
    if not acked:
        report.check("the host got writes acknowledged before the kill", False)
        return
    # 2. Takeover at B.
    cp, took = timed(lambda: sanlab_cli(sb, "pair", "takeover", p.name))
    report.step(f"takeover at {b}: exit {cp.returncode} (2 = S-VOL takeover)", took, cli_text(sb, "pair", "takeover", p.name))
    report.check(f"pair takeover at {b} exits 2 (S-VOL takeover)", cp.returncode == 2)
    report.facts["takeover seconds"] = round(took, 2)
    # 3. The host verifies at B: every acknowledged write is there.
    data, took = timed(lambda: host_read(lab, b, lun_b))
    missing = [i for i in acked if not present(data, i, a)]
    inflight = present(data, acked[-1] + 1, a)
    report.step(f"host read the stream back at {b}: {len(acked) - len(missing)}/{len(acked)} acknowledged writes "
                f"present; the write in flight at the kill {'is' if inflight else 'is not'} there", took)
    report.facts["RPO (acknowledged writes lost)"] = len(missing)
    report.check(f"every write acknowledged at {a} is at {b} (RPO 0 for a sync pair)", not missing)
    # 4. The host goes on at B.
    more, took = timed(lambda: host_stream(lab, b, lun_b, 50000, 200))
    report.step(f"host wrote {len(more)} more writes at {b} (now serving, SSWS)", took)
    report.check(f"{b} takes host writes after the takeover", len(more) == 200)
    # 5. A comes back, is refused by B as the old primary, and failback runs by bitmap.
    _, took = timed(lambda: start_site(lab, sa))
    report.step(f"{a}'s array started again", took, f"ip netns exec {sa.namespace} sanlab serve --config "
                f"{sa.config_file} --data-dir {sa.data_dir}" if sa.namespace else "sanlab serve ...")
    _, took = timed(lambda: wait_state(sa, p.name, "PSUE", 60))
    report.step(f"{a} came back still a P-VOL: {b} refused its resend, {a} is PSUE", took)
    _, took = timed(lambda: op(sb, "pair_swap", name=p.name, force=False))
    wait_state(sb, p.name, "PAIR")
    took_pair = wait_state(sa, p.name, "PAIR")
    copied_swap = pair_row(sb, p.name)["copied_bytes"]
    report.step(f"failback, swap at {b}: {b} is the P-VOL, {a} caught up by bitmap ({copied_swap} bytes)",
                took + took_pair, cli_text(sb, "pair", "swap", p.name))
    _, took = timed(lambda: op(sa, "pair_swap", name=p.name, force=False))
    took_pair = wait_state(sa, p.name, "PAIR") + wait_state(sb, p.name, "PAIR")
    copied_back = pair_row(sa, p.name)["copied_bytes"]
    report.step(f"swap at {a}: back to {a} -> {b} ({copied_back} bytes copied)", took + took_pair,
                cli_text(sa, "pair", "swap", p.name))
    row = pair_row(sa, p.name)
    report.check(f"{a} is the P-VOL again, in PAIR", row["role"] == "P-VOL" and row["state"] == "PAIR")
    report.facts["bytes copied by the failback (swap at B)"] = copied_swap
    report.facts["bytes copied by the swap back (at A)"] = copied_back
    # 6. Both sides hold the same bytes: the stream from A and what B's hosts wrote.
    final = compare(report, lab, (a, lun_a), (b, lun_b))
    report.facts["copied vs volume"] = f"{copied_swap + copied_back} of {len(final)} bytes"
    report.check("the failback copied less than the volume", copied_swap + copied_back < len(final))
    report.check(f"{a} holds every write acknowledged before the kill and every write made at {b}",
                 all(present(final, i, a) for i in acked) and all(present(final, i, b) for i in more))


def link_cut(lab: LabPlan, report: Report) -> None:
    """Cut a sync pair's link, write on, heal, resync by bitmap, verify (module docstring)."""
    p = find_pair(lab, "sync")
    a, b = p.pvol[0], p.svol[0]
    sa = lab.sites[a]
    lun = p.pvol[1]
    report.facts["pair"] = f"{p.name}: {a}:{lun} -> {b}:{p.svol[1]} sync, fence {p.fence}"
    before, took = timed(lambda: host_stream(lab, a, lun, 1, 100))
    report.step(f"host wrote {len(before)} writes at {a} (mirrored)", took)
    _, took = timed(lambda: set_link(lab, a, b, False))
    t_cut = time.monotonic()
    ln = next(x for x in lab.links if {x.spec.a, x.spec.b} == {a, b})
    report.step(f"link {a}-{b} cut", took, f"ip -n {sa.namespace} link set {ln.device(a)} down; "
                f"ip -n {lab.sites[b].namespace} link set {ln.device(b)} down")
    # The host's next write finds the peer gone (the pair's 5 s peer timeout).
    (status, sense), took = timed(lambda: host_write(lab, a, lun, (STREAM_LBA + 150) * 1, stream_block(150, a)))
    row = pair_row(sa, p.name)
    report.step(f"host write at {a} with the link cut: status {status:#04x}{' sense ' + sense if sense else ''}; "
                f"pair {row['state']} ({row.get('reason') or ''})", took)
    report.facts["seconds from the cut to the pair suspended"] = round(time.monotonic() - t_cut, 2)
    report.check(f"the pair at {a} suspended (PSUE)", row["state"] == "PSUE")
    written = [] if status else [150]
    if p.fence in ("data", "status"):
        report.check("fence data refuses the write (NOT READY 2/04/03)", status == 2 and sense == "2/04/03")
        cp, took = timed(lambda: sanlab_cli(sa, "pair", "takeover", p.name))
        report.step(f"P-VOL takeover at {a} lifts the fence: exit {cp.returncode} (3 = P-VOL takeover)", took,
                    cli_text(sa, "pair", "takeover", p.name))
        report.check(f"pair takeover at {a} exits 3", cp.returncode == 3)
    during, took = timed(lambda: host_stream(lab, a, lun, 1000, 200))
    # Spread some writes over distant tracks too, so the difference is more than one track.
    for k in range(1, 9):
        status, _ = host_write(lab, a, lun, k * 64 * TRACK // BLOCK, bytes([k]) * 4096)
        during += [] if status else [-k]
    report.step(f"host wrote {len(during)} writes at {a} while cut (all acknowledged: {len(during) == 208})", took)
    report.check(f"{a} takes host writes while the link is cut", len(during) == 208)
    pending = pair_row(sa, p.name)["pending_bytes"]
    report.facts["difference recorded while cut (bytes)"] = pending
    _, took = timed(lambda: set_link(lab, a, b, True))
    report.facts["link down for (seconds)"] = round(time.monotonic() - t_cut, 2)
    report.step(f"link {a}-{b} healed", took, f"ip -n {sa.namespace} link set {ln.device(a)} up; ...")
    _, took = timed(lambda: retry_op(sa, "pair_resync", name=p.name, reverse=False))
    took_pair = wait_state(sa, p.name, "PAIR")
    copied = pair_row(sa, p.name)["copied_bytes"]
    report.step(f"resync by bitmap: {copied} bytes copied", took + took_pair, cli_text(sa, "pair", "resync", p.name))
    final = compare(report, lab, (a, lun), (b, p.svol[1]))
    report.facts["bytes copied by the resync"] = copied
    report.facts["copied vs volume"] = f"{copied} of {len(final)} bytes ({100 * copied / len(final):.2f}%)"
    report.check("the resync copied the recorded difference, less than the volume",
                 0 < copied <= max(pending, TRACK) * 2 and copied < len(final))
    report.check("every write acknowledged while cut is on both sides",
                 all(present(final, i, a) for i in before + [i for i in during if i > 0] + written))


def journal_full(lab: LabPlan, report: Report) -> None:
    """Fill an async pair's journal with its link cut: PFUL, PFUS, heal, resync (module docstring)."""
    p = find_pair(lab, "async")
    a, b = p.pvol[0], p.svol[0]
    sa = lab.sites[a]
    lun = p.pvol[1]
    jrow = op(sa, "journal_status", name=p.journal)
    report.facts["pair"] = (f"{p.name}: {a}:{lun} -> {b}:{p.svol[1]} async, journal {p.journal} "
                            f"({p.journal_size}, threshold {p.threshold}%, full timeout {p.full_timeout:g} s)")
    report.facts["journal at start"] = {k: jrow.get(k) for k in ("journal_use", "lag_entries")}
    ln = next(x for x in lab.links if {x.spec.a, x.spec.b} == {a, b})
    _, took = timed(lambda: set_link(lab, a, b, False))
    t_cut = time.monotonic()
    report.step(f"link {a}-{b} cut: nothing pulls {a}'s journal", took,
                f"ip -n {sa.namespace} link set {ln.device(a)} down; ...")
    seen: dict[str, float] = {}
    rpo = 0.0
    host, port = lab.sites[a].address, lab.topology.port
    written: list[int] = []

    async def fill() -> None:
        nonlocal rpo
        async with IscsiSession(host, port, sa.target, _config(30.0)) as s:
            await s.clear_unit_attentions(lun)
            t = 0
            while "PFUS" not in seen and time.monotonic() - t_cut < 120:
                # 4 KiB writes over the first 16 tracks (each track written again and again, as a
                # busy table would be): the journal fills, the difference stays 1 MiB.
                lba = ((t % 16) * TRACK + (t // 16) % 16 * 4096) // BLOCK
                await s.write16(lun, lba, bytes([t & 0xFF | 1]) * 4096, BLOCK)
                written.append(t)
                t += 1
                if t % 8 == 0:
                    row = pair_row(sa, p.name)
                    rpo = max(rpo, float(row.get("rpo_seconds") or 0))
                    if row["state"] in ("PFUL", "PFUS") and row["state"] not in seen:
                        seen[row["state"]] = time.monotonic() - t_cut
                        seen[row["state"] + " use"] = float(row.get("journal_use") or 0)
                    if "PFUL" in seen:
                        await asyncio.sleep(0.2)  # past the threshold: wait for the full timeout
    _, took = timed(lambda: asyncio.run(fill()))
    report.step(f"host wrote {len(written)} x 4 KiB at {a} (never refused); pair went "
                f"{' then '.join(s for s in ('PFUL', 'PFUS') if s in seen) or 'nowhere'}", took)
    report.check("the pair went PFUL, then PFUS", "PFUL" in seen and "PFUS" in seen)
    if "PFUL" in seen:
        report.facts["seconds from the cut to PFUL"] = round(seen["PFUL"], 2)
        report.facts["journal use at PFUL (%)"] = seen["PFUL use"]
    if "PFUS" in seen:
        report.facts["seconds from the cut to PFUS"] = round(seen["PFUS"], 2)
    report.facts["RPO while cut (seconds, the primary's oldest unsent update)"] = round(rpo, 2)
    more, took = timed(lambda: host_stream(lab, a, lun, 3000, 100))
    pending = pair_row(sa, p.name)["pending_bytes"]
    report.step(f"host wrote {len(more)} more writes at {a} in PFUS (into the bitmap: {pending} bytes pending)", took)
    report.check(f"{a} takes host writes in PFUS", len(more) == 100)
    _, took = timed(lambda: set_link(lab, a, b, True))
    report.facts["link down for (seconds)"] = round(time.monotonic() - t_cut, 2)
    report.step(f"link {a}-{b} healed", took, f"ip -n {sa.namespace} link set {ln.device(a)} up; ...")
    _, took = timed(lambda: retry_op(sa, "pair_resync", name=p.name, reverse=False))
    took_pair = wait_state(sa, p.name, "PAIR")
    copied = pair_row(sa, p.name)["copied_bytes"]
    report.step(f"resync by bitmap: {copied} bytes copied", took + took_pair, cli_text(sa, "pair", "resync", p.name))
    final = compare(report, lab, (a, lun), (b, p.svol[1]), settle=60.0)
    report.facts["bytes copied by the resync"] = copied
    report.facts["copied vs volume"] = f"{copied} of {len(final)} bytes ({100 * copied / len(final):.2f}%)"
    report.check("the resync copied the difference, less than the volume", 0 < copied < len(final))
    report.check("the writes made in PFUS are on both sides", all(present(final, i, a) for i in more))


SCENARIOS: dict[str, tuple[Callable[[LabPlan, Report], None], str]] = {
    "failover-drill": (failover_drill, "kill -9 the P-VOL's array under a host stream, takeover, failback, verify"),
    "link-cut": (link_cut, "cut a sync pair's link, write on, heal, resync by bitmap, verify"),
    "journal-full": (journal_full, "cut an async pair's link until its journal fills (PFUL, PFUS), heal, resync"),
}


def run(scenario: str, name: str, root: Path) -> Report:
    """Run ``scenario`` on the running lab ``name``; its report."""
    lab = load_lab(name, root)
    setup_logging("console", "warning")  # the host initiator's own log: only what matters
    fn = SCENARIOS[scenario][0]
    report = Report(scenario, name)
    for w in lab.warnings:
        print(w)
    for n in lab.notes:
        print(n)
    try:
        fn(lab, report)
    except LabError as exc:
        report.check(f"the drill ran to its end ({exc})", False)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``lab/scenario SCENARIO TOPOLOGY [--json FILE]``."""
    p = argparse.ArgumentParser(prog="lab/scenario", description="drills on a running lab, with a report")
    p.add_argument("scenario", nargs="?", choices=sorted(SCENARIOS))
    p.add_argument("lab", nargs="?", metavar="TOPOLOGY", help="a lab brought up with lab/up")
    p.add_argument("--list", action="store_true", help="list the scenarios")
    p.add_argument("--dir", type=Path, default=DEFAULT_ROOT, help=f"where labs live (default {DEFAULT_ROOT})")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    args = p.parse_args(argv)
    if args.list or not args.scenario:
        for k, (_, what) in SCENARIOS.items():
            print(f"{k:<16} {what}")
        return 0
    if not args.lab:
        p.error("give the TOPOLOGY of a running lab (lab/up NAME)")
    try:
        report = run(args.scenario, args.lab, args.dir)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 2
    print(report.text())
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return 0 if report.verified else 1


if __name__ == "__main__":
    sys.exit(main())
