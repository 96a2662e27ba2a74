"""Small files replaced whole and durably: the descriptions and states beside volumes.

:func:`replace_json` writes a temporary file, fsyncs it, renames it over the old one and fsyncs
the directory, so after a crash the path holds either the old or the new contents, complete, and
once the call returns the new contents survive power loss.
"""
from __future__ import annotations

import json
import os


def replace_json(path: str, body: object) -> None:
    """Replace ``path`` with ``body`` as JSON, atomically and durably (see the module docstring)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(body).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dfd)  # the rename itself is on disk before the caller goes on
    finally:
        os.close(dfd)
