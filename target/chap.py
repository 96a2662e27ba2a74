"""CHAP for iSCSI login (RFC 1994, RFC 7143 §12.1.3), both roles, sans-IO.

The target side is a small state machine fed the security keys of each Login
Request: AuthMethod → CHAP_A → (CHAP_N, CHAP_R[, CHAP_I, CHAP_C]); the keys of
consecutive steps may also arrive together in one request.  Challenges are
random, never reused (a server-wide set), and an initiator that sends back one
of our challenges for mutual authentication is refused: that is the reflection
attack RFC 7143 §12.1.3 warns about.  The same secret may not be used in both
directions (§12.1.3).

Status decisions (the final Login Response carries the ``LoginError`` status):

* Authentication Failure (0x0201) whenever the initiator cannot authenticate as
  this target requires: CHAP required but not in the AuthMethod list, no
  CHAP_A we support, an unknown CHAP_N or a wrong CHAP_R (the same status for
  both, and the digest is computed either way, so names cannot be probed),
  a CHAP_R of the wrong length (it is simply not the right response), and the
  mutual cases: no target secret, reflected challenge, same secret both ways.
  We fail at once rather than answering ``Reject`` and waiting: the login can
  no longer succeed, and the status tells the initiator why.
* No authentication required (``lookup is None``): AuthMethod lists naming
  ``None`` are answered ``None``; a list without ``None`` is also
  Authentication Failure, since we hold no secrets to run CHAP with.
* Initiator Error (0x0200) for protocol violations: keys out of order or
  repeated, a binary value that is neither ``0x`` hex nor ``0b`` base64
  (RFC 7143 §6.1 syntax), CHAP_I outside 0..255, CHAP_I without CHAP_C.
"""
from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Callable

from sanlab.target.errors import LoginError, LoginStatus
from sanlab.target.keys import parse_number

Pairs = list[tuple[str, str]]

ALGORITHMS: dict[str, Callable[[bytes], "hashlib._Hash"]] = {
    "5": hashlib.md5,       # RFC 1994 / RFC 7143 §12.1.3
    "6": hashlib.sha1,      # IANA "PPP Authentication Algorithms" numbers, as open-iscsi and LIO use them
    "7": hashlib.sha256,
    "8": hashlib.sha3_256,
}
"""CHAP_A value → hash.  The initiator's order of preference decides among these."""

MAX_USED_CHALLENGES = 1 << 16
"""Bound on the server-wide challenge set; when reached it is emptied (see ``_algorithm``)."""
MAX_CHALLENGE = 1024
"""Longest CHAP_C we accept from an initiator (RFC 7143 §12.1.3)."""

_HEX_RE = re.compile(r"0[xX][0-9a-fA-F]+")
_B64_RE = re.compile(r"0[bB][A-Za-z0-9+/]+={0,2}")


@dataclass(frozen=True, slots=True)
class ChapCredentials:
    """A CHAP name and secret."""

    username: str
    """CHAP_N."""
    secret: bytes
    """The shared secret."""


def decode_binary(value: str) -> bytes:
    """A binary key value: ``0x`` hex or ``0b`` base64 (RFC 7143 §6.1).

    An odd number of hex digits gets an implied leading zero.  Anything else
    raises ``LoginError(INITIATOR_ERROR)``.
    """
    try:
        if _HEX_RE.fullmatch(value):
            digits = value[2:]
            return bytes.fromhex(digits if len(digits) % 2 == 0 else "0" + digits)
        if _B64_RE.fullmatch(value):
            return base64.b64decode(value[2:], validate=True)
    except (ValueError, binascii.Error):
        pass
    raise LoginError(LoginStatus.INITIATOR_ERROR, f"not a binary value: {value[:40]!r}")


def encode_binary(data: bytes) -> str:
    """Hex encoding with the ``0x`` prefix."""
    return "0x" + data.hex()


def _decode_id(value: str) -> int:
    n = parse_number(value)
    if n is None or not 0 <= n <= 255:
        raise LoginError(LoginStatus.INITIATOR_ERROR, f"CHAP_I={value[:20]!r} is not a number in 0..255")
    return n


def chap_response(algorithm: str, ident: int, secret: bytes, challenge: bytes) -> bytes:
    """H(identifier || secret || challenge), RFC 1994 §4.1."""
    return ALGORITHMS[algorithm](bytes([ident]) + secret + challenge).digest()


class _State(enum.Enum):
    START = "start"
    WAIT_ALGORITHM = "wait-algorithm"
    WAIT_RESPONSE = "wait-response"
    DONE = "done"


_EXPECTS: dict[_State, str] = {
    _State.START: "AuthMethod",
    _State.WAIT_ALGORITHM: "CHAP_A",
    _State.WAIT_RESPONSE: "CHAP_R",
}
"""The key that must come next in each state."""


class TargetChap:
    """The target's side of the security stage."""

    def __init__(self, lookup: Callable[[str], bytes | None] | None, outgoing: ChapCredentials | None, *,
                 used_challenges: set[bytes], rng: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self.lookup = lookup
        """Secret for a CHAP_N; ``None`` means no authentication is required."""
        self.outgoing = outgoing
        """The target's credentials for mutual CHAP."""
        self.used = used_challenges
        """Every challenge issued by this server (shared by all logins)."""
        self.rng = rng
        self.username: str | None = None
        """The CHAP_N accepted, once authentication succeeded."""
        self._state = _State.START
        self._alg = "5"
        self._ident = 0
        self._challenge = b""

    @property
    def done(self) -> bool:
        """Whether the security exchange is complete and successful."""
        return self._state is _State.DONE

    def step(self, keys: Pairs) -> tuple[Pairs, bool]:
        """One round of security keys; returns (answers, authenticated)."""
        got = dict(keys)
        if len(got) != len(keys):
            raise LoginError(LoginStatus.INITIATOR_ERROR, "a security key appears twice")
        answers: Pairs = []
        while got:
            state = self._state
            if state is _State.DONE:
                raise LoginError(LoginStatus.INITIATOR_ERROR, f"security keys after authentication: {sorted(got)}")
            if _EXPECTS[state] not in got:
                raise LoginError(LoginStatus.INITIATOR_ERROR,
                                 f"{sorted(got)} out of order: {_EXPECTS[state]} expected next")
            answers += _HANDLERS[state](self, got)
        return answers, self.done

    def _auth_method(self, got: dict[str, str]) -> Pairs:
        offered = got.pop("AuthMethod")
        methods = offered.split(",")
        if self.lookup is None:
            if "None" in methods:
                self._state = _State.DONE
                return [("AuthMethod", "None")]
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE,
                             f"AuthMethod={offered}: this target has no CHAP secrets and only accepts None")
        if "CHAP" not in methods:
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, f"CHAP required, initiator offered {offered}")
        self._state = _State.WAIT_ALGORITHM
        return [("AuthMethod", "CHAP")]

    def _algorithm(self, got: dict[str, str]) -> Pairs:
        offered = got.pop("CHAP_A")
        alg = next((a for a in offered.split(",") if a in ALGORITHMS), None)
        if alg is None:
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, f"no supported CHAP_A in {offered[:40]!r}")
        self._alg = alg
        size = ALGORITHMS[alg](b"").digest_size  # 16 bytes for MD5, 32 for SHA-256
        for _ in range(64):
            challenge = self.rng(size)
            if challenge not in self.used:
                break
        else:
            raise LoginError(LoginStatus.TARGET_ERROR, "random source keeps repeating CHAP challenges")
        if len(self.used) >= MAX_USED_CHALLENGES:
            # Random challenges of ≥128 bits: forgetting old ones cannot make a repeat likely.
            # Our own challenge is also checked directly, so reflection within a login is always caught.
            self.used.clear()
        self.used.add(challenge)
        self._challenge = challenge
        self._ident = self.rng(1)[0]
        self._state = _State.WAIT_RESPONSE
        return [("CHAP_A", alg), ("CHAP_I", str(self._ident)), ("CHAP_C", encode_binary(challenge))]

    def _response(self, got: dict[str, str]) -> Pairs:
        resp = got.pop("CHAP_R")
        name = got.pop("CHAP_N", None)
        ident_s, challenge_s = got.pop("CHAP_I", None), got.pop("CHAP_C", None)
        if name is None:
            raise LoginError(LoginStatus.INITIATOR_ERROR, "CHAP_R without CHAP_N")
        if (ident_s is None) != (challenge_s is None):
            raise LoginError(LoginStatus.INITIATOR_ERROR, "CHAP_I and CHAP_C go together")
        answer = decode_binary(resp)
        mutual = None if ident_s is None or challenge_s is None else (_decode_id(ident_s), decode_binary(challenge_s))
        assert self.lookup is not None
        secret = self.lookup(name)
        # Compute and compare even for an unknown user, so timing does not reveal which names exist.
        expected = chap_response(self._alg, self._ident, b"" if secret is None else secret, self._challenge)
        ok = hmac.compare_digest(answer, expected)
        if secret is None or not ok:
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE,
                             f"CHAP response for {name[:64]!r} " + ("(unknown user)" if secret is None else "wrong"))
        out: Pairs = []
        if mutual is not None:
            out = self._mutual(secret, *mutual)
        self.username = name
        self._state = _State.DONE
        return out

    def _mutual(self, initiator_secret: bytes, ident: int, challenge: bytes) -> Pairs:
        """Answer the initiator's challenge (mutual CHAP, RFC 7143 §12.1.3)."""
        if self.outgoing is None:
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, "mutual CHAP asked but the target has no secret")
        if not 1 <= len(challenge) <= MAX_CHALLENGE:
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"CHAP_C of {len(challenge)} bytes")
        if challenge == self._challenge or challenge in self.used:
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, "initiator reflected a target challenge")
        if hmac.compare_digest(self.outgoing.secret, initiator_secret):
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE,
                             "the same CHAP secret in both directions (RFC 7143 §12.1.3)")
        return [("CHAP_N", self.outgoing.username),
                ("CHAP_R", encode_binary(chap_response(self._alg, ident, self.outgoing.secret, challenge)))]


_HANDLERS: dict[_State, Callable[[TargetChap, dict[str, str]], Pairs]] = {
    _State.START: TargetChap._auth_method,
    _State.WAIT_ALGORITHM: TargetChap._algorithm,
    _State.WAIT_RESPONSE: TargetChap._response,
}
"""State → handler of the keys it expects (ARCHITECTURE.md convention 2)."""


class InitiatorChap:
    """The initiator's side: answer the target's challenge, optionally challenge it back.

    Use: send :meth:`auth_method`; once the target answered ``AuthMethod=CHAP``
    send :meth:`offer`; send :meth:`answer` of the target's CHAP_A/I/C; finally
    :meth:`verify` the target's reply (mutual CHAP).
    """

    def __init__(self, credentials: ChapCredentials, target_credentials: ChapCredentials | None = None, *,
                 algorithms: str = "7,5", rng: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self.credentials = credentials
        """Our CHAP_N and secret."""
        self.target_credentials = target_credentials
        """The name and secret the target must prove (mutual CHAP), or None."""
        self.algorithms = algorithms
        """CHAP_A list, in our order of preference."""
        self.rng = rng
        self._ident = 0
        self._challenge = b""
        self._alg = ""

    @staticmethod
    def auth_method() -> Pairs:
        """The AuthMethod offer of the first security-stage request."""
        return [("AuthMethod", "CHAP")]

    def offer(self) -> Pairs:
        """Keys of the first security-stage request after AuthMethod=CHAP was agreed."""
        return [("CHAP_A", self.algorithms)]

    def answer(self, keys: dict[str, str]) -> Pairs:
        """Answer CHAP_A/CHAP_I/CHAP_C from the target."""
        alg = keys.get("CHAP_A", "")
        if alg not in self.algorithms.split(",") or alg not in ALGORITHMS:
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, f"target chose CHAP_A={alg[:20]!r}")
        self._alg = alg
        ident = _decode_id(keys.get("CHAP_I", ""))
        challenge = decode_binary(keys.get("CHAP_C", ""))
        out = [("CHAP_N", self.credentials.username),
               ("CHAP_R", encode_binary(chap_response(alg, ident, self.credentials.secret, challenge)))]
        if self.target_credentials is not None:
            if hmac.compare_digest(self.target_credentials.secret, self.credentials.secret):
                raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, "the same CHAP secret in both directions")
            self._ident = self.rng(1)[0]
            self._challenge = self.rng(ALGORITHMS[alg](b"").digest_size)
            if self._challenge == challenge:
                raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, "challenge collision")
            out += [("CHAP_I", str(self._ident)), ("CHAP_C", encode_binary(self._challenge))]
        return out

    def verify(self, keys: dict[str, str]) -> None:
        """Check the target's mutual answer (no-op for one-way CHAP)."""
        tc = self.target_credentials
        if tc is None:
            return
        if not self._alg:
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, "verify() before answer()")
        if keys.get("CHAP_N") != tc.username:
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, f"target answered as {keys.get('CHAP_N')!r}")
        expected = chap_response(self._alg, self._ident, tc.secret, self._challenge)
        if not hmac.compare_digest(decode_binary(keys.get("CHAP_R", "")), expected):
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, "target's CHAP response is wrong")
