"""Federated Cox model against lifelines (Efron) and statsmodels (Breslow), pooled; edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from statsmodels.duration.hazard_regression import PHReg

from consortia import Policy, PolicyError, SchemaError, Simulation, ValidationError
from consortia.errors import AlgorithmError, ConvergenceError
from consortia.protocol import algorithm_from_spec, get_algorithm
from consortia.survival._grid import day_grid, regular_grid, round_up_to_grid
from consortia.survival.cox import CoxPH, CoxPHResult

COLS = ("x0", "x1", "x2")
OPEN = Policy(min_cell_count=1)  # the data owners allow small per-time counts
TIGHT = {"precision": 1e-18, "r_precision": 0.0, "max_steps": 200}  # lifelines to convergence
SUMMARY_COLUMNS = [
    "coef",
    "exp(coef)",
    "se(coef)",
    "coef lower 95%",
    "coef upper 95%",
    "exp(coef) lower 95%",
    "exp(coef) upper 95%",
    "z",
    "p",
]


def make_sites(
    seed: int = 0, n_sites: int = 4, *, distinct_times: bool = False
) -> dict[str, pd.DataFrame]:
    """Sites of 40-80 patients: a binary, a shifted and a small-scale covariate, day times.

    Times are whole days (many ties) unless ``distinct_times`` (every time unique
    across sites).  Each site has its own baseline hazard and a weight column.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(40, 80, n_sites)
    unique_days = rng.permutation(np.arange(1, 4 * sizes.sum()))[: sizes.sum()]
    sites, start = {}, 0
    for s, n in enumerate(sizes):
        x = rng.normal(size=(n, 3)) * [1.0, 2.0, 0.5] + [0.0, 5.0, 1.0]
        x[:, 0] = rng.random(n) < 0.4
        lp = x @ np.array([0.7, -0.2, 0.4])
        if distinct_times:
            t = unique_days[start : start + n].astype(float)
            e = (rng.random(n) >= 0.3).astype(int)
        else:
            tt = np.ceil(rng.exponential(30 * np.exp(-lp + 0.2 * s)))
            cc = np.ceil(rng.uniform(5, 60, n))
            t, e = np.minimum(tt, cc), (tt <= cc).astype(int)
        start += n
        df = pd.DataFrame(x, columns=list(COLS))
        df["T"], df["E"] = t, e
        df["site"] = f"s{s}"
        df["g"] = np.where(rng.random(n) < 0.5, "a", "b")
        df["w"] = rng.integers(1, 4, n).astype(float)
        sites[f"s{s}"] = df
    return sites


def pooled(sites: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(sites.values(), ignore_index=True)


def grid_of(sites: dict[str, pd.DataFrame]) -> tuple[float, ...]:
    return day_grid(pooled(sites)["T"].max())


def lifelines_fit(df: pd.DataFrame, cols=COLS, **kwargs) -> CoxPHFitter:
    fit_kw = {k: kwargs.pop(k) for k in ("strata", "weights_col", "robust") if k in kwargs}
    extra = [c for c in (fit_kw.get("weights_col"),) if c]
    strata = fit_kw.get("strata") or []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CoxPHFitter(**kwargs).fit(
            df[[*cols, *strata, *extra, "T", "E"]], "T", "E", fit_options=TIGHT, **fit_kw
        )


def rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) / np.asarray(b) - 1)))


def fit(sites, policy=OPEN, **params) -> CoxPHResult:
    params.setdefault("covariates", COLS)
    return Simulation(sites, policy=policy).run(CoxPH(time="T", event="E", **params))


def test_efron_matches_lifelines_summary_baseline_and_prediction():
    sites = make_sites(0)
    res = fit(sites, time_grid=grid_of(sites))
    ref = lifelines_fit(pooled(sites))
    assert res.rounds <= 10 and res.converged
    assert rel(res.coef, ref.params_) < 1e-6
    assert rel(res.se, ref.standard_errors_) < 1e-6
    assert res.log_likelihood == pytest.approx(ref.log_likelihood_, rel=1e-9)
    assert res.log_likelihood_null == pytest.approx(ref._ll_null_, rel=1e-9)
    summary = res.summary
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(summary.index) == list(COLS)
    np.testing.assert_allclose(summary.to_numpy(), ref.summary[SUMMARY_COLUMNS], rtol=1e-6)
    # Breslow baseline at the event times, for covariates at their pooled mean
    ref_cum = ref.baseline_cumulative_hazard_.iloc[:, 0]
    ours = res.baseline_cumulative_hazard.iloc[:, 0]
    np.testing.assert_allclose(ours.to_numpy(), ref_cum.loc[ours.index].to_numpy(), rtol=1e-8)
    new = pooled(make_sites(7)).iloc[:5]
    times = [3.0, 10.0, 26.0, 40.0]  # lifelines interpolates between grid times
    ref_s = ref.predict_survival_function(new[list(COLS)], times=times)
    np.testing.assert_allclose(res.predict_survival(new, times=times), ref_s, rtol=1e-8)


def test_breslow_matches_statsmodels_phreg():
    sites = make_sites(1)
    df = pooled(sites)
    res = fit(sites, time_grid=grid_of(sites), ties="breslow")
    ref = PHReg(df["T"], df[list(COLS)], status=df["E"], ties="breslow").fit()
    assert res.rounds <= 10
    assert rel(res.coef, ref.params) < 1e-6
    assert rel(res.se, ref.bse) < 1e-6
    assert res.log_likelihood == pytest.approx(ref.llf, rel=1e-9)


@pytest.mark.parametrize("penalizer", [0.1, (0.5, 0.0, 0.05)])
def test_ridge_matches_lifelines_convention(penalizer):
    sites = make_sites(2)
    res = fit(sites, time_grid=grid_of(sites), penalizer=penalizer)
    pen = np.asarray(penalizer) if isinstance(penalizer, tuple) else penalizer
    ref = lifelines_fit(pooled(sites), penalizer=pen)
    assert rel(res.coef, ref.params_) < 1e-6
    assert rel(res.se, ref.standard_errors_) < 1e-6
    assert res.log_likelihood == pytest.approx(ref.log_likelihood_, rel=1e-9)


def test_case_weights_match_lifelines():
    sites = make_sites(3)
    res = fit(sites, time_grid=grid_of(sites), weights="w")
    ref = lifelines_fit(pooled(sites), weights_col="w")
    assert rel(res.coef, ref.params_) < 1e-6
    assert rel(res.se, ref.standard_errors_) < 1e-6


def test_robust_se_match_lifelines_without_ties_with_weights_and_penalty():
    sites = make_sites(4, distinct_times=True)
    res = fit(sites, time_grid=grid_of(sites), weights="w", robust=True, penalizer=0.05)
    ref = lifelines_fit(pooled(sites), weights_col="w", robust=True, penalizer=0.05)
    assert res.robust and res.rounds <= 10
    assert rel(res.coef, ref.params_) < 1e-6
    assert rel(res.se, ref.standard_errors_) < 1e-6


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_robust_se_with_ties_match_statsmodels(ties):
    # lifelines' score residuals depend on the row order within tied times;
    # statsmodels uses full risk sets at each time, as consortia does.
    sites = make_sites(5)
    df = pooled(sites)
    res = fit(sites, time_grid=grid_of(sites), ties=ties, robust=True)
    ref = PHReg(df["T"], df[list(COLS)], status=df["E"], ties=ties).fit(groups=np.arange(len(df)))
    assert rel(res.coef, ref.params) < 1e-6
    assert rel(res.se, ref.bse) < 1e-6


@pytest.mark.parametrize("robust", [False, True])
def test_site_stratified_runs_under_default_policy_and_matches_lifelines(robust):
    sites = make_sites(6, distinct_times=robust)
    res = fit(sites, policy=Policy(), stratify_by_site=True, robust=robust)
    ref = lifelines_fit(pooled(sites), strata=["site"], robust=robust)
    assert res.stratified_by_site and res.rounds <= 10
    assert rel(res.coef, ref.params_) < 1e-6
    assert rel(res.se, ref.standard_errors_) < 1e-6
    assert res.log_likelihood == pytest.approx(ref.log_likelihood_, rel=1e-9)
    assert res.baseline_hazard is None


def test_site_and_covariate_strata_with_breslow_match_statsmodels():
    sites = make_sites(7)
    df = pooled(sites)
    res = fit(sites, policy=Policy(), stratify_by_site=True, strata="g", strata_levels=("a", "b"))
    ref = PHReg(
        df["T"], df[list(COLS)], status=df["E"], ties="efron", strata=df["site"] + df["g"]
    ).fit()
    assert rel(res.coef, ref.params) < 1e-6
    assert rel(res.se, ref.bse) < 1e-6


def test_robust_with_covariate_strata_on_grid_matches_statsmodels():
    sites = make_sites(13)
    df = pooled(sites)
    res = fit(sites, time_grid=grid_of(sites), strata="g", strata_levels=("a", "b"), robust=True)
    ref = PHReg(df["T"], df[list(COLS)], status=df["E"], ties="efron", strata=df["g"]).fit(
        groups=np.arange(len(df))
    )
    assert rel(res.coef, ref.params) < 1e-6
    assert rel(res.se, ref.bse) < 1e-6


def test_registered_by_name():
    assert get_algorithm("survival.cox") is CoxPH


def test_covariate_strata_on_grid_match_lifelines():
    sites = make_sites(8)
    res = fit(sites, time_grid=grid_of(sites), strata="g", strata_levels=("a", "b", "c"))
    ref = lifelines_fit(pooled(sites), strata=["g"])
    assert rel(res.coef, ref.params_) < 1e-6
    assert rel(res.se, ref.standard_errors_) < 1e-6
    ref_cum = ref.baseline_cumulative_hazard_
    ours = res.baseline_cumulative_hazard
    assert list(ours.columns) == ["a", "b", "c"]
    assert (ours["c"] == 0).all()
    for level in ("a", "b"):
        np.testing.assert_allclose(ours[level], ref_cum[level].loc[ours.index], rtol=1e-8)
    new = pooled(make_sites(9)).iloc[:4]
    ref_s = ref.predict_survival_function(new[[*COLS, "g"]], times=[5.0, 20.0])
    np.testing.assert_allclose(res.predict_survival(new, times=[5.0, 20.0]), ref_s, rtol=1e-8)


def test_coarse_grid_is_exact_for_times_rounded_up():
    sites = make_sites(10)
    grid = regular_grid(pooled(sites)["T"].max(), 7.0)
    res = fit(sites, time_grid=grid)
    df = pooled(sites)
    df["T"] = round_up_to_grid(df["T"], grid)
    ref = lifelines_fit(df)
    assert rel(res.coef, ref.params_) < 1e-6
    assert rel(res.se, ref.standard_errors_) < 1e-6


def test_day_grid_is_refused_under_default_min_cell_count():
    sites = make_sites(11)
    with pytest.raises(PolicyError, match="min_cell_count"):
        fit(sites, policy=Policy(), time_grid=grid_of(sites))


def test_parameters_per_sample_rule():
    sites = make_sites(12)
    small = Policy(min_cell_count=1, max_params_per_sample=0.02)  # 3 covariates need 150 patients
    with pytest.raises(PolicyError, match="max_params_per_sample"):
        fit(sites, policy=small, time_grid=grid_of(sites))


def test_spec_round_trip():
    algo = CoxPH(
        time="T",
        event="E",
        covariates=COLS,
        time_grid=(0.0, 1.0, 2.0),
        penalizer=(0.1, 0.2, 0.3),
        strata="g",
        strata_levels=("a", "b"),
    )
    assert algorithm_from_spec(algo.spec()) == algo


def test_tcga_ridge_matches_lifelines(shared_data):
    from consortia.data.tcga import load_tcga_brca

    data = load_tcga_brca(shared_data / "tcga_brca")
    train = data.sites("train")
    cols = data.covariates
    df = data.pooled("train")
    policy = Policy(min_cell_count=1, max_params_per_sample=1.0)
    res = Simulation(train, policy=policy).run(
        CoxPH(
            time="T",
            event="E",
            covariates=cols,
            time_grid=day_grid(df["T"].max()),
            penalizer=0.01,
        )
    )
    ref = lifelines_fit(df, cols=cols, penalizer=0.01)
    assert res.rounds <= 8
    assert rel(res.coef, ref.params_) < 1e-6
    assert rel(res.se, ref.standard_errors_) < 1e-6
    assert res.log_likelihood == pytest.approx(ref.log_likelihood_, rel=1e-9)


# --------------------------------------------------------------------------- edge cases


def check_against_lifelines(sites, **params) -> None:
    res = fit(sites, time_grid=grid_of(sites), **params)
    ref = lifelines_fit(pooled(sites))
    assert rel(res.coef, ref.params_) < 1e-6
    assert rel(res.se, ref.standard_errors_) < 1e-6


def test_all_censored_is_a_clear_error():
    sites = make_sites(20)
    for df in sites.values():
        df["E"] = 0
    with pytest.raises(ValidationError, match="no events"):
        fit(sites, time_grid=grid_of(sites))
    with pytest.raises(ValidationError, match="no events"):
        fit(sites, policy=Policy(), stratify_by_site=True)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_ties_at_every_time(ties):
    sites = make_sites(21)
    for df in sites.values():
        df["T"] = 10.0
    df = pooled(sites)
    res = fit(sites, time_grid=(0.0, 5.0, 10.0), ties=ties)
    ref = PHReg(df["T"], df[list(COLS)], status=df["E"], ties=ties).fit()
    assert rel(res.coef, ref.params) < 1e-6
    assert rel(res.se, ref.bse) < 1e-6
    if ties == "efron":
        check_against_lifelines(sites)


def test_a_site_without_events():
    sites = make_sites(22)
    sites["s1"]["E"] = 0
    check_against_lifelines(sites)
    res = fit(sites, policy=Policy(), stratify_by_site=True)
    ref = lifelines_fit(pooled(sites), strata=["site"])
    assert rel(res.coef, ref.params_) < 1e-6


def test_a_covariate_constant_at_one_site_is_fine():
    sites = make_sites(23)
    sites["s2"]["x1"] = 3.0
    sites["s0"]["x0"] = 1.0
    check_against_lifelines(sites)


def test_zero_variance_overall_names_the_column():
    sites = make_sites(24)
    for df in sites.values():
        df["x2"] = 1.5
    with pytest.raises(ValidationError, match=r"\['x2'\].*zero variance"):
        fit(sites, time_grid=grid_of(sites))


def separated_sites() -> dict[str, pd.DataFrame]:
    """Every event happens to a patient with x0 = 1 while all x0 = 0 are still at risk."""
    sites = make_sites(25)
    for df in sites.values():
        one = df["x0"] == 1
        df.loc[one, "E"] = 1
        df.loc[one, "T"] = np.arange(1, one.sum() + 1, dtype=float)
        df.loc[~one, "E"] = 0
        df.loc[~one, "T"] = 200.0
    return sites


def test_perfect_separation_raises_convergence_error():
    sites = separated_sites()
    with pytest.raises(ConvergenceError, match="separation"):
        fit(sites, time_grid=grid_of(sites))


def test_perfect_separation_can_return_an_unconverged_result():
    sites = separated_sites()
    with pytest.warns(UserWarning, match="did not converge"):
        res = fit(sites, time_grid=grid_of(sites), max_iter=4, raise_on_failure=False)
    assert not res.converged and res.iterations == 4


def test_collinear_covariates_need_a_penalty():
    sites = make_sites(26)
    for df in sites.values():
        df["x3"] = df["x0"] * 2 - df["x1"]
    covs = (*COLS, "x3")
    with pytest.raises(ConvergenceError, match="collinear"):
        fit(sites, time_grid=grid_of(sites), covariates=covs)
    res = fit(sites, time_grid=grid_of(sites), covariates=covs, penalizer=0.1)
    ref = lifelines_fit(pooled(sites), cols=covs, penalizer=0.1)
    assert rel(res.coef, ref.params_) < 1e-6


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("T", np.nan, r"'T'.*missing"),
        ("T", -1.0, r"'T'.*negative"),
        ("E", 2, r"'E'.*0 \(censored\) or 1"),
        ("x1", np.nan, r"'x1'.*missing"),
        ("w", -1.0, r"'w'.*positive"),
    ],
)
def test_bad_values_name_the_column(column, value, message):
    sites = make_sites(27)
    sites["s3"].loc[3, column] = value
    with pytest.raises(SchemaError, match=message):
        fit(sites, time_grid=tuple(float(t) for t in range(0, 400)), weights="w")


def test_times_beyond_the_grid_are_censored_and_unknown_strata_refused():
    sites = make_sites(28)
    grid = grid_of(sites)
    short = grid[: len(grid) // 2]
    res = fit(sites, time_grid=short)
    clipped = {}
    for name, df in sites.items():
        df = df.copy()
        beyond = df["T"] > short[-1]
        df.loc[beyond, "T"] = short[-1]
        df.loc[beyond, "E"] = 0
        clipped[name] = df
    ref = fit(clipped, time_grid=short)
    np.testing.assert_allclose(res.coef, ref.coef, rtol=1e-10)
    with pytest.raises(SchemaError, match="'g'.*declared levels"):
        fit(sites, time_grid=grid_of(sites), strata="g", strata_levels=("a",))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "time_grid is required"),
        ({"time_grid": (0.0, 1.0), "ties": "exact"}, "ties"),
        ({"time_grid": (0.0, 1.0), "penalizer": -0.1}, "penalizer"),
        ({"time_grid": (0.0, 1.0), "penalizer": (0.1,)}, "one number per covariate"),
        ({"time_grid": (1.0, 0.0)}, "strictly increasing"),
        ({"time_grid": (0.0, 1.0), "strata": "g"}, "together"),
        ({"time_grid": (0.0, 1.0), "covariates": ("x0", "T")}, "role column"),
        ({"time_grid": (0.0, 1.0), "alpha": 1.5}, "alpha"),
    ],
)
def test_bad_parameters(params, message):
    params = {"time": "T", "event": "E", "covariates": COLS, **params}
    with pytest.raises(ValidationError, match=message):
        CoxPH(**params)


def test_site_stratified_model_has_no_baseline_for_prediction():
    sites = make_sites(29)
    res = fit(sites, policy=Policy(), stratify_by_site=True)
    with pytest.raises(AlgorithmError, match="site-stratified"):
        res.predict_survival(pooled(sites).iloc[:3])


def test_precision_beyond_the_fixed_point_resolution():
    """Sums travel in two halves: small-scale covariates stay exact under 24-bit fixed point."""
    sites = make_sites(30)
    for df in sites.values():
        df["x2"] = df["x2"] * 1e-5
    res = Simulation(sites, policy=OPEN).run(
        CoxPH(time="T", event="E", covariates=COLS, time_grid=grid_of(sites))
    )
    ref = lifelines_fit(pooled(sites))
    assert rel(res.coef, ref.params_) < 1e-8
    assert rel(res.se, ref.standard_errors_) < 1e-8


# --------------------------------------------------------------------------- planned grids


def tied_cohort(seed: int = 0, sizes=(400, 300, 350)) -> dict[str, pd.DataFrame]:
    """Whole-month times (many ties), the three covariates of COLS, site-free baseline."""
    rng = np.random.default_rng(seed)
    sites = {}
    for s, n in enumerate(sizes):
        x = rng.normal(size=(n, 3)) * [1.0, 2.0, 0.5] + [0.0, 5.0, 1.0]
        x[:, 0] = rng.random(n) < 0.4
        lp = x @ np.array([0.7, -0.2, 0.4])
        t = np.ceil(rng.exponential(60 * np.exp(-lp)))
        c = np.ceil(rng.uniform(6, 80, n))
        df = pd.DataFrame(x, columns=list(COLS))
        df["T"], df["E"] = np.minimum(t, c), (t <= c).astype(int)
        sites[f"s{s}"] = df
    return sites


def censored_at(df: pd.DataFrame, end: float) -> pd.DataFrame:
    return df.assign(E=np.where(df["T"] > end, 0, df["E"]), T=np.minimum(df["T"], end))


def test_planned_grid_under_the_default_policy():
    sites = tied_cohort()
    algo = CoxPH(time="T", event="E", covariates=COLS, horizon=60, plan_cells=15, plan_epsilon=1.0)
    assert algo.privacy_cost() == (1.0, 1e-6)
    res = Simulation(sites).run(algo)  # the DEFAULT policy
    assert res.converged and res.cells_below_k == 0
    grid = res.plan.grids[0]
    ref = lifelines_fit(censored_at(pooled(sites), grid[-1]))
    z = np.abs(res.coef - ref.params_.to_numpy()) / ref.standard_errors_.to_numpy()
    print(f"planned Cox, synthetic: {grid.size} bins, max |dcoef| / se = {z.max():.3f}")
    assert z.max() <= 0.5
    assert res.n == len(pooled(sites))
    assert res.baseline_hazard.index.isin(grid).all()


def test_planned_grid_tcga_brca_regions(shared_data):
    from consortia.data.tcga import load_tcga_brca

    tcga = load_tcga_brca(shared_data / "tcga_brca")
    covs = ("age_at_index", "treatment_or_therapy_yes", "ajcc_staging_system_edition_6th")
    res = Simulation(tcga.sites()).run(
        CoxPH(time="T", event="E", covariates=covs, horizon=4000, plan_cells=8, plan_epsilon=1.0)
    )
    assert res.converged and res.cells_below_k == 0
    grid = res.plan.grids[0]
    ref = lifelines_fit(censored_at(tcga.pooled(), grid[-1]), cols=covs)
    z = np.abs(res.coef - ref.params_.to_numpy()) / ref.standard_errors_.to_numpy()
    print(f"planned Cox, TCGA-BRCA: bins {grid.tolist()}, max |dcoef| / se = {z.max():.3f}")
    assert z.max() <= 1.0


def test_planned_grid_parameters():
    for extra in ({"stratify_by_site": True}, {"robust": True}):
        with pytest.raises(ValidationError, match="pooled, unstratified Cox model"):
            CoxPH(time="T", event="E", covariates=COLS, horizon=10, **extra)
    with pytest.raises(ValidationError, match="either time_grid .* or horizon"):
        CoxPH(time="T", event="E", covariates=COLS, horizon=10, time_grid=(0.0, 1.0))
    algo = CoxPH(time="T", event="E", covariates=COLS, horizon=10)
    assert algorithm_from_spec(algo.spec()) == algo


def test_nodes_refuse_a_fine_grid_disguised_as_planned():
    from dataclasses import dataclass

    from consortia.protocol import Round
    from consortia.survival._plan import make_plan

    @dataclass(frozen=True, kw_only=True)
    class FineGrid(CoxPH):
        def coordinate(self):
            sums = yield Round("plan")
            _, public = make_plan(sums, self._plan, 1, shared=True)
            public["plan_ends"] = np.arange(1.0, self.plan_cells + 1)[None]
            yield Round("summary", public)

    algo = FineGrid(time="T", event="E", covariates=COLS, horizon=60, plan_cells=15)
    with pytest.raises(PolicyError, match="planned_grid"):
        Simulation(tied_cohort()).run(algo)
