"""Shamir secret sharing of short secrets over the prime field of p = 2**521 - 1.

A secret of up to 64 bytes is read as one field element ``s`` (big-endian). A
random polynomial ``f`` of degree ``t - 1`` with ``f(0) = s`` is drawn (its other
coefficients uniform in the field, from :mod:`secrets`), and share ``i`` is
``(i, f(i))`` for ``i = 1..n``.  Any ``t`` shares determine ``f`` and so ``s``
(Lagrange interpolation at 0); any ``t - 1`` shares are consistent with every
possible secret, each with the same number of polynomials, so they reveal nothing
about it.

Reconstruction refuses malformed input with a typed error: a share index given
twice, shares that do not lie on one polynomial of degree ``t - 1`` (checked
whenever more than ``t`` shares are given), fewer than ``t`` shares, and a
reconstructed value that does not fit the secret's size.  It does not
authenticate shares: callers that receive shares over a network encrypt them
with an AEAD (see :mod:`consortia.privacy.recovery`) and check the result
against a commitment.

Pure: no I/O.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from consortia.errors import SecretSharingError

__all__ = ["MAX_SHARES", "PRIME", "SHARE_BYTES", "Share", "combine", "split"]

PRIME = 2**521 - 1
"""The field's modulus, a Mersenne prime."""

_VALUE_BYTES = (PRIME.bit_length() + 7) // 8  # 66
MAX_SHARES = 2**16 - 1
SHARE_BYTES = 2 + _VALUE_BYTES
"""Size of :meth:`Share.to_bytes`: a 2-byte index and a 66-byte field element."""
_MAX_SECRET_BYTES = 64


@dataclass(frozen=True)
class Share:
    """One share: the polynomial's value at ``index`` (1..65535).

    Attributes
    ----------
    index
        The evaluation point, never 0.
    value
        ``f(index)`` in the field.
    """

    index: int
    value: int

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int):
            raise SecretSharingError("a share index must be an integer")
        if not 1 <= self.index <= MAX_SHARES:
            raise SecretSharingError(f"a share index must be in 1..{MAX_SHARES}")
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise SecretSharingError("a share value must be an integer")
        if not 0 <= self.value < PRIME:
            raise SecretSharingError("a share value must be an element of the field")

    def to_bytes(self) -> bytes:
        """Fixed-size form: 2-byte big-endian index, then the 66-byte value."""
        return self.index.to_bytes(2, "big") + self.value.to_bytes(_VALUE_BYTES, "big")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Share:
        """Inverse of :meth:`to_bytes`, for untrusted input."""
        if not isinstance(raw, bytes | bytearray) or len(raw) != SHARE_BYTES:
            raise SecretSharingError(f"a share is exactly {SHARE_BYTES} bytes")
        return cls(int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big"))


def _check_params(threshold: int, n: int) -> None:
    for name, v in (("threshold", threshold), ("shares", n)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise SecretSharingError(f"{name} must be an integer")
    if not 1 <= threshold <= n <= MAX_SHARES:
        raise SecretSharingError(
            f"need 1 <= threshold <= shares <= {MAX_SHARES} (threshold={threshold}, shares={n})"
        )


def _evaluate(coeffs: Sequence[int], x: int) -> int:
    acc = 0
    for c in reversed(coeffs):  # Horner
        acc = (acc * x + c) % PRIME
    return acc


def split(secret: bytes, *, threshold: int, shares: int) -> list[Share]:
    """Split ``secret`` into ``shares`` shares (indices 1..shares), any ``threshold`` of
    which reconstruct it.

    Parameters
    ----------
    secret
        At most 64 bytes (a 32-byte seed in practice).
    threshold
        How many shares reconstruct the secret (1..shares).
    shares
        How many shares to make (at most 65535).

    Raises
    ------
    SecretSharingError
        On a secret that is not 1-64 bytes or parameters out of range.
    """
    if not isinstance(secret, bytes | bytearray) or not 0 < len(secret) <= _MAX_SECRET_BYTES:
        raise SecretSharingError(f"a secret is 1-{_MAX_SECRET_BYTES} bytes")
    _check_params(threshold, shares)
    coeffs = [int.from_bytes(secret, "big")]
    coeffs += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return [Share(i, _evaluate(coeffs, i)) for i in range(1, shares + 1)]


def _interpolate(points: Sequence[Share], x: int) -> int:
    """The value at ``x`` of the polynomial through ``points`` (distinct indices)."""
    total = 0
    for j, pj in enumerate(points):
        num, den = 1, 1
        for m, pm in enumerate(points):
            if m != j:
                num = num * (x - pm.index) % PRIME
                den = den * (pj.index - pm.index) % PRIME
        total = (total + pj.value * num * pow(den, -1, PRIME)) % PRIME
    return total


def combine(shares: Sequence[Share], *, threshold: int, size: int = 32) -> bytes:
    """Reconstruct a ``size``-byte secret from at least ``threshold`` shares.

    Raises
    ------
    SecretSharingError
        Fewer than ``threshold`` shares, an index given twice, shares that do not lie
        on one polynomial of degree ``threshold - 1`` (detectable only when more than
        ``threshold`` are given), or a result that does not fit in ``size`` bytes.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise SecretSharingError("threshold must be a positive integer")
    if not 0 < size <= _MAX_SECRET_BYTES:
        raise SecretSharingError(f"a secret is 1-{_MAX_SECRET_BYTES} bytes")
    points = list(shares)
    if any(not isinstance(p, Share) for p in points):
        raise SecretSharingError("combine takes Share objects")
    if len({p.index for p in points}) != len(points):
        raise SecretSharingError("a share index is given twice")
    if len(points) < threshold:
        raise SecretSharingError(
            f"{len(points)} shares cannot reconstruct a secret shared with threshold {threshold}"
        )
    base = points[:threshold]
    for extra in points[threshold:]:
        if _interpolate(base, extra.index) != extra.value:
            raise SecretSharingError(
                "the shares are inconsistent: they do not lie on one polynomial of degree "
                f"threshold - 1 = {threshold - 1}"
            )
    secret = _interpolate(base, 0)
    if secret.bit_length() > 8 * size:
        raise SecretSharingError(
            f"the shares reconstruct a value that does not fit in {size} bytes: "
            "wrong shares or a wrong threshold"
        )
    return secret.to_bytes(size, "big")
