"""Arithmetic in GF(2⁸) for RAID 6 (polynomial 0x11D, generator g = 2).

Q = Σ gⁱ·Dᵢ is the Reed-Solomon syndrome that lets any two lost chunks of a stripe be solved for
(H. Peter Anvin, "The mathematics of RAID-6").  Everything works on whole numpy byte arrays with
table lookups: no Python loop over bytes.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

Bytes = npt.NDArray[np.uint8]
"""A run of bytes as numpy sees them."""


def _gf_tables() -> tuple[Bytes, Bytes]:
    exp = np.zeros(512, dtype=np.uint8)
    log = np.zeros(256, dtype=np.uint8)
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= 0x11D
    exp[255:510] = exp[0:255]
    return exp, log


GF_EXP, GF_LOG = _gf_tables()
"""gⁱ for i in 0..509 (the second half repeats the first) and log_g x for x in 1..255 (GF_LOG[0] is
meaningless: 0 has no logarithm)."""


def gf_mul(data: Bytes, c: int) -> Bytes:
    """Multiply every byte of ``data`` by the constant ``c`` in GF(2⁸)."""
    if c == 0:
        return np.zeros_like(data)
    if c == 1:
        return data.copy()
    out = GF_EXP[(GF_LOG[data].astype(np.uint16) + int(GF_LOG[c])) % 255]
    out[data == 0] = 0
    return out.astype(np.uint8)


def syndromes(chunks: list[Bytes], with_q: bool) -> tuple[Bytes, Bytes | None]:
    """P = ⊕ Dᵢ and (RAID 6) Q = ⊕ gⁱ·Dᵢ of a stripe's data chunks."""
    p = np.zeros_like(chunks[0])
    q = np.zeros_like(chunks[0]) if with_q else None
    for i, c in enumerate(chunks):
        p ^= c
        if q is not None:
            q ^= gf_mul(c, gf_pow2(i))
    return p, q


def gf_pow2(i: int) -> int:
    """gⁱ with g = 2."""
    return int(GF_EXP[i % 255])


def gf_inv(c: int) -> int:
    """c⁻¹ in GF(2⁸); ``c`` must not be 0, which has no inverse (the tables would answer 1)."""
    return int(GF_EXP[(255 - int(GF_LOG[c])) % 255])


def gf_mul_scalar(a: int, b: int) -> int:
    """a·b in GF(2⁸) for two single byte values (the coefficients of the two-erasure solution)."""
    if a == 0 or b == 0:
        return 0
    return int(GF_EXP[(int(GF_LOG[a]) + int(GF_LOG[b])) % 255])
