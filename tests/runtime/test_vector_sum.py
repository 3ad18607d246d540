"""The benchmark-only vector sum: the vector each site contributes."""

from __future__ import annotations

import numpy as np

from consortia.testing import site_vector


def test_site_vector_is_its_formula_bit_for_bit():
    for n_rows, r, size in ((20, 0, 5000), (7, 3, 12345), (123, 999, 1)):
        k = np.arange(size, dtype=np.float64)
        expected = n_rows + (r + 1) * np.mod(k, 1000.0) / 1000.0
        got = site_vector(n_rows, r, size)
        assert got.dtype == np.float64 and got.tobytes() == expected.tobytes()
