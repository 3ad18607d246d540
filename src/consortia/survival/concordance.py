"""Federated Harrell's concordance index of a linear risk score, per site and pooled.

The risk score is ``x @ coefficients`` over named covariate columns with public
coefficients (for example a fitted Cox model's); a higher score means a higher
risk, i.e. a shorter survival.  Pairs follow lifelines' ``concordance_index``
(called with ``-risk``): a pair is comparable when the earlier time is an event
(a censored time equal to an event time counts as later); it is concordant when
the earlier failure has the higher score; tied scores count one half.

How the pooled index is computed from sums (2 rounds + up to ``refinements``)
----------------------------------------------------------------------------
1. Each site releases the sums ``n, sum(r), sum(r^2)`` of its risk scores and
   its event counts per point of the public time grid (times rounded up to the
   grid, a declared count array).
2. The hub broadcasts the grid points that carry a pooled event (the *event
   bins*) and ``score_bins`` score bins spanning ``mean +- score_range * sd``
   of the pooled risk (the two end bins are open).  Each site maps an event to
   its event bin and a censored time to the last event bin at or before it
   (earlier ones are never comparable and are dropped), then releases, per
   (event bin, score bin), its counts of events and of censored patients
   (declared count arrays).  It also releases its own *exact* within-site pair
   counts and the same counts computed on its own cells, so that only
   **cross-site** pairs are approximated.  With this time mapping the time
   order of every pair is exact (for times on the grid); a cross-site pair
   whose two scores share a score bin is counted as a tie (1/2).
3. Refinement (at most ``refinements`` rounds, only while such ambiguous pairs
   remain): the hub splits every score bin holding ambiguous pairs into finer
   sub-bins (as many as the round-2 array size allows) and the sites release
   the same counts restricted to those bins; the hub replaces the 1/2 of each
   cross-site pair in a split bin by its finer count.  Two refinements of 4096
   bins resolve scores about ``8 sd / 4096**2`` apart.

Error bound
-----------
With ``M`` cross-site comparable pairs still sharing a (sub-)bin among ``P``
comparable pairs, the reported index ``C`` satisfies
``|C - C_exact| <= M / (2 P)``, where ``C_exact`` is Harrell's C of the pooled
data with times rounded up to the grid (equal to the raw data's on a grid that
holds every time).  The hub computes ``M`` from the sums and reports the bound
with the estimate (``ConcordanceResult.error_bound``).  Truly tied scores stay
in one bin: they are counted exactly (1/2) but the bound cannot tell, so it is
conservative for discrete scores.

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
from consortia.results import Result
from consortia.stats._validate import numeric_columns
from consortia.survival._grid import binned_on, grid_map, grid_param
from consortia.survival._validate import survival_columns
from consortia.survival.logrank import site_code

__all__ = [
    "Concordance",
    "ConcordanceResult",
    "cell_pair_counts",
    "harrell_pair_counts",
    "interval_pair_counts",
]

_CHUNK = 4_000_000
_BIG = 1e300  # stands for an unbounded end of the outer score bins (public arrays are finite)


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


def interval_pair_counts(
    events: np.ndarray, censored: np.ndarray
) -> tuple[float, float, np.ndarray]:
    """Pair counts among patients of the same score interval, from cell counts.

    Parameters
    ----------
    events, censored
        Arrays of shape ``(event bins, intervals, sub-bins)``: per event bin,
        score interval and sub-bin of that interval (increasing score), the
        events at and the censored patients mapped to that event bin.

    Returns
    -------
    concordant : float
        Concordant comparable pairs whose two patients share an interval
        (pairs sharing a sub-bin count 1/2).
    comparable : float
        Comparable pairs whose two patients share an interval.
    ambiguous : numpy.ndarray
        Per ``(interval, sub-bin)``, flattened: comparable pairs sharing that sub-bin.
    """
    d = np.asarray(events, dtype=np.float64)
    c = np.asarray(censored, dtype=np.float64)
    total = d + c
    later = np.cumsum(total[::-1], axis=0)[::-1] - total  # strictly later event bins
    partners = later + c  # plus censored in the same event bin
    below = np.cumsum(partners, axis=2) - partners  # strictly lower sub-bins, same interval
    comparable = float((d * partners.sum(axis=2, keepdims=True)).sum())
    concordant = float((d * (below + 0.5 * partners)).sum())
    ambiguous = (d * partners).sum(axis=0).ravel()
    return concordant, comparable, ambiguous


def cell_pair_counts(events: np.ndarray, censored: np.ndarray) -> tuple[float, float, float]:
    """Pair counts from counts per (event bin, score bin).

    Parameters
    ----------
    events, censored
        Arrays of shape ``(event bins, score bins)``: events at, and censored
        patients mapped to, each event bin, per score bin (increasing score).

    Returns
    -------
    concordant, comparable, ambiguous : float
        Concordant pairs (same score bin counted 1/2), comparable pairs, and
        comparable pairs sharing a score bin.
    """
    d = np.asarray(events, dtype=np.float64)
    c = np.asarray(censored, dtype=np.float64)
    conc, comp, amb = interval_pair_counts(d[:, None, :], c[:, None, :])
    return conc, comp, float(amb.sum())


@dataclass(frozen=True)
class ConcordanceResult(Result):
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
    refinements
        Number of refinement rounds that were run.
    """

    c_index: float
    error_bound: float
    comparable_pairs: float
    ambiguous_pairs: float
    per_site: Mapping[str, float]
    site_pairs: Mapping[str, tuple[float, float]]
    refinements: int = 0

    @property
    def interval(self) -> tuple[float, float]:
        """Where the exact pooled index lies for sure: ``c_index -/+ error_bound`` within [0, 1]."""
        return (
            max(0.0, self.c_index - self.error_bound),
            min(1.0, self.c_index + self.error_bound),
        )

    @property
    def summary(self) -> pd.DataFrame:
        """One row per site (exact: error bound 0) and one for the pooled index."""
        rows = {
            s: {"c_index": c, "error_bound": 0.0, "comparable_pairs": self.site_pairs[s][1]}
            for s, c in self.per_site.items()
        }
        rows["pooled"] = {
            "c_index": self.c_index,
            "error_bound": self.error_bound,
            "comparable_pairs": self.comparable_pairs,
        }
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("site")

    def statistics(self) -> dict[str, float | int]:
        """The pooled index, its error bound and the interval it implies, the pair counts."""
        low, high = self.interval
        return {
            "c_index": self.c_index,
            "error_bound": self.error_bound,
            "c_index_lower": low,
            "c_index_upper": high,
            "comparable_pairs": self.comparable_pairs,
            "ambiguous_pairs": self.ambiguous_pairs,
            "refinements": self.refinements,
        }


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
    refinements
        Most extra rounds that split the score bins holding ambiguous
        cross-site pairs (0: a single pass; stops early once no pair is ambiguous).
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
    refinements: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "time_grid", grid_param(self.time_grid))
        ref = self.refinements
        if isinstance(ref, bool) or not isinstance(ref, int) or not 0 <= ref <= 10:
            raise ValidationError("refinements must be an integer between 0 and 10")
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
        event_bins = np.flatnonzero(event_counts > 0).astype(np.float64)
        if event_bins.size == 0:
            raise AlgorithmError(
                "the concordance index needs at least one event; every patient is censored"
            )
        mean = float(first["sum_risk"][0]) / n
        sd = float(np.sqrt(max(float(first["sum_risk2"][0]) / n - mean * mean, 0.0)))
        half = max(self.score_range * sd, 1e-6 * max(1.0, abs(mean)))
        inner = np.linspace(mean - half, mean + half, self.score_bins + 1)[1:-1]
        bounds = np.concatenate(([-_BIG], inner, [_BIG]))[None, :]
        budget = event_bins.size * self.score_bins  # cells per round

        def cells(level: int, bounds: np.ndarray) -> Round:
            return Round(
                "cells",
                {
                    "event_bins": event_bins,
                    "bounds": bounds.ravel(),
                    "layout": np.array([bounds.shape[0], bounds.shape[1] - 1]),
                    "level": np.array([level]),
                },
            )

        sums = yield cells(1, bounds)
        conc, comp, amb = self._pooled_stats(sums, event_bins.size, bounds)
        own = np.asarray(sums["own_cells"])
        exact = np.asarray(sums["within_exact"])
        concordant = conc - own[0] + exact[0]
        comparable = comp - own[1] + exact[1]
        cross_ambiguous = max(float(amb.sum()) - own[2], 0.0)
        if comparable <= 0:
            raise AlgorithmError("no comparable pair of patients: the index is undefined")
        per_site: dict[str, float] = {}
        site_pairs: dict[str, tuple[float, float]] = {}
        if self.sites is not None:
            pairs = np.asarray(sums["site_pairs"]).reshape(len(self.sites), 2)
            for s, (num, den) in zip(self.sites, pairs, strict=True):
                site_pairs[s] = (float(num), float(den))
                per_site[s] = float(num / den) if den > 0 else float("nan")
        rounds, carried_total = 0, 0.0
        for level in range(2, self.refinements + 2):
            if cross_ambiguous <= 0:
                break
            split = _split_ambiguous(bounds, amb, event_bins.size, budget, self.score_bins)
            if split is None:
                break
            bounds, carried = split
            carried_total += carried
            sums = yield cells(level, bounds)
            rounds += 1
            conc, comp, amb = self._pooled_stats(sums, event_bins.size, bounds)
            own = np.asarray(sums["own_cells"])
            # cross-site pairs of a split interval were counted 1/2; replace them
            concordant += (conc - own[0]) - 0.5 * (comp - own[1])
            cross_ambiguous = max(float(amb.sum()) - own[2], 0.0) + carried_total
        return ConcordanceResult(
            c_index=concordant / comparable,
            error_bound=min(1.0, 0.5 * cross_ambiguous / comparable),
            comparable_pairs=comparable,
            ambiguous_pairs=cross_ambiguous,
            per_site=per_site,
            site_pairs=site_pairs,
            refinements=rounds,
        )

    @staticmethod
    def _pooled_stats(
        sums: Mapping[str, np.ndarray], n_event_bins: int, bounds: np.ndarray
    ) -> tuple[float, float, np.ndarray]:
        shape = (n_event_bins, bounds.shape[0], bounds.shape[1] - 1)
        events = np.rint(np.asarray(sums["events"])).reshape(shape)
        censored = np.rint(np.asarray(sums["censored"])).reshape(shape)
        return interval_pair_counts(events, censored)

    # ----------------------------------------------------------------- site side

    def _inputs(self, data: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        frame = data.frame
        t, e = survival_columns(frame, self.time, self.event)
        x = numeric_columns(frame, self.covariates)
        risk = x @ np.asarray(self.coefficients)
        idx, e = grid_map(t, e, self.time_grid, column=self.time, exact=self.exact_times)
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
                **binned_on(self.time, self.time_grid),
            )
        if step != "cells":
            raise AlgorithmError(f"unknown step {step!r} for {self.name}")
        event_bins = np.rint(np.asarray(public["event_bins"])).astype(np.int64)
        m, sub = (int(v) for v in np.rint(np.asarray(public["layout"])))
        bounds = np.asarray(public["bounds"]).reshape(m, sub + 1)
        lo, hi = bounds[:, :-1].ravel(), bounds[:, 1:].ravel()
        # score cell: the sub-bin [lo, hi) holding the score, if any
        cell = np.searchsorted(lo, risk, side="right") - 1
        member = (cell >= 0) & (risk < hi[np.clip(cell, 0, lo.size - 1)])
        # event: its own event bin; censored: the last event bin at or before its time
        pos = np.searchsorted(event_bins, idx, side="right") - 1
        keep = member & (pos >= 0)
        flat = pos[keep] * lo.size + cell[keep]
        size = event_bins.size * lo.size
        ev = e[keep].astype(np.float64)
        events = np.bincount(flat, weights=ev, minlength=size)
        censored = np.bincount(flat, weights=1.0 - ev, minlength=size)
        shape = (event_bins.size, m, sub)
        conc, comp, amb = interval_pair_counts(events.reshape(shape), censored.reshape(shape))
        arrays: dict[str, np.ndarray | list[float]] = {
            "events": events,
            "censored": censored,
            "own_cells": [conc, comp, float(amb.sum())],
        }
        if int(round(float(public["level"][0]))) == 1:
            num, den = harrell_pair_counts(idx, e, risk)
            arrays["within_exact"] = [num, den]
            if self.sites is not None:
                slots = np.zeros((len(self.sites), 2))
                slots[site_code(data.site, self.sites)] = (num, den)
                arrays["site_pairs"] = slots.ravel()
        return Contribution(
            arrays,
            cohort=risk.size,
            count_arrays=frozenset({"events", "censored"}),
            # per-site pair counts sit in this site's own slot: a per-site release
            per_site="site_pairs" in arrays,
        )


def _split_ambiguous(
    bounds: np.ndarray, ambiguous: np.ndarray, n_event_bins: int, budget: int, max_sub: int
) -> tuple[np.ndarray, float] | None:
    """Split every score cell holding ambiguous pairs into finer sub-bins.

    Returns the new interval bounds (one row per split cell) and the ambiguous
    pairs of cells that cannot be split further (carried into the bound), or
    None when nothing can be split within the budget.
    """
    lo, hi = bounds[:, :-1].ravel(), bounds[:, 1:].ravel()
    todo = np.flatnonzero(ambiguous > 0)
    sub = int(min(max_sub, max(2, budget // max(1, n_event_bins * todo.size))))
    if n_event_bins * todo.size * sub > 4 * budget:
        return None
    rows, carried = [], 0.0
    for j in todo:
        edges = np.linspace(lo[j], hi[j], sub + 1)
        if np.all(np.diff(edges) > 0) and edges[0] == lo[j] and edges[-1] == hi[j]:
            rows.append(edges)
        else:  # too narrow to split in floating point: keep its pairs ambiguous
            carried += float(ambiguous[j])
    if not rows:
        return None
    return np.vstack(rows), carried
