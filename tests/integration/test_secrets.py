"""No secret leaks (issue 19, Security): two arrays with CHAP and mutual CHAP on their targets, on the
replication link between them and on a command device, one LUN encrypted with a key from the
environment.  Logins fail (wrong CHAP secret, wrong mutual secret), a link is set up with a wrong
secret, a pair is created over the good link, the array is started with a wrong key, then every log
file the run made and every output it printed is searched for every secret and the key.

Mutual CHAP on the command device is shown working here too: the CLI proves the target's secret
(``SANLAB_MUTUAL_*``) and refuses a target that cannot."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SanlabProcess, free_port, need, start_sanlab

pytestmark = pytest.mark.integration

A = "iqn.2026-11.org.sanlab:array-a"
B = "iqn.2026-11.org.sanlab:array-b"
CLI = "iqn.2026-11.org.sanlab:admin-host"
HOST_SECRET = "host-secret-4711"
TARGET_A_SECRET = "a-proves-itself-17"
LINK_SECRET = "a-to-b-link-secret-23"
LINK_MUTUAL = "b-to-a-link-secret-29"
WRONG = "wrong-secret-0815x"
KEY = "7e" * 8 + "c4" * 8 + "19" * 8 + "a2" * 8
WRONG_KEY = "55" * 32
SECRETS = (HOST_SECRET, TARGET_A_SECRET, LINK_SECRET, LINK_MUTUAL, WRONG, KEY, WRONG_KEY, KEY.upper())
WAIT = 60.0


def a_config(b_portal: str) -> str:
    return f"""
initiator_name = "{A}"
[[remotes]]
name = "array-b"
portal = "{b_portal}"
target = "{B}"
chap_user = "array-a"
chap_secret = "{LINK_SECRET}"
mutual_user = "array-b"
mutual_secret = "{LINK_MUTUAL}"
[[targets]]
name = "{A}"
initiators = ["{CLI}", "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test", "iqn.2008-11.org.linux-kvm"]
[targets.chap]
username = "host"
secret = "{HOST_SECRET}"
[targets.mutual_chap]
username = "array-a"
secret = "{TARGET_A_SECRET}"
[[targets.luns]]
lun = 0
file = "lun0.img"
size = "4MiB"
encryption = {{ key_env = "SANLAB_TEST_KEY" }}
[[targets.luns]]
lun = 9
command_device = true
"""


def b_config() -> str:
    return f"""
initiator_name = "{B}"
[[targets]]
name = "{B}"
[targets.chap]
username = "array-a"
secret = "{LINK_SECRET}"
[targets.mutual_chap]
username = "array-b"
secret = "{LINK_MUTUAL}"
[[targets.luns]]
lun = 0
file = "lun0.img"
size = "4MiB"
"""


class Run:
    """Everything the test printed or ran, to be searched at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.outputs: list[str] = []

    def cmd(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=timeout,
                            env={**os.environ, **(env or {})})
        self.outputs.append(f"{cp.stdout}\n{cp.stderr}")  # what it printed, not the command line we gave it
        return cp

    def sanlab(self, *words: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.cmd([sys.executable, "-m", "sanlab.tools.cli", *words], env=env)


def _wait_for(what: str, probe: Any, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"{what} not within {timeout}s (last: {last})")


@pytest.mark.parametrize("full", [pytest.param(True, marks=pytest.mark.slow), False],
                         ids=["links-and-pairs", "one-array"])
def test_no_secret_in_any_log_or_output(tmp_path: Path, full: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``one-array`` (the default run's sample): host and command-device logins and wrong keys on A
    alone; ``links-and-pairs`` (slow job, ~40 s of CLI runs): also the links and a pair to B."""
    need("iscsi-inq")
    r = Run(tmp_path)
    pa, pb = free_port("127.0.0.1"), free_port("127.0.0.2")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("SANLAB_TEST_KEY", KEY)  # start_sanlab passes the environment on
    procs: list[SanlabProcess] = []
    try:
        if full:
            procs.append(start_sanlab(tmp_path / "b", b_config(), "127.0.0.2", pb))
        a = start_sanlab(tmp_path / "a", a_config(f"127.0.0.2:{pb}"), "127.0.0.1", pa)
        procs.append(a)
        a_url = f"iscsi://127.0.0.1:{pa}/{A}"
        dd = ["--data-dir", str(a.data_dir)]

        # Hosts: a wrong CHAP secret is refused, the right one logs in.
        bad = r.cmd(["iscsi-inq", "-i", CLI, f"iscsi://host%{WRONG}@127.0.0.1:{pa}/{A}/0"])
        assert bad.returncode != 0
        good = r.cmd(["iscsi-inq", "-i", CLI, f"iscsi://host%{HOST_SECRET}@127.0.0.1:{pa}/{A}/0"])
        assert good.returncode == 0, good.stderr

        # The command device with mutual CHAP: the target proves itself, or the CLI refuses it.
        env = {"SANLAB_CHAP_USER": "host", "SANLAB_CHAP_SECRET": HOST_SECRET, "SANLAB_INITIATOR_NAME": CLI,
               "SANLAB_MUTUAL_USER": "array-a", "SANLAB_MUTUAL_SECRET": TARGET_A_SECRET}
        shown = r.sanlab("--cmddev", f"{a_url}/9", "show", env=env)
        assert shown.returncode == 0, shown.stderr
        fake = r.sanlab("--cmddev", f"{a_url}/9", "show", env={**env, "SANLAB_MUTUAL_SECRET": WRONG})
        assert fake.returncode != 0 and "authentication failed" in (fake.stdout + fake.stderr).lower()
        wrong_host = r.sanlab("--cmddev", f"{a_url}/9", "show", env={**env, "SANLAB_CHAP_SECRET": WRONG})
        assert wrong_host.returncode != 0
        if full:
            # The same secrets on the command line (visible in the process list, never echoed back).
            argv = r.sanlab("--cmddev", f"{a_url}/9", "--initiator-name", CLI, "--chap-user", "host",
                            "--chap-secret", WRONG, "show")
            assert argv.returncode != 0
            # Links: the configured one comes up with mutual CHAP; one added with a wrong secret stays down.
            def link(name: str, state: str) -> bool:
                cp = r.sanlab("remote", "display", "--json", *dd)
                return cp.returncode == 0 and f'"name": "{name}"' in cp.stdout and f'"link": "{state}"' in \
                    cp.stdout.split(f'"name": "{name}"')[1].split("}")[0]
            _wait_for("link array-b up", lambda: link("array-b", "up"))
            added = r.sanlab("remote", "add", "bad-b", "--portal", f"127.0.0.2:{pb}", "--target", B, "--chap-user",
                             "array-a", "--chap-secret", WRONG, "--mutual-user", "array-b", "--mutual-secret",
                             LINK_MUTUAL, *dd)
            assert added.returncode == 0, added.stderr
            _wait_for("link bad-b down", lambda: link("bad-b", "down"))
            r.sanlab("remote", "display", *dd)
            # A pair over the good link (its sessions log in with the remote's secrets).
            created = r.sanlab("pair", "create", "p0", "--pvol", f"{A}/0", "--remote", "array-b", "--svol",
                               f"{B}/0", *dd)
            assert created.returncode == 0, created.stdout + created.stderr + a.log()[-3000:]
            waited = r.sanlab("pair", "wait", "p0", "--state", "PAIR", "--timeout", "60", *dd)
            assert waited.returncode == 0, waited.stderr
            r.sanlab("pair", "display", *dd)
        r.sanlab("show", "--json", *dd)
        assert a.stop() == 0
        # The encrypted LUN with a wrong key: refused, and the message does not carry either key.
        wrong = r.cmd([sys.executable, "-m", "sanlab.tools.cli", "serve", "--config", str(tmp_path / "a" / "sanlab.toml"),
                       "--portal", f"127.0.0.1:{pa}", *dd], env={"SANLAB_TEST_KEY": WRONG_KEY}, timeout=60)
        assert wrong.returncode != 0 and "wrong key" in wrong.stderr
        malformed = r.cmd([sys.executable, "-m", "sanlab.tools.cli", "serve", "--config",
                           str(tmp_path / "a" / "sanlab.toml"), "--portal", f"127.0.0.1:{pa}", *dd],
                          env={"SANLAB_TEST_KEY": KEY[:-2]}, timeout=60)
        assert malformed.returncode != 0 and "64 hex digits" in malformed.stderr
    finally:
        for sp in procs:
            sp.stop()

    logs = sorted(tmp_path.rglob("*.log"))
    assert len(logs) == (2 if full else 1)
    texts = {str(p): p.read_text(errors="replace") for p in logs}
    texts.update({f"output {i}": o for i, o in enumerate(r.outputs)})
    # The searches would find them if they were there: the logs do record what the run did.
    joined = "\n".join(texts.values())
    for event in ("login_failed", "mgmt_listening", "encryption_header_created"):
        assert event in joined, event
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} appears in {where}"
