"""A trivial algorithm for tests and benchmarks: each site contributes a deterministic vector.

Not a statistic: it lives outside ``consortia.stats`` and is named ``testing.vector_sum``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from consortia.data.dataset import Dataset
from consortia.errors import ValidationError
from consortia.protocol import Algorithm, Contribution, Coordination, Round, register
from consortia.results import Result

__all__ = ["MAX_ROUNDS", "MAX_SIZE", "VectorSum", "VectorSumResult", "site_vector"]

MAX_SIZE = 2**25
"""Longest vector (floats per site and round): 256 MiB of float64, the default payload limit."""

MAX_ROUNDS = 10**6
"""Most rounds of one study."""


def site_vector(n_rows: int, round_index: int, size: int) -> np.ndarray:
    """The vector a site with ``n_rows`` rows contributes at ``round_index``.

    ``v[k] = n_rows + (round_index + 1) * (k mod 1000) / 1000``: exact in the default
    fixed point only up to its resolution, deterministic, and different per site.
    """
    v = np.arange(size, dtype=np.float64)  # one payload-sized array, computed in place
    np.mod(v, 1000.0, out=v)
    v *= round_index + 1  # the same operations in the same order as the formula above
    v /= 1000.0
    v += n_rows
    return v


@dataclass(frozen=True)
class VectorSumResult(Result):
    """Result of :class:`VectorSum`.

    Attributes
    ----------
    rounds
        Number of rounds run.
    size
        Length of the vectors.
    last
        The sum over sites of the last round's vectors.
    checksums
        For each round, the total of its summed vector.
    """

    rounds: int
    size: int
    last: np.ndarray
    checksums: np.ndarray


@register
@dataclass(frozen=True, kw_only=True)
class VectorSum(Algorithm):
    """Sum deterministic vectors of ``size`` floats over the sites, ``rounds`` times.

    Each round broadcasts its index; each site contributes
    :func:`site_vector` of its row count.  Memory held by the coordinator does
    not grow with the number of rounds (only the last sum is kept).

    Parameters
    ----------
    size
        Number of floats per site and round (1 to :data:`MAX_SIZE`).
    rounds
        Number of rounds (1 to :data:`MAX_ROUNDS`).
    """

    name = "testing.vector_sum"
    size: int = 10
    rounds: int = 1

    def __post_init__(self) -> None:
        for field, most in (("size", MAX_SIZE), ("rounds", MAX_ROUNDS)):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= most:
                raise ValidationError(f"VectorSum.{field} must be an integer in [1, {most}]")

    def coordinate(self) -> Coordination:
        last = np.zeros(self.size)
        checksums = np.zeros(self.rounds)
        for r in range(self.rounds):
            sums = yield Round("vector", {"round": [float(r)]})
            last = np.asarray(sums["v"], dtype=np.float64)  # the sums are not reused: no copy
            checksums[r] = float(np.sum(last))
        return VectorSumResult(rounds=self.rounds, size=self.size, last=last, checksums=checksums)

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        r = int(np.asarray(public["round"]).ravel()[0])
        n = len(data.frame)
        return Contribution({"v": site_vector(n, r, self.size)}, cohort=n)
