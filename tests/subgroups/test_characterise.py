"""The subgroups workflow against the same workflow on the pooled data.

scikit-learn's Lloyd k-means (same initial centres), lifelines (Kaplan-Meier,
multivariate log-rank, CoxPHFitter), pandas' crosstab and InMoose's limma on the
pooled synthetic cohort with planted subtypes, split over three sites.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from inmoose.limma import eBayes, lmFit
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test
from sklearn.cluster import KMeans as SKKMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler

from consortia import Policy, Simulation
from consortia.data.dataset import Dataset
from consortia.data.synthetic import synthetic_cohort
from consortia.errors import AlgorithmError, PolicyError, SchemaError, ValidationError
from consortia.protocol import algorithm_from_spec, get_algorithm
from consortia.resultcodec import decode_result, encode_result
from consortia.subgroups import Subgroups, SubgroupsResult, assign
from consortia.subgroups.kmeans import space_public

TIGHT = {"precision": 1e-18, "r_precision": 0.0, "max_steps": 200}  # lifelines to convergence
OPEN = Policy(min_cell_count=1, max_params_per_sample=1.0)
GRID = {"start": 0, "stop": 3000, "step": 1}
STAGES = ("I", "II", "III", "IV")


@pytest.fixture(scope="module")
def cohort():
    return synthetic_cohort(
        n_sites=3,
        patients_per_site=(90, 70, 80),
        n_genes=30,
        n_de_genes=2,
        n_prognostic_genes=2,
        n_subtypes=3,
        subtype_genes=4,
        subtype_log2fc=2.0,
        tiles=False,
        seed=3,
    )


def _log2cpm(cohort, genes, *, own_library: bool = False) -> np.ndarray:
    """Pooled log2(1 + CPM); ``own_library``: per million counts of ``genes`` alone
    (the subgroup features' convention), else of every gene (limma's)."""
    out = []
    for ds in cohort.sites().values():
        e = ds.expression.loc[ds.frame["pid"]]
        lib = (e[list(genes)] if own_library else e).sum(axis=1).to_numpy(float)
        out.append(np.log2(1 + e[list(genes)].to_numpy(float) / lib[:, None] * 1e6))
    return np.vstack(out)


@pytest.fixture(scope="module")
def run(cohort):
    """The federated workflow and the pooled reference's k-means."""
    genes = tuple(
        g for j in sorted(cohort.truth.subtype_genes) for g in cohort.truth.subtype_genes[j]
    )
    x = StandardScaler().fit_transform(_log2cpm(cohort, genes, own_library=True))
    truth = cohort.truth.subtype.loc[cohort.pooled().frame["pid"]].to_numpy()
    init = x[[int(np.flatnonzero(truth == j)[0]) for j in range(3)]]
    ref = SKKMeans(3, algorithm="lloyd", init=init, n_init=1, tol=1e-4).fit(x)
    algo = Subgroups(
        expression=True,
        genes=genes,
        n_clusters=3,
        init=tuple(map(tuple, init)),
        min_cluster_size=1,
        time="time",
        event="event",
        time_grid=GRID,
        crosstab=("stage", "msi"),
        crosstab_levels=(STAGES, ("MSS", "MSI-H")),
        marker_genes=cohort.genes,
    )
    res = Simulation(cohort.sites(), policy=OPEN).run(algo)
    return algo, res, ref, truth


def test_labels_and_sizes_match_sklearn_lloyd(cohort, run) -> None:
    _, res, ref, truth = run
    assert isinstance(res, SubgroupsResult)
    labels = np.concatenate([assign(res.kmeans, ds).to_numpy() for ds in cohort.sites().values()])
    assert np.array_equal(labels, ref.labels_)
    assert np.max(np.abs(res.kmeans.centres - ref.cluster_centers_)) <= 1e-10
    assert np.array_equal(res.sizes, np.bincount(ref.labels_, minlength=3))
    assert adjusted_rand_score(truth, labels) > 0.9  # the planted subtypes are found


def test_survival_matches_lifelines_on_pooled_subgroups(cohort, run) -> None:
    _, res, ref, _ = run
    frame = cohort.pooled().frame.assign(g=ref.labels_)
    for j in range(3):
        sub = frame[frame["g"] == j]
        kmf = KaplanMeierFitter().fit(sub["time"], sub["event"])
        tl = kmf.survival_function_.index.to_numpy()
        curve = res.kaplan_meier[str(j)]
        np.testing.assert_allclose(
            curve.survival_at(tl), kmf.survival_function_.iloc[:, 0], rtol=1e-8, atol=1e-12
        )
        assert curve.median == pytest.approx(kmf.median_survival_time_)
    lr = multivariate_logrank_test(frame["time"], frame["g"], frame["event"])
    assert res.logrank.chi2 == pytest.approx(lr.test_statistic, rel=1e-8)
    assert res.logrank.p_value == pytest.approx(lr.p_value, rel=1e-6)
    assert res.logrank.df == 2
    design = pd.get_dummies(frame["g"], prefix="subgroup").astype(float)[
        ["subgroup_1", "subgroup_2"]
    ]
    cph = CoxPHFitter().fit(
        design.join(frame[["time", "event"]]), "time", "event", fit_options=TIGHT
    )
    np.testing.assert_allclose(res.cox.coef, cph.params_.to_numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(res.cox.se, cph.standard_errors_.to_numpy(), rtol=1e-6)
    assert res.cox.covariates == ("subgroup_1", "subgroup_2")


def test_crosstabs_match_pandas_with_small_cells_suppressed(cohort, run) -> None:
    _, res, ref, _ = run
    frame = cohort.pooled().frame
    for col, cats in (("stage", STAGES), ("msi", ("MSS", "MSI-H"))):
        expect = (
            pd.crosstab(ref.labels_, frame[col])
            .reindex(index=range(3), columns=list(cats), fill_value=0)
            .to_numpy(float)
        )
        small = (expect > 0) & (expect < 5)
        ct = res.crosstabs[col]
        assert np.array_equal(ct.suppressed, small)
        np.testing.assert_array_equal(ct.counts[~small], expect[~small])
        assert np.isnan(ct.counts[small]).all()


def test_markers_match_inmoose_limma_one_subgroup_against_the_rest(cohort, run) -> None:
    _, res, ref, _ = run
    y = _log2cpm(cohort, cohort.genes)
    for j in range(3):
        design = pd.DataFrame(
            {"Intercept": 1.0, "in": (ref.labels_ == j).astype(float)},
            index=[f"s{i}" for i in range(len(y))],
        )
        fit = eBayes(lmFit(pd.DataFrame(y.T, columns=design.index), design))
        m = res.markers[str(j)]
        np.testing.assert_allclose(m.log_fc, fit.coefficients.iloc[:, 1], rtol=1e-8)
        np.testing.assert_allclose(m.t, fit.t.iloc[:, 1], rtol=1e-8)
        # the planted signature of the matching subtype is among the top up-markers
        top = res.top_markers(j, n=4)
        assert (top["logFC"] > 1).all() and len(top) == 4


def test_summary_json_and_result_codec(run) -> None:
    _, res, _, _ = run
    s = res.summary
    assert list(s.index) == [0, 1, 2] and s["hazard_ratio"].iloc[0] == 1.0
    assert s["hazard_ratio"].iloc[1] == pytest.approx(np.exp(res.cox.coef[0]))
    stats = res.statistics()
    assert stats["n"] == 240 and stats["subgroups"] == 3 and stats["chi2"] == res.logrank.chi2
    text = res.summary_text()
    assert "crosstab stage" in text and "markers 2" in text and "cox" in text
    assert res.to_dict()["type"].endswith(":SubgroupsResult")
    back = decode_result(encode_result(res))
    assert isinstance(back, SubgroupsResult)
    assert back.logrank.chi2 == res.logrank.chi2
    assert np.array_equal(back.crosstabs["stage"].suppressed, res.crosstabs["stage"].suppressed)


def test_registered_and_spec_round_trip(run) -> None:
    algo = run[0]
    assert get_algorithm("subgroups.characterise") is Subgroups
    again = algorithm_from_spec(algo.spec())
    assert isinstance(again, Subgroups) and again.spec() == algo.spec()


# --------------------------------------------------------------------------- edge cases


def _clinical(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 2, n)
    x = rng.normal(0, 1, (n, 2)) + 4.0 * g[:, None]
    t = np.ceil(rng.exponential(300 * np.exp(0.8 * g)))
    return pd.DataFrame(
        {
            "a": x[:, 0],
            "b": x[:, 1],
            "time": t,
            "event": (rng.random(n) < 0.8).astype(int),
            "grade": rng.choice(["G1", "G2"], n),
        }
    )


def _algo(**kw) -> Subgroups:
    params = {
        "columns": ("a", "b"),
        "n_clusters": 2,
        "n_init": 2,
        "time": "time",
        "event": "event",
        "time_grid": {"start": 0, "stop": 5000, "step": 1},
        "crosstab": ("grade",),
        "crosstab_levels": (("G1", "G2"),),
        "dropna": True,
    }
    return Subgroups(**{**params, **kw})


def test_clinical_features_and_missing_rows_map_to_the_sites_rows() -> None:
    sites = {f"s{i}": _clinical(i, n) for i, n in enumerate((60, 50, 50))}
    sites["s0"].loc[[3, 10], "a"] = np.nan
    algo = _algo()
    res = Simulation(sites, policy=OPEN).run(algo)
    assert res.sizes.sum() == 158 and not res.markers
    assert "markers 0" not in res.tables()
    public = {f"subgroup_{k}": v for k, v in space_public(res.kmeans.pca, res.kmeans.space).items()}
    public["subgroup_centres"] = res.kmeans.centres
    data = Dataset(frame=sites["s0"])
    c = algo.local("crosstab0:table", public, data)
    assert np.array_equal(c.rows, np.setdiff1d(np.arange(60), [3, 10]))
    counts = c.arrays["counts"]
    labels = assign(res.kmeans, sites["s0"].dropna())
    assert counts.sum() == 58 and np.array_equal(
        counts.sum(axis=1), np.bincount(labels, minlength=2)
    )


def test_default_policy_refuses_small_cells_of_a_day_grid() -> None:
    sites = {f"s{i}": _clinical(i, 40) for i in range(3)}
    with pytest.raises(PolicyError, match="min_cell_count"):
        Simulation(sites).run(_algo(dropna=False))


def test_bad_parameters_and_steps_are_named() -> None:
    with pytest.raises(ValidationError, match="crosstab_levels"):
        _algo(crosstab_levels=())
    with pytest.raises(ValidationError, match="reserved for the subgroup labels"):
        _algo(cox_covariates=("subgroup_1",))
    with pytest.raises(ValidationError, match="time_grid is required"):
        _algo(time_grid=None)
    with pytest.raises(ValidationError, match="n_clusters"):
        _algo(n_clusters=1)
    with pytest.raises(ValidationError, match="marker_genes"):
        _algo(marker_genes=("G1",), markers=False)
    with pytest.raises(AlgorithmError, match="unknown step"):
        _algo().local("nope:table", {}, Dataset(frame=_clinical(0, 10)))
    with pytest.raises(AlgorithmError, match="unknown step"):
        _algo().requirements("table")


def test_requirements_leave_out_the_derived_columns() -> None:
    algo = _algo(cox_covariates=("b",))
    req = algo.requirements("cox:summary")
    assert req is not None and req.n_parameters == 2
    assert "subgroup_1" not in req.columns and {"time", "event", "b", "a"} <= set(req.columns)
    assert algo.requirements("kmeans:kmeans_lloyd").n_parameters == 4


def test_a_site_column_named_subgroup_is_refused() -> None:
    sites = {f"s{i}": _clinical(i, 50).assign(subgroup=1) for i in range(3)}
    with pytest.raises(SchemaError, match="reserved for the subgroup labels"):
        Simulation(sites, policy=OPEN).run(_algo())


def test_targets_are_matched_from_the_subgroups_markers(run) -> None:
    import dataclasses

    from consortia.subgroups import TargetMatchResult

    _, res, _, _ = run
    # the synthetic genes are not in the knowledge table: name subgroup 0's strongest
    # up-marker ERBB2, as a real panel would
    m = res.markers["0"]
    top = int(np.argmax(np.where(m.fdr < 0.1, m.log_fc, -np.inf)))
    genes = list(m.genes)
    genes[top] = "ERBB2"
    renamed = dataclasses.replace(
        res, markers={**res.markers, "0": dataclasses.replace(m, genes=tuple(genes))}
    )
    matched = renamed.targets(cancer_type="breast")
    assert isinstance(matched, TargetMatchResult)
    first = matched.top("0", 1)
    assert "ERBB2" in " ".join(map(str, first.to_numpy().ravel()))
    with pytest.raises(ValidationError, match="no markers"):
        dataclasses.replace(res, markers={}).targets()
