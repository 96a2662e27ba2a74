"""The atomic-write journal of file volumes: each state a crash can leave on disk, then a restart."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from sanlab.storage.atomic import DATA_OFFSET, AtomicJournal, AtomicWriter
from sanlab.storage.volume import VolumeError
from sanlab.storage.file_volume import FileVolume
from sanlab.storage.vvol import WindowVolume

SIZE = 1 << 20
OLD, NEW = b"o" * 8192, b"N" * 8192


def volume(tmp_path: Path) -> FileVolume:
    return FileVolume(str(tmp_path / "v.img"), SIZE, 512)


def prepared(tmp_path: Path) -> tuple[str, AtomicJournal]:
    """A volume holding OLD at LBA 64 and closed; its journal (as the next atomic write would use it)."""
    vol = volume(tmp_path)
    vol.write_sync(64, OLD, fua=True)
    os.close(vol._fd)
    return vol.path, AtomicJournal(vol.path + ".atomic")


def contents(path: str) -> bytes:
    with open(path, "rb") as f:
        f.seek(64 * 512)
        return f.read(len(NEW))


async def test_atomic_write_and_clean_journal(tmp_path: Path) -> None:
    vol = volume(tmp_path)
    assert isinstance(vol, AtomicWriter) and vol.atomic_max_blocks == 2048
    await vol.write_atomic(64, NEW)
    assert await vol.read(64, 16) == NEW
    assert AtomicJournal(vol.path + ".atomic").pending() is None  # cleared before it returned
    with pytest.raises(VolumeError):
        await vol.write_atomic(SIZE // 512 - 1, NEW)
    with pytest.raises(VolumeError):
        await vol.write_atomic(0, bytes(2 << 20))
    await vol.close()


def test_crash_after_the_record_replays_it(tmp_path: Path) -> None:
    """Record durable, volume not yet written (or written in part): the restart writes all of it."""
    path, journal = prepared(tmp_path)
    journal.record(64, NEW)
    with open(path, "r+b") as f:  # a torn in-place write: only the first 4 KiB reached the file
        f.seek(64 * 512)
        f.write(NEW[:4096])
    journal.close()
    vol = FileVolume(path, SIZE, 512)
    assert vol.read_sync(64, 16) == NEW
    assert AtomicJournal(path + ".atomic").pending() is None  # replayed once, then cleared


def test_crash_after_the_write_replays_harmlessly(tmp_path: Path) -> None:
    path, journal = prepared(tmp_path)
    journal.record(64, NEW)
    with open(path, "r+b") as f:
        f.seek(64 * 512)
        f.write(NEW)
    journal.close()
    assert FileVolume(path, SIZE, 512).read_sync(64, 16) == NEW


def test_torn_record_is_not_replayed(tmp_path: Path) -> None:
    """The record itself was cut short (its checksum fails): the volume was never touched, the old
    data stays, and nothing half-written is applied."""
    path, journal = prepared(tmp_path)
    journal.record(64, NEW)
    journal.close()
    with open(path + ".atomic", "r+b") as f:
        f.seek(DATA_OFFSET + 5000)
        f.write(b"o" * 3192)  # the tail of the data never made it
    assert FileVolume(path, SIZE, 512).read_sync(64, 16) == OLD
    assert contents(path) == OLD


def test_cleared_record_is_not_replayed(tmp_path: Path) -> None:
    """A completed atomic write followed by an ordinary one: a restart must keep the later data."""
    path, journal = prepared(tmp_path)
    journal.record(64, NEW)
    journal.clear()
    journal.close()
    assert FileVolume(path, SIZE, 512).read_sync(64, 16) == OLD


async def test_window_volume_passes_atomic_writes_down(tmp_path: Path) -> None:
    base = volume(tmp_path)
    win = WindowVolume(base, 100, 200)
    assert isinstance(win, AtomicWriter) and win.atomic_max_blocks == 2048
    await win.write_atomic(4, NEW)
    assert await base.read(104, 16) == NEW
    with pytest.raises(VolumeError):
        await win.write_atomic(195, NEW)
    await base.close()
