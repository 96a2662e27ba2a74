"""Encryption at rest: a Volume wrapper that stores every logical block AES-256-XTS encrypted.

Two keys, as self-encrypting drives and LUKS do it:

- the **data key** (64 bytes: the two AES-256 keys of XTS, IEEE 1619) encrypts the blocks.  It is
  random, made when the volume is first encrypted, and never leaves the array unwrapped;
- the **key-encryption key** (32 bytes, AES-256), from the operator's key file or an environment
  variable (:func:`load_key_file`, :func:`key_from_env`), wraps the data key (AES key wrap,
  RFC 3394) in a small header file beside the volume (:class:`CryptHeader`).

Why two: RFC 3394's unwrap checks an integrity value, so a wrong key-encryption key is *detected*
before a single block is read or written (the array then refuses the volume, :class:`WrongKey`);
and SANITIZE CRYPTOGRAPHIC ERASE (SBC-3 §4.11, scsi/sanitize.py) can destroy the data key —
replace it with a fresh random one, overwriting the header in place — while the operator's key
stays valid for the erased volume.

XTS data unit = one logical block, tweak = its LBA as a 128-bit little-endian number (IEEE 1619
§5.1), so a block always encrypts the same way at the same place: COMPARE AND WRITE compares
ciphertexts, and nothing but the header is stored besides the blocks.  A stored block of all
zero bytes (never written, or deallocated by UNMAP) reads as zeros: a thin volume keeps LBPRZ and
SANITIZE BLOCK ERASE; it shows which blocks hold data, which the sparse file shows anyway.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import stat
import struct
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import structlog
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from sanlab.storage.emulated import WRITE_SAME_CHUNK_BYTES
from sanlab.storage.volume import LbaExtent, NowaitIO, Volume, VolumeError, first_mismatch

log = structlog.get_logger("sanlab.storage")

KEK_BYTES = 32
"""The operator's key: AES-256 for the key wrap (64 hex digits in a key file or variable)."""
DATA_KEY_BYTES = 64
"""AES-256-XTS: two 256-bit AES keys (IEEE 1619)."""
WRAPPED_BYTES = DATA_KEY_BYTES + 8
"""RFC 3394 adds one 64-bit integrity block."""
MAGIC = b"SANLABXT"
VERSION = 1
HEADER = struct.Struct(">8sHHIQ72s32s")
"""The header file: MAGIC, VERSION, reserved, block size, erase generation, wrapped data key,
SHA-256 of everything before it (a damaged header is told apart from a wrong key)."""
HEADER_BYTES = 512
"""The header is written as one 512-byte sector, in place (see :meth:`EncryptedVolume.crypto_erase`)."""


class EncryptionError(VolumeError):
    """An encrypted volume cannot be opened (key file, header, data without a header)."""


class WrongKey(EncryptionError):
    """The key given does not unwrap the volume's data key: the volume is not served."""


@dataclass(frozen=True, slots=True)
class CryptHeader:
    """What is stored beside an encrypted volume (never the data key in clear)."""

    block_size: int
    """The XTS data unit: the volume's logical block (tweaks count these)."""
    generation: int
    """How many CRYPTOGRAPHIC ERASEs the volume has had (0: the data key made first)."""
    wrapped_key: bytes = b""
    """The data key, AES-key-wrapped (RFC 3394) by the operator's key."""

    def encode(self) -> bytes:
        """The header sector."""
        body = HEADER.pack(MAGIC, VERSION, 0, self.block_size, self.generation, self.wrapped_key, b"")[:-32]
        return (body + hashlib.sha256(body).digest()).ljust(HEADER_BYTES, b"\0")

    @classmethod
    def decode(cls, raw: bytes, where: str) -> CryptHeader:
        """Parse a header sector; EncryptionError naming ``where`` when it is not one."""
        if len(raw) < HEADER.size:
            raise EncryptionError(f"{where}: encryption header is truncated ({len(raw)} bytes)")
        magic, version, _, bs, gen, wrapped, digest = HEADER.unpack_from(raw)
        if magic != MAGIC:
            raise EncryptionError(f"{where}: not a sanlab encryption header")
        if version != VERSION:
            raise EncryptionError(f"{where}: encryption header version {version} is not supported")
        if hashlib.sha256(raw[:HEADER.size - 32]).digest() != digest:
            raise EncryptionError(f"{where}: encryption header is damaged (checksum mismatch)")
        return cls(bs, gen, wrapped)


# --- the operator's key ------------------------------------------------------------------------------

def parse_key(text: str, where: str) -> bytes:
    """The 32-byte key written as 64 hex digits; lines starting with ``#`` are comments.  The error
    names ``where`` and what is wrong, never the key's text."""
    digits = "".join(line.strip() for line in text.splitlines() if not line.lstrip().startswith("#"))
    try:
        key = bytes.fromhex(digits)
    except ValueError:
        raise EncryptionError(f"{where}: a key is {2 * KEK_BYTES} hex digits (found other characters)") from None
    if len(key) != KEK_BYTES:
        raise EncryptionError(f"{where}: a key is {2 * KEK_BYTES} hex digits ({KEK_BYTES} bytes, AES-256), "
                              f"not {len(digits)}")
    return key


def load_key_file(path: str) -> bytes:
    """The key in ``path``, which must be a regular file only its owner can read or write (0600 or
    0400): a key others can read protects nothing, so it is refused before it is used."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise EncryptionError(f"key file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise EncryptionError(f"key file {path}: not a regular file")
        if st.st_mode & 0o077:
            raise EncryptionError(f"key file {path}: mode {stat.S_IMODE(st.st_mode):04o} lets group or others "
                                  f"at it; it must be owner-only (chmod 600 {path})")
        text = os.read(fd, 4096).decode("ascii", errors="replace")
    finally:
        os.close(fd)
    return parse_key(text, f"key file {path}")


def key_from_env(name: str, environ: dict[str, str] | None = None) -> bytes:
    """The key in environment variable ``name`` (64 hex digits)."""
    env = os.environ if environ is None else environ
    value = env.get(name)
    if value is None:
        raise EncryptionError(f"environment variable {name} (the volume's key) is not set")
    return parse_key(value, f"environment variable {name}")


# --- the header file ---------------------------------------------------------------------------------

def read_header(path: str) -> CryptHeader | None:
    """The header at ``path``, or None when there is none yet."""
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError:
        return None
    return CryptHeader.decode(raw, path)


def _write_header(path: str, header: CryptHeader, create: bool) -> None:
    """Write the header sector durably.  Created with 0600; an existing header is overwritten *in
    place* (same file, same blocks, fsynced), not replaced by a rename: a rename would leave the
    old wrapped data key in freed file-system blocks, which a crypto erase must not (on a
    copy-on-write file system the old blocks may survive anyway: docs/security.md)."""
    flags = os.O_WRONLY | (os.O_CREAT | os.O_EXCL if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.pwrite(fd, header.encode(), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    if create:
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def holds_data(paths: list[str]) -> bool:
    """Whether any of the files exists with an allocated byte (a new sparse file holds none)."""
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.lseek(fd, 0, os.SEEK_DATA)
            return True
        except OSError:
            continue  # ENXIO: no data anywhere in the file
        finally:
            os.close(fd)
    return False


def open_data_key(header_path: str, kek: bytes, block_size: int, *, may_create: bool,
                  what: str) -> tuple[bytes, CryptHeader]:
    """The volume's data key, unwrapped from its header with the operator's key ``kek``.

    No header yet: one is made with a fresh random data key when ``may_create`` (the volume holds
    no data), else EncryptionError (the data there was not written by this layer: encrypting it
    in place is not offered, and reading it through a new key would serve garbage).  WrongKey when
    ``kek`` does not unwrap the key.  Nothing of the volume is written in any failing case.
    """
    header = read_header(header_path)
    if header is None:
        if not may_create:
            raise EncryptionError(f"{what} holds data but has no encryption header {header_path}: "
                                  "an existing clear volume is not encrypted in place")
        data_key = secrets.token_bytes(DATA_KEY_BYTES)
        header = CryptHeader(block_size, 0, aes_key_wrap(kek, data_key))
        _write_header(header_path, header, create=True)
        log.info("encryption_header_created", volume=what, header=header_path)
        return data_key, header
    if header.block_size != block_size:
        raise EncryptionError(f"{what}: encrypted with {header.block_size}-byte blocks, configured with "
                              f"{block_size}")
    try:
        return aes_key_unwrap(kek, header.wrapped_key), header
    except InvalidUnwrap:
        raise WrongKey(f"{what}: wrong key: it does not unlock the volume's data key ({header_path}); "
                       "the volume is not served and nothing of it was written") from None


# --- the volume --------------------------------------------------------------------------------------

BULK_UNIT = 512
"""Data units of this size go through :meth:`Xts.crypt`'s one pass (32 AES blocks a unit, the
masks of one unit in one broadcast); larger ones cost one library context per unit, which is
cheap per byte there.  GF(2^128) of XTS: x^128 = x^7 + x^2 + x + 1 (IEEE 1619 §5.2)."""
BULK_RUN = 64
"""Units per pass of :meth:`Xts.crypt` (32 KiB: its temporaries stay in the heap)."""


_SHIFTS = np.arange(1, 32, dtype=np.uint64)[None, :]
"""Shifts 1..31 (α^1..α^31), broadcast across data units."""


def _times_alpha_powers(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) · α^j for j = 1..31 (columns), each 128-bit little-endian number of the column
    vectors ``lo``/``hi`` shifted left j bits, the j bits shifted out folded back in times 0x87
    (a carry-less product: XOR of shifts, under 40 bits, so it lands in ``lo`` alone)."""
    lo, hi = lo[:, None], hi[:, None]
    out = hi >> (np.uint64(64) - _SHIFTS)
    fold = out ^ (out << np.uint64(1)) ^ (out << np.uint64(2)) ^ (out << np.uint64(7))
    return (lo << _SHIFTS) ^ fold, (hi << _SHIFTS) | (lo >> (np.uint64(64) - _SHIFTS))


class Xts:
    """AES-256-XTS (IEEE 1619) over runs of data units, one tweak per unit (its number).

    ``cryptography`` takes one tweak per cipher context, and a context costs 4-8 µs: 256 of them
    for a 128 KiB transfer of 512-byte blocks.  Here the mode is composed from the library's AES
    instead, in one pass over the whole transfer: the units' tweaks encrypted with key 2 in one ECB
    call, the masks T·α^j of every 16-byte block j of every unit made at once (numpy, the 31
    powers of α broadcast), then C = E_K1(P ⊕ T) ⊕ T in one ECB call.  tests/storage/test_encrypted.py
    checks it against the library's own XTS, unit by unit."""

    def __init__(self, key: bytes) -> None:
        if len(key) != DATA_KEY_BYTES:
            raise ValueError("an XTS key is two AES-256 keys")
        self._aes_xts = algorithms.AES(key)
        self._data = Cipher(algorithms.AES(key[:32]), modes.ECB())
        self._tweak = Cipher(algorithms.AES(key[32:]), modes.ECB())

    def _masks(self, first: int, units: int) -> np.ndarray:
        """The XTS mask of every 16-byte block of ``units`` 512-byte data units from number
        ``first``, as uint64 pairs (lo, hi) in the order of the data."""
        numbers = np.zeros((units, 2), dtype="<u8")
        numbers[:, 0] = np.arange(first, first + units, dtype=np.uint64)
        enc = self._tweak.encryptor()
        t0 = np.frombuffer(enc.update(numbers.tobytes()) + enc.finalize(), dtype="<u8").reshape(units, 2)
        masks = np.empty((units, BULK_UNIT // 16, 2), dtype="<u8")
        masks[:, 0] = t0
        masks[:, 1:, 0], masks[:, 1:, 1] = _times_alpha_powers(t0[:, 0], t0[:, 1])
        return masks

    def crypt(self, first: int, data: bytes | bytearray | memoryview, unit_bytes: int, encrypt: bool,
              keep_zero_blocks: bool = False) -> bytearray:
        """``data`` (whole units numbered from ``first``) encrypted or decrypted.  With
        ``keep_zero_blocks`` a unit of all zero bytes stays zeros (never-written blocks read as zeros)."""
        units = len(data) // unit_bytes
        data = memoryview(data).cast("B")
        if unit_bytes != BULK_UNIT or units < 2:
            return self._per_unit(first, data, unit_bytes, encrypt, keep_zero_blocks)
        # In runs of BULK_RUN units: a temporary of 128 KiB or more is an mmap of its own, whose
        # page faults cost more than the AES (measured: 128 KiB in one run 350 µs, in four 130 µs).
        ctx = self._data.encryptor() if encrypt else self._data.decryptor()
        out = bytearray(len(data) + 15)  # update_into wants room for a block more than it writes
        run_bytes = BULK_RUN * BULK_UNIT
        for off in range(0, len(data), run_bytes):
            part = data[off:off + run_bytes]
            n = len(part) // BULK_UNIT
            masks = self._masks(first + off // BULK_UNIT, n).reshape(-1)
            words = np.frombuffer(part, dtype="<u8") ^ masks
            ctx.update_into(memoryview(words).cast("B"), memoryview(out)[off:])
            result = np.frombuffer(out, dtype="<u8", count=len(part) // 8, offset=off)
            result ^= masks
            if keep_zero_blocks:
                zero = ~np.frombuffer(part, dtype="<u8").reshape(n, -1).any(axis=1)
                if zero.any():
                    result.reshape(n, -1)[zero] = 0
            del result
        del out[len(data):]
        return out

    def _per_unit(self, first: int, data: memoryview, unit_bytes: int, encrypt: bool,
                  keep_zero_blocks: bool) -> bytearray:
        """The library's XTS, one context per data unit: cheaper than the masks for a single unit
        or units of 4 KiB (one context per 4 KiB)."""
        out = bytearray(len(data))
        zero = bytes(unit_bytes)
        for i, off in enumerate(range(0, len(data), unit_bytes)):
            unit = data[off:off + unit_bytes]
            if keep_zero_blocks and unit == zero:
                continue
            cipher = Cipher(self._aes_xts, modes.XTS((first + i).to_bytes(16, "little")))
            ctx = cipher.encryptor() if encrypt else cipher.decryptor()
            out[off:off + unit_bytes] = ctx.update(unit)
        return out


class EncryptedVolume:
    """``inner`` seen through AES-256-XTS (see the module docstring).

    The page-cache fast path (:class:`~sanlab.storage.volume.NowaitIO`) is kept: the nowait and
    pooled calls encrypt/decrypt around the inner volume's own, and decline (None/False) when it
    has none.  Range locking is the inner volume's: every call here is one inner call, except
    WRITE SAME (chunked writes) and a miscompare's offset (a second read, after the atomic part).
    """

    def __init__(self, inner: Volume, data_key: bytes, header: CryptHeader, header_path: str, kek: bytes) -> None:
        self.inner = inner
        self._bs = inner.block_size
        self._zero = bytes(self._bs)
        self._xts = Xts(data_key)
        self._header = header
        self._header_path = header_path
        self._kek = kek
        self._nowait: NowaitIO | None = inner if isinstance(inner, NowaitIO) else None

    def __repr__(self) -> str:
        # No key material in a repr (a log line, a traceback).
        return f"EncryptedVolume({self.inner!r}, header={self._header_path!r})"

    # --- XTS -----------------------------------------------------------------------------------------

    def _crypt(self, lba: int, data: bytes | bytearray | memoryview, encrypt: bool) -> bytearray:
        """Every block of ``data`` (whole blocks from ``lba``) through XTS with its LBA as tweak."""
        bs = self._bs
        if len(data) % bs:
            raise VolumeError(f"{len(data)} bytes are not whole {bs}-byte blocks")
        n = len(data) // bs
        if lba < 0 or lba + n > self.inner.num_blocks:
            raise VolumeError(f"range {lba}+{n} outside volume of {self.inner.num_blocks} blocks")
        return self._xts.crypt(lba, data, bs, encrypt, keep_zero_blocks=not encrypt)

    def encrypt(self, lba: int, data: bytes | bytearray | memoryview) -> bytearray:
        """The stored form of plaintext ``data`` at ``lba``."""
        return self._crypt(lba, data, True)

    def decrypt(self, lba: int, data: bytes | bytearray | memoryview) -> bytearray:
        """The plaintext of stored ``data`` at ``lba``."""
        return self._crypt(lba, data, False)

    # --- geometry ------------------------------------------------------------------------------------

    @property
    def block_size(self) -> int:
        """The inner volume's (the XTS data unit)."""
        return self._bs

    @property
    def num_blocks(self) -> int:
        """The inner volume's."""
        return self.inner.num_blocks

    @property
    def thin(self) -> bool:
        """The inner volume's: deallocated blocks read as zeros here too."""
        return self.inner.thin

    @property
    def lbprz(self) -> bool:
        """The inner volume's (a stored zero block reads as zeros)."""
        return self.inner.lbprz

    @property
    def generation(self) -> int:
        """CRYPTOGRAPHIC ERASEs so far."""
        return self._header.generation

    # --- the Volume protocol -------------------------------------------------------------------------

    async def read(self, lba: int, nblocks: int) -> bytes:
        """The inner blocks, decrypted."""
        return bytes(self.decrypt(lba, await self.inner.read(lba, nblocks)))

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """``data`` encrypted, then written by the inner volume."""
        await self.inner.write(lba, self.encrypt(lba, data), fua)

    async def unmap(self, lba: int, nblocks: int) -> None:
        """The inner volume's UNMAP: the blocks then read as zeros when it has LBPRZ."""
        await self.inner.unmap(lba, nblocks)

    async def write_same(self, lba: int, nblocks: int, block: bytes | bytearray | memoryview, *,
                         unmap: bool = False, fua: bool = False) -> None:
        """With ``unmap`` on a thin volume, the inner WRITE SAME (deallocation); otherwise the block
        repeated and encrypted, written in chunks (each block's ciphertext differs: its tweak)."""
        if unmap and self.inner.thin:
            await self.inner.write_same(lba, nblocks, self._zero, unmap=True, fua=fua)
            return
        bs = self._bs
        step = max(1, WRITE_SAME_CHUNK_BYTES // bs)
        chunk = bytes(block) * min(step, nblocks)
        for first in range(lba, lba + nblocks, step):
            n = min(step, lba + nblocks - first)
            await self.inner.write(first, self.encrypt(first, memoryview(chunk)[:n * bs]), fua)

    async def get_lba_status(self, lba: int, max_ranges: int) -> list[LbaExtent]:
        """The inner volume's."""
        return await self.inner.get_lba_status(lba, max_ranges)

    async def compare_and_write(self, lba: int, verify: bytes | bytearray | memoryview,
                                data: bytes | bytearray | memoryview, *, fua: bool = False) -> int | None:
        """The inner atomic compare-and-write on ciphertexts (XTS is deterministic per place, so equal
        ciphertexts are equal plaintexts).  On a miscompare the offset is found on the plaintext
        (a ciphertext differs in whole 16-byte units)."""
        off = await self.inner.compare_and_write(lba, self.encrypt(lba, verify), self.encrypt(lba, data), fua=fua)
        if off is None:
            return None
        exact = first_mismatch(await self.read(lba, len(verify) // self._bs), verify)
        return off if exact is None else exact

    async def flush(self) -> None:
        """The inner volume's."""
        await self.inner.flush()

    async def close(self) -> None:
        """The inner volume's."""
        await self.inner.close()

    async def grow(self, num_blocks: int) -> None:
        """The inner volume's (new blocks are stored zeros: they read as zeros)."""
        grow = getattr(self.inner, "grow", None)
        if grow is None:
            raise VolumeError(f"a {type(self.inner).__name__} cannot change its capacity")
        await grow(num_blocks)

    # --- CRYPTOGRAPHIC ERASE -------------------------------------------------------------------------

    async def crypto_erase(self) -> None:
        """Destroy the data key (SANITIZE CRYPTOGRAPHIC ERASE, SBC-3 §4.11): a fresh random one
        replaces it, the header is overwritten in place and fsynced, and from then on every block
        written before reads as noise.  Blocks stored as zeros (never written) still read as zeros.
        The operator's key is unchanged."""
        data_key = secrets.token_bytes(DATA_KEY_BYTES)
        header = CryptHeader(self._bs, self._header.generation + 1, aes_key_wrap(self._kek, data_key))
        await self.inner.flush()  # what hosts wrote before is on disk under the old key, then the key goes
        await asyncio.get_running_loop().run_in_executor(None, _write_header, self._header_path, header, False)
        self._xts = Xts(data_key)
        self._header = header
        log.info("crypto_erase_done", header=self._header_path, generation=header.generation)

    # --- NowaitIO (the device server's fast path, scsi/sbc.py plain_io) ------------------------------

    def read_nowait(self, lba: int, nblocks: int) -> bytearray | None:
        """The inner cached read, decrypted on the loop; None when the inner one would wait."""
        if self._nowait is None:
            return None
        data = self._nowait.read_nowait(lba, nblocks)
        return None if data is None else self.decrypt(lba, data)

    def write_nowait(self, lba: int, data: bytes | bytearray | memoryview) -> bool:
        """Encrypt, then the inner cached write; False when it would wait (the caller then uses
        :meth:`write`, which encrypts again: the same bytes)."""
        if self._nowait is None:
            return False
        return self._nowait.write_nowait(lba, self.encrypt(lba, data))

    def read_pooled(self, lba: int, nblocks: int) -> asyncio.Future[bytes] | None:
        """The inner pooled read, decrypted when it ends."""
        if self._nowait is None:
            return None
        fut = self._nowait.read_pooled(lba, nblocks)
        return None if fut is None else _then(fut, lambda data: bytes(self.decrypt(lba, data)))

    def write_pooled(self, lba: int, data: bytes | bytearray | memoryview) -> asyncio.Future[None] | None:
        """Encrypt, then the inner pooled write."""
        if self._nowait is None:
            return None
        return self._nowait.write_pooled(lba, self.encrypt(lba, data))


def _then(fut: asyncio.Future[Any], fn: Callable[[Any], bytes]) -> asyncio.Future[bytes]:
    """A future for ``fn`` of ``fut``'s result (its exception or cancellation passed on)."""
    out: asyncio.Future[bytes] = fut.get_loop().create_future()

    def done(f: asyncio.Future[Any]) -> None:
        if out.done():
            return
        if f.cancelled():
            out.cancel()
        elif (exc := f.exception()) is not None:
            out.set_exception(exc)
        else:
            try:
                out.set_result(fn(f.result()))
            except Exception as err:  # noqa: BLE001 - handed to whoever awaits the read
                out.set_exception(err)

    fut.add_done_callback(done)
    return out


def open_encrypted(inner: Volume, header_path: str, kek: bytes, *, may_create: bool, what: str) -> EncryptedVolume:
    """``inner`` wrapped by :class:`EncryptedVolume`, its data key unwrapped (or made) with ``kek``
    (:func:`open_data_key`: WrongKey / EncryptionError, nothing written)."""
    data_key, header = open_data_key(header_path, kek, inner.block_size, may_create=may_create, what=what)
    return EncryptedVolume(inner, data_key, header, header_path, kek)
