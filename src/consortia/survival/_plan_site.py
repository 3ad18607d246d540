"""A planned grid at the site: the noisy plan-round histograms and the exact binned counts.

See :mod:`consortia.survival._plan` for the method.
"""

from __future__ import annotations

import numpy as np

from consortia.protocol import Contribution
from consortia.survival._plan_settings import PlanSettings

__all__ = ["plan_contribution", "planned_contribution", "planned_counts"]


def _codes(codes: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros(n, np.int64) if codes is None else np.asarray(codes, np.int64)


def plan_contribution(
    times: np.ndarray,
    events: np.ndarray,
    codes: np.ndarray | None,
    n_codes: int,
    settings: PlanSettings,
) -> Contribution:
    """A site's plan-round contribution: event and censoring histograms, declared noisy.

    ``plan_events`` has shape ``(n_codes, cells)``; ``plan_censored`` has shape
    ``(n_codes, cells + 1)`` (the last cell: followed beyond the horizon, events
    included).  Each patient lies in exactly one cell of the two.
    """
    t = np.asarray(times, np.float64)
    codes = _codes(codes, t.size)
    f = settings.cells
    cell = np.searchsorted(settings.fine_edges[1:], t, side="left")  # f: beyond the horizon
    ev = (np.asarray(events) == 1) & (cell < f)
    ev_hist = np.bincount(codes[ev] * f + cell[ev], minlength=n_codes * f)
    cens_hist = np.bincount(codes[~ev] * (f + 1) + cell[~ev], minlength=n_codes * (f + 1))
    return Contribution(
        {
            "plan_events": ev_hist.astype(np.float64),
            "plan_censored": cens_hist.astype(np.float64),
            "plan_sites": np.ones(1),  # exact: the sum counts the participating sites
        },
        cohort=t.size,
        noise={"plan_events": settings.sigma, "plan_censored": settings.sigma},
    )


def planned_counts(
    times: np.ndarray,
    events: np.ndarray,
    codes: np.ndarray | None,
    grids: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Exact counts on planned grids (one grid per code, all may be the same).

    Bin ``j`` of a grid ``b`` is ``(b_{j-1}, b_j]`` (the first includes 0);
    times after ``b_{-1}`` are administratively censored there.

    Returns
    -------
    events : numpy.ndarray
        ``(n_codes, B)`` events per bin (``B`` the longest grid; zero padding).
    at_risk : numpy.ndarray
        ``(n_codes, B + 1)``: patients at risk at each bin's start (time after
        the previous bin end), then the patients followed beyond the grid's end.
    """
    t = np.asarray(times, np.float64)
    e = np.asarray(events)
    codes = _codes(codes, t.size)
    width = max(g.size for g in grids)
    ev_out = np.zeros((len(grids), width))
    risk_out = np.zeros((len(grids), width + 1))
    for c, grid in enumerate(grids):
        sel = codes == c
        b = grid.size
        idx = np.searchsorted(grid, t[sel], side="left")  # b: beyond the end
        ev = (e[sel] == 1) & (idx < b)
        ev_out[c, :b] = np.bincount(idx[ev], minlength=b)
        exits = np.bincount(idx, minlength=b + 1).astype(np.float64)
        risk_out[c, : b + 1] = np.cumsum(exits[::-1])[::-1]
    return ev_out, risk_out


def planned_contribution(
    times: np.ndarray,
    events: np.ndarray,
    codes: np.ndarray | None,
    grids: list[np.ndarray],
    settings: PlanSettings,
    *,
    column: str,
) -> Contribution:
    """A site's release on verified planned grids (planned count arrays).

    The counts are exact, so they declare their grid (all groups' bin ends) for
    the node's grid-differencing rule (:func:`~consortia.survival._grid.binned_on`).
    """
    from consortia.survival._grid import binned_on

    ev, risk = planned_counts(times, events, codes, grids)
    return Contribution(
        {"events": ev.ravel(), "at_risk": risk.ravel()},
        cohort=len(times),
        count_arrays=frozenset({"events", "at_risk"}),
        planned=frozenset({"events", "at_risk"}),
        planned_min=settings.k,
        **binned_on(column, np.unique(np.concatenate(grids))),
    )
