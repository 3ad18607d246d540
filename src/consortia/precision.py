"""Two-word release of float sums: about 48 fractional bits over the 64-bit ring.

Part of the algorithm protocol (algorithms may import it; it knows nothing of the
privacy layer).  The runtime sums contributions as 64-bit fixed point with
``DEFAULT_FRAC_BITS`` fractional bits, i.e. to an absolute resolution of about
6e-8 per value and site.  Where an algorithm needs more (Newton steps near the
optimum, sums of many small terms), it releases each float ``x`` as two arrays
that are summed separately:

* ``hi = round(x * 2**24) / 2**24`` — exactly representable on the 24-bit grid;
* ``lo = (x - hi) * 2**24`` — the residual, magnified into ``[-0.5, 0.5]``.

``x == hi + lo * 2**-24`` exactly, both halves encode without further rounding of
``hi``, and the recombined sum carries about ``24 + 24 = 48`` fractional bits.
The cost is twice the payload for those arrays.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["DEFAULT_FRAC_BITS", "join", "split"]

DEFAULT_FRAC_BITS = 24
"""Fractional bits of the runtime's default fixed-point codec."""

_SCALE = float(2**DEFAULT_FRAC_BITS)


def split(name: str, values: np.ndarray | float) -> dict[str, np.ndarray]:
    """Release ``values`` as the arrays ``name`` (hi word) and ``name + "_lo"`` (lo word)."""
    arr = np.asarray(values, dtype=np.float64)
    hi = np.rint(arr * _SCALE) / _SCALE
    return {name: hi, f"{name}_lo": (arr - hi) * _SCALE}


def join(sums: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Recombine the sums of an array released with :func:`split`."""
    hi = np.asarray(sums[name], dtype=np.float64)
    return hi + np.asarray(sums[f"{name}_lo"], dtype=np.float64) / _SCALE
