"""Federated k-means against scikit-learn's KMeans on the pooled data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans as SKKMeans
from sklearn.metrics import adjusted_rand_score, calinski_harabasz_score, davies_bouldin_score
from sklearn.preprocessing import StandardScaler

from consortia import Policy, Simulation
from consortia.errors import AlgorithmError, PolicyError, ValidationError
from consortia.subgroups import ChooseK, KMeans, assign

COLS = ("x0", "x1", "x2")


def _blobs(sizes: tuple[int, ...], seed: int, k: int = 4) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (k, len(COLS)))
    out = {}
    for i, n in enumerate(sizes):
        lab = rng.integers(0, k, n)
        x = centres[lab] + rng.normal(0.0, 1.2, (n, len(COLS))) + [10.0, -5.0, 0.0]
        out[f"s{i}"] = pd.DataFrame(x, columns=list(COLS))
    return out


def _labels(res, sites) -> np.ndarray:
    return np.concatenate([assign(res, s).to_numpy() for s in sites.values()])


@pytest.fixture(scope="module")
def blobs() -> dict[str, pd.DataFrame]:
    return _blobs((120, 90, 140), seed=5)


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("tol", [0.0, 1e-4])
def test_lloyd_from_given_centres_matches_sklearn(blobs, standardize: bool, tol: float) -> None:
    pooled = pd.concat(blobs.values(), ignore_index=True).to_numpy()
    x = StandardScaler().fit_transform(pooled) if standardize else pooled
    init = x[[0, 1, 2, 3]]  # poor starts: several iterations
    ref = SKKMeans(4, algorithm="lloyd", init=init, n_init=1, tol=tol).fit(x)
    algo = KMeans(
        columns=COLS,
        n_clusters=4,
        standardize=standardize,
        init=tuple(map(tuple, init)),
        tol=tol,
        min_cluster_size=1,
    )
    res = Simulation(blobs, policy=Policy(min_cell_count=1)).run(algo)
    assert np.array_equal(_labels(res, blobs), ref.labels_)
    assert np.max(np.abs(res.centres - ref.cluster_centers_)) <= 1e-10
    assert abs(res.inertia / ref.inertia_ - 1) <= 1e-10
    assert res.n_iter == ref.n_iter_ and res.n_iter > 2
    assert res.space == ("standardized" if standardize else "features")
    assert res.counts.sum() == len(x) and res.n_suppressed == 0


def test_start_from_public_summary_reaches_sklearn_best_of_ten(blobs) -> None:
    x = StandardScaler().fit_transform(pd.concat(blobs.values(), ignore_index=True))
    ref = SKKMeans(4, n_init=10, random_state=0).fit(x)
    res = Simulation(blobs).run(KMeans(columns=COLS, n_clusters=4))
    assert res.inertia <= 1.01 * ref.inertia_
    assert len(res.restart_inertia) == 10 and res.inertia == res.restart_inertia.min()
    assert res.converged
    lab = _labels(res, blobs)
    # the final statistics are those of the final labels
    assert abs(res.quality.calinski_harabasz / calinski_harabasz_score(x, lab) - 1) <= 1e-10
    assert abs(res.quality.davies_bouldin / davies_bouldin_score(x, lab) - 1) <= 1e-10
    assert list(res.summary.columns) == ["count", "share", "inertia", "simplified_silhouette"]


def _with_small_cluster() -> dict[str, pd.DataFrame]:
    sites = _blobs((100, 100, 100), seed=6, k=2)
    far = pd.DataFrame(np.full((2, 3), 60.0) + np.arange(6).reshape(2, 3), columns=list(COLS))
    sites["s0"] = pd.concat([sites["s0"], far], ignore_index=True)
    return sites


def test_a_small_cluster_at_a_site_contributes_nothing_from_it() -> None:
    sites = _with_small_cluster()
    pooled = pd.concat(sites.values(), ignore_index=True).to_numpy()
    init = np.vstack([pooled[:2], pooled[100:101]])  # the far pair will be cluster 2
    init[2] = [60.0, 61.0, 62.0]
    algo = KMeans(
        columns=COLS,
        n_clusters=3,
        standardize=False,
        init=tuple(map(tuple, init)),
        min_cluster_size=5,
    )
    res = Simulation(sites).run(algo)
    # the two far patients of s0 are their own cluster there: suppressed, never released
    assert res.counts[2] == 0 and res.n_suppressed == 2
    np.testing.assert_array_equal(res.centres[2], init[2])  # an empty cluster keeps its centre
    # the other clusters are exactly Lloyd on the patients that contributed
    kept = np.ones(len(pooled), bool)
    kept[100:102] = False
    ref = SKKMeans(2, algorithm="lloyd", init=init[:2], n_init=1).fit(pooled[kept])
    assert np.max(np.abs(res.centres[:2] - ref.cluster_centers_)) <= 1e-10
    # a study minimum below the data owner's minimum cell count (5 by default): the
    # node refuses the round instead, naming the rule, not the cluster
    lax = KMeans(
        columns=COLS,
        n_clusters=3,
        standardize=False,
        init=tuple(map(tuple, init)),
        min_cluster_size=1,
    )
    with pytest.raises(PolicyError, match="min_cell_count"):
        Simulation(sites).run(lax)


def test_planted_subtypes_are_found_as_well_as_pooled_kmeans() -> None:
    from consortia.data.synthetic import synthetic_cohort

    cohort = synthetic_cohort(
        n_sites=3,
        patients_per_site=90,
        n_genes=26,
        n_de_genes=4,
        n_prognostic_genes=2,
        n_subtypes=3,
        subtype_genes=5,
        subtype_log2fc=1.5,
        tiles=False,
        seed=11,
    )
    sites = cohort.sites()
    res = Simulation(sites).run(KMeans(expression=True, n_components=4, n_clusters=3))
    assert res.space == "pca" and res.pca.method == "exact"  # 26 genes, 90 a site
    labels = pd.concat([assign(res, d) for d in sites.values()])
    truth = cohort.truth.subtype
    ari_fed = adjusted_rand_score(truth.loc[labels.index], labels)
    # pooled reference: the same transform, scikit-learn PCA + KMeans (best of 10)
    from sklearn.decomposition import PCA as SKPCA

    counts = pd.concat([d.expression for d in sites.values()])
    counts = counts[sorted(counts.columns)].to_numpy(float)
    x = np.log2(1 + counts * 1e6 / counts.sum(axis=1, keepdims=True))
    scores = SKPCA(4, svd_solver="full").fit_transform(StandardScaler().fit_transform(x))
    ref = SKKMeans(3, n_init=10, random_state=0).fit(scores)
    ari_pooled = adjusted_rand_score(truth.loc[labels.index], ref.labels_)
    assert ari_fed >= ari_pooled and ari_fed > 0.8
    assert res.inertia <= 1.01 * ref.inertia_


def test_choose_k_reports_criteria_from_sums(blobs) -> None:
    x = StandardScaler().fit_transform(pd.concat(blobs.values(), ignore_index=True))
    res = Simulation(blobs).run(ChooseK(columns=COLS, k_min=2, k_max=5, n_init=4))
    table = res.summary
    assert res.ks == (2, 3, 4, 5)
    assert res.best_k == table["simplified_silhouette"].idxmax()
    assert list(table.index) == [2, 3, 4, 5]
    assert table["inertia"].is_monotonic_decreasing
    for k in res.ks:
        fit = res.fit(k)
        lab = _labels(fit, blobs)
        centres = np.array([x[lab == j].mean(axis=0) for j in range(k)])
        a = np.linalg.norm(x - centres[lab], axis=1)
        d = np.linalg.norm(x[:, None, :] - centres[None], axis=2)
        d[np.arange(len(x)), lab] = np.inf
        b = d.min(axis=1)
        simplified = np.mean((b - a) / np.maximum(a, b))
        assert abs(fit.quality.simplified_silhouette - simplified) <= 1e-10
        ch = calinski_harabasz_score(x, lab)
        assert abs(fit.quality.calinski_harabasz / ch - 1) <= 1e-10
    with pytest.raises(ValidationError, match="was not tried"):
        res.fit(9)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"n_clusters": 1}, "n_clusters must be"),
        ({"init": ((0.0, 0.0, 0.0),)}, "init must hold n_clusters rows"),
        ({"min_cluster_size": 0}, "min_cluster_size must be"),
        ({"tol": -1.0}, "tol must be"),
    ],
)
def test_bad_parameters(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValidationError, match=pattern):
        KMeans(columns=COLS, **{"n_clusters": 3, **kwargs})
    with pytest.raises(ValidationError, match="k_max must be at least k_min"):
        ChooseK(columns=COLS, k_min=5, k_max=3)


def test_too_few_patients_for_a_public_summary_of_k_clusters() -> None:
    sites = _blobs((30, 30, 30), seed=7)
    with pytest.raises(AlgorithmError, match="fewer than n_clusters=3"):
        Simulation(sites).run(KMeans(columns=COLS, n_clusters=3))
