"""Fixed-point encoding of float arrays into the ring of integers modulo 2**64.

A float ``x`` is encoded as ``round(x * 2**frac_bits)`` in two's complement,
viewed as an unsigned 64-bit integer.  Sums of encodings are computed with
wrapping uint64 arithmetic, i.e. modulo 2**64, which is what pairwise masking
needs; decoding the sum gives the float sum.

Resolution and range
--------------------
* Each encoded value is exact to within half a unit of ``2**-frac_bits``
  (default ``frac_bits=24``: ``2**-25 ~= 3.0e-8``), so the decoded sum of ``n``
  sites is within ``n * 2**-(frac_bits + 1)`` of the float sum.
* To guarantee the *sum* cannot wrap around, each site checks that every value
  satisfies ``|x| <= 2**(63 - frac_bits) / n_parties`` (default, 10 sites:
  ``5.5e10``).  A value outside that range raises
  :class:`~consortia.errors.EncodingRangeError` at the site: nothing wraps
  silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from consortia.errors import EncodingRangeError, ValidationError
from consortia.precision import DEFAULT_FRAC_BITS

__all__ = ["FixedPoint"]


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point codec over Z/2**64.

    Parameters
    ----------
    frac_bits
        Number of fractional bits (resolution ``2**-frac_bits``).  Between 0 and 52.
    """

    frac_bits: int = DEFAULT_FRAC_BITS

    def __post_init__(self) -> None:
        if not isinstance(self.frac_bits, int) or not 0 <= self.frac_bits <= 52:
            raise ValidationError("FixedPoint.frac_bits must be an integer in [0, 52]")

    @property
    def scale(self) -> float:
        """The factor ``2**frac_bits`` applied before rounding."""
        return float(2**self.frac_bits)

    @property
    def resolution(self) -> float:
        """The spacing of representable values, ``2**-frac_bits``."""
        return 1.0 / self.scale

    def bound(self, n_parties: int) -> float:
        """Largest absolute value a site may encode when ``n_parties`` are summed."""
        if n_parties < 1:
            raise ValidationError("n_parties must be at least 1")
        return float((2**63 - 1) // n_parties) / self.scale

    def encode(self, x: np.ndarray, *, n_parties: int, name: str = "array") -> np.ndarray:
        """Encode a float array as uint64, refusing values the sum could overflow on.

        Parameters
        ----------
        x
            Finite float values.
        n_parties
            Number of arrays that will be summed (sets the range bound).
        name
            Name of the array, used in error messages.
        """
        arr = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise EncodingRangeError(f"array {name!r} contains NaN or infinite values")
        limit = self.bound(n_parties)
        if arr.size and float(np.max(np.abs(arr))) > limit:
            raise EncodingRangeError(
                f"array {name!r} has values beyond the fixed-point range |x| <= {limit:.3g} "
                f"({self.frac_bits} fractional bits, {n_parties} parties); rescale it"
            )
        scaled = np.rint(arr * self.scale)
        return scaled.astype(np.int64).view(np.uint64)

    def encode_into(
        self, x: np.ndarray, out: np.ndarray, *, limit: float, work: np.ndarray | None = None
    ) -> bool:
        """Encode float ``x`` into the uint64 array ``out`` (same length), in place.

        Returns False, leaving ``out`` partly written, if a value is NaN,
        infinite or beyond ``limit`` in absolute value (the caller raises a
        named error); this is the fast path used while masking.  ``work`` is an
        optional float64 scratch buffer at least as long as ``x``.
        """
        if x.size and not (float(x.max()) <= limit and float(x.min()) >= -limit):
            return False
        scaled = work[: x.size] if work is not None else np.empty(x.size)
        np.multiply(x, self.scale, out=scaled)
        np.rint(scaled, out=scaled)
        np.copyto(out.view(np.int64), scaled, casting="unsafe")
        return True

    def decode(self, v: np.ndarray) -> np.ndarray:
        """Decode a uint64 array (an encoding or a sum of encodings) to float64."""
        out = np.asarray(v, dtype=np.uint64).view(np.int64).astype(np.float64)
        out /= self.scale
        return out

    def decode_in_place(self, v: np.ndarray, *, chunk: int = 1 << 16) -> np.ndarray:
        """Decode a writable, contiguous uint64 array into its own memory; return the floats.

        The same values as :meth:`decode`, bit for bit, without a second payload-sized
        array: ``chunk`` words at a time are converted (through a chunk-sized
        temporary) and written back over their encodings.  ``v`` is consumed.
        """
        if v.dtype != np.uint64 or v.ndim != 1 or not v.flags.c_contiguous or not v.flags.writeable:
            raise ValidationError("decode_in_place needs a writable, contiguous 1-D uint64 array")
        ints, out = v.view(np.int64), v.view(np.float64)
        for start in range(0, v.size, chunk):
            part = slice(start, start + chunk)
            out[part] = ints[part].astype(np.float64)  # the chunk is copied before written
            out[part] /= self.scale
        return out
