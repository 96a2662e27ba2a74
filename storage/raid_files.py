"""A named RAID group's files in a data directory: ``raid-<name>.json`` (its description),
``.state`` (member states), ``.bitmap`` (write-intent) and ``.rebuilt`` (rebuild ahead-map)."""
from __future__ import annotations

import json
import os

import structlog

from sanlab.storage.drive import Drive
from sanlab.storage.raid import RaidGroup
from sanlab.storage.raid_layout import Layout, RaidLevel
from sanlab.storage.durable import replace_json
from sanlab.storage.raid_state import GroupStateFile
from sanlab.storage.volume import VolumeError

log = structlog.get_logger("sanlab.storage.raid_files")


def open_group(name: str, level: int, drive_paths: list[str], drive_size: int, stripe_size: int,
               meta_dir: str) -> RaidGroup:
    """Open (or, the first time, create) a named RAID group whose description lives in ``meta_dir``.

    The first start creates the drive files and writes ``raid-<name>.json``.  Later
    starts open the drives without creating them: a drive file that has gone
    missing is a failed member (the group runs degraded), never a blank one.

    Creating makes no directories (the caller decides where drives may go: the management
    socket refuses a missing directory, the config creates those inside the data directory)
    and is all or nothing: the layout is checked before any file exists, and a failure removes
    the drive files, bitmap and description it made, so a retry starts from a clean slate.
    """
    meta_path = os.path.join(meta_dir, f"raid-{name}.json")
    state_path = os.path.join(meta_dir, f"raid-{name}.state")
    bitmap_path = os.path.join(meta_dir, f"raid-{name}.bitmap")
    exists = os.path.exists(meta_path)
    drive_paths = list(drive_paths)
    record = GroupStateFile(state_path).load().rebuild if exists else None
    if not exists and os.path.exists(state_path):
        os.unlink(state_path)  # left by a deleted group of the same name: not this group's
    if record is not None and 0 <= record.index < len(drive_paths):
        # The state file names the replacement before the drive list does (flush order rule 2):
        # a crash between the two leaves the list behind, and the record wins.
        drive_paths[record.index] = record.path
    want = {"name": name, "level": int(level), "drives": drive_paths, "drive_size": drive_size,
            "stripe_size": stripe_size}
    if exists:
        with open(meta_path) as f:
            have = json.load(f)
        stale_list = False
        if record is not None and isinstance(have.get("drives"), list) and record.index < len(have["drives"]):
            stale_list = have["drives"][record.index] != record.path
            have["drives"][record.index] = record.path
        if have != want:
            raise VolumeError(f"RAID group {name}: the configuration differs from {meta_path} "
                              f"(on disk {have}, configured {want})")
        if stale_list:
            replace_json(meta_path, want)
    else:
        layout = Layout(RaidLevel(level), len(drive_paths), stripe_size, drive_size)  # ValueError: nothing made yet
        if layout.capacity <= 0:
            raise ValueError(f"a {drive_size}-byte drive holds no whole {stripe_size}-byte stripe")
        for p in drive_paths:
            d = os.path.dirname(p) or "."
            if not os.path.isdir(d):
                raise VolumeError(f"RAID group {name}: drive {p}: directory {d} does not exist")
    made = [] if exists else [p for p in (*drive_paths, bitmap_path, state_path, state_path + ".tmp",
                                          os.path.splitext(state_path)[0] + ".rebuilt", meta_path + ".tmp")
                              if not os.path.lexists(p)]
    drives: list[Drive] = []
    group: RaidGroup | None = None
    try:
        drives = [Drive(p, drive_size, create=not exists) for p in drive_paths]
        if not exists and (bad := [d.error or d.path for d in drives if not d.readable]):
            raise VolumeError(f"RAID group {name}: cannot create drive files {', '.join(bad)}")
        for i, member in enumerate(drives):
            if member.error is not None:  # missing, unreadable or cut short: the group starts without it
                log.error("drive_unavailable", group=name, index=i, drive=member.path, error=member.error)
        group = RaidGroup(level, drives, stripe_size, bitmap_path, state_path)
        if not exists:
            replace_json(meta_path, want)
    except BaseException:
        if group is not None and group.bitmap is not None:
            group.bitmap.close()
        for drive in drives:
            drive.close()
        for p in made:
            if os.path.lexists(p):
                os.unlink(p)
        raise
    return group


def replace_drive_path(meta_dir: str, name: str, index: int, path: str) -> None:
    """Record ``path`` as member ``index`` in ``raid-<name>.json`` (after :meth:`RaidGroup.begin_rebuild`)."""
    meta_path = os.path.join(meta_dir, f"raid-{name}.json")
    with open(meta_path) as f:
        desc = json.load(f)
    desc["drives"][index] = path
    replace_json(meta_path, desc)
