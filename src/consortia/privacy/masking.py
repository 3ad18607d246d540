"""Pseudo-random mask streams for pairwise masking.

A mask is the AES-256-CTR keystream of a 32-byte key, read as little-endian
uint64 words.  Pairwise keys come from an X25519 shared secret expanded with
HKDF-SHA256, salted with the study, round and attempt, so masks are fresh for
every attempt of every round of every study.

:func:`apply_masks` adds (or subtracts) several streams into a uint64 vector in
cache-sized chunks, so the cost is dominated by the cipher itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["CHUNK_WORDS", "apply_masks", "derive_key", "stream"]

CHUNK_WORDS = 16_384  # 128 KiB per chunk: stays in L2 while the streams are added
_ZERO_NONCE = b"\x00" * 16
_HKDF_INFO = b"consortia/pairwise-mask/v1"


def derive_key(secret: bytes, context: bytes) -> bytes:
    """HKDF-SHA256 of ``secret`` salted with ``context`` into a 32-byte stream key."""
    salt = hashlib.sha256(context).digest()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_HKDF_INFO).derive(secret)


def _encryptor(key: bytes):
    # Each key is used for one stream only, so a zero counter block is safe.
    return Cipher(algorithms.AES(key), modes.CTR(_ZERO_NONCE)).encryptor()


def stream(key: bytes, n: int) -> np.ndarray:
    """The first ``n`` uint64 words of the keystream of ``key``."""
    out = np.zeros(n, dtype=np.uint64)
    apply_masks(out, [(key, 1)])
    return out


def apply_masks(
    vec: np.ndarray,
    keys: Sequence[tuple[bytes, int]],
    *,
    fill: Callable[[int, np.ndarray], None] | None = None,
) -> np.ndarray:
    """Add (+1) or subtract (-1) the keystream of each key into ``vec`` in place.

    Parameters
    ----------
    vec
        A contiguous uint64 vector; arithmetic wraps modulo 2**64.
    keys
        ``(key, sign)`` pairs; ``sign`` is +1 or -1.
    fill
        Optional ``fill(start, chunk)`` called on each chunk of ``vec`` before its
        masks are added, to write the chunk's content while it is in cache (the
        fixed-point encoding uses this to avoid extra passes over memory).
    """
    if vec.dtype != np.uint64 or not vec.flags.c_contiguous:
        raise TypeError("apply_masks needs a contiguous uint64 vector")
    encs = [(_encryptor(k), s) for k, s in keys]
    n = vec.size
    chunk = min(CHUNK_WORDS, max(n, 1))
    zeros = bytes(chunk * 8)
    raw = bytearray(chunk * 8 + 15)  # update_into needs block_size - 1 spare bytes
    buf = np.frombuffer(raw, dtype=np.uint64, count=chunk)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        target = vec[start : start + m]
        if fill is not None:
            fill(start, target)
        src = zeros if m == chunk else zeros[: m * 8]
        view = buf[:m]
        for enc, sign in encs:
            enc.update_into(src, raw)
            if sign > 0:
                np.add(target, view, out=target)
            else:
                np.subtract(target, view, out=target)
    return vec
