"""The public parameters of a planned grid: validation and the thresholds of the rule.

See :mod:`consortia.survival._plan` for the method.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
from scipy.stats import norm

from consortia.errors import PolicyError, ValidationError

__all__ = [
    "CELL_CONFIDENCE",
    "MAX_PLAN_CELLS",
    "Z_CELL",
    "PlanParams",
    "PlanSettings",
    "check_plan_params",
    "plan_settings",
]

CELL_CONFIDENCE = 0.999
"""Per released cell: probability that the plan's noisy test implies >= k events."""

Z_CELL = float(norm.ppf(CELL_CONFIDENCE))
MAX_PLAN_CELLS = 10_000


@dataclass(frozen=True)
class PlanSettings:
    """The public parameters of a planned grid (all from the study's parameters)."""

    horizon: float
    cells: int
    epsilon: float
    delta: float
    k: int
    n_sites: int = 1
    edges: tuple[float, ...] | None = None

    @cached_property
    def fine_edges(self) -> np.ndarray:
        """``0 = f_0 < f_1 < ... < f_cells = horizon`` (equal cells unless ``edges``)."""
        if self.edges is not None:
            return np.array((0.0, *self.edges), dtype=np.float64)
        return np.linspace(0.0, self.horizon, self.cells + 1)

    @cached_property
    def sigma(self) -> float:
        """Noise standard deviation of every cell of the summed histograms."""
        from consortia.noise import sigma_for

        return sigma_for(self.epsilon, self.delta, sensitivity=1.0)

    @property
    def noise_sd(self) -> float:
        """The standard deviation of a cell's noise with ``n_sites`` participants.

        ``sigma``, or more when each site's share is floored at
        :data:`~consortia.privacy.dp.MIN_SHARE_VARIANCE` (large ``plan_epsilon``,
        many sites): the rule must use the noise actually added.
        """
        from consortia.noise import MIN_SHARE_VARIANCE

        return math.sqrt(max(self.sigma**2, self.n_sites * MIN_SHARE_VARIANCE))

    def bin_threshold(self, m: int | np.ndarray) -> np.ndarray:
        """Noisy events a bin of ``m`` fine cells needs."""
        return self.k + Z_CELL * self.noise_sd * np.sqrt(m)

    def end_threshold(self, n_cells: int | np.ndarray) -> np.ndarray:
        """Noisy patients after a fine edge the grid's end needs, summed over ``n_cells`` cells."""
        return self.k + Z_CELL * self.noise_sd * np.sqrt(n_cells)

    def for_sites(self, sums: Mapping[str, np.ndarray]) -> PlanSettings:
        """These settings for the number of sites counted in ``plan_sites``."""
        try:
            n = round(float(np.asarray(sums["plan_sites"]).ravel()[0]))
        except (KeyError, IndexError, TypeError, ValueError):
            raise _refuse("the planned grid's number of sites is missing") from None
        if n < 1:
            raise _refuse("the planned grid's number of sites is not positive")
        return dataclasses.replace(self, n_sites=n)


def check_plan_params(
    *,
    time_grid: object,
    horizon: object,
    plan_cells: object,
    plan_epsilon: object,
    plan_delta: object,
    min_cell: object,
) -> PlanSettings | None:
    """Validate the planned-grid parameters; ``None`` when an explicit grid is used.

    Raises
    ------
    ValidationError
        Naming the parameter.
    """
    if time_grid is not None:
        if horizon is not None:
            raise ValidationError(
                "horizon plans a grid: give either time_grid (an explicit grid) or horizon"
            )
        return None
    if horizon is None:
        raise ValidationError(
            "time_grid is required, or horizon (the public end of follow-up) to plan a grid "
            "from differentially private counts"
        )
    if isinstance(horizon, bool) or not isinstance(horizon, (int, float)):
        raise ValidationError("horizon must be a positive number")
    if not math.isfinite(horizon) or horizon <= 0:
        raise ValidationError("horizon must be a positive finite number")
    edges = None
    if isinstance(plan_cells, (tuple, list)):
        edges = _check_edges(plan_cells, float(horizon))
        plan_cells = len(edges)
    if isinstance(plan_cells, bool) or not isinstance(plan_cells, int):
        raise ValidationError(
            "plan_cells must be a positive integer (equal cells) or a sequence of fine edges"
        )
    if not 1 <= plan_cells <= MAX_PLAN_CELLS:
        raise ValidationError(f"plan_cells must lie between 1 and {MAX_PLAN_CELLS}")
    for label, value in (("plan_epsilon", plan_epsilon), ("plan_delta", plan_delta)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError(f"{label} must be a positive number")
        if not math.isfinite(value) or value <= 0:
            raise ValidationError(f"{label} must be a positive finite number")
    if plan_delta >= 1e-2:  # type: ignore[operator]
        raise ValidationError("plan_delta must be below 0.01 (typically 1e-6 or smaller)")
    if isinstance(min_cell, bool) or not isinstance(min_cell, int) or min_cell < 1:
        raise ValidationError("min_cell must be a positive integer")
    return PlanSettings(
        horizon=float(horizon),
        cells=plan_cells,
        epsilon=float(plan_epsilon),  # type: ignore[arg-type]
        delta=float(plan_delta),  # type: ignore[arg-type]
        k=min_cell,
        edges=edges,
    )


class PlanParams(Protocol):
    """The planned-grid parameters of a survival algorithm (fields of its dataclass)."""

    @property
    def time_grid(self) -> tuple[float, ...] | None: ...
    @property
    def horizon(self) -> float | None: ...
    @property
    def plan_cells(self) -> int | tuple[float, ...]: ...
    @property
    def plan_epsilon(self) -> float: ...
    @property
    def plan_delta(self) -> float: ...
    @property
    def min_cell(self) -> int: ...


def plan_settings(params: PlanParams) -> PlanSettings | None:
    """:func:`check_plan_params` on an algorithm's planned-grid parameters."""
    return check_plan_params(
        time_grid=params.time_grid,
        horizon=params.horizon,
        plan_cells=params.plan_cells,
        plan_epsilon=params.plan_epsilon,
        plan_delta=params.plan_delta,
        min_cell=params.min_cell,
    )


def _check_edges(value: tuple | list, horizon: float) -> tuple[float, ...]:
    """Fine edges given explicitly: positive, strictly increasing, the last one the horizon.

    Typically the grid an earlier planned study released on the same cohort, so that a
    second plan is a coarsening of it (the node's grid-differencing rule allows that).
    """
    try:
        edges = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValidationError("plan_cells (fine edges) must be numbers") from None
    if edges.ndim != 1 or edges.size == 0 or not np.isfinite(edges).all():
        raise ValidationError("plan_cells (fine edges) must be a non-empty list of finite numbers")
    if edges[0] <= 0 or (np.diff(edges) <= 0).any():
        raise ValidationError("plan_cells (fine edges) must be positive and strictly increasing")
    if edges[-1] != horizon:
        raise ValidationError("plan_cells (fine edges) must end at horizon")
    return tuple(float(x) for x in edges)


def _refuse(msg: str) -> PolicyError:
    return PolicyError("planned_grid", msg)
