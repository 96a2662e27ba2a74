"""Growing a volume while in use (storage/volume.py: Resizable, FileVolume.grow, grow_volume)."""
from __future__ import annotations

import asyncio
import errno
import inspect
import os
from pathlib import Path

import pytest

from sanlab.storage.volume import ProvisioningStatus, Resizable, Volume, VolumeError, grow_volume

from sanlab.storage.file_volume import FileVolume
from tests.storage.test_volume import _CLEANUP, FACTORIES

MiB = 1 << 20


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


async def test_thin_grow_extends_sparse_keeps_data_and_new_blocks_read_zeros(tmp_path: Path) -> None:
    path = tmp_path / "thin.img"
    vol = FileVolume(str(path), MiB, 512)
    old = os.urandom(4096)
    await vol.write(2040, old)  # the last 8 blocks before the grow
    before = allocated(path)
    assert isinstance(vol, Resizable)
    await vol.grow(8192)  # 1 MiB → 4 MiB
    assert vol.num_blocks == 8192 and path.stat().st_size == 4 * MiB
    assert allocated(path) - before < 64 * 1024  # sparse: the 3 MiB added are holes
    assert await vol.read(2040, 8) == old
    assert await vol.read(2048, 16) == bytes(16 * 512)
    # The new area is deallocated (holes), as GET LBA STATUS of a thin volume says.
    assert (await vol.get_lba_status(4096, 4))[0][2] == ProvisioningStatus.DEALLOCATED
    new = os.urandom(512)
    await vol.write(8191, new)  # the new last LBA
    assert await vol.read(8191, 1) == new
    with pytest.raises(VolumeError):
        await vol.read(8192, 1)
    await vol.close()
    # The file carries the new size: reopened with it, everything is there.
    again = FileVolume(str(path), 4 * MiB, 512)
    assert await again.read(2040, 8) == old and await again.read(8191, 1) == new
    await again.close()


async def test_thick_grow_allocates_the_new_range(tmp_path: Path) -> None:
    path = tmp_path / "thick.img"
    vol = FileVolume(str(path), MiB, 4096, thin=False)
    await vol.write(255, b"\x77" * 4096)
    await vol.grow(1024)  # 1 MiB → 4 MiB of 4 KiB blocks
    assert vol.num_blocks == 1024 and path.stat().st_size == 4 * MiB
    assert allocated(path) >= 4 * MiB  # posix_fallocate: writes there cannot hit ENOSPC
    assert await vol.read(255, 1) == b"\x77" * 4096
    assert await vol.read(256, 768) == bytes(768 * 4096)
    assert await vol.get_lba_status(300, 4) == [(300, 724, ProvisioningStatus.MAPPED)]
    await vol.close()


async def test_grow_refuses_shrink_and_read_only_and_same_size_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "v.img"
    vol = FileVolume(str(path), MiB, 512)
    with pytest.raises(ValueError, match="only grows"):
        await vol.grow(2047)
    assert vol.num_blocks == 2048 and path.stat().st_size == MiB
    await vol.grow(2048)  # the current size: nothing to do, no error
    assert vol.num_blocks == 2048 and path.stat().st_size == MiB
    await vol.close()
    ro = FileVolume(str(path), MiB, 512, readonly=True)
    with pytest.raises(VolumeError, match="read-only"):
        await ro.grow(4096)
    assert ro.num_blocks == 2048 and path.stat().st_size == MiB
    await ro.close()


async def test_bytes_past_the_old_end_read_as_zeros_after_grow(tmp_path: Path) -> None:
    # An image file longer than the volume (here: a partial block and a stale block past its end):
    # those bytes were never volume data, and the blocks the grow adds must read as zeros.
    path = tmp_path / "image.img"
    path.write_bytes(b"\x11" * MiB + b"\xee" * 700)
    vol = FileVolume(str(path), MiB, 512)
    assert vol.num_blocks == 2048
    await vol.grow(2056)
    assert await vol.read(2047, 1) == b"\x11" * 512
    assert await vol.read(2048, 8) == bytes(8 * 512)
    await vol.close()


async def test_failed_thick_grow_leaves_file_and_capacity_as_they_were(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "full.img"
    vol = FileVolume(str(path), MiB, 512, thin=False)

    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(VolumeError, match="No space left"):
        await vol.grow(4096)
    assert vol.num_blocks == 2048 and path.stat().st_size == MiB
    await vol.close()


async def test_grows_are_serialised_and_io_goes_on(tmp_path: Path) -> None:
    vol = FileVolume(str(tmp_path / "busy.img"), MiB, 512)
    data = os.urandom(512)

    async def writer() -> None:
        for lba in range(0, 2048, 64):
            await vol.write(lba, data)

    # Racing grows run one after the other, each from the capacity the previous one left, while
    # writes to the old range keep going.
    await asyncio.gather(vol.grow(3072), vol.grow(4096), writer())
    assert vol.num_blocks == 4096
    # A grow that arrives second but asks for less than the first left is a shrink: refused, and
    # the capacity stays where the first put it (unserialised, both would check against 4096).
    first, second = await asyncio.gather(vol.grow(8192), vol.grow(6144), return_exceptions=True)
    assert first is None and isinstance(second, ValueError)
    assert vol.num_blocks == 8192 and os.path.getsize(vol.path) == 8192 * 512
    assert all([await vol.read(lba, 1) == data for lba in range(0, 2048, 64)])
    await vol.close()


@pytest.mark.parametrize("kind", sorted(FACTORIES))
async def test_every_volume_grows_or_says_it_cannot(tmp_path: Path, kind: str) -> None:
    """The shared contract: a volume grows to the new size, or refuses with a VolumeError naming
    its kind and keeps its capacity — never a silent no-op."""
    made = FACTORIES[kind](tmp_path, MiB, 512)
    vol: Volume = await made if inspect.isawaitable(made) else made
    try:
        await vol.write(2047, b"\x42" * 512)
        # A wrapper (an encrypted volume) can grow only as its inner volume can: it refuses naming that.
        inner = getattr(vol, "inner", vol)
        if isinstance(vol, Resizable) and (inner is vol or isinstance(inner, Resizable)):
            await grow_volume(vol, 4096)
            assert vol.num_blocks == 4096
            assert await vol.read(2047, 2) == b"\x42" * 512 + bytes(512)
        else:
            refused = type(inner if isinstance(vol, Resizable) else vol).__name__
            with pytest.raises(VolumeError, match=f"a {refused} cannot change its capacity"):
                await grow_volume(vol, 4096)
            assert vol.num_blocks == 2048
        assert kind not in ("file", "file-thick") or isinstance(vol, Resizable)
    finally:
        await vol.close()
        while _CLEANUP:
            await _CLEANUP.pop()()
