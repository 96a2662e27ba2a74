"""Target side of the iSCSI login phase, sans-IO (RFC 7143 §6, §11.12-11.13).

:class:`TargetLogin` is fed Login Request PDUs and returns Login Response
PDUs.  It decides the stage transitions (one table, :data:`STAGE_TRANSITIONS`),
runs CHAP in the security stage, the operational key negotiation, the target
lookup, the initiator ACL and the ISID/TSIH rules (new session, session
reinstatement, connection reinstatement).  When the final response goes out,
:attr:`TargetLogin.result` holds what the full-feature phase needs.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Protocol

import structlog

from sanlab.target.chap import ChapCredentials, TargetChap
from sanlab.target.errors import LoginError, LoginStatus
from sanlab.target.keys import Negotiator, SessionParams, encode_text, parse_text
from sanlab.target.pdu import LoginRequest, LoginResponse, LoginStage
from sanlab.target.seqnum import sn_add

log = structlog.get_logger("sanlab.target.login")

ISCSI_VERSION = 0x00
"""The only version RFC 7143 defines (§11.12.4)."""

_SEC = LoginStage.SECURITY_NEGOTIATION
_OP = LoginStage.LOGIN_OPERATIONAL_NEGOTIATION
_FFP = LoginStage.FULL_FEATURE_PHASE

STAGE_TRANSITIONS: dict[int, frozenset[int]] = {
    _SEC: frozenset({_OP, _FFP}),
    _OP: frozenset({_FFP}),
}
"""CSG → the NSGs a transit may name (RFC 7143 §6.3 / §11.12.3)."""

_SECURITY_KEYS = frozenset({"AuthMethod", "CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"})
_HANDLED_HERE = frozenset({"InitiatorName", "TargetName", "SessionType", "InitiatorAlias"})


@dataclass(slots=True)
class TargetAuth:
    """Login-time facts about one target: where it is, who may log in, CHAP secrets."""

    name: str
    alias: str = ""
    acl: frozenset[str] | None = None
    """Initiator names allowed; ``None`` admits any initiator."""
    incoming: Callable[[str, str], bytes | None] | None = None
    """CHAP secret for (initiator name, CHAP_N); ``None``: no authentication required."""
    outgoing: ChapCredentials | None = None
    """The target's own credentials for mutual CHAP."""


class LoginDirectory(Protocol):
    """What the login needs from the running server (pure lookups, no I/O)."""

    portal_group_tag: int
    used_challenges: set[bytes]
    local_keys: dict[str, str]
    discovery_auth: TargetAuth

    def target(self, name: str) -> TargetAuth | None:
        """The target called ``name``, or None."""
        ...

    def session_exists(self, initiator_name: str, isid: int, target_name: str, tsih: int) -> bool:
        """Whether a session with this I_T nexus and TSIH is live."""
        ...

    def new_tsih(self) -> int:
        """A fresh non-zero TSIH."""
        ...

    def admit_session(self, initiator_name: str, isid: int, target_name: str) -> None:
        """Raise LoginError (OUT OF RESOURCES) when a new session of this I_T nexus would pass the
        array's session limits (a reinstatement replaces its old session: not counted twice)."""
        ...


class _State(enum.Enum):
    STARTED = "started"
    DONE = "done"
    FAILED = "failed"


@dataclass(slots=True)
class LoginResult:
    """Everything the full-feature phase needs from a completed login."""

    params: SessionParams
    initiator_name: str
    isid: int
    tsih: int
    cid: int
    target: TargetAuth | None
    """None for a discovery session."""
    statsn: int
    """StatSN for the first full-feature response."""
    expcmdsn: int
    """ExpCmdSN: the CmdSN of the Login Request (login PDUs are immediate, §4.2.2.1)."""
    existing_tsih: int
    """Non-zero when the login joins (reinstates a connection of) an existing session."""
    username: str | None = None
    keys: dict[str, str] = field(default_factory=dict)


class TargetLogin:
    """Login state machine for one connection, target role."""

    def __init__(self, directory: LoginDirectory, *, statsn: int = 0, cmd_window: int = 128) -> None:
        self.dir = directory
        self.statsn = statsn
        self.cmd_window = cmd_window
        self.result: LoginResult | None = None
        self.failure: LoginError | None = None
        self._state = _State.STARTED
        self._first: LoginRequest | None = None
        self._stage: int = _SEC
        self._negotiator = Negotiator("target", dict(directory.local_keys))
        self._chap: TargetChap | None = None
        self._authenticated = False
        self._target: TargetAuth | None = None
        self._initiator_name = ""
        self._session_type = "Normal"
        self._pending_text = bytearray()
        self._declared = False
        self._leading_done = False
        self._username: str | None = None
        self._extra: dict[str, str] = {}
        self._declarations: dict[str, str] = {}
        """InitiatorName, TargetName, SessionType (and InitiatorAlias) as the first request declared them."""

    @property
    def done(self) -> bool:
        """True once the final response (success or failure) has been produced."""
        return self._state is not _State.STARTED

    def receive(self, req: LoginRequest) -> LoginResponse:
        """Answer one Login Request."""
        if self._state is not _State.STARTED:
            raise LoginError(LoginStatus.INITIATOR_ERROR, "login already finished")
        try:
            return self._receive(req)
        except LoginError as exc:
            self._state = _State.FAILED
            self.failure = exc
            log.info("login_failed", status=f"0x{int(exc.status):04x}", reason=str(exc),
                     initiator=self._initiator_name or None)
            return self._response(req, transit=False, nsg=0, status=exc.status, data=b"")

    def _response(self, req: LoginRequest, *, transit: bool, nsg: int, status: int, data: bytes,
                  tsih: int | None = None) -> LoginResponse:
        first = self._first or req
        sn = self.statsn
        self.statsn = sn_add(sn, 1)
        # ExpCmdSN is the login's CmdSN: login requests are immediate and do not advance it (§11.12.6).
        return LoginResponse(
            transit=transit, cont=False, csg=req.csg, nsg=nsg if transit else 0, version_max=ISCSI_VERSION,
            version_active=ISCSI_VERSION, isid=first.isid, tsih=req.tsih if tsih is None else tsih,
            initiator_task_tag=req.initiator_task_tag, statsn=sn, expcmdsn=first.cmdsn,
            maxcmdsn=sn_add(first.cmdsn, self.cmd_window - 1), status_class=status >> 8,
            status_detail=status & 0xFF, data=data)

    def _receive(self, req: LoginRequest) -> LoginResponse:
        first = self._first
        if first is None:
            self._first = req
            # A non-zero TSIH joins an existing session: session-wide (LO) keys are not renegotiated.
            self._negotiator.leading = req.tsih == 0
            if not req.version_min <= ISCSI_VERSION <= req.version_max:
                raise LoginError(LoginStatus.UNSUPPORTED_VERSION,
                                 f"versions {req.version_min}..{req.version_max} do not include 0")
            self._stage = req.csg
        else:
            # Every Login Request of one login carries the same ISID, TSIH, CID and ITT
            # (§11.12.5-§11.12.7); CmdSN does not change either.
            if (req.isid, req.tsih, req.cid) != (first.isid, first.tsih, first.cid):
                raise LoginError(LoginStatus.INITIATOR_ERROR, "ISID/TSIH/CID changed during login")
            if req.csg != self._stage:
                raise LoginError(LoginStatus.INITIATOR_ERROR,
                                 f"CSG {req.csg} but the login is in stage {self._stage}")
        if req.csg not in STAGE_TRANSITIONS:
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"invalid CSG {req.csg}")
        if req.transit and req.cont:
            raise LoginError(LoginStatus.INITIATOR_ERROR, "T and C bits both set")
        if req.transit and req.nsg not in STAGE_TRANSITIONS[req.csg]:
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"transit from stage {req.csg} to {req.nsg}")

        self._pending_text += req.data
        if len(self._pending_text) > 65536:
            raise LoginError(LoginStatus.OUT_OF_RESOURCES, "login text longer than 64 KiB")
        if req.cont:
            # More text follows in the next request: acknowledge with an empty response (§11.12.2).
            return self._response(req, transit=False, nsg=0, status=0, data=b"")
        pairs = parse_text(bytes(self._pending_text))
        self._pending_text.clear()

        answers: list[tuple[str, str]] = []
        if not self._leading_done:
            # The first complete text (possibly spread over C-bit continuations) carries the leading keys.
            self._leading_done = True
            answers += self._leading_keys(req, pairs)
        else:
            self._redeclarations(pairs)
        pairs = [(k, v) for k, v in pairs if k not in _HANDLED_HERE]

        if req.csg == _SEC:
            answers += self._security(pairs)
            ready = self._authenticated
        else:
            if not self._authenticated:
                # Skipping the security stage is only allowed when no authentication is required.
                if self._auth_required():
                    raise LoginError(LoginStatus.AUTHENTICATION_FAILURE,
                                     "authentication required but the security stage was skipped")
                self._authenticated = True
                self._authorize()
            sec = [k for k, _ in pairs if k in _SECURITY_KEYS]
            if sec:
                raise LoginError(LoginStatus.INITIATOR_ERROR, f"security keys {sec} in the operational stage")
            answers += self._negotiator.respond(pairs, "operational")
            ready = True

        transit = bool(req.transit and ready)
        nsg = req.nsg if transit else 0
        if transit and nsg == _FFP and not self._declared:
            answers += self._negotiator.target_declarations()
            self._declared = True
        elif req.csg == _OP and not self._declared:
            answers += self._negotiator.target_declarations()
            self._declared = True
        if transit:
            self._stage = nsg
        if transit and nsg == _FFP:
            return self._finish(req, answers)
        return self._response(req, transit=transit, nsg=nsg, status=0, data=encode_text(answers))

    def _redeclarations(self, pairs: list[tuple[str, str]]) -> None:
        """Check the login's declarative keys when a later Login Request repeats them.

        RFC 7143 §6.2 forbids declaring a key twice in a login and has the target answer an attempt
        with Login reject (initiator error).  libiscsi (QEMU's initiator) nevertheless repeats
        InitiatorName, TargetName and SessionType in the Login Request that follows a security
        stage answered ``AuthMethod=None``.  The same value again changes nothing that was
        declared (§13.4, §13.5, §13.21 are declarative keys: there is no answer to revise), so it is
        accepted; a different value would change the initiator, target or session type the login
        was authenticated and authorised for, and is the redeclaration §6.2 rejects.
        """
        for key, value in pairs:
            if key not in _HANDLED_HERE:
                continue
            first = self._declarations.get(key)
            if first is None and key == "InitiatorAlias":
                # An alias is informative (§13.6) and may come in any Login Request; record the first.
                self._declarations[key] = value
                self._negotiator.record(key, value)
            elif first is None:
                # TargetName in a discovery session, SessionType after an implicit Normal: each would
                # change what the first Login Request established (§6.2).
                raise LoginError(LoginStatus.INITIATOR_ERROR,
                                 f"{key}={value} declared after the first Login Request")
            elif value != first:
                raise LoginError(LoginStatus.INITIATOR_ERROR,
                                 f"{key} redeclared during login: {first!r} then {value!r}")

    def _auth_required(self) -> bool:
        auth = self._target if self._target is not None else self.dir.discovery_auth
        return auth.incoming is not None

    def _leading_keys(self, req: LoginRequest, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        values: dict[str, str] = {}
        for k, v in pairs:
            if k in _HANDLED_HERE:
                if k in values:
                    raise LoginError(LoginStatus.INITIATOR_ERROR, f"{k} sent twice")
                values[k] = v
        name = values.get("InitiatorName")
        if not name:
            raise LoginError(LoginStatus.MISSING_PARAMETER, "InitiatorName missing from the first Login Request")
        self._initiator_name = name
        st = values.get("SessionType", "Normal")
        if st not in ("Normal", "Discovery"):
            raise LoginError(LoginStatus.SESSION_TYPE_NOT_SUPPORTED, f"SessionType={st}")
        self._session_type = st
        self._negotiator.set_session_type(st)  # type: ignore[arg-type]
        for k in ("InitiatorName", "SessionType", "InitiatorAlias"):
            if k in values:
                self._negotiator.record(k, values[k])
        # What later Login Requests may repeat but not change (_redeclarations); SessionType as in
        # force, so an explicit "Normal" later matches an implicit one in the first request.
        self._declarations = {k: v for k, v in values.items() if k in ("InitiatorName", "InitiatorAlias")}
        self._declarations["SessionType"] = st
        answers: list[tuple[str, str]] = []
        if st == "Normal":
            tname = values.get("TargetName")
            if not tname:
                raise LoginError(LoginStatus.MISSING_PARAMETER, "TargetName missing for a Normal session")
            target = self.dir.target(tname)
            if target is None:
                raise LoginError(LoginStatus.NOT_FOUND, f"no target {tname}")
            self._target = target
            self._negotiator.record("TargetName", tname)
            self._declarations["TargetName"] = tname
            if req.tsih and not self.dir.session_exists(name, req.isid, tname, req.tsih):
                raise LoginError(LoginStatus.SESSION_DOES_NOT_EXIST, f"no session with TSIH {req.tsih}")
            # The TPGT goes in the first response of a Normal session (§13.9).
            answers.append(("TargetPortalGroupTag", str(self.dir.portal_group_tag)))
            if target.alias:
                answers.append(("TargetAlias", target.alias))
        else:
            if req.tsih:
                raise LoginError(LoginStatus.SESSION_DOES_NOT_EXIST, "discovery sessions have one connection")
            if "TargetName" in values:
                raise LoginError(LoginStatus.INITIATOR_ERROR, "TargetName in a discovery login")
        return answers

    def _security(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        auth = self._target if self._target is not None else self.dir.discovery_auth
        other = [(k, v) for k, v in pairs if k not in _SECURITY_KEYS]
        sec = [(k, v) for k, v in pairs if k in _SECURITY_KEYS]
        answers: list[tuple[str, str]] = []
        if other:
            # Operational keys may be offered in the security stage too (RFC 7143 §6.3 lets the
            # initiator start operational negotiation early); answer them like the operational stage.
            answers += self._negotiator.respond(other, "operational")
        if self._chap is None:
            lookup = auth.incoming
            name = self._initiator_name
            self._chap = TargetChap(None if lookup is None else (lambda user: lookup(name, user)), auth.outgoing,
                                    used_challenges=self.dir.used_challenges)
        if sec:
            out, done = self._chap.step(sec)
            answers += out
            if done and not self._authenticated:
                self._authenticated = True
                self._username = self._chap.username
                self._authorize()
        elif not self._authenticated and not self._auth_required():
            # No security keys offered and none required: nothing to authenticate.
            self._authenticated = True
            self._authorize()
        return answers

    def _authorize(self) -> None:
        target = self._target
        if target is not None and target.acl is not None and self._initiator_name not in target.acl:
            raise LoginError(LoginStatus.AUTHORIZATION_FAILURE,
                             f"initiator {self._initiator_name} is not in the ACL of {target.name}")

    def _finish(self, req: LoginRequest, answers: list[tuple[str, str]]) -> LoginResponse:
        assert self._first is not None
        if not self._authenticated:
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, "authentication not completed")
        first = self._first
        if not first.tsih and self._target is not None:
            self.dir.admit_session(self._initiator_name, first.isid, self._target.name)
        tsih = first.tsih or self.dir.new_tsih()
        params = self._negotiator.params()
        resp = self._response(req, transit=True, nsg=_FFP, status=0, data=encode_text(answers), tsih=tsih)
        self._state = _State.DONE
        self.result = LoginResult(params=params, initiator_name=self._initiator_name, isid=first.isid, tsih=tsih,
                                  cid=first.cid, target=self._target, statsn=self.statsn, expcmdsn=first.cmdsn,
                                  existing_tsih=first.tsih, username=self._username,
                                  keys=dict(self._negotiator.negotiated))
        log.info("login_complete", initiator=self._initiator_name, isid=f"{first.isid:012x}", tsih=tsih,
                 session_type=self._session_type, target=self._target.name if self._target else None,
                 user=self._username, header_digest="CRC32C" if params.header_digest else "None",
                 data_digest="CRC32C" if params.data_digest else "None")
        return resp
