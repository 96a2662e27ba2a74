"""Management operations on external volumes: a peer array's LUN mapped as a real volume of this one.

External volumes of the configuration are opened by ``sanlab serve`` (tools/assemble.py) with
:func:`connect_external`; those added at run time (``add-external``) are kept in the catalog and
logged in to again at the next start (:meth:`ExternalOps.load`).
"""
from __future__ import annotations

from typing import Any

import structlog

from sanlab.storage.external import ExternalVolume, LockMode, stable_isid
from sanlab.storage.volume import VolumeError
from sanlab.target.chap import ChapCredentials
from sanlab.target.initiator import InitiatorConfig, IscsiError, IscsiSession
from sanlab.tools.array import AdminError, ArrayState, check_lun

log = structlog.get_logger("sanlab.admin")


async def connect_external(initiator_name: str, name: str, portal: tuple[str, int], target: str, lun: int, *,
                           chap: ChapCredentials | None = None, lock: str = "off",
                           timeout: float = 10.0) -> ExternalVolume:
    """Log in to a peer's LUN and open it as an external volume (config and run-time alike)."""
    icfg = InitiatorConfig(initiator_name=initiator_name, isid=stable_isid(initiator_name, name), chap=chap,
                           command_timeout=timeout, login_timeout=timeout, nop_interval=5.0, nop_timeout=timeout,
                           reconnect=True)
    session = IscsiSession(portal[0], portal[1], target, icfg)
    try:
        vol = ExternalVolume(name, session, lun, lock=LockMode(lock), errors=(IscsiError, OSError))
        await vol.open()
    except (VolumeError, ValueError) as exc:
        await session.close()
        raise VolumeError(f"external volume {name} ({portal[0]}:{portal[1]} {target} LUN {lun}): {exc}") from None
    return vol


class ExternalOps:
    """The external-volume operations of tools/operations.py (``Domain.EXTERNALS``)."""

    def __init__(self, array: ArrayState) -> None:
        self.array = array

    async def load(self) -> None:
        """Log in again to the run-time external volumes of the catalog; one that does not answer is logged."""
        a = self.array
        for e in a.catalog.externals():
            try:
                vol = await connect_external(a.initiator_name, e["name"], (e["host"], e["port"]), e["target"],
                                             e["lun"], lock=e["lock"], timeout=e["timeout"])
            except VolumeError as exc:
                log.error("external_volume_unavailable", name=e["name"], error=str(exc))
                continue
            a.externals[e["name"]] = vol
            a.tables.add_real(e["name"], vol)

    def _check_free(self, name: str) -> None:
        a = self.array
        if name in a.externals or name in a.tables.real or name in a.tables.luv:
            raise AdminError(f"a volume called {name} exists")

    async def add_external(self, name: str, portal: str, target: str, lun: int = 0, lock: str = "off",
                           timeout: float = 10.0) -> dict[str, Any]:
        """Map a peer array's LUN as a real volume of this array (no CHAP at run time yet)."""
        a = self.array
        self._check_free(name)
        host, _, port = portal.rpartition(":")
        if not host or not port.isdigit():
            raise AdminError(f"portal {portal!r} is not HOST:PORT")
        if lock not in ("off", "per-request", "held"):
            raise AdminError("lock is off, per-request or held")
        check_lun(lun, "the peer's LUN")
        host = host.strip("[]")
        # The login (up to ``timeout``) is not held under the change lock: the name is checked again after it.
        try:
            vol = await connect_external(a.initiator_name, name, (host, int(port)), target, lun, lock=lock,
                                         timeout=timeout)
        except VolumeError as exc:
            raise AdminError(str(exc)) from None
        try:
            async with a.changes:
                self._check_free(name)
                async with a.catalog.change() as change:
                    change.add_external(name, host, int(port), target, lun, lock, timeout)
                a.externals[name] = vol
                a.tables.add_real(name, vol)
        except BaseException:
            await vol.close()
            raise
        return {"name": name, "blocks": vol.num_blocks, "block_size": vol.block_size}

    async def remove_external(self, name: str) -> dict[str, Any]:
        """Unmap run-time external volume ``name`` (nothing may map or migrate from it) and log out."""
        a = self.array
        async with a.changes:
            vol = a.externals.get(name)
            if vol is None or not any(e["name"] == name for e in a.catalog.externals()):
                raise AdminError(f"no run-time external volume {name}")
            if any(v.real == name for v in a.tables.vr.values()):
                raise AdminError(f"external volume {name} carries virtual volumes")
            if any(r["source"] == name for r in a.catalog.migrations() if r["state"] != "detached"):
                raise AdminError(f"external volume {name} is a migration source")
            async with a.catalog.change() as change:
                change.delete_external(name)
            del a.externals[name]
            a.tables.real.pop(name, None)
        await vol.close()
        return {"removed": name}

    async def close(self) -> None:
        """Log out of the run-time external volumes (the configured ones are ``sanlab serve``'s to close)."""
        a = self.array
        for name in [e["name"] for e in a.catalog.externals()]:
            vol = a.externals.pop(name, None)
            if vol is not None:
                await vol.close()
