"""Encrypted LUNs and RAID groups of the config: keys loaded, headers found, volumes wrapped.

Planned before anything is opened (:func:`plan_encryption`), so a bad key file or a wrong key
stops the array with a message naming the file, the key and the reason before a single drive or
LUN file is created or written; the wrapping itself is storage/encrypted.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sanlab.storage.encrypted import (EncryptedVolume, EncryptionError, holds_data, key_from_env, load_key_file,
                                      open_data_key, open_encrypted)
from sanlab.storage.volume import Volume
from sanlab.tools.config import ArrayConfig, EncryptionConfig, LunConfig

LunKey = tuple[str, int]
"""(target name, LUN)."""


@dataclass(slots=True)
class EncryptionPlan:
    """How one LUN's volume is to be encrypted."""

    header_path: str
    """The volume's encryption header: ``<file>.crypt``, or ``raid-<group>.crypt`` in the data directory."""
    kek: bytes = field(repr=False)
    """The operator's key (never in a repr)."""
    may_create: bool
    """No header yet and no data: the first start makes the data key."""
    what: str
    """The volume, for messages."""


def load_key(enc: EncryptionConfig) -> bytes:
    """The operator's key from the key file or the environment variable the config names."""
    if enc.key_file is not None:
        return load_key_file(str(enc.key_file))
    assert enc.key_env is not None  # config.py: exactly one of the two
    return key_from_env(enc.key_env)


def _plan_one(cfg: ArrayConfig, lc: LunConfig, where: str) -> EncryptionPlan | None:
    groups = {g.name: g for g in cfg.raid_groups}
    group = groups.get(lc.raid_group) if lc.raid_group is not None else None
    enc = lc.encryption or (group.encryption if group is not None else None)
    if enc is None:
        return None
    try:
        kek = load_key(enc)
    except EncryptionError as exc:
        raise EncryptionError(f"{cfg.source}: {where}: {exc}") from None
    if group is not None:
        header = str(cfg.data_dir / f"raid-{group.name}.crypt")
        files = [str(d) for d in group.drives]
        what = f"RAID group {group.name}"
    else:
        header = f"{lc.file}.crypt"
        files = [str(lc.file)]
        what = f"LUN file {lc.file}"
    return EncryptionPlan(header, kek, may_create=not holds_data(files), what=what)


def plan_encryption(cfg: ArrayConfig) -> dict[LunKey, EncryptionPlan]:
    """Every encrypted LUN's plan, keys loaded (EncryptionError naming the config key on a bad one)."""
    plans: dict[LunKey, EncryptionPlan] = {}
    for i, tc in enumerate(cfg.targets):
        for j, lc in enumerate(tc.luns):
            if lc.command_device or lc.external is not None:
                continue
            where = f"targets[{i}].luns[{j}].encryption"
            if lc.encryption is None and lc.raid_group is not None:
                where = next(f"raid_groups[{k}].encryption" for k, g in enumerate(cfg.raid_groups)
                             if g.name == lc.raid_group)
            plan = _plan_one(cfg, lc, where)
            if plan is not None:
                plans[(tc.name, lc.lun)] = plan
    return plans


def check_keys(cfg: ArrayConfig, plans: dict[LunKey, EncryptionPlan]) -> None:
    """Unwrap every existing header's data key now (WrongKey before anything is opened)."""
    for (target, lun), plan in plans.items():
        if not plan.may_create:
            lc = next(l for t in cfg.targets if t.name == target for l in t.luns if l.lun == lun)
            open_data_key(plan.header_path, plan.kek, lc.block_size, may_create=False, what=plan.what)


def encrypt_volume(vol: Volume, plan: EncryptionPlan) -> EncryptedVolume:
    """``vol`` wrapped with its data key (made on the first start)."""
    out = open_encrypted(vol, plan.header_path, plan.kek, may_create=plan.may_create, what=plan.what)
    plan.may_create = False  # a second LUN on the same group finds the header the first one made
    return out
