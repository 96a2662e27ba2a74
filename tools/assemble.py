"""Assembling the array from its configuration: RAID groups opened, external volumes logged in to,
each LUN's volume (file, RAID group or external; encrypted where the configuration says so) under a
logical unit, the device servers and targets with their CHAP and ACLs, and the iSCSI server over
them (:func:`build_server`).

``sanlab serve`` (tools/cli.py) calls these in order at start-up and then runs what they built;
tests build an array in-process the same way.
"""
from __future__ import annotations

import hmac
import os
from typing import Callable

import structlog

from sanlab.replication.cmddev import COMMAND_DEVICE_KIND, CommandDeviceUnit
from sanlab.scsi.device_server import DeviceServer
from sanlab.scsi.lu import LogicalUnit, LuConfig
from sanlab.storage.external import ExternalVolume
from sanlab.storage.file_volume import FileVolume
from sanlab.storage.raid import RaidGroup
from sanlab.storage.raid_files import open_group
from sanlab.storage.raid_volume import RaidVolume
from sanlab.storage.volume import Volume, VolumeError
from sanlab.target.chap import ChapCredentials
from sanlab.target.login import TargetAuth
from sanlab.target.server import IscsiServer, ServerSettings, Target
from sanlab.tools.cmddev_ops import CommandDeviceRef
from sanlab.tools.config import ArrayConfig, LunConfig, TargetConfig
from sanlab.tools.encryption import EncryptionPlan, LunKey, check_keys, encrypt_volume, plan_encryption
from sanlab.tools.external_ops import connect_external
from sanlab.tools.pair_ops import PairManagerRef

log = structlog.get_logger("sanlab.tools.assemble")


def _incoming(tc: TargetConfig) -> Callable[[str, str], bytes | None] | None:
    """CHAP secret lookup for (initiator name, CHAP_N): per-initiator entries first, then the target's."""
    if tc.chap is None and not tc.initiator_chap:
        return None
    per_init = dict(tc.initiator_chap)
    shared = tc.chap

    def lookup(initiator: str, username: str) -> bytes | None:
        entry = per_init.get(initiator)
        if entry is not None:
            return entry.secret.encode() if hmac.compare_digest(entry.username, username) else None
        if shared is not None and hmac.compare_digest(shared.username, username):
            return shared.secret.encode()
        return None

    return lookup


def open_raid_groups(cfg: ArrayConfig) -> dict[str, RaidGroup]:
    """Open (create on first start) every configured RAID group.

    The data directory is the array's own, so missing directories for drives inside it (such
    as ``drives/`` of ``drives = ["drives/d0.img", ...]``) are created; a drive elsewhere needs
    its directory to exist (a typo must not create directories anywhere on the system).
    """
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    data_dir = os.path.realpath(cfg.data_dir)
    groups = {}
    for i, rg in enumerate(cfg.raid_groups):
        for j, drive in enumerate(rg.drives):
            folder = os.path.realpath(drive.parent)
            if not os.path.isdir(folder):
                if os.path.commonpath([folder, data_dir]) != data_dir:
                    raise VolumeError(f"{cfg.source}: raid_groups[{i}].drives[{j}]: directory {drive.parent} does "
                                      f"not exist (only directories inside the data directory {cfg.data_dir} are "
                                      "created)")
                os.makedirs(folder, exist_ok=True)
        groups[rg.name] = open_group(rg.name, rg.level, [str(p) for p in rg.drives], rg.drive_size,
                                     rg.stripe_size, str(cfg.data_dir))
        log.info("raid_group_ready", name=rg.name, level=rg.level, drives=len(rg.drives),
                 capacity=groups[rg.name].capacity, degraded=groups[rg.name].degraded)
    return groups


async def open_external_volumes(cfg: ArrayConfig) -> dict[str, ExternalVolume]:
    """Log in to every peer LUN configured as an external volume."""
    out: dict[str, ExternalVolume] = {}
    for ec in cfg.external_volumes:
        chap = ChapCredentials(ec.chap.username, ec.chap.secret.encode()) if ec.chap else None
        out[ec.name] = await connect_external(cfg.initiator_name, ec.name, ec.portal, ec.target, ec.lun, chap=chap,
                                             lock=ec.lock, timeout=ec.timeout)
    return out


def _lun_volume(lc: LunConfig, groups: dict[str, RaidGroup],
                externals: dict[str, ExternalVolume] | None = None, plan: EncryptionPlan | None = None) -> Volume:
    vol = _clear_volume(lc, groups, externals)
    return vol if plan is None else encrypt_volume(vol, plan)


def _clear_volume(lc: LunConfig, groups: dict[str, RaidGroup],
                  externals: dict[str, ExternalVolume] | None = None) -> Volume:
    if lc.external is not None:
        assert externals is not None
        return externals[lc.external]
    if lc.raid_group is not None:
        vol = RaidVolume(groups[lc.raid_group], lc.block_size)
        if lc.size and lc.size // lc.block_size > vol.num_blocks:
            raise ValueError(f"LUN {lc.lun}: {lc.size} bytes do not fit RAID group {lc.raid_group}")
        return vol
    lc.file.parent.mkdir(parents=True, exist_ok=True)
    return FileVolume(str(lc.file), file_lun_size(lc), lc.block_size, readonly=lc.readonly, thin=lc.thin)


def file_lun_size(lc: LunConfig) -> int:
    """Bytes the file-backed LUN ``lc`` opens with: the configured ``size``, or the file's length
    (whole blocks) when that is larger.

    ``sanlab admin resize-lun`` grows a LUN by extending its file; letting the longer file win
    keeps the new capacity across a restart without a second record of it, and a restart never
    shrinks a LUN (that would cut off blocks hosts hold data in).  ``size`` is thus the size a
    missing file is created with and the least the LUN has.
    """
    try:
        length = os.stat(lc.file).st_size
    except FileNotFoundError:
        return lc.size
    blocks = length // lc.block_size
    if blocks * lc.block_size <= lc.size:
        return lc.size
    log.info("lun_size_from_file", file=str(lc.file), configured=lc.size, size=blocks * lc.block_size)
    return blocks * lc.block_size


def build_server(cfg: ArrayConfig, groups: dict[str, RaidGroup] | None = None,
                 externals: dict[str, ExternalVolume] | None = None, pairs: PairManagerRef | None = None,
                 cmddevs: CommandDeviceRef | None = None,
                 crypt: dict[LunKey, EncryptionPlan] | None = None) -> IscsiServer:
    """Wire volumes, logical units, device servers and the iSCSI front end from a config.

    With ``pairs`` the disk LUs also answer the pair-control commands (replication/control.py),
    through the pair manager the reference is given later (tools/pair_ops.py); command devices
    dispatch through the router ``cmddevs`` is given later (tools/cmddev_ops.py).  Encrypted LUNs
    are wrapped as ``crypt`` plans them (tools/encryption.py; planned here when not given)."""
    kinds = {"disk": (pairs or PairManagerRef()).disk_kind(),
             COMMAND_DEVICE_KIND: (cmddevs or CommandDeviceRef()).kind()}
    if crypt is None:
        crypt = plan_encryption(cfg)
        check_keys(cfg, crypt)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    if groups is None:
        groups = open_raid_groups(cfg)
    targets = []
    for tc in cfg.targets:
        luns: dict[int, LogicalUnit] = {}
        for lc in tc.luns:
            if lc.command_device:
                luns[lc.lun] = CommandDeviceUnit(tc.name, lc.lun)
                log.info("lun_ready", target=tc.name, lun=lc.lun, command_device=True)
                continue
            vol = _lun_volume(lc, groups, externals, crypt.get((tc.name, lc.lun)))
            lu_cfg = LuConfig.for_lun(tc.name, lc.lun, readonly=lc.readonly, thin=lc.thin, removable=lc.removable,
                                       sanitize_rate=lc.sanitize_rate,
                                       physical_block_size=lc.physical_block_size)
            luns[lc.lun] = LogicalUnit(vol, lu_cfg)
            log.info("lun_ready", target=tc.name, lun=lc.lun, raid_group=lc.raid_group, external=lc.external,
                     file=None if lc.raid_group or lc.external else str(lc.file), size=vol.num_blocks * vol.block_size,
                     block_size=lc.block_size, encrypted=(tc.name, lc.lun) in crypt)
        if tc.initiators is None:
            # An ACL-less target admits any initiator that can reach a portal (docs/security.md).
            log.warning("target_without_acl", target=tc.name, chap=tc.chap is not None or bool(tc.initiator_chap))
        auth = TargetAuth(
            name=tc.name, alias=tc.alias,
            acl=frozenset(tc.initiators) if tc.initiators is not None else None,
            incoming=_incoming(tc),
            outgoing=ChapCredentials(tc.mutual_chap.username, tc.mutual_chap.secret.encode())
            if tc.mutual_chap else None)
        targets.append(Target(auth=auth, device_server=DeviceServer(tc.name, luns, state_dir=cfg.data_dir, kinds=kinds)))
    s = cfg.server
    settings = ServerSettings(cmd_window=s.cmd_window, nop_interval=s.nop_interval, nop_timeout=s.nop_timeout,
                              tpgt=s.tpgt, max_sessions_per_target=s.max_sessions_per_target,
                              max_sessions_per_initiator=s.max_sessions_per_initiator)
    return IscsiServer(targets, s.portals, settings)
