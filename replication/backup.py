"""Backup images of a divided copy (seed 004, 11th embodiment; docs/backup.md).

The seed's backup host reads the copy volume — whole, or the partial area an extent update
refreshed — while the original keeps serving, and writes it to tape.  Here the array reads the
copy's point-in-time image itself (the same reads a host would get, :class:`CopyVolume.read`) and
writes a tar stream (POSIX ustar headers from :mod:`tarfile`, so ``tar``, ``bsdtar`` and Python read it):

* ``data/<LBA>.raw`` — one member per stored chunk of :data:`CHUNK_BYTES` (the last may be short),
  the raw blocks from that LBA on; a chunk of zeros only is not stored (sparse);
* ``manifest.json`` — the last member: :class:`Manifest` (volume, pair, extent, times, block size,
  every chunk with its SHA-256 and whether it was zero).  Last, because the checksums are known
  only once every chunk has been read; a reader of a seekable file finds it by name.

The image is written to ``IMAGE.partial``, flushed and renamed: a backup cut short never leaves a
file that looks complete.  A restore checks the whole image (manifest, every stored chunk's
length and SHA-256, no chunk missing) before it writes one block, then writes each chunk at its
LBA, zeros for the sparse ones.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tarfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable

FORMAT = "sanlab-backup/1"
"""The manifest's ``format``; a reader refuses any other."""
CHUNK_BYTES = 1 << 20
"""Bytes per chunk (16 copy tracks): the unit of checksums and of sparseness."""
MANIFEST = "manifest.json"
DATA_DIR = "data"
READ_AHEAD = 2
"""Chunks a backup reads ahead of the one it hashes (the volume's reads overlap hashing and writing)."""

ReadBlocks = Callable[[int, int], Awaitable[bytes]]
WriteBlocks = Callable[[int, bytes], Awaitable[None]]


class BackupError(Exception):
    """A backup or restore that cannot be done, or an image that does not check out."""


def chunk_member(lba: int) -> str:
    """The tar member name of the chunk starting at ``lba``."""
    return f"{DATA_DIR}/{lba:012d}.raw"


@dataclass(slots=True)
class Chunk:
    """One chunk of the image."""

    lba: int
    """First block (of the volume, not of the extent)."""
    blocks: int
    sha256: str
    """Of the chunk's raw bytes (zeros included for a sparse chunk)."""
    zero: bool
    """All zero: not stored in the tar stream."""


@dataclass(slots=True)
class Manifest:
    """What ``manifest.json`` holds (docs/backup.md)."""

    volume: str
    """The copy volume read, ``TARGET/LUN``."""
    pair: str
    """The local copy pair whose divided copy it is."""
    original: str
    """The pair's original, ``TARGET/LUN``."""
    extent: tuple[int, int]
    """(first block, blocks) backed up."""
    block_size: int
    volume_blocks: int
    split_time: float
    """When the copy was divided: the point in time the image holds."""
    started: float
    finished: float = 0.0
    chunk_bytes: int = CHUNK_BYTES
    chunks: list[Chunk] = field(default_factory=list)
    format: str = FORMAT

    @property
    def stored_bytes(self) -> int:
        """Bytes of the chunks the stream holds."""
        return sum(c.blocks for c in self.chunks if not c.zero) * self.block_size

    @property
    def zero_bytes(self) -> int:
        """Bytes of the sparse chunks (recorded, not stored)."""
        return sum(c.blocks for c in self.chunks if c.zero) * self.block_size

    def to_json(self) -> bytes:
        """The manifest member's bytes."""
        d = asdict(self)
        d["stored_bytes"], d["zero_bytes"] = self.stored_bytes, self.zero_bytes
        return json.dumps(d, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """Parse and check a manifest; BackupError naming what is wrong."""
        try:
            d = json.loads(raw)
            if d.get("format") != FORMAT:
                raise BackupError(f"manifest format {d.get('format')!r}, not {FORMAT!r}")
            chunks = [Chunk(int(c["lba"]), int(c["blocks"]), str(c["sha256"]), bool(c["zero"])) for c in d["chunks"]]
            m = cls(str(d["volume"]), str(d["pair"]), str(d["original"]), (int(d["extent"][0]), int(d["extent"][1])),
                    int(d["block_size"]), int(d["volume_blocks"]), float(d["split_time"]), float(d["started"]),
                    float(d["finished"]), int(d["chunk_bytes"]), chunks)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise BackupError(f"manifest unreadable: {exc!r}") from None
        pos = m.extent[0]
        for c in m.chunks:
            if c.lba != pos or c.blocks <= 0:
                raise BackupError(f"manifest: chunk at LBA {c.lba} does not follow LBA {pos}")
            pos += c.blocks
        if pos != m.extent[0] + m.extent[1]:
            raise BackupError(f"manifest: chunks end at LBA {pos}, the extent at {m.extent[0] + m.extent[1]}")
        return m


@dataclass(slots=True)
class Progress:
    """How far a backup or restore is (``backup status``)."""

    total_bytes: int
    done_bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    phase: str = "starting"
    ended: float | None = None
    """When the job's last byte was written (monotonic): a finished job's rate stays its own."""

    def finish(self) -> None:
        """The job is done: phase ``done``, seconds and rate frozen."""
        self.phase, self.ended = "done", time.monotonic()

    def as_dict(self) -> dict[str, Any]:
        """Progress in percent and the rate so far (over the whole job once it is done)."""
        secs = max((self.ended or time.monotonic()) - self.started, 1e-6)
        pct = 100 if not self.total_bytes else 100 * self.done_bytes // self.total_bytes
        return {"phase": self.phase, "total_bytes": self.total_bytes, "done_bytes": self.done_bytes,
                "progress": pct, "seconds": round(secs, 3), "rate": int(self.done_bytes / secs)}


def _digest(data: bytes) -> tuple[bool, str]:
    """(all zero, SHA-256) of a chunk (blocking: hashlib releases the GIL for large buffers)."""
    return data == _zeros(len(data)), hashlib.sha256(data).hexdigest()


def _zeros(n: int, cache: dict[int, bytes] = {}) -> bytes:  # noqa: B006 - a deliberate cache
    z = cache.get(n)
    if z is None:
        z = cache[n] = bytes(n)
    return z


class _ImageWriter:
    """The tar stream of one backup (blocking; called through :func:`asyncio.to_thread`).

    Each member goes out as its ustar header (:meth:`tarfile.TarInfo.tobuf`), its data and the
    padding to a 512-byte block, each one ``os.write``: the stream :mod:`tarfile` writes
    (``TarFile.addfile``) copies a member through 16 KiB reads and 10 KiB record slices in
    Python, which held the backup to half a sequential read.  The end is tar's: two zero blocks,
    then zeros to a whole 10 KiB record (POSIX ustar), so every tar reader takes the image."""

    def __init__(self, path: str) -> None:
        self.path, self.partial = path, path + ".partial"
        self.file = open(self.partial, "wb", buffering=0)
        self.mtime = int(time.time())
        self.offset = 0

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = self.file.write(view)
            assert n is not None  # a regular file in blocking mode
            view = view[n:]
        self.offset += len(data)

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), self.mtime, 0o644
        self._write(info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape"))
        self._write(data)
        if pad := -len(data) % tarfile.BLOCKSIZE:
            self._write(bytes(pad))

    def chunk_data(self, lba: int, data: bytes) -> None:
        """The member of a stored (not all-zero) chunk."""
        self._add(chunk_member(lba), data)

    def finish(self, manifest: Manifest) -> None:
        self._add(MANIFEST, manifest.to_json())
        self._write(bytes(2 * tarfile.BLOCKSIZE))
        if pad := -self.offset % tarfile.RECORDSIZE:
            self._write(bytes(pad))
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.partial, self.path)

    def abandon(self) -> None:
        self.file.close()
        try:
            os.unlink(self.partial)
        except FileNotFoundError:
            pass


async def write_image(read: ReadBlocks, manifest: Manifest, path: str, progress: Progress,
                      check: Callable[[], None] = lambda: None) -> Manifest:
    """Read ``manifest.extent`` through ``read`` chunk by chunk and write the image at ``path``;
    ``check`` runs after every read and raises BackupError when the image stopped being one instant."""
    bs = manifest.block_size
    step = max(1, CHUNK_BYTES // bs)
    first, count = manifest.extent
    writer = await asyncio.to_thread(_ImageWriter, path)
    progress.phase = "reading"
    spans = [(lba, min(step, first + count - lba)) for lba in range(first, first + count, step)]
    # A pipeline: the volume reads up to READ_AHEAD chunks ahead while a thread hashes this chunk
    # and another writes the previous one into the tar stream (members stay in LBA order).
    reads: deque[asyncio.Future[bytes]] = deque(
        asyncio.ensure_future(read(*span)) for span in spans[:READ_AHEAD])
    writing: asyncio.Future[None] | None = None
    try:
        for i, (lba, n) in enumerate(spans):
            data = await reads.popleft()
            check()
            if i + READ_AHEAD < len(spans):
                reads.append(asyncio.ensure_future(read(*spans[i + READ_AHEAD])))
            zero, digest = await asyncio.to_thread(_digest, data)
            if writing is not None:
                await writing
                writing = None
            manifest.chunks.append(Chunk(lba, n, digest, zero))
            if not zero:
                writing = asyncio.ensure_future(asyncio.to_thread(writer.chunk_data, lba, data))
            progress.done_bytes += n * bs
        if writing is not None:
            await writing
        manifest.finished = time.time()
        await asyncio.to_thread(writer.finish, manifest)
    except BaseException:
        for f in reads:
            f.cancel()
        # The tar write in its thread ends before the file is closed under it.
        await asyncio.gather(*reads, *([writing] if writing is not None else []), return_exceptions=True)
        await asyncio.to_thread(writer.abandon)
        raise
    progress.finish()
    return manifest


def _read_checked(path: str, progress: Progress | None = None) -> tuple[tarfile.TarFile, Manifest]:
    """Open the image and check every stored chunk against the manifest (blocking)."""
    try:
        tar = tarfile.open(path, mode="r:")
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{path}: not a readable tar image ({exc})") from None
    try:
        try:
            raw = tar.extractfile(MANIFEST)
        except KeyError:
            raise BackupError(f"{path}: no {MANIFEST} (not a sanlab backup, or cut short)") from None
        if raw is None:
            raise BackupError(f"{path}: {MANIFEST} is not a file")
        m = Manifest.from_json(raw.read())
        names = {i.name for i in tar.getmembers()}
        if progress is not None:
            progress.total_bytes = m.stored_bytes
            progress.phase = "verifying"
        for c in m.chunks:
            name = chunk_member(c.lba)
            if c.zero:
                if c.sha256 != hashlib.sha256(_zeros(c.blocks * m.block_size)).hexdigest():
                    raise BackupError(f"{path}: chunk at LBA {c.lba}: marked zero, checksum is not of zeros")
                continue
            if name not in names:
                raise BackupError(f"{path}: chunk at LBA {c.lba} missing ({name})")
            data = _member(tar, name)
            if len(data) != c.blocks * m.block_size:
                raise BackupError(f"{path}: chunk at LBA {c.lba}: {len(data)} bytes, the manifest says "
                                  f"{c.blocks * m.block_size}")
            if hashlib.sha256(data).hexdigest() != c.sha256:
                raise BackupError(f"{path}: chunk at LBA {c.lba} ({name}): SHA-256 mismatch, the image is corrupt")
            if progress is not None:
                progress.done_bytes += len(data)
    except BaseException:
        tar.close()
        raise
    return tar, m


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    f = tar.extractfile(name)
    if f is None:
        raise BackupError(f"{name} is not a file")
    return f.read()


async def verify_image(path: str, progress: Progress | None = None) -> Manifest:
    """Check the image at ``path`` (BackupError naming the first fault) and return its manifest."""
    tar, m = await asyncio.to_thread(_read_checked, path, progress)
    tar.close()
    return m


async def restore_image(path: str, write: WriteBlocks, block_size: int, num_blocks: int, progress: Progress,
                        ) -> Manifest:
    """Check the whole image, then write it through ``write`` at its LBAs (zeros where sparse)."""
    tar, m = await asyncio.to_thread(_read_checked, path, progress)
    try:
        if m.block_size != block_size:
            raise BackupError(f"the image has {m.block_size}-byte blocks, the volume {block_size}-byte ones")
        end = m.extent[0] + m.extent[1]
        if end > num_blocks:
            raise BackupError(f"the image reaches LBA {end}, the volume has {num_blocks} blocks")
        progress.total_bytes, progress.done_bytes, progress.phase = m.extent[1] * block_size, 0, "writing"
        for c in m.chunks:
            n = c.blocks * block_size
            data = _zeros(n) if c.zero else await asyncio.to_thread(_member, tar, chunk_member(c.lba))
            if not c.zero and hashlib.sha256(data).hexdigest() != c.sha256:  # the file changed since the check
                raise BackupError(f"{path}: chunk at LBA {c.lba} changed during the restore")
            await write(c.lba, data)
            progress.done_bytes += n
    finally:
        tar.close()
    progress.finish()
    return m
