"""Federated OLS through the full Simulation path, against statsmodels OLS on pooled data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from consortia import Policy, Simulation
from consortia.data.tcga import load_tcga_brca
from consortia.errors import AlgorithmError, PolicyError, SchemaError, ValidationError
from consortia.protocol import algorithm_from_spec
from consortia.stats import LinearRegression

TOL = 1e-8


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = np.abs(a - b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.max(np.where(diff == 0, 0.0, diff / np.abs(b))))


def _check(res, sites: dict[str, pd.DataFrame], outcome: str, covariates: list[str]):
    pooled = pd.concat(sites.values(), ignore_index=True)
    ref = sm.OLS(pooled[outcome], sm.add_constant(pooled[covariates])).fit()
    assert res.terms == ("Intercept", *covariates)
    assert _rel(res.coef, ref.params) <= TOL
    assert _rel(res.se, ref.bse) <= TOL
    assert _rel(res.t, ref.tvalues) <= TOL
    assert _rel(res.p, ref.pvalues) <= TOL
    assert _rel(res.cov, ref.cov_params()) <= TOL
    assert _rel([res.r_squared, res.adj_r_squared], [ref.rsquared, ref.rsquared_adj]) <= TOL
    assert _rel(res.residual_variance, ref.scale) <= TOL
    assert _rel(res.rss, ref.ssr) <= TOL
    ci = ref.conf_int()
    assert _rel(res.ci_low, ci[0]) <= TOL and _rel(res.ci_high, ci[1]) <= TOL
    assert res.df_resid == ref.df_resid and res.n == len(pooled)
    return ref


@pytest.fixture(scope="module")
def tcga(shared_data):
    return load_tcga_brca(shared_data / "tcga_brca")


def test_ols_matches_statsmodels_on_toy_sites(toy_sites):
    res = Simulation(toy_sites).run(LinearRegression(outcome="y", covariates=("x1", "x2")))
    _check(res, toy_sites, "y", ["x1", "x2"])
    assert res.rounds == 2
    # the coefficient table shared with logistic and Cox models (lifelines' names)
    summary = res.summary
    assert list(summary.columns) == [
        "coef", "se(coef)", "coef lower 95%", "coef upper 95%", "t", "p"
    ]  # fmt: skip
    np.testing.assert_array_equal(summary["se(coef)"], res.se)
    np.testing.assert_array_equal(summary["coef lower 95%"], res.ci_low)
    np.testing.assert_array_equal(summary["t"], res.t)


def test_ols_exact_at_realistic_magnitudes():
    # survival time in days on age in years, calendar year and a dose in mg: large
    # means, small spreads; the default 24-bit fixed point must still give 1e-8.
    rng = np.random.default_rng(3)
    sites = {}
    for i, n in enumerate((300, 120, 80, 45)):
        age = rng.normal(62 + 2 * i, 10, n)
        year = rng.integers(1995, 2021, n).astype(float)
        dose = rng.normal(2500, 40, n)
        days = 4000 - 25 * age + 3 * (year - 2008) + 0.4 * dose + rng.normal(0, 300, n)
        sites[f"s{i}"] = pd.DataFrame({"days": days, "age": age, "year": year, "dose": dose})
    res = Simulation(sites).run(
        LinearRegression(outcome="days", covariates=("age", "year", "dose"))
    )
    ref = _check(res, sites, "days", ["age", "year", "dose"])
    # margin: plain 24-bit sums would give ~1e-8 here; two-word sums give ~1e-13
    assert _rel(res.coef, ref.params) <= 1e-11 and _rel(res.se, ref.bse) <= 1e-11


def test_ols_high_r_squared():
    rng = np.random.default_rng(11)
    sites = {}
    for i in range(3):
        x = rng.normal(0, 1, (60, 2))
        y = 5 + x @ [2.0, -1.0] + rng.normal(0, 1e-3, 60)
        sites[f"s{i}"] = pd.DataFrame({"y": y, "a": x[:, 0], "b": x[:, 1]})
    res = Simulation(sites).run(LinearRegression(outcome="y", covariates=("a", "b")))
    ref = _check(res, sites, "y", ["a", "b"])
    assert ref.rsquared > 0.999999


def test_ols_on_tcga_regions(tcga):
    covs = [
        "age_at_index",
        "ajcc_pathologic_stage_Stage IIA",
        "ajcc_pathologic_stage_Stage IIB",
        "ajcc_pathologic_stage_Stage IIIA",
        "race_white",
        "E",
    ]
    sites = tcga.sites("train")
    res = Simulation(sites).run(LinearRegression(outcome="T", covariates=tuple(covs)))
    _check(res, sites, "T", covs)


def test_tcga_39_covariates_refused_by_canada(tcga):
    # 40 parameters on Canada's 40 training patients: 1.0 > the default 0.33 per patient
    algo = LinearRegression(outcome="T", covariates=tcga.covariates)
    with pytest.raises(PolicyError, match="max_params_per_sample") as err:
        Simulation(tcga.sites("train")).run(algo)
    assert (
        err.value.rule == "max_params_per_sample" and err.value.site is None
    )  # data-dependent: the site is not named


def test_ols_dropna_matches_statsmodels_missing_drop(toy_sites):
    toy_sites["site1"].loc[[2, 5, 7], "x2"] = np.nan
    with pytest.raises(SchemaError, match="'x2' contains missing"):
        Simulation(toy_sites).run(LinearRegression(outcome="y", covariates=("x1", "x2")))
    res = Simulation(toy_sites).run(
        LinearRegression(outcome="y", covariates=("x1", "x2"), dropna=True)
    )
    pooled = pd.concat(toy_sites.values(), ignore_index=True)
    ref = sm.OLS(pooled["y"], sm.add_constant(pooled[["x1", "x2"]]), missing="drop").fit()
    assert res.n == len(pooled) - 3
    assert _rel(res.coef, ref.params) <= TOL and _rel(res.se, ref.bse) <= TOL


def test_collinear_covariates(toy_sites):
    for df in toy_sites.values():
        df["x3"] = 2 * df["x1"] - df["x2"]
        df["one"] = 1.0
    with pytest.raises(AlgorithmError, match="singular"):
        Simulation(toy_sites).run(LinearRegression(outcome="y", covariates=("x1", "x2", "x3")))
    with pytest.raises(AlgorithmError, match="singular"):
        Simulation(toy_sites).run(LinearRegression(outcome="y", covariates=("x1", "one")))


def test_bad_input_at_sites(toy_sites):
    for df in toy_sites.values():
        df["grade"] = "high"
    sim = Simulation(toy_sites)
    with pytest.raises(SchemaError, match=r"\['age'\] not found"):
        sim.run(LinearRegression(outcome="y", covariates=("x1", "age")))
    with pytest.raises(SchemaError, match=r"\['z'\] not found"):
        sim.run(LinearRegression(outcome="z", covariates=("x1",)))
    with pytest.raises(SchemaError, match="'grade' must be numeric"):
        sim.run(LinearRegression(outcome="y", covariates=("x1", "grade")))


def test_too_few_rows():
    sites = {f"s{i}": pd.DataFrame({"y": np.arange(10.0), "x": np.ones(10)}) for i in range(3)}
    for df in sites.values():
        for j in range(29):
            df[f"c{j}"] = np.arange(10.0) ** (j % 3)
    algo = LinearRegression(outcome="y", covariates=(*[f"c{j}" for j in range(29)], "x"))
    with pytest.raises(AlgorithmError, match="more rows than terms"):
        Simulation(sites, policy=Policy(max_params_per_sample=10)).run(algo)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"outcome": "y", "covariates": ()}, "covariates must name at least one column"),
        ({"outcome": "y", "covariates": "x1"}, "not one string"),
        ({"outcome": "y", "covariates": ("y", "x1")}, "also listed among the covariates"),
        ({"outcome": "", "covariates": ("x1",)}, "outcome must be a column name"),
        ({"outcome": "y", "covariates": ("x1", "x1")}, "more than once"),
        ({"outcome": "y", "covariates": ("x1",), "dropna": 1}, "dropna"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        LinearRegression(**kwargs)


def test_spec_round_trip():
    algo = LinearRegression(outcome="y", covariates=("a", "b"), dropna=True)
    assert algorithm_from_spec(algo.spec()) == algo
