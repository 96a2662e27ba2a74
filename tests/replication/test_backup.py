"""The backup image format (replication/backup.py): round trip, sparseness, and every fault refused."""
from __future__ import annotations

import asyncio
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from sanlab.replication.backup import CHUNK_BYTES, BackupError, Manifest, Progress, restore_image, verify_image, \
    write_image

BS = 512


def _volume(nbytes: int) -> bytearray:
    vol = bytearray(nbytes)
    for off in range(0, nbytes, 4096):
        if (off // CHUNK_BYTES) % 3 != 1:  # every third chunk stays zero
            vol[off:off + 8] = off.to_bytes(8, "big")
    return vol


def _backup(path: Path, vol: bytearray, extent: tuple[int, int]) -> Manifest:
    async def read(lba: int, n: int) -> bytes:
        return bytes(vol[lba * BS:(lba + n) * BS])
    m = Manifest("t/1", "c1", "t/0", extent, BS, len(vol) // BS, 1.0, 2.0)
    return asyncio.run(write_image(read, m, str(path), Progress(extent[1] * BS)))


def _restore(path: Path, nbytes: int, fill: int = 0xEE) -> bytearray:
    out = bytearray([fill]) * nbytes

    async def write(lba: int, data: bytes) -> None:
        out[lba * BS:lba * BS + len(data)] = data
    asyncio.run(restore_image(str(path), write, BS, nbytes // BS, Progress(0)))
    return out


def test_round_trip_is_byte_identical_and_sparse(tmp_path: Path) -> None:
    size = 5 * CHUNK_BYTES + 3 * BS  # a short last chunk
    vol = _volume(size)
    m = _backup(tmp_path / "i.tar", vol, (0, size // BS))
    assert [c.zero for c in m.chunks] == [False, True, False, False, True, False]
    assert m.zero_bytes == 2 * CHUNK_BYTES and m.stored_bytes == size - 2 * CHUNK_BYTES
    with tarfile.open(tmp_path / "i.tar") as tar:
        names = tar.getnames()
    assert names == ["data/000000000000.raw", "data/000000004096.raw", "data/000000006144.raw",
                     "data/000000010240.raw", "manifest.json"]
    assert _restore(tmp_path / "i.tar", size) == vol
    assert not (tmp_path / "i.tar.partial").exists()
    # GNU tar reads it too (members, sizes, the data itself), and the stream ends on a whole record.
    assert (tmp_path / "i.tar").stat().st_size % tarfile.RECORDSIZE == 0
    listing = subprocess.run(["tar", "-tvf", str(tmp_path / "i.tar")], capture_output=True, text=True, check=True)
    assert [line.split()[-1] for line in listing.stdout.splitlines()] == names
    raw = subprocess.run(["tar", "-xOf", str(tmp_path / "i.tar"), "data/000000004096.raw"], capture_output=True,
                         check=True).stdout
    assert raw == vol[4096 * BS:6144 * BS]


def test_extent_goes_back_to_its_lbas_only(tmp_path: Path) -> None:
    vol = _volume(4 * CHUNK_BYTES)
    _backup(tmp_path / "e.tar", vol, (100, 3000))
    out = _restore(tmp_path / "e.tar", len(vol))
    assert out[100 * BS:3100 * BS] == vol[100 * BS:3100 * BS]
    assert out[:100 * BS] == bytes([0xEE]) * (100 * BS) and out[3100 * BS:] == bytes([0xEE]) * (len(vol) - 3100 * BS)
    with pytest.raises(BackupError, match="reaches LBA 3100"):
        _restore(tmp_path / "e.tar", 3000 * BS)


def _rewrite(src: Path, dst: Path, change: dict[str, bytes | None]) -> None:
    """Copy the tar ``src`` to ``dst`` with members replaced (or dropped: None)."""
    with tarfile.open(src) as a, tarfile.open(dst, "w") as b:
        for info in a.getmembers():
            data = a.extractfile(info).read()  # type: ignore[union-attr]
            if info.name in change:
                new = change[info.name]
                if new is None:
                    continue
                data = new
            info.size = len(data)
            b.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("fault, message", [
    ("flip", "SHA-256 mismatch"), ("drop", "missing"), ("short", "bytes, the manifest says"),
    ("nomanifest", "no manifest.json"), ("format", "not 'sanlab-backup/1'"), ("gap", "does not follow"),
    ("fakezero", "marked zero"), ("notar", "not a readable tar image"),
])
def test_a_faulty_image_is_refused_before_anything_is_written(tmp_path: Path, fault: str, message: str) -> None:
    vol = _volume(3 * CHUNK_BYTES)
    good, bad = tmp_path / "g.tar", tmp_path / "b.tar"
    _backup(good, vol, (0, len(vol) // BS))
    with tarfile.open(good) as tar:
        chunk = tar.extractfile("data/000000000000.raw").read()  # type: ignore[union-attr]
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    if fault == "flip":
        _rewrite(good, bad, {"data/000000000000.raw": bytes([chunk[0] ^ 1]) + chunk[1:]})
    elif fault == "drop":
        _rewrite(good, bad, {"data/000000004096.raw": None})
    elif fault == "short":
        _rewrite(good, bad, {"data/000000000000.raw": chunk[:-BS]})
    elif fault == "nomanifest":
        _rewrite(good, bad, {"manifest.json": None})
    elif fault == "notar":
        bad.write_bytes(b"\x01" * 4096)
    else:
        if fault == "format":
            manifest["format"] = "other/9"
        elif fault == "gap":
            manifest["chunks"][1]["lba"] += 1
        elif fault == "fakezero":
            manifest["chunks"][0]["zero"] = True
        _rewrite(good, bad, {"manifest.json": json.dumps(manifest).encode()})
    with pytest.raises(BackupError, match=message):
        asyncio.run(verify_image(str(bad)))
    with pytest.raises(BackupError, match=message):
        _restore(bad, len(vol))  # the fill would show any write; the raise comes first
    asyncio.run(verify_image(str(good)))
