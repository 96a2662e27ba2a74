"""The management socket removes only a socket file it created itself."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from sanlab.tools.admin import Admin
from sanlab.tools.mgmt import MgmtServer, request


def _listening(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen()
    return s


async def test_stop_leaves_a_socket_that_replaced_its_own(tmp_path: Path) -> None:
    admin = Admin(tmp_path)
    path = tmp_path / "sanlab.sock"
    mgmt = MgmtServer(admin, path)
    await mgmt.start()
    # Another process took the path over (its own socket now lives there).
    path.unlink()
    other = _listening(path)
    try:
        ino = path.stat().st_ino
        await mgmt.stop()
        assert path.exists() and path.stat().st_ino == ino, "stop() removed a socket it did not create"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(str(path))  # still reachable
    finally:
        other.close()
        await admin.close()


async def test_start_refuses_a_live_socket_and_keeps_it(tmp_path: Path) -> None:
    admin = Admin(tmp_path)
    path = tmp_path / "sanlab.sock"
    other = _listening(path)
    try:
        ino = path.stat().st_ino
        with pytest.raises(OSError, match="in use by another running process"):
            await MgmtServer(admin, path).start()
        assert path.stat().st_ino == ino
    finally:
        other.close()
        await admin.close()


async def test_start_refuses_a_path_that_is_not_a_socket(tmp_path: Path) -> None:
    admin = Admin(tmp_path)
    path = tmp_path / "sanlab.sock"
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        await MgmtServer(admin, path).start()
    assert path.read_text() == "not a socket"
    await admin.close()


async def test_start_replaces_a_stale_socket_and_stop_removes_its_own(tmp_path: Path) -> None:
    admin = Admin(tmp_path)
    path = tmp_path / "sanlab.sock"
    _listening(path).close()  # what a killed process leaves: the file, nobody accepting
    assert path.exists()
    mgmt = MgmtServer(admin, path)
    await mgmt.start()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    reply = await mgmt.handle(b'{"op": "show"}')
    assert reply["ok"] is True
    await mgmt.stop()
    assert not path.exists()
    await admin.close()


def test_request_to_a_directory_without_array_says_so(tmp_path: Path) -> None:
    from sanlab.tools.admin import AdminError

    with pytest.raises(AdminError, match="no running array"):
        request(tmp_path, "show")


_CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except PermissionError as exc:
    print(json.dumps({"connect": "EACCES"}))
    sys.exit(0)
try:
    s.sendall(b'{"op": "show", "args": {}}\\n')
except BrokenPipeError:
    pass  # refused at once: the refusal is already waiting to be read
buf = b""
while not buf.endswith(b"\\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
print(buf.decode())
"""


def _as_nobody(path: Path) -> dict[str, object]:
    """A request sent by a process running as ``nobody`` (a real other local user)."""
    import json
    import subprocess
    # The system interpreter: the venv's lives under /root, which the other user cannot enter.
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK):
        pytest.skip("/usr/bin/python3 is needed to run a client as another user")
    cp = subprocess.run([python, "-I", "-c", _CLIENT, str(path)], user="nobody", group="nogroup",
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    reply: dict[str, object] = json.loads(cp.stdout)
    return reply


async def test_another_user_cannot_manage_the_array(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("switching to another uid needs root")
    import asyncio
    import tempfile
    # A directory the other user can reach (pytest's tmp_path is 0700).
    d = Path(tempfile.mkdtemp(prefix="sanlab-mgmt-"))
    os.chmod(d, 0o755)
    admin = Admin(tmp_path)
    path = d / "sanlab.sock"
    mgmt = MgmtServer(admin, path)
    await mgmt.start()
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        assert await asyncio.to_thread(_as_nobody, path) == {"connect": "EACCES"}
        # Made reachable by mistake: the peer's credentials still keep it out.
        os.chmod(path, 0o666)
        reply = await asyncio.to_thread(_as_nobody, path)
        assert reply["ok"] is False
        assert "permission denied: uid 65534 may not manage this array" in str(reply["error"])
        # The owner still gets answers.
        ok = await asyncio.to_thread(request, d, "show")
        assert ok["ok"] is True
    finally:
        await mgmt.stop()
        await admin.close()
        os.rmdir(d)
