"""Federated Harrell's concordance index of a linear risk score, per site and pooled.

The risk score is ``x @ coefficients`` over named covariate columns with public
coefficients (for example a fitted Cox model's); a higher score means a higher
risk, i.e. a shorter survival.  Pairs follow lifelines' ``concordance_index``
(called with ``-risk``): a pair is comparable when the earlier time is an event
(a censored time equal to an event time counts as later); it is concordant when
the earlier failure has the higher score; tied scores count one half.

How the pooled index is computed from sums (three rounds)
--------------------------------------------------------
1. Each site releases the sums ``n, sum(r), sum(r^2)`` of its risk scores and
   its event counts per point of the public time grid (times rounded up to the
   grid, a declared count array).
2. The hub broadcasts the grid points that carry a pooled event (the *event
   bins*) and ``score_bins`` score bins spanning ``mean +- score_range * sd``
   of the pooled risk.  Each site maps an event to its event bin and a censored
   time to the last event bin at or before it (earlier ones are never
   comparable and are dropped), then releases, per (event bin, score bin), its
   counts of events and of censored patients (declared count arrays).  It also
   releases its own *exact* within-site pair counts and the same counts
   computed on its own cells, so that only **cross-site** pairs are
   approximated.
3. The hub forms the pooled pair counts.  With the time mapping above the time
   order of every pair is exact (for times on the grid); the only
   approximation is a cross-site pair whose two scores fall in the same score
   bin, which is counted as a tie (1/2) instead of 0 or 1.

Error bound
-----------
With ``M`` such ambiguous comparable pairs among ``P`` comparable pairs, the
reported index ``C`` satisfies ``|C - C_exact| <= M / (2 P)``, where
``C_exact`` is Harrell's C of the pooled data with times rounded up to the
grid (equal to the raw data's on a grid that holds every time).  The hub
computes ``M`` from the sums and reports the bound with the estimate
(``ConcordanceResult.error_bound``); with the defaults (4096 bins over +-4 sd)
it is typically a few 1e-4.

Per-site indices
----------------
With ``sites`` declared (the participating site names in a fixed order),
each site also writes its own exact (concordant, comparable) pair counts into
its own slot of a ``(sites, 2)`` array and zeros elsewhere; the secure sum
then gives the hub every site's own index, and nothing else about it.

Disclosure
----------
The counts per (event bin, score bin) are small: under the default policy
(``min_cell_count=5``) they are refused.  A pooled C-index from sums needs
the data owners to lower the threshold (or very coarse bins, which loosen the
bound).  The event bins are broadcast to the sites.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, ValidationError
from consortia.protocol import Algorithm, Contribution, Coordination, Round, register
from consortia.stats._validate import numeric_columns
from consortia.survival._grid import grid_index, validate_grid
from consortia.survival._validate import survival_columns
from consortia.survival.logrank import site_code

__all__ = ["Concordance", "ConcordanceResult", "cell_pair_counts", "harrell_pair_counts"]

_CHUNK = 4_000_000


def harrell_pair_counts(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray
) -> tuple[float, float]:
    """Exact Harrell pair counts (lifelines' convention), on one site's data.

    Parameters
    ----------
    time, event, risk
        Times, 0/1 events and risk scores (higher = shorter survival).

    Returns
    -------
    concordant, comparable : float
        ``concordant`` counts concordant pairs plus half the tied-score pairs;
        ``concordant / comparable`` is lifelines'
        ``concordance_index(time, -risk, event)``.
    """
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event, dtype=bool)
    r = np.asarray(risk, dtype=np.float64)
    ti, ri = t[e], r[e]
    step = max(1, _CHUNK // max(1, t.size))
    num = den = 0.0
    for s in range(0, ti.size, step):
        a_t, a_r = ti[s : s + step, None], ri[s : s + step, None]
        comparable = (t[None, :] > a_t) | ((t[None, :] == a_t) & ~e[None, :])
        den += float(comparable.sum())
        num += float((comparable & (r[None, :] < a_r)).sum())
        num += 0.5 * float((comparable & (r[None, :] == a_r)).sum())
    return num, den


def cell_pair_counts(events: np.ndarray, censored: np.ndarray) -> tuple[float, float, float]:
    """Pair counts from counts per (event bin, score bin).

    Parameters
    ----------
    events, censored
        Arrays of shape ``(event bins, score bins)``: events at, and censored
        patients mapped to, each event bin, per score bin (increasing risk).

    Returns
    -------
    concordant, comparable, ambiguous : float
        Concordant pairs (same score bin counted 1/2), comparable pairs, and
        comparable pairs sharing a score bin.
    """
    d = np.asarray(events, dtype=np.float64)
    c = np.asarray(censored, dtype=np.float64)
    total = d + c
    later = np.cumsum(total[::-1], axis=0)[::-1] - total  # strictly later event bins
    partners = later + c  # plus censored in the same event bin
    below = np.cumsum(partners, axis=1) - partners  # strictly lower score bins
    comparable = float((d * partners.sum(axis=1, keepdims=True)).sum())
    concordant = float((d * (below + 0.5 * partners)).sum())
    ambiguous = float((d * partners).sum())
    return concordant, comparable, ambiguous


@dataclass(frozen=True)
class ConcordanceResult:
    """Harrell's C pooled across sites, and per site.

    Attributes
    ----------
    c_index
        The pooled index.
    error_bound
        A guaranteed bound on ``|c_index - exact pooled index|`` (see module notes).
    comparable_pairs
        Number of comparable pairs pooled across sites.
    ambiguous_pairs
        Cross-site comparable pairs whose scores share a score bin.
    per_site
        Site name -> its own exact index (NaN where the site has no comparable
        pair); empty unless ``sites`` were declared.
    site_pairs
        Site name -> (concordant, comparable) pair counts.
    """

    c_index: float
    error_bound: float
    comparable_pairs: float
    ambiguous_pairs: float
    per_site: Mapping[str, float]
    site_pairs: Mapping[str, tuple[float, float]]

    @property
    def summary(self) -> pd.DataFrame:
        """One row per site and one for the pooled index."""
        rows = {
            s: {"c_index": c, "comparable_pairs": self.site_pairs[s][1]}
            for s, c in self.per_site.items()
        }
        rows["pooled"] = {"c_index": self.c_index, "comparable_pairs": self.comparable_pairs}
        return pd.DataFrame.from_dict(rows, orient="index")


@register
@dataclass(frozen=True, kw_only=True)
class Concordance(Algorithm):
    """Harrell's C of ``covariates @ coefficients`` per site and pooled across sites.

    Parameters
    ----------
    time, event
        Columns of follow-up time and event indicator (0/1).
    covariates
        Covariate columns of the linear score.
    coefficients
        Public coefficients, one per covariate (higher score = higher risk).
    time_grid
        Public time grid (times rounded up to it; a grid holding every time,
        such as integer days for day data, keeps pair order exact).
    score_bins
        Number of score bins for cross-site pairs.
    score_range
        The bins span the pooled mean +- ``score_range`` standard deviations
        (scores outside go to the end bins).
    sites
        Participating site names, to report per-site indices (optional).
    exact_times
        If True, sites refuse times that are not grid points.
    """

    name = "survival.concordance"
    time: str
    event: str
    covariates: tuple[str, ...]
    coefficients: tuple[float, ...]
    time_grid: tuple[float, ...]
    score_bins: int = 4096
    score_range: float = 4.0
    sites: tuple[str, ...] | None = None
    exact_times: bool = False

    def __post_init__(self) -> None:
        grid = validate_grid(self.time_grid)
        object.__setattr__(self, "time_grid", tuple(float(x) for x in grid))
        covs = tuple(self.covariates)
        coefs = tuple(self.coefficients)
        if not covs or not all(isinstance(c, str) and c for c in covs):
            raise ValidationError("covariates must be a non-empty tuple of column names")
        if len(coefs) != len(covs):
            raise ValidationError("coefficients must have one value per covariate")
        if not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and np.isfinite(b)
            for b in coefs
        ):
            raise ValidationError("coefficients must be finite numbers")
        object.__setattr__(self, "covariates", covs)
        object.__setattr__(self, "coefficients", tuple(float(b) for b in coefs))
        bins = self.score_bins
        if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= 1_000_000:
            raise ValidationError("score_bins must be an integer between 1 and 1000000")
        if isinstance(self.score_range, bool) or not float(self.score_range) > 0:
            raise ValidationError("score_range must be a positive number")
        if self.sites is not None:
            sites = tuple(self.sites)
            if not sites or not all(isinstance(s, str) and s for s in sites):
                raise ValidationError("sites must be a non-empty tuple of site names")
            if len(set(sites)) != len(sites):
                raise ValidationError("sites must not repeat a name")
            object.__setattr__(self, "sites", sites)

    # ------------------------------------------------------------------ hub side

    def coordinate(self) -> Coordination:
        first = yield Round("moments")
        n = float(first["n"][0])
        if n <= 0:
            raise AlgorithmError("no patients at any site")
        event_counts = np.rint(np.asarray(first["events"]))
        event_bins = np.flatnonzero(event_counts > 0)
        if event_bins.size == 0:
            raise AlgorithmError(
                "the concordance index needs at least one event; every patient is censored"
            )
        mean = float(first["sum_risk"][0]) / n
        var = max(float(first["sum_risk2"][0]) / n - mean * mean, 0.0)
        sd = float(np.sqrt(var))
        half = self.score_range * sd if sd > 1e-12 * max(1.0, abs(mean)) else 0.5
        edges = np.linspace(mean - half, mean + half, self.score_bins + 1)[1:-1]
        sums = yield Round("cells", {"event_bins": event_bins, "edges": edges})
        shape = (event_bins.size, self.score_bins)
        events = np.rint(np.asarray(sums["events"])).reshape(shape)
        censored = np.rint(np.asarray(sums["censored"])).reshape(shape)
        conc, comp, amb = cell_pair_counts(events, censored)
        within_exact = np.asarray(sums["within_exact"])
        within_cells = np.asarray(sums["within_cells"])
        comparable = comp - within_cells[1] + within_exact[1]
        concordant = conc - within_cells[0] + within_exact[0]
        ambiguous = max(amb - within_cells[2], 0.0)
        if comparable <= 0:
            raise AlgorithmError("no comparable pair of patients: the index is undefined")
        per_site: dict[str, float] = {}
        site_pairs: dict[str, tuple[float, float]] = {}
        if self.sites is not None:
            pairs = np.asarray(sums["site_pairs"]).reshape(len(self.sites), 2)
            for s, (num, den) in zip(self.sites, pairs, strict=True):
                site_pairs[s] = (float(num), float(den))
                per_site[s] = float(num / den) if den > 0 else float("nan")
        return ConcordanceResult(
            c_index=concordant / comparable,
            error_bound=min(1.0, 0.5 * ambiguous / comparable),
            comparable_pairs=comparable,
            ambiguous_pairs=ambiguous,
            per_site=per_site,
            site_pairs=site_pairs,
        )

    # ----------------------------------------------------------------- site side

    def _inputs(self, data: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        frame = data.frame
        t, e = survival_columns(frame, self.time, self.event)
        x = numeric_columns(frame, self.covariates)
        risk = x @ np.asarray(self.coefficients)
        idx = grid_index(t, np.asarray(self.time_grid), column=self.time, exact=self.exact_times)
        return idx, e, risk

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        idx, e, risk = self._inputs(data)
        k = len(self.time_grid)
        if step == "moments":
            events = np.bincount(idx, weights=e.astype(np.float64), minlength=k)
            return Contribution(
                {
                    "n": [float(risk.size)],
                    "sum_risk": [float(risk.sum())],
                    "sum_risk2": [float((risk**2).sum())],
                    "events": events,
                },
                cohort=risk.size,
                count_arrays=frozenset({"events"}),
            )
        if step != "cells":
            raise AlgorithmError(f"unknown step {step!r} for {self.name}")
        event_bins = np.rint(np.asarray(public["event_bins"])).astype(np.int64)
        edges = np.asarray(public["edges"])
        n_bins = self.score_bins
        # event: its own event bin; censored: the last event bin at or before its time
        pos = np.searchsorted(event_bins, idx, side="right") - 1
        keep = pos >= 0
        score = np.searchsorted(edges, risk, side="right")
        cell = pos[keep] * n_bins + score[keep]
        size = event_bins.size * n_bins
        ev = e[keep].astype(np.float64)
        events = np.bincount(cell, weights=ev, minlength=size)
        censored = np.bincount(cell, weights=1.0 - ev, minlength=size)
        own = cell_pair_counts(events.reshape(-1, n_bins), censored.reshape(-1, n_bins))
        num, den = harrell_pair_counts(idx, e, risk)
        arrays: dict[str, np.ndarray | list[float]] = {
            "events": events,
            "censored": censored,
            "within_exact": [num, den],
            "within_cells": list(own),
        }
        if self.sites is not None:
            slots = np.zeros((len(self.sites), 2))
            slots[site_code(data.site, self.sites)] = (num, den)
            arrays["site_pairs"] = slots.ravel()
        return Contribution(
            arrays, cohort=risk.size, count_arrays=frozenset({"events", "censored"})
        )
