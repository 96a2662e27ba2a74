"""The array's TOML configuration, validated into dataclasses (ARCHITECTURE.md convention 9).

Every unknown or invalid key is a :class:`ConfigError` naming the file, the
key path and the reason.  With no file, :func:`default_config` gives the
embedded default: one target ``iqn.2026-11.org.sanlab:array0`` with LUN 0 on a
1 GiB sparse file, portal ``0.0.0.0:3260``, no authentication.

Why one module of ~680 lines: it is one concept, the schema of the configuration file: each
section's dataclass next to the function that validates it, read together with the example below.
The sections share one table reader (``_Table``), one error and the value rules (sizes, portals,
iSCSI names, CHAP secrets), and :func:`parse_config` checks across sections (a LUN's RAID group or
external volume exists; a file is one drive or one LUN).  Splitting it by section would need a third
module for the shared parts and send a reader through three files to learn one key's rule.

Example::

    data_dir = "./sanlab-data"

    [server]
    portals = ["127.0.0.1:3260"]
    nop_interval = 30          # seconds of silence before the target pings (0: never)
    http = "127.0.0.1:8080"    # optional: status page and Prometheus metrics (off when absent)

    [[targets]]
    name = "iqn.2026-11.org.sanlab:array0"
    alias = "array0"
    initiators = ["iqn.1994-05.com.redhat:host1"]     # ACL; omit to admit anyone

    [targets.chap]                                    # per-target secret
    username = "array0-user"
    secret = "secret-of-12+"
    [targets.chap.initiators."iqn.1994-05.com.redhat:host1"]   # per-initiator secret
    username = "host1"
    secret = "host1-secret-12"
    [targets.mutual_chap]                             # the target's own, for mutual CHAP
    username = "array0"
    secret = "target-secret-12"

    [[targets.luns]]
    lun = 0
    size = "1GiB"
    file = "array0-lun0.img"          # relative to data_dir
    block_size = 512
    readonly = false

    [[remotes]]                       # a peer array this one replicates to (replication/link.py)
    name = "array-b"
    portals = ["127.0.0.2:3260"]      # or portal = "127.0.0.2:3260"
    target = "iqn.2026-11.org.sanlab:array-b"
    chap_user = "array-a"             # optional: CHAP toward the peer's target
    chap_secret = "a-to-b-secret-12"
    mutual_user = "array-b"           # optional: what the peer must prove (mutual CHAP)
    mutual_secret = "b-to-a-secret-12"
    http = "127.0.0.2:8080"           # optional: the peer's status page, for /topology
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sanlab.scsi.lun import LUN_RANGE, MAX_LUN
from sanlab.tools.units import to_bytes

DEFAULT_TARGET = "iqn.2026-11.org.sanlab:array0"
DEFAULT_PORTAL = ("0.0.0.0", 3260)
_NAME_RE = re.compile(r"^(iqn\.\d{4}-\d{2}\.[a-z0-9.-]+(:.+)?|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$")


def file_identity(path: str | Path) -> tuple[int, int] | str:
    """What makes two spellings of a path one file: ``(st_dev, st_ino)`` of an existing file
    (symlinks followed, so ``./x``, ``x``, a symlink and a hard link to it all match), and for a
    file not there yet the real path it would be created at (its directory's symlinks and a
    dangling symlink resolved).  Relative paths are taken from the working directory."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return (st.st_dev, st.st_ino)


class ConfigError(Exception):
    """A configuration problem: names the file, the key and the reason."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(f"{source}: {key}: {reason}")
        self.source = source
        self.key = key
        self.reason = reason


@dataclass(slots=True)
class ChapSecret:
    """One CHAP user name and secret."""

    username: str
    secret: str = field(repr=False)
    """Never printed: a repr of the config (a log line, a traceback) must not carry it."""


@dataclass(slots=True)
class EncryptionConfig:
    """Encryption at rest of a LUN or RAID group (storage/encrypted.py): where the operator's key is."""

    key_file: Path | None = None
    """A file of 64 hex digits, owner-only (0600); relative paths are relative to the config file."""
    key_env: str | None = None
    """Or: the environment variable holding the 64 hex digits."""


@dataclass(slots=True)
class LunConfig:
    """One logical unit backed by a file."""

    lun: int
    size: int
    """Capacity in bytes; for a file LUN the least it has: a longer file wins (assemble.file_lun_size)."""
    file: Path
    """Backing file (absolute, resolved against data_dir)."""
    block_size: int = 512
    readonly: bool = False
    thin: bool = True
    removable: bool = False
    sanitize_rate: int = 0
    """Bytes per second for SANITIZE passes (0: unpaced)."""
    physical_block_size: int = 0
    """Reported physical block in bytes (0: the logical block size)."""
    raid_group: str | None = None
    """Serve this RAID group (by name) instead of a file; ``size`` 0 means the whole group."""
    external: str | None = None
    """Serve this external volume (by name): a LUN of a peer array."""
    command_device: bool = False
    """A command device (replication/cmddev.py): no file, no size; WRITE carries commands, READ results."""
    encryption: EncryptionConfig | None = None
    """Stored AES-256-XTS encrypted (storage/encrypted.py); a LUN on an encrypted RAID group is too."""


@dataclass(slots=True)
class ExternalVolumeConfig:
    """A LUN of another iSCSI target used as a volume of this array."""

    name: str
    portal: tuple[str, int]
    target: str
    lun: int = 0
    chap: ChapSecret | None = None
    lock: str = "off"
    timeout: float = 10.0


@dataclass(slots=True)
class RemoteConfig:
    """A peer array this one replicates to (``[[remotes]]``): where it is, the target to log in to, CHAP."""

    name: str
    portals: list[tuple[str, int]]
    """Tried in this order at each login attempt."""
    target: str
    """The peer's target name (IQN) used for replication."""
    chap: ChapSecret | None = None
    """What this array answers the peer's CHAP challenge with."""
    mutual_chap: ChapSecret | None = None
    """What the peer must prove to this array (mutual CHAP); needs :attr:`chap`."""
    http: tuple[str, int] | None = None
    """Where the peer serves its status page (``sanlab serve --http``): /topology reads it there."""


@dataclass(slots=True)
class RaidGroupConfig:
    """A RAID group built from drive files (created when missing on first start)."""

    name: str
    level: int
    drives: list[Path]
    drive_size: int
    stripe_size: int = 64 * 1024
    encryption: EncryptionConfig | None = None
    """The LUNs serving this group store it AES-256-XTS encrypted (storage/encrypted.py)."""


@dataclass(slots=True)
class TargetConfig:
    """One iSCSI target."""

    name: str
    alias: str = ""
    initiators: list[str] | None = None
    chap: ChapSecret | None = None
    initiator_chap: dict[str, ChapSecret] = field(default_factory=dict)
    mutual_chap: ChapSecret | None = None
    luns: list[LunConfig] = field(default_factory=list)


@dataclass(slots=True)
class ServerConfig:
    """Front-end settings."""

    portals: list[tuple[str, int]] = field(default_factory=lambda: [DEFAULT_PORTAL])
    nop_interval: float = 30.0
    nop_timeout: float = 60.0
    cmd_window: int = 128
    tpgt: int = 1
    max_sessions_per_target: int = 256
    max_sessions_per_initiator: int = 64
    http: tuple[str, int] | None = None
    """Where the status page and Prometheus metrics are served (``--http HOST:PORT``); None: nowhere."""


@dataclass(slots=True)
class ArrayConfig:
    """The whole configuration of one array."""

    data_dir: Path
    server: ServerConfig
    targets: list[TargetConfig]
    source: str = "<default>"
    raid_groups: list[RaidGroupConfig] = field(default_factory=list)
    external_volumes: list[ExternalVolumeConfig] = field(default_factory=list)
    remotes: list[RemoteConfig] = field(default_factory=list)
    """Peer arrays for remote copy, by name (replication/link.py keeps a session to each)."""
    initiator_name: str = "iqn.2026-11.org.sanlab:array"
    """The name this array uses when it logs in to peers."""
    array_name: str | None = None
    """The name this array answers to in command blocks' transfer destinations (``array_name``); None:
    the last part of ``initiator_name`` (tools/cmddev_ops.py)."""
    capture_file: Path | None = None
    """``[capture] file``: a pcap file every iSCSI connection is captured into from the start
    (tools/capture.py); relative to the data directory.  ``sanlab serve --capture`` sets it too."""


def parse_size(value: object, source: str, key: str) -> int:
    """``"1GiB"``, ``"512M"``, ``1048576`` → bytes (a bare number in the config is bytes; tools/units.py)."""
    try:
        n = to_bytes(value, key)
    except ValueError:
        raise ConfigError(source, key, f"not a size: {value!r} (use bytes or e.g. \"1GiB\")") from None
    if n <= 0:
        raise ConfigError(source, key, "size must be positive")
    return n


def parse_portal(value: object, source: str, key: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (IPv6 as ``[::1]:3260``) → (host, port)."""
    if not isinstance(value, str):
        raise ConfigError(source, key, f"portal must be a string HOST:PORT, not {value!r}")
    m = re.match(r"^\[([0-9A-Fa-f:.]+)\]:(\d+)$", value) or re.match(r"^([^:\[\]]+):(\d+)$", value)
    if not m:
        raise ConfigError(source, key, f"portal {value!r} is not HOST:PORT")
    port = int(m.group(2))
    if not 0 <= port <= 65535:
        raise ConfigError(source, key, f"port {port} out of range")
    return m.group(1), port


class _Table:
    """Reads one TOML table, remembering which keys were used so unknown ones are errors."""

    def __init__(self, data: object, source: str, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(source, path or "<top>", "must be a table")
        self.data: dict[str, Any] = data
        self.source = source
        self.path = path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        self.used.add(name)
        if name not in self.data:
            if required:
                raise ConfigError(self.source, self.key(name), "missing")
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise ConfigError(self.source, self.key(name), f"must be {names}, not {type(value).__name__}")
        return value

    def raw(self, name: str) -> Any:
        self.used.add(name)
        return self.data.get(name)

    def finish(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise ConfigError(self.source, self.key(extra[0]), "unknown key")


def _chap(data: object, source: str, path: str, allow_initiators: bool) -> tuple[ChapSecret, dict[str, ChapSecret]]:
    t = _Table(data, source, path)
    username = t.get("username", str)
    secret = t.get("secret", str)
    per_init: dict[str, ChapSecret] = {}
    if allow_initiators:
        inits = t.get("initiators", dict, {})
        for iname, sub in inits.items():
            ipath = f"{path}.initiators.{iname}"
            if not _NAME_RE.match(iname):
                raise ConfigError(source, ipath, "not an iSCSI name (iqn./eui./naa.)")
            st = _Table(sub, source, ipath)
            per_init[iname] = ChapSecret(st.get("username", str, required=True), _secret(st, source, ipath))
            st.finish()
    t.finish()
    if (username is None) != (secret is None):
        raise ConfigError(source, path, "username and secret go together")
    if secret is not None:
        _check_secret(secret, source, f"{path}.secret")
    if username is None and not per_init:
        raise ConfigError(source, path, "needs username+secret or initiators")
    return (ChapSecret(username, secret) if username is not None else ChapSecret("", "")), per_init


def _secret(t: _Table, source: str, path: str) -> str:
    s: str = t.get("secret", str, required=True)
    _check_secret(s, source, f"{path}.secret")
    return s


def _check_secret(s: str, source: str, key: str) -> None:
    # RFC 7143 §12.1.3 asks for secrets of at least 96 bits (12 bytes) when not random.
    if len(s.encode()) < 12:
        raise ConfigError(source, key, "CHAP secrets must be at least 12 bytes (RFC 7143 §12.1.3)")
    if len(s.encode()) > 256:
        raise ConfigError(source, key, "CHAP secret longer than 256 bytes")


def _lun(data: object, source: str, path: str, data_dir: Path, target: str) -> LunConfig:
    t = _Table(data, source, path)
    lun = t.get("lun", int, required=True)
    if not 0 <= lun <= MAX_LUN:
        raise ConfigError(source, f"{path}.lun", f"LUN {lun} is out of range: LUNs are {LUN_RANGE}")
    if t.get("command_device", bool, False):
        # A command device stores nothing (replication/cmddev.py): every storage key is a mistake.
        for key in ("file", "size", "raid_group", "external", "block_size", "readonly", "thin", "removable",
                    "sanitize_rate", "physical_block_size", "encryption"):
            if key in t.data:
                raise ConfigError(source, f"{path}.{key}", "a command device (command_device = true) has no storage")
        t.finish()
        return LunConfig(lun=lun, size=0, file=data_dir / f"{target.split(':')[-1]}-lun{lun}.cmddev",
                         command_device=True)
    raid_group = t.get("raid_group", str, None)
    external = t.get("external", str, None)
    if raid_group is not None and external is not None:
        raise ConfigError(source, f"{path}.external", "a LUN is one of file, raid_group or external")
    if (raid_group is not None or external is not None) and "size" not in t.data:
        size = 0  # the whole group, known once it is built
    else:
        size = parse_size(t.raw("size") if "size" in t.data else "1GiB", source, f"{path}.size")
    bs = t.get("block_size", int, 512)
    if bs not in (512, 4096):
        raise ConfigError(source, f"{path}.block_size", "must be 512 or 4096")
    if size % bs:
        raise ConfigError(source, f"{path}.size", f"{size} is not a multiple of the block size {bs}")
    if (raid_group is not None or external is not None) and "file" in t.data:
        raise ConfigError(source, f"{path}.file", "a LUN is one of file, raid_group or external")
    pbs = parse_size(t.raw("physical_block_size"), source, f"{path}.physical_block_size") \
        if "physical_block_size" in t.data else 0
    if pbs and (pbs % bs or (pbs // bs) & (pbs // bs - 1) or pbs // bs > 1 << 15):
        raise ConfigError(source, f"{path}.physical_block_size",
                          f"must be the block size {bs} times a power of two (up to 2^15)")
    default_file = f"{target.split(':')[-1]}-lun{lun}.img"
    file = Path(t.get("file", str, default_file))
    if not file.is_absolute():
        file = data_dir / file
    cfg = LunConfig(lun=lun, size=size, file=file, block_size=bs, readonly=t.get("readonly", bool, False),
                    thin=t.get("thin", bool, True), removable=t.get("removable", bool, False),
                    sanitize_rate=parse_size(t.raw("sanitize_rate"), source, f"{path}.sanitize_rate")
                    if "sanitize_rate" in t.data else 0, physical_block_size=pbs,
                    raid_group=raid_group, external=external)
    if "encryption" in t.data:
        if external is not None:
            raise ConfigError(source, f"{path}.encryption", "an external volume is encrypted (or not) by its own array")
        cfg.encryption = _encryption(t.raw("encryption"), source, f"{path}.encryption")
    t.finish()
    return cfg


def _encryption(data: object, source: str, path: str) -> EncryptionConfig:
    """``encryption = { key_file = "..." }`` or ``{ key_env = "VAR" }``: exactly one of them."""
    t = _Table(data, source, path)
    key_file = t.get("key_file", str, None)
    key_env = t.get("key_env", str, None)
    t.finish()
    if (key_file is None) == (key_env is None):
        raise ConfigError(source, path, "give key_file or key_env (one of them)")
    if key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key_env):
        raise ConfigError(source, f"{path}.key_env", f"{key_env!r} is not an environment variable name")
    kf = None
    if key_file is not None:
        kf = Path(key_file)
        if not kf.is_absolute():
            # Beside the config file, so `--config lab/examples/encrypted.toml` finds its key from anywhere.
            base = Path(source).parent if not source.startswith("<") else Path(".")
            kf = base / kf
    return EncryptionConfig(key_file=kf, key_env=key_env)


_LOCK_MODES = ("off", "per-request", "held")


def _external(data: object, source: str, path: str) -> ExternalVolumeConfig:
    t = _Table(data, source, path)
    name = t.get("name", str, required=True)
    portal = parse_portal(t.get("portal", str, required=True), source, f"{path}.portal")
    target = t.get("target", str, required=True)
    if not _NAME_RE.match(target):
        raise ConfigError(source, f"{path}.target", f"{target!r} is not an iSCSI name")
    lun = t.get("lun", int, 0)
    if not 0 <= lun <= MAX_LUN:  # the initiator encodes it the same way (scsi/lun.py)
        raise ConfigError(source, f"{path}.lun", f"LUN {lun} is out of range: LUNs are {LUN_RANGE}")
    lock = t.get("lock", str, "off")
    if lock not in _LOCK_MODES:
        raise ConfigError(source, f"{path}.lock", f"one of {', '.join(_LOCK_MODES)}")
    timeout = t.get("timeout", (int, float), 10.0)
    if not 0 < timeout <= 600:
        raise ConfigError(source, f"{path}.timeout", "seconds, 0 < timeout <= 600")
    chap = None
    if "chap" in t.data:
        ct = _Table(t.raw("chap"), source, f"{path}.chap")
        chap = ChapSecret(ct.get("username", str, required=True), _secret(ct, source, f"{path}.chap"))
        ct.finish()
    t.finish()
    return ExternalVolumeConfig(name, portal, target, lun, chap, lock, float(timeout))


REMOTE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
"""A remote's name: a word a shell, a log line and a pair's ``--remote`` take as it is."""

REMOTE_NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63"


def is_iscsi_name(name: str) -> bool:
    """Whether ``name`` has the form of an iSCSI name (``iqn.``, ``eui.`` or ``naa.``, RFC 7143 §4.2.7)."""
    return bool(_NAME_RE.match(name))


def check_chap_pair(user: str | None, secret: str | None, source: str, user_key: str,
                    secret_key: str) -> ChapSecret | None:
    """A CHAP user and secret given together (or neither), the secret 12-256 bytes; else ConfigError.

    Shared by ``[[remotes]]`` and ``sanlab remote add`` so both refuse the same things.  The
    message names the keys, never the secret.
    """
    if user is None and secret is None:
        return None
    if user is None or secret is None:
        missing = user_key if user is None else secret_key
        raise ConfigError(source, missing, f"{user_key} and {secret_key} go together")
    if not user:
        raise ConfigError(source, user_key, "must not be empty")
    _check_secret(secret, source, secret_key)
    return ChapSecret(user, secret)


def _remote(data: object, source: str, path: str) -> RemoteConfig:
    t = _Table(data, source, path)
    name = t.get("name", str, required=True)
    if not REMOTE_NAME_RE.match(name):
        raise ConfigError(source, f"{path}.name", f"{name!r} is not a remote name ({REMOTE_NAME_RULE})")
    if "portal" in t.data and "portals" in t.data:
        raise ConfigError(source, f"{path}.portal", "give portal or portals, not both")
    if "portal" in t.data:
        portals = [parse_portal(t.get("portal", str), source, f"{path}.portal")]
    else:
        raw = t.get("portals", list, required=True)
        if not raw:
            raise ConfigError(source, f"{path}.portals", "at least one portal")
        portals = [parse_portal(p, source, f"{path}.portals[{i}]") for i, p in enumerate(raw)]
    target = t.get("target", str, required=True)
    if not _NAME_RE.match(target):
        raise ConfigError(source, f"{path}.target", f"{target!r} is not an iSCSI name (iqn./eui./naa.)")
    chap = check_chap_pair(t.get("chap_user", str), t.get("chap_secret", str), source, f"{path}.chap_user",
                           f"{path}.chap_secret")
    mutual = check_chap_pair(t.get("mutual_user", str), t.get("mutual_secret", str), source,
                             f"{path}.mutual_user", f"{path}.mutual_secret")
    if mutual is not None and chap is None:
        raise ConfigError(source, f"{path}.mutual_user", "mutual CHAP needs chap_user and chap_secret as well")
    if mutual is not None and chap is not None and mutual.secret == chap.secret:
        # RFC 7143 §12.1.3: the same secret must not be used in both directions.
        raise ConfigError(source, f"{path}.mutual_secret", "must differ from chap_secret (RFC 7143 §12.1.3)")
    http = t.get("http", str)
    t.finish()
    return RemoteConfig(name, portals, target, chap, mutual,
                        parse_portal(http, source, f"{path}.http") if http is not None else None)


_RAID_LEVELS = {0: 1, 1: 2, 5: 3, 6: 4, 10: 4}


def _raid_group(data: object, source: str, path: str, data_dir: Path) -> RaidGroupConfig:
    t = _Table(data, source, path)
    name = t.get("name", str, required=True)
    level = t.get("level", int, required=True)
    if level not in _RAID_LEVELS:
        raise ConfigError(source, f"{path}.level", "must be 0, 1, 5, 6 or 10")
    drives = t.get("drives", list, required=True)
    if len(drives) < _RAID_LEVELS[level] or (level == 10 and len(drives) % 2):
        raise ConfigError(source, f"{path}.drives",
                          f"RAID {level} needs at least {_RAID_LEVELS[level]} drives" + (" (an even number)"
                                                                                         if level == 10 else ""))
    paths = []
    for i, d in enumerate(drives):
        if not isinstance(d, str):
            raise ConfigError(source, f"{path}.drives[{i}]", "a drive is a file path")
        p = Path(d)
        paths.append(p if p.is_absolute() else data_dir / p)
    drive_size = parse_size(t.raw("drive_size") if "drive_size" in t.data else "256MiB", source,
                            f"{path}.drive_size")
    stripe = parse_size(t.raw("stripe_size") if "stripe_size" in t.data else "64KiB", source, f"{path}.stripe_size")
    if stripe % 512 or stripe > drive_size:
        raise ConfigError(source, f"{path}.stripe_size", "must be a multiple of 512 and fit on a drive")
    enc = _encryption(t.raw("encryption"), source, f"{path}.encryption") if "encryption" in t.data else None
    t.finish()
    return RaidGroupConfig(name, level, paths, drive_size, stripe, enc)


def _one_use_per_file(groups: list[RaidGroupConfig], targets: list[TargetConfig], source: str) -> None:
    """A file is one drive of one RAID group, or one LUN's file, never two of these at once.

    Compared by :func:`file_identity`, not by spelling: two members on one file read back each
    other's writes and scrub "repairs" every stripe.  Two LUNs on one file are not refused here.
    """
    users: dict[tuple[int, int] | str, str] = {}
    for i, g in enumerate(groups):
        for j, d in enumerate(g.drives):
            key = f"raid_groups[{i}].drives[{j}]"
            other = users.setdefault(file_identity(d), key)
            if other != key:
                raise ConfigError(source, key, f"{d} is the same file as {other}: a drive appears twice")
    for i, tc in enumerate(targets):
        for j, lc in enumerate(tc.luns):
            if lc.command_device:
                continue
            if lc.raid_group is None and lc.external is None and (drive := users.get(file_identity(lc.file))):
                raise ConfigError(source, f"targets[{i}].luns[{j}].file", f"{lc.file} is {drive}, a RAID drive")


def load_config(path: str | Path | None, data_dir: str | Path | None = None) -> ArrayConfig:
    """Read and validate a TOML config (``None``: the embedded default)."""
    if path is None:
        return default_config(Path(data_dir) if data_dir else Path("sanlab-data"))
    source = str(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(source, "<file>", "no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "<syntax>", str(exc)) from None
    return parse_config(doc, source, data_dir)


def parse_config(doc: dict[str, Any], source: str = "<config>", data_dir: str | Path | None = None) -> ArrayConfig:
    """Validate a parsed TOML document."""
    top = _Table(doc, source, "")
    dd = top.get("data_dir", str, "sanlab-data")
    # --data-dir wins over the file's data_dir; relative paths are relative to the working directory.
    ddir = Path(data_dir) if data_dir else Path(dd)
    server = ServerConfig()
    if "server" in doc:
        st = _Table(top.raw("server"), source, "server")
        portals = st.get("portals", list, None)
        if portals is not None:
            if not portals:
                raise ConfigError(source, "server.portals", "at least one portal")
            server.portals = [parse_portal(p, source, f"server.portals[{i}]") for i, p in enumerate(portals)]
        server.nop_interval = st.get("nop_interval", float, server.nop_interval)
        server.nop_timeout = st.get("nop_timeout", float, server.nop_timeout)
        server.cmd_window = st.get("cmd_window", int, server.cmd_window)
        if not 1 <= server.cmd_window <= 4096:
            raise ConfigError(source, "server.cmd_window", "must be 1..4096")
        server.tpgt = st.get("tpgt", int, server.tpgt)
        if not 1 <= server.tpgt <= 65535:
            raise ConfigError(source, "server.tpgt", "must be 1..65535")
        for key in ("max_sessions_per_target", "max_sessions_per_initiator"):
            value = st.get(key, int, getattr(server, key))
            if not 1 <= value <= 65535:  # a session needs a TSIH: 65535 of them
                raise ConfigError(source, f"server.{key}", "must be 1..65535")
            setattr(server, key, value)
        http = st.get("http", str)
        if http is not None:
            server.http = parse_portal(http, source, "server.http")
        st.finish()
    else:
        top.used.add("server")
    targets: list[TargetConfig] = []
    raw_targets = top.get("targets", list, [])
    names: set[str] = set()
    for i, rt in enumerate(raw_targets):
        path = f"targets[{i}]"
        t = _Table(rt, source, path)
        name = t.get("name", str, required=True)
        if not _NAME_RE.match(name):
            raise ConfigError(source, f"{path}.name", f"{name!r} is not an iSCSI name (iqn./eui./naa.)")
        if name in names:
            raise ConfigError(source, f"{path}.name", f"duplicate target {name}")
        names.add(name)
        tc = TargetConfig(name=name, alias=t.get("alias", str, ""))
        inits = t.get("initiators", list, None)
        if inits is not None:
            for j, n in enumerate(inits):
                if not isinstance(n, str) or not _NAME_RE.match(n):
                    raise ConfigError(source, f"{path}.initiators[{j}]", f"{n!r} is not an iSCSI name")
            tc.initiators = list(inits)
        if "chap" in rt:
            secret, per_init = _chap(t.raw("chap"), source, f"{path}.chap", True)
            tc.chap = secret if secret.username else None
            tc.initiator_chap = per_init
        if "mutual_chap" in rt:
            tc.mutual_chap, _ = _chap(t.raw("mutual_chap"), source, f"{path}.mutual_chap", False)
            if tc.chap is None and not tc.initiator_chap:
                raise ConfigError(source, f"{path}.mutual_chap", "mutual CHAP needs [chap] as well")
        luns = t.get("luns", list, [])
        seen: set[int] = set()
        for j, rl in enumerate(luns):
            lc = _lun(rl, source, f"{path}.luns[{j}]", ddir, name)
            if lc.lun in seen:
                raise ConfigError(source, f"{path}.luns[{j}].lun", f"duplicate LUN {lc.lun}")
            seen.add(lc.lun)
            tc.luns.append(lc)
        t.finish()
        targets.append(tc)
    groups: list[RaidGroupConfig] = []
    for i, rg in enumerate(top.get("raid_groups", list, [])):
        g = _raid_group(rg, source, f"raid_groups[{i}]", ddir)
        if any(x.name == g.name for x in groups):
            raise ConfigError(source, f"raid_groups[{i}].name", f"duplicate RAID group {g.name}")
        groups.append(g)
    externals: list[ExternalVolumeConfig] = []
    for i, ev in enumerate(top.get("external_volumes", list, [])):
        e = _external(ev, source, f"external_volumes[{i}]")
        if any(x.name == e.name for x in externals):
            raise ConfigError(source, f"external_volumes[{i}].name", f"duplicate external volume {e.name}")
        externals.append(e)
    remotes: list[RemoteConfig] = []
    for i, rr in enumerate(top.get("remotes", list, [])):
        r = _remote(rr, source, f"remotes[{i}]")
        if any(x.name == r.name for x in remotes):
            raise ConfigError(source, f"remotes[{i}].name", f"duplicate remote {r.name}")
        remotes.append(r)
    names_ev = {e.name for e in externals}
    for i, tc in enumerate(targets):
        for j, lc in enumerate(tc.luns):
            if lc.external is not None and lc.external not in names_ev:
                raise ConfigError(source, f"targets[{i}].luns[{j}].external", f"no external volume {lc.external}")
    initiator_name = top.get("initiator_name", str, "iqn.2026-11.org.sanlab:array")
    if not _NAME_RE.match(initiator_name):
        raise ConfigError(source, "initiator_name", f"{initiator_name!r} is not an iSCSI name")
    array_name = top.get("array_name", str, None)
    if array_name is not None and not REMOTE_NAME_RE.match(array_name):
        raise ConfigError(source, "array_name", f"{array_name!r}: letters, digits, '.', '_', '-' (as a remote's name)")
    capture_file: Path | None = None
    if "capture" in doc:
        ct = _Table(top.raw("capture"), source, "capture")
        cf = ct.get("file", str, required=True)
        if not cf:
            raise ConfigError(source, "capture.file", "an empty file name")
        capture_file = Path(cf) if Path(cf).is_absolute() else ddir / cf
        ct.finish()
    _one_use_per_file(groups, targets, source)
    names_rg = {g.name for g in groups}
    for i, tc in enumerate(targets):
        for j, lc in enumerate(tc.luns):
            if lc.raid_group is not None and lc.raid_group not in names_rg:
                raise ConfigError(source, f"targets[{i}].luns[{j}].raid_group", f"no RAID group {lc.raid_group}")
    top.finish()
    if not targets:
        raise ConfigError(source, "targets", "at least one [[targets]] table")
    return ArrayConfig(data_dir=ddir, server=server, targets=targets, source=source, raid_groups=groups,
                       external_volumes=externals, remotes=remotes, initiator_name=initiator_name,
                       array_name=array_name, capture_file=capture_file)


def default_config(data_dir: Path) -> ArrayConfig:
    """The embedded default: one target, LUN 0 on a 1 GiB sparse file, 0.0.0.0:3260, no auth."""
    lun = LunConfig(lun=0, size=1 << 30, file=data_dir / "array0-lun0.img")
    return ArrayConfig(data_dir=data_dir, server=ServerConfig(),
                       targets=[TargetConfig(name=DEFAULT_TARGET, alias="array0", luns=[lun])], source="<default>")
