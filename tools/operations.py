"""The management operations and their parameters, declared once.

Why one module of ~700 lines: nearly half of it is one declaration, the table
:data:`OPERATIONS` (with the command device's process numbers), and the rest is
what reads that table (parameter kinds and their coercion, argument checks,
help); a split would put the table's entries in one file and the rules that
give them meaning in another, where adding a parameter should touch one place.

Every operation the array offers — through ``sanlab admin``, the management
socket (``tools/mgmt.py``) and, later, the command device — is one
:class:`Operation` in :data:`OPERATIONS`: its name, its :class:`Domain` (the
class, in a module of its own, whose method of that name carries it out), a
one-line doc, and its parameters with their kind, the unit a bare number of a
size is counted in, whether they are required or their default, and a one-line
description.  From this one table come

* the command line's parsing of ``key=value`` words and ``sanlab admin OP --help``
  (:func:`parse_words`, :func:`help_text`, :func:`overview`);
* the socket's check of a request before it reaches the operation's method
  (:func:`check_args`), so a missing or misspelt argument is answered in the
  command line's terms for JSON clients too, never as a Python ``TypeError``;
* the dispatch: :meth:`~sanlab.tools.admin.Admin.handler` finds the method
  through the operation's domain, and ``Admin.OPERATIONS`` is the allow-list of
  what the socket may call.

Adding a parameter: add the keyword to the domain's method and a :class:`Param`
here with the same name and default (``tests/tools/test_operations.py`` compares
the two), then say in README.md what it does.  Sizes are ``Kind.SIZE``: the value
reaches the method as written (an int, or text such as ``"1MiB"``) and the method
converts it with :func:`sanlab.tools.units.to_blocks` / ``to_bytes`` (through
tools/array.py), because only the array knows the block size underneath.
"""
from __future__ import annotations

import difflib
import enum
import math
import re
from dataclasses import dataclass
from typing import Final, Literal

from sanlab.tools.units import UNITS_HELP, format_size, parse_quantity


class ArgumentError(Exception):
    """A request whose operation or arguments do not fit the table; the message uses the command line's words."""


class Kind(enum.Enum):
    """What a parameter holds; the value is how help and messages show it."""

    TEXT = "TEXT"
    INT = "INT"
    NUMBER = "NUMBER"
    BOOL = "yes|no"
    LIST = "A,B,..."
    SIZE = "SIZE"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()
"""The default of a parameter that has none."""

_INT_RE = re.compile(r"^\s*[+-]?[0-9]+\s*$")
_TRUE = ("yes", "true", "on", "1")
_FALSE = ("no", "false", "off", "0")


@dataclass(frozen=True, slots=True)
class Param:
    """One argument of an operation."""

    name: str
    kind: Kind
    help: str
    """One line: what it is."""
    default: object = REQUIRED
    """What the operation uses when it is left out (the method's default), or REQUIRED."""
    unit: Literal["bytes", "blocks"] | None = None
    """For a SIZE: what a bare number counts (a number with a unit is always bytes)."""
    default_help: str | None = None
    """How help shows a default that is not a plain value (``None`` meaning "work it out")."""
    secret: bool = False
    """A password (a CHAP secret): never logged, never repeated in a message (:func:`redacted`)."""

    @property
    def required(self) -> bool:
        """The argument has no default: a request without it is refused."""
        return self.default is REQUIRED

    @property
    def placeholder(self) -> str:
        """``size=SIZE``: the word as the command line writes it."""
        return f"{self.name}={self.kind.value}"

    def describe_default(self) -> str:
        """The default as ``--help`` prints it."""
        if self.default_help is not None:
            return self.default_help
        if isinstance(self.default, bool):
            return "yes" if self.default else "no"
        if self.kind is Kind.SIZE and isinstance(self.default, int) and self.unit == "bytes" and self.default >= 1024:
            return f"{self.default} ({format_size(self.default)})"
        return str(self.default)

    def describe(self) -> str:
        """``virtual volume number`` plus the unit of a size: what a message about this argument says."""
        if self.kind is Kind.SIZE and self.unit is not None:
            return f"{self.help}; a bare number is {self.unit}, with a unit bytes"
        return self.help

    def coerce(self, op: str, value: object) -> object:
        """The JSON value of this argument: text from the command line or JSON from a client.

        A SIZE keeps its unit (``"1MiB"`` stays text; only a bare number becomes an int) so the
        array, which knows the block size, converts it.
        """
        if value is None and self.default is None:
            return None
        shown = "***" if self.secret else _show(value)
        bad = ArgumentError(f"{op}: {self.name}={shown} is not {_KIND_WORDS[self.kind]} ({self.describe()})")
        match self.kind:
            case Kind.TEXT:
                if not isinstance(value, str):
                    raise bad
                return value
            case Kind.INT:
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
                if isinstance(value, str) and _INT_RE.match(value):
                    return int(value)
                raise bad
            case Kind.NUMBER:
                number: float | None = None
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    number = float(value)
                elif isinstance(value, str):
                    try:
                        number = float(value)
                    except ValueError:
                        raise bad from None
                if number is None or not math.isfinite(number):  # "inf" seconds is no interval
                    raise bad
                return number
            case Kind.BOOL:
                if isinstance(value, bool):
                    return value
                if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
                    return value.lower() in _TRUE
                raise bad
            case Kind.LIST:
                if isinstance(value, str):
                    return [v.strip() for v in value.split(",") if v.strip()]
                if isinstance(value, list) and all(isinstance(v, str) for v in value):
                    return list(value)
                raise bad
            case Kind.SIZE:
                try:
                    q = parse_quantity(value, self.name)
                except ValueError:
                    raise ArgumentError(f"{op}: {self.name}={_show(value)} is not a size: write a whole number "
                                        f"({self.unit or 'bytes'}) or one with a unit ({UNITS_HELP}, "
                                        f"meaning bytes)") from None
                if q.unit_bytes is None:
                    return q.number
                assert isinstance(value, str)
                return value.strip()
        raise AssertionError(self.kind)  # pragma: no cover - every kind is handled above


_KIND_WORDS = {Kind.TEXT: "text", Kind.INT: "a whole number", Kind.NUMBER: "a number", Kind.BOOL: "yes or no",
               Kind.LIST: "a comma-separated list", Kind.SIZE: "a size"}


def _show(value: object) -> str:
    return value if isinstance(value, str) else repr(value)


class Domain(enum.Enum):
    """What an operation works on: each domain's operations are methods of one class in one module
    (``Admin.DOMAINS`` says which), and the management socket finds them through this table."""

    RAID = "RAID groups and drives (tools/raid_ops.py)"
    VOLUMES = "volumes, virtual volumes, LUs and exports (tools/volume_ops.py)"
    TIERING = "LDEV rearrangement and tiering (tools/tiering_ops.py)"
    MIGRATION = "migratory copy (tools/migration_ops.py)"
    EXTERNALS = "external volumes (tools/external_ops.py)"
    REMOTES = "remotes: named peer arrays and their links (tools/remote_ops.py)"
    PAIRS = "remote-copy pairs (tools/pair_ops.py)"
    COPIES = "local copy pairs (tools/copy_ops.py)"
    BACKUP = "backup images of divided copies (tools/backup_ops.py)"
    SNAPSHOTS = "snapshots: space-efficient point-in-time images (tools/snapshot_ops.py)"
    COMMAND_DEVICES = "command devices and command routing (tools/cmddev_ops.py)"
    CAPTURE = "packet captures of the array's iSCSI connections (tools/capture.py)"
    VIEWS = "views over the whole array (tools/admin.py)"


@dataclass(frozen=True, slots=True)
class Operation:
    """One management operation: a method of the same name of its domain's class (``Admin.handler``)."""

    name: str
    """The method and the JSON ``op``: ``create_lu``."""
    domain: Domain
    """Where the method is."""
    doc: str
    """One line: what it does."""
    params: tuple[Param, ...] = ()

    @property
    def command(self) -> str:
        """The command line's name: ``create-lu``."""
        return self.name.replace("_", "-")

    def param(self, name: str) -> Param | None:
        """The parameter called ``name``, None when the operation has none."""
        return next((p for p in self.params if p.name == name), None)


def _size(name: str, unit: Literal["bytes", "blocks"], help: str, default: object = REQUIRED,
          default_help: str | None = None) -> Param:
    return Param(name, Kind.SIZE, help, default, unit, default_help)


_MV_VVOL = Param("multiple_virtualization", Kind.BOOL,
                 "map real-volume blocks another virtual volume already maps (seed 002's multiple virtualization)",
                 False)
_MV_LU = Param("multiple_virtualization", Kind.BOOL,
               "map virtual-volume blocks another LU already maps (both LUs then show the same data)", False)

_TARGET_LUN = (Param("target", Kind.TEXT, "target name (IQN) of this array"), Param("lun", Kind.INT, "LUN number"))
"""A LUN of one of this array's targets."""

OPERATIONS: Final[dict[str, Operation]] = {op.name: op for op in (
    # --- RAID groups and drives
    Operation("create_raid_group", Domain.RAID,
              "Create RAID group NAME on new drive files; its capacity becomes LDEVs.", (
        Param("name", Kind.TEXT, "RAID group name"),
        Param("level", Kind.INT, "RAID level: 0, 1, 5, 6 or 10"),
        Param("drives", Kind.LIST, "new drive files, comma-separated (a relative path is in the data directory)"),
        _size("drive_size", "bytes", "size of each drive file"),
        _size("stripe_size", "bytes", "bytes of one drive in one stripe (the chunk)", 64 * 1024),
        _size("ldev_size", "bytes", "size of every LDEV of the array; set once, with the first RAID group", None,
              "8 MiB, fixed by the first group"),
    )),
    Operation("delete_raid_group", Domain.RAID, "Delete RAID group NAME; none of its LDEVs may be in use.", (
        Param("name", Kind.TEXT, "RAID group name"),
    )),
    Operation("fail_drive", Domain.RAID,
              "Take drive INDEX of GROUP out of service (refused when that would lose data).", (
        Param("group", Kind.TEXT, "RAID group name"),
        Param("index", Kind.INT, "drive position in the group, from 0"),
    )),
    Operation("replace_drive", Domain.RAID,
              "Rebuild failed drive INDEX of GROUP onto a new drive file, in the background.", (
        Param("group", Kind.TEXT, "RAID group name"),
        Param("index", Kind.INT, "drive position in the group, from 0"),
        Param("path", Kind.TEXT, "the new drive file (must not exist; a relative path is in the data directory); "
              "a configuration group's drive is replaced at its configured path: leave it out", ""),
        _size("rate", "bytes", "most bytes of the new drive rebuilt per second (e.g. 64MiB); 0: no limit", 0),
    )),
    Operation("wait_rebuild", Domain.RAID,
              "Wait for GROUP's rebuild to end; answers whether the group is still degraded.", (
        Param("group", Kind.TEXT, "RAID group name"),
    )),
    Operation("scrub", Domain.RAID, "Check GROUP's redundancy stripe by stripe and repair what disagrees.", (
        Param("group", Kind.TEXT, "RAID group name"),
    )),
    # --- volumes, virtual volumes, LUs
    Operation("create_volume", Domain.VOLUMES,
              "Create volume NAME of SIZE bytes from free LDEVs of one or more RAID groups.", (
        Param("name", Kind.TEXT, "volume name"),
        _size("size", "bytes", "capacity; a whole number of blocks"),
        _size("block_size", "bytes", "logical block size of the volume and of what maps it", 512),
        Param("groups", Kind.LIST, "take LDEVs only from these RAID groups, comma-separated", None,
              default_help="any group, spreading over them"),
        Param("ldevs", Kind.LIST, "take exactly these free LDEVs, comma-separated GROUP:INDEX (rg0:4,rg1:0)", None,
              default_help="allocated"),
    )),
    Operation("delete_volume", Domain.VOLUMES,
              "Delete volume NAME (no virtual volume may map it) and free its LDEVs.", (
        Param("name", Kind.TEXT, "volume name"),
    )),
    Operation("create_vvol", Domain.VOLUMES,
              "Create virtual volume VVOL: SIZE blocks of real volume REAL from REAL_START.", (
        Param("vvol", Kind.INT, "virtual volume number"),
        Param("real", Kind.TEXT, "what it maps: a volume, an external volume, or an LU (stacking)"),
        _size("real_start", "blocks", "first block in the real volume"),
        _size("size", "blocks", "size of the virtual volume"),
        _MV_VVOL,
    )),
    Operation("delete_vvol", Domain.VOLUMES, "Delete virtual volume VVOL (no LU may use it).", (
        Param("vvol", Kind.INT, "virtual volume number"),
    )),
    Operation("create_lu", Domain.VOLUMES,
              "Create LU NAME: SIZE blocks of virtual volume VVOL from VSTART (export it to serve it).", (
        Param("name", Kind.TEXT, "LU name"),
        Param("vvol", Kind.INT, "virtual volume number"),
        _size("vstart", "blocks", "first block in the virtual volume"),
        _size("size", "blocks", "size of the LU"),
        _MV_LU,
    )),
    Operation("delete_lu", Domain.VOLUMES, "Delete LU NAME (unexport it first).", (
        Param("name", Kind.TEXT, "LU name"),
    )),
    Operation("export", Domain.VOLUMES, "Serve LU as LUN of TARGET; hosts see it on their next REPORT LUNS.", (
        Param("lu", Kind.TEXT, "LU name"),
        *_TARGET_LUN,
    )),
    Operation("unexport", Domain.VOLUMES, "Stop serving LUN of TARGET (the LU stays).", (
        *_TARGET_LUN,
    )),
    Operation("resize_lun", Domain.VOLUMES, "Grow a file-backed LUN of the config while hosts stay logged in.", (
        *_TARGET_LUN,
        _size("size", "bytes", "the new size; a whole number of the LUN's blocks, not smaller than now"),
    )),
    # --- rearrangement and tiering
    Operation("rearrange", Domain.TIERING,
              "Move LDEV INDEX of VOLUME onto another RAID group or LDEV while hosts keep going.", (
        Param("volume", Kind.TEXT, "volume name"),
        Param("index", Kind.INT, "LDEV position in the volume, from 0"),
        Param("group", Kind.TEXT, "move onto a free LDEV of this RAID group", None, default_help="give group= or ldev="),
        Param("ldev", Kind.TEXT, "move onto this free LDEV, GROUP:INDEX", None, default_help="give group= or ldev="),
    )),
    Operation("tiering_round", Domain.TIERING,
              "Sample the LDEV statistics once and carry out the moves the tiering policy proposes.", (
        Param("seconds", Kind.NUMBER, "the period the statistics' rates are taken over", 1.0),
    )),
    Operation("auto_tiering", Domain.TIERING, "Run a tiering round every INTERVAL seconds, or stop doing so.", (
        Param("enable", Kind.BOOL, "yes to start, no to stop", True),
        Param("interval", Kind.NUMBER, "seconds between rounds", 60.0),
    )),
    # --- migratory copy
    Operation("migrate_start", Domain.MIGRATION,
              "Take SOURCE over into fresh volume DEST: hosts use DEST at once, the copy runs behind.", (
        Param("source", Kind.TEXT, "external volume (or volume) to take over"),
        Param("dest", Kind.TEXT, "a volume no virtual volume maps yet"),
        _size("start", "blocks", "first block to copy", 0),
        _size("end", "blocks", "block after the last to copy", None, default_help="the end of the source"),
        _size("chunk", "blocks", "blocks copied per step", 2048),
    )),
    Operation("migrate_status", Domain.MIGRATION, "Progress and rate of every migration."),
    Operation("migrate_detach", Domain.MIGRATION, "Forget the source of a finished whole-volume migration into DEST.", (
        Param("dest", Kind.TEXT, "the destination volume"),
    )),
    # --- external volumes
    Operation("add_external", Domain.EXTERNALS,
              "Map LUN of a peer array's TARGET at PORTAL as real volume NAME of this array.", (
        Param("name", Kind.TEXT, "name of the external volume here"),
        Param("portal", Kind.TEXT, "the peer's HOST:PORT"),
        Param("target", Kind.TEXT, "the peer's target name (IQN)"),
        Param("lun", Kind.INT, "the peer's LUN", 0),
        Param("lock", Kind.TEXT, "reserve the peer LUN: off, per-request (while requests run) or held (always)",
              "off"),
        Param("timeout", Kind.NUMBER, "seconds to wait for the peer (login and each command)", 10.0),
    )),
    Operation("remove_external", Domain.EXTERNALS, "Unmap external volume NAME (nothing may map or migrate from it).", (
        Param("name", Kind.TEXT, "name of the external volume"),
    )),
    # --- remotes (sanlab remote add|delete|display)
    Operation("add_remote", Domain.REMOTES,
              "Declare remote NAME, a peer array reached at PORTALS on TARGET; its link logs in in the background.", (
        Param("name", Kind.TEXT, "name of the remote (letters, digits, . _ -)"),
        Param("portals", Kind.LIST, "the peer's portals, comma-separated HOST:PORT, tried in this order"),
        Param("target", Kind.TEXT, "the peer's target name (IQN) used for replication"),
        Param("chap_user", Kind.TEXT, "CHAP name this array logs in to the peer with", None,
              default_help="no CHAP"),
        Param("chap_secret", Kind.TEXT, "CHAP secret for chap_user (12-256 bytes)", None, default_help="no CHAP",
              secret=True),
        Param("mutual_user", Kind.TEXT, "the peer target's own CHAP name (mutual CHAP)", None,
              default_help="no mutual CHAP"),
        Param("mutual_secret", Kind.TEXT, "the peer target's own CHAP secret (mutual CHAP)", None,
              default_help="no mutual CHAP", secret=True),
    )),
    Operation("delete_remote", Domain.REMOTES, "Forget run-time remote NAME and log its link out.", (
        Param("name", Kind.TEXT, "name of the remote"),
    )),
    Operation("display_remotes", Domain.REMOTES, "Every remote (or NAME) with its link: up or down, why, since when.", (
        Param("name", Kind.TEXT, "only this remote", None, default_help="all"),
    )),
    # --- pairs (sanlab pair create|split|resync|delete|display|wait)
    Operation("pair_create", Domain.PAIRS,
              "Form pair NAME: local PVOL mirrored synchronously to SVOL on REMOTE (checked first at both arrays).", (
        Param("name", Kind.TEXT, "name of the pair (letters, digits, . _ -)"),
        Param("pvol", Kind.TEXT, "the local volume: TARGET/LUN or an exported LU's name"),
        Param("remote", Kind.TEXT, "the remote holding the S-VOL"),
        Param("svol", Kind.TEXT, "the S-VOL on the remote: TARGET/LUN"),
        Param("fence", Kind.TEXT, "data, status or never: what a write gets when the S side is unreachable",
              "data"),
        Param("group", Kind.TEXT, "consistency group", ""),
        Param("extent", Kind.TEXT, "mirror only LBA:COUNT of the P-VOL", "", default_help="the whole volume"),
        Param("bidirectional", Kind.BOOL, "hosts write at both arrays", False),
        Param("no_copy", Kind.BOOL, "the volumes are known identical: no initial copy", False),
        Param("pace", Kind.NUMBER, "MiB/s the initial copy and resyncs may use (0: no limit)", 0.0),
        Param("mode", Kind.TEXT, "sync or async (async: through the journals, issue 15)", "sync"),
        Param("journal", Kind.TEXT, "async: this array's journal of the pair", ""),
        Param("remote_journal", Kind.TEXT, "async: the remote's journal of the pair", ""),
        Param("delta", Kind.BOOL, "async: resume the S-VOL from the P-VOL's standby journal (delta resync)", False),
    )),
    Operation("pair_split", Domain.PAIRS,
              "Split pair NAME, or every pair of GROUP at one point, consistently (rw: S-VOLs take writes).", (
        Param("name", Kind.TEXT, "name of the pair", "", default_help="(or group=)"),
        Param("rw", Kind.BOOL, "the S-VOL takes host writes while split", False),
        Param("group", Kind.TEXT, "act on every pair of this consistency group", "", default_help="(or name=)"),
    )),
    Operation("pair_resync", Domain.PAIRS, "Copy only what differs and return pair NAME (or GROUP's pairs) to PAIR.", (
        Param("name", Kind.TEXT, "name of the pair", "", default_help="(or group=)"),
        Param("reverse", Kind.BOOL, "copy S-VOL to P-VOL", False),
        Param("group", Kind.TEXT, "act on every pair of this consistency group", "", default_help="(or name=)"),
    )),
    Operation("pair_delete", Domain.PAIRS, "Return both halves of pair NAME (or GROUP's pairs) to SMPL.", (
        Param("name", Kind.TEXT, "name of the pair", "", default_help="(or group=)"),
        Param("force", Kind.BOOL, "delete this side alone (the peer is gone)", False),
        Param("group", Kind.TEXT, "act on every pair of this consistency group", "", default_help="(or name=)"),
    )),
    Operation("pair_takeover", Domain.PAIRS,
              "Serve pair NAME (or GROUP's pairs) from this array: horctakeover's decision table.", (
        Param("name", Kind.TEXT, "name of the pair", "", default_help="(or group=)"),
        Param("group", Kind.TEXT, "act on every pair of this consistency group", "", default_help="(or name=)"),
    )),
    Operation("pair_swap", Domain.PAIRS,
              "At the S-VOL's array: exchange the roles of pair NAME (or GROUP's); the old P-VOL catches up by bitmap.", (
        Param("name", Kind.TEXT, "name of the pair", "", default_help="(or group=)"),
        Param("force", Kind.BOOL, "after a split brain: this array's data wins", False),
        Param("group", Kind.TEXT, "act on every pair of this consistency group", "", default_help="(or name=)"),
    )),
    Operation("pair_display", Domain.PAIRS, "Every pair half at this array (or NAME): role, state, progress.", (
        Param("name", Kind.TEXT, "only this pair", None, default_help="all"),
    )),
    # --- journals of asynchronous pairs (sanlab journal ...; seed 003 FIG. 12-16)
    Operation("journal_create", Domain.PAIRS,
              "Create journal NAME: a file of SIZE in the data directory, or the catalog volume VOLUME.", (
        Param("name", Kind.TEXT, "name of the journal (letters, digits, . _ -)"),
        _size("size", "bytes", "size of the journal file", 0, "the volume's size (with volume=)"),
        Param("volume", Kind.TEXT, "a catalog volume to hold the journal", "", default_help="a file"),
        Param("threshold", Kind.INT, "percent of use past which its pairs show PFUL", 80),
        Param("full_timeout", Kind.NUMBER, "seconds in PFUL after which its pairs suspend (PFUS)", 60.0),
        Param("auto", Kind.BOOL, "acquisition, restore and purge run by themselves", True),
        Param("standby_for", Kind.TEXT, "a standby journal recording TARGET/LUN's writes (delta resync)", ""),
    )),
    Operation("journal_acquire", Domain.PAIRS, "At the secondary: one journal acquisition (READ JOURNAL) for NAME.", (
        Param("name", Kind.TEXT, "name of the journal"),
    )),
    Operation("journal_status", Domain.PAIRS, "Pointers, use and lag of journal NAME.", (
        Param("name", Kind.TEXT, "name of the journal"),
    )),
    Operation("journal_restore", Domain.PAIRS, "At the secondary: apply journal NAME's acquired entries in order.", (
        Param("name", Kind.TEXT, "name of the journal"),
    )),
    Operation("journal_purge", Domain.PAIRS, "Free journal NAME's entries the secondary holds (or has restored).", (
        Param("name", Kind.TEXT, "name of the journal"),
    )),
    Operation("journal_display", Domain.PAIRS, "Every journal at this array (or NAME): role, pointers, use, lag.", (
        Param("name", Kind.TEXT, "only this journal", None, default_help="all"),
    )),
    # --- local copies (sanlab copy create|split|resync|restore|delete|display|wait; seed 004)
    Operation("copy_create", Domain.COPIES,
              "Form local copy pair NAME: PVOL copied to SVOL in the background (generation).", (
        Param("name", Kind.TEXT, "name of the copy pair (letters, digits, . _ -)"),
        Param("pvol", Kind.TEXT, "the original: TARGET/LUN or an exported LU's name"),
        Param("svol", Kind.TEXT, "the copy: TARGET/LUN or an exported LU's name"),
        Param("extent", Kind.TEXT, "pair only LBA:COUNT of the volumes (track aligned)", "",
              default_help="the whole volume"),
        Param("group", Kind.TEXT, "consistency group", ""),
    )),
    Operation("copy_split", Domain.COPIES,
              "Divide copy NAME (or GROUP's copies at one point): a point-in-time image at once.", (
        Param("name", Kind.TEXT, "name of the copy pair", "", default_help="(or group=)"),
        Param("extent", Kind.TEXT, "divide only LBA:COUNT (extent division)", "", default_help="the whole pair"),
        Param("group", Kind.TEXT, "act on every copy of this consistency group", "", default_help="(or name=)"),
    )),
    Operation("copy_resync", Domain.COPIES, "Copy only the differing tracks to the copy; back to PAIR.", (
        Param("name", Kind.TEXT, "name of the copy pair", "", default_help="(or group=)"),
        Param("extent", Kind.TEXT, "resync only LBA:COUNT (extent update / couple)", "", default_help="the whole pair"),
        Param("group", Kind.TEXT, "act on every copy of this consistency group", "", default_help="(or name=)"),
    )),
    Operation("copy_restore", Domain.COPIES,
              "Reverse resync: copy the differing tracks of the copy back over the original, online.", (
        Param("name", Kind.TEXT, "name of the copy pair", "", default_help="(or group=)"),
        Param("extent", Kind.TEXT, "restore only LBA:COUNT", "", default_help="the whole pair"),
        Param("group", Kind.TEXT, "act on every copy of this consistency group", "", default_help="(or name=)"),
    )),
    Operation("copy_delete", Domain.COPIES, "Dissolve copy NAME (or GROUP's copies): both volumes keep their data.", (
        Param("name", Kind.TEXT, "name of the copy pair", "", default_help="(or group=)"),
        Param("group", Kind.TEXT, "act on every copy of this consistency group", "", default_help="(or name=)"),
    )),
    Operation("copy_display", Domain.COPIES, "Every local copy pair (or NAME): state, detail, progress, bytes.", (
        Param("name", Kind.TEXT, "only this copy pair", None, default_help="all"),
    )),
    # --- backup of divided copies (sanlab backup create|restore; seed 004 11th embodiment, docs/backup.md)
    Operation("backup_create", Domain.BACKUP,
              "Write divided copy COPY (or its extent) to backup image FILE while the original serves (a job).", (
        Param("copy", Kind.TEXT, "name of the divided (PSUS) local copy pair"),
        Param("file", Kind.TEXT, "the image to write: an absolute path on the array's host (a tar stream)"),
        Param("extent", Kind.TEXT, "back up only LBA:COUNT of the copy", "", default_help="the pair's area"),
    )),
    Operation("backup_restore", Domain.BACKUP,
              "Check backup image FILE and write it into volume TO at its LBAs, zeros where sparse (a job).", (
        Param("file", Kind.TEXT, "the image: an absolute path on the array's host"),
        Param("to", Kind.TEXT, "the volume: TARGET/LUN or an exported LU's name"),
    )),
    Operation("backup_status", Domain.BACKUP, "How far backup or restore JOB is: bytes, progress, rate, error.", (
        Param("job", Kind.INT, "the job number backup-create or backup-restore answered"),
    )),
    # --- snapshots (sanlab snapshot create|delete|restore|list|export|unexport)
    Operation("snapshot_create", Domain.SNAPSHOTS,
              "Take snapshot NAME of VOL: a point-in-time image at once, old tracks copied to the pool on write.", (
        Param("name", Kind.TEXT, "name of the snapshot (letters, digits, . _ -)"),
        Param("vol", Kind.TEXT, "the volume: TARGET/LUN or an exported LU's name"),
    )),
    Operation("snapshot_delete", Domain.SNAPSHOTS,
              "Delete snapshot NAME (any order; pool tracks other snapshots share stay).", (
        Param("name", Kind.TEXT, "name of the snapshot"),
    )),
    Operation("snapshot_restore", Domain.SNAPSHOTS,
              "Write snapshot NAME's image back over its volume (host I/O waits meanwhile).", (
        Param("name", Kind.TEXT, "name of the snapshot"),
    )),
    Operation("snapshot_list", Domain.SNAPSHOTS, "Every snapshot (or NAME): origin, time, pool use, export.", (
        Param("name", Kind.TEXT, "only this snapshot", None, default_help="all"),
    )),
    Operation("snapshot_export", Domain.SNAPSHOTS, "Serve snapshot NAME read-only as LUN of TARGET.", (
        Param("name", Kind.TEXT, "name of the snapshot"),
        *_TARGET_LUN,
    )),
    Operation("snapshot_unexport", Domain.SNAPSHOTS, "Stop serving snapshot NAME as an LU.", (
        Param("name", Kind.TEXT, "name of the snapshot"),
    )),
    # --- command devices (seed 003 FIG. 5-9; docs/command-device.md)
    Operation("create_command_device", Domain.COMMAND_DEVICES,
              "Serve a command device as LUN of TARGET: hosts WRITE command blocks to it and READ the results.", (
        *_TARGET_LUN,
    )),
    Operation("delete_command_device", Domain.COMMAND_DEVICES,
              "Stop serving the command device at LUN of TARGET (one created at run time).", (
        *_TARGET_LUN,
    )),
    Operation("display_command_devices", Domain.COMMAND_DEVICES,
              "This array's name, its command devices and its connection table (the arrays it links to)."),
    # --- packet captures (sanlab capture start|stop|status; issue 18)
    Operation("capture_start", Domain.CAPTURE,
              "Capture every iSCSI connection of the array (hosts and links) into pcap FILE, open ones included.", (
        Param("file", Kind.TEXT, "the pcap file to write (relative: in the data directory); replaced if it exists"),
    )),
    Operation("capture_stop", Domain.CAPTURE,
              "Stop the capture and close its file; answers the frames written and the PDUs counted by opcode."),
    Operation("capture_status", Domain.CAPTURE, "Whether a capture runs, its file and the PDUs counted so far."),
    # --- views
    Operation("show", Domain.VIEWS, "The RAID groups, volumes, V/R and LU/V tables, exports and external volumes."),
)}
"""Every management operation by its JSON name (``create_lu``)."""

PROCESS_NUMBERS: Final[dict[str, int]] = {
    # The PROCESS NUMBER of each operation in a command block (seed 003 FIG. 6's control parameter;
    # docs/command-device.md).  Stable: a number, once given, is never reused for another operation.
    # High byte: the domain; low byte: the operation in it.
    "create_raid_group": 0x0101, "delete_raid_group": 0x0102, "fail_drive": 0x0103, "replace_drive": 0x0104,
    "wait_rebuild": 0x0105, "scrub": 0x0106,
    "create_volume": 0x0201, "delete_volume": 0x0202, "create_vvol": 0x0203, "delete_vvol": 0x0204,
    "create_lu": 0x0205, "delete_lu": 0x0206, "export": 0x0207, "unexport": 0x0208, "resize_lun": 0x0209,
    "rearrange": 0x0301, "tiering_round": 0x0302, "auto_tiering": 0x0303,
    "migrate_start": 0x0401, "migrate_status": 0x0402, "migrate_detach": 0x0403,
    "add_external": 0x0501, "remove_external": 0x0502,
    "add_remote": 0x0601, "delete_remote": 0x0602, "display_remotes": 0x0603,
    "pair_create": 0x0701, "pair_split": 0x0702, "pair_resync": 0x0703, "pair_delete": 0x0704,
    "pair_takeover": 0x0705, "pair_swap": 0x0706, "pair_display": 0x0707,
    "journal_acquire": 0x0901, "journal_status": 0x0902, "journal_restore": 0x0903, "journal_purge": 0x0904,
    "journal_create": 0x0905, "journal_display": 0x0906,
    "copy_create": 0x0A01, "copy_split": 0x0A02, "copy_resync": 0x0A03, "copy_restore": 0x0A04,
    "copy_delete": 0x0A05, "copy_display": 0x0A06,
    "backup_create": 0x0A07, "backup_restore": 0x0A08, "backup_status": 0x0A09,
    "snapshot_create": 0x0A0A, "snapshot_delete": 0x0A0B, "snapshot_restore": 0x0A0C, "snapshot_list": 0x0A0D,
    "snapshot_export": 0x0A0E, "snapshot_unexport": 0x0A0F,
    "create_command_device": 0x0801, "delete_command_device": 0x0802, "display_command_devices": 0x0803,
    "capture_start": 0x0E01, "capture_stop": 0x0E02, "capture_status": 0x0E03,
    "show": 0x0F01,
}
"""Operation name → PROCESS NUMBER (tests/tools/test_operations.py: every operation has one, all differ)."""

RESERVED_PROCESS_NUMBERS: Final[dict[int, str]] = {
    # Kept for operations that do not exist yet, so the numbers of what comes later are known now.
    0x0708: "async pair create (issue 15)",
    0x0709: "async pair split / resync / delete (issue 15)",
}
"""PROCESS NUMBER → what it is kept for; no operation may take one of them."""

PAIR_INSTRUCTIONS: Final[frozenset[str]] = frozenset(
    {"pair_create", "pair_split", "pair_resync", "pair_delete", "pair_takeover", "pair_swap"})
"""Operations that instruct a pair: refused by their checks through a command device, the host's WRITE
also ends in CHECK CONDITION (seed 000 claims 12-13)."""


def by_process_number(number: int) -> Operation | None:
    """The operation whose PROCESS NUMBER is ``number``, or None."""
    return _BY_NUMBER.get(number)


_BY_NUMBER: Final[dict[int, Operation]] = {n: OPERATIONS[name] for name, n in PROCESS_NUMBERS.items()}


def lookup(name: str) -> Operation:
    """The operation called ``name`` (``create-lu`` or ``create_lu``); unknown → ArgumentError."""
    op = OPERATIONS.get(name.replace("-", "_"))
    if op is not None:
        return op
    commands = [o.command for o in OPERATIONS.values()]
    near = difflib.get_close_matches(name.replace("_", "-"), commands, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    raise ArgumentError(f"unknown operation {name!r}{hint}; `sanlab admin --help` lists them")


def check_args(op: Operation, args: dict[str, object]) -> dict[str, object]:
    """The arguments of ``op`` as its method takes them, or ArgumentError in the command line's words.

    ``args`` comes from the command line (all text) or from a JSON client; the same checks and
    conversions apply to both.  Defaults are left to the method (the table states the same ones).
    """
    out: dict[str, object] = {}
    names = [p.name for p in op.params]
    for key, value in args.items():
        p = op.param(key)
        if p is None:
            near = difflib.get_close_matches(key, names, n=1)
            if near:
                hint = f"did you mean {near[0]}=?"
            elif names:
                hint = "it takes " + " ".join(f"{n}=" for n in names)
            else:
                hint = "it takes no arguments"
            raise ArgumentError(f"{op.command}: unknown argument {key}= ({hint})")
        out[key] = p.coerce(op.command, value)
    missing = [p for p in op.params if p.required and p.name not in out]
    if missing:
        what = ", ".join(f"{p.placeholder} ({p.describe()})" for p in missing)
        raise ArgumentError(f"{op.command}: missing argument{'s' if len(missing) > 1 else ''} {what}")
    return out


def redacted(op: Operation, args: dict[str, object]) -> dict[str, object]:
    """``args`` as they may be logged: the value of every secret parameter replaced by ``***``."""
    return {k: "***" if (p := op.param(k)) is not None and p.secret and v is not None else v
            for k, v in args.items()}


def parse_words(op: Operation, words: list[str]) -> dict[str, object]:
    """``key=value`` words of ``sanlab admin OP ...`` → checked request arguments."""
    raw: dict[str, object] = {}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.replace("-", "_")
        if not sep or not key:
            raise ArgumentError(f"{op.command}: {word!r} is not key=value (`sanlab admin {op.command} --help` "
                                "lists the arguments)")
        if key in raw:
            raise ArgumentError(f"{op.command}: {key}= is given twice")
        raw[key] = value
    return check_args(op, raw)


SIZE_RULE = (f"A size with a unit ({UNITS_HELP}; K, M, G, T mean the same) is bytes and must be a whole number "
             "of the volume's blocks; a bare number is in the unit shown for the argument.")


def usage(op: Operation) -> str:
    """The one-line usage of ``sanlab admin OP`` with its arguments."""
    words = [p.placeholder if p.required else f"[{p.placeholder}]" for p in op.params]
    return " ".join(["usage: sanlab admin", op.command, *words, "[--data-dir DIR]"])


def help_text(op: Operation) -> str:
    """What ``sanlab admin OP --help`` prints."""
    lines = [usage(op), "", op.doc, ""]
    if op.params:
        lines.append("arguments:")
        width = max(len(p.placeholder) for p in op.params)
        for p in op.params:
            text = p.help
            if p.kind is Kind.SIZE:
                text += f" [bare number: {p.unit}]"
            text += " (required)" if p.required else f" (default: {p.describe_default()})"
            lines.append(f"  {p.placeholder.ljust(width)}  {text}")
        if any(p.kind is Kind.SIZE for p in op.params):
            lines += ["", SIZE_RULE]
    else:
        lines.append("arguments: none")
    lines += ["", "options: --data-dir DIR (of the running array, default ./sanlab-data), --json"]
    return "\n".join(lines)


def overview() -> str:
    """What ``sanlab admin --help`` prints: every operation with its one-line doc."""
    width = max(len(o.command) for o in OPERATIONS.values())
    lines = ["usage: sanlab admin OP key=value ... [--data-dir DIR] [--json]",
             "       sanlab admin OP --help      (the arguments of OP: types, units, defaults)", "",
             "A management operation on the running array (through <data-dir>/sanlab.sock).", "", "operations:"]
    lines += [f"  {o.command.ljust(width)}  {o.doc}" for o in OPERATIONS.values()]
    lines += ["", SIZE_RULE]
    return "\n".join(lines)
