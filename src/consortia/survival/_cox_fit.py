"""The hub side of the federated Cox model: the rounds and the Newton-Raphson iterations.

:meth:`consortia.survival.cox.CoxPH.coordinate` delegates here; see
:mod:`consortia.survival.cox` for the rounds and what they release.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from consortia.errors import ConvergenceError, ValidationError
from consortia.precision import join
from consortia.protocol import Coordination, Round
from consortia.survival import _cox_math as cm
from consortia.survival._cox_result import CoxPHResult
from consortia.survival._plan import cells_below, grid_plan, make_plan

if TYPE_CHECKING:
    from consortia.survival.cox import CoxPH

__all__ = ["coordinate"]


class _Iterate(NamedTuple):
    """What the result needs of the last Newton-Raphson evaluation."""

    offset: float
    h: np.ndarray
    ll: float
    risk: np.ndarray | None


def coordinate(alg: CoxPH) -> Coordination:
    """The hub side of :meth:`CoxPH.coordinate`: plan, summary, Newton-Raphson, score."""
    p = alg._p
    plan_pub: dict[str, np.ndarray] = {}
    grid = None if alg.time_grid is None else np.asarray(alg.time_grid)
    if alg._plan is not None:
        sums = yield Round("plan")
        ends, plan_pub = make_plan(sums, alg._plan, 1, shared=True)
        grid = alg._plan.fine_edges[ends[0]]
    sums = yield Round("summary", plan_pub)
    n = int(round(float(sums["n"][0])))
    n_events = int(round(float(sums["n_events"][0])))
    w_sum = float(join(sums, "w_sum")[0])
    if n_events == 0:
        raise ValidationError(
            f"event column {alg.event!r} has no events at any site (all censored): "
            "a Cox model cannot be fitted"
        )
    if n < 2:
        raise ValidationError("a Cox model needs at least two patients")
    mean = join(sums, "x_sum") / n
    var = (join(sums, "x_sq") - n * mean**2) / (n - 1)
    sd = np.sqrt(np.maximum(var, 0.0))
    flat = sd <= 1e-12 * np.maximum(1.0, np.abs(mean))
    if np.any(flat):
        cols = [c for c, f in zip(alg.covariates, flat) if f]
        raise ValidationError(
            f"covariate(s) {cols} have zero variance over all sites; drop them from covariates"
        )
    dw_total = float(join(sums, "dw_total")[0])
    xe = (join(sums, "xe") - mean * dw_total) / sd
    pub: dict[str, Any] = {**plan_pub, "mean": mean, "sd": sd}
    grid_info: dict[str, np.ndarray] = {}
    below = 0
    if not alg.stratify_by_site:
        assert grid is not None
        events = np.asarray(sums["events"]).reshape(alg._n_strata, grid.size)
        events_w = (
            join(sums, "events_w").reshape(events.shape) if alg.weights is not None else events
        )
        codes, idx = np.nonzero(events > 0.5)
        d = np.rint(events[codes, idx])
        dw = events_w[codes, idx]
        tie_rows = np.flatnonzero(d >= 2)
        if alg._plan is not None:
            below = cells_below(events, np.zeros(0), alg._plan.k)
        grid_info = {"event_index": idx, "event_code": codes, "d": d, "dw": dw}
        pub.update(event_index=idx, event_code=codes, tie_rows=tie_rows)
    pen = np.broadcast_to(np.asarray(alg.penalizer, dtype=float), (p,)) * n

    beta = np.zeros(p)
    offset = float(np.log(w_sum))
    rounds, iterations = 1, 0
    ll_null: float | None = None
    prev: tuple[float, np.ndarray] | None = None
    converged = False
    step = np.zeros(p)
    history: list[float] = []
    while True:
        sums = yield Round("newton", {**pub, "beta": beta, "offset": np.array([offset])})
        rounds += 1
        iterations += 1
        total = float(join(sums, "total")[0])
        if alg.stratify_by_site:
            ll = float(join(sums, "loglik")[0])
            g = join(sums, "grad")
            h = cm.unpack(join(sums, "hess"), p)
            risk = None
        else:
            risk = join(sums, "risk")
            ties = join(sums, "ties") if "ties" in sums else None
            rows = pub["tie_rows"] if ties is not None else None
            if alg.ties == "efron" and ties is None:
                ties, rows = np.zeros((0, risk.shape[1])), np.zeros(0, np.int64)
            ll, g, h = cm.partial_likelihood(
                risk, ties, rows, grid_info["d"], grid_info["dw"], xe, beta, offset
            )
        if ll_null is None:
            ll_null = ll
        ll -= 0.5 * float(pen @ beta**2)
        g = g - pen * beta
        h = h - np.diag(pen)
        if prev is not None and ll < prev[0] - 1e-10 * abs(prev[0]) and iterations < alg.max_iter:
            # the full Newton step overshot: halve it and evaluate again
            step = step / 2
            beta = prev[1] + step
            offset = offset + float(np.log(total))
            continue
        eig = np.linalg.eigvalsh(-h)
        if not eig[0] > 1e-10 * max(eig[-1], 1e-300):
            weak = alg.covariates[int(np.argmax(np.abs(np.linalg.eigh(-h)[1][:, 0])))]
            raise ConvergenceError(
                "the Cox information matrix is singular or nearly so (involving covariate "
                f"{weak!r}): collinear covariates, too few events, or a monotone likelihood "
                "(perfect separation); drop a column or set penalizer > 0"
            )
        step = np.linalg.solve(-h, g)
        history.append(float(np.max(np.abs(step))))
        prev = (ll, beta.copy())
        last = _Iterate(offset=offset, h=h, ll=ll, risk=risk)
        if history[-1] < alg.tol:
            converged = True
            beta = beta + step
            break
        if iterations >= alg.max_iter:
            break
        beta = beta + step
        offset = offset + float(np.log(total))
    if not converged:
        worst = [alg.covariates[i] for i in np.argsort(-np.abs(beta))[:3]]
        msg = (
            f"the Cox model did not converge in {alg.max_iter} Newton-Raphson rounds "
            f"(last step {history[-1]:.3g} on the standardised scale); the largest "
            f"coefficients are those of {worst}: a monotone likelihood (perfect separation) "
            "or collinearity; set penalizer > 0 or drop the offending covariates"
        )
        if alg.raise_on_failure:
            raise ConvergenceError(msg)
        warnings.warn(msg, stacklevel=3)  # CoxPH.coordinate's caller
    var_std = np.linalg.inv(-last.h)
    meat = None
    if alg.robust:
        rpub = {**pub, "beta": beta, "offset": [last.offset]}
        if not alg.stratify_by_site:
            r = last.risk
            assert r is not None
            rpub["xbar"] = r[:, 1 : 1 + p] / r[:, :1]
            rpub["dlam"] = grid_info["dw"] / r[:, 0]
        sums = yield Round("score", rpub)
        rounds += 1
        meat = cm.unpack(join(sums, "meat"), p)
    baseline = None
    if not alg.stratify_by_site:
        r = last.risk
        assert r is not None
        hazard = grid_info["dw"] / (r[:, 0] * np.exp(last.offset))
        assert grid is not None
        baseline = _baseline_frame(
            grid[grid_info["event_index"]],
            grid_info["event_code"],
            hazard,
            alg.strata_levels,
        )
    plan = None
    if alg._plan is not None:
        assert grid is not None
        plan = grid_plan(plan_pub, alg._plan, [grid])
    return CoxPHResult.build(
        covariates=alg.covariates,
        beta_std=beta,
        mean=mean,
        sd=sd,
        var_std=var_std,
        meat_std=meat,
        log_likelihood=float(last.ll),
        log_likelihood_null=float(ll_null if ll_null is not None else np.nan),
        n=n,
        n_events=n_events,
        rounds=rounds,
        iterations=iterations,
        converged=converged,
        ties=alg.ties,
        alpha=alg.alpha,
        baseline_hazard=baseline,
        strata=alg.strata,
        stratified_by_site=alg.stratify_by_site,
        plan=plan,
        cells_below_k=below,
    )


def _baseline_frame(
    times: np.ndarray,
    codes: np.ndarray,
    hazard: np.ndarray,
    levels: tuple[Any, ...] | None,
) -> pd.DataFrame:
    index = np.unique(times)
    if levels is None:
        frame = pd.DataFrame({"baseline hazard": hazard}, index=times)
    else:
        frame = pd.DataFrame(0.0, index=index, columns=list(levels))
        for i, level in enumerate(levels):
            sel = codes == i
            frame.loc[times[sel], level] = hazard[sel]
    frame.index.name = "time"
    return frame.reindex(index, fill_value=0.0)
