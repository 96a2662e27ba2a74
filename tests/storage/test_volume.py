"""Volume conformance: every Volume implementation passes the same checks (ARCHITECTURE §11)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanlab.storage.volume import FileVolume, Volume, VolumeError

Factory = Callable[[Path, int, int], Volume]
FACTORIES: dict[str, Factory] = {
    "file": lambda d, size, bs: FileVolume(str(d / "v.img"), size, bs),
}


@pytest.fixture(params=sorted(FACTORIES))
async def volume(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Volume]:
    vol = FACTORIES[request.param](tmp_path, 1 << 20, 512)
    yield vol
    await vol.close()


async def test_geometry_and_zero_fill(volume: Volume) -> None:
    assert isinstance(volume, Volume)
    assert (volume.block_size, volume.num_blocks) == (512, 2048)
    assert await volume.read(100, 4) == bytes(2048)


async def test_write_read_back(volume: Volume) -> None:
    data = os.urandom(4096)
    await volume.write(7, data)
    await volume.write(2040, memoryview(bytearray(data)), fua=True)
    assert await volume.read(7, 8) == data
    assert await volume.read(2040, 8) == data
    await volume.flush()


@pytest.mark.parametrize("lba,n", [(2048, 1), (2047, 2), (-1, 1)])
async def test_out_of_range(volume: Volume, lba: int, n: int) -> None:
    with pytest.raises(VolumeError):
        await volume.read(lba, n)
    with pytest.raises(VolumeError):
        await volume.write(lba, bytes(512 * n))


async def test_partial_block_write_refused(volume: Volume) -> None:
    with pytest.raises(VolumeError):
        await volume.write(0, bytes(100))


def test_file_volume_is_sparse_and_persistent(tmp_path: Path) -> None:
    path = tmp_path / "big.img"
    v = FileVolume(str(path), 1 << 30, 4096)
    assert path.stat().st_size == 1 << 30 and path.stat().st_blocks * 512 < 1 << 20
    v.write_sync(3, b"\xab" * 4096)
    os.close(v._fd)
    v2 = FileVolume(str(path), 1 << 30, 4096)
    assert v2.read_sync(3, 1) == b"\xab" * 4096
    ro = FileVolume(str(path), 1 << 30, 4096, readonly=True)
    with pytest.raises(VolumeError):
        ro.write_sync(0, bytes(4096))


def test_bad_geometry(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        FileVolume(str(tmp_path / "x"), 1000, 512)
    with pytest.raises(ValueError):
        FileVolume(str(tmp_path / "x"), 4096, 1024)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.integers(0, 63), st.integers(1, 8), st.binary(min_size=1, max_size=1)),
                    max_size=20))
def test_matches_flat_reference_model(tmp_path: Path, ops: list[tuple[int, int, bytes]]) -> None:
    v = FileVolume(str(tmp_path / "m.img"), 64 * 512 + 8 * 512, 512)
    model = bytearray(v.num_blocks * 512)
    v.write_sync(0, bytes(len(model)))
    for lba, n, fill in ops:
        data = fill * (n * 512)
        v.write_sync(lba, data)
        model[lba * 512:(lba + n) * 512] = data
    assert v.read_sync(0, v.num_blocks) == bytes(model)
    os.close(v._fd)
