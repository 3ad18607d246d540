"""Moderated t (limma's empirical Bayes) against InMoose's limma on pooled data; edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from inmoose.limma import eBayes, fitFDist, lmFit
from scipy.special import polygamma
from sksurv.datasets import load_breast_cancer

from consortia import SchemaError, Simulation, ValidationError
from consortia.data import synthetic_cohort
from consortia.omics._ebayes import fit_f_dist, trigamma_inverse
from consortia.omics.limma import ModeratedT
from consortia.protocol import algorithm_from_spec


def rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) / np.asarray(b) - 1)))


def limma_pooled(y: np.ndarray, design: pd.DataFrame, coef: str):
    """InMoose lmFit + eBayes; y is samples x genes."""
    design = design.set_axis([f"s{i}" for i in range(len(design))], axis=0)
    fit = eBayes(lmFit(pd.DataFrame(y.T, columns=design.index), design))
    j = list(design.columns).index(coef)
    return fit, j


def log2cpm_pooled(cohort, genes, covariates):
    ys, xs = [], []
    for site, ds in cohort.sites().items():
        e = ds.expression.loc[ds.frame["pid"]]
        lib = e.sum(axis=1).to_numpy(float)
        ys.append(np.log2(e[list(genes)].to_numpy(float) / lib[:, None] * 1e6 + 1))
        f = ds.frame[list(covariates)].astype(float)
        xs.append(f.assign(site=site))
    return np.vstack(ys), pd.concat(xs, ignore_index=True)


@pytest.mark.parametrize("adjust_for_site", [False, True])
def test_synthetic_counts_match_inmoose_limma(adjust_for_site):
    cohort = synthetic_cohort(n_sites=3, patients_per_site=60, n_genes=300, seed=1, tiles=False)
    covs = ("msi_high", "age")
    res = Simulation(cohort.sites()).run(
        ModeratedT(genes=cohort.genes, covariates=covs, adjust_for_site=adjust_for_site)
    )
    y, x = log2cpm_pooled(cohort, cohort.genes, covs)
    if adjust_for_site:
        design = pd.get_dummies(x["site"]).astype(float).join(x[list(covs)])
    else:
        design = pd.DataFrame({"Intercept": 1.0}, index=x.index).join(x[list(covs)])
    fit, j = limma_pooled(y, design, "msi_high")
    assert rel(res.log_fc, fit.coefficients.iloc[:, j]) < 1e-8
    assert rel(res.t, fit.t.iloc[:, j]) < 1e-8
    assert rel(res.pvalue, fit.p_value.iloc[:, j]) < 1e-6
    assert res.df_prior == pytest.approx(fit.df_prior, rel=1e-9)
    assert res.s2_prior == pytest.approx(fit.s2_prior, rel=1e-9)
    assert res.df_total == pytest.approx(fit.df_total[0], rel=1e-12)
    assert res.ave_expr == pytest.approx(y.mean(axis=0), rel=1e-12)
    assert list(res.summary.columns) == ["logFC", "AveExpr", "t", "P.Value", "adj.P.Val"]


def test_breast_cancer_gene_columns_match_inmoose():
    x, _ = load_breast_cancer()
    genes = tuple(c for c in x.columns if c.startswith("X"))
    df = x[list(genes)].astype(float)
    df["er"] = (x["er"] == "positive").astype(float)
    df["age"] = x["age"].astype(float)
    site = np.random.default_rng(0).integers(0, 3, len(df))
    sites = {f"s{k}": df[site == k].reset_index(drop=True) for k in range(3)}
    res = Simulation(sites).run(ModeratedT(genes=genes, covariates=("er", "age"), source="columns"))
    design = pd.DataFrame({"Intercept": 1.0, "er": df["er"], "age": df["age"]})
    fit, j = limma_pooled(df[list(genes)].to_numpy(), design, "er")
    assert rel(res.t, fit.t.iloc[:, j]) < 1e-8
    assert rel(res.pvalue, fit.p_value.iloc[:, j]) < 1e-6
    assert len(res.significant(0.01)) > 10  # ER status drives much of breast-cancer expression


def test_planted_msi_genes_are_recovered_at_fdr_0_1():
    cohort = synthetic_cohort(n_sites=3, patients_per_site=100, n_genes=2000, seed=0, tiles=False)
    res = Simulation(cohort.sites()).run(
        ModeratedT(genes=cohort.genes, covariates=("msi_high",), adjust_for_site=True)
    )
    hits, de = set(res.significant(0.1)), set(cohort.truth.de_genes)
    assert de <= hits
    fdp = len(hits - de) / len(hits)
    assert fdp <= 0.1, f"false discovery proportion {fdp:.3f}"
    for g in de:  # the planted directions
        assert np.sign(res.log_fc[res.genes.index(g)]) == np.sign(cohort.truth.de_log2fc[g])


def test_fit_f_dist_matches_inmoose_including_infinite_prior_df():
    rng = np.random.default_rng(3)
    for x, d in (
        (rng.chisquare(5, 400) / 5 * rng.lognormal(0, 0.5, 400), 5.0),
        (np.full(50, 2.0) + rng.normal(0, 1e-3, 50), 10.0),
        (np.r_[0.0, rng.chisquare(3, 99) / 3], 3.0),
    ):
        scale, df2 = fit_f_dist(x, d)
        ref = fitFDist(x, d)
        assert scale == pytest.approx(float(ref["scale"]), rel=1e-10)
        assert df2 == pytest.approx(float(ref["df2"]), rel=1e-10)
    assert fit_f_dist(np.full(30, 1.5), 4.0)[1] == np.inf
    for v in (1e-8, 0.01, 2.0, 50.0, 1e8):
        assert polygamma(1, trigamma_inverse(v)) == pytest.approx(v, rel=1e-6)


def small_sites() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(5)
    out = {}
    for k, n in enumerate((30, 35, 40)):
        f = pd.DataFrame(rng.normal(size=(n, 3)), columns=["g1", "g2", "x"])
        f["flat"] = 1.0
        f["grp"] = rng.integers(0, 2, n).astype(float)
        out[f"s{k}"] = f
    return out


def test_edge_cases_give_clear_errors_or_correct_answers():
    sites = small_sites()
    with pytest.raises(ValidationError, match="design of covariates .* is singular"):
        Simulation(sites).run(
            ModeratedT(genes=("g1",), covariates=("grp", "flat"), source="columns")
        )
    res = Simulation(sites).run(  # a gene constant everywhere: no evidence, p = 1
        ModeratedT(genes=("g1", "g2", "flat"), covariates=("grp",), source="columns")
    )
    assert res.t[2] == pytest.approx(0.0, abs=1e-6) and res.pvalue[2] == pytest.approx(1.0)
    assert np.isfinite(res.pvalue).all()
    sites["s1"].loc[4, "g2"] = np.nan
    with pytest.raises(SchemaError, match="'g2' contains missing"):
        Simulation(sites).run(ModeratedT(genes=("g1", "g2"), covariates=("grp",), source="columns"))
    with pytest.raises(ValidationError, match="test 'age' must be one of the covariates"):
        ModeratedT(genes=("g1",), covariates=("grp",), test="age")
    alg = ModeratedT(genes=("g1", "g2"), covariates=("grp", "x"), test="x")
    assert algorithm_from_spec(alg.spec()) == alg
