"""iSCSI text keys and the operational negotiation (RFC 7143 §6.2, §13).

Text is ``key=value`` pairs, each ending in a NUL (§6.1).  One table,
:data:`KEYS`, gives every operational key its rule (list, boolean AND/OR,
numerical min/max, declarative), default, range and where it applies; the
:class:`Negotiator` answers offers from that table in either role, so the
target and the initiator share the same rules.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Iterable, Literal

from sanlab.target.errors import LoginError, LoginStatus

Role = Literal["target", "initiator"]
SessionType = Literal["Normal", "Discovery"]

MAX_KEY_NAME = 63
"""RFC 7143 §6.1: key names are at most 63 bytes."""
MAX_VALUE = 8192
"""RFC 7143 §6.1: the longest value any key may carry (text values of some keys)."""

_KEY_RE = re.compile(r"^[A-Za-z0-9.\-+@_#]+$")
_SPECIAL = frozenset({"Reject", "Irrelevant", "NotUnderstood"})


def parse_text(data: bytes) -> list[tuple[str, str]]:
    """Split NUL-terminated ``key=value`` text into pairs (RFC 7143 §6.1)."""
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
        if not key or len(key_b) > MAX_KEY_NAME or not _KEY_RE.match(key):
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"invalid key name {key[:70]!r}")
        if len(value_b) > MAX_VALUE:
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"value of {key} longer than {MAX_VALUE} bytes")
        pairs.append((key, value))
    return pairs


def encode_text(pairs: Iterable[tuple[str, str]]) -> bytes:
    """``key=value\\0`` for each pair."""
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs)


class Rule(enum.Enum):
    """How an offer and the responder's value combine (RFC 7143 §6.2.1-§6.2.2)."""

    LIST = "list"
    AND = "and"
    OR = "or"
    MIN = "min"
    MAX = "max"
    DECLARATIVE = "declarative"
    REJECT = "reject"
    """Obsolete keys the responder must answer with Reject (§13.26)."""


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One operational key of RFC 7143 §13."""

    rule: Rule
    default: str
    values: frozenset[str] = frozenset()
    """Valid values of a list key."""
    low: int = 0
    high: int = 0
    discovery: bool = True
    """Whether the key applies in a discovery session (else it is Irrelevant there)."""


_BOOL = frozenset({"Yes", "No"})
_MAX24 = (1 << 24) - 1

KEYS: dict[str, KeySpec] = {
    "HeaderDigest": KeySpec(Rule.LIST, "None", frozenset({"None", "CRC32C"})),
    "DataDigest": KeySpec(Rule.LIST, "None", frozenset({"None", "CRC32C"})),
    "MaxConnections": KeySpec(Rule.MIN, "1", low=1, high=65535, discovery=False),
    "InitialR2T": KeySpec(Rule.OR, "Yes", _BOOL, discovery=False),
    "ImmediateData": KeySpec(Rule.AND, "Yes", _BOOL, discovery=False),
    "MaxRecvDataSegmentLength": KeySpec(Rule.DECLARATIVE, "8192", low=512, high=_MAX24),
    "MaxBurstLength": KeySpec(Rule.MIN, "262144", low=512, high=_MAX24, discovery=False),
    "FirstBurstLength": KeySpec(Rule.MIN, "65536", low=512, high=_MAX24, discovery=False),
    "DefaultTime2Wait": KeySpec(Rule.MAX, "2", low=0, high=3600),
    "DefaultTime2Retain": KeySpec(Rule.MIN, "20", low=0, high=3600),
    "MaxOutstandingR2T": KeySpec(Rule.MIN, "1", low=1, high=65535, discovery=False),
    "DataPDUInOrder": KeySpec(Rule.OR, "Yes", _BOOL, discovery=False),
    "DataSequenceInOrder": KeySpec(Rule.OR, "Yes", _BOOL, discovery=False),
    "ErrorRecoveryLevel": KeySpec(Rule.MIN, "0", low=0, high=2),
    # RFC 7143 §13.26: markers are obsolete; a responder may answer IFMarker/OFMarker with "No"
    # (kinder to old initiators than Reject) and must answer the *MarkInt keys with Reject.
    "IFMarker": KeySpec(Rule.AND, "No", _BOOL),
    "OFMarker": KeySpec(Rule.AND, "No", _BOOL),
    "IFMarkInt": KeySpec(Rule.REJECT, "2048"),
    "OFMarkInt": KeySpec(Rule.REJECT, "2048"),
    # RFC 7143 §13.23: we implement none of the RFC 7143 task-reporting extensions.
    "TaskReporting": KeySpec(Rule.LIST, "RFC3720", frozenset({"RFC3720", "ResponseFence", "FastAbort"})),
    # RFC 7144 §2.1: numerical, the lower of the two levels wins.
    "iSCSIProtocolLevel": KeySpec(Rule.MIN, "0", low=0, high=31),
}
"""Key → rule: the one negotiation table (ARCHITECTURE.md convention 2)."""

DECLARED_ELSEWHERE = frozenset({"InitiatorName", "TargetName", "SessionType", "InitiatorAlias", "TargetAlias",
                                "TargetAddress", "TargetPortalGroupTag", "SendTargets"})
"""Declarative keys that the login (or Text) handles, not the negotiation table."""

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
"""What the target supports / prefers.  ErrorRecoveryLevel 0 and one connection per
session are what the full-feature phase implements; DefaultTime2Retain 0 because
nothing is retained for reinstatement at ERL 0."""

INITIATOR_DEFAULTS: dict[str, str] = dict(TARGET_DEFAULTS, HeaderDigest="None", DataDigest="None")
"""What sanlab's own initiator offers by default."""


@dataclass(slots=True)
class SessionParams:
    """The negotiated session and connection parameters, typed."""

    session_type: str = "Normal"
    header_digest: bool = False
    data_digest: bool = False
    max_connections: int = 1
    initial_r2t: bool = True
    immediate_data: bool = True
    max_recv_data_segment_length_target: int = 8192
    """What the target may receive in one PDU (the target's declaration)."""
    max_recv_data_segment_length_initiator: int = 8192
    """What the initiator may receive in one PDU (the initiator's declaration)."""
    max_burst_length: int = 262144
    first_burst_length: int = 65536
    default_time2wait: int = 2
    default_time2retain: int = 20
    max_outstanding_r2t: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    error_recovery_level: int = 0
    initiator_name: str = ""
    initiator_alias: str = ""
    target_name: str = ""
    target_alias: str = ""


def _valid(spec: KeySpec, value: str) -> bool:
    if spec.rule in (Rule.MIN, Rule.MAX, Rule.DECLARATIVE):
        return value.isdigit() and len(value) <= 10 and spec.low <= int(value) <= spec.high
    if spec.rule in (Rule.AND, Rule.OR):
        return value in _BOOL
    return True


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
    if spec.rule is Rule.MIN:
        return str(min(int(offered), int(mine)))
    if spec.rule is Rule.MAX:
        return str(max(int(offered), int(mine)))
    raise AssertionError(spec.rule)


class Negotiator:
    """Operational key negotiation for one login, in the target or initiator role."""

    def __init__(self, role: Role, local: dict[str, str]) -> None:
        self.role = role
        self.local = dict(local)
        self.session_type: SessionType = "Normal"
        self.negotiated: dict[str, str] = {}
        """Every negotiated or declared key value, as on the wire."""
        self._seen: set[str] = set()
        self._offered: dict[str, str] = {}

    def set_session_type(self, st: SessionType) -> None:
        """Discovery sessions use only a few keys; the rest are Irrelevant (§13)."""
        self.session_type = st
        self.negotiated["SessionType"] = st

    def record(self, key: str, value: str) -> None:
        """Store a declarative value handled outside the table (names, aliases)."""
        self.negotiated[key] = value

    def _mine(self, key: str) -> str:
        return self.local.get(key, KEYS[key].default)

    # --- responder ---------------------------------------------------------------

    def respond(self, pairs: list[tuple[str, str]], stage: str = "operational") -> list[tuple[str, str]]:
        """Answer the other side's offers (RFC 7143 §6.2)."""
        answers: list[tuple[str, str]] = []
        for key, value in pairs:
            if key in self._seen:
                # A key may be negotiated once per login (§6.2, "negotiation ... only once").
                raise LoginError(LoginStatus.INITIATOR_ERROR, f"{key} offered twice")
            self._seen.add(key)
            answer = self._answer(key, value)
            if answer is not None:
                answers.append((key, answer))
        return answers

    def _answer(self, key: str, value: str) -> str | None:
        spec = KEYS.get(key)
        if spec is None:
            if key in DECLARED_ELSEWHERE:
                self.negotiated[key] = value
                return None
            return "NotUnderstood"  # unknown and private (X-, X#) keys alike (§6.2.1)
        if value in _SPECIAL:
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"{key}={value} is an answer, not an offer")
        if spec.rule is Rule.REJECT:
            return "Reject"
        if self.session_type == "Discovery" and not spec.discovery:
            return "Irrelevant"
        if spec.rule is Rule.DECLARATIVE:
            if not _valid(spec, value):
                return "Reject"
            self.negotiated[key] = value
            return None
        # A list may name values we do not know; we only ever pick from our own (§6.2.2).
        if spec.rule is not Rule.LIST and not _valid(spec, value):
            return "Reject"  # out of range or not a number/boolean: keep the default (§6.2.1)
        result = _combine(spec, value, self._mine(key))
        if result != "Reject":
            self.negotiated[key] = result
        return result

    def target_declarations(self) -> list[tuple[str, str]]:
        """Declarative keys the target states once in the operational stage."""
        mrdsl = self._mine("MaxRecvDataSegmentLength")
        self.negotiated.setdefault("TargetMaxRecvDataSegmentLength", mrdsl)
        return [("MaxRecvDataSegmentLength", mrdsl)]

    # --- proposer (initiator role) --------------------------------------------------

    def offers(self) -> list[tuple[str, str]]:
        """The keys to propose, from ``local`` (only those that apply to the session type)."""
        out = []
        for key, value in self.local.items():
            spec = KEYS.get(key)
            if spec is None or spec.rule is Rule.REJECT:
                continue
            if self.session_type == "Discovery" and not spec.discovery:
                continue
            out.append((key, value))
            self._offered[key] = value
        return out

    def absorb(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Take the responder's answers; return our answers to keys it offered itself."""
        answers: list[tuple[str, str]] = []
        for key, value in pairs:
            if key == "MaxRecvDataSegmentLength" and self.role == "initiator":
                spec = KEYS[key]
                if not _valid(spec, value):
                    raise LoginError(LoginStatus.INITIATOR_ERROR, f"target declared {key}={value}")
                self.negotiated["TargetMaxRecvDataSegmentLength"] = value
                continue
            offered = self._offered.pop(key, None)
            if offered is None:
                answers += self.respond([(key, value)])
                continue
            spec = KEYS[key]
            if value in ("Reject", "Irrelevant", "NotUnderstood"):
                continue  # the default stays
            if not self._acceptable(spec, offered, value):
                raise LoginError(LoginStatus.INITIATOR_ERROR, f"answer {key}={value} does not fit our {offered}")
            self.negotiated[key] = value
        return answers

    @staticmethod
    def _acceptable(spec: KeySpec, offered: str, answer: str) -> bool:
        if spec.rule is Rule.LIST:
            return answer in offered.split(",")
        if not _valid(spec, answer):
            return False
        if spec.rule is Rule.AND:
            return offered == "Yes" or answer == "No"
        if spec.rule is Rule.OR:
            return offered == "No" or answer == "Yes"
        if spec.rule is Rule.MIN:
            return int(answer) <= int(offered)
        if spec.rule is Rule.MAX:
            return int(answer) >= int(offered)
        return True

    # --- results ------------------------------------------------------------------

    def _value(self, key: str) -> str:
        """The negotiated value, or the RFC default when the key was not negotiated."""
        return self.negotiated.get(key, KEYS[key].default)

    def params(self) -> SessionParams:
        """The typed result of the negotiation."""
        n = self.negotiated
        mine_mrdsl = int(self._mine("MaxRecvDataSegmentLength"))
        declared_by_peer = int(n.get("MaxRecvDataSegmentLength", KEYS["MaxRecvDataSegmentLength"].default))
        if self.role == "target":
            mrdsl_t, mrdsl_i = mine_mrdsl, declared_by_peer
        else:
            mrdsl_i = mine_mrdsl
            mrdsl_t = int(n.get("TargetMaxRecvDataSegmentLength", KEYS["MaxRecvDataSegmentLength"].default))
        p = SessionParams(
            session_type=self.session_type,
            header_digest=self._value("HeaderDigest") == "CRC32C",
            data_digest=self._value("DataDigest") == "CRC32C",
            max_recv_data_segment_length_target=mrdsl_t,
            max_recv_data_segment_length_initiator=mrdsl_i,
            default_time2wait=int(self._value("DefaultTime2Wait")),
            default_time2retain=int(self._value("DefaultTime2Retain")),
            error_recovery_level=int(self._value("ErrorRecoveryLevel")),
            initiator_name=n.get("InitiatorName", ""),
            initiator_alias=n.get("InitiatorAlias", ""),
            target_name=n.get("TargetName", ""),
            target_alias=n.get("TargetAlias", ""),
        )
        if self.session_type == "Normal":
            p.max_connections = int(self._value("MaxConnections"))
            p.initial_r2t = self._value("InitialR2T") == "Yes"
            p.immediate_data = self._value("ImmediateData") == "Yes"
            p.max_burst_length = int(self._value("MaxBurstLength"))
            # FirstBurstLength never exceeds MaxBurstLength (§13.14).
            p.first_burst_length = min(int(self._value("FirstBurstLength")), p.max_burst_length)
            p.max_outstanding_r2t = int(self._value("MaxOutstandingR2T"))
            p.data_pdu_in_order = self._value("DataPDUInOrder") == "Yes"
            p.data_sequence_in_order = self._value("DataSequenceInOrder") == "Yes"
        return p
