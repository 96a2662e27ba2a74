"""Remotes between real arrays: `sanlab serve` A on 127.0.0.1 with a remote to B on 127.0.0.2.

The link follows B (up, down with the reason after a kill -9, up again after B restarts); CHAP
and mutual CHAP decide it; `sanlab remote add|delete|display` work on a running A, refuse what
they must with a precise message and a non-zero exit, and survive A's restart; and no secret is in
A's log or in any display.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import SanlabProcess, free_port, start_sanlab

pytestmark = pytest.mark.integration

A = "iqn.2026-11.org.sanlab:array-a"
B = "iqn.2026-11.org.sanlab:array-b"
CHAP_SECRET = "a-to-b-secret-12"
MUTUAL_SECRET = "b-to-a-secret-12"
WRONG_SECRET = "wrong-secret-0815"
SECRETS = (CHAP_SECRET, MUTUAL_SECRET, WRONG_SECRET)
WAIT = 30.0
"""Seconds any state change may take: a ping a second, logins backing off to at most 10 s."""


def b_config(chap: bool = False) -> str:
    auth = f"""
[targets.chap]
username = "array-a"
secret = "{CHAP_SECRET}"
[targets.mutual_chap]
username = "array-b"
secret = "{MUTUAL_SECRET}"
""" if chap else ""
    return f"""
[[targets]]
name = "{B}"
{auth}
[[targets.luns]]
lun = 0
size = "4MiB"
"""


def a_config(remotes: str = "") -> str:
    return f"""
initiator_name = "{A}"
[[targets]]
name = "{A}"
[[targets.luns]]
lun = 0
size = "4MiB"
{remotes}
"""


def remote_toml(name: str, portal: str, chap_secret: str | None = None, mutual_secret: str | None = None) -> str:
    text = f'[[remotes]]\nname = "{name}"\nportal = "{portal}"\ntarget = "{B}"\n'
    if chap_secret is not None:
        text += f'chap_user = "array-a"\nchap_secret = "{chap_secret}"\n'
    if mutual_secret is not None:
        text += f'mutual_user = "array-b"\nmutual_secret = "{mutual_secret}"\n'
    return text


def sanlab_cli(data_dir: Path, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sanlab.tools.cli", *words, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60)


def display(a: SanlabProcess) -> dict[str, dict[str, Any]]:
    cp = sanlab_cli(a.data_dir, "remote", "display", "--json")
    assert cp.returncode == 0, cp.stderr
    return {r["name"]: r for r in json.loads(cp.stdout)}


def wait_link(a: SanlabProcess, name: str, link: str, reason: str = "", timeout: float = WAIT) -> dict[str, Any]:
    """Poll `remote display --json` until ``name``'s link is ``link`` with ``reason`` in its reason."""
    deadline = time.monotonic() + timeout
    row: dict[str, Any] = {}
    while time.monotonic() < deadline:
        row = display(a).get(name, {})
        if row.get("link") == link and reason in str(row.get("reason")):
            return row
        time.sleep(0.2)
    raise AssertionError(f"remote {name} not {link} ({reason!r}) within {timeout}s: {row}\n{a.log()[-3000:]}")


@pytest.fixture
def arrays(tmp_path: Path) -> Iterator[Callable[..., SanlabProcess]]:
    """Start (and restart) `sanlab serve` in a directory of its own; all stopped at the end.

    ``start(name, config, host, port)``: the same ``name`` again reuses that data directory (a
    restart).  A process killed on purpose is not checked for a clean exit.
    """
    started: list[SanlabProcess] = []

    def start(name: str, config: str, host: str, port: int) -> SanlabProcess:
        sub = tmp_path / name
        sub.mkdir(exist_ok=True)
        sp = start_sanlab(sub, config, host=host, port=port)
        started.append(sp)
        return sp

    yield start
    for sp in started:
        rc = sp.stop()
        if not sp.killed:
            assert rc == 0, f"sanlab exited with {rc}:\n{sp.log()[-4000:]}"


def test_the_link_follows_the_peer(arrays: Callable[..., SanlabProcess]) -> None:
    b_port = free_port("127.0.0.2")
    b = arrays("b", b_config(), "127.0.0.2", b_port)
    a = arrays("a", a_config(remote_toml("array-b", b.portal)), "127.0.0.1", free_port())
    row = wait_link(a, "array-b", "up")
    assert row == {"name": "array-b", "portals": [b.portal], "target": B, "chap": False, "mutual_chap": False,
                   "link": "up", "reason": f"logged in to {b.portal}", "since": row["since"], "source": "config"}
    assert row["since"].endswith("+00:00") and "T" in row["since"]

    b.stop(signal.SIGKILL)
    down = wait_link(a, "array-b", "down", b.portal)
    assert "lost" in down["reason"] or "refused" in down["reason"], down
    assert down["since"] >= row["since"]
    log = a.log()
    assert '"event": "link_up"' in log and '"event": "link_down"' in log
    assert any('"event": "link_down"' in line and '"remote": "array-b"' in line for line in log.splitlines())

    arrays("b2", b_config(), "127.0.0.2", b_port)  # B again, on the same portal
    wait_link(a, "array-b", "up")
    # The text display says the same.
    cp = sanlab_cli(a.data_dir, "remote", "display", "array-b")
    assert cp.returncode == 0 and cp.stdout.splitlines()[0].split()[:3] == ["NAME", "LINK", "SINCE"]
    assert cp.stdout.splitlines()[1].split()[:2] == ["array-b", "up"]


def test_chap_decides_the_link_and_no_secret_is_shown_or_logged(arrays: Callable[..., SanlabProcess]) -> None:
    b = arrays("b", b_config(chap=True), "127.0.0.2", free_port("127.0.0.2"))
    remotes = (remote_toml("good", b.portal, CHAP_SECRET, MUTUAL_SECRET)
               + remote_toml("wrong", b.portal, WRONG_SECRET)
               + remote_toml("none", b.portal))
    a = arrays("a", a_config(remotes), "127.0.0.1", free_port())
    good = wait_link(a, "good", "up")
    assert (good["chap"], good["mutual_chap"]) == (True, True)
    wrong = wait_link(a, "wrong", "down", "authentication failed")
    assert (wrong["chap"], wrong["mutual_chap"]) == (True, False)
    wait_link(a, "none", "down", "authentication failed")
    # A run-time remote with a wrong mutual secret: B proves its own, which is not what A expects.
    cp = sanlab_cli(a.data_dir, "remote", "add", "bad-mutual", "--portal", b.portal, "--target", B,
                    "--chap-user", "array-a", "--chap-secret", CHAP_SECRET, "--mutual-user", "array-b",
                    "--mutual-secret", WRONG_SECRET)
    assert cp.returncode == 0, cp.stderr
    wait_link(a, "bad-mutual", "down", "authentication failed")

    outputs = [sanlab_cli(a.data_dir, "remote", "display").stdout,
               sanlab_cli(a.data_dir, "remote", "display", "--json").stdout,
               sanlab_cli(a.data_dir, "remote", "display", "good").stdout,
               sanlab_cli(a.data_dir, "show", "--json").stdout, cp.stdout, cp.stderr]
    assert "good" in outputs[0] and "yes" in outputs[0]
    a.stop()  # and the shutdown's own log lines
    text = "\n".join(outputs) + a.log()
    assert '"chap_secret": "***"' in a.log()  # the request was logged, its secret not
    for secret in SECRETS:
        assert secret not in text, secret


def test_remote_commands_on_a_running_array_and_across_its_restart(arrays: Callable[..., SanlabProcess]) -> None:
    b = arrays("b", b_config(), "127.0.0.2", free_port("127.0.0.2"))
    a_port = free_port()
    a = arrays("a", a_config(remote_toml("from-config", b.portal)), "127.0.0.1", a_port)
    d = a.data_dir

    cp = sanlab_cli(d, "remote", "add", "array-b", "--portal", b.portal, "--portal", "127.0.0.9:3260",
                    "--target", B)
    assert cp.returncode == 0, cp.stderr
    added = json.loads(cp.stdout)
    assert (added["name"], added["portals"], added["source"]) == ("array-b", [b.portal, "127.0.0.9:3260"], "catalog")
    wait_link(a, "array-b", "up")  # through the first portal

    refusals = [
        (["remote", "add", "array-b", "--portal", b.portal, "--target", B], 1, "a remote called array-b exists"),
        (["remote", "add", "from-config", "--portal", b.portal, "--target", B], 1,
         "a remote called from-config exists: it is declared in"),
        (["remote", "add", "x", "--portal", "127.0.0.2", "--target", B], 2, "--portal: portal '127.0.0.2' is not HOST:PORT"),
        (["remote", "add", "x", "--portal", b.portal], 2, "the following arguments are required: --target"),
        (["remote", "add", "x", "--target", B], 2, "the following arguments are required: --portal"),
        (["remote", "add", "x", "--portal", b.portal, "--target", "array-b"], 1,
         "target 'array-b' is not an iSCSI name"),
        (["remote", "add", "x", "--portal", b.portal, "--target", B, "--chap-user", "u"], 1,
         "chap_secret: chap_user and chap_secret go together"),
        (["remote", "add", "x", "--portal", b.portal, "--target", B, "--chap-user", "u", "--chap-secret", "short"],
         1, "chap_secret: CHAP secrets must be at least 12 bytes"),
        (["remote", "add", "x", "--portal", b.portal, "--target", B, "--mutual-user", "m", "--mutual-secret",
          MUTUAL_SECRET], 1, "needs chap_user and chap_secret"),
        (["remote", "add", "no/slash", "--portal", b.portal, "--target", B], 1, "is not a remote name"),
        (["remote", "delete", "nope"], 1, "remote delete: no remote nope"),
        (["remote", "display", "nope"], 1, "remote display: no remote nope"),
        (["remote", "delete", "from-config"], 1, "remote from-config is declared in"),
    ]
    for words, rc, message in refusals:
        cp = sanlab_cli(d, *words)
        assert (cp.returncode, message in cp.stderr) == (rc, True), (words, cp.returncode, cp.stderr)
        assert "Traceback" not in cp.stderr
    assert set(display(a)) == {"array-b", "from-config"}  # nothing refused was half made

    # A restart brings the run-time remote back from the catalog, and its link up again.
    assert a.stop() == 0
    a = arrays("a", a_config(remote_toml("from-config", b.portal)), "127.0.0.1", a_port)
    rows = display(a)
    assert {n: r["source"] for n, r in rows.items()} == {"array-b": "catalog", "from-config": "config"}
    assert rows["array-b"]["portals"] == [b.portal, "127.0.0.9:3260"]
    wait_link(a, "array-b", "up")

    cp = sanlab_cli(d, "remote", "delete", "array-b")
    assert cp.returncode == 0 and json.loads(cp.stdout) == {"removed": "array-b", "source": "catalog"}, cp.stderr
    assert set(display(a)) == {"from-config"}
    assert '"event": "remote_deleted"' in a.log()
    assert a.stop() == 0
    a = arrays("a", a_config(remote_toml("from-config", b.portal)), "127.0.0.1", a_port)
    assert set(display(a)) == {"from-config"}  # the deletion persisted too


def test_the_configuration_wins_a_name_the_catalog_also_has(arrays: Callable[..., SanlabProcess]) -> None:
    b = arrays("b", b_config(), "127.0.0.2", free_port("127.0.0.2"))
    a_port = free_port()
    a = arrays("a", a_config(), "127.0.0.1", a_port)
    cp = sanlab_cli(a.data_dir, "remote", "add", "array-b", "--portal", "127.0.0.9:3260", "--target", B)
    assert cp.returncode == 0, cp.stderr
    assert a.stop() == 0
    # The file now declares array-b as well (at B's real portal): the file's is used.
    a = arrays("a", a_config(remote_toml("array-b", b.portal)), "127.0.0.1", a_port)
    row = wait_link(a, "array-b", "up")
    assert (row["source"], row["portals"]) == ("config", [b.portal])
    assert '"event": "remote_shadowed"' in a.log()
    cp = sanlab_cli(a.data_dir, "remote", "delete", "array-b")  # removes the stale catalog row only
    assert cp.returncode == 0 and json.loads(cp.stdout)["source"] == "catalog", cp.stderr
    assert display(a)["array-b"]["source"] == "config"
    cp = sanlab_cli(a.data_dir, "remote", "delete", "array-b")
    assert cp.returncode == 1 and "is declared in" in cp.stderr
