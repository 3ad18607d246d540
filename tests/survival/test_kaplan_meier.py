"""Federated Kaplan-Meier against lifelines' KaplanMeierFitter on the pooled data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.utils import median_survival_times

from consortia import Policy, Simulation
from consortia.data.tcga import load_tcga_brca
from consortia.errors import AlgorithmError, PolicyError, SchemaError, ValidationError
from consortia.survival._grid import (
    administrative_censoring,
    day_grid,
    regular_grid,
    round_up_to_grid,
)
from consortia.survival.kaplan_meier import KaplanMeier, KaplanMeierCurve

OPEN = Policy(min_cell_count=1)


def day_sites(seed: int = 0, sizes: tuple[int, ...] = (70, 90, 60)) -> dict[str, pd.DataFrame]:
    """Sites with integer-day times, an arm (a/b) with different hazards, a sex column."""
    rng = np.random.default_rng(seed)
    sites = {}
    for i, n in enumerate(sizes):
        arm = rng.choice(["a", "b"], n)
        scale = np.where(arm == "a", 300.0, 450.0)
        t = np.ceil(rng.exponential(scale))
        c = np.ceil(rng.uniform(1, 700, n))
        sites[f"site{i}"] = pd.DataFrame(
            {"T": np.minimum(t, c), "E": (t <= c).astype(int), "arm": arm}
        )
    return sites


def pooled(sites: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(sites.values(), ignore_index=True)


def assert_matches_lifelines(curve: KaplanMeierCurve, time: pd.Series, event: pd.Series) -> None:
    """Survival, band, at-risk and medians equal lifelines' on the same (pooled) data."""
    kmf = KaplanMeierFitter(alpha=curve.alpha).fit(time, event)
    tl = kmf.timeline
    np.testing.assert_allclose(
        curve.survival_at(tl), kmf.survival_function_.iloc[:, 0], rtol=1e-12, atol=1e-14
    )
    pos = np.searchsorted(curve.timeline, tl, side="right") - 1
    lower = np.where(pos < 0, 1.0, curve.ci_lower[np.maximum(pos, 0)])
    upper = np.where(pos < 0, 1.0, curve.ci_upper[np.maximum(pos, 0)])
    ci = kmf.confidence_interval_
    np.testing.assert_allclose(lower, ci.iloc[:, 0], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(upper, ci.iloc[:, 1], rtol=1e-10, atol=1e-14)
    table = kmf.event_table
    np.testing.assert_array_equal(curve.at_risk_at(table.index.values), table["at_risk"])
    assert curve.median == kmf.median_survival_time_
    ref_ci = median_survival_times(kmf.confidence_interval_).iloc[0]
    assert curve.median_ci == (ref_ci.iloc[0], ref_ci.iloc[1])
    assert curve.n == len(time) and curve.events == int(event.sum())


def test_day_grid_is_exact_per_group() -> None:
    sites = day_sites()
    data = pooled(sites)
    algo = KaplanMeier(
        time="T",
        event="E",
        time_grid=day_grid(700),
        group="arm",
        groups=("a", "b"),
        exact_times=True,
    )
    res = Simulation(sites, policy=OPEN).run(algo)
    assert res.labels == ("a", "b")
    for g in ("a", "b"):
        sub = data[data["arm"] == g]
        assert_matches_lifelines(res[g], sub["T"], sub["E"])
    # survival at chosen times, and the summary table
    times = [0.5, 100, 365, 699]
    kmf = KaplanMeierFitter().fit(data.loc[data.arm == "a", "T"], data.loc[data.arm == "a", "E"])
    np.testing.assert_allclose(
        res.survival_at(times)["a"], kmf.survival_function_at_times(times), rtol=1e-12
    )
    assert list(res.summary.columns[:3]) == ["n", "events", "median"]
    assert res.summary.loc["b", "n"] == (data["arm"] == "b").sum()


def test_default_policy_refuses_a_day_grid_on_small_data() -> None:
    algo = KaplanMeier(time="T", event="E", time_grid=day_grid(700))
    with pytest.raises(PolicyError, match="min_cell_count") as info:
        Simulation(day_sites()).run(algo)
    assert info.value.rule == "min_cell_count"


def test_coarse_grid_equals_lifelines_on_times_rounded_up() -> None:
    rng = np.random.default_rng(7)
    sites = {}
    for i in range(3):
        n = 120
        t = rng.exponential(400.0, n)  # continuous times: not on any grid
        c = rng.uniform(0, 800, n)
        sites[f"s{i}"] = pd.DataFrame({"T": np.minimum(t, c), "E": (t <= c).astype(int)})
    data = pooled(sites)
    grid = regular_grid(800, 30)
    res = Simulation(sites, policy=OPEN).run(KaplanMeier(time="T", event="E", time_grid=grid))
    assert_matches_lifelines(res["all"], pd.Series(round_up_to_grid(data["T"], grid)), data["E"])
    # exact_times refuses off-grid times
    with pytest.raises(SchemaError, match="column 'T' has times that are not points"):
        Simulation(sites, policy=OPEN).run(
            KaplanMeier(time="T", event="E", time_grid=grid, exact_times=True)
        )


def test_coarse_grid_passes_the_default_policy_on_larger_sites() -> None:
    rng = np.random.default_rng(11)
    sites = {}
    for i in range(3):
        n = 400
        t = np.ceil(rng.exponential(300.0, n))
        c = np.minimum(np.ceil(rng.uniform(200, 2000, n)), 600)  # administrative end at 600
        sites[f"s{i}"] = pd.DataFrame({"T": np.minimum(t, c), "E": (t <= c).astype(int)})
    grid = regular_grid(600, 100)
    res = Simulation(sites).run(KaplanMeier(time="T", event="E", time_grid=grid))
    data = pooled(sites)
    assert_matches_lifelines(res["all"], pd.Series(round_up_to_grid(data["T"], grid)), data["E"])


def test_tcga_brca_six_regions_day_grid(shared_data) -> None:
    tcga = load_tcga_brca(shared_data / "tcga_brca")
    sites = tcga.sites()
    data = tcga.pooled()
    algo = KaplanMeier(time="T", event="E", time_grid=day_grid(data["T"].max()), exact_times=True)
    res = Simulation(sites, policy=OPEN).run(algo)
    assert_matches_lifelines(res["all"], data["T"], data["E"])


# ----------------------------------------------------------------------------- edge cases


def test_all_censored_gives_flat_curve() -> None:
    sites = day_sites()
    for df in sites.values():
        df["E"] = 0
    data = pooled(sites)
    res = Simulation(sites, policy=OPEN).run(
        KaplanMeier(time="T", event="E", time_grid=day_grid(700))
    )
    curve = res["all"]
    assert np.all(curve.survival == 1.0) and curve.median == np.inf
    assert_matches_lifelines(curve, data["T"], data["E"])


def test_ties_at_every_time_and_total_failure() -> None:
    rng = np.random.default_rng(3)
    sites = {
        f"s{i}": pd.DataFrame(
            {"T": rng.integers(1, 6, 40).astype(float), "E": rng.integers(0, 2, 40)}
        )
        for i in range(3)
    }
    sites["s0"].loc[sites["s0"]["T"] == 5, "E"] = 1  # the last time: everyone left dies
    for name in ("s1", "s2"):
        sites[name].loc[sites[name]["T"] == 5, "E"] = 1
    data = pooled(sites)
    res = Simulation(sites, policy=OPEN).run(
        KaplanMeier(time="T", event="E", time_grid=day_grid(5))
    )
    assert res["all"].survival[-1] == 0.0
    assert_matches_lifelines(res["all"], data["T"], data["E"])


def test_site_without_events_and_group_present_at_one_site_only() -> None:
    sites = day_sites()
    sites["site1"]["E"] = 0
    sites["site2"]["arm"] = "c"  # group c only at site2
    data = pooled(sites)
    res = Simulation(sites, policy=OPEN).run(
        KaplanMeier(
            time="T", event="E", time_grid=day_grid(700), group="arm", groups=("a", "b", "c")
        )
    )
    for g in ("a", "b", "c"):
        sub = data[data["arm"] == g]
        assert_matches_lifelines(res[g], sub["T"], sub["E"])


def test_empty_group_is_a_clear_error() -> None:
    algo = KaplanMeier(
        time="T", event="E", time_grid=day_grid(700), group="arm", groups=("a", "b", "zz")
    )
    with pytest.raises(AlgorithmError, match="group 'zz' of column 'arm' has no patients"):
        Simulation(day_sites(), policy=OPEN).run(algo)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("T", np.nan, "time column 'T' contains missing or infinite times"),
        ("T", -3.0, "time column 'T' contains negative times"),
        ("E", 2, "event column 'E' must hold 0 \\(censored\\) or 1 \\(event\\)"),
        ("E", np.nan, "event column 'E' must hold 0"),
        ("arm", "other", "column 'arm' holds values outside its declared levels"),
    ],
)
def test_bad_values_are_refused_naming_the_column(column: str, value: object, message: str) -> None:
    sites = day_sites()
    df = sites["site1"]
    if column != "arm":
        df[column] = df[column].astype(float)
    df.loc[3, column] = value
    algo = KaplanMeier(time="T", event="E", time_grid=day_grid(700), group="arm", groups=("a", "b"))
    with pytest.raises(SchemaError, match=message):
        Simulation(sites, policy=OPEN).run(algo)


def test_time_beyond_the_grid_is_censored_at_its_end() -> None:
    sites = day_sites()
    sites["site1"]["T"] = sites["site1"]["T"].astype(float)
    sites["site1"].loc[3, ["T", "E"]] = (900.0, 1)
    km = Simulation(sites, policy=OPEN).run(
        KaplanMeier(time="T", event="E", time_grid=day_grid(700))
    )
    df = pooled(sites)
    t, e = administrative_censoring(df["T"], df["E"], 700.0)
    assert_matches_lifelines(km["all"], pd.Series(t), pd.Series(e))


def test_bad_parameters() -> None:
    with pytest.raises(ValidationError, match="time_grid must be strictly increasing"):
        KaplanMeier(time="T", event="E", time_grid=(0.0, 2.0, 1.0))
    with pytest.raises(ValidationError, match="groups are declared but no group column"):
        KaplanMeier(time="T", event="E", time_grid=(0.0, 1.0), groups=("a",))
    with pytest.raises(ValidationError, match="groups must be a tuple"):
        KaplanMeier(time="T", event="E", time_grid=(0.0, 1.0), group="arm")
    with pytest.raises(ValidationError, match="alpha"):
        KaplanMeier(time="T", event="E", time_grid=(0.0, 1.0), alpha=1.5)
    with pytest.raises(SchemaError, match=r"column\(s\) \['time'\] not found"):
        Simulation(day_sites(), policy=OPEN).run(
            KaplanMeier(time="time", event="E", time_grid=day_grid(700))
        )


@pytest.mark.parametrize("seed", range(4))
def test_random_small_cohorts_with_heavy_ties(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    sites = {
        f"s{i}": pd.DataFrame(
            {
                "T": rng.integers(0, 12, n).astype(float),  # includes time 0
                "E": rng.integers(0, 2, n),
                "g": rng.integers(0, 2, n),
            }
        )
        for i, n in enumerate(rng.integers(10, 40, 3))
    }
    data = pooled(sites)
    res = Simulation(sites, policy=Policy(min_cell_count=1, min_cohort_size=1)).run(
        KaplanMeier(time="T", event="E", time_grid=day_grid(11), group="g", groups=(0, 1))
    )
    for g in (0, 1):
        sub = data[data["g"] == g]
        assert_matches_lifelines(res[str(g)], sub["T"], sub["E"])


# --------------------------------------------------------------------------- planned grids


def tied_sites(seed: int = 0, sizes: tuple[int, ...] = (400, 300, 350)) -> dict[str, pd.DataFrame]:
    """Whole-month times (many ties), two arms, some follow-up beyond 60 months."""
    rng = np.random.default_rng(seed)
    sites = {}
    for i, n in enumerate(sizes):
        arm = rng.choice(["a", "b"], n)
        t = np.ceil(rng.exponential(np.where(arm == "a", 20.0, 32.0)))
        c = np.ceil(rng.uniform(6, 80, n))
        sites[f"site{i}"] = pd.DataFrame(
            {"T": np.minimum(t, c), "E": (t <= c).astype(int), "arm": arm}
        )
    return sites


def check_planned_curve(
    curve: KaplanMeierCurve, time: pd.Series, event: pd.Series, k: int = 5
) -> float:
    """Released cells >= k; |S - exact pooled KM| <= error_bound at every bin end.

    Returns the largest difference while at least 50 patients are at risk.
    """
    assert np.all(curve.n_events >= k) and np.all(curve.n_at_risk >= k)
    beyond = curve.n_at_risk[-1] - curve.n_events[-1] - curve.n_censored[-1]
    assert beyond == 0 or beyond >= k
    exact = KaplanMeierFitter().fit(time, event).survival_function_at_times(curve.timeline)
    err = np.abs(curve.survival - exact.to_numpy())
    assert np.all(err <= curve.error_bound + 1e-12)
    at_risk = (time.to_numpy()[:, None] >= curve.timeline).sum(axis=0)
    np.testing.assert_array_equal(curve.n_at_risk[at_risk > 0] >= at_risk[at_risk > 0], True)
    return float(err[at_risk >= 50].max())


def test_planned_grid_under_the_default_policy() -> None:
    sites = tied_sites()
    data = pooled(sites)
    with pytest.raises(PolicyError, match="min_cell_count"):  # a monthly grid is refused
        Simulation(sites).run(KaplanMeier(time="T", event="E", time_grid=regular_grid(80, 1)))
    algo = KaplanMeier(time="T", event="E", horizon=60, plan_cells=20, plan_epsilon=1.0)
    assert algo.privacy_cost() == (1.0, 1e-6)
    res = Simulation(sites).run(algo)  # the DEFAULT policy: judged on the released sum
    assert res.cells_below_k == 0 and res.plan is not None
    curve = res["all"]
    assert curve.timeline.size >= 6 and curve.timeline[-1] <= 60
    np.testing.assert_array_equal(curve.timeline, res.plan.grids[0])
    worst = check_planned_curve(curve, data["T"], data["E"])
    print(f"planned KM, synthetic: {curve.timeline.size} bins, max |dS| {worst:.4f}")
    assert worst <= 0.01
    assert curve.n == len(data)


def test_planned_grid_per_group() -> None:
    sites = tied_sites(seed=1)
    data = pooled(sites)
    algo = KaplanMeier(
        time="T",
        event="E",
        group="arm",
        groups=("a", "b"),
        horizon=60,
        plan_cells=15,
        plan_epsilon=1.0,
    )
    res = Simulation(sites).run(algo)
    assert res.cells_below_k == 0
    for g in ("a", "b"):
        sub = data[data["arm"] == g]
        worst = check_planned_curve(res[g], sub["T"], sub["E"])
        print(f"planned KM, arm {g}: {res[g].timeline.size} bins, max |dS| {worst:.4f}")
        assert worst <= 0.02
    assert res.summary.loc["a", "n"] == (data["arm"] == "a").sum()


def test_planned_grid_tcga_brca_regions(shared_data) -> None:
    tcga = load_tcga_brca(shared_data / "tcga_brca")
    sites = {k: v.assign(treated=v["treatment_or_therapy_yes"]) for k, v in tcga.sites().items()}
    data = tcga.pooled()
    res = Simulation(sites).run(
        KaplanMeier(time="T", event="E", horizon=4000, plan_cells=8, plan_epsilon=1.0)
    )
    assert res.cells_below_k == 0
    worst = check_planned_curve(res["all"], data["T"], data["E"])
    print(f"planned KM, TCGA-BRCA: bins {res['all'].timeline.tolist()}, max |dS| {worst:.4f}")
    assert worst <= 0.03
    by_group = Simulation(sites).run(
        KaplanMeier(
            time="T",
            event="E",
            group="treated",
            groups=(0, 1),
            horizon=5000,
            plan_cells=10,
            plan_epsilon=2.0,
        )
    )
    assert by_group.cells_below_k == 0
    for g in (0, 1):
        sub = data[data["treatment_or_therapy_yes"] == g]
        worst = check_planned_curve(by_group[str(g)], sub["T"], sub["E"])
        print(f"planned KM, TCGA-BRCA treated={g}: max |dS| {worst:.4f}")
        assert worst <= 0.06


def test_nodes_refuse_a_fine_grid_disguised_as_planned() -> None:
    from dataclasses import dataclass

    from consortia.protocol import Round
    from consortia.survival._plan import make_plan

    @dataclass(frozen=True, kw_only=True)
    class FineGrid(KaplanMeier):
        """A coordinator that broadcasts every fine cell as a bin (same algorithm name)."""

        def coordinate(self):
            sums = yield Round("plan")
            _, public = make_plan(sums, self._plan, 1, shared=False)
            public["plan_ends"] = np.arange(1.0, self.plan_cells + 1)[None]
            yield Round("counts", public)

    algo = FineGrid(time="T", event="E", horizon=60, plan_cells=20, plan_epsilon=1.0)
    with pytest.raises(PolicyError, match="planned_grid.*not the plan") as info:
        Simulation(tied_sites()).run(algo)
    assert info.value.rule == "planned_grid"


def test_planned_grid_parameters() -> None:
    with pytest.raises(ValidationError, match="time_grid is required, or horizon"):
        KaplanMeier(time="T", event="E")
    with pytest.raises(ValidationError, match="either time_grid .* or horizon"):
        KaplanMeier(time="T", event="E", time_grid=(0.0, 1.0), horizon=10)
    with pytest.raises(ValidationError, match="exact_times needs an explicit time_grid"):
        KaplanMeier(time="T", event="E", horizon=10, exact_times=True)
    with pytest.raises(ValidationError, match="plan_epsilon"):
        KaplanMeier(time="T", event="E", horizon=10, plan_epsilon=-1)
    algo = KaplanMeier(time="T", event="E", horizon=10, group="arm", groups=("a", "b"))
    spec = algo.spec()
    assert spec["params"]["horizon"] == 10 and spec["params"]["time_grid"] is None
    from consortia.protocol import algorithm_from_spec

    assert algorithm_from_spec(json.loads(json.dumps(spec))) == algo
    assert KaplanMeier(time="T", event="E", time_grid=(0.0, 1.0)).privacy_cost() == (0.0, 0.0)


def test_a_node_refuses_a_plan_promising_less_than_its_minimum_cell() -> None:
    strict = Policy(min_cell_count=10)
    algo = KaplanMeier(time="T", event="E", horizon=60, plan_cells=20, plan_epsilon=1.0)
    with pytest.raises(PolicyError, match="min_cell_count"):
        Simulation(tied_sites(), policy=strict).run(algo)  # the plan promises 5
    res = Simulation(tied_sites(), policy=strict).run(
        KaplanMeier(time="T", event="E", horizon=60, plan_cells=20, plan_epsilon=1.0, min_cell=10)
    )
    assert res.cells_below_k == 0 and np.all(res["all"].n_events >= 10)
