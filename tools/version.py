"""The installed package's version, as ``sanlab --version``, the start-up log line and the status page give it."""
from __future__ import annotations

from importlib import metadata


def package_version() -> str:
    """``sanlab``'s version from its installed metadata (``0+unknown`` when run from an uninstalled tree)."""
    try:
        return metadata.version("sanlab")
    except metadata.PackageNotFoundError:
        return "0+unknown"
