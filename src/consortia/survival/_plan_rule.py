"""A planned grid's bins from the noisy counts: the coordinator plans, each node re-checks.

The rule (bins of ``k + z * sigma * sqrt(m)`` noisy events, an end where the noisy number
followed falls below ``k + z * sigma * sqrt(c)``) is described in
:mod:`consortia.survival._plan`.  :func:`make_plan` is deterministic, so a node recomputes
it in :func:`verify_plan` and refuses any other grid.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from consortia.errors import AlgorithmError
from consortia.survival._plan_settings import CELL_CONFIDENCE, PlanSettings, _refuse

__all__ = ["cells_below", "make_plan", "plan_public", "verify_plan", "within_bin_weights"]


def _grid_end(events: np.ndarray, censored: np.ndarray, settings: PlanSettings) -> int:
    """The last fine edge before the noisy number followed after it fails the end rule."""
    f = settings.cells
    exits = censored.copy()
    exits[:, :f] += events
    after = np.cumsum(exits[:, ::-1], axis=1)[:, ::-1]  # after[:, i]: exits in cells i..f
    n_cells = (f - np.arange(f + 1)) * 2 + 1  # noisy cells summed
    ok = np.all(after >= settings.end_threshold(n_cells), axis=0)
    ok[0] = True
    fails = np.flatnonzero(~ok)
    return int(fails[0] - 1) if fails.size else f


def _bins_pass(events: np.ndarray, start: int, stop: int, settings: PlanSettings) -> bool:
    return bool(np.all(events[:, start:stop].sum(axis=1) >= settings.bin_threshold(stop - start)))


def _plan_one(
    events: np.ndarray, censored: np.ndarray, settings: PlanSettings, what: str
) -> np.ndarray:
    """Bin ends (fine-edge indices in 1..cells) for groups planned together (rows)."""
    last = _grid_end(events, censored, settings)
    if last < 1:
        raise AlgorithmError(
            f"too few patients{what} are followed long enough to plan a grid that keeps "
            f"{settings.k} at risk at its end: raise plan_epsilon, or lower plan_cells"
        )
    ends: list[int] = []
    start = 0
    for i in range(1, last + 1):
        if _bins_pass(events, start, i, settings):
            ends.append(i)
            start = i
    if ends and start < last:  # the cells after the last full bin join it if it still passes
        prev = ends[-2] if len(ends) > 1 else 0
        if _bins_pass(events, prev, last, settings):
            ends[-1] = last
    if not ends:
        raise AlgorithmError(
            f"too few events{what} before the horizon to plan one bin of {settings.k} events "
            f"with confidence {CELL_CONFIDENCE}: raise plan_epsilon, lower plan_cells, or "
            "extend horizon"
        )
    return np.asarray(ends, dtype=np.int64)


def make_plan(
    sums: Mapping[str, np.ndarray],
    settings: PlanSettings,
    n_groups: int,
    *,
    shared: bool,
    labels: tuple[str, ...] | None = None,
) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Plan bins from the plan round's noisy sums.

    Parameters
    ----------
    sums
        The plan round's sums (``plan_events``, ``plan_censored``).
    shared
        One grid for every group (each group's cells must pass), as a comparison
        of groups needs; otherwise one grid per group.
    labels
        Group labels, for error messages.

    Returns
    -------
    ends, public
        Per group the bin ends as fine-edge indices, and the public arrays that
        the counts round broadcasts (the noisy histograms and the ends).
    """
    settings = settings.for_sites(sums)
    f = settings.cells
    events = np.rint(np.asarray(sums["plan_events"], np.float64)).reshape(n_groups, f)
    censored = np.rint(np.asarray(sums["plan_censored"], np.float64)).reshape(n_groups, f + 1)
    if shared:
        ends = [_plan_one(events, censored, settings, "")] * n_groups
    else:
        ends = []
        for g in range(n_groups):
            what = "" if labels is None or n_groups == 1 else f" of group {labels[g]!r}"
            ends.append(_plan_one(events[g : g + 1], censored[g : g + 1], settings, what))
    return ends, plan_public(events, censored, ends, settings.n_sites)


def plan_public(
    events: np.ndarray, censored: np.ndarray, ends: list[np.ndarray], n_sites: int
) -> dict[str, np.ndarray]:
    """Public arrays of the counts round: noisy histograms, sites, bin ends (``-1`` padded)."""
    width = max(e.size for e in ends)
    padded = np.full((len(ends), width), -1.0)
    for g, e in enumerate(ends):
        padded[g, : e.size] = e
    return {
        "plan_events": events,
        "plan_censored": censored,
        "plan_sites": np.array([float(n_sites)]),
        "plan_ends": padded,
    }


def verify_plan(
    public: Mapping[str, np.ndarray], settings: PlanSettings, n_groups: int, *, shared: bool
) -> list[np.ndarray]:
    """Node side: check that the broadcast grid respects the noisy counts; return its times.

    Defends against a study that submits a fine grid disguised as a planned one:
    the node recomputes the plan (:func:`make_plan`, deterministic) from the
    noisy histograms broadcast with the grid and refuses any other grid, so
    every bin passes the event rule and the end the at-risk rule, and the
    coordinator has no choice of bins to exploit.

    Returns
    -------
    list of numpy.ndarray
        Per group, the bin ends as times.

    Raises
    ------
    PolicyError
        Rule ``planned_grid``, when the plan is malformed or a bin or the end
        breaks the rule.
    """
    f = settings.cells
    settings = settings.for_sites(public)
    try:
        events = np.asarray(public["plan_events"], np.float64).reshape(n_groups, f)
        censored = np.asarray(public["plan_censored"], np.float64).reshape(n_groups, f + 1)
        padded = np.asarray(public["plan_ends"], np.float64).reshape(n_groups, -1)
    except (KeyError, ValueError):
        raise _refuse("the planned grid or its noisy counts are missing or malformed") from None
    if not (
        np.array_equal(events, np.rint(events)) and np.array_equal(censored, np.rint(censored))
    ):
        raise _refuse("the noisy counts of a planned grid must be integers")
    try:
        if shared:
            expected = [_plan_one(events, censored, settings, "")] * n_groups
        else:
            expected = [
                _plan_one(events[g : g + 1], censored[g : g + 1], settings, "")
                for g in range(n_groups)
            ]
    except AlgorithmError:
        raise _refuse("the noisy counts broadcast with the grid admit no plan") from None
    grids: list[np.ndarray] = []
    for g in range(n_groups):
        row = padded[g]
        ends = row[row >= 0]
        if np.any(row[ends.size :] != -1) or not np.array_equal(ends, expected[g]):
            raise _refuse(
                "the grid is not the plan of the noisy counts broadcast with it (each bin must "
                f"hold k + z*sigma*sqrt(cells) noisy events, k = {settings.k}, and the grid must "
                "end where the noisy number at risk falls below the rule)"
            )
        grids.append(settings.fine_edges[expected[g]])
    return grids


def within_bin_weights(ends: np.ndarray, noisy_censored: np.ndarray) -> list[np.ndarray]:
    """Per bin, the shares of its censorings in each of its fine cells (public, noisy).

    Post-processing of the plan's noisy censoring histogram (no privacy cost):
    negative noisy counts are set to 0; an empty bin gets equal shares.
    """
    out = []
    start = 0
    for stop in np.asarray(ends, np.int64):
        w = np.maximum(np.asarray(noisy_censored[start:stop], np.float64), 0.0)
        out.append(w / w.sum() if w.sum() > 0 else np.full(stop - start, 1.0 / (stop - start)))
        start = int(stop)
    return out


def cells_below(events: np.ndarray, at_risk: np.ndarray, k: int) -> int:
    """Number of non-zero released cells (events or at risk) below ``k``."""
    cells = np.concatenate([np.ravel(events), np.ravel(at_risk)])
    return int(np.count_nonzero((cells != 0) & (np.abs(cells) < k)))
