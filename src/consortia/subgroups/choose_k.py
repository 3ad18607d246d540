"""Choosing the number of subgroups: k-means for every k of a range, in one study.

Every ``k`` from ``k_min`` to ``k_max`` runs its ``n_init`` starts side by side in the
same Lloyd rounds (one study, as many rounds as the slowest run), after one shared
PCA and one shared public summary.  For every ``k`` the result reports, all from
secure sums of the final round:

* the **inertia** (within-cluster sum of squares), summed over sites;
* the **simplified silhouette**: each patient's ``(b - a) / max(a, b)`` with ``a``
  its distance to its own centre and ``b`` to the nearest other centre, averaged.
  It needs only distances from a patient to the public centres, so every site sums
  its own patients' values and no distance between two patients (across sites or
  within one) is ever computed or released.  The exact silhouette would need every
  pairwise distance; the simplified one ranks k like it on compact clusters;
* the **Calinski-Harabasz** index (exactly scikit-learn's, from counts, sums and
  inertia) and the **Davies-Bouldin** index (from per-cluster sums of distances).

``best_k`` is the ``k`` of largest simplified silhouette.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from consortia.data.dataset import Dataset
from consortia.errors import ValidationError
from consortia.protocol import Algorithm, Contribution, Coordination, Requirements, register
from consortia.results import Result
from consortia.subgroups._pipeline import ClusterParams
from consortia.subgroups.kmeans import KMeansResult, build_result, space_name

__all__ = ["ChooseK", "ChooseKResult"]


@dataclass(frozen=True)
class ChooseKResult(Result):
    """k-means for every k of a range, with the criteria to choose among them.

    Attributes
    ----------
    ks
        The numbers of clusters tried.
    fits
        The :class:`~consortia.subgroups.KMeansResult` of each k (best of its starts).
    best_k
        The k of largest simplified silhouette.
    rounds
        Federated rounds of the whole study.
    """

    ks: tuple[int, ...]
    fits: tuple[KMeansResult, ...]
    best_k: int
    rounds: int

    @property
    def summary(self) -> pd.DataFrame:
        """One row per k: inertia, simplified silhouette, Calinski-Harabasz, Davies-Bouldin."""
        q = [f.quality for f in self.fits]
        return pd.DataFrame(
            {
                "inertia": [x.inertia for x in q],
                "simplified_silhouette": [x.simplified_silhouette for x in q],
                "calinski_harabasz": [x.calinski_harabasz for x in q],
                "davies_bouldin": [x.davies_bouldin for x in q],
                "n_iter": [f.n_iter for f in self.fits],
            },
            index=pd.Index(self.ks, name="k"),
        )

    def fit(self, k: int) -> KMeansResult:
        """The k-means result for ``k``."""
        try:
            return self.fits[self.ks.index(k)]
        except ValueError:
            raise ValidationError(f"k={k} was not tried (ks={self.ks})") from None


@register
@dataclass(frozen=True, kw_only=True)
class ChooseK(Algorithm, ClusterParams):
    """Federated k-means for ``k = k_min .. k_max`` and criteria to choose k (module docs).

    Parameters
    ----------
    k_min, k_max
        The range of k (``2 <= k_min <= k_max``); default 2..8.
    columns, expression, genes, transform, standardize, dropna, n_components, n_init,
    max_iter, tol, min_cluster_size, max_depth, seed, pca_method, pca_tol,
    pca_max_iter, pca_oversample
        As :class:`~consortia.subgroups.KMeans`.
    """

    name = "subgroups.choose_k"
    k_min: int = 2
    k_max: int = 8

    def __post_init__(self) -> None:
        self._check_cluster()
        for p in ("k_min", "k_max"):
            v = getattr(self, p)
            if isinstance(v, bool) or not isinstance(v, int) or v < 2:
                raise ValidationError(f"{p} must be an integer >= 2")
        if self.k_max < self.k_min:
            raise ValidationError("k_max must be at least k_min")

    @property
    def ks(self) -> tuple[int, ...]:
        """The numbers of clusters tried."""
        return tuple(range(self.k_min, self.k_max + 1))

    def requirements(self, step: str) -> Requirements:
        """PCA steps as :class:`PCA`; clustering steps ``k_max x dimension``."""
        return self._cluster_requirements(step, self.k_max)

    def coordinate(self) -> Coordination:
        space, rounds = yield from self._space_rounds()
        inits, r_init = yield from self._inits(space, self.ks, None)
        stats, r_lloyd = yield from self._lloyd(space, inits)
        total = rounds + r_init + r_lloyd
        fits = tuple(
            build_result(
                space, stats, space_name(self), total, range(j * self.n_init, (j + 1) * self.n_init)
            )
            for j in range(len(self.ks))
        )
        sil = np.array([f.quality.simplified_silhouette for f in fits])
        best = self.ks[int(np.nanargmax(sil))] if np.isfinite(sil).any() else self.k_min
        return ChooseKResult(ks=self.ks, fits=fits, best_k=best, rounds=total)

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        return self._cluster_local(step, public, data, self.k_max)
