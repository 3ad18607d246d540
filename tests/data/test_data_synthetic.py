"""The synthetic multimodal cohort: deterministic per seed, with recoverable planted effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from consortia.data import COVARIATES, DEFAULT_LOG_HR, catalogue, synthetic_cohort
from consortia.errors import ValidationError


@pytest.fixture(scope="module")
def large():
    """3 sites x 1,000 patients: enough events to check the planted hazard ratios."""
    return synthetic_cohort(n_sites=3, patients_per_site=1000, n_genes=300, seed=11)


def test_structure_and_schema() -> None:
    c = synthetic_cohort(n_sites=4, patients_per_site=(30, 40, 50, 60), n_genes=200, seed=2)
    assert list(c.sites()) == ["site1", "site2", "site3", "site4"]
    for (site, ds), n in zip(c.sites().items(), (30, 40, 50, 60)):
        assert ds.site == site and ds.n_rows == n
        assert ds.schema is c.schema
        pd.testing.assert_frame_equal(c.schema.validate(ds.frame), ds.frame)
        assert ds.expression.shape == (n, 200)
        assert list(ds.expression.index) == list(ds.frame["pid"])
        assert ds.expression.to_numpy().dtype == np.int32
        assert set(ds.tiles) == set(ds.frame["pid"])
        sizes = {a.shape[0] for a in ds.tiles.values()}
        assert min(sizes) >= 8 and max(sizes) <= 32
        assert {a.shape[1] for a in ds.tiles.values()} == {64}
        assert ds.frame["time"].dtype == np.int64 and (ds.frame["time"] >= 1).all()
        assert set(ds.frame["event"]) <= {0, 1}
    pooled = c.pooled()
    assert pooled.n_rows == 180 and pooled.frame["pid"].is_unique
    assert pooled.expression.shape == (180, 200) and len(pooled.tiles) == 180
    assert set(c.covariates) <= set(pooled.frame.columns)
    assert c.truth.log_hr == dict(DEFAULT_LOG_HR)
    assert len(c.truth.de_genes) == 20 and len(c.truth.prognostic_genes) == 5
    assert not set(c.truth.de_genes) & set(c.truth.prognostic_genes)
    assert catalogue(c.datasets["site1"])["rows"] == 30


def test_deterministic_per_seed() -> None:
    a = synthetic_cohort(patients_per_site=50, n_genes=100, seed=5)
    b = synthetic_cohort(patients_per_site=50, n_genes=100, seed=5)
    c = synthetic_cohort(patients_per_site=50, n_genes=100, seed=6)
    for site in a.datasets:
        pd.testing.assert_frame_equal(a.datasets[site].frame, b.datasets[site].frame)
        pd.testing.assert_frame_equal(a.datasets[site].expression, b.datasets[site].expression)
        for pid, arr in a.datasets[site].tiles.items():
            np.testing.assert_array_equal(arr, b.datasets[site].tiles[pid])
    assert a.truth.de_log2fc == b.truth.de_log2fc
    assert not a.datasets["site1"].frame["time"].equals(c.datasets["site1"].frame["time"])
    # The clinical table does not depend on the modalities or on the number of genes.
    d = synthetic_cohort(patients_per_site=50, n_genes=400, tiles=False, seed=5)
    pd.testing.assert_frame_equal(a.datasets["site2"].frame, d.datasets["site2"].frame)
    assert d.datasets["site2"].tiles is None


def test_planted_hazard_ratios_are_recovered(large) -> None:
    pooled = large.pooled()
    df = pooled.frame[[*COVARIATES, "time", "event"]].astype(float)
    latent = large.truth.prognostic_latent.loc[pooled.frame["pid"]]
    for g in latent:
        df[g] = latent[g].to_numpy()
    fit = CoxPHFitter().fit(df, "time", "event")
    truth = pd.Series({**large.truth.log_hr, **large.truth.prognostic_log_hr})
    err = (fit.params_ - truth[fit.params_.index]).abs()
    z = err / fit.standard_errors_
    assert z.max() < 3.5, z.to_dict()
    for stage in ("stage_II", "stage_III", "stage_IV"):
        assert err[stage] < 0.25
    # On the observed counts (log2 CPM, centred per site against the batch shift) the
    # prognostic genes keep their sign and most of their effect (measurement error
    # attenuates them).
    expr = pooled.expression
    cpm = np.log2((expr.to_numpy() + 0.5) / expr.to_numpy().sum(1, keepdims=True) * 1e6)
    obs = pd.DataFrame(cpm, columns=expr.columns)[list(large.truth.prognostic_genes)]
    obs = obs - obs.groupby(pooled.frame["site"].to_numpy()).transform("mean")
    df2 = pd.concat([df[[*COVARIATES, "time", "event"]], obs], axis=1)
    fit2 = CoxPHFitter().fit(df2, "time", "event")
    for g, beta in large.truth.prognostic_log_hr.items():
        assert np.sign(fit2.params_[g]) == np.sign(beta)
        assert 0.5 * abs(beta) < abs(fit2.params_[g]) < 1.2 * abs(beta)


PLANTED_LOG_HR = {
    "age": 0.02,
    "female": -0.1,
    "stage_II": 0.5,
    "stage_III": 1.0,
    "stage_IV": 1.9,
    "grade_3": 0.2,
    "msi_high": -0.4,
    "treated": -0.35,
}
"""The documented planted log hazard ratios, written here, not read from the code."""


def test_a_pooled_cox_recovers_the_documented_log_hazard_ratios() -> None:
    """12,000 patients: lifelines' estimates lie within 4 standard errors of the
    documented values (and within 0.15 absolutely: the standard errors are < 0.06)."""
    c = synthetic_cohort(n_sites=4, patients_per_site=3000, n_genes=60, tiles=False, seed=2024)
    assert c.truth.log_hr == PLANTED_LOG_HR
    pooled = c.pooled()
    df = pooled.frame[[*COVARIATES, "time", "event"]].astype(float)
    # the prognostic genes' latent expression enters the true hazard: adjust for it, or
    # the Cox model is misspecified and the clinical effects attenuate
    latent = c.truth.prognostic_latent.loc[pooled.frame["pid"]]
    for g in latent:
        df[g] = latent[g].to_numpy()
    assert df["event"].sum() > 2000
    fit = CoxPHFitter().fit(df, "time", "event")
    planted = pd.Series(PLANTED_LOG_HR)
    estimate, se = fit.params_[planted.index], fit.standard_errors_[planted.index]
    assert (se < 0.06).all(), se.to_dict()
    z = ((estimate - planted) / se).abs()
    assert z.max() < 4.0, z.to_dict()
    assert ((estimate - planted).abs() < 0.15).all(), (estimate - planted).to_dict()


def test_de_genes_have_the_planted_direction(large) -> None:
    pooled = large.pooled()
    expr = pooled.expression.to_numpy()
    logcpm = np.log2((expr + 0.5) / expr.sum(1, keepdims=True) * 1e6)
    msi = pooled.frame["msi_high"].to_numpy() == 1
    diff = logcpm[msi].mean(0) - logcpm[~msi].mean(0)
    diff = pd.Series(diff, index=pooled.expression.columns)
    for g, lfc in large.truth.de_log2fc.items():
        assert np.sign(diff[g]) == np.sign(lfc)
        assert abs(diff[g] - lfc) < 0.3
    null = diff.drop(list(large.truth.de_genes))
    assert null.abs().max() < 0.3


def test_msi_shifts_tile_means(large) -> None:
    pooled = large.pooled()
    means = np.stack([pooled.tiles[p].mean(0) for p in pooled.frame["pid"]])
    msi = pooled.frame["msi_high"].to_numpy() == 1
    shift = means[msi].mean(0) - means[~msi].mean(0)
    true = large.truth.msi_tile_shift
    assert np.linalg.norm(true) == pytest.approx(1.5)
    assert np.corrcoef(shift, true)[0, 1] > 0.9
    assert np.linalg.norm(shift - true) < 0.25 * np.linalg.norm(true)
    # Without an MSI effect, the tile means do not differ beyond noise.
    null = synthetic_cohort(patients_per_site=300, n_genes=50, msi_tile_effect=0.0, seed=4)
    p0 = null.pooled()
    m0 = np.stack([p0.tiles[p].mean(0) for p in p0.frame["pid"]])
    msi0 = p0.frame["msi_high"].to_numpy() == 1
    assert np.linalg.norm(m0[msi0].mean(0) - m0[~msi0].mean(0)) < 0.6


def test_site_effects(large) -> None:
    stage_iv = {s: (d.frame["stage"] == "IV").mean() for s, d in large.datasets.items()}
    assert stage_iv["site1"] < stage_iv["site2"] < stage_iv["site3"]
    for s in large.datasets:
        assert abs(stage_iv[s] - large.truth.stage_probs[s][3]) < 0.05
    # The batch shift moves each site's gene means as planted.
    logs = {s: np.log2(d.expression.to_numpy() + 0.5).mean(0) for s, d in large.datasets.items()}
    observed = logs["site1"] - logs["site2"]
    planted = large.truth.batch_log2_shift["site1"] - large.truth.batch_log2_shift["site2"]
    assert np.corrcoef(observed, planted)[0, 1] > 0.8


def test_twenty_thousand_genes() -> None:
    # the time it takes is measured by bench/synthetic_cohort.py (no wall clock in tests)
    c = synthetic_cohort(n_sites=2, patients_per_site=500, n_genes=20_000, tiles=False, seed=1)
    assert c.pooled().expression.shape == (1000, 20_000)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"n_sites": 0}, "n_sites must be an integer >= 1"),
        ({"n_sites": 2, "patients_per_site": (10, 20, 30)}, "one size per site"),
        ({"patients_per_site": 1}, "patients_per_site must be an integer >= 2"),
        ({"n_genes": 30}, r"n_de_genes \+ n_prognostic_genes must be at most"),
        ({"tiles_per_patient": (5, 2)}, "tiles_per_patient must be an integer >= 5"),
        ({"site_names": ["a", "a", "b"]}, "site_names must hold n_sites distinct names"),
        ({"msi_prevalence": 0.9}, r"msi_prevalence must be in \[0, 0.7\]"),
        ({"batch_sd": -1.0}, "batch_sd must be a finite number >= 0"),
        ({"case_mix": float("nan")}, "case_mix must be a finite number"),
        ({"log_hr": {"bmi": 0.1}}, r"log_hr has unknown covariate\(s\) \['bmi'\]"),
    ],
)
def test_bad_parameters(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValidationError, match=pattern):
        synthetic_cohort(**kwargs)


def test_custom_log_hr_and_site_names() -> None:
    c = synthetic_cohort(
        n_sites=2, patients_per_site=20, n_genes=60, site_names=("A", "B"), log_hr={"treated": 0}
    )
    assert list(c.sites()) == ["A", "B"]
    assert c.truth.log_hr["treated"] == 0.0
    assert c.datasets["A"].frame["pid"].iloc[0] == "A-00001"


def test_sites_run_through_a_simulation() -> None:
    """Multimodal datasets travel through the runtime (secure sum) unchanged."""
    from consortia import Simulation
    from consortia.stats.descriptive import Mean

    c = synthetic_cohort(patients_per_site=(40, 50, 60), n_genes=100, seed=9)
    result = Simulation(c.sites()).run(Mean(columns=("age", "stage_IV", "time")))
    expected = c.pooled().frame[["age", "stage_IV", "time"]].mean().to_numpy()
    np.testing.assert_allclose(result.mean, expected, rtol=1e-8)
    assert result.n == 150


def _digest(cohort) -> str:
    import hashlib

    h = hashlib.sha256()
    for d in cohort.datasets.values():
        h.update(pd.util.hash_pandas_object(d.frame, index=True).to_numpy().tobytes())
        h.update(np.ascontiguousarray(d.expression.to_numpy()).tobytes())
        for k in sorted(d.tiles):
            h.update(np.ascontiguousarray(d.tiles[k]).tobytes())
    h.update(pd.util.hash_pandas_object(cohort.truth.prognostic_latent).to_numpy().tobytes())
    return h.hexdigest()


def test_cohorts_without_subtypes_are_those_of_earlier_releases() -> None:
    # the digest of this call before subtypes could be planted
    cohort = synthetic_cohort(n_sites=2, patients_per_site=40, n_genes=60, seed=7)
    assert _digest(cohort) == "7099ee1ade3bd1cf70588e16a68a27b0bb8f13b824179d78f9402dc91125fc06"
    assert cohort.truth.subtype is None and cohort.truth.subtype_genes == {}


def test_planted_subtypes_raise_their_signature_genes() -> None:
    kwargs = {"n_sites": 3, "patients_per_site": 120, "n_genes": 80, "tiles": False, "seed": 4}
    plain = synthetic_cohort(**kwargs)
    cohort = synthetic_cohort(**kwargs, n_subtypes=3, subtype_genes=5, subtype_log2fc=2.0)
    truth = cohort.truth
    # the clinical tables (not their survival outcome) and the other draws are unchanged
    for site, d in cohort.datasets.items():
        cols = ["pid", "age", "stage", "msi", "arm"]
        pd.testing.assert_frame_equal(d.frame[cols], plain.datasets[site].frame[cols])
        assert "subtype" not in d.frame.columns
    assert set(truth.subtype.unique()) == {0, 1, 2} and len(truth.subtype) == 360
    assert len(truth.subtype_log_hr) == 3
    genes = [g for gs in truth.subtype_genes.values() for g in gs]
    assert len(set(genes)) == 15 and not set(genes) & set(truth.de_genes)
    expr = np.log2(1 + pd.concat(d.expression for d in cohort.datasets.values()))
    sub = truth.subtype.loc[expr.index]
    for j, gs in truth.subtype_genes.items():
        diff = expr.loc[sub == j, list(gs)].mean() - expr.loc[sub != j, list(gs)].mean()
        assert (diff > 1.2).all()


def test_bad_subtype_parameters() -> None:
    with pytest.raises(ValidationError, match="n_subtypes must be 0"):
        synthetic_cohort(n_subtypes=1)
    with pytest.raises(ValidationError, match="n_subtypes \\* subtype_genes"):
        synthetic_cohort(n_genes=60, n_subtypes=4, subtype_genes=10)
