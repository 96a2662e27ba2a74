"""iSCSI text keys and the operational negotiation (RFC 7143 §6.2, §13).

Text is ``key=value`` pairs, each ending in a NUL (§6.1).  One table,
:data:`KEYS`, gives every key its rule (list, boolean AND/OR, numerical
min/max, declarative), default, range, where it may be used (IO/LO/ALL/FFPO),
its scope, who may send it and whether it applies in a discovery session; the
:class:`Negotiator` answers offers from that table in either role, so the
target and the initiator share the same rules.

Decisions where the RFC leaves room:

* A list key is answered with the *first value of the proposer's list* that
  the responder supports (§6.2.1); no common value answers ``Reject`` and
  keeps the default.
* Out-of-range or syntactically invalid values answer ``Reject`` and keep the
  default; the special values ``Reject``/``Irrelevant``/``NotUnderstood``
  used as an offer, and a key offered twice in one login (§6.2), fail the
  login with Initiator Error.
* A key used where its "Use" forbids it (an LO key in full-feature phase or
  on a non-leading connection, an FFPO key during login) or sent by the
  wrong side (e.g. TargetAlias from an initiator) answers ``Reject``.
* IFMarker/OFMarker answer ``No`` (the MAY of §13.26; friendlier to RFC 3720
  initiators than the SHOULD ``Reject``); IFMarkInt/OFMarkInt answer ``Reject``.
* FirstBurstLength is answered ``Irrelevant`` when the round leaves
  InitialR2T=Yes and ImmediateData=No (§13.14), and never above the
  MaxBurstLength in force (§13.14: it MUST NOT exceed it).
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Iterable, Literal

from sanlab.target.errors import LoginError, LoginStatus

Role = Literal["target", "initiator"]
SessionType = Literal["Normal", "Discovery"]
Stage = Literal["security", "operational", "full-feature"]

MAX_KEY_NAME = 63
"""RFC 7143 §6.1: key names are at most 63 bytes."""
MAX_VALUE = 8192
"""The longest value accepted (RFC 7143 §6.1 lets some text values reach 8192 bytes)."""

_KEY_RE = re.compile(r"[A-Za-z0-9.\-+@_#]+")
"""RFC 7143 §6.1 key-name characters, plus '#' for the X#/Y# public extension keys."""
_DECIMAL_RE = re.compile(r"[0-9]{1,20}")
_HEX_RE = re.compile(r"0[xX][0-9a-fA-F]{1,16}")
_SPECIAL = frozenset({"Reject", "Irrelevant", "NotUnderstood"})
"""Answers, never offers (§6.2)."""


def parse_text(data: bytes) -> list[tuple[str, str]]:
    """Split NUL-terminated ``key=value`` text into pairs (RFC 7143 §6.1).

    A missing NUL after the last pair is tolerated and empty items are skipped.
    Malformed text raises ``LoginError(INITIATOR_ERROR)``.
    """
    pairs: list[tuple[str, str]] = []
    for item in bytes(data).split(b"\0"):
        if not item:
            continue  # the final NUL, or padding
        key_b, sep, value_b = item.partition(b"=")
        if not sep:
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"text item without '=': {item[:40]!r}")
        try:
            key, value = key_b.decode("utf-8"), value_b.decode("utf-8")
        except UnicodeDecodeError:
            raise LoginError(LoginStatus.INITIATOR_ERROR, "text keys are UTF-8 (RFC 7143 §6.1)") from None
        if len(key_b) > MAX_KEY_NAME or not _KEY_RE.fullmatch(key):
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"invalid key name {key[:70]!r}")
        if len(value_b) > MAX_VALUE:
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"value of {key} longer than {MAX_VALUE} bytes")
        pairs.append((key, value))
    return pairs


def encode_text(pairs: Iterable[tuple[str, str]]) -> bytes:
    """``key=value\\0`` for each pair."""
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs)


def parse_number(value: str) -> int | None:
    """A numerical value: decimal or ``0x`` hex constant (RFC 7143 §6.1), or None.

    ASCII digits only: ``str.isdigit`` would let "²" or Arabic-Indic digits through.
    """
    if _DECIMAL_RE.fullmatch(value):
        return int(value)
    if _HEX_RE.fullmatch(value):
        return int(value[2:], 16)
    return None


class Rule(enum.Enum):
    """How an offer and the responder's value combine (RFC 7143 §6.2.1-§6.2.2)."""

    LIST = "list"
    AND = "and"
    OR = "or"
    MIN = "min"
    MAX = "max"
    DECLARATIVE = "declarative"
    REJECT = "reject"
    """Obsolete keys the responder answers with Reject (§13.26)."""


class Use(enum.Enum):
    """Where a key may appear (the "Use:" line of each key in RFC 7143 §13)."""

    IO = "IO"
    """Initialize only: during login."""
    LO = "LO"
    """Leading only: during the login of a session's leading connection."""
    ALL = "ALL"
    """Login and full-feature phase."""
    FFPO = "FFPO"
    """Full-feature phase only."""


class Scope(enum.Enum):
    """Session-wide or per-connection (the "Scope:" line of RFC 7143 §13)."""

    SW = "SW"
    CO = "CO"


_BOTH: frozenset[str] = frozenset({"initiator", "target"})
_INITIATOR: frozenset[str] = frozenset({"initiator"})
_TARGET: frozenset[str] = frozenset({"target"})
_LOGIN_STAGES: frozenset[str] = frozenset({"security", "operational"})
_STAGES_FOR_USE: dict[Use, frozenset[str]] = {
    Use.IO: _LOGIN_STAGES,
    Use.LO: _LOGIN_STAGES,
    Use.ALL: _LOGIN_STAGES | {"full-feature"},
    Use.FFPO: frozenset({"full-feature"}),
}


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One key of RFC 7143 §13 (and RFC 7144 for iSCSIProtocolLevel)."""

    rule: Rule
    default: str
    use: Use = Use.LO
    scope: Scope = Scope.SW
    values: frozenset[str] = frozenset()
    """Valid values of a list key or an enumerated declarative key."""
    low: int = 0
    high: int = 0
    """Range of a numerical key (``high == 0``: not numerical)."""
    discovery: bool = True
    """Whether the key applies in a discovery session (else it is Irrelevant there)."""
    senders: frozenset[str] = _BOTH
    """Which roles may send the key."""


_BOOL = frozenset({"Yes", "No"})
_MAX24 = (1 << 24) - 1
_DIGESTS = frozenset({"None", "CRC32C"})

KEYS: dict[str, KeySpec] = {
    # §13.1: digests are negotiated per connection, login only.
    "HeaderDigest": KeySpec(Rule.LIST, "None", Use.IO, Scope.CO, _DIGESTS),
    "DataDigest": KeySpec(Rule.LIST, "None", Use.IO, Scope.CO, _DIGESTS),
    "MaxConnections": KeySpec(Rule.MIN, "1", low=1, high=65535, discovery=False),                    # §13.2
    "SendTargets": KeySpec(Rule.DECLARATIVE, "", Use.FFPO, senders=_INITIATOR),                       # §13.3
    "TargetName": KeySpec(Rule.DECLARATIVE, "", Use.IO, senders=_INITIATOR),                          # §13.4
    "InitiatorName": KeySpec(Rule.DECLARATIVE, "", Use.IO, senders=_INITIATOR),                       # §13.5
    "TargetAlias": KeySpec(Rule.DECLARATIVE, "", Use.ALL, senders=_TARGET),                           # §13.6
    "InitiatorAlias": KeySpec(Rule.DECLARATIVE, "", Use.ALL, senders=_INITIATOR),                     # §13.7
    "TargetAddress": KeySpec(Rule.DECLARATIVE, "", Use.ALL, senders=_TARGET),                         # §13.8
    "TargetPortalGroupTag": KeySpec(Rule.DECLARATIVE, "", Use.IO, low=0, high=65535, senders=_TARGET),  # §13.9
    "InitialR2T": KeySpec(Rule.OR, "Yes", values=_BOOL, discovery=False),                            # §13.10
    "ImmediateData": KeySpec(Rule.AND, "Yes", values=_BOOL, discovery=False),                        # §13.11
    "MaxRecvDataSegmentLength": KeySpec(Rule.DECLARATIVE, "8192", Use.ALL, Scope.CO,                  # §13.12
                                        low=512, high=_MAX24),
    "MaxBurstLength": KeySpec(Rule.MIN, "262144", low=512, high=_MAX24, discovery=False),             # §13.13
    "FirstBurstLength": KeySpec(Rule.MIN, "65536", low=512, high=_MAX24, discovery=False),            # §13.14
    "DefaultTime2Wait": KeySpec(Rule.MAX, "2", low=0, high=3600),                                    # §13.15
    "DefaultTime2Retain": KeySpec(Rule.MIN, "20", low=0, high=3600),                                 # §13.16
    "MaxOutstandingR2T": KeySpec(Rule.MIN, "1", low=1, high=65535, discovery=False),                  # §13.17
    "DataPDUInOrder": KeySpec(Rule.OR, "Yes", values=_BOOL, discovery=False),                        # §13.18
    "DataSequenceInOrder": KeySpec(Rule.OR, "Yes", values=_BOOL, discovery=False),                   # §13.19
    "ErrorRecoveryLevel": KeySpec(Rule.MIN, "0", low=0, high=2),                                     # §13.20
    "SessionType": KeySpec(Rule.DECLARATIVE, "Normal", values=frozenset({"Normal", "Discovery"}),    # §13.21
                           senders=_INITIATOR),
    # §13.23: we implement none of the RFC 7143 task-reporting extensions.
    "TaskReporting": KeySpec(Rule.LIST, "RFC3720", values=frozenset({"RFC3720", "ResponseFence", "FastAbort"}),
                             discovery=False),
    # RFC 7144 §2.1 (§13.24): the lower of the two levels wins.
    "iSCSIProtocolLevel": KeySpec(Rule.MIN, "0", low=0, high=31),
    # §13.26: markers are obsolete; a responder MAY answer IFMarker/OFMarker "No" (kinder to
    # RFC 3720 initiators than Reject) and SHOULD answer the *MarkInt keys with Reject.
    "IFMarker": KeySpec(Rule.AND, "No", Use.IO, Scope.CO, _BOOL),
    "OFMarker": KeySpec(Rule.AND, "No", Use.IO, Scope.CO, _BOOL),
    "IFMarkInt": KeySpec(Rule.REJECT, "2048", Use.IO, Scope.CO),
    "OFMarkInt": KeySpec(Rule.REJECT, "2048", Use.IO, Scope.CO),
}
"""Key → rule: the one negotiation table (ARCHITECTURE.md convention 2)."""

TARGET_DEFAULTS: dict[str, str] = {
    "HeaderDigest": "CRC32C,None",
    "DataDigest": "CRC32C,None",
    "MaxConnections": "1",
    "InitialR2T": "No",
    "ImmediateData": "Yes",
    "MaxRecvDataSegmentLength": "262144",
    "MaxBurstLength": "1048576",
    "FirstBurstLength": "262144",
    "DefaultTime2Wait": "2",
    "DefaultTime2Retain": "0",
    "MaxOutstandingR2T": "16",
    "DataPDUInOrder": "Yes",
    "DataSequenceInOrder": "Yes",
    "ErrorRecoveryLevel": "0",
    "IFMarker": "No",
    "OFMarker": "No",
    "TaskReporting": "RFC3720",
    "iSCSIProtocolLevel": "1",
}
"""What the target supports / prefers (the target Negotiator's ``local``).

ErrorRecoveryLevel 0 and one connection per session are what the full-feature
phase implements; DefaultTime2Retain 0 because nothing is retained for task
reassignment at ERL 0; DataPDUInOrder/DataSequenceInOrder Yes because the
R2T and Data-In code keeps data in order; iSCSIProtocolLevel 1 is RFC 7143."""

INITIATOR_DEFAULTS: dict[str, str] = dict(TARGET_DEFAULTS, HeaderDigest="None", DataDigest="None")
"""What sanlab's own initiator offers by default."""


@dataclass(slots=True)
class SessionParams:
    """The negotiated session and connection parameters, typed (RFC defaults until negotiated)."""

    session_type: str = "Normal"
    """SessionType (§13.21)."""
    header_digest: bool = False
    """HeaderDigest=CRC32C in force (§13.1)."""
    data_digest: bool = False
    """DataDigest=CRC32C in force (§13.1)."""
    max_connections: int = 1
    """MaxConnections (§13.2)."""
    initial_r2t: bool = True
    """InitialR2T (§13.10)."""
    immediate_data: bool = True
    """ImmediateData (§13.11)."""
    max_recv_data_segment_length_target: int = 8192
    """What the target may receive in one PDU (the target's MaxRecvDataSegmentLength, §13.12)."""
    max_recv_data_segment_length_initiator: int = 8192
    """What the initiator may receive in one PDU (the initiator's declaration, §13.12)."""
    max_burst_length: int = 262144
    """MaxBurstLength (§13.13)."""
    first_burst_length: int = 65536
    """FirstBurstLength (§13.14), never above max_burst_length."""
    default_time2wait: int = 2
    """DefaultTime2Wait in seconds (§13.15)."""
    default_time2retain: int = 20
    """DefaultTime2Retain in seconds (§13.16)."""
    max_outstanding_r2t: int = 1
    """MaxOutstandingR2T per task (§13.17)."""
    data_pdu_in_order: bool = True
    """DataPDUInOrder (§13.18)."""
    data_sequence_in_order: bool = True
    """DataSequenceInOrder (§13.19)."""
    error_recovery_level: int = 0
    """ErrorRecoveryLevel (§13.20)."""
    task_reporting: str = "RFC3720"
    """TaskReporting (§13.23)."""
    iscsi_protocol_level: int = 0
    """iSCSIProtocolLevel (RFC 7144 §2.1)."""
    initiator_name: str = ""
    """InitiatorName (§13.5)."""
    initiator_alias: str = ""
    """InitiatorAlias (§13.7)."""
    target_name: str = ""
    """TargetName (§13.4); empty in a discovery session."""
    target_alias: str = ""
    """TargetAlias (§13.6)."""


def _valid(spec: KeySpec, value: str) -> bool:
    """Whether ``value`` is a syntactically valid, in-range value of the key."""
    if spec.rule in (Rule.MIN, Rule.MAX) or (spec.rule is Rule.DECLARATIVE and spec.high):
        n = parse_number(value)
        return n is not None and spec.low <= n <= spec.high
    if spec.rule in (Rule.AND, Rule.OR) or (spec.rule is Rule.DECLARATIVE and spec.values):
        return value in spec.values
    if spec.rule is Rule.LIST:
        return bool(value)
    return True


def _normal(spec: KeySpec, value: str) -> str:
    """The canonical spelling of a valid value (numbers in decimal)."""
    if spec.high:
        n = parse_number(value)
        assert n is not None
        return str(n)
    return value


def _combine(spec: KeySpec, offered: str, mine: str) -> str:
    """The result of an offer against the responder's own value (§6.2.2)."""
    if spec.rule is Rule.LIST:
        supported = mine.split(",")
        for v in offered.split(","):  # the first of the proposer's values the responder supports
            if v in supported:
                return v
        return "Reject"
    if spec.rule is Rule.AND:
        return "Yes" if offered == "Yes" and mine == "Yes" else "No"
    if spec.rule is Rule.OR:
        return "Yes" if offered == "Yes" or mine == "Yes" else "No"
    a, b = parse_number(offered), parse_number(mine)
    assert a is not None and b is not None
    if spec.rule is Rule.MIN:
        return str(min(a, b))
    if spec.rule is Rule.MAX:
        return str(max(a, b))
    raise AssertionError(spec.rule)


def _acceptable(spec: KeySpec, offered: str, answer: str) -> bool:
    """Whether a responder's ``answer`` could result from our ``offered`` value (§6.2.2)."""
    if spec.rule is Rule.LIST:
        return answer in offered.split(",")
    if not _valid(spec, answer):
        return False
    if spec.rule is Rule.AND:
        return offered == "Yes" or answer == "No"
    if spec.rule is Rule.OR:
        return offered == "No" or answer == "Yes"
    a, o = parse_number(answer), parse_number(offered)
    assert a is not None and o is not None
    if spec.rule is Rule.MIN:
        return a <= o
    if spec.rule is Rule.MAX:
        return a >= o
    return True


_PARAM_FIELDS: dict[str, str] = {
    "MaxConnections": "max_connections", "InitialR2T": "initial_r2t", "ImmediateData": "immediate_data",
    "MaxBurstLength": "max_burst_length", "FirstBurstLength": "first_burst_length",
    "DefaultTime2Wait": "default_time2wait", "DefaultTime2Retain": "default_time2retain",
    "MaxOutstandingR2T": "max_outstanding_r2t", "DataPDUInOrder": "data_pdu_in_order",
    "DataSequenceInOrder": "data_sequence_in_order", "ErrorRecoveryLevel": "error_recovery_level",
    "TaskReporting": "task_reporting", "iSCSIProtocolLevel": "iscsi_protocol_level",
    "InitiatorName": "initiator_name", "InitiatorAlias": "initiator_alias", "TargetName": "target_name",
    "TargetAlias": "target_alias",
}
"""Negotiated key → SessionParams field (digests, MRDSL and SessionType are derived separately)."""


class Negotiator:
    """Operational key negotiation for one login, in the target or initiator role.

    Target role: :meth:`respond` to the initiator's offers, then
    :meth:`target_declarations`.  Initiator role: :meth:`offers`, then
    :meth:`absorb` the target's answers.  Either way :meth:`params` gives the
    typed result.  ``leading=False`` (a connection joining an existing
    session) answers the LO keys with Reject.
    """

    def __init__(self, role: Role, local: dict[str, str], *, leading: bool = True) -> None:
        self.role: Role = role
        self.local = dict(local)
        self.leading = leading
        self.session_type: SessionType = "Normal"
        self.negotiated: dict[str, str] = {}
        """Every negotiated or peer-declared key value, as on the wire.  In the
        target role the target's own declaration is kept as
        ``TargetMaxRecvDataSegmentLength``; ``MaxRecvDataSegmentLength`` is the peer's."""
        self._seen: set[str] = set()
        self._offered: dict[str, str] = {}
        for key, value in self.local.items():
            spec = KEYS.get(key)
            if spec is not None and spec.rule is not Rule.REJECT and not self._valid_local(spec, value):
                raise ValueError(f"invalid local value {key}={value}")

    @staticmethod
    def _valid_local(spec: KeySpec, value: str) -> bool:
        if spec.rule is Rule.LIST:
            return all(v in spec.values for v in value.split(","))
        return _valid(spec, value)

    @property
    def _peer(self) -> str:
        return "initiator" if self.role == "target" else "target"

    def set_session_type(self, st: SessionType) -> None:
        """Discovery sessions use only a few keys; the rest are Irrelevant (§13)."""
        self.session_type = st
        self.negotiated["SessionType"] = st

    def record(self, key: str, value: str) -> None:
        """Store a declarative value handled by the login (names, aliases, SessionType)."""
        self.negotiated[key] = value

    def _mine(self, key: str) -> str:
        return self.local.get(key, KEYS[key].default)

    def _value(self, key: str) -> str:
        """The negotiated value, or the RFC default when the key was not negotiated."""
        return self.negotiated.get(key, KEYS[key].default)

    # --- responder ---------------------------------------------------------------

    def respond(self, pairs: list[tuple[str, str]], stage: Stage | str = "operational") -> list[tuple[str, str]]:
        """Answer the other side's offers (RFC 7143 §6.2).  Declarations get no answer."""
        if stage not in _STAGES_FOR_USE[Use.ALL]:
            raise ValueError(f"unknown stage {stage!r}")
        answers: list[tuple[str, str]] = []
        for key, value in pairs:
            if stage != "full-feature":
                if key in self._seen:
                    # §6.2: negotiating or declaring a key more than once in a login is an initiator error.
                    raise LoginError(LoginStatus.INITIATOR_ERROR, f"{key} offered twice")
                self._seen.add(key)
            answer = self._answer(key, value, stage)
            if answer is not None:
                answers.append((key, answer))
        return self._first_burst_fixup(answers)

    def _answer(self, key: str, value: str, stage: str) -> str | None:
        spec = KEYS.get(key)
        if spec is None:
            return "NotUnderstood"  # unknown and private (X-, X#) keys alike (§6.2.1)
        if value in _SPECIAL:
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"{key}={value} is an answer, not an offer")
        if self._peer not in spec.senders or stage not in _STAGES_FOR_USE[spec.use]:
            return "Reject"
        if spec.use is Use.LO and not self.leading:
            return "Reject"
        if spec.rule is Rule.REJECT:
            return "Reject"
        if self.session_type == "Discovery" and not spec.discovery:
            return "Irrelevant"
        if not _valid(spec, value):
            return "Reject"  # out of range or not a number/boolean: the default stays (§6.2.1)
        if spec.rule is Rule.DECLARATIVE:
            self.negotiated[key] = _normal(spec, value)
            if key == "SessionType":
                self.session_type = "Discovery" if value == "Discovery" else "Normal"
            return None
        result = _combine(spec, value, self._mine(key))
        if result != "Reject":
            self.negotiated[key] = result
        return result

    def _first_burst_fixup(self, answers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """FirstBurstLength: Irrelevant without unsolicited data, never above MaxBurstLength (§13.14)."""
        out = []
        for key, value in answers:
            if key == "FirstBurstLength" and parse_number(value) is not None:
                if self._value("InitialR2T") == "Yes" and self._value("ImmediateData") == "No":
                    self.negotiated.pop(key, None)
                    value = "Irrelevant"
                else:
                    value = str(min(int(value), int(self._value("MaxBurstLength"))))
                    self.negotiated[key] = value
            out.append((key, value))
        return out

    def target_declarations(self) -> list[tuple[str, str]]:
        """Declarative keys the target states once in the operational stage (§13.12)."""
        mrdsl = self._mine("MaxRecvDataSegmentLength")
        self.negotiated["TargetMaxRecvDataSegmentLength"] = mrdsl
        return [("MaxRecvDataSegmentLength", mrdsl)]

    # --- proposer (initiator role) --------------------------------------------------

    def offers(self) -> list[tuple[str, str]]:
        """The keys to propose from ``local``, those that apply to the session type and role."""
        out = []
        for key, value in self.local.items():
            spec = KEYS.get(key)
            if spec is None or spec.rule is Rule.REJECT or self.role not in spec.senders:
                continue
            if spec.use is Use.FFPO or (self.session_type == "Discovery" and not spec.discovery):
                continue
            out.append((key, value))
            if spec.rule is not Rule.DECLARATIVE:
                self._offered[key] = value
        return out

    def absorb(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Take the responder's answers; return our answers to keys it offered itself.

        An answer that no responder could give to our offer (a list value we did
        not propose, a minimum above our value, ...) raises ``LoginError``.
        """
        answers: list[tuple[str, str]] = []
        for key, value in pairs:
            if key == "MaxRecvDataSegmentLength" and self.role == "initiator":
                if key in self._seen:
                    raise LoginError(LoginStatus.INITIATOR_ERROR, f"target declared {key} twice")
                self._seen.add(key)
                if not _valid(KEYS[key], value):
                    raise LoginError(LoginStatus.INITIATOR_ERROR, f"target declared {key}={value}")
                self.negotiated["TargetMaxRecvDataSegmentLength"] = _normal(KEYS[key], value)
                continue
            offered = self._offered.pop(key, None)
            if offered is None:
                answers += self.respond([(key, value)])  # the target's own offer (or a repeat: error)
                continue
            self._seen.add(key)
            if value in _SPECIAL:
                continue  # the default stays
            spec = KEYS[key]
            if not _acceptable(spec, offered, value):
                raise LoginError(LoginStatus.INITIATOR_ERROR, f"answer {key}={value} does not fit our {offered}")
            self.negotiated[key] = _normal(spec, value)
        return answers

    # --- results ------------------------------------------------------------------

    def params(self) -> SessionParams:
        """The typed result of the negotiation (RFC defaults for keys not negotiated)."""
        n = self.negotiated
        default_mrdsl = int(KEYS["MaxRecvDataSegmentLength"].default)
        mine_mrdsl = int(self._mine("MaxRecvDataSegmentLength"))
        if self.role == "target":
            mrdsl_t, mrdsl_i = mine_mrdsl, int(n.get("MaxRecvDataSegmentLength", default_mrdsl))
        else:
            mrdsl_i, mrdsl_t = mine_mrdsl, int(n.get("TargetMaxRecvDataSegmentLength", default_mrdsl))
        p = SessionParams(
            session_type=self.session_type,
            header_digest=self._value("HeaderDigest") == "CRC32C",
            data_digest=self._value("DataDigest") == "CRC32C",
            max_recv_data_segment_length_target=mrdsl_t,
            max_recv_data_segment_length_initiator=mrdsl_i,
        )
        for key, name in _PARAM_FIELDS.items():
            spec = KEYS[key]
            if self.session_type == "Discovery" and not spec.discovery:
                continue  # Irrelevant: the dataclass default stands
            raw = n.get(key, spec.default)
            value: object = raw
            if spec.values == _BOOL:
                value = raw == "Yes"
            elif spec.high:
                value = int(raw)
            setattr(p, name, value)
        # FirstBurstLength never exceeds MaxBurstLength (§13.14).
        p.first_burst_length = min(p.first_burst_length, p.max_burst_length)
        return p
