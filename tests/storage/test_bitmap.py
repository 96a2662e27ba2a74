"""PersistentBitmap's scanning and bulk marking (storage/bitmap.py); its crash order is tested with RAID."""
from __future__ import annotations

from pathlib import Path

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
