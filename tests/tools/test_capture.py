"""Packet captures of a real array's iSCSI connections (issue 18), read by tshark's own iSCSI dissector.

Real `sanlab serve` processes, real clients (iscsi-inq, iscsi-ls, qemu-io), the array's own initiator
on a replication link; the capture started from the command line, from the configuration and at run
time; tshark must read every frame cleanly and find exactly the PDUs the array counted.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, TARGET, SanlabProcess, free_port, need, run, start_sanlab
from tests.tools.tshark import assert_same_pdus, need_tshark, tshark

pytestmark = pytest.mark.integration

A = "iqn.2026-11.org.sanlab:array-a"
B = "iqn.2026-11.org.sanlab:array-b"


def stopped_summary(sp: SanlabProcess) -> dict[str, Any]:
    """The ``capture_stopped`` log line of an array that stopped: the PDUs it counted."""
    for line in sp.log().splitlines():
        if '"capture_stopped"' in line:
            rec: dict[str, Any] = json.loads(line)
            return rec
    raise AssertionError(f"no capture_stopped in the log:\n{sp.log()[-3000:]}")


def cli(sp: SanlabProcess, *words: str, cwd: Path | None = None) -> Any:
    cp = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", *words, "--data-dir", str(sp.data_dir)],
                        capture_output=True, text=True, timeout=60, cwd=cwd)
    assert cp.returncode == 0, f"{words}: {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    return json.loads(cp.stdout)


def test_serve_capture_holds_every_pdu_of_real_clients_after_sigterm(tmp_path: Path) -> None:
    """`sanlab serve --capture FILE.pcap`: logins, discovery, INQUIRY, a 1 MiB write (R2T and Data-Out
    beyond the first burst) and its read (Data-In) from libiscsi's tools and qemu-io; after SIGTERM the
    file is whole and tshark finds what the array counted."""
    need("iscsi-inq"), need("iscsi-ls"), need("qemu-io")
    pcap = tmp_path / "host.pcap"
    config = f"""
[[targets]]
name = "{TARGET}"
[[targets.luns]]
lun = 0
file = "lun0.img"
size = "8MiB"
"""
    sp = start_sanlab(tmp_path, config, extra=["--capture", str(pcap)])
    try:
        run(["iscsi-inq", sp.url()])
        assert TARGET in run(["iscsi-ls", "-s", f"iscsi://{sp.portal}"]).stdout
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 65536 1M", "-c", "read -P 0x5a 65536 1M", sp.url()])
    finally:
        assert sp.stop(signal.SIGTERM) == 0, sp.log()[-3000:]
    counted = stopped_summary(sp)
    assert counted["file"] == str(pcap) and counted["error"] is None if "error" in counted else True
    seen = assert_same_pdus(pcap, [sp.port], counted)
    # What the clients did is in it, as the array counted it: three logins (inq, ls's discovery and
    # its LUN listing... qemu-io's), the write's R2Ts and Data-Outs, the read's Data-Ins.
    assert seen.pdus["LOGIN_REQUEST"] >= 4 and seen.pdus["TEXT_REQUEST"] >= 1
    assert seen.scsi_commands["0x12"] >= 1  # INQUIRY
    assert seen.scsi_commands["0x2a"] + seen.scsi_commands["0x8a"] >= 1  # WRITE(10) or (16)
    assert seen.pdus["R2T"] >= 1 and seen.pdus["SCSI_DATA_OUT"] >= seen.pdus["R2T"]
    assert seen.pdus["SCSI_DATA_IN"] >= 1
    assert counted["bytes"] > 2 << 20  # the megabyte both ways


def remote_config(me: str, peer: str, peer_portal: str, capture: str | None = None) -> str:
    extra = f'\n[capture]\nfile = "{capture}"\n' if capture else ""
    return f"""
initiator_name = "{me}"
[[remotes]]
name = "{'array-b' if peer == B else 'array-a'}"
portal = "{peer_portal}"
target = "{peer}"
[[targets]]
name = "{me}"
[[targets.luns]]
lun = 0
file = "lun0.img"
size = "4MiB"
{extra}"""


def test_capture_at_run_time_joins_an_open_replication_link(tmp_path: Path) -> None:
    """A's link to B is logged in before `sanlab capture start` at A: the capture joins it (its
    pings, NOP-Out/NOP-In, follow), then takes a host session; B captures from its configuration
    ([capture] file), its side of the same link included.  Both files read cleanly and hold what
    each array counted."""
    need("iscsi-inq")
    pa, pb = free_port("127.0.0.1"), free_port("127.0.0.2")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    b = start_sanlab(tmp_path / "b", remote_config(B, A, f"127.0.0.1:{pa}", capture="b.pcap"), "127.0.0.2", pb)
    a = start_sanlab(tmp_path / "a", remote_config(A, B, f"127.0.0.2:{pb}"), "127.0.0.1", pa)
    try:
        deadline = time.monotonic() + 20
        while cli(a, "remote", "display", "--json")[0]["link"] != "up":
            assert time.monotonic() < deadline, a.log()[-3000:]
            time.sleep(0.2)
        status = cli(a, "capture", "status")
        assert status == {"running": False}
        started = cli(a, "capture", "start", "a.pcap", cwd=tmp_path)  # relative to where the command runs
        assert started == {"file": str(tmp_path / "a.pcap"), "running": True}
        time.sleep(2.5)  # the link pings every second
        run(["iscsi-inq", a.url(target=A)])
        mid = cli(a, "capture", "status")
        assert mid["running"] and mid["pdus"]["NOP_OUT"] >= 2
        counted = cli(a, "capture", "stop")
        # The link and iscsi-inq's session at least (the link's neighbour may open more).
        assert counted["file"] == started["file"] and counted["streams"] >= 2
        assert assert_same_pdus(Path(counted["file"]), [pa, pb], counted).pdus["NOP_IN"] >= 2
        again = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "capture", "stop",
                                "--data-dir", str(a.data_dir)], capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "no capture is running" in again.stderr
    finally:
        assert a.stop() == 0, a.log()[-3000:]
        assert b.stop() == 0, b.log()[-3000:]
    counted_b = stopped_summary(b)
    assert counted_b["file"] == str(b.data_dir / "b.pcap")
    seen_b = assert_same_pdus(b.data_dir / "b.pcap", [pa, pb], counted_b)  # B links to A too
    # Both links from their first SYN to their logout: A asked B's link to log out when A stopped.
    assert seen_b.pdus["LOGIN_REQUEST"] >= 2 and seen_b.pdus["LOGOUT_REQUEST"] >= 2 and seen_b.pdus["ASYNC_MESSAGE"] >= 1


def test_lua_dissector_decodes_command_device_blocks(tmp_path: Path) -> None:
    """lab/wireshark/sanlab.lua on a capture of `sanlab --cmddev ... capture status`: the command block's
    process number (0E03h) and identification number, and the edited data answering it with the same
    number, status done and the array's JSON output (read from a 64 KiB READ reassembled over segments)."""
    pcap = tmp_path / "cmddev.pcap"
    config = f"""
array_name = "array-x"
[[targets]]
name = "{TARGET}"
[[targets.luns]]
lun = 0
file = "lun0.img"
size = "4MiB"
[[targets.luns]]
lun = 9
command_device = true
"""
    sp = start_sanlab(tmp_path, config, extra=["--capture", str(pcap)])
    try:
        cp = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "--cmddev", sp.url(9), "capture", "status"],
                            capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
        assert json.loads(cp.stdout)["file"] == str(pcap)
    finally:
        assert sp.stop() == 0
    lua = REPO / "lab" / "wireshark" / "sanlab.lua"
    rows = [line.split("\t") for line in tshark(
        pcap, [sp.port], "-X", f"lua_script:{lua}", "-T", "fields", "-e", "sanlab.cmd.process", "-e", "sanlab.cmd.id",
        "-e", "sanlab.cmd.input", "-e", "sanlab.ed.process", "-e", "sanlab.ed.id", "-e", "sanlab.ed.status",
        "-e", "sanlab.ed.array", "-e", "sanlab.ed.output").splitlines() if line.strip("\t")]
    blocks = [r for r in rows if r[0]]
    answers = [r for r in rows if r[3]]
    assert blocks and all(r[0] == "0x0e03" and r[2] == "{}" for r in blocks), rows
    assert len(answers) == 1, rows
    assert answers[0][3:7] == ["0x0e03", blocks[-1][1], "0x00", "array-x"], rows
    assert json.loads(answers[0][7])["running"] is True
    assert "Lua Error" not in tshark(pcap, [sp.port], "-X", f"lua_script:{lua}", "-V")


def test_capture_from_the_interface_as_root(tmp_path: Path) -> None:
    """`--capture-interface lo` (root): dumpcap takes the capture from the interface, filtered to the
    array's portal; tshark finds the clients' logins and INQUIRY in it once the array stopped."""
    import os
    from tests.tools.tshark import dissect
    need("iscsi-inq"), need("dumpcap")
    if os.geteuid() != 0:
        pytest.skip("capturing from an interface needs root")
    pcap = tmp_path / "lo.pcap"
    sp = start_sanlab(tmp_path, None, extra=["--capture", str(pcap), "--capture-interface", "lo"])
    try:
        run(["iscsi-inq", sp.url()])
        run(["iscsi-inq", sp.url()])
    finally:
        assert sp.stop(signal.SIGTERM) == 0, sp.log()[-3000:]
    seen = dissect(pcap, [sp.port])
    assert seen.pdus["LOGIN_REQUEST"] >= 2 and seen.scsi_commands["0x12"] >= 2, seen
    assert '"interface": "lo"' in sp.log()


def test_capture_interface_needs_a_capture_file(tmp_path: Path) -> None:
    cp = subprocess.run([sys.executable, "-m", "sanlab.tools.cli", "serve", "--data-dir", str(tmp_path / "d"),
                         "--capture-interface", "lo"], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 2 and "--capture-interface needs --capture FILE.pcap" in cp.stderr, cp.stderr


def test_lua_dissector_decodes_journal_reads_of_an_async_pair(tmp_path: Path) -> None:
    """B, the secondary of an async pair, captures its link to A while a host writes 40 numbered
    blocks at A: lab/wireshark/sanlab.lua decodes B's READ JOURNAL commands (C6h) and A's answers,
    whose entries carry consecutive sequence numbers, each block's LBA and its 512 bytes."""
    import asyncio
    from sanlab.target.initiator import InitiatorConfig, IscsiSession
    from tests.integration.test_async_pairs import async_pairs, wait_drained
    from tests.integration.test_sync_pairs import A, Arrays
    need_tshark()
    ar = Arrays(tmp_path)
    try:
        async_pairs(ar)
        pcap = tmp_path / "b-link.pcap"
        ar.ok(ar.b, "capture", "start", str(pcap))

        async def writes() -> None:
            cfg = InitiatorConfig(initiator_name="iqn.1994-05.com.example:host1", command_timeout=10.0)
            async with IscsiSession(ar.a.host, ar.a.port, A, cfg) as s:
                await s.clear_unit_attentions(0)
                for i in range(40):
                    await s.write16(0, 100 + i, i.to_bytes(8, "big") * 64, 512)
        asyncio.run(writes())
        wait_drained(ar)
        ar.ok(ar.b, "capture", "stop")
    finally:
        ar.stop()
    lua = REPO / "lab" / "wireshark" / "sanlab.lua"
    ports = [ar.pa, ar.pb]
    out = tshark(pcap, ports, "-X", f"lua_script:{lua}", "-T", "fields", "-e", "sanlab.repl.opcode",
                 "-e", "sanlab.journal.entry.sequence", "-e", "sanlab.journal.entry.lba",
                 "-e", "sanlab.journal.entry.data_length")
    rows = [line.split("\t") for line in out.splitlines() if line.strip("\t")]
    assert any(r[0] == "0xc6" for r in rows), rows[:20]
    entries = [(int(s), int(lba), int(n)) for r in rows if r[1]
               for s, lba, n in zip(r[1].split(","), r[2].split(","), r[3].split(","))]
    host = [e for e in entries if 100 <= e[1] < 140]
    assert sorted({e[1] for e in host}) == list(range(100, 140)), entries
    seqs = [e[0] for e in host]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and all(e[2] == 512 for e in host), host
    assert "Lua Error" not in tshark(pcap, ports, "-X", f"lua_script:{lua}", "-V")


def test_lua_dissector_decodes_the_pair_control_commands(tmp_path: Path) -> None:
    """A captures its link to B while a sync pair is created, split, resynchronised and deleted:
    lab/wireshark/sanlab.lua names the pair-control commands A sends (REGISTER PAIR C0h, SET PAIR
    STATE C1h, GET PAIR STATUS C2h, READ DIFFERENCE BITMAP C3h, DELETE PAIR C4h), each with the pair's ID."""
    from tests.integration.test_sync_pairs import Arrays
    need_tshark()
    ar = Arrays(tmp_path)
    try:
        pcap = tmp_path / "a-link.pcap"
        ar.ok(ar.a, "capture", "start", str(pcap))
        ar.create()
        ar.wait(ar.a, "PAIR")
        ar.ok(ar.a, "pair", "split", "p0")
        ar.ok(ar.a, "pair", "resync", "p0")
        ar.wait(ar.a, "PAIR")
        ar.ok(ar.a, "pair", "delete", "p0")
        ar.ok(ar.a, "capture", "stop")
    finally:
        ar.stop()
    lua = REPO / "lab" / "wireshark" / "sanlab.lua"
    out = tshark(pcap, [ar.pa, ar.pb], "-X", f"lua_script:{lua}", "-T", "fields", "-e", "sanlab.repl.opcode",
                 "-e", "sanlab.repl.pair_id")
    rows = [line.split("\t") for line in out.splitlines() if line.strip("\t")]
    ops = {r[0] for r in rows if r[0]}
    assert {"0xc0", "0xc1", "0xc4"} <= ops and ops & {"0xc2", "0xc3"}, rows
    ids = {r[1] for r in rows if r[0] and r[1]}
    assert len(ids) == 1, rows  # one pair, one ID in every command
    assert "Lua Error" not in tshark(pcap, [ar.pa, ar.pb], "-X", f"lua_script:{lua}", "-V")
