"""PersistentBitmap's scanning and bulk marking (storage/bitmap.py); its crash order is tested with RAID."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from hypothesis import given, strategies as st

from sanlab.storage.bitmap import PersistentBitmap


@given(st.integers(1, 200), st.sets(st.integers(0, 199)), st.integers(0, 210))
def test_first_set_finds_the_next_set_unit(size: int, units: set[int], start: int) -> None:
    bm = PersistentBitmap(None, size)
    for u in units:
        if u < size:
            bm.mark(u)
    want = min((u for u in units if start <= u < size), default=None)
    assert bm.first_set(start) == want


def test_mark_all_sets_exactly_size_bits_and_reaches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bits"
    bm = PersistentBitmap(str(path), 1000)
    bm.mark_all()
    assert bm.count() == 1000 and bm.all_set() and bm.pending
    bm.clear(999)
    bm.flush()
    bm.close()
    again = PersistentBitmap(str(path), 1000)
    assert again.count() == 999 and not again.has(999) and again.has(998)
    assert path.stat().st_size == 125
    again.close()


def gated_fdatasync(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """os.fdatasync made to wait (in its thread) until the returned gate is set; the other event
    says a sync has begun."""
    gate, in_sync = threading.Event(), threading.Event()
    real = os.fdatasync

    def slow_sync(fd: int) -> None:
        in_sync.set()
        assert gate.wait(10)
        real(fd)
    monkeypatch.setattr(os, "fdatasync", slow_sync)
    return gate, in_sync


def test_a_flush_syncing_in_a_thread_blocks_neither_marks_nor_the_order(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """While one flush waits in fdatasync (a worker thread), mark and clear go on at once (the event
    loop calls them), ``pending`` stays True, and a second flush returns only after the first synced,
    even when it finds nothing left to write: everything changed before a flush began is durable
    when it returns."""
    path = tmp_path / "bits"
    bm = PersistentBitmap(str(path), 64)
    real = os.fdatasync
    gate, in_sync = gated_fdatasync(monkeypatch)
    bm.mark(1)
    first = threading.Thread(target=bm.flush)
    first.start()
    assert in_sync.wait(10)
    began = time.monotonic()
    bm.mark(2)
    bm.clear(1)
    bm.mark(1)
    assert time.monotonic() - began < 1.0  # did not wait for the sync
    assert bm.pending
    second = threading.Thread(target=bm.flush)
    second.start()
    second.join(0.3)
    assert second.is_alive()  # bit 2 is not durable before the first flush's sync ends
    monkeypatch.setattr(os, "fdatasync", real)
    gate.set()
    first.join(10)
    second.join(10)
    assert not first.is_alive() and not second.is_alive() and not bm.pending
    assert path.read_bytes()[0] == 0b110
    third = threading.Thread(target=bm.flush)
    third.start()
    third.join(10)
    bm.close()
    assert PersistentBitmap(str(path), 64).set_units() == [1, 2]


def test_durable_is_per_byte_and_false_until_the_flush_carrying_it_has_synced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``durable(u)``: a unit whose byte waits for a flush, or is in the one syncing now, is not
    durable; units of other bytes are, whatever else is pending (a writer to a settled track need
    not wait for another track's flush)."""
    bm = PersistentBitmap(str(tmp_path / "bits"), 64)
    assert bm.durable(3)
    bm.mark(3)
    assert not bm.durable(3) and not bm.durable(5)  # same byte
    assert bm.durable(8) and bm.durable(63)  # other bytes
    real = os.fdatasync
    gate, in_sync = gated_fdatasync(monkeypatch)
    flushing = threading.Thread(target=bm.flush)
    flushing.start()
    assert in_sync.wait(10)
    assert not bm.durable(3)  # written, not synced yet
    bm.clear(20)  # a clear bit cleared: no change
    assert bm.durable(20)
    gate.set()
    flushing.join(10)
    assert bm.durable(3) and bm.has(3)
    monkeypatch.setattr(os, "fdatasync", real)
    bm.mark(20)
    assert not bm.durable(20) and bm.durable(3)
    bm.close()


def test_durable_units_is_durable_of_every_unit(tmp_path: Path) -> None:
    bm = PersistentBitmap(str(tmp_path / "bits"), 64)
    assert bm.durable_units(0, 64)
    bm.mark(17)
    for start, stop in ((0, 16), (16, 17), (17, 18), (23, 24), (24, 64), (0, 64), (10, 20)):
        assert bm.durable_units(start, stop) == all(bm.durable(u) for u in range(start, stop)), (start, stop)
    bm.flush()
    assert bm.durable_units(0, 64)
    bm.close()
