"""The differencing attacks of test_disclosure.py, played against the subgroup algorithms.

PCA and k-means release new arrays (moments, Gram matrices, per-cluster sums); the
node's memory of releases must refuse them as it refuses a mean.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_disclosure import _Federation, _sites

from consortia.errors import PolicyError
from consortia.subgroups import PCA, KMeans


def _pca(*columns: str) -> PCA:
    return PCA(columns=columns, n_components=1, dropna=True, method="exact")


def _kmeans(*columns: str) -> KMeans:
    return KMeans(columns=columns, n_clusters=2, n_init=2, dropna=True)


@pytest.mark.parametrize("make", [_pca, _kmeans], ids=["pca", "kmeans"])
def test_the_same_subgroup_query_over_another_set_of_sites_is_refused(make) -> None:
    fed = _Federation(_sites())
    names = list(fed.sim.workers)
    fed.run(make("age", "x2"), names[:3])
    with pytest.raises(PolicyError, match="repeated_query"):
        fed.run(make("age", "x2"), [names[0], names[1], names[3]])


@pytest.mark.parametrize("make", [_pca, _kmeans], ids=["pca", "kmeans"])
def test_a_subgroup_query_on_a_cohort_one_patient_smaller_is_refused(make) -> None:
    sites = _sites()
    sites["site0"].loc[7, "x2"] = np.nan  # one patient lacks x2
    sites["site0"]["x3"] = sites["site0"]["age"] * 0.5 + 1.0
    for name, frame in sites.items():
        if name != "site0":
            frame["x3"] = frame["age"] * 0.5 + 1.0
    fed = _Federation(sites)
    fed.run(make("age", "x3"), researcher="alice")
    with pytest.raises(PolicyError, match="cohort_difference") as err:
        fed.run(make("age", "x2"), researcher="bob")
    assert err.value.site is None  # data-dependent: the refusal names no site
