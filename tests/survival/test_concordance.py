"""Federated Harrell's C against lifelines.utils.concordance_index on the pooled data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index

from consortia import Policy, Simulation
from consortia.data.tcga import load_tcga_brca
from consortia.errors import AlgorithmError, PolicyError, SchemaError, ValidationError
from consortia.survival._grid import day_grid, regular_grid, round_up_to_grid
from consortia.survival.concordance import (
    Concordance,
    cell_pair_counts,
    harrell_pair_counts,
)

OPEN = Policy(min_cell_count=1, allow_per_site=True)  # these tests ask for per-site C
COVS = ("x1", "x2", "x3")
BETA = (0.7, -0.4, 0.35)


def risk_sites(seed: int = 3, sizes: tuple[int, ...] = (150, 250, 200, 120)) -> dict:
    """Sites with three covariates, day times driven by them, independent censoring."""
    rng = np.random.default_rng(seed)
    sites = {}
    for i, n in enumerate(sizes):
        x = rng.normal(size=(n, 3)) + 0.2 * i
        t = np.ceil(rng.exponential(500 * np.exp(-(x @ [0.8, -0.5, 0.3]))))
        c = np.ceil(rng.uniform(1, 1500, n))
        sites[f"site{i}"] = pd.DataFrame(
            {"T": np.minimum(t, c), "E": (t <= c).astype(int), **dict(zip(COVS, x.T, strict=True))}
        )
    return sites


def risk_of(df: pd.DataFrame, covs=COVS, beta=BETA) -> np.ndarray:
    return df[list(covs)].to_numpy(float) @ np.asarray(beta)


def reference(sites: dict, covs=COVS, beta=BETA, time=None) -> float:
    data = pd.concat(sites.values(), ignore_index=True)
    risk = np.concatenate([risk_of(df, covs, beta) for df in sites.values()])
    return concordance_index(data["T"] if time is None else time, -risk, data["E"])


def test_pair_counts_match_lifelines_with_ties() -> None:
    rng = np.random.default_rng(0)
    t = rng.integers(1, 15, 300).astype(float)
    e = rng.integers(0, 2, 300)
    r = rng.integers(0, 6, 300).astype(float)  # many tied scores
    num, den = harrell_pair_counts(t, e, r)
    assert num / den == pytest.approx(concordance_index(t, -r, e), rel=1e-14)
    # the cell formula with one cell per distinct time and score is exact as well
    times = np.unique(t[e == 1])
    pos = np.searchsorted(times, t, side="right") - 1
    keep = pos >= 0
    d = np.zeros((times.size, 6))
    c = np.zeros((times.size, 6))
    np.add.at(d, (pos[keep], r[keep].astype(int)), e[keep])
    np.add.at(c, (pos[keep], r[keep].astype(int)), 1 - e[keep])
    conc, comp, _ = cell_pair_counts(d, c)
    assert (conc, comp) == (num, den)


def test_pooled_and_per_site_against_lifelines() -> None:
    sites = risk_sites()
    algo = Concordance(
        time="T",
        event="E",
        covariates=COVS,
        coefficients=BETA,
        time_grid=day_grid(1500),
        score_bins=2048,
        sites=tuple(sites),
    )
    res = Simulation(sites, policy=OPEN).run(algo)
    ref = reference(sites)
    assert res.error_bound <= 1e-3
    assert abs(res.c_index - ref) <= res.error_bound + 1e-12
    for name, df in sites.items():
        assert res.per_site[name] == pytest.approx(
            concordance_index(df["T"], -risk_of(df), df["E"]), rel=1e-12
        )
    assert list(res.summary.index) == [*sites, "pooled"]


def test_error_bound_holds_and_shrinks_with_bins_and_refinements() -> None:
    sites = risk_sites(seed=8)
    ref = reference(sites)
    sim = Simulation(sites, policy=OPEN)
    bounds = {}
    for bins, refinements in ((16, 0), (256, 0), (256, 1), (256, 3)):
        res = sim.run(
            Concordance(
                time="T",
                event="E",
                covariates=COVS,
                coefficients=BETA,
                time_grid=day_grid(1500),
                score_bins=bins,
                refinements=refinements,
            )
        )
        assert abs(res.c_index - ref) <= res.error_bound + 1e-12
        assert res.refinements <= refinements
        bounds[bins, refinements] = res.error_bound
    assert bounds[256, 0] < bounds[16, 0] / 4
    assert bounds[256, 3] < bounds[256, 1] < bounds[256, 0]


def test_tcga_brca_test_set_with_a_ridge_cox_model(shared_data) -> None:
    tcga = load_tcga_brca(shared_data / "tcga_brca")
    covs = tcga.covariates
    train = tcga.pooled("train")[[*covs, "T", "E"]]
    beta = tuple(CoxPHFitter(penalizer=0.01).fit(train, "T", "E").params_[list(covs)])
    sites = tcga.sites("test")
    algo = Concordance(
        time="T",
        event="E",
        covariates=covs,
        coefficients=beta,
        time_grid=day_grid(tcga.frame["T"].max()),
        sites=tuple(sites),
        exact_times=True,
    )
    res = Simulation(
        sites, policy=Policy(min_cell_count=1, min_cohort_size=10, allow_per_site=True)
    ).run(algo)
    ref = reference(sites, covs, beta)
    assert abs(res.c_index - ref) <= res.error_bound + 1e-12
    assert res.error_bound <= 1e-4  # refinement resolves the cross-site ties of score bins
    assert res.c_index == pytest.approx(0.843, abs=0.01)  # the data README's pooled figure
    for name, df in sites.items():
        if df["E"].sum() == 0:
            assert np.isnan(res.per_site[name])
        else:
            ref_site = concordance_index(df["T"], -risk_of(df, covs, beta), df["E"])
            assert res.per_site[name] == pytest.approx(ref_site, rel=1e-12)


def test_coarse_time_grid_equals_lifelines_on_rounded_times() -> None:
    sites = risk_sites(seed=5)
    for df in sites.values():
        df["T"] = df["T"] - 0.5  # off any integer grid
    grid = regular_grid(1500, 50)
    res = Simulation(sites, policy=OPEN).run(
        Concordance(time="T", event="E", covariates=COVS, coefficients=BETA, time_grid=grid)
    )
    data = pd.concat(sites.values(), ignore_index=True)
    ref = reference(sites, time=round_up_to_grid(data["T"], grid))
    assert abs(res.c_index - ref) <= res.error_bound + 1e-12
    assert res.error_bound <= 1e-3


# ----------------------------------------------------------------------------- edge cases


def test_default_policy_refuses_fine_cells() -> None:
    with pytest.raises(PolicyError, match="min_cell_count"):
        Simulation(risk_sites()).run(
            Concordance(
                time="T", event="E", covariates=COVS, coefficients=BETA, time_grid=day_grid(1500)
            )
        )


def test_all_censored_is_a_clear_error() -> None:
    sites = risk_sites()
    for df in sites.values():
        df["E"] = 0
    with pytest.raises(AlgorithmError, match="every patient is censored"):
        Simulation(sites, policy=OPEN).run(
            Concordance(
                time="T", event="E", covariates=COVS, coefficients=BETA, time_grid=day_grid(1500)
            )
        )


def test_site_without_events_ties_everywhere_and_a_discrete_score() -> None:
    rng = np.random.default_rng(12)
    sites = {}
    for i in range(3):
        n = 80
        sites[f"s{i}"] = pd.DataFrame(
            {
                "T": rng.integers(1, 5, n).astype(float),  # ties at every time
                "E": rng.integers(0, 2, n) if i else np.zeros(n, int),  # s0: no events
                "stage": rng.integers(0, 3, n),  # a discrete score: many tied scores
            }
        )
    res = Simulation(sites, policy=OPEN).run(
        Concordance(
            time="T",
            event="E",
            covariates=("stage",),
            coefficients=(1.0,),
            time_grid=day_grid(4),
            sites=tuple(sites),
        )
    )
    ref = reference(sites, ("stage",), (1.0,))
    # tied scores share a bin, where 1/2 is exact: the estimate is exact, the bound conservative
    assert res.c_index == pytest.approx(ref, rel=1e-12)
    assert abs(res.c_index - ref) <= res.error_bound + 1e-12
    assert np.isnan(res.per_site["s0"])
    assert res.site_pairs["s0"] == (0.0, 0.0)


def test_bad_values_and_parameters() -> None:
    sites = risk_sites()
    sites["site1"].loc[2, "x2"] = np.nan
    algo = Concordance(
        time="T", event="E", covariates=COVS, coefficients=BETA, time_grid=day_grid(1500)
    )
    with pytest.raises(SchemaError, match="column 'x2' contains missing"):
        Simulation(sites, policy=OPEN).run(algo)
    sites = risk_sites()
    sites["site0"].loc[0, "T"] = -1.0
    with pytest.raises(SchemaError, match="time column 'T' contains negative times"):
        Simulation(sites, policy=OPEN).run(algo)
    with pytest.raises(ValidationError, match="one value per covariate"):
        Concordance(time="T", event="E", covariates=COVS, coefficients=(1.0,), time_grid=(0, 1))
    with pytest.raises(ValidationError, match="score_bins"):
        Concordance(
            time="T",
            event="E",
            covariates=("x1",),
            coefficients=(1.0,),
            time_grid=(0, 1),
            score_bins=0,
        )
    with pytest.raises(ValidationError, match="coefficients must be finite"):
        Concordance(
            time="T", event="E", covariates=("x1",), coefficients=(np.nan,), time_grid=(0, 1)
        )


def test_zero_variance_score_gives_one_half() -> None:
    sites = risk_sites()
    res = Simulation(sites, policy=OPEN).run(
        Concordance(
            time="T",
            event="E",
            covariates=("x1",),
            coefficients=(0.0,),
            time_grid=day_grid(1500),
            score_bins=256,
        )
    )
    assert res.c_index == 0.5 == reference(sites, ("x1",), (0.0,))


@pytest.mark.parametrize("seed", range(3))
def test_random_small_cohorts_with_tied_times(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    sites = {
        f"s{i}": pd.DataFrame(
            {
                "T": rng.integers(0, 20, n).astype(float),
                "E": rng.integers(0, 2, n),
                "x1": rng.normal(size=n),
                "x2": rng.integers(0, 2, n),
            }
        )
        for i, n in enumerate(rng.integers(15, 60, 3))
    }
    res = Simulation(
        sites, policy=Policy(min_cell_count=1, min_cohort_size=1, allow_per_site=True)
    ).run(
        Concordance(
            time="T",
            event="E",
            covariates=("x1", "x2"),
            coefficients=(0.5, -1.0),
            time_grid=day_grid(19),
            sites=tuple(sites),
        )
    )
    ref = reference(sites, ("x1", "x2"), (0.5, -1.0))
    assert res.error_bound == 0.0
    assert res.c_index == pytest.approx(ref, rel=1e-12)


def test_per_site_concordance_is_refused_unless_the_owner_allows_it() -> None:
    sites = risk_sites()
    algo = Concordance(
        time="T",
        event="E",
        covariates=COVS,
        coefficients=BETA,
        time_grid=day_grid(1500),
        score_bins=64,
        sites=tuple(sites),
    )
    with pytest.raises(PolicyError, match="allow_per_site") as err:
        Simulation(sites, policy=Policy(min_cell_count=1)).run(algo)
    assert err.value.rule == "allow_per_site"
