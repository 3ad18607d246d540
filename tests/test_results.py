"""One summary schema for every result: statistics, tables, text, JSON; checked against
lifelines and statsmodels on the pooled data."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test

from consortia import Policy, Simulation
from consortia.protocol import Algorithm, registered_algorithms
from consortia.results import Result, format_number, jsonable, table_records
from consortia.stats.descriptive import Count, CrossTab, Histogram, Mean, Variance
from consortia.stats.dp import DPCount, DPCrossTab, DPHistogram
from consortia.stats.dp_mean import DPMean
from consortia.stats.linear import LinearRegression
from consortia.stats.logistic import LogisticRegression
from consortia.survival._grid import day_grid
from consortia.survival.concordance import Concordance
from consortia.survival.cox import CoxPH
from consortia.survival.dp_kaplan_meier import DPKaplanMeier
from consortia.survival.kaplan_meier import KaplanMeier
from consortia.survival.logrank import LogRank
from consortia.testing.vector_sum import VectorSum

OPEN = Policy(min_cell_count=1, allow_per_site=True, epsilon_budget=100.0)
GRID = day_grid(60)
DP = {"epsilon": 1.0, "delta": 1e-6}


@pytest.fixture(scope="module")
def sites() -> dict[str, pd.DataFrame]:
    """Three sites with numeric, binary, categorical and survival (day times) columns."""
    rng = np.random.default_rng(7)
    out = {}
    for i, n in enumerate((120, 90, 140)):
        x1, x2 = rng.normal(i * 0.3, 1, n), rng.normal(0, 2, n)
        event = (rng.random(n) < 1 / (1 + np.exp(-(0.3 + 0.8 * x1 - 0.4 * x2)))).astype(int)
        arm = rng.choice(["a", "b"], n)
        t = np.ceil(rng.exponential(30 * np.exp(-0.5 * x1) * np.where(arm == "a", 1, 1.5)))
        c = np.ceil(rng.uniform(1, 60, n))
        out[f"site{i}"] = pd.DataFrame(
            {
                "x1": x1,
                "x2": x2,
                "y": 1 + 0.5 * x1 - 0.25 * x2 + rng.normal(0, 1, n),
                "event": event,
                "arm": arm,
                "T": np.minimum(t, c),
                "E": (t <= c).astype(int),
            }
        )
    return out


@pytest.fixture(scope="module")
def pooled(sites: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(sites.values(), ignore_index=True)


CASES: dict[str, Callable[[tuple[str, ...]], Algorithm]] = {
    "count": lambda s: Count(columns=("x1",)),
    "mean": lambda s: Mean(columns=("x1", "y")),
    "variance": lambda s: Variance(columns=("x1",)),
    "histogram": lambda s: Histogram(column="x1", edges=(-3.0, 0.0, 3.0)),
    "crosstab": lambda s: CrossTab(
        row="arm", column="event", row_categories=("a", "b"), column_categories=(0, 1)
    ),
    "dp_count": lambda s: DPCount(columns=("x1",), **DP),
    "dp_histogram": lambda s: DPHistogram(column="x1", edges=(-3.0, 0.0, 3.0), **DP),
    "dp_crosstab": lambda s: DPCrossTab(
        row="arm", column="event", row_categories=("a", "b"), column_categories=(0, 1), **DP
    ),
    "dp_mean": lambda s: DPMean(columns=("x1",), lower=(-5.0,), upper=(5.0,), **DP),
    "linear": lambda s: LinearRegression(outcome="y", covariates=("x1", "x2")),
    "logistic": lambda s: LogisticRegression(outcome="event", covariates=("x1", "x2")),
    "vector_sum": lambda s: VectorSum(size=3),
    "concordance": lambda s: Concordance(
        time="T", event="E", covariates=("x1",), coefficients=(0.5,), time_grid=GRID, sites=s
    ),
    "cox": lambda s: CoxPH(time="T", event="E", covariates=("x1", "x2"), time_grid=GRID),
    "dp_kaplan_meier": lambda s: DPKaplanMeier(
        time="T", event="E", time_grid=(10.0, 20.0, 30.0), group="arm", groups=("a", "b"), **DP
    ),
    "kaplan_meier": lambda s: KaplanMeier(
        time="T", event="E", time_grid=GRID, group="arm", groups=("a", "b")
    ),
    "kaplan_meier_planned": lambda s: KaplanMeier(
        time="T", event="E", horizon=60, plan_cells=10, plan_epsilon=1.0
    ),
    "logrank": lambda s: LogRank(
        time="T", event="E", group="arm", groups=("a", "b"), time_grid=GRID
    ),
}

_results: dict[str, Any] = {}


def run(case: str, sites: dict[str, pd.DataFrame]) -> Any:
    if case not in _results:
        _results[case] = Simulation(sites, policy=OPEN).run(CASES[case](tuple(sites)))
    return _results[case]


def test_every_product_result_type_derives_from_result() -> None:
    import dataclasses

    types = set()
    for cls in registered_algorithms().values():
        if cls.__module__.startswith("consortia."):
            module = __import__(cls.__module__, fromlist=["_"])
            types |= {
                v
                for k, v in vars(module).items()
                if k.endswith("Result") and isinstance(v, type) and dataclasses.is_dataclass(v)
            }
    assert len(types) >= 17  # every result of a registered consortia algorithm
    assert [t for t in types if not issubclass(t, Result)] == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_schema_text_and_json(case: str, sites: dict[str, pd.DataFrame]) -> None:
    res = run(case, sites)
    assert isinstance(res, Result)
    stats = res.statistics()
    assert stats and all(isinstance(k, str) for k in stats)
    text = res.summary_text()
    assert text.startswith(f"<{type(res).__name__}: ")
    for key, value in stats.items():
        assert f"{key} = {format_number(value)}" in text
    tables = res.tables()
    for name, table in tables.items():
        assert isinstance(table, pd.DataFrame)
        assert f"---\n{name}\n" in text
        # one line per row, however wide: header lines + rows, nothing wrapped
        first = str(table.index[0][0] if isinstance(table.index, pd.MultiIndex) else table.index[0])
        assert any(line.startswith(first) for line in text.splitlines()), first
    buf = io.StringIO()
    res.print_summary(file=buf)
    assert buf.getvalue() == text
    doc = json.loads(res.to_json())  # strict JSON: no NaN, no Infinity
    assert doc["type"] == f"{type(res).__module__}:{type(res).__qualname__}"
    assert set(doc) == {"type", "statistics", "tables", "fields"}
    assert list(doc["statistics"]) == list(stats)
    assert list(doc["tables"]) == list(res.tables(full=True))
    for name, table in res.tables(full=True).items():
        assert len(doc["tables"][name]) == len(table)
    import dataclasses

    assert list(doc["fields"]) == [f.name for f in dataclasses.fields(res)]
    assert res.to_dict() == doc


def test_coefficient_tables_share_one_scheme(sites: dict[str, pd.DataFrame]) -> None:
    lin, logit, cox = (run(c, sites).summary for c in ("linear", "logistic", "cox"))
    assert lin.index.name == logit.index.name == cox.index.name == "covariate"
    assert list(logit.columns) == list(cox.columns) == [
        "coef", "exp(coef)", "se(coef)", "coef lower 95%", "coef upper 95%",
        "exp(coef) lower 95%", "exp(coef) upper 95%", "z", "p",
    ]  # fmt: skip
    assert list(lin.columns) == ["coef", "se(coef)", "coef lower 95%", "coef upper 95%", "t", "p"]
    res = run("logistic", sites)
    np.testing.assert_array_equal(logit["exp(coef)"], res.odds_ratio)
    np.testing.assert_array_equal(logit["coef upper 95%"], res.ci_high)


def test_cox_statistics_match_lifelines(sites, pooled) -> None:
    res = run("cox", sites)
    ref = CoxPHFitter().fit(pooled[["T", "E", "x1", "x2"]], "T", "E")
    st = res.statistics()
    assert st["n"] == len(pooled) and st["events"] == int(pooled["E"].sum())
    assert st["log_likelihood"] == pytest.approx(ref.log_likelihood_, rel=1e-8)
    lr = ref.log_likelihood_ratio_test()
    assert st["lr_test"] == pytest.approx(lr.test_statistic, rel=1e-6)
    assert st["lr_df"] == lr.degrees_freedom == 2
    assert st["lr_p"] == pytest.approx(lr.p_value, rel=1e-5)
    beta, var = ref.params_.to_numpy(), ref.variance_matrix_.to_numpy()
    assert st["wald_test"] == pytest.approx(beta @ np.linalg.solve(var, beta), rel=1e-6)
    assert st["wald_df"] == 2 and 0 <= st["wald_p"] < 1e-3
    full = res.tables(full=True)
    assert list(full) == ["summary", "baseline_hazard", "baseline_cumulative_hazard"]


def test_logrank_statistics_match_lifelines(sites, pooled) -> None:
    res = run("logrank", sites)
    a, b = pooled[pooled["arm"] == "a"], pooled[pooled["arm"] == "b"]
    ref = logrank_test(a["T"], b["T"], a["E"], b["E"])
    st = res.statistics()
    assert st["chi2"] == pytest.approx(ref.test_statistic, rel=1e-8)
    assert st["df"] == 1 and st["p"] == pytest.approx(ref.p_value, rel=1e-7)
    assert st["n"] == len(pooled) and st["events"] == int(pooled["E"].sum())
    text = res.summary_text()
    assert "chi2 = " in text and "df = 1" in text and "p = " in text


def test_kaplan_meier_survival_table_matches_lifelines(sites, pooled) -> None:
    res = run("kaplan_meier", sites)
    table = res.tables()["survival"]
    assert list(table.columns) == ["at_risk", "events", "survival", "lower 95%", "upper 95%"]
    for label in ("a", "b"):
        d = pooled[pooled["arm"] == label]
        kmf = KaplanMeierFitter().fit(d["T"], d["E"])
        mine = table.loc[label]
        times = mine.index.to_numpy()
        assert set(times) == set(d.loc[d["E"] == 1, "T"])  # every event time, no other
        np.testing.assert_allclose(
            mine["survival"], kmf.survival_function_at_times(times), rtol=1e-10
        )
        ci = kmf.confidence_interval_.loc[times]
        np.testing.assert_allclose(mine["lower 95%"], ci.iloc[:, 0], rtol=1e-8)
        np.testing.assert_allclose(mine["upper 95%"], ci.iloc[:, 1], rtol=1e-8)
        et = kmf.event_table.loc[times]
        np.testing.assert_array_equal(mine["at_risk"], et["at_risk"])
        np.testing.assert_array_equal(mine["events"], et["observed"])
    timeline = res.tables(full=True)["timeline"]
    assert len(timeline) == sum(c.timeline.size for c in res.curves.values())
    # a life table (planned grid) shows its censorings and its distance to the exact curve
    planned = run("kaplan_meier_planned", sites).tables()["survival"]
    assert {"censored", "error_bound"} <= set(planned.columns)


def test_concordance_shows_its_error_bound(sites) -> None:
    res = run("concordance", sites)
    st = res.statistics()
    assert st["error_bound"] == res.error_bound
    assert st["c_index_lower"] <= res.c_index <= st["c_index_upper"]
    assert res.summary.loc["pooled", "error_bound"] == res.error_bound
    assert "error_bound = " in res.summary_text()


def test_linear_f_test_matches_statsmodels(sites, pooled) -> None:
    res = run("linear", sites)
    ref = sm.OLS(pooled["y"], sm.add_constant(pooled[["x1", "x2"]])).fit()
    st = res.statistics()
    assert st["f_statistic"] == pytest.approx(ref.fvalue, rel=1e-8)
    assert st["f_p"] == pytest.approx(ref.f_pvalue, rel=1e-6)
    assert st["f_df"] == 2 and st["df_resid"] == ref.df_resid


def test_json_values() -> None:
    value = {
        "nan": math.nan,
        "inf": (math.inf, -math.inf),
        "arr": np.array([[1.0, np.nan], [np.inf, 2.5]]),
        "ints": np.arange(3, dtype=np.int32),
        1: np.float64(0.5),
        "flag": np.bool_(True),
    }
    assert jsonable(value) == {
        "nan": None,
        "inf": ["inf", "-inf"],
        "arr": [[1.0, None], ["inf", 2.5]],
        "ints": [0, 1, 2],
        "1": 0.5,
        "flag": True,
    }
    frame = pd.DataFrame({"v": [1.0, np.nan]}, index=pd.Index([10, 20], name="time"))
    assert table_records(frame) == [{"time": 10, "v": 1.0}, {"time": 20, "v": None}]
    assert format_number(3.2e-05) == "3.200e-05" and format_number(12.0) == "12"
    assert format_number(float("nan")) == "NaN" and format_number(0.25, 2) == "0.25"
