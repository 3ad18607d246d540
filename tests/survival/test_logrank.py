"""Federated log-rank test against lifelines (unstratified) and statsmodels (stratified)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.statistics import logrank_test, multivariate_logrank_test
from statsmodels.duration.survfunc import survdiff

from consortia import Dataset, Policy, Simulation
from consortia.data.tcga import load_tcga_brca
from consortia.errors import AlgorithmError, PolicyError, SchemaError, ValidationError
from consortia.survival._grid import day_grid, regular_grid, round_up_to_grid
from consortia.survival.logrank import LogRank

OPEN = Policy(min_cell_count=1)
GRID = day_grid(120)


def week_sites(seed: int = 0, sizes: tuple[int, ...] = (80, 60, 70, 50)) -> dict[str, pd.DataFrame]:
    """Integer times in weeks (many ties), three arms with different hazards, a sex stratum."""
    rng = np.random.default_rng(seed)
    sites = {}
    for i, n in enumerate(sizes):
        arm = rng.integers(0, 3, n)
        sex = rng.choice(["f", "m"], n)
        scale = 30.0 * (1 + 0.4 * arm) * np.where(sex == "f", 1.3, 1.0) * (1 + 0.2 * i)
        t = np.ceil(rng.exponential(scale))
        c = np.ceil(rng.uniform(1, 120, n))
        sites[f"site{i}"] = pd.DataFrame(
            {"T": np.minimum(t, c), "E": (t <= c).astype(int), "arm": arm, "sex": sex}
        )
    return sites


def pooled(sites: dict[str, pd.DataFrame]) -> pd.DataFrame:
    parts = [df.assign(site=name) for name, df in sites.items()]
    return pd.concat(parts, ignore_index=True)


def test_three_groups_exact_against_lifelines() -> None:
    sites = week_sites()
    data = pooled(sites)
    res = Simulation(sites, policy=OPEN).run(
        LogRank(time="T", event="E", group="arm", groups=(0, 1, 2), time_grid=GRID)
    )
    ref = multivariate_logrank_test(data["T"], data["arm"], data["E"])
    assert res.df == 2
    assert res.chi2 == pytest.approx(ref.test_statistic, rel=1e-10)
    assert res.p_value == pytest.approx(ref.p_value, rel=1e-9)
    np.testing.assert_array_equal(res.observed, data.groupby("arm")["E"].sum())
    assert res.expected.sum() == pytest.approx(data["E"].sum(), rel=1e-12)
    np.testing.assert_array_equal(res.summary["n"], data["arm"].value_counts().sort_index())


def test_two_groups_exact_against_logrank_test() -> None:
    sites = week_sites(seed=5)
    for df in sites.values():
        df["arm"] = np.where(df["arm"] == 0, "control", "treated")
    data = pooled(sites)
    res = Simulation(sites, policy=OPEN).run(
        LogRank(time="T", event="E", group="arm", groups=("control", "treated"), time_grid=GRID)
    )
    a, b = data[data.arm == "control"], data[data.arm == "treated"]
    ref = logrank_test(a["T"], b["T"], a["E"], b["E"])
    assert res.test_statistic == pytest.approx(ref.test_statistic, rel=1e-10)
    assert res.p_value == pytest.approx(ref.p_value, rel=1e-9)
    assert res.df == 1


@pytest.mark.parametrize("by", ["sex", "site", "sex+site"])
def test_stratified_exact_against_statsmodels(by: str) -> None:
    sites = week_sites(seed=2)
    data = pooled(sites)
    kwargs: dict = {}
    if "sex" in by:
        kwargs.update(strata="sex", strata_levels=("f", "m"))
    if "site" in by:
        kwargs.update(stratify_by_site=True, sites=tuple(sites))
    res = Simulation(sites, policy=OPEN).run(
        LogRank(time="T", event="E", group="arm", groups=(0, 1, 2), time_grid=GRID, **kwargs)
    )
    strata = {"sex": data["sex"], "site": data["site"], "sex+site": data["sex"] + data["site"]}
    chi2, p = survdiff(data["T"], data["E"], data["arm"], strata=strata[by])
    assert res.chi2 == pytest.approx(chi2, rel=1e-10)
    assert res.p_value == pytest.approx(p, rel=1e-9)
    assert res.n_strata == {"sex": 2, "site": 4, "sex+site": 8}[by]


def test_site_strata_release_no_per_time_counts() -> None:
    """A site stratum lies within one site: only summed O, E and V leave it."""
    sites = week_sites(seed=3)
    algo = LogRank(
        time="T", event="E", group="arm", groups=(0, 1, 2), time_grid=GRID, stratify_by_site=True
    )
    part = algo.local("site_strata", {}, Dataset(sites["site0"], site="site0"))
    assert set(part.arrays) == {
        "observed",
        "n",
        "strata",
        "expected",
        "expected_lo",
        "variance",
        "variance_lo",
    }
    assert max(a.size for a in part.arrays.values()) == 9  # G x G, nothing per grid point
    data = pooled(sites)
    chi2, _ = survdiff(data["T"], data["E"], data["arm"], strata=data["site"])
    assert Simulation(sites, policy=OPEN).run(algo).chi2 == pytest.approx(chi2, rel=1e-10)


def test_coarse_grid_equals_reference_on_rounded_times() -> None:
    rng = np.random.default_rng(9)
    sites = {}
    for i in range(3):
        n = 150
        arm = rng.integers(0, 2, n)
        t = rng.exponential(200.0 * (1 + arm))
        c = rng.uniform(0, 500, n)
        sites[f"s{i}"] = pd.DataFrame(
            {"T": np.minimum(t, c), "E": (t <= c).astype(int), "arm": arm}
        )
    data = pooled(sites)
    grid = regular_grid(500, 25)
    res = Simulation(sites, policy=OPEN).run(
        LogRank(time="T", event="E", group="arm", groups=(0, 1), time_grid=grid)
    )
    ref = multivariate_logrank_test(round_up_to_grid(data["T"], grid), data["arm"], data["E"])
    assert res.chi2 == pytest.approx(ref.test_statistic, rel=1e-10)


def test_tcga_brca_regions_and_a_clinical_group(shared_data) -> None:
    tcga = load_tcga_brca(shared_data / "tcga_brca")
    sites = tcga.sites()
    data = tcga.pooled()
    # pick a one-hot clinical column present at several regions
    column = next(c for c in tcga.covariates[1:] if 100 < data[c].sum() < 900)
    grid = day_grid(data["T"].max())
    sim = Simulation(sites, policy=OPEN)
    res = sim.run(
        LogRank(time="T", event="E", group=column, groups=(0, 1), time_grid=grid, exact_times=True)
    )
    ref = multivariate_logrank_test(data["T"], data[column], data["E"])
    assert res.chi2 == pytest.approx(ref.test_statistic, rel=1e-10)
    assert res.p_value == pytest.approx(ref.p_value, rel=1e-9)
    strat = sim.run(
        LogRank(
            time="T",
            event="E",
            group=column,
            groups=(0, 1),
            time_grid=grid,
            stratify_by_site=True,
            sites=tuple(sites),
        )
    )
    chi2, _ = survdiff(data["T"], data["E"], data[column], strata=data["region"])
    assert strat.chi2 == pytest.approx(chi2, rel=1e-10)


# ----------------------------------------------------------------------------- edge cases


def test_default_policy_refuses_a_fine_grid() -> None:
    with pytest.raises(PolicyError, match="min_cell_count"):
        Simulation(week_sites()).run(
            LogRank(time="T", event="E", group="arm", groups=(0, 1, 2), time_grid=GRID)
        )


def test_all_censored_is_a_clear_error() -> None:
    sites = week_sites()
    for df in sites.values():
        df["E"] = 0
    with pytest.raises(AlgorithmError, match="every patient is censored"):
        Simulation(sites, policy=OPEN).run(
            LogRank(time="T", event="E", group="arm", groups=(0, 1, 2), time_grid=GRID)
        )


def test_ties_at_every_time() -> None:
    rng = np.random.default_rng(4)
    sites = {
        f"s{i}": pd.DataFrame(
            {
                "T": rng.integers(1, 4, 60).astype(float),
                "E": rng.integers(0, 2, 60),
                "arm": rng.integers(0, 2, 60),
            }
        )
        for i in range(3)
    }
    data = pooled(sites)
    res = Simulation(sites, policy=OPEN).run(
        LogRank(time="T", event="E", group="arm", groups=(0, 1), time_grid=day_grid(3))
    )
    ref = multivariate_logrank_test(data["T"], data["arm"], data["E"])
    assert res.chi2 == pytest.approx(ref.test_statistic, rel=1e-10)


def test_site_without_events_and_group_at_one_site_only() -> None:
    sites = week_sites()
    sites["site1"]["E"] = 0
    sites["site3"]["arm"] = 3  # arm 3 only at site3
    data = pooled(sites)
    res = Simulation(sites, policy=OPEN).run(
        LogRank(time="T", event="E", group="arm", groups=(0, 1, 2, 3), time_grid=GRID)
    )
    ref = multivariate_logrank_test(data["T"], data["arm"], data["E"])
    assert res.df == 3
    assert res.chi2 == pytest.approx(ref.test_statistic, rel=1e-10)


def test_empty_group_is_a_clear_error() -> None:
    with pytest.raises(AlgorithmError, match="group '7' has no patients at any site"):
        Simulation(week_sites(), policy=OPEN).run(
            LogRank(time="T", event="E", group="arm", groups=(0, 1, 2, 7), time_grid=GRID)
        )


def test_bad_values_and_parameters() -> None:
    sites = week_sites()
    sites["site0"]["T"] = sites["site0"]["T"].astype(float)
    sites["site0"].loc[0, ["T", "E"]] = (500.0, 1)  # beyond the grid: censored at its end
    beyond = Simulation(sites, policy=OPEN).run(
        LogRank(time="T", event="E", group="arm", groups=(0, 1, 2), time_grid=GRID)
    )
    sites["site0"].loc[0, ["T", "E"]] = (GRID[-1], 0)
    at_end = Simulation(sites, policy=OPEN).run(
        LogRank(time="T", event="E", group="arm", groups=(0, 1, 2), time_grid=GRID)
    )
    assert beyond.chi2 == pytest.approx(at_end.chi2, rel=1e-12)
    sites = week_sites()
    sites["site2"].loc[1, "sex"] = None
    with pytest.raises(SchemaError, match="column 'sex' contains missing values"):
        Simulation(sites, policy=OPEN).run(
            LogRank(
                time="T",
                event="E",
                group="arm",
                groups=(0, 1, 2),
                time_grid=GRID,
                strata="sex",
                strata_levels=("f", "m"),
            )
        )
    with pytest.raises(AlgorithmError, match="not among the sites declared"):
        Simulation(week_sites(), policy=OPEN).run(
            LogRank(
                time="T",
                event="E",
                group="arm",
                groups=(0, 1, 2),
                time_grid=GRID,
                stratify_by_site=True,
                sites=("site0", "site1"),
            )
        )
    with pytest.raises(ValidationError, match="at least two levels"):
        LogRank(time="T", event="E", group="arm", groups=(0,), time_grid=GRID)
    with pytest.raises(ValidationError, match="sites are declared but stratify_by_site"):
        LogRank(time="T", event="E", group="arm", groups=(0, 1), time_grid=GRID, sites=("a",))
    with pytest.raises(ValidationError, match="groups must not repeat"):
        LogRank(time="T", event="E", group="arm", groups=(0, 0), time_grid=GRID)


@pytest.mark.parametrize("seed", range(4))
def test_random_small_cohorts_with_heavy_ties(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    sites = {
        f"s{i}": pd.DataFrame(
            {
                "T": rng.integers(0, 10, n).astype(float),
                "E": rng.integers(0, 2, n),
                "g": rng.integers(0, 3, n),
            }
        )
        for i, n in enumerate(rng.integers(15, 40, 3))
    }
    data = pooled(sites)
    res = Simulation(sites, policy=Policy(min_cell_count=1, min_cohort_size=1)).run(
        LogRank(time="T", event="E", group="g", groups=(0, 1, 2), time_grid=day_grid(9))
    )
    ref = multivariate_logrank_test(data["T"], data["g"], data["E"])
    assert res.chi2 == pytest.approx(ref.test_statistic, rel=1e-9)
    assert res.p_value == pytest.approx(ref.p_value, rel=1e-8, abs=1e-15)


# --------------------------------------------------------------------------- planned grids


def tied_sites(seed: int = 0, sizes: tuple[int, ...] = (400, 300, 350)) -> dict[str, pd.DataFrame]:
    """Whole-month times (many ties), two arms with different hazards."""
    rng = np.random.default_rng(seed)
    sites = {}
    for i, n in enumerate(sizes):
        arm = rng.integers(0, 2, n)
        t = np.ceil(rng.exponential(np.where(arm == 0, 20.0, 28.0)))
        c = np.ceil(rng.uniform(6, 80, n))
        sites[f"site{i}"] = pd.DataFrame(
            {"T": np.minimum(t, c), "E": (t <= c).astype(int), "arm": arm}
        )
    return sites


def lifelines_at_grid_end(data: pd.DataFrame, end: float, group: str) -> float:
    """lifelines' exact log-rank chi2 on the pooled data censored at the planned grid's end."""
    t = np.minimum(data["T"], end)
    e = np.where(data["T"] > end, 0, data["E"])
    g = data[group].to_numpy() == data[group].min()
    return logrank_test(t[g], t[~g], e[g], e[~g]).test_statistic


def test_planned_grid_under_the_default_policy() -> None:
    sites = tied_sites()
    data = pd.concat(sites.values(), ignore_index=True)
    algo = LogRank(
        time="T",
        event="E",
        group="arm",
        groups=(0, 1),
        horizon=60,
        plan_cells=15,
        plan_epsilon=1.0,
    )
    assert algo.privacy_cost() == (1.0, 1e-6)
    res = Simulation(sites).run(algo)  # the DEFAULT policy
    assert res.cells_below_k == 0
    grid = res.plan.grids[0]
    ref = lifelines_at_grid_end(data, grid[-1], "arm")
    rel = abs(res.chi2 - ref) / ref
    print(f"planned log-rank, synthetic: {grid.size} bins, chi2 {res.chi2:.3f} vs {ref:.3f}")
    assert rel <= 0.2
    np.testing.assert_array_equal(res.n, [(data["arm"] == g).sum() for g in (0, 1)])
    assert res.observed.sum() == (data["E"] * (data["T"] <= grid[-1])).sum()


def test_planned_grid_tcga_brca_regions(shared_data) -> None:
    tcga = load_tcga_brca(shared_data / "tcga_brca")
    data = tcga.pooled()
    res = Simulation(tcga.sites()).run(
        LogRank(
            time="T",
            event="E",
            group="treatment_or_therapy_yes",
            groups=(0, 1),
            horizon=4000,
            plan_cells=10,
            plan_epsilon=2.0,
        )
    )
    assert res.cells_below_k == 0
    end = res.plan.grids[0][-1]
    ref = lifelines_at_grid_end(data, end, "treatment_or_therapy_yes")
    rel = abs(res.chi2 - ref) / ref
    print(
        f"planned log-rank, TCGA-BRCA: bins {res.plan.grids[0].tolist()}, chi2 {res.chi2:.3f}"
        f" vs {ref:.3f} (rel {rel:.3f})"
    )
    assert rel <= 0.3
    assert res.p_value < 1e-4


def test_planned_grid_parameters() -> None:
    with pytest.raises(ValidationError, match="not with strata, stratify_by_site"):
        LogRank(
            time="T",
            event="E",
            group="arm",
            groups=(0, 1),
            horizon=10,
            strata="s",
            strata_levels=("a",),
        )
    with pytest.raises(ValidationError, match="not with strata, stratify_by_site"):
        LogRank(time="T", event="E", group="arm", groups=(0, 1), horizon=10, stratify_by_site=True)
    with pytest.raises(ValidationError, match="time_grid is required, or horizon"):
        LogRank(time="T", event="E", group="arm", groups=(0, 1))
