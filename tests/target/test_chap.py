"""CHAP (RFC 1994, RFC 7143 §12.1.3): one-way and mutual, MD5 and SHA-256, replay safety."""
from __future__ import annotations

import base64
import hashlib

import pytest

from sanlab.target.chap import ChapCredentials, InitiatorChap, TargetChap, decode_binary
from sanlab.target.errors import LoginError, LoginStatus

SECRET = b"initiator-secret"
TSECRET = b"target-secret-xy"


def target(outgoing: ChapCredentials | None = None, used: set[bytes] | None = None) -> TargetChap:
    return TargetChap(lambda user: SECRET if user == "alice" else None, outgoing,
                      used_challenges=set() if used is None else used)


def start(t: TargetChap, alg: str = "5") -> tuple[str, int, bytes]:
    out, done = t.step([("AuthMethod", "CHAP,None")])
    assert out == [("AuthMethod", "CHAP")] and not done
    out, done = t.step([("CHAP_A", alg)])
    a = dict(out)
    assert not done and a["CHAP_A"] == alg.split(",")[0] if alg != "99,7" else True
    return a["CHAP_A"], int(a["CHAP_I"]), decode_binary(a["CHAP_C"])


@pytest.mark.parametrize("alg,h,size", [("5", hashlib.md5, 16), ("7", hashlib.sha256, 32)])
def test_one_way(alg: str, h: object, size: int) -> None:
    t = target()
    chosen, ident, chal = start(t, alg)
    assert len(chal) == size
    resp = h(bytes([ident]) + SECRET + chal).hexdigest()  # type: ignore[operator]
    out, done = t.step([("CHAP_N", "alice"), ("CHAP_R", "0x" + resp)])
    assert done and out == [] and t.username == "alice"


def test_first_supported_algorithm_in_initiator_order() -> None:
    t = target()
    out, _ = t.step([("AuthMethod", "CHAP")])
    out, _ = t.step([("CHAP_A", "99,7,5")])
    assert dict(out)["CHAP_A"] == "7"


def test_base64_response_accepted() -> None:
    t = target()
    _, ident, chal = start(t)
    resp = base64.b64encode(hashlib.md5(bytes([ident]) + SECRET + chal).digest()).decode()
    _, done = t.step([("CHAP_N", "alice"), ("CHAP_R", "0b" + resp)])
    assert done


@pytest.mark.parametrize("user,secret", [("alice", b"wrong-secret!!"), ("mallory", SECRET)])
def test_failures_are_authentication_failure(user: str, secret: bytes) -> None:
    t = target()
    _, ident, chal = start(t)
    with pytest.raises(LoginError) as exc:
        t.step([("CHAP_N", user), ("CHAP_R", "0x" + hashlib.md5(bytes([ident]) + secret + chal).hexdigest())])
    assert exc.value.status == LoginStatus.AUTHENTICATION_FAILURE == 0x0201


def test_mutual() -> None:
    t = target(ChapCredentials("array0", TSECRET))
    _, ident, chal = start(t)
    out, done = t.step([("CHAP_N", "alice"), ("CHAP_R", "0x" + hashlib.md5(bytes([ident]) + SECRET + chal).hexdigest()),
                        ("CHAP_I", "9"), ("CHAP_C", "0x" + "11" * 16)])
    assert done
    assert dict(out) == {"CHAP_N": "array0",
                         "CHAP_R": "0x" + hashlib.md5(bytes([9]) + TSECRET + bytes([0x11] * 16)).hexdigest()}


def _mutual_attempt(t: TargetChap, challenge: bytes) -> None:
    _, ident, chal = start(t)
    t.step([("CHAP_N", "alice"), ("CHAP_R", "0x" + hashlib.md5(bytes([ident]) + SECRET + chal).hexdigest()),
            ("CHAP_I", "9"), ("CHAP_C", "0x" + (challenge or chal).hex())])


def test_reflected_challenge_refused() -> None:
    t = target(ChapCredentials("array0", TSECRET))
    with pytest.raises(LoginError) as exc:
        _mutual_attempt(t, b"")  # sends our own challenge back
    assert exc.value.status == LoginStatus.AUTHENTICATION_FAILURE


def test_same_secret_both_ways_refused() -> None:
    t = target(ChapCredentials("array0", SECRET))
    with pytest.raises(LoginError) as exc:
        _mutual_attempt(t, b"\x22" * 16)
    assert exc.value.status == LoginStatus.AUTHENTICATION_FAILURE


def test_mutual_without_target_secret() -> None:
    with pytest.raises(LoginError) as exc:
        _mutual_attempt(target(), b"\x22" * 16)
    assert exc.value.status == LoginStatus.AUTHENTICATION_FAILURE


def test_no_auth_required() -> None:
    t = TargetChap(None, None, used_challenges=set())
    assert t.step([("AuthMethod", "CHAP,None")]) == ([("AuthMethod", "None")], True)
    with pytest.raises(LoginError) as exc:
        TargetChap(None, None, used_challenges=set()).step([("AuthMethod", "CHAP")])
    assert exc.value.status == LoginStatus.AUTHENTICATION_FAILURE


def test_chap_required_but_not_offered() -> None:
    with pytest.raises(LoginError) as exc:
        target().step([("AuthMethod", "None")])
    assert exc.value.status == LoginStatus.AUTHENTICATION_FAILURE


def test_out_of_order_steps() -> None:
    with pytest.raises(LoginError) as exc:
        target().step([("CHAP_R", "0x00")])
    assert exc.value.status == LoginStatus.INITIATOR_ERROR
    t = target()
    t.step([("AuthMethod", "CHAP")])
    with pytest.raises(LoginError):
        t.step([("CHAP_N", "alice"), ("CHAP_R", "0x00")])


def test_challenges_unique_across_logins() -> None:
    used: set[bytes] = set()
    seen = {start(target(used=used))[2] for _ in range(200)}
    assert len(seen) == 200 and seen <= used


def test_rng_repeat_is_skipped() -> None:
    used = {b"\x01" * 16}
    vals = iter([b"\x01" * 16, b"\x02" * 16, b"\x07"])
    t = TargetChap(lambda u: SECRET, None, used_challenges=used, rng=lambda n: next(vals))
    t.step([("AuthMethod", "CHAP")])
    a = dict(t.step([("CHAP_A", "5")])[0])
    assert a["CHAP_C"] == "0x" + "02" * 16 and a["CHAP_I"] == "7"


def test_initiator_side_against_target_side() -> None:
    t = target(ChapCredentials("array0", TSECRET))
    ini = InitiatorChap(ChapCredentials("alice", SECRET), ChapCredentials("array0", TSECRET))
    t.step([("AuthMethod", "CHAP")])
    out, _ = t.step(ini.offer())
    reply = ini.answer(dict(out))
    out, done = t.step(reply)
    assert done
    ini.verify(dict(out))
    bad = InitiatorChap(ChapCredentials("alice", SECRET), ChapCredentials("array0", b"other-secret-zz"))
    t2 = target(ChapCredentials("array0", TSECRET))
    t2.step([("AuthMethod", "CHAP")])
    out, _ = t2.step(bad.offer())
    out, _ = t2.step(bad.answer(dict(out)))
    with pytest.raises(LoginError):
        bad.verify(dict(out))
