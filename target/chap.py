"""CHAP for iSCSI login (RFC 1994, RFC 7143 §12.1.3), both roles, sans-IO.

The target side is a small state machine fed the security keys of each Login
Request: AuthMethod → CHAP_A → (CHAP_N, CHAP_R[, CHAP_I, CHAP_C]).  Challenges
are random, never reused (a server-wide set), and an initiator that sends back
one of our own challenges for mutual authentication is refused: that is the
reflection attack RFC 7143 §12.1.3 warns about.  The same secret may not be
used in both directions.
"""
from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Callable

from sanlab.target.errors import LoginError, LoginStatus

ALGORITHMS: dict[str, Callable[[bytes], "hashlib._Hash"]] = {
    "5": hashlib.md5,       # RFC 1994 / RFC 7143 §12.1.3
    "6": hashlib.sha1,      # IANA PPP authentication algorithm numbers, as open-iscsi uses them
    "7": hashlib.sha256,
    "8": hashlib.sha3_256,
}
"""CHAP_A value → hash.  The initiator's order of preference decides among these."""

MAX_USED_CHALLENGES = 1 << 16


@dataclass(frozen=True, slots=True)
class ChapCredentials:
    """A CHAP name and secret."""

    username: str
    secret: bytes


def decode_binary(value: str) -> bytes:
    """A binary key value: ``0x`` hex or ``0b`` base64 (RFC 7143 §6.1)."""
    try:
        if value[:2] in ("0x", "0X"):
            digits = value[2:]
            return bytes.fromhex(digits if len(digits) % 2 == 0 else "0" + digits)
        if value[:2] in ("0b", "0B"):
            return base64.b64decode(value[2:], validate=True)
    except (ValueError, binascii.Error):
        pass
    raise LoginError(LoginStatus.INITIATOR_ERROR, f"not a binary value: {value[:40]!r}")


def encode_binary(data: bytes) -> str:
    """Hex encoding with the ``0x`` prefix."""
    return "0x" + data.hex()


def _decode_id(value: str) -> int:
    try:
        n = int(value, 0)
    except ValueError:
        raise LoginError(LoginStatus.INITIATOR_ERROR, f"CHAP_I={value!r} is not a number") from None
    if not 0 <= n <= 255:
        raise LoginError(LoginStatus.INITIATOR_ERROR, f"CHAP_I={n} outside 0..255")
    return n


def chap_response(algorithm: str, ident: int, secret: bytes, challenge: bytes) -> bytes:
    """H(identifier || secret || challenge), RFC 1994 §4.1."""
    return ALGORITHMS[algorithm](bytes([ident]) + secret + challenge).digest()


class _State(enum.Enum):
    START = "start"
    WAIT_ALGORITHM = "wait-algorithm"
    WAIT_RESPONSE = "wait-response"
    DONE = "done"


class TargetChap:
    """The target's side of the security stage."""

    def __init__(self, lookup: Callable[[str], bytes | None] | None, outgoing: ChapCredentials | None, *,
                 used_challenges: set[bytes], rng: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self.lookup = lookup
        """Secret for a CHAP_N; ``None`` means no authentication is required."""
        self.outgoing = outgoing
        self.used = used_challenges
        self.rng = rng
        self.username: str | None = None
        self._state = _State.START
        self._alg = "5"
        self._ident = 0
        self._challenge = b""

    def step(self, keys: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], bool]:
        """One round of security keys; returns (answers, authenticated)."""
        got = dict(keys)
        if len(got) != len(keys):
            raise LoginError(LoginStatus.INITIATOR_ERROR, "a security key appears twice")
        answers: list[tuple[str, str]] = []
        if self._state is _State.DONE:
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"security keys after authentication: {sorted(got)}")
        if self._state is _State.START:
            if "AuthMethod" not in got:
                raise LoginError(LoginStatus.INITIATOR_ERROR, f"{sorted(got)} before AuthMethod")
            answers += self._auth_method(got.pop("AuthMethod"))
            if self._state is _State.DONE:
                if got:
                    raise LoginError(LoginStatus.INITIATOR_ERROR, f"CHAP keys with AuthMethod=None: {sorted(got)}")
                return answers, True
        if self._state is _State.WAIT_ALGORITHM and "CHAP_A" in got:
            answers += self._algorithm(got.pop("CHAP_A"))
        if self._state is _State.WAIT_RESPONSE and ("CHAP_N" in got or "CHAP_R" in got):
            answers += self._response(got)
            got.clear()
        if got:
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"unexpected security keys {sorted(got)} "
                                                          f"in CHAP state {self._state.value}")
        return answers, self._state is _State.DONE

    def _auth_method(self, offered: str) -> list[tuple[str, str]]:
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

    def _algorithm(self, offered: str) -> list[tuple[str, str]]:
        for alg in offered.split(","):
            if alg in ALGORITHMS:
                break
        else:
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, f"no supported CHAP_A in {offered}")
        self._alg = alg
        size = ALGORITHMS[alg](b"").digest_size
        while True:
            challenge = self.rng(size)
            if challenge not in self.used:
                break
        if len(self.used) >= MAX_USED_CHALLENGES:
            self.used.clear()  # 128-bit random challenges: forgetting old ones cannot make a repeat likely
        self.used.add(challenge)
        self._challenge = challenge
        self._ident = self.rng(1)[0]
        self._state = _State.WAIT_RESPONSE
        return [("CHAP_A", alg), ("CHAP_I", str(self._ident)), ("CHAP_C", encode_binary(challenge))]

    def _response(self, got: dict[str, str]) -> list[tuple[str, str]]:
        name, resp = got.get("CHAP_N"), got.get("CHAP_R")
        if name is None or resp is None:
            raise LoginError(LoginStatus.INITIATOR_ERROR, "CHAP_N and CHAP_R go together")
        unknown = set(got) - {"CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C"}
        if unknown:
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"unexpected keys {sorted(unknown)} with CHAP_R")
        assert self.lookup is not None
        secret = self.lookup(name)
        expected = chap_response(self._alg, self._ident, secret or b"", self._challenge)
        answer = decode_binary(resp)
        # Compare even for an unknown user, so timing does not reveal which names exist.
        ok = hmac.compare_digest(answer, expected)
        if secret is None or not ok:
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE,
                             f"CHAP response for {name!r} " + ("(unknown user)" if secret is None else "wrong"))
        self.username = name
        self._state = _State.DONE
        if "CHAP_I" not in got and "CHAP_C" not in got:
            return []
        # Mutual CHAP: the initiator challenges us.
        if "CHAP_I" not in got or "CHAP_C" not in got:
            raise LoginError(LoginStatus.INITIATOR_ERROR, "CHAP_I and CHAP_C go together")
        if self.outgoing is None:
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, "mutual CHAP asked but the target has no secret")
        ident = _decode_id(got["CHAP_I"])
        challenge = decode_binary(got["CHAP_C"])
        if not challenge or len(challenge) > 1024:
            raise LoginError(LoginStatus.INITIATOR_ERROR, "CHAP_C length")
        if challenge in self.used:
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, "initiator reflected a target challenge")
        if hmac.compare_digest(self.outgoing.secret, secret):
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE,
                             "the same CHAP secret in both directions (RFC 7143 §12.1.3)")
        return [("CHAP_N", self.outgoing.username),
                ("CHAP_R", encode_binary(chap_response(self._alg, ident, self.outgoing.secret, challenge)))]


class InitiatorChap:
    """The initiator's side: answer the target's challenge, optionally challenge it back."""

    def __init__(self, credentials: ChapCredentials, target_credentials: ChapCredentials | None = None, *,
                 algorithms: str = "7,5", rng: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self.credentials = credentials
        self.target_credentials = target_credentials
        self.algorithms = algorithms
        self.rng = rng
        self._ident = 0
        self._challenge = b""
        self._alg = "5"

    def offer(self) -> list[tuple[str, str]]:
        """Keys of the first security-stage request after AuthMethod=CHAP was agreed."""
        return [("CHAP_A", self.algorithms)]

    def answer(self, keys: dict[str, str]) -> list[tuple[str, str]]:
        """Answer CHAP_A/CHAP_I/CHAP_C from the target."""
        alg = keys.get("CHAP_A", "")
        if alg not in self.algorithms.split(",") or alg not in ALGORITHMS:
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, f"target chose CHAP_A={alg!r}")
        self._alg = alg
        ident = _decode_id(keys.get("CHAP_I", ""))
        challenge = decode_binary(keys.get("CHAP_C", ""))
        out = [("CHAP_N", self.credentials.username),
               ("CHAP_R", encode_binary(chap_response(alg, ident, self.credentials.secret, challenge)))]
        if self.target_credentials is not None:
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
        if keys.get("CHAP_N") != tc.username:
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, f"target answered as {keys.get('CHAP_N')!r}")
        expected = chap_response(self._alg, self._ident, tc.secret, self._challenge)
        if not hmac.compare_digest(decode_binary(keys.get("CHAP_R", "")), expected):
            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, "target's CHAP response is wrong")
