"""bench/crypt's config (the run itself is a benchmark, not a test): two same-size LUNs, one encrypted."""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from crypt_bench import config  # noqa: E402

from sanlab.tools.config import parse_config  # noqa: E402


def test_config_is_valid(tmp_path: Path) -> None:
    cfg = parse_config(tomllib.loads(config(3260, tmp_path, 64 << 20)), "bench")
    clear, enc = cfg.targets[0].luns
    assert (clear.size, clear.block_size, clear.encryption) == (64 << 20, 512, None)
    assert (enc.size, enc.block_size) == (64 << 20, 512)
    assert enc.encryption is not None and enc.encryption.key_file == tmp_path / "bench.key"
