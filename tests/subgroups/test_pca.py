"""Federated PCA against scikit-learn's PCA on the pooled data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA as SKPCA
from sklearn.preprocessing import StandardScaler

from consortia import Policy, Simulation
from consortia.errors import PolicyError, ValidationError
from consortia.subgroups import PCA, principal_angles, project

TOL = 1e-8


def _sites(p: int, sizes: tuple[int, ...], seed: int) -> dict[str, pd.DataFrame]:
    """Correlated features with distinct eigenvalues, large means, a site shift."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(p, p)) * np.geomspace(4.0, 0.1, p)
    cols = [f"f{j}" for j in range(p)]
    return {
        f"s{i}": pd.DataFrame(rng.normal(size=(n, p)) @ mix.T + 100.0 + 0.2 * i, columns=cols)
        for i, n in enumerate(sizes)
    }


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


def _same_up_to_sign(a: np.ndarray, b: np.ndarray) -> float:
    signs = np.sign(np.sum(a * b, axis=1))[:, None]
    return float(np.max(np.abs(a * signs - b)))


@pytest.mark.parametrize("standardize", [True, False])
def test_exact_path_matches_sklearn(standardize: bool) -> None:
    sites = _sites(8, (120, 90, 150), seed=1)
    pooled = pd.concat(sites.values(), ignore_index=True)
    x = StandardScaler().fit_transform(pooled) if standardize else pooled.to_numpy()
    ref = SKPCA(n_components=4, svd_solver="full").fit(x)
    res = Simulation(sites).run(
        PCA(columns=tuple(pooled.columns), n_components=4, standardize=standardize)
    )
    assert res.method == "exact" and res.rounds == 2 and res.n == len(pooled)
    assert _rel(res.explained_variance, ref.explained_variance_) <= TOL
    assert _rel(res.explained_variance_ratio, ref.explained_variance_ratio_) <= TOL
    assert _same_up_to_sign(res.components, ref.components_) <= TOL
    assert np.max(np.abs(res.components - ref.components_)) <= TOL  # same sign convention
    assert list(res.summary.index) == ["PC1", "PC2", "PC3", "PC4"]
    assert res.loadings().shape == (8, 4)


def test_iterative_path_converges_to_sklearn_subspace() -> None:
    # p = 60 features, ~100 patients a site: the iterative path, never a p x p matrix
    sites = _sites(60, (110, 100, 120), seed=2)
    pooled = pd.concat(sites.values(), ignore_index=True)
    ref = SKPCA(n_components=3, svd_solver="full").fit(StandardScaler().fit_transform(pooled))
    res = Simulation(sites).run(
        PCA(columns=tuple(pooled.columns), n_components=3, oversample=6, method="auto")
    )
    assert res.method == "iterative"
    assert res.iterations >= 2 and res.rounds == res.iterations + 2
    assert res.max_angle_change <= 1e-9
    assert principal_angles(res.components.T, ref.components_.T).max() <= 1e-6
    assert _rel(res.explained_variance, ref.explained_variance_) <= 1e-8
    assert _same_up_to_sign(res.components, ref.components_) <= 1e-6


def test_sites_project_their_own_patients() -> None:
    sites = _sites(6, (80, 70, 90), seed=3)
    pooled = pd.concat(sites.values(), ignore_index=True)
    scaler = StandardScaler().fit(pooled)
    ref = SKPCA(n_components=2, svd_solver="full").fit(scaler.transform(pooled))
    res = Simulation(sites).run(PCA(columns=tuple(pooled.columns), n_components=2))
    scores = project(res, sites["s1"])
    assert list(scores.columns) == ["PC1", "PC2"] and len(scores) == 70
    expected = ref.transform(scaler.transform(sites["s1"]))
    assert np.max(np.abs(scores.to_numpy() - expected)) <= 1e-8


def test_exact_path_obeys_the_parameters_per_sample_rule() -> None:
    # 20 features, 40 patients a site: the exact step declares 20 parameters > 0.33 * 40
    sites = _sites(20, (40, 40, 40), seed=4)
    cols = tuple(sites["s0"].columns)
    with pytest.raises(PolicyError, match="max_params_per_sample"):
        Simulation(sites).run(PCA(columns=cols, n_components=2, method="exact"))
    # the iterative path declares n_components + oversample = 8 <= 13: it runs
    res = Simulation(sites, policy=Policy()).run(
        PCA(columns=cols, n_components=2, oversample=6, method="iterative")
    )
    assert res.method == "iterative"


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"columns": ()}, "columns must name"),
        ({"columns": ("a",), "expression": True}, "either columns or expression"),
        ({"columns": ("a",), "n_components": 0}, "n_components"),
        ({"columns": ("a",), "method": "svd"}, "method must be one of"),
        ({"columns": ("a",), "tol": 0}, "tol must be"),
        ({"expression": True, "transform": "log10"}, "transform must be one of"),
    ],
)
def test_bad_parameters(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValidationError, match=pattern):
        PCA(**kwargs)
