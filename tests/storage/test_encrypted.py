"""Encryption at rest (storage/encrypted.py): the stored bytes are AES-256-XTS of the blocks with the
LBA as tweak, a wrong key is refused with nothing written, keys come from owner-only files or the
environment, and a cryptographic erase destroys the data key.  The generic Volume checks run on
encrypted volumes in tests/storage/test_volume.py."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from sanlab.storage.encrypted import (BULK_RUN, EncryptedVolume, Xts, EncryptionError, WrongKey, key_from_env, load_key_file,
                                      open_encrypted, read_header)
from sanlab.storage.file_volume import FileVolume

KEK = bytes.fromhex("11" * 32)
OTHER = bytes.fromhex("22" * 32)


def _open(d: Path, kek: bytes = KEK, bs: int = 512, may_create: bool = True) -> EncryptedVolume:
    return open_encrypted(FileVolume(str(d / "v.img"), 1 << 20, bs), str(d / "v.img.crypt"), kek,
                          may_create=may_create, what="LUN file v.img")


def _digest(*paths: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def _data_key(d: Path, kek: bytes = KEK) -> bytes:
    header = read_header(str(d / "v.img.crypt"))
    assert header is not None
    return aes_key_unwrap(kek, header.wrapped_key)


@pytest.mark.parametrize("bs", [512, 4096])
async def test_stored_bytes_are_xts_with_the_lba_as_tweak(tmp_path: Path, bs: int) -> None:
    vol = _open(tmp_path, bs=bs)
    data = os.urandom(3 * bs)
    await vol.write(5, data)
    await vol.close()
    raw = (tmp_path / "v.img").read_bytes()[5 * bs:8 * bs]
    key = _data_key(tmp_path)
    assert len(key) == 64  # AES-256-XTS: two 256-bit keys
    for i in range(3):
        # Decrypted here independently of the module, straight from the file and the header.
        dec = Cipher(algorithms.AES(key), modes.XTS((5 + i).to_bytes(16, "little"))).decryptor()
        assert dec.update(raw[i * bs:(i + 1) * bs]) == data[i * bs:(i + 1) * bs]
    assert data[:bs] not in (tmp_path / "v.img").read_bytes()
    # The same plaintext at another LBA is stored differently (the tweak).
    vol = _open(tmp_path, bs=bs)
    await vol.write(9, data[:bs])
    await vol.write(10, data[:bs])
    await vol.close()
    disk = (tmp_path / "v.img").read_bytes()
    assert disk[9 * bs:10 * bs] != disk[10 * bs:11 * bs]


@pytest.mark.parametrize("bs,units,first", [(512, 1, 0), (512, 8, 3), (512, BULK_RUN, 7), (512, BULK_RUN + 1, 0),
                                             (512, 3 * BULK_RUN + 5, (1 << 64) - 3 * BULK_RUN - 6),
                                             (512, 256, 1 << 40), (4096, 32, 11), (1024, 5, 2)])
def test_one_pass_xts_equals_the_librarys_xts_unit_by_unit(bs: int, units: int, first: int) -> None:
    """Xts composes the mode from AES-ECB in one pass (storage/encrypted.py); every unit of a run,
    across the pass's runs, must equal the library's XTS with that unit's number as tweak, and a
    unit of zeros must stay zeros when decrypting with keep_zero_blocks."""
    key = os.urandom(64)
    data = bytearray(os.urandom(units * bs))
    if units > 2:
        data[bs:2 * bs] = bytes(bs)  # a never-written block
    xts = Xts(key)
    enc, dec = xts.crypt(first, data, bs, True), xts.crypt(first, data, bs, False, keep_zero_blocks=True)
    for i in range(units):
        tweak = modes.XTS((first + i).to_bytes(16, "little"))
        unit = bytes(data[i * bs:(i + 1) * bs])
        assert enc[i * bs:(i + 1) * bs] == Cipher(algorithms.AES(key), tweak).encryptor().update(unit), i
        want = unit if unit == bytes(bs) else Cipher(algorithms.AES(key), tweak).decryptor().update(unit)
        assert dec[i * bs:(i + 1) * bs] == want, i
    assert xts.crypt(first, enc, bs, False) == data


async def test_reopened_with_the_key_reads_back(tmp_path: Path) -> None:
    vol = _open(tmp_path)
    data = os.urandom(8192)
    await vol.write(100, data)
    await vol.close()
    vol = _open(tmp_path, may_create=False)
    assert await vol.read(100, 16) == data
    assert await vol.read(0, 4) == bytes(2048), "never-written blocks read as zeros"
    await vol.unmap(100, 8)
    assert await vol.read(100, 8) == bytes(4096), "unmapped blocks read as zeros (LBPRZ)"
    await vol.close()


async def test_wrong_key_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    vol = _open(tmp_path)
    await vol.write(0, os.urandom(65536))
    await vol.close()
    files = [tmp_path / "v.img", tmp_path / "v.img.crypt"]
    before = _digest(*files)
    with pytest.raises(WrongKey, match="wrong key.*not served and nothing of it was written"):
        _open(tmp_path, kek=OTHER, may_create=False)
    assert _digest(*files) == before


async def test_damaged_header_and_data_without_header_are_refused(tmp_path: Path) -> None:
    vol = _open(tmp_path)
    await vol.close()
    header = tmp_path / "v.img.crypt"
    raw = bytearray(header.read_bytes())
    raw[30] ^= 1
    header.write_bytes(raw)
    with pytest.raises(EncryptionError, match="damaged"):
        _open(tmp_path, may_create=False)
    header.unlink()
    with pytest.raises(EncryptionError, match="holds data but has no encryption header"):
        _open(tmp_path, may_create=False)
    with pytest.raises(EncryptionError, match="encrypted with 512-byte blocks, configured with 4096"):
        vol = _open(tmp_path)
        await vol.close()
        _open(tmp_path, bs=4096, may_create=False)


async def test_crypto_erase_destroys_the_data_key(tmp_path: Path) -> None:
    vol = _open(tmp_path)
    data = b"a" * 4096
    await vol.write(0, data)
    old_header = (tmp_path / "v.img.crypt").read_bytes()
    old_key = _data_key(tmp_path)
    await vol.crypto_erase()
    assert vol.generation == 1
    after = await vol.read(0, 8)
    assert after != data and after != bytes(4096)
    new_header = (tmp_path / "v.img.crypt").read_bytes()
    assert _data_key(tmp_path) != old_key
    assert old_header[24:96] not in new_header, "the old wrapped key is overwritten in place"
    # Written after the erase: readable, also after a restart with the same operator key.
    await vol.write(8, data)
    await vol.close()
    vol = _open(tmp_path, may_create=False)
    assert await vol.read(8, 8) == data
    assert await vol.read(0, 8) == after
    await vol.close()


async def test_compare_and_write_reports_the_plaintext_offset(tmp_path: Path) -> None:
    vol = _open(tmp_path)
    await vol.write(0, b"x" * 512)
    verify = bytearray(b"x" * 512)
    verify[37] = ord("y")
    assert await vol.compare_and_write(0, verify, b"z" * 512) == 37
    assert await vol.compare_and_write(0, b"x" * 512, b"z" * 512) is None
    assert await vol.read(0, 1) == b"z" * 512
    await vol.close()


async def test_fast_path_calls_encrypt_and_decrypt(tmp_path: Path) -> None:
    vol = _open(tmp_path)
    data = os.urandom(4096)
    if not vol.write_nowait(3, data):
        fut = vol.write_pooled(3, data)
        assert fut is not None
        await fut
    got = vol.read_nowait(3, 8)
    if got is None:
        fut2 = vol.read_pooled(3, 8)
        assert fut2 is not None
        got = bytearray(await fut2)
    assert bytes(got) == data
    assert data not in (tmp_path / "v.img").read_bytes()
    await vol.close()


def test_key_file_must_be_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_text("# a comment\n" + "ab" * 32 + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(EncryptionError, match=r"mode 0644 lets group or others at it.*chmod 600"):
        load_key_file(str(path))
    os.chmod(path, 0o640)
    with pytest.raises(EncryptionError, match="mode 0640"):
        load_key_file(str(path))
    os.chmod(path, 0o600)
    assert load_key_file(str(path)) == bytes.fromhex("ab" * 32)
    path.write_text("ab" * 31)
    with pytest.raises(EncryptionError, match="64 hex digits") as exc:
        load_key_file(str(path))
    assert "ab" * 31 not in str(exc.value), "the error names the file, never the key"
    with pytest.raises(EncryptionError, match="No such file"):
        load_key_file(str(tmp_path / "missing.key"))


def test_key_from_the_environment() -> None:
    assert key_from_env("K", {"K": "cd" * 32}) == bytes.fromhex("cd" * 32)
    with pytest.raises(EncryptionError, match="environment variable K .* is not set"):
        key_from_env("K", {})
    with pytest.raises(EncryptionError, match="other characters"):
        key_from_env("K", {"K": "zz" * 32})


async def test_repr_carries_no_key(tmp_path: Path) -> None:
    vol = _open(tmp_path)
    key = _data_key(tmp_path)
    text = repr(vol)
    assert "v.img.crypt" in text
    assert key.hex() not in text and KEK.hex() not in text and repr(key) not in text and repr(KEK) not in text
    await vol.close()
