"""The status page and metrics of real arrays (issue 18): `sanlab serve --http`, scraped over HTTP
while real initiators (qemu-io, iscsi-inq) send traffic, two arrays with a pair split under the
metrics and the topology, and the page as a person sees it in headless Chromium (Selenium)."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SanlabProcess, TARGET, free_port, need, run, start_sanlab
from tests.integration.test_sync_pairs import A, B, Arrays, config

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(url: str) -> tuple[int, str, bytes]:
    """Status, content type and body of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def scrape(http: str) -> Samples:
    """Every sample of /metrics, parsed by prometheus_client's own parser (so the format is valid)."""
    status, ctype, body = get(f"http://{http}/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (status, ctype)
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}; have {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


def qemu_io(sp: SanlabProcess, *commands: str) -> None:
    args = ["qemu-io", "-f", "raw"]
    for c in commands:
        args += ["-c", c]
    run([*args, sp.url(0)])


@pytest.fixture
def served(sanlab_factory: Callable[..., SanlabProcess]) -> tuple[SanlabProcess, str]:
    """One array on the default config with its status page on a free port."""
    http = f"127.0.0.1:{free_port()}"
    return sanlab_factory(extra=["--http", http]), http


def test_metrics_move_by_what_real_initiators_did(served: tuple[SanlabProcess, str]) -> None:
    need("qemu-io")
    sp, http = served
    lu = {"target": TARGET, "lun": "0"}
    before = scrape(http)
    assert value(before, "sanlab_info", array="array", version=metadata.version("sanlab")) == 1
    assert value(before, "sanlab_lu_size_bytes", **lu) == 1 << 30
    assert value(before, "sanlab_sessions", target=TARGET) == 0
    # Three 64 KiB writes and one 128 KiB read, each one SCSI command from QEMU's libiscsi driver.
    qemu_io(sp, "write -P 0x11 0 64k", "write -P 0x22 64k 64k", "write -P 0x33 1M 64k", "read -P 0x11 0 64k")
    after = scrape(http)

    def delta(name: str, op: str) -> float:
        return value(after, name, op=op, **lu) - value(before, name, op=op, **lu)

    assert delta("sanlab_lu_commands_total", "write") == 3
    assert delta("sanlab_lu_bytes_total", "write") == 3 * 65536
    assert delta("sanlab_lu_commands_total", "read") == 1
    assert delta("sanlab_lu_bytes_total", "read") == 65536
    assert delta("sanlab_lu_errors_total", "write") == 0 and delta("sanlab_lu_errors_total", "read") == 0
    assert delta("sanlab_lu_latency_seconds_count", "write") == 3
    assert delta("sanlab_lu_latency_seconds_count", "read") == 1
    assert delta("sanlab_lu_latency_seconds_sum", "write") > 0
    # The histogram is cumulative and its +Inf bucket is the count.
    buckets = sorted((float(dict(k[1])["le"]), v) for k, v in after.items()
                     if k[0] == "sanlab_lu_latency_seconds_bucket" and dict(k[1])["op"] == "write")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1] == (float("inf"), value(after, "sanlab_lu_latency_seconds_count", op="write", **lu))
    # The bytes really are on the LUN (the counters count what was stored).
    img = (sp.data_dir / "array0-lun0.img").open("rb")
    img.seek(1 << 20)
    assert img.read(65536) == b"\x33" * 65536
    # INQUIRY from iscsi-inq is neither a read nor a write.
    others = value(after, "sanlab_lu_commands_total", op="other", **lu)
    run([need("iscsi-inq"), sp.url(0)])
    third = scrape(http)
    assert value(third, "sanlab_lu_commands_total", op="other", **lu) > others
    assert value(third, "sanlab_lu_commands_total", op="read", **lu) == value(after, "sanlab_lu_commands_total",
                                                                             op="read", **lu)
    # /status.json says the same as the metrics.
    status, ctype, body = get(f"http://{http}/status.json")
    st = json.loads(body)
    assert status == 200 and ctype == "application/json"
    row = st["targets"][0]["luns"][0]
    assert (row["writes"], row["write_bytes"], row["reads"], row["read_bytes"]) == (
        value(third, "sanlab_lu_commands_total", op="write", **lu), value(third, "sanlab_lu_bytes_total", op="write", **lu),
        value(third, "sanlab_lu_commands_total", op="read", **lu), value(third, "sanlab_lu_bytes_total", op="read", **lu))
    assert st["array"]["http"] == http and st["array"]["portals"] == [sp.portal]


def test_sessions_gauge_counts_a_logged_in_host(served: tuple[SanlabProcess, str]) -> None:
    """While a host stays logged in (qemu-io keeps its session open while it sleeps) the gauge shows it."""
    need("qemu-io")
    sp, http = served
    proc = subprocess.Popen(["qemu-io", "-f", "raw", "-c", "sleep 4000", sp.url(0)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while value(scrape(http), "sanlab_sessions", target=TARGET) != 1:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
    finally:
        proc.wait(30)
    deadline = time.monotonic() + 20
    while value(scrape(http), "sanlab_sessions", target=TARGET) != 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_pages_are_served_by_the_array(served: tuple[SanlabProcess, str]) -> None:
    _, http = served
    for path, kind in (("/", "text/html"), ("/topology", "text/html"), ("/sanlab.js", "text/javascript"),
                       ("/sanlab.css", "text/css"), ("/topology.json", "application/json")):
        status, ctype, body = get(f"http://{http}{path}")
        assert status == 200 and ctype.startswith(kind), (path, status, ctype)
        # Everything a page loads comes from the array: no script or stylesheet from elsewhere.
        assert re.search(rb'<(script|link)[^>]*(src|href)="(https?:)?//', body) is None, path
    status, _, body = get(f"http://{http}/nope")
    assert status == 404 and b"no page /nope" in body


def test_http_address_errors_are_named(tmp_path: Path) -> None:
    bad = run([sys.executable, "-m", "sanlab.tools.cli", "serve", "--data-dir", str(tmp_path / "d"),
               "--http", "localhost"], check=False)
    assert bad.returncode == 2 and "--http" in bad.stderr and "HOST:PORT" in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cp = run([sys.executable, "-m", "sanlab.tools.cli", "serve", "--data-dir", str(tmp_path / "d"),
                  "--portal", f"127.0.0.1:{free_port()}", "--http", f"127.0.0.1:{port}", "--log-format", "json"],
                 check=False, timeout=60)
    assert cp.returncode == 2 and "http_bind_failed" in cp.stdout + cp.stderr


class WebArrays(Arrays):
    """A and B of tests/integration/test_sync_pairs.py, each with its status page, each remote naming
    the other's page (``http``) so /topology walks from one to the other."""

    def __init__(self, tmp: Path) -> None:
        self.http_a, self.http_b = f"127.0.0.1:{free_port('127.0.0.1')}", f"127.0.0.2:{free_port('127.0.0.2')}"
        super().__init__(tmp)

    def start(self, which: str) -> SanlabProcess:
        me, peer, host, port, http, peer_portal, peer_http = (
            (A, B, "127.0.0.1", self.pa, self.http_a, f"127.0.0.2:{self.pb}", self.http_b) if which == "a" else
            (B, A, "127.0.0.2", self.pb, self.http_b, f"127.0.0.1:{self.pa}", self.http_a))
        cfg = config(me, peer, peer_portal).replace(f'target = "{peer}"\n',
                                                    f'target = "{peer}"\nhttp = "{peer_http}"\n', 1)
        return start_sanlab(self.tmp / which, cfg, host, port, extra=["--http", http])


@pytest.fixture
def web_arrays(tmp_path: Path) -> Iterator[WebArrays]:
    ar = WebArrays(tmp_path)
    yield ar
    ar.stop()


def pair_state(samples: Samples, role: str) -> set[str]:
    """The states whose sample is 1 for pair p0 (exactly one when the state set is right)."""
    return {dict(k[1])["state"] for k, v in samples.items()
            if k[0] == "sanlab_pair_state" and dict(k[1])["pair"] == "p0" and dict(k[1])["role"] == role and v == 1}


def wait_link_up(http: str, remote: str) -> None:
    deadline = time.monotonic() + 30
    while value(scrape(http), "sanlab_remote_link_up", remote=remote) != 1:
        assert time.monotonic() < deadline, f"link to {remote} not up"
        time.sleep(0.2)


def test_pair_state_metrics_and_topology_follow_a_split(web_arrays: WebArrays) -> None:
    ar = web_arrays
    wait_link_up(ar.http_a, "array-b")
    ar.create()
    ar.wait(ar.a, "PAIR")
    ar.wait(ar.b, "PAIR")
    m = scrape(ar.http_a)
    assert pair_state(m, "P-VOL") == {"PAIR"}
    assert value(m, "sanlab_pair_progress_ratio", pair="p0", role="P-VOL") == 1.0
    assert value(m, "sanlab_pair_copied_bytes", pair="p0", role="P-VOL") == 8 << 20  # the initial copy
    assert value(m, "sanlab_pair_pending_bytes", pair="p0", role="P-VOL") == 0
    assert pair_state(scrape(ar.http_b), "S-VOL") == {"PAIR"}
    ar.ok(ar.a, "pair", "split", "p0")
    ar.wait(ar.b, "SSUS")
    m = scrape(ar.http_a)
    assert pair_state(m, "P-VOL") == {"PSUS"}
    assert value(m, "sanlab_pair_state", pair="p0", role="P-VOL", state="PAIR") == 0
    assert pair_state(scrape(ar.http_b), "S-VOL") == {"SSUS"}
    # A host write to the split P-VOL is pending for the resync, in bytes of whole tracks.
    run(["qemu-io", "-f", "raw", "-c", "write -P 0x44 0 4k", f"iscsi://{ar.a.portal}/{A}/0"])
    assert value(scrape(ar.http_a), "sanlab_pair_pending_bytes", pair="p0", role="P-VOL") == 64 << 10
    # The topology from A walks to B through A's remote and draws one arrow, A to B, in A's state.
    _, _, body = get(f"http://{ar.http_a}/topology.json")
    topo = json.loads(body)
    assert [a["name"] for a in topo["arrays"]] == ["array-a", "array-b"]
    assert all(a["status"] is not None for a in topo["arrays"])
    assert [(link["pair"], link["from"], link["to"], link["state"]) for link in topo["links"]] == [
        ("p0", "array-a", "array-b", "PSUS")]
    # B down: A's page still answers and draws B as unreachable (by the name A calls it).
    ar.b.stop()
    _, _, body = get(f"http://{ar.http_a}/topology.json")
    b_box = json.loads(body)["arrays"][1]
    assert b_box["name"] == "array-b" and b_box["status"] is None and "ConnectionRefusedError" in b_box["error"]


def _browser(shots: Path) -> Any:
    """Headless Chromium from Debian's packages through its chromedriver (no browser download)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
    from selenium.webdriver.chrome.service import Service
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("chromium and chromium-driver are not installed (scripts/install-clients installs them)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for a browser on the Internet
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1100", f"--user-data-dir={shots / 'chromium-profile'}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def _cell(browser: Any, css: str, text: str, timeout: float = 20.0) -> Any:
    """The element ``css`` once it shows ``text`` (the page polls every second)."""
    from selenium.webdriver.common.by import By
    deadline = time.monotonic() + timeout
    while True:
        els = browser.find_elements(By.CSS_SELECTOR, css)
        if els and els[0].text == text:
            return els[0]
        assert time.monotonic() < deadline, f"{css}: {[e.text for e in els]} (wanted {text!r})"
        time.sleep(0.2)


@pytest.mark.slow  # ~17 s of headless Chromium; the HTTP-level tests above stay in the default run
def test_status_page_in_a_browser_shows_a_split(web_arrays: WebArrays, tmp_path: Path) -> None:
    ar = web_arrays
    browser = _browser(tmp_path)
    try:
        wait_link_up(ar.http_a, "array-b")
        ar.create()
        ar.wait(ar.a, "PAIR")
        browser.get(f"http://{ar.http_a}/")
        state = _cell(browser, 'tr[data-pair="p0"] td.state', "PAIR")
        assert state.value_of_css_property("background-color") == "rgba(46, 125, 50, 1)"  # green
        assert _cell(browser, 'tr[data-remote="array-b"] td.state', "up")
        assert browser.title == "sanlab array-a"
        ar.ok(ar.a, "pair", "split", "p0")
        state = _cell(browser, 'tr[data-pair="p0"] td.state', "PSUS")
        assert state.value_of_css_property("background-color") == "rgba(239, 108, 0, 1)"  # amber
        progress = _cell(browser, 'tr[data-pair="p0"] td:nth-child(5)', "100%")
        assert progress is not None
        shot = tmp_path / "status-page.png"
        browser.save_screenshot(str(shot))
        print(f"screenshot of the status page: {shot}")
        browser.get(f"http://{ar.http_a}/topology")
        arrow = _cell(browser, 'tr[data-pair="p0"] td.state', "PSUS")
        assert arrow.value_of_css_property("background-color") == "rgba(239, 108, 0, 1)"
        from selenium.webdriver.common.by import By
        boxes = [e.get_attribute("data-array") for e in browser.find_elements(By.CSS_SELECTOR, "g.array")]
        assert boxes == ["array-a", "array-b"]
        line = browser.find_element(By.CSS_SELECTOR, 'g.link[data-pair="p0"] line')
        assert line.get_attribute("stroke") == "#ef6c00"
        shot = tmp_path / "topology.png"
        browser.save_screenshot(str(shot))
        print(f"screenshot of the topology page: {shot}")
        assert shot.stat().st_size > 10_000
    finally:
        browser.quit()

