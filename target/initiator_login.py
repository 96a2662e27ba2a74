"""Initiator side of the iSCSI login phase, sans-IO (RFC 7143 §6, §11.12-11.13).

The mirror of :mod:`sanlab.target.login`: :class:`InitiatorLogin` gives the
Login Requests to send and is fed the target's Login Responses; it never
touches a socket.  What is symmetric is shared with the target: the stage
transitions (:data:`~sanlab.target.login.STAGE_TRANSITIONS`), the operational
key negotiation (:class:`~sanlab.target.keys.Negotiator` in the initiator role,
one key table for both sides) and CHAP (:class:`~sanlab.target.chap.InitiatorChap`).

The requests follow one table, :data:`_STEPS` (ARCHITECTURE.md convention 2):

* without CHAP, one operational step: the leading keys and our offers, with a
  transit to full-feature phase, repeated with our answers until the target
  transits too;
* with CHAP, three security-stage steps first: ``AuthMethod=CHAP``, then
  ``CHAP_A``, then ``CHAP_N``/``CHAP_R`` (and our own challenge for mutual CHAP)
  with a transit to the operational stage.

A response with the C bit set carries only part of the target's text: we ask
for the rest with an empty Login Request (RFC 7143 §6.1, §11.13).  Any login
status other than success, or an answer we cannot accept, ends the login with
:class:`~sanlab.target.errors.LoginFailed` (a PeerRefused: the target answered).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable

from sanlab.target.chap import ChapCredentials, InitiatorChap
from sanlab.target.errors import LoginError, LoginFailed, LoginStatus
from sanlab.target.keys import INITIATOR_DEFAULTS, Negotiator, SessionParams, encode_text, parse_text
from sanlab.target.login import ISCSI_VERSION, STAGE_TRANSITIONS
from sanlab.target.pdu import LoginRequest, LoginResponse, LoginStage
from sanlab.target.seqnum import sn_add

_SEC = LoginStage.SECURITY_NEGOTIATION
_OP = LoginStage.LOGIN_OPERATIONAL_NEGOTIATION
_FFP = LoginStage.FULL_FEATURE_PHASE

MAX_ROUNDS = 16
"""Operational rounds we go through before giving up on a target that never transits."""
MAX_LOGIN_TEXT = 65536
"""Most text we take from one login's responses (the target's own limit, :mod:`sanlab.target.login`)."""


class _Step(enum.Enum):
    AUTH_METHOD = "auth-method"
    CHAP_ALGORITHM = "chap-algorithm"
    CHAP_RESPONSE = "chap-response"
    OPERATIONAL = "operational"
    DONE = "done"


_STEPS: dict[_Step, tuple[LoginStage, LoginStage, bool]] = {
    _Step.AUTH_METHOD: (_SEC, _OP, False),
    _Step.CHAP_ALGORITHM: (_SEC, _OP, False),
    _Step.CHAP_RESPONSE: (_SEC, _OP, True),
    _Step.OPERATIONAL: (_OP, _FFP, True),
}
"""Step → the CSG, NSG and T bit of its Login Request."""


@dataclass(slots=True)
class LoginOutcome:
    """What the full-feature phase starts from once the target transits to it."""

    params: SessionParams
    """The negotiated parameters (digests, burst lengths, MaxRecvDataSegmentLength of each side)."""
    tsih: int
    """The session's TSIH, given by the target in the final Login Response (RFC 7143 §11.13)."""
    expstatsn: int
    """StatSN of the final Login Response + 1."""
    expcmdsn: int
    maxcmdsn: int
    """The command window the final Login Response opened (§4.2.2.1)."""
    keys: dict[str, str] = field(default_factory=dict)
    """Every negotiated or declared key, as on the wire."""


class InitiatorLogin:
    """Login state machine for one connection, initiator role."""

    def __init__(self, initiator_name: str, target_name: str | None, *, isid: int, tsih: int = 0, cid: int = 0,
                 itt: int = 1, cmdsn: int = 1, expstatsn: int = 0, keys: dict[str, str] | None = None,
                 chap: ChapCredentials | None = None, target_chap: ChapCredentials | None = None,
                 chap_rng: Callable[[int], bytes] | None = None) -> None:
        """``target_name`` None: a discovery session.  ``tsih`` non-zero joins an existing session;
        zero with a known ISID reinstates it (§6.3.5).  ``chap_rng`` makes mutual-CHAP challenges
        deterministic in tests."""
        self.isid, self.tsih, self.cid, self.itt, self.cmdsn = isid, tsih, cid, itt, cmdsn
        self.expstatsn = expstatsn
        self.outcome: LoginOutcome | None = None
        """Set when the target has transited to full-feature phase."""
        session_type = "Normal" if target_name is not None else "Discovery"
        self._negotiator = Negotiator("initiator", dict(keys if keys is not None else INITIATOR_DEFAULTS))
        self._negotiator.set_session_type(session_type)  # type: ignore[arg-type]
        self._leading = [("InitiatorName", initiator_name), ("SessionType", session_type)]
        if target_name is not None:
            self._leading.append(("TargetName", target_name))
        self._chap: InitiatorChap | None = None
        if chap is not None:
            self._chap = (InitiatorChap(chap, target_chap) if chap_rng is None
                          else InitiatorChap(chap, target_chap, rng=chap_rng))
        self._step = _Step.AUTH_METHOD if self._chap is not None else _Step.OPERATIONAL
        self._partial = bytearray()
        self._rounds = 0

    @property
    def done(self) -> bool:
        """True once the login succeeded (see :attr:`outcome`)."""
        return self._step is _Step.DONE

    def first_request(self) -> LoginRequest:
        """The Login Request that opens the login."""
        if self._chap is not None:
            return self._request(self._leading + self._chap.auth_method())
        return self._request(self._leading + self._negotiator.offers())

    def receive(self, resp: LoginResponse) -> LoginRequest | None:
        """Take one Login Response; return the next request, or None when the login is done.

        Raises :class:`LoginFailed` when the target refused the login or answered what we cannot accept.
        """
        try:
            return self._receive(resp)
        except LoginError as exc:
            raise LoginFailed(exc.status, str(exc)) from exc

    def _request(self, pairs: list[tuple[str, str]], *, more: bool = False) -> LoginRequest:
        """The current step's request; ``more``: an empty T=0 request asking for the rest of a C-bit response."""
        csg, nsg, transit = _STEPS[self._step]
        transit = transit and not more
        return LoginRequest(transit=transit, csg=csg, nsg=nsg if transit else 0, version_max=ISCSI_VERSION,
                            version_min=ISCSI_VERSION, isid=self.isid, tsih=self.tsih, initiator_task_tag=self.itt,
                            cid=self.cid, cmdsn=self.cmdsn, expstatsn=self.expstatsn, data=encode_text(pairs))

    def _receive(self, resp: LoginResponse) -> LoginRequest | None:
        if self._step is _Step.DONE:
            raise LoginError(LoginStatus.INITIATOR_ERROR, "Login Response after the login finished")
        status = (resp.status_class << 8) | resp.status_detail
        if status:
            name = LoginStatus(status).name if status in LoginStatus._value2member_map_ else "unknown"
            raise LoginFailed(status, f"refused by the target ({name})")
        if resp.initiator_task_tag != self.itt or resp.isid != self.isid:
            raise LoginError(LoginStatus.INITIATOR_ERROR, "Login Response for another ITT or ISID")
        csg, nsg, transit = _STEPS[self._step]
        if resp.csg != csg:
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"Login Response in stage {resp.csg}, we are in {csg}")
        # The target may transit only where the RFC allows and never further than we asked (§6.3).
        if resp.transit and (not transit or resp.nsg not in STAGE_TRANSITIONS.get(resp.csg, ())
                             or resp.nsg > nsg):
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"target transits from stage {resp.csg} to {resp.nsg}")
        self.expstatsn = sn_add(resp.statsn, 1)
        self._partial += resp.data
        if len(self._partial) > MAX_LOGIN_TEXT:
            raise LoginError(LoginStatus.OUT_OF_RESOURCES, f"login text longer than {MAX_LOGIN_TEXT} bytes")
        if resp.cont:
            if resp.transit:
                raise LoginError(LoginStatus.INITIATOR_ERROR, "T and C bits both set")
            return self._request([], more=True)
        answers = dict(parse_text(bytes(self._partial)))
        self._partial.clear()
        return self._advance(resp, answers)

    def _advance(self, resp: LoginResponse, answers: dict[str, str]) -> LoginRequest | None:
        chap = self._chap
        if self._step is _Step.AUTH_METHOD:
            assert chap is not None
            if answers.get("AuthMethod") != "CHAP":
                raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, f"AuthMethod={answers.get('AuthMethod')}")
            self._step = _Step.CHAP_ALGORITHM
            return self._request(chap.offer())
        if self._step is _Step.CHAP_ALGORITHM:
            assert chap is not None
            self._step = _Step.CHAP_RESPONSE
            return self._request(chap.answer(answers))
        if self._step is _Step.CHAP_RESPONSE:
            assert chap is not None
            chap.verify(answers)
            if not resp.transit:
                raise LoginError(LoginStatus.INITIATOR_ERROR, "target did not leave the security stage")
            self._step = _Step.OPERATIONAL
            return self._request(self._negotiator.offers())
        extra = self._negotiator.absorb(list(answers.items()))
        if resp.transit:
            self._finish(resp)
            return None
        self._rounds += 1
        if self._rounds >= MAX_ROUNDS:
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"no transit to full-feature phase in {MAX_ROUNDS} rounds")
        return self._request(extra)

    def _finish(self, resp: LoginResponse) -> None:
        self._step = _Step.DONE
        self.tsih = resp.tsih
        self.outcome = LoginOutcome(params=self._negotiator.params(), tsih=resp.tsih, expstatsn=self.expstatsn,
                                    expcmdsn=resp.expcmdsn, maxcmdsn=resp.maxcmdsn,
                                    keys=dict(self._negotiator.negotiated))
