"""Numerical helpers shared by the federated regressions (and descriptive moments).

Two-word ("hi/lo") release of float sums
----------------------------------------
Sums travel in 64-bit fixed point with 24 fractional bits by default, i.e. an
absolute resolution of about ``6e-8`` per value and site.  A float ``x`` that
needs more resolution is released as two arrays:

* ``hi = rint(x * 2**24) / 2**24``: exactly representable by the default codec,
  so it is encoded and summed *without* rounding error;
* ``lo = (x - hi) * 2**24``: the remainder, ``|lo| <= 1/2``, scaled up by
  ``2**24`` and encoded at the codec's resolution.

The coordinator reassembles ``sum(hi) + sum(lo) * 2**-24``, whose absolute error
is at most ``n_sites * 2**-49`` (about ``2e-15`` per site) instead of
``n_sites * 2**-25``.  Nothing more is disclosed than the sum itself (both
halves are securely aggregated like any other array).  :func:`split` and
:func:`join` are those of :mod:`consortia.precision`, re-exported here.  Under a coarser codec
(``frac_bits < 24``) the ``hi`` half is rounded again and the result is as precise
as that codec allows, never worse than a plain release.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError
from consortia.precision import join, split

T = TypeVar("T")

__all__ = ["Standardizer", "check_rank", "join", "moments", "site_rows", "split"]


def site_rows(algo: object, data: Dataset, build: Callable[[Dataset], T]) -> T:
    """Validate a site's rows once per algorithm instance and dataset, then reuse them.

    A runtime builds one algorithm instance per study at each site
    (:class:`~consortia.runtime.SiteWorker`), so this reads and validates the data
    once per study instead of once per round.  The data must not change during a
    study (it could not give a consistent result anyway).  The cache holds the
    frame itself, so identity (not a recycled ``id``) is what is compared.
    """
    cached = algo.__dict__.get("_site_rows")
    if cached is not None and cached[0] is data.frame:
        return cached[1]
    rows = build(data)
    object.__setattr__(algo, "_site_rows", (data.frame, rows))
    return rows


@dataclass(frozen=True)
class Standardizer:
    """Public centre and scale of columns, computed from pooled first moments.

    Attributes
    ----------
    centre
        Pooled mean of each column.
    scale
        Pooled standard deviation (ddof=0) of each column, 1 where it is zero.
    """

    centre: np.ndarray
    scale: np.ndarray

    @classmethod
    def from_moments(cls, n: float, total: np.ndarray, total_sq: np.ndarray) -> Standardizer:
        """Build from ``n``, ``sum(x)`` and ``sum(x**2)`` (only a rough scale is needed)."""
        centre = total / n
        var = np.maximum(total_sq / n - centre**2, 0.0)
        scale = np.sqrt(var)
        # A (near-)constant column keeps scale 1: the rank check catches it later.
        tiny = scale <= 1e-12 * np.maximum(np.abs(centre), 1.0)
        scale = np.where(tiny, 1.0, scale)
        return cls(centre=centre, scale=scale)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Centre and scale the columns of ``x``."""
        return (x - self.centre) / self.scale

    def design_map(self) -> np.ndarray:
        """``M`` with ``[1, apply(x)] == [1, x] @ M``.

        It maps a Gram matrix of ``[1, x]`` to that of the standardised design
        (``M.T @ G @ M``) and standardised coefficients back to the original
        scale (``M @ beta``, ``M @ cov @ M.T``).
        """
        k = self.centre.size + 1
        m = np.zeros((k, k))
        m[0, 0] = 1.0
        m[0, 1:] = -self.centre / self.scale
        m[1:, 1:] = np.diag(1.0 / self.scale)
        return m


def moments(x: np.ndarray) -> dict[str, np.ndarray]:
    """A site's first-moment contribution: ``n``, ``sum(x)`` and ``sum(x**2)`` (two-word)."""
    return {
        "n": np.array([float(len(x))]),
        **split("total", x.sum(axis=0)),
        **split("total_sq", (x * x).sum(axis=0)),
    }


def check_rank(gram: np.ndarray, names: Sequence[str], *, what: str) -> None:
    """Raise :class:`AlgorithmError` if the (standardised) Gram matrix is singular."""
    d = np.sqrt(np.clip(np.diag(gram), 1e-300, None))
    corr = gram / np.outer(d, d)
    eig = np.linalg.eigvalsh(corr)
    if not np.all(np.isfinite(eig)) or eig[0] <= 1e-10 * max(eig[-1], 1.0):
        # Name the columns involved in the smallest eigenvector, not any value.
        _, vecs = np.linalg.eigh(corr)
        v = np.abs(vecs[:, 0])
        involved = [names[i] for i in np.argsort(-v) if v[i] > 0.1][:6]
        raise AlgorithmError(
            f"{what}: the design matrix is singular or nearly so (collinear or constant "
            f"columns among {involved}); drop columns or add a ridge penalty"
        )
