"""A differentially private Kaplan-Meier curve from distributed noise, in one round.

Each site counts, per group and per cell ``(g_{j-1}, g_j]`` of a public grid, its
events and its censorings (a patient followed beyond the grid's end is a
censoring in one extra cell: administrative censoring).  Every patient lies in
exactly one cell of the two histograms together, so the L2 sensitivity of the
release is 1, and the runtime adds each site's share of discrete Gaussian noise of
standard deviation ``sigma = sigma_for(epsilon, delta)`` to every cell of the sums
(:mod:`consortia.privacy.dp`).  Nothing exact about the counts is released, so no
small-cell rule applies: the noise protects every cell, whatever the grid.

Estimator (post-processing of the noisy sums only): noisy counts are clamped at 0;
the number at risk at a cell's start is the sum of the exits (events and
censorings) from that cell on; censorings within a cell count as at risk for half
of it (the actuarial, life-table convention: ``n' = n - c/2``); ``S(g_j) =
prod_{i <= j} (1 - d_i / n'_i)`` with each factor clipped to ``[0, 1]``.  The curve
is reported at the grid points while the noisy number at risk is at least
``min_at_risk`` (default: 10 times the noise standard deviation of that number at
risk, itself a sum of noisy cells), where the relative noise on ``d/n`` is small;
``noise_sd`` is the noise standard deviation of each released cell.

Compared with :class:`~consortia.survival.KaplanMeier` on a planned grid (exact
counts on bins chosen from a noisy plan), this release is noisy everywhere but
needs one round and any grid the researcher likes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, ValidationError
from consortia.protocol import Algorithm, Contribution, Coordination, Round, register
from consortia.results import Result
from consortia.survival._grid import grid_param
from consortia.survival._plan import PlanSettings, plan_contribution
from consortia.survival._validate import check_levels, level_codes, survival_columns

__all__ = ["DPKaplanMeier", "DPKaplanMeierResult"]


@dataclass(frozen=True)
class DPKaplanMeierResult(Result):
    """Noisy Kaplan-Meier curves (differentially private).

    Attributes
    ----------
    timeline
        The public grid points.
    survival
        Group label -> S at each grid point (NaN where the noisy number at risk is
        below ``min_at_risk``).
    events, at_risk
        Group label -> the noisy events per cell and noisy numbers at risk at each
        cell's start, after clamping at 0.
    noise_sd
        Standard deviation of the noise of each released cell.
    epsilon, delta
        The privacy cost of the release.
    """

    timeline: np.ndarray
    survival: dict[str, np.ndarray]
    events: dict[str, np.ndarray]
    at_risk: dict[str, np.ndarray]
    noise_sd: float
    epsilon: float
    delta: float

    def survival_at(self, label: str, times: Any) -> np.ndarray:
        """S of group ``label`` at ``times`` (the curve is a step function)."""
        t = np.atleast_1d(np.asarray(times, dtype=np.float64))
        pos = np.searchsorted(self.timeline, t, side="right") - 1
        s = np.concatenate(([1.0], self.survival[label]))
        return s[pos + 1]

    def statistics(self) -> dict[str, Any]:
        """Groups, grid points, and the noise and privacy cost of the release."""
        return {
            "groups": ", ".join(self.survival),
            "grid_points": int(self.timeline.size),
            "noise_sd": self.noise_sd,
            "epsilon": self.epsilon,
            "delta": self.delta,
        }

    def tables(self, *, full: bool = False) -> dict[str, pd.DataFrame]:
        """``survival``: per group and grid point, the noisy counts and S(t)."""
        frames = [
            pd.DataFrame(
                {
                    "group": label,
                    "time": self.timeline,
                    "at_risk": self.at_risk[label],
                    "events": self.events[label],
                    "survival": self.survival[label],
                }
            )
            for label in self.survival
        ]
        table = pd.concat(frames, ignore_index=True).set_index(["group", "time"])
        return {"survival": table}


@register
@dataclass(frozen=True, kw_only=True)
class DPKaplanMeier(Algorithm):
    """Kaplan-Meier curves with distributed differential-privacy noise (one round).

    Parameters
    ----------
    time, event
        Follow-up time and event indicator (1 event, 0 censored) columns.
    time_grid
        Public grid points (increasing, positive); times beyond the last one are
        censored there.
    group, groups
        Optional group column and its declared levels (one curve each).
    epsilon, delta
        Differential privacy of the release (its privacy cost).
    min_at_risk
        Report S only while the noisy number at risk is at least this many
        (default: 10 times the noise standard deviation of that number).
    """

    name = "survival.dp_kaplan_meier"
    time: str
    event: str
    time_grid: tuple[float, ...]
    epsilon: float
    delta: float
    group: str | None = None
    groups: tuple[Any, ...] | None = None
    min_at_risk: float | None = None

    def __post_init__(self) -> None:
        for label in ("epsilon", "delta"):
            value = getattr(self, label)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValidationError(f"{label} must be a positive number")
            if not math.isfinite(value) or value <= 0:
                raise ValidationError(f"{label} must be a positive finite number")
        if self.delta >= 1e-2:
            raise ValidationError("delta must be below 0.01 (typically 1e-6 or smaller)")
        grid = grid_param(self.time_grid)
        if grid[0] <= 0:
            raise ValidationError("time_grid must hold positive times")
        object.__setattr__(self, "time_grid", grid)
        if self.group is None:
            if self.groups is not None:
                raise ValidationError("groups are declared but no group column is given")
        else:
            object.__setattr__(self, "groups", check_levels(self.groups, name="groups"))
        if self.min_at_risk is not None and (
            isinstance(self.min_at_risk, bool)
            or not isinstance(self.min_at_risk, (int, float))
            or not self.min_at_risk >= 0
        ):
            raise ValidationError("min_at_risk must be a number >= 0")

    @property
    def _settings(self) -> PlanSettings:
        return PlanSettings(
            horizon=self.time_grid[-1],
            cells=len(self.time_grid),
            epsilon=float(self.epsilon),
            delta=float(self.delta),
            k=1,
            edges=self.time_grid,
        )

    @property
    def _labels(self) -> tuple[str, ...]:
        return ("all",) if self.groups is None else tuple(str(g) for g in self.groups)

    def privacy_cost(self) -> tuple[float, float]:
        """``(epsilon, delta)``."""
        return (float(self.epsilon), float(self.delta))

    def coordinate(self) -> Coordination:
        sums = yield Round("histograms")
        settings = self._settings
        labels = self._labels
        f = settings.cells
        n_sites = max(round(float(np.asarray(sums["plan_sites"]).ravel()[0])), 1)
        sd = math.sqrt(max(settings.sigma**2, float(n_sites)))  # each share floored at 1
        # the noisy number at risk at cell j sums 2 (f - j) + 1 noisy cells
        at_risk_sd = sd * np.sqrt(2.0 * (f - np.arange(f)) + 1.0)
        floor = 10 * at_risk_sd if self.min_at_risk is None else float(self.min_at_risk)
        events = np.clip(np.asarray(sums["plan_events"]).reshape(len(labels), f), 0, None)
        cens = np.clip(np.asarray(sums["plan_censored"]).reshape(len(labels), f + 1), 0, None)
        out_s, out_d, out_n = {}, {}, {}
        for i, label in enumerate(labels):
            exits = cens[i].copy()
            exits[:f] += events[i]
            at_risk = np.cumsum(exits[::-1])[::-1][:f]  # at the start of each cell
            n_eff = at_risk - cens[i, :f] / 2.0
            with np.errstate(divide="ignore", invalid="ignore"):
                q = np.where(n_eff > 0, events[i] / n_eff, 1.0)
            s = np.cumprod(1.0 - np.clip(q, 0.0, 1.0))
            s[at_risk < floor] = np.nan
            out_s[label], out_d[label], out_n[label] = s, events[i], at_risk
        if all(np.isnan(s).all() for s in out_s.values()):
            raise AlgorithmError(
                "too few patients at risk for the noise at every grid point: raise epsilon, "
                "or coarsen the grid"
            )
        return DPKaplanMeierResult(
            timeline=np.asarray(self.time_grid),
            survival=out_s,
            events=out_d,
            at_risk=out_n,
            noise_sd=sd,
            epsilon=float(self.epsilon),
            delta=float(self.delta),
        )

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        if step != "histograms":
            raise AlgorithmError(f"unknown step {step!r} for {self.name}")
        frame = data.frame
        t, e = survival_columns(frame, self.time, self.event)
        if self.group is None:
            codes, n_codes = None, 1
        else:
            assert self.groups is not None
            codes, n_codes = level_codes(frame, self.group, self.groups), len(self.groups)
        return plan_contribution(t, e, codes, n_codes, self._settings)
