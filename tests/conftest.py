"""Shared fixtures: real `sanlab serve` processes on loopback ports."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
from hypothesis import settings

# CI runs the property tests on a fixed sequence of examples, so that a run is reproducible and
# a failure is the change's, not the draw's; locally they explore (HYPOTHESIS_PROFILE=ci to pin).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parent.parent
TARGET = "iqn.2026-11.org.sanlab:array0"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def need(tool: str) -> str:
    """Path of a required external client; missing tools fail loudly (CI installs them)."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed (apt-get install libiscsi-bin qemu-utils)")
    return path


@dataclass
class SanlabProcess:
    """A running `sanlab serve`."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    data_dir: Path
    log_path: Path
    killed: bool = False
    """Killed on purpose by the test (no clean-exit check at teardown)."""

    @property
    def portal(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, lun: int = 0, target: str = TARGET, user: str | None = None, secret: str | None = None,
            **args: str) -> str:
        cred = f"{user}%{secret}@" if user else ""
        q = ("?" + "&".join(f"{k}={v}" for k, v in args.items())) if args else ""
        return f"iscsi://{cred}{self.portal}/{target}/{lun}{q}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if sig == signal.SIGKILL:
            self.killed = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"sanlab did not stop within {timeout}s:\n{self.log()[-4000:]}")
        return int(self.proc.returncode)


def start_sanlab(tmp: Path, config: str | None = None, host: str = "127.0.0.1", port: int | None = None,
                 extra: list[str] | None = None) -> SanlabProcess:
    port = port or free_port(host)
    data_dir = tmp / "data"
    args = [sys.executable, "-m", "sanlab.tools.cli", "serve", "--data-dir", str(data_dir),
            "--portal", f"{host}:{port}", "--log-format", "json", "--log-level", "debug"]
    if config is not None:
        cfg = tmp / "sanlab.toml"
        cfg.write_text(config)
        args += ["--config", str(cfg)]
    args += extra or []
    log_path = tmp / f"sanlab-{port}.log"
    logf = open(log_path, "wb")
    proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, cwd=tmp)
    sp = SanlabProcess(proc, host, port, data_dir, log_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sanlab exited with {proc.returncode}:\n{sp.log()}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return sp
        except OSError:
            time.sleep(0.05)
    sp.stop(signal.SIGKILL)
    raise AssertionError(f"sanlab did not listen on {host}:{port}:\n{sp.log()}")


@pytest.fixture
def sanlab_factory(tmp_path: Path) -> Iterator[Callable[..., SanlabProcess]]:
    """Start `sanlab serve` processes; each is stopped (SIGTERM, clean exit asserted) at teardown."""
    started: list[SanlabProcess] = []

    def factory(config: str | None = None, **kw: object) -> SanlabProcess:
        sub = tmp_path / f"s{len(started)}"
        sub.mkdir()
        sp = start_sanlab(sub, config, **kw)  # type: ignore[arg-type]
        started.append(sp)
        return sp

    yield factory
    for sp in started:
        rc = sp.stop()
        if sp.killed:
            continue
        assert rc == 0, f"sanlab exited with {rc}:\n{sp.log()[-4000:]}"
        assert "connection_crashed" not in sp.log(), sp.log()[-4000:]


@pytest.fixture
def sanlab(sanlab_factory: Callable[..., SanlabProcess]) -> SanlabProcess:
    """One `sanlab serve` on the embedded default config (a small LUN would be faster, but this is the default)."""
    return sanlab_factory()


def run(cmd: list[str], timeout: float = 120, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.update(env or {})
    cp = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, env=full_env)
    if check and cp.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}")
    return cp
