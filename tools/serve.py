"""``sanlab serve``: the array's run from start-up to shutdown (config, data-directory lock, keys, RAID
recovery, external volumes, the target, the management socket, the status page; then SIGINT/SIGTERM)."""
from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import structlog

from sanlab.replication.link import format_portal
from sanlab.storage.volume import VolumeError
from sanlab.target.capture import HUB
from sanlab.target.server import IscsiServer
from sanlab.tools import diagnostics
from sanlab.tools.admin import Admin, AdminError
from sanlab.tools.assemble import build_server, open_external_volumes, open_raid_groups
from sanlab.tools.capture import InterfaceCapture, PcapFileWriter, start_capture
from sanlab.tools.capture_cli import absolute
from sanlab.tools.cmddev_ops import CommandDeviceRef
from sanlab.tools.config import ArrayConfig, ConfigError, load_config, parse_portal
from sanlab.tools.datadir import DataDirBusy, DataDirLock
from sanlab.tools.encryption import check_keys, plan_encryption
from sanlab.tools.http import HttpServer
from sanlab.tools.logging import setup_logging
from sanlab.tools.mgmt import SOCKET_NAME, MgmtServer
from sanlab.tools.pair_ops import PairManagerRef
from sanlab.tools.version import package_version as _version

log = structlog.get_logger("sanlab.tools.cli")


async def _serve(cfg: ArrayConfig, capture_interface: str | None = None) -> int:
    if capture_interface is not None and cfg.capture_file is not None:
        ports = [p for _, p in cfg.server.portals] + [p for r in cfg.remotes for _, p in r.portals]
        try:
            dumpcap = await asyncio.to_thread(InterfaceCapture, cfg.capture_file, capture_interface, ports)
        except AdminError as exc:
            log.error("capture_failed", error=str(exc))
            return 2
        try:
            return await _serve_captured(cfg, None)
        finally:
            await asyncio.to_thread(dumpcap.stop)
    # The capture starts first, so every connection (external volumes' and links' logins too) is in it
    # from its SYN; Admin.close stops it last.
    capture = start_capture(cfg.capture_file) if cfg.capture_file is not None else None
    try:
        return await _serve_captured(cfg, capture)
    finally:
        if capture is not None and HUB.active:  # Admin.close did not get to it (a failed start)
            HUB.stop()
            await asyncio.to_thread(capture.close)


async def _serve_captured(cfg: ArrayConfig, capture: PcapFileWriter | None) -> int:
    # Keys first: a bad key file or a wrong key stops the array before any drive or file is opened.
    crypt = plan_encryption(cfg)
    check_keys(cfg, crypt)
    groups = open_raid_groups(cfg)
    for name, g in groups.items():
        regions, fixed = await g.recover()  # parity of regions a crash left dirty (write-intent bitmap)
        if regions:
            log.warning("raid_parity_resynced", group=name, regions=regions, repaired_stripes=fixed)
    externals = await open_external_volumes(cfg)
    pairs = PairManagerRef()
    cmddevs = CommandDeviceRef()
    server = build_server(cfg, groups, externals, pairs, cmddevs, crypt)
    # The catalog's LUs are exported before the portals open, and the management socket is up by then.
    admin = Admin(cfg.data_dir, {t.name: t.device_server for t in server.targets.values()},
                  externals=dict(externals), initiator_name=cfg.initiator_name, config=cfg, pairs=pairs,
                  cmddevs=cmddevs, config_groups=groups)
    if capture is not None:
        admin.capture_ops.adopt(capture)
    await admin.load()
    mgmt = MgmtServer(admin, cfg.data_dir / SOCKET_NAME)
    await mgmt.start()
    http: HttpServer | None = None
    try:
        # The status page is up before the portals open: once a host can log in, it can be watched.
        http = await _start_http(cfg, server, admin)
        await server.start()
    except OSError as exc:
        if http is None and cfg.server.http is not None:
            log.error("http_bind_failed", error=str(exc), address=format_portal(*cfg.server.http))
        else:
            log.error("portal_bind_failed", error=str(exc), portals=[f"{h}:{p}" for h, p in cfg.server.portals])
        if http is not None:
            await http.stop()
        await mgmt.stop()
        for t in server.targets.values():
            await t.device_server.close()
        await admin.close()
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    diagnostics.install(loop)
    # What start-up built (modules, tables, the catalog's objects) lives as long as the process:
    # out of the collector's sight, a full collection walks only what serving allocates.
    gc.collect()
    gc.freeze()
    log.info("sanlab_serving", version=_version(), targets=[t.name for t in cfg.targets],
             data_dir=str(cfg.data_dir), config=cfg.source)
    await stop.wait()
    log.info("shutdown_requested")
    if http is not None:
        await http.stop()
    await mgmt.stop()
    await server.stop()
    # Hosts are gone: the supervisor stops tiering, migrations' copies, scrubs and rebuilds in that
    # order, each after the unit in hand; then the catalog's groups and the catalog close.
    await admin.close()
    return 0


async def _start_http(cfg: ArrayConfig, server: IscsiServer, admin: Admin) -> HttpServer | None:
    """The status page and metrics server, listening, when ``--http`` (``server.http``) asks for one
    (OSError when it cannot listen: the array then stops as for a portal)."""
    if cfg.server.http is None:
        return None
    from sanlab.tools.status import ArrayView  # prometheus_client only when asked for (sanlab[http])
    from sanlab.tools.status_http import status_server
    host, port = cfg.server.http
    view = ArrayView(cfg, server, admin, _version(), started=time.time())
    http = status_server(view, host, port)
    await http.start()
    bound_host, bound_port = http.address
    view.http = f"{bound_host}:{bound_port}"
    return http


def cmd_serve(args: argparse.Namespace) -> int:
    """``sanlab serve``: load the config, lock the data directory, run the array until SIGINT/SIGTERM."""
    setup_logging(args.log_format, args.log_level)
    try:
        cfg = load_config(args.config, args.data_dir)
        if args.portal:
            cfg.server.portals = [parse_portal(p, "--portal", "--portal") for p in args.portal]
        if args.http:
            cfg.server.http = parse_portal(args.http, "--http", "--http")
        if cfg.server.http is not None:
            try:
                import prometheus_client  # noqa: F401 - checked before anything is opened
            except ImportError:
                print("sanlab: --http needs prometheus_client (pip install 'sanlab[http]')", file=sys.stderr)
                return 2
        if args.capture:
            cfg.capture_file = Path(absolute(args.capture))
        if args.capture_interface and cfg.capture_file is None:
            raise ConfigError("--capture-interface", "capture.file", "--capture-interface needs --capture FILE.pcap")
        # The data directory itself is made at start; any other directory must be there.
        if cfg.capture_file is not None and not cfg.capture_file.parent.is_dir() \
                and cfg.capture_file.parent != cfg.data_dir:
            raise ConfigError("--capture" if args.capture else cfg.source, "capture.file",
                              f"directory {cfg.capture_file.parent} does not exist")
    except ConfigError as exc:
        print(f"sanlab: config error: {exc}", file=sys.stderr)
        return 2
    runner: Callable[..., int]
    try:
        import uvloop  # optional: a faster event loop when installed (sanlab[fast])

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    # One array per data directory, decided before anything in it is opened, created or removed:
    # a second `sanlab serve` must not open the catalog and drives, log in to external volumes or
    # replace the management socket of the array already running there (tools/datadir.py).
    lock = DataDirLock(cfg.data_dir)
    try:
        lock.acquire()
    except DataDirBusy as exc:
        print(f"sanlab: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"sanlab: cannot lock data directory {cfg.data_dir}: {exc}", file=sys.stderr)
        return 1
    try:
        return runner(_serve(cfg, args.capture_interface))
    except (OSError, ValueError, VolumeError) as exc:
        print(f"sanlab: {exc}", file=sys.stderr)
        return 1
    finally:
        lock.release()
