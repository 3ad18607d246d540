"""Federated logistic regression through the full Simulation path.

Oracles on the pooled data: statsmodels ``Logit`` (unpenalised) and scikit-learn
``LogisticRegression`` (ridge, ``C = 1 / penalty``, tight tolerance).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.special import expit
from sklearn.linear_model import LogisticRegression as SkLogistic

from consortia import Policy, Simulation
from consortia.data.tcga import load_tcga_brca
from consortia.errors import (
    AlgorithmError,
    ConvergenceError,
    PolicyError,
    SchemaError,
    ValidationError,
)
from consortia.protocol import algorithm_from_spec
from consortia.stats import LogisticRegression

TOL = 1e-6
RELAXED = Policy(max_params_per_sample=1.0)


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = np.abs(a - b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.max(np.where(diff == 0, 0.0, diff / np.abs(b))))


def _pooled(sites):
    return pd.concat(sites.values(), ignore_index=True)


def _check_logit(res, sites, outcome, covariates):
    pooled = _pooled(sites)
    ref = sm.Logit(pooled[outcome], sm.add_constant(pooled[covariates])).fit(
        disp=0, method="newton", tol=1e-14, maxiter=100
    )
    assert res.terms == ("Intercept", *covariates)
    for mine, theirs in [
        (res.coef, ref.params),
        (res.se, ref.bse),
        (res.z, ref.tvalues),
        (res.p, ref.pvalues),
        (res.cov, ref.cov_params()),
        (res.log_likelihood, ref.llf),
    ]:
        assert _rel(mine, theirs) <= TOL
    assert res.converged and res.rounds <= 10 and res.n == len(pooled)


def _sklearn(sites, outcome, covariates, penalty):
    pooled = _pooled(sites)
    x, y = pooled[list(covariates)].to_numpy(float), pooled[outcome].to_numpy()
    sk = SkLogistic(C=1.0 / penalty, tol=1e-12, max_iter=1000, solver="newton-cholesky")
    sk.fit(x, y)
    coef = np.concatenate([sk.intercept_, sk.coef_[0]])
    # inverse of the penalised Hessian at the optimum, computed on the pooled data
    design = np.column_stack([np.ones(len(x)), x])
    p = expit(design @ coef)
    hess = (design * (p * (1 - p))[:, None]).T @ design
    hess[1:, 1:] += penalty * np.eye(len(covariates))
    se = np.sqrt(np.diag(np.linalg.inv(hess)))
    return coef, se


@pytest.fixture(scope="module")
def tcga(shared_data):
    return load_tcga_brca(shared_data / "tcga_brca")


def test_logit_matches_statsmodels_on_toy_sites(toy_sites):
    res = Simulation(toy_sites).run(LogisticRegression(outcome="event", covariates=("x1", "x2")))
    _check_logit(res, toy_sites, "event", ["x1", "x2"])
    # the first Newton step comes with the setup round: one round per further step
    assert res.penalty == 0 and res.rounds == res.iterations
    assert _rel(res.odds_ratio, np.exp(res.coef)) == 0
    assert list(res.summary.index) == ["Intercept", "x1", "x2"]


@pytest.mark.parametrize("penalty", [0.5, 20.0])
def test_ridge_matches_sklearn(toy_sites, penalty):
    res = Simulation(toy_sites).run(
        LogisticRegression(outcome="event", covariates=("x1", "x2"), penalty=penalty)
    )
    coef, se = _sklearn(toy_sites, "event", ("x1", "x2"), penalty)
    assert _rel(res.coef, coef) <= TOL
    assert _rel(res.se, se) <= TOL
    assert res.rounds <= 10 and res.penalty == penalty


def test_ridge_convention_is_sklearn_lbfgs_too(toy_sites):
    # an independent solver of sklearn: the convention (C = 1/penalty, intercept free)
    res = Simulation(toy_sites).run(
        LogisticRegression(outcome="event", covariates=("x1", "x2"), penalty=3.0)
    )
    pooled = _pooled(toy_sites)
    sk = SkLogistic(C=1 / 3.0, tol=1e-12, max_iter=10_000, solver="lbfgs")
    sk.fit(pooled[["x1", "x2"]].to_numpy(), pooled["event"].to_numpy())
    assert _rel(res.coef, np.concatenate([sk.intercept_, sk.coef_[0]])) <= 1e-5


def test_logit_on_tcga_regions(tcga):
    covs = [
        "age_at_index",
        "ajcc_pathologic_stage_Stage IIIA",
        "ajcc_pathologic_stage_Stage IIIC",
        "race_black or african american",
        "ajcc_pathologic_t_T3",
    ]
    sites = tcga.sites()
    res = Simulation(sites).run(LogisticRegression(outcome="E", covariates=tuple(covs)))
    _check_logit(res, sites, "E", covs)


def test_ridge_all_covariates_on_tcga(tcga):
    sites = tcga.sites()
    algo = LogisticRegression(outcome="E", covariates=tcga.covariates, penalty=1.0)
    res = Simulation(sites, policy=RELAXED).run(algo)
    coef, se = _sklearn(sites, "E", tcga.covariates, 1.0)
    assert _rel(res.coef, coef) <= TOL
    assert _rel(res.se, se) <= TOL
    assert res.rounds <= 10
    # margin: plain 24-bit sums would give ~6e-7 here; two-word sums give ~1e-13
    assert _rel(res.coef, coef) <= 1e-10


def test_tcga_39_covariates_refused_by_canada(tcga):
    algo = LogisticRegression(outcome="E", covariates=tcga.covariates, penalty=1.0)
    with pytest.raises(PolicyError, match="max_params_per_sample") as err:
        Simulation(tcga.sites("train")).run(algo)
    assert (
        err.value.rule == "max_params_per_sample" and err.value.site is None
    )  # data-dependent: the site is not named


def test_site_with_one_class(toy_sites):
    toy_sites["site0"]["event"] = 0
    toy_sites["site3"]["event"] = 1
    res = Simulation(toy_sites).run(LogisticRegression(outcome="event", covariates=("x1", "x2")))
    _check_logit(res, toy_sites, "event", ["x1", "x2"])


def _separated_sites(quasi: bool) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(5)
    sites = {}
    for i in range(3):
        x = rng.normal(0, 1, 40)
        y = (x > 0).astype(int)
        if quasi:  # ties at the boundary keep the likelihood from reaching 1
            x[:4], y[:4] = 0.0, [0, 1, 0, 1]
        sites[f"s{i}"] = pd.DataFrame({"x": x, "w": rng.normal(0, 1, 40), "y": y})
    return sites


@pytest.mark.parametrize("quasi", [False, True])
def test_separation_raises(quasi):
    algo = LogisticRegression(outcome="y", covariates=("x", "w"))
    with pytest.raises(ConvergenceError, match="separation"):
        Simulation(_separated_sites(quasi)).run(algo)


def test_ridge_handles_separation():
    sites = _separated_sites(False)
    res = Simulation(sites).run(LogisticRegression(outcome="y", covariates=("x", "w"), penalty=1))
    coef, _ = _sklearn(sites, "y", ("x", "w"), 1.0)
    assert _rel(res.coef, coef) <= TOL


def test_iteration_budget(toy_sites):
    algo = LogisticRegression(outcome="event", covariates=("x1", "x2"), max_iter=1)
    with pytest.raises(ConvergenceError, match="did not converge in 1 Newton steps"):
        Simulation(toy_sites).run(algo)


def test_collinear_without_penalty(toy_sites):
    for df in toy_sites.values():
        df["x3"] = df["x1"] + df["x2"]
    with pytest.raises(AlgorithmError, match="singular"):
        Simulation(toy_sites).run(
            LogisticRegression(outcome="event", covariates=("x1", "x2", "x3"))
        )


def test_bad_outcomes(toy_sites):
    sim = Simulation(toy_sites)
    with pytest.raises(SchemaError, match="'y' must hold only 0 and 1"):
        sim.run(LogisticRegression(outcome="y", covariates=("x1",)))
    with pytest.raises(SchemaError, match=r"\['dead'\] not found"):
        sim.run(LogisticRegression(outcome="dead", covariates=("x1",)))
    for df in toy_sites.values():
        df["none"] = 0
    with pytest.raises(AlgorithmError, match="single value over all sites"):
        sim.run(LogisticRegression(outcome="none", covariates=("x1",)))


def test_missing_values_and_dropna(toy_sites):
    toy_sites["site2"].loc[[0, 3], "x1"] = np.nan
    with pytest.raises(SchemaError, match="'x1' contains missing"):
        Simulation(toy_sites).run(LogisticRegression(outcome="event", covariates=("x1", "x2")))
    res = Simulation(toy_sites).run(
        LogisticRegression(outcome="event", covariates=("x1", "x2"), dropna=True)
    )
    complete = {k: v.dropna() for k, v in toy_sites.items()}
    _check_logit(res, complete, "event", ["x1", "x2"])


def test_non_numeric_covariate(toy_sites):
    for df in toy_sites.values():
        df["stage"] = "II"
    with pytest.raises(SchemaError, match="'stage' must be numeric"):
        Simulation(toy_sites).run(LogisticRegression(outcome="event", covariates=("stage",)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"covariates": ()}, "covariates must name at least one column"),
        ({"covariates": ("event",)}, "also listed among the covariates"),
        ({"penalty": -1.0}, "penalty must be a finite number >= 0"),
        ({"penalty": float("inf")}, "penalty must be a finite number"),
        ({"penalty": True}, "penalty"),
        ({"tol": 0.0}, "tol must be a finite number in"),
        ({"max_iter": 0}, "max_iter must be a positive integer"),
        ({"dropna": None}, "dropna"),
    ],
)
def test_bad_parameters(kwargs, match):
    params = {"outcome": "event", "covariates": ("x1",), **kwargs}
    with pytest.raises(ValidationError, match=match):
        LogisticRegression(**params)


def test_spec_round_trip():
    algo = LogisticRegression(outcome="e", covariates=("a", "b"), penalty=0.25, tol=1e-9)
    assert algorithm_from_spec(algo.spec()) == algo


def test_each_study_reads_the_current_data(toy_sites):
    # sites read and validate their rows once per study; a later study sees new data
    sim = Simulation(toy_sites)
    algo = LogisticRegression(outcome="event", covariates=("x1", "x2"))
    first = sim.run(algo)
    toy_sites["site1"].loc[:20, "event"] = 1 - toy_sites["site1"].loc[:20, "event"]
    second = sim.run(algo)
    assert not np.allclose(first.coef, second.coef)
    _check_logit(second, toy_sites, "event", ["x1", "x2"])
