"""Genome-wide Cox screen against per-gene lifelines/statsmodels fits on pooled data; edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from sksurv.datasets import load_breast_cancer
from statsmodels.duration.hazard_regression import PHReg

from consortia import Policy, PolicyError, SchemaError, Simulation, ValidationError
from consortia.data import synthetic_cohort
from consortia.omics.screen import CoxScreen, CoxScreenResult
from consortia.protocol import algorithm_from_spec
from consortia.survival._grid import day_grid

OPEN = Policy(min_cell_count=1)  # the pooled mode releases per-time event counts
TIGHT = {"precision": 1e-18, "r_precision": 0.0, "max_steps": 200}  # lifelines to convergence
REL = 1e-6


@pytest.fixture(scope="module")
def breast() -> tuple[pd.DataFrame, tuple[str, ...]]:
    """scikit-survival's breast-cancer cohort: 198 patients x 76 genes, 3 sites."""
    x, y = load_breast_cancer()
    genes = tuple(c for c in x.columns if c.startswith("X"))
    df = x[list(genes)].astype(float)
    df["age"] = x["age"].astype(float)
    df["er"] = (x["er"] == "positive").astype(float)
    df["T"] = y["t.tdm"]
    df["E"] = y["e.tdm"].astype(int)
    df["site"] = np.random.default_rng(0).integers(0, 3, len(df))
    return df, genes


def split_sites(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {f"s{k}": part.reset_index(drop=True) for k, part in df.groupby("site")}


def lifelines_gene(df, gene, covariates=(), strata=False) -> np.ndarray:
    cols = [gene, *covariates, "T", "E", *(["site"] if strata else [])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = CoxPHFitter().fit(
            df[cols], "T", "E", strata=["site"] if strata else None, fit_options=TIGHT
        )
    return fit.summary.loc[gene, ["coef", "se(coef)", "p"]].to_numpy(float)


def ours(res: CoxScreenResult, genes) -> np.ndarray:
    idx = [res.genes.index(g) for g in genes]
    return np.c_[res.coef[idx], res.se[idx], res.pvalue[idx]]


def rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) / np.asarray(b) - 1)))


SAMPLE = slice(0, None, 15)  # 6 of the 76 genes against lifelines (each fit ~0.2 s)


@pytest.mark.parametrize(
    ("stratify", "covariates"),
    [(True, ()), (True, ("age", "er")), (False, ()), (False, ("age", "er"))],
)
def test_breast_cancer_screen_matches_lifelines_per_gene(breast, stratify, covariates):
    df, genes = breast
    sites = split_sites(df)
    kw = {"stratify_by_site": True} if stratify else {"time_grid": tuple(np.unique(df["T"]))}
    res = Simulation(sites, policy=OPEN).run(
        CoxScreen(time="T", event="E", genes=genes, covariates=covariates, source="columns", **kw)
    )
    assert res.converged.all() and res.tested.all() and res.rounds <= 8
    assert res.n == 198 and res.n_events == 51
    sample = genes[SAMPLE]
    ref = np.array([lifelines_gene(df, g, covariates, strata=stratify) for g in sample])
    assert rel(ours(res, sample), ref) < REL
    # FDR: Benjamini-Hochberg over every gene's p-value
    from scipy.stats import false_discovery_control

    np.testing.assert_allclose(res.fdr, false_discovery_control(res.pvalue), rtol=1e-12)
    table = res.summary
    assert list(table.index) == list(genes)
    assert table.loc[sample[0], "coef"] == pytest.approx(ref[0, 0], rel=REL)
    top = res.significant(0.1)
    assert all(res.fdr[genes.index(g)] < 0.1 for g in top)


def test_breslow_ties_match_statsmodels_on_day_times():
    cohort = synthetic_cohort(
        n_sites=3, patients_per_site=60, n_genes=60, n_de_genes=5, seed=3, tiles=False
    )
    pooled = cohort.pooled()
    genes = cohort.genes[:6]
    frame = pooled.frame
    grid = day_grid(int(frame["time"].max()))
    res = Simulation(cohort.sites(), policy=OPEN).run(
        CoxScreen(
            time="time",
            event="event",
            genes=genes,
            ties="breslow",
            transform="log2",
            time_grid=grid,
            covariates=("age",),
        )
    )
    assert res.converged.all()
    counts = pooled.expression.loc[frame["pid"], list(genes)].to_numpy(float)
    for j in range(len(genes)):
        x = np.c_[np.log2(counts[:, j] + 1), frame["age"].to_numpy(float)]
        ref = PHReg(frame["time"], x, status=frame["event"], ties="breslow").fit()
        assert res.coef[j] == pytest.approx(ref.params[0], rel=REL)
        assert res.se[j] == pytest.approx(ref.bse[0], rel=REL)


# ---------------------------------------------------------------------- edge cases


def small_sites(seed: int = 1) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    sites = {}
    for k, n in enumerate((40, 50, 45)):
        g = rng.normal(size=(n, 3))
        t = np.ceil(rng.exponential(30 * np.exp(-0.5 * g[:, 0])))
        c = np.ceil(rng.uniform(5, 60, n))
        df = pd.DataFrame(g, columns=["g1", "g2", "g3"])
        df["flat"] = 2.5
        df["T"], df["E"], df["site"] = np.minimum(t, c), (t <= c).astype(int), k
        sites[f"s{k}"] = df
    return sites


def test_gene_constant_everywhere_is_untested_and_one_constant_at_a_site_is_exact():
    sites = small_sites()
    sites["s1"]["g2"] = 0.7  # constant at one site only
    res = Simulation(sites).run(
        CoxScreen(
            time="T",
            event="E",
            genes=("g1", "g2", "flat"),
            source="columns",
            stratify_by_site=True,
        )
    )
    assert list(res.tested) == [True, True, False]
    assert np.isnan(res.coef[2]) and np.isnan(res.fdr[2]) and not res.converged[2]
    df = pd.concat(sites.values(), ignore_index=True)
    ref = lifelines_gene(df, "g2", strata=True)
    assert rel(ours(res, ["g2"])[0], ref) < REL
    assert res.fdr[:2] == pytest.approx(
        __import__("scipy").stats.false_discovery_control(res.pvalue[:2])
    )


def test_monotone_likelihood_gene_is_reported_not_converged():
    sites = small_sites()
    for df in sites.values():  # events exactly in the patients with the highest values
        df["sep"] = df["T"].rank(ascending=False).to_numpy() + 100 * df["E"].to_numpy()
        df["sep"] = df["E"] * 1000.0 - df["T"]
    res = Simulation(sites).run(
        CoxScreen(time="T", event="E", genes=("g1", "sep"), source="columns", stratify_by_site=True)
    )
    assert res.converged[0] and np.isfinite(res.pvalue[0])
    assert not res.converged[1] and np.isnan(res.pvalue[1]) and np.isnan(res.fdr[1])


def test_all_censored_is_a_clear_error():
    sites = small_sites()
    for df in sites.values():
        df["E"] = 0
    with pytest.raises(ValidationError, match="no events at any site"):
        Simulation(sites).run(
            CoxScreen(time="T", event="E", genes=("g1",), source="columns", stratify_by_site=True)
        )


def test_missing_values_and_missing_genes_name_the_rule():
    sites = small_sites()
    sites["s2"].loc[3, "g1"] = np.nan
    with pytest.raises(SchemaError, match="'g1' contains missing"):
        Simulation(sites).run(
            CoxScreen(time="T", event="E", genes=("g1",), source="columns", stratify_by_site=True)
        )
    cohort = synthetic_cohort(
        n_sites=3, patients_per_site=30, n_genes=20, n_de_genes=2, seed=0, tiles=False
    )
    with pytest.raises(SchemaError, match=r"lacks 1 of the study's genes \(first: 'NOPE'\)"):
        Simulation(cohort.sites()).run(
            CoxScreen(time="time", event="event", genes=("G00001", "NOPE"), stratify_by_site=True)
        )
    plain = {k: v.frame for k, v in cohort.sites().items()}
    with pytest.raises(SchemaError, match="no 'expression' modality"):
        Simulation(plain).run(
            CoxScreen(time="time", event="event", genes=("G00001",), stratify_by_site=True)
        )


def test_a_site_too_small_for_the_model_is_refused_before_computing():
    sites = small_sites()
    sites["s0"] = sites["s0"].iloc[:12]
    alg = CoxScreen(
        time="T",
        event="E",
        genes=("g1",),
        covariates=("g2", "g3", "flat"),
        source="columns",
        stratify_by_site=True,
    )  # 4 parameters per gene model for 12 patients: above 0.33 per sample
    with pytest.raises(PolicyError, match="parameters"):
        Simulation(sites).run(alg)


def test_parameters_are_checked_and_the_spec_round_trips():
    with pytest.raises(ValidationError, match="time_grid is required"):
        CoxScreen(time="T", event="E", genes=("g1",))
    with pytest.raises(ValidationError, match="must not repeat"):
        CoxScreen(time="T", event="E", genes=("g1", "g1"), stratify_by_site=True)
    with pytest.raises(ValidationError, match="transform must be one of"):
        CoxScreen(time="T", event="E", genes=("g1",), transform="vst", stratify_by_site=True)
    with pytest.raises(ValidationError, match="both a gene and another column"):
        CoxScreen(time="T", event="E", genes=("g1", "T"), source="columns", stratify_by_site=True)
    alg = CoxScreen(
        time="T", event="E", genes=("g1", "g2"), covariates=("age",), time_grid=(1.0, 2.0, 5.0)
    )
    assert alg.transform == "log2cpm"
    assert algorithm_from_spec(alg.spec()) == alg
