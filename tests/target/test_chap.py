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


# --- encodings, algorithms, ordering and error statuses ----------------------------------------------

from sanlab.target.chap import ALGORITHMS, encode_binary  # noqa: E402

_HASHES = {"5": hashlib.md5, "6": hashlib.sha1, "7": hashlib.sha256, "8": hashlib.sha3_256}


@pytest.mark.parametrize("alg,size", [("5", 16), ("6", 20), ("7", 32), ("8", 32)])
def test_every_algorithm_one_way_and_mutual(alg: str, size: int) -> None:
    t = target(ChapCredentials("array0", TSECRET))
    _, ident, chal = start(t, alg)
    assert len(chal) == size
    h = _HASHES[alg]
    out, done = t.step([("CHAP_N", "alice"), ("CHAP_R", "0x" + h(bytes([ident]) + SECRET + chal).hexdigest()),
                        ("CHAP_I", "200"), ("CHAP_C", "0x" + "5a" * 24)])
    assert done and dict(out) == {"CHAP_N": "array0",
                                  "CHAP_R": "0x" + h(bytes([200]) + TSECRET + bytes([0x5A] * 24)).hexdigest()}


@pytest.mark.parametrize("alg", sorted(ALGORITHMS))
@pytest.mark.parametrize("mutual", [False, True])
def test_initiator_class_against_target_class(alg: str, mutual: bool) -> None:
    t = target(ChapCredentials("array0", TSECRET))
    ini = InitiatorChap(ChapCredentials("alice", SECRET), ChapCredentials("array0", TSECRET) if mutual else None,
                        algorithms=alg)
    out, done = t.step(ini.auth_method())
    assert out == [("AuthMethod", "CHAP")] and not done
    out, _ = t.step(ini.offer())
    out, done = t.step(ini.answer(dict(out)))
    assert done and t.username == "alice" and bool(out) == mutual
    ini.verify(dict(out))


def test_uppercase_and_odd_length_hex() -> None:
    assert decode_binary("0XABcd") == b"\xab\xcd" and decode_binary("0xabc") == b"\x0a\xbc"
    assert decode_binary("0B" + base64.b64encode(b"\x00\xff").decode()) == b"\x00\xff"
    assert encode_binary(b"\x01\xab") == "0x01ab"
    t = target()
    _, ident, chal = start(t)
    _, done = t.step([("CHAP_N", "alice"),
                      ("CHAP_R", "0X" + hashlib.md5(bytes([ident]) + SECRET + chal).hexdigest().upper())])
    assert done


@pytest.mark.parametrize("value", ["abc", "0x", "0b", "0xzz", "0b!!!", "0x12 34", "0bAAA", "x12", ""])
def test_undecodable_binary_is_initiator_error(value: str) -> None:
    with pytest.raises(LoginError) as exc:
        decode_binary(value)
    assert exc.value.status == LoginStatus.INITIATOR_ERROR
    t = target()
    start(t)
    with pytest.raises(LoginError) as exc:
        t.step([("CHAP_N", "alice"), ("CHAP_R", value)])
    assert exc.value.status == LoginStatus.INITIATOR_ERROR


def test_wrong_length_response_is_authentication_failure() -> None:
    t = target()
    _, ident, chal = start(t, "7")
    md5 = hashlib.md5(bytes([ident]) + SECRET + chal).hexdigest()  # right secret, wrong (shorter) algorithm
    with pytest.raises(LoginError) as exc:
        t.step([("CHAP_N", "alice"), ("CHAP_R", "0x" + md5)])
    assert exc.value.status == LoginStatus.AUTHENTICATION_FAILURE and t.username is None


def test_no_supported_algorithm_is_authentication_failure() -> None:
    t = target()
    t.step([("AuthMethod", "CHAP")])
    with pytest.raises(LoginError) as exc:
        t.step([("CHAP_A", "128,129")])  # MS-CHAP only
    assert exc.value.status == LoginStatus.AUTHENTICATION_FAILURE


def test_auth_method_and_algorithm_in_one_request() -> None:
    t = target()
    out, done = t.step([("AuthMethod", "CHAP"), ("CHAP_A", "7")])
    assert not done and [k for k, _ in out] == ["AuthMethod", "CHAP_A", "CHAP_I", "CHAP_C"]


@pytest.mark.parametrize("keys", [
    [("CHAP_A", "5")],                                              # before AuthMethod
    [("CHAP_N", "alice")],
    [("AuthMethod", "CHAP"), ("AuthMethod", "CHAP")],               # repeated in one request
    [("AuthMethod", "CHAP"), ("CHAP_R", "0x00")],                   # skips CHAP_A and the challenge
])
def test_out_of_order_or_repeated_keys_are_initiator_errors(keys: list[tuple[str, str]]) -> None:
    with pytest.raises(LoginError) as exc:
        target().step(keys)
    assert exc.value.status == LoginStatus.INITIATOR_ERROR


def test_keys_after_completion_are_initiator_errors() -> None:
    t = TargetChap(None, None, used_challenges=set())
    with pytest.raises(LoginError) as exc:
        t.step([("AuthMethod", "None"), ("CHAP_A", "5")])
    assert exc.value.status == LoginStatus.INITIATOR_ERROR
    t = target()
    _, ident, chal = start(t)
    t.step([("CHAP_N", "alice"), ("CHAP_R", "0x" + hashlib.md5(bytes([ident]) + SECRET + chal).hexdigest())])
    with pytest.raises(LoginError) as exc:
        t.step([("CHAP_A", "5")])
    assert exc.value.status == LoginStatus.INITIATOR_ERROR
    with pytest.raises(LoginError):
        t.step([("AuthMethod", "CHAP")])


@pytest.mark.parametrize("extra", [
    [("CHAP_I", "9")],                                               # CHAP_I without CHAP_C
    [("CHAP_C", "0x" + "11" * 16)],
    [("CHAP_I", "256"), ("CHAP_C", "0x" + "11" * 16)],               # identifier is one byte
    [("CHAP_I", "nine"), ("CHAP_C", "0x" + "11" * 16)],
    [("CHAP_I", "9"), ("CHAP_C", "0x" + "11" * 1025)],               # longer than 1024 bytes
])
def test_malformed_mutual_request_is_initiator_error(extra: list[tuple[str, str]]) -> None:
    t = target(ChapCredentials("array0", TSECRET))
    _, ident, chal = start(t)
    with pytest.raises(LoginError) as exc:
        t.step([("CHAP_N", "alice"), ("CHAP_R", "0x" + hashlib.md5(bytes([ident]) + SECRET + chal).hexdigest())]
               + extra)
    assert exc.value.status == LoginStatus.INITIATOR_ERROR


def test_chap_r_without_chap_n() -> None:
    t = target()
    start(t)
    with pytest.raises(LoginError) as exc:
        t.step([("CHAP_R", "0x" + "00" * 16)])
    assert exc.value.status == LoginStatus.INITIATOR_ERROR


def test_challenge_reflected_from_another_login_is_refused() -> None:
    # The attacker gets a challenge on one connection and asks the target to answer it on another.
    used: set[bytes] = set()
    _, _, other_chal = start(target(used=used))
    t = target(ChapCredentials("array0", TSECRET), used)
    with pytest.raises(LoginError) as exc:
        _mutual_attempt(t, other_chal)
    assert exc.value.status == LoginStatus.AUTHENTICATION_FAILURE and t.username is None


def test_mutual_sha256_fixture_with_base64_challenge() -> None:
    t = target(ChapCredentials("array0", TSECRET))
    _, ident, chal = start(t, "7")
    mine = bytes(range(32))
    out, done = t.step([("CHAP_N", "alice"),
                        ("CHAP_R", "0b" + base64.b64encode(hashlib.sha256(bytes([ident]) + SECRET + chal).digest())
                         .decode()),
                        ("CHAP_I", "0x10"), ("CHAP_C", "0b" + base64.b64encode(mine).decode())])
    assert done and dict(out)["CHAP_R"] == "0x" + hashlib.sha256(bytes([16]) + TSECRET + mine).hexdigest()


def test_unknown_user_still_computes_and_gets_same_status() -> None:
    asked: list[str] = []

    def lookup(user: str) -> bytes | None:
        asked.append(user)
        return None

    t = TargetChap(lookup, None, used_challenges=set())
    t.step([("AuthMethod", "CHAP")])
    t.step([("CHAP_A", "5")])
    with pytest.raises(LoginError) as exc:
        t.step([("CHAP_N", "nobody"), ("CHAP_R", "0x" + "00" * 16)])
    assert exc.value.status == LoginStatus.AUTHENTICATION_FAILURE and asked == ["nobody"]


def test_rng_that_only_repeats_is_a_target_error() -> None:
    used = {b"\x01" * 16}
    t = TargetChap(lambda u: SECRET, None, used_challenges=used, rng=lambda n: b"\x01" * n)
    t.step([("AuthMethod", "CHAP")])
    with pytest.raises(LoginError) as exc:
        t.step([("CHAP_A", "5")])
    assert exc.value.status == LoginStatus.TARGET_ERROR


def test_initiator_refuses_bad_target_answers() -> None:
    ini = InitiatorChap(ChapCredentials("alice", SECRET), ChapCredentials("array0", TSECRET), algorithms="7")
    with pytest.raises(LoginError) as exc:
        ini.answer({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": "0x" + "00" * 16})  # an algorithm we did not offer
    assert exc.value.status == LoginStatus.AUTHENTICATION_FAILURE
    ini.answer({"CHAP_A": "7", "CHAP_I": "1", "CHAP_C": "0x" + "00" * 32})
    with pytest.raises(LoginError):
        ini.verify({"CHAP_N": "impostor", "CHAP_R": "0x" + "00" * 32})
    same = InitiatorChap(ChapCredentials("alice", SECRET), ChapCredentials("array0", SECRET))
    with pytest.raises(LoginError):
        same.answer({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": "0x" + "00" * 16})
