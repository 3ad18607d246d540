"""Shared by the differentially private statistics (see :mod:`consortia.stats.dp`)."""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from consortia.errors import AlgorithmError, ValidationError
from consortia.noise import MIN_SHARE_VARIANCE, sigma_for
from consortia.protocol import Algorithm, Contribution

__all__ = ["Z95", "DPAlgorithm", "carried_sd", "int_counts"]

Z95 = 1.959963984540054
"""The standard normal 97.5% quantile (95% two-sided intervals)."""


def _check_privacy(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(f"{param} must be a finite number")
    if value <= 0:
        raise ValidationError(f"{param} must be positive")
    if param == "delta" and value >= 1:
        raise ValidationError("delta must be below 1")
    return float(value)


def carried_sd(sigma: float, n_sites: float) -> float:
    """Standard deviation of the noise of a sum over ``n_sites`` shares of ``sigma``."""
    return math.sqrt(max(sigma**2, max(round(n_sites), 1) * MIN_SHARE_VARIANCE))


def int_counts(raw: np.ndarray) -> np.ndarray:
    """Noisy sums of integer arrays as integers (they hold integers up to the codec's rounding)."""
    return np.rint(np.asarray(raw, dtype=np.float64)).astype(np.int64)


@dataclass(frozen=True, kw_only=True)
class DPAlgorithm(Algorithm):
    """Shared by the DP statistics: ``epsilon``/``delta``, calibration, one round."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", _check_privacy(self.epsilon, "epsilon"))
        object.__setattr__(self, "delta", _check_privacy(self.delta, "delta"))

    @abc.abstractmethod
    def cell_sensitivity(self) -> dict[str, float]:
        """Array name -> how much one patient can move each of its cells."""

    @property
    @abc.abstractmethod
    def sensitivity(self) -> float:
        """Exact L2 sensitivity of the release with each array divided by its cell sensitivity."""

    @cached_property
    def sigma(self) -> float:
        """Noise scale of a cell of sensitivity 1: ``sigma_for(epsilon, delta, sensitivity)``."""
        return sigma_for(self.epsilon, self.delta, sensitivity=self.sensitivity)

    def noise(self) -> dict[str, float]:
        """Array name -> standard deviation of the noise its sum carries (before share floors)."""
        return {a: self.sigma * c for a, c in self.cell_sensitivity().items()}

    def privacy_cost(self) -> tuple[float, float]:
        """``(epsilon, delta)``: the study makes one release calibrated to exactly that."""
        return (self.epsilon, self.delta)

    def _contribution(
        self, arrays: dict[str, Any], *, cohort: int, rows: np.ndarray | None
    ) -> Contribution:
        arrays = {**arrays, "sites": [1.0]}
        return Contribution(arrays, cohort=cohort, rows=rows, noise=self.noise())

    def _check_step(self, step: str, expected: str) -> None:
        if step != expected:
            raise AlgorithmError(f"unknown step {step!r} for {self.name}")
