"""Volume conformance: every Volume implementation passes the same checks (ARCHITECTURE §11)."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
import inspect
from typing import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanlab.storage.volume import Volume, VolumeError, first_mismatch

from sanlab.storage.emulated import EmulatedBlockOps

from sanlab.storage.file_volume import FileVolume

from sanlab.storage.range_lock import RangeLock


class MemoryVolume(EmulatedBlockOps):
    """An in-memory volume that gets the block operations from :class:`EmulatedBlockOps`."""

    def __init__(self, size: int, block_size: int) -> None:
        self._bs = block_size
        self.buf = bytearray(size)

    @property
    def block_size(self) -> int:
        return self._bs

    @property
    def num_blocks(self) -> int:
        return len(self.buf) // self._bs

    def _check(self, lba: int, n: int) -> None:
        if lba < 0 or n < 0 or lba + n > self.num_blocks:
            raise VolumeError("out of range")

    async def _raw_read(self, lba: int, nblocks: int) -> bytes:
        self._check(lba, nblocks)
        await asyncio.sleep(0)  # let racing tasks interleave, as a real store would
        return bytes(self.buf[lba * self._bs:(lba + nblocks) * self._bs])

    async def _raw_write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        if len(data) % self._bs:
            raise VolumeError("partial block")
        self._check(lba, len(data) // self._bs)
        await asyncio.sleep(0)
        self.buf[lba * self._bs:lba * self._bs + len(data)] = data

    async def read(self, lba: int, nblocks: int) -> bytes:
        async with self.range_lock.hold(lba, nblocks, exclusive=False):
            return await self._raw_read(lba, nblocks)

    async def write(self, lba: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        async with self.range_lock.hold(lba, len(data) // self._bs):
            await self._raw_write(lba, data, fua)

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass


Factory = Callable[[Path, int, int], "Volume | Awaitable[Volume]"]
def _raid5(d: Path, size: int, bs: int) -> Volume:
    from sanlab.storage.raid import Drive, RaidGroup
    from sanlab.storage.raid_volume import RaidVolume
    # 4 drives of size/3 each: 3 data chunks per stripe hold exactly ``size`` bytes.
    drives = [Drive(str(d / f"r{i}.img"), size // 3 + 65536) for i in range(4)]
    vol = RaidVolume(RaidGroup(5, drives, 4096, str(d / "wil.bitmap")), bs)
    vol._num_blocks = size // bs  # the conformance suite expects exactly ``size``
    return vol


def _logical(d: Path, size: int, bs: int) -> Volume:
    from sanlab.storage.ldev import LdevAllocator, LogicalVolume
    from sanlab.storage.raid import Drive, RaidGroup
    groups = {"a": RaidGroup(1, [Drive(str(d / f"a{i}.img"), size) for i in range(2)], 4096),
              "b": RaidGroup(0, [Drive(str(d / f"b{i}.img"), size // 2) for i in range(2)], 4096)}
    alloc = LdevAllocator(size // 4)
    for name, g in groups.items():
        alloc.add_group(name, g.capacity)
    return LogicalVolume(alloc.allocate(size), groups, bs, size)  # type: ignore[arg-type]


def _window(d: Path, size: int, bs: int) -> Volume:
    from sanlab.storage.vvol import WindowVolume
    base = FileVolume(str(d / "base.img"), size + 64 * bs, bs)
    return WindowVolume(base, 64, size // bs)


def _migrating(d: Path, size: int, bs: int) -> Volume:
    """A migration part way through: hosts use the destination while chunks come from the source
    on demand (the conformance suite's data starts as zeros on both)."""
    from sanlab.storage.migrate import MigratingVolume
    src = FileVolume(str(d / "src.img"), size, bs)
    dst = FileVolume(str(d / "dst.img"), size, bs)
    return MigratingVolume("m", src, dst, str(d / "migrate-m.json"), chunk_blocks=64)


_CLEANUP: list[Callable[[], Awaitable[None]]] = []


async def _external(d: Path, size: int, bs: int) -> Volume:
    """A peer's LUN over real iSCSI: an in-process target on a loopback port and the array's own
    initiator (storage/external.py), as an external volume is used."""
    from sanlab.scsi.device_server import DeviceServer
    from sanlab.scsi.lu import LogicalUnit, LuConfig
    from sanlab.storage.external import ExternalVolume
    from sanlab.target.initiator import InitiatorConfig, IscsiSession
    from sanlab.target.login import TargetAuth
    from sanlab.target.server import IscsiServer, Target
    name = "iqn.2026-12.org.sanlab:peer"
    peer = LogicalUnit(FileVolume(str(d / "peer.img"), size, bs), LuConfig.for_lun(name, 0))
    server = IscsiServer([Target(TargetAuth(name), DeviceServer(name, {0: peer}))], [("127.0.0.1", 0)])
    await server.start()
    host, port = server.bound[0]
    session = IscsiSession(host, port, name, InitiatorConfig(initiator_name="iqn.2026-12.org.sanlab:array",
                                                              nop_interval=0))
    vol = ExternalVolume("ext", session, 0)
    await vol.open()
    _CLEANUP.append(server.stop)
    return vol


def _encrypted(inner: Volume, d: Path) -> Volume:
    """``inner`` through AES-256-XTS (storage/encrypted.py), its header made now."""
    from sanlab.storage.encrypted import open_encrypted
    return open_encrypted(inner, str(d / "v.crypt"), bytes(range(32)), may_create=True, what="test volume")


async def _encrypted_raid5(d: Path, size: int, bs: int) -> Volume:
    made = _raid5(d, size, bs)
    return _encrypted(await made if inspect.isawaitable(made) else made, d)


FACTORIES: dict[str, Factory] = {
    "encrypted": lambda d, size, bs: _encrypted(FileVolume(str(d / "v.img"), size, bs), d),
    "encrypted-raid5": lambda d, size, bs: _encrypted_raid5(d, size, bs),
    "file": lambda d, size, bs: FileVolume(str(d / "v.img"), size, bs),
    "file-thick": lambda d, size, bs: FileVolume(str(d / "v.img"), size, bs, thin=False),
    "memory": lambda d, size, bs: MemoryVolume(size, bs),
    "raid5": lambda d, size, bs: _raid5(d, size, bs),
    "logical": lambda d, size, bs: _logical(d, size, bs),
    "window": lambda d, size, bs: _window(d, size, bs),
    "migrating": lambda d, size, bs: _migrating(d, size, bs),
    "external": lambda d, size, bs: _external(d, size, bs),
}


@pytest.fixture(params=sorted(FACTORIES))
async def volume(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Volume]:
    made = FACTORIES[request.param](tmp_path, 1 << 20, 512)
    vol = await made if inspect.isawaitable(made) else made
    yield vol
    await vol.close()
    while _CLEANUP:
        await _CLEANUP.pop()()


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


# --- provisioning, WRITE SAME, COMPARE AND WRITE (shared conformance) -------------------------------


FS_BLOCK = 4096
"""Hole-punching granularity of the test file system (ext4/xfs/tmpfs)."""


def blocks_allocated(vol: Volume) -> int:
    assert isinstance(vol, FileVolume)
    return os.fstat(vol._fd).st_blocks * 512


async def test_unmap_reads_zeros_and_deallocates(volume: Volume) -> None:
    await volume.write(0, os.urandom(64 * 512))
    await volume.unmap(8, 16)
    assert volume.lbprz
    data = await volume.read(0, 64)
    assert data[8 * 512:24 * 512] == bytes(16 * 512) and any(data[:8 * 512]) and any(data[24 * 512:])
    status = await volume.get_lba_status(0, 8)
    if volume.thin:
        assert status == [(0, 8, 0), (8, 16, 1), (24, 40, 0), (64, 2048 - 64, 1)]
    else:
        assert status == [(0, 2048, 0)]
    await volume.unmap(2047, 1)
    await volume.unmap(0, 0)


async def test_unmap_unaligned_zeroes_without_deallocating(volume: Volume) -> None:
    await volume.write(0, b"\xee" * (16 * 512))
    await volume.unmap(3, 2)  # inside one 4 KiB file-system block: zeroed, still mapped
    data = await volume.read(0, 16)
    assert data == b"\xee" * (3 * 512) + bytes(2 * 512) + b"\xee" * (11 * 512)
    assert (await volume.get_lba_status(0, 4))[0] == (0, 16 if volume.thin else 2048, 0)


async def test_get_lba_status_extents(volume: Volume) -> None:
    # A fresh volume: one extent from the requested LBA to the end.
    first = await volume.get_lba_status(5, 4)
    assert first[0][0] == 5 and sum(n for _, n, _ in first) == 2048 - 5
    if not volume.thin:
        assert first == [(5, 2043, 0)]
        return
    assert first == [(5, 2043, 1)]
    for lba in (16, 48, 80):
        await volume.write(lba, bytes([1]) * (8 * 512))
    status = await volume.get_lba_status(20, 64)
    assert status == [(20, 4, 0), (24, 24, 1), (48, 8, 0), (56, 24, 1), (80, 8, 0), (88, 2048 - 88, 1)]
    assert await volume.get_lba_status(20, 2) == status[:2]
    assert await volume.get_lba_status(2047, 4) == [(2047, 1, 1)]
    for lba in (2048, -1):
        with pytest.raises(VolumeError):
            await volume.get_lba_status(lba, 1)


async def test_write_same(volume: Volume) -> None:
    block = bytes(range(256)) * 2
    await volume.write_same(10, 700, block)
    assert await volume.read(10, 700) == block * 700
    assert await volume.read(9, 1) == bytes(512) and await volume.read(710, 1) == bytes(512)
    await volume.write_same(2047, 1, memoryview(block), fua=True)
    assert await volume.read(2047, 1) == block
    # UNMAP: a thin volume deallocates whatever the block holds (the blocks then read as zeros);
    # one that cannot deallocate writes the block.
    await volume.write_same(100, 8, block, unmap=True)
    assert await volume.read(100, 8) == (bytes(8 * 512) if volume.thin else block * 8)
    # UNMAP with zeros: deallocated on a thin volume, zeros either way.
    await volume.write_same(0, 64, bytes(512), unmap=True)
    assert await volume.read(0, 64) == bytes(64 * 512)
    assert (await volume.get_lba_status(0, 1))[0] == ((0, 64, 1) if volume.thin else (0, 2048, 0))
    with pytest.raises(VolumeError):
        await volume.write_same(0, 1, bytes(100))
    with pytest.raises(VolumeError):
        await volume.write_same(2040, 9, block)


async def test_compare_and_write(volume: Volume) -> None:
    old, new = b"A" * 1024, b"B" * 1024
    await volume.write(4, old)
    assert await volume.compare_and_write(4, old, new) is None
    assert await volume.read(4, 2) == new
    wrong = bytearray(new)
    wrong[700] ^= 1
    assert await volume.compare_and_write(4, wrong, old, fua=True) == 700
    assert await volume.read(4, 2) == new  # nothing written on a miscompare
    assert await volume.compare_and_write(9, b"\x01" + bytes(511), old[:512]) == 0
    with pytest.raises(VolumeError):
        await volume.compare_and_write(2047, bytes(1024), bytes(1024))
    with pytest.raises(VolumeError):
        await volume.compare_and_write(0, bytes(512), bytes(1024))


async def test_compare_and_write_is_atomic_against_racing_writers(volume: Volume) -> None:
    """Lost updates would show: every increment is a read followed by a compare-and-write."""
    lba, tasks, rounds = 40, 24, 6

    async def increment() -> None:
        for _ in range(rounds):
            while True:
                cur = await volume.read(lba, 2)
                value = int.from_bytes(cur[:8], "big")
                if await volume.compare_and_write(lba, cur, (value + 1).to_bytes(8, "big") * 128) is None:
                    break

    async def scribble() -> None:
        # Plain writes to blocks overlapping the counter's range, that keep the counter intact:
        # they rewrite the second block only, which overlaps every compare-and-write.
        for _ in range(rounds * 4):
            cur = await volume.read(lba, 2)
            await volume.write(lba + 1, cur[512:])

    await volume.write(lba, bytes(1024))
    await asyncio.gather(*(increment() for _ in range(tasks)), scribble(), scribble())
    assert int.from_bytes((await volume.read(lba, 1))[:8], "big") == tasks * rounds


async def test_compare_and_write_never_torn(volume: Volume) -> None:
    """A reader never sees half of a compare-and-write, a writer never lands inside one."""
    n = 32
    await volume.write(0, b"\x00" * (n * 512))
    seen: list[bool] = []

    async def flip(i: int) -> None:
        a, b = bytes([i % 2]) * (n * 512), bytes([(i + 1) % 2]) * (n * 512)
        await volume.compare_and_write(0, a, b)

    async def look() -> None:
        for _ in range(20):
            data = await volume.read(0, n)
            seen.append(len(set(data)) == 1)

    await asyncio.gather(*(flip(i) for i in range(40)), look(), look(),
                         *(volume.write(0, bytes([i % 2]) * (n * 512)) for i in range(10)))
    assert all(seen) and len(set(await volume.read(0, n))) == 1


async def test_new_operations_refuse_out_of_range_and_readonly(volume: Volume, tmp_path: Path) -> None:
    for lba, n in [(2048, 1), (2047, 2), (-1, 1)]:
        with pytest.raises(VolumeError):
            await volume.unmap(lba, n)
        with pytest.raises(VolumeError):
            await volume.write_same(lba, n, bytes(512))
    if isinstance(volume, FileVolume):
        ro = FileVolume(volume.path, 1 << 20, 512, readonly=True)
        for op in (ro.unmap(0, 1), ro.write_same(0, 1, bytes(512)),
                   ro.compare_and_write(0, bytes(512), bytes(512))):
            with pytest.raises(VolumeError):
                await op
        await ro.close()


def test_thin_punches_holes_thick_stays_allocated(tmp_path: Path) -> None:
    size = 4 << 20
    thin = FileVolume(str(tmp_path / "thin.img"), size, 512)
    thick = FileVolume(str(tmp_path / "thick.img"), size, 4096, thin=False)
    assert (thin.thin, thick.thin) == (True, False)
    assert blocks_allocated(thin) < FS_BLOCK * 4 and blocks_allocated(thick) >= size
    thin.write_sync(0, os.urandom(size))
    thick.write_sync(0, os.urandom(size))
    thin.unmap_sync(0, size // 512)
    thick.unmap_sync(0, size // 4096)
    assert blocks_allocated(thin) < FS_BLOCK * 4 and blocks_allocated(thick) >= size
    # The holes are where SEEK_HOLE finds them.
    thin.write_sync(2048, bytes([7]) * 512 * 8)
    assert os.lseek(thin._fd, 0, os.SEEK_DATA) == 2048 * 512
    assert os.lseek(thin._fd, 2048 * 512, os.SEEK_HOLE) == 2056 * 512
    assert thin.read_sync(0, size // 512) == bytes(2048 * 512) + bytes([7]) * 4096 + bytes(size - 2056 * 512)
    for v in (thin, thick):
        os.close(v._fd)


def test_thick_volume_allocates_existing_sparse_file(tmp_path: Path) -> None:
    path = tmp_path / "was-thin.img"
    os.close(FileVolume(str(path), 1 << 20, 512)._fd)
    assert path.stat().st_blocks * 512 < 1 << 20
    os.close(FileVolume(str(path), 1 << 20, 512, thin=False)._fd)
    assert path.stat().st_blocks * 512 >= 1 << 20


@given(a=st.binary(min_size=1, max_size=64), pos=st.integers(0, 63), flip=st.integers(1, 255))
def test_first_mismatch(a: bytes, pos: int, flip: int) -> None:
    assert first_mismatch(a, a) is None
    pos %= len(a)
    b = bytearray(a)
    b[pos] ^= flip
    assert first_mismatch(a, b) == pos
    b[-1] ^= 0x80
    assert first_mismatch(a, b) == (pos if pos != len(a) - 1 or b[-1] != a[-1] else None)


async def test_range_lock_orders_overlaps_only() -> None:
    lock = RangeLock()
    log: list[str] = []
    gate = asyncio.Event()

    async def op(name: str, lba: int, n: int, exclusive: bool, wait: bool = False) -> None:
        async with lock.hold(lba, n, exclusive=exclusive):
            log.append(f"+{name}")
            if wait:
                await gate.wait()
            await asyncio.sleep(0)
            log.append(f"-{name}")

    first = asyncio.create_task(op("w1", 0, 10, True, wait=True))
    await asyncio.sleep(0)
    others = [asyncio.create_task(op("w2", 5, 10, True)),     # overlaps w1: waits
              asyncio.create_task(op("r1", 9, 1, False)),      # reader overlapping w1: waits
              asyncio.create_task(op("w3", 10, 5, True)),      # disjoint from w1, overlaps w2: after w2
              asyncio.create_task(op("r2", 100, 1, False))]    # disjoint: runs now
    for _ in range(5):
        await asyncio.sleep(0)
    assert "+r2" in log and "+w2" not in log and "+r1" not in log and "+w3" not in log
    assert lock.busy == 4
    gate.set()
    await asyncio.gather(first, *others)
    assert log.index("-w1") < log.index("+w2") < log.index("-w2") < log.index("+w3")
    assert log.index("-w1") < log.index("+r1")
    assert lock.busy == 0


@pytest.mark.skipif(not getattr(os, "RWF_DSYNC", 0), reason="no pwritev2 RWF_DSYNC here")
async def test_a_fua_write_syncs_its_own_range_not_the_whole_file(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """FUA (SBC-3 §5.47) asks for this write's data on the medium: pwritev2 with RWF_DSYNC, not an
    fdatasync that also writes out every other dirty page of the file (a copy-on-write beside a
    background copy would pay for the whole copy)."""
    vol = FileVolume(str(tmp_path / "v.img"), 1 << 20, 512)
    calls: list[str] = []
    real_pwritev, real_fdatasync = os.pwritev, os.fdatasync

    def pwritev(fd: int, bufs: list[memoryview], off: int, flags: int = 0) -> int:
        calls.append(f"pwritev {off} {flags & os.RWF_DSYNC and 'dsync'}")
        return real_pwritev(fd, bufs, off, flags)

    def fdatasync(fd: int) -> None:
        calls.append("fdatasync")
        real_fdatasync(fd)
    monkeypatch.setattr(os, "pwritev", pwritev)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    await vol.write(8, b"\xab" * 4096, fua=True)
    assert calls == ["pwritev 4096 dsync"]
    monkeypatch.setattr(os, "pwritev", real_pwritev)
    monkeypatch.setattr(os, "fdatasync", real_fdatasync)
    assert await vol.read(8, 8) == b"\xab" * 4096
    await vol.close()
    assert (tmp_path / "v.img").read_bytes()[4096:8192] == b"\xab" * 4096


async def test_a_failing_sync_is_a_volume_error_and_an_atomic_write_keeps_the_volume(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An fdatasync that fails (EIO; ENOSPC on file systems that reserve late) reaches the device
    server as VolumeError (MEDIUM ERROR for the host), never as a raw OSError (an internal failure):
    SYNCHRONIZE CACHE, WRITE SAME with FUA, and an atomic write whose journal cannot be made
    durable, which then leaves the volume as it was."""
    import errno
    vol = FileVolume(str(tmp_path / "v.img"), 1 << 20, 512)
    await vol.write(0, b"\x01" * 4096)
    real_fdatasync = os.fdatasync

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(VolumeError, match="flush failed: .*Input/output error"):
        await vol.flush()
    with pytest.raises(VolumeError, match="write same failed"):
        await vol.write_same(0, 8, b"\x02" * 512, fua=True)
    with pytest.raises(VolumeError, match="atomic write journal failed"):
        await vol.write_atomic(16, b"\x03" * 4096)
    monkeypatch.setattr(os, "fdatasync", real_fdatasync)
    assert await vol.read(16, 8) == bytes(4096)  # the atomic write did not happen
    await vol.close()
