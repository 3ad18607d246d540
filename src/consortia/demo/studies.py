"""The demo's studies, each with its pooled reference from a maintained library."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from consortia.demo.data import DemoData
from consortia.errors import ValidationError
from consortia.protocol import Algorithm
from consortia.stats.descriptive import Variance
from consortia.stats.logistic import LogisticRegression
from consortia.survival._grid import day_grid
from consortia.survival.cox import CoxPH
from consortia.survival.kaplan_meier import KaplanMeier
from consortia.survival.logrank import LogRank

TOLERANCE = 1e-6
"""Largest relative difference between federated and pooled figures the demo accepts."""

STUDY_TIMEOUT = 120.0
START_TIMEOUT = 60.0


# ---------------------------------------------------------------------- data


@dataclass(frozen=True)
class Row:
    """One figure: its federated value and the pooled reference."""

    label: str
    federated: float
    pooled: float

    @property
    def rel_diff(self) -> float:
        """``|federated - pooled| / max(|pooled|, 1e-12)`` (0 when both are equal or inf)."""
        f, p = float(self.federated), float(self.pooled)
        if f == p:
            return 0.0
        if not (np.isfinite(f) and np.isfinite(p)):
            return float("inf")
        return abs(f - p) / max(abs(p), 1e-12)


@dataclass(frozen=True)
class StudySpec:
    """A study of the demo: the algorithm and how to compare its result with the pooled one."""

    title: str
    algorithm: Algorithm
    reference: str
    compare: Callable[[Any, pd.DataFrame], list[Row]]
    note: str = ""


@dataclass(frozen=True)
class StudyOutcome:
    """A study that ran: the figures side by side."""

    title: str
    algorithm: str
    reference: str
    rows: list[Row]
    rounds: int
    seconds: float
    note: str = ""

    @property
    def max_rel_diff(self) -> float:
        """Largest relative difference over the study's figures."""
        return max((r.rel_diff for r in self.rows), default=0.0)


def _describe(d: DemoData) -> StudySpec:
    def compare(res: Any, pooled: pd.DataFrame) -> list[Row]:
        rows = []
        for i, c in enumerate(d.describe):
            rows.append(Row(f"mean {c}", res.mean[i], float(np.mean(pooled[c]))))
            rows.append(Row(f"variance {c}", res.variance[i], float(np.var(pooled[c], ddof=1))))
        return rows

    return StudySpec("Descriptive statistics", Variance(columns=d.describe), "numpy", compare)


def _logistic(d: DemoData) -> StudySpec:
    def compare(res: Any, pooled: pd.DataFrame) -> list[Row]:
        import statsmodels.api as sm

        x = sm.add_constant(pooled[list(d.logistic_covariates)].astype(float))
        fit = sm.Logit(pooled[d.outcome].astype(float), x).fit(disp=0, maxiter=100)
        rows = [Row(f"coef {t}", res.coef[i], fit.params.iloc[i]) for i, t in enumerate(res.terms)]
        rows += [Row(f"se {t}", res.se[i], fit.bse.iloc[i]) for i, t in enumerate(res.terms)]
        return rows

    algo = LogisticRegression(outcome=d.outcome, covariates=d.logistic_covariates)
    return StudySpec(f"Logistic regression of {d.outcome}", algo, "statsmodels Logit", compare)


def _kaplan_meier(d: DemoData) -> StudySpec:
    def compare(res: Any, pooled: pd.DataFrame) -> list[Row]:
        from lifelines import KaplanMeierFitter

        rows = []
        for g in d.groups:
            part = pooled[pooled[d.group] == g]
            kmf = KaplanMeierFitter().fit(part[d.time], part[d.event])
            curve = res[str(g)]
            for days in (365, 1095, 1825):
                ref = float(kmf.survival_function_at_times(days).iloc[0])
                rows.append(Row(f"S({days} d) {g}", curve.survival_at(days)[0], ref))
            rows.append(Row(f"median {g}", curve.median, kmf.median_survival_time_))
            # the whole curve, every grid day: report the worst day
            grid_days = np.asarray(curve.timeline, dtype=float)
            fed = np.asarray(curve.survival_at(grid_days), dtype=float)
            ref = kmf.survival_function_at_times(grid_days).to_numpy(dtype=float)
            rel = np.abs(fed - ref) / np.maximum(np.abs(ref), 1e-12)
            worst = len(rel) - 1 - int(np.argmax(rel[::-1]))  # the latest day if all equal
            label = f"S({grid_days[worst]:g} d) {g}: worst of {len(grid_days)} days"
            rows.append(Row(label, fed[worst], float(ref[worst])))
        return rows

    algo = KaplanMeier(
        time=d.time,
        event=d.event,
        time_grid=day_grid(d.grid_stop),
        group=d.group,
        groups=d.groups,
    )
    return StudySpec(f"Kaplan-Meier by {d.group}", algo, "lifelines KaplanMeierFitter", compare)


def _logrank(d: DemoData) -> StudySpec:
    def compare(res: Any, pooled: pd.DataFrame) -> list[Row]:
        from lifelines.statistics import multivariate_logrank_test

        ref = multivariate_logrank_test(pooled[d.time], pooled[d.group], pooled[d.event])
        return [
            Row("chi2", res.chi2, ref.test_statistic),
            Row("p-value", res.p_value, ref.p_value),
        ]

    algo = LogRank(
        time=d.time, event=d.event, group=d.group, groups=d.groups, time_grid=day_grid(d.grid_stop)
    )
    return StudySpec(f"Log-rank test by {d.group}", algo, "lifelines logrank", compare)


def _cox(d: DemoData) -> StudySpec:
    def compare(res: Any, pooled: pd.DataFrame) -> list[Row]:
        from lifelines import CoxPHFitter

        cols = [*d.cox_covariates, d.time, d.event]
        fit = CoxPHFitter().fit(
            pooled[cols], d.time, d.event, fit_options={"precision": 1e-12, "r_precision": 1e-14}
        )
        rows = [Row(f"coef {c}", res.coef[i], fit.params_[c]) for i, c in enumerate(res.covariates)]
        rows += [
            Row(f"se {c}", res.se[i], fit.standard_errors_[c]) for i, c in enumerate(res.covariates)
        ]
        rows.append(Row("log-likelihood", res.log_likelihood, fit.log_likelihood_))
        return rows

    algo = CoxPH(
        time=d.time,
        event=d.event,
        covariates=d.cox_covariates,
        ties="efron",
        time_grid=day_grid(d.grid_stop),
    )
    return StudySpec("Cox proportional hazards (Efron)", algo, "lifelines CoxPHFitter", compare)


def studies_for(data: DemoData) -> list[StudySpec]:
    """The demo's studies, in the order they run."""
    return [f(data) for f in (_describe, _logistic, _kaplan_meier, _logrank, _cox)]


def _check_references() -> None:
    """Fail early, and clearly, if a pooled reference library is missing."""
    import importlib.util

    missing = [m for m in ("statsmodels", "lifelines") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValidationError(
            f"the demo compares with the pooled fits of {' and '.join(missing)}, which "
            "are not installed: pip install 'consortia[dev]' (or run `make demo`)"
        )
