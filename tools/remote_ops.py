"""Management operations on remotes: the named peer arrays this one replicates to (issue 14).

A remote comes from the configuration (``[[remotes]]``) or from ``sanlab remote add`` (kept in the
catalog, back after a restart).  Each has a link (replication/link.py): this array's session to the
remote's target, kept open by a task of kind ``link`` under the array's supervisor, which stops it
last at shutdown (tools/array.py's ``SHUTDOWN_ORDER``).

**The configuration is authoritative.**  A remote the configuration declares cannot be added,
changed or deleted at run time (edit the file and restart: that file is what an administrator
keeps under version control, and what the next start reads anyway).  If the catalog holds a remote
of the same name — added at run time before the file declared it — the file's wins at start, the
catalog's row is ignored with a ``remote_shadowed`` warning, and ``sanlab remote delete NAME``
removes that stale row (the configured remote and its link stay).

Secrets go from the request to the catalog and the link, and nowhere else: ``display`` shows
``chap``/``mutual_chap`` as booleans, and the management socket logs secret arguments as ``***``
(tools/operations.py marks them).
"""
from __future__ import annotations

from typing import Callable, Any

import structlog

from sanlab.replication.link import Link, LinkSettings, Remote, format_portal
from sanlab.storage.catalog import RemoteRow
from sanlab.storage.supervisor import SupervisorError
from sanlab.target.chap import ChapCredentials
from sanlab.tools.array import AdminError, ArrayState
from sanlab.tools.config import (
    REMOTE_NAME_RE, REMOTE_NAME_RULE, ChapSecret, ConfigError, RemoteConfig, check_chap_pair, is_iscsi_name,
    parse_portal,
)

log = structlog.get_logger("sanlab.admin")

CONFIG = "config"
CATALOG = "catalog"


def _credentials(secret: ChapSecret | None) -> ChapCredentials | None:
    return ChapCredentials(secret.username, secret.secret.encode()) if secret is not None else None


def remote_from_config(rc: RemoteConfig) -> Remote:
    """The :class:`Remote` a ``[[remotes]]`` table declares."""
    return Remote(rc.name, tuple(rc.portals), rc.target, _credentials(rc.chap), _credentials(rc.mutual_chap))


def remote_from_row(row: RemoteRow) -> Remote:
    """The :class:`Remote` a catalog row holds."""
    chap = ChapCredentials(row.chap_user, row.chap_secret.encode()) \
        if row.chap_user is not None and row.chap_secret is not None else None
    mutual = ChapCredentials(row.mutual_user, row.mutual_secret.encode()) \
        if row.mutual_user is not None and row.mutual_secret is not None else None
    return Remote(row.name, row.portals, row.target, chap, mutual)


class RemoteOps:
    """The remote operations of tools/operations.py (``Domain.REMOTES``) and the links they start."""

    def __init__(self, array: ArrayState, settings: LinkSettings | None = None) -> None:
        self.array = array
        self.settings = settings or LinkSettings()
        """How every link logs in, pings and backs off."""
        self.sources: dict[str, str] = {}
        """Each remote's origin: ``config`` or ``catalog``."""
        self.users_of: Callable[[str], list[str]] = lambda _name: []
        """What uses a remote (set by the pair operations: the pairs whose S-VOL is there)."""

    # --- start and the links ----------------------------------------------------------------

    async def load(self) -> None:
        """Start a link to every remote: the configuration's, then the catalog's (the file wins a name)."""
        a = self.array
        for rc in a.config.remotes if a.config is not None else []:
            self._start(remote_from_config(rc), CONFIG)
        for row in a.catalog.remotes():
            if row.name in self.sources:
                log.warning("remote_shadowed", remote=row.name, config=a.config.source if a.config else None,
                            note="the configuration's remote of this name is used; `sanlab remote delete "
                                 f"{row.name}` removes the run-time one from the catalog")
                continue
            self._start(remote_from_row(row), CATALOG)

    def _start(self, remote: Remote, source: str) -> None:
        """Make the remote's link and run it under the supervisor."""
        a = self.array
        link = Link(remote, a.initiator_name, self.settings)
        a.links[remote.name] = link
        self.sources[remote.name] = source
        log.info("remote_ready", remote=remote.name, portals=remote.portal_texts(), target=remote.target,
                 chap=remote.chap is not None, mutual_chap=remote.mutual_chap is not None, source=source)
        try:
            a.supervisor.start("link", remote.name, link.run(), stop=link.stop_event, remote=remote.name)
        except SupervisorError as exc:  # shutting down: the link is not needed any more
            log.warning("link_not_started", remote=remote.name, reason=str(exc))

    def users(self, name: str) -> list[str]:
        """What uses remote ``name`` and forbids deleting it: the pairs whose S-VOL is there.

        The pair operations fill this in (:attr:`users_of`: ``pair NAME`` for each pair whose
        ``--remote`` is ``name``); :meth:`delete_remote` refuses while it returns anything.
        """
        return self.users_of(name)

    # --- operations -------------------------------------------------------------------------

    async def add_remote(self, name: str, portals: list[str], target: str, chap_user: str | None = None,
                         chap_secret: str | None = None, mutual_user: str | None = None,
                         mutual_secret: str | None = None) -> dict[str, Any]:
        """Declare remote NAME at run time, keep it in the catalog, and start its link."""
        a = self.array
        remote = self._checked(name, portals, target, chap_user, chap_secret, mutual_user, mutual_secret)
        async with a.changes:
            self._check_free(name)
            async with a.catalog.change() as change:
                change.add_remote(RemoteRow(name, remote.portals, target, chap_user, chap_secret, mutual_user,
                                            mutual_secret))
            self._start(remote, CATALOG)
        return self._describe(name)

    @staticmethod
    def _checked(name: str, portals: list[str], target: str, chap_user: str | None, chap_secret: str | None,
                 mutual_user: str | None, mutual_secret: str | None) -> Remote:
        """The remote a request describes, or AdminError naming what is wrong (never a secret)."""
        if not REMOTE_NAME_RE.match(name):
            raise AdminError(f"{name!r} is not a remote name ({REMOTE_NAME_RULE})")
        if not portals:
            raise AdminError("a remote needs at least one portal HOST:PORT")
        if not is_iscsi_name(target):
            raise AdminError(f"target {target!r} is not an iSCSI name (iqn./eui./naa.)")
        try:
            parsed = tuple(parse_portal(p, "add-remote", "portal") for p in portals)
            chap = check_chap_pair(chap_user, chap_secret, "add-remote", "chap_user", "chap_secret")
            mutual = check_chap_pair(mutual_user, mutual_secret, "add-remote", "mutual_user", "mutual_secret")
        except ConfigError as exc:
            raise AdminError(f"{exc.key}: {exc.reason}") from None
        if len(set(parsed)) != len(parsed):
            raise AdminError("a portal is given twice")
        if mutual is not None and chap is None:
            raise AdminError("mutual CHAP (mutual_user, mutual_secret) needs chap_user and chap_secret as well")
        if mutual is not None and chap is not None and mutual.secret == chap.secret:
            raise AdminError("mutual_secret must differ from chap_secret (RFC 7143 §12.1.3)")
        return Remote(name, parsed, target, _credentials(chap), _credentials(mutual))

    def _check_free(self, name: str) -> None:
        source = self.sources.get(name)
        if source == CONFIG:
            where = self.array.config.source if self.array.config is not None else "the configuration"
            raise AdminError(f"a remote called {name} exists: it is declared in {where}")
        if source is not None:
            raise AdminError(f"a remote called {name} exists (added at run time)")

    async def delete_remote(self, name: str) -> dict[str, Any]:
        """Forget run-time remote NAME: out of the catalog, its link logged out."""
        a = self.array
        async with a.changes:
            source = self.sources.get(name)
            if source is None:
                raise AdminError(f"no remote {name}")
            in_catalog = any(r.name == name for r in a.catalog.remotes())
            if source == CONFIG:
                where = a.config.source if a.config is not None else "the configuration"
                if not in_catalog:
                    raise AdminError(f"remote {name} is declared in {where}: remove it there (and restart)")
                # The catalog's row of the same name was shadowed at start: removing it is all there is to do.
                async with a.catalog.change() as change:
                    change.delete_remote(name)
                return {"removed": name, "source": CATALOG,
                        "note": f"the run-time definition is gone; the one in {where} stays in use"}
            users = self.users(name)
            if users:
                raise AdminError(f"remote {name} is in use by {', '.join(users)}")
            async with a.catalog.change() as change:
                change.delete_remote(name)
            del self.sources[name]
            link = a.links.pop(name)
        await a.supervisor.stop("link", name)  # logs out (bounded) outside the change lock
        log.info("remote_deleted", remote=name, target=link.remote.target)
        return {"removed": name, "source": CATALOG}

    def display_remotes(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every remote (or NAME) with its link state; secrets shown only as whether there are any."""
        if name is not None:
            if name not in self.array.links:
                raise AdminError(f"no remote {name}")
            return [self._describe(name)]
        return [self._describe(n) for n in sorted(self.array.links)]

    def _describe(self, name: str) -> dict[str, Any]:
        link = self.array.links[name]
        r = link.remote
        return {"name": r.name, "portals": [format_portal(h, p) for h, p in r.portals], "target": r.target,
                "chap": r.chap is not None, "mutual_chap": r.mutual_chap is not None, **link.state.describe(),
                "source": self.sources[name]}
