"""Federated k-means: patient subgroups from secure per-cluster sums.

The study runs, in order (each a secure sum over the sites, never a patient row):

1. the rounds of :class:`~consortia.subgroups.PCA` that fix the clustering space:
   principal-component scores when ``n_components`` is set, otherwise the
   (standardised) features themselves (an exact PCA then only gives the space's
   variance, for the tolerance);
2. unless ``init`` is given, the principal-direction tree whose leaves are a public
   weighted summary; weighted k-means++ on it gives ``n_init`` candidate starts
   (:mod:`consortia.subgroups._init`);
3. Lloyd iterations of every candidate side by side, from per-cluster counts and
   sums, then one final round (:mod:`consortia.subgroups._lloyd`); the run of least
   securely summed inertia is the result.

Per-site minimum cluster size (the policy of the data owner): a cluster (or a tree
cell) holding fewer than ``min_cluster_size`` but some of a site's patients
*contributes nothing from that site* in that round: its count, sum and statistics
from that site are zero, and the result reports how many patients the final round
left out (``n_suppressed``).  The counts are also declared count arrays, so a node
whose policy sets a larger ``min_cell_count`` than the study's ``min_cluster_size``
*refuses the round* (rule ``min_cell_count``) instead: the data owner's minimum wins.

The clustering steps declare ``n_clusters x d`` model parameters (the centres, ``d``
the dimension of the clustering space) for the nodes' parameters-per-sample rule.

Which patient is in which cluster is never released: :func:`assign` runs at a site
and labels that site's patients with the public centres.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, ValidationError
from consortia.protocol import (
    Algorithm,
    Contribution,
    Coordination,
    Requirements,
    register,
)
from consortia.results import Result
from consortia.subgroups._lloyd import FinalStats, _labels
from consortia.subgroups._pipeline import ClusterParams, Space, to_space
from consortia.subgroups.pca import PCAResult, _feature_reader

__all__ = ["ClusterQuality", "KMeans", "KMeansResult", "assign", "quality"]


@dataclass(frozen=True)
class ClusterQuality(Result):
    """Quality of one clustering, from the final round's sums.

    Attributes
    ----------
    inertia
        Sum of squared distances of the patients to their centre (as scikit-learn's
        ``inertia_``), over the patients that contributed.
    simplified_silhouette
        Mean over patients of ``(b - a) / max(a, b)`` with ``a`` the distance to the
        own centre and ``b`` to the nearest other centre.  Each site sums its own
        patients' values: no distance between patients of different sites (nor of the
        same site) is needed.  It approximates the silhouette, which would need every
        pairwise distance.
    calinski_harabasz
        Between- over within-cluster dispersion, each per degree of freedom; equals
        ``sklearn.metrics.calinski_harabasz_score`` on the final labels (computed from
        the per-cluster counts, sums and inertia).
    davies_bouldin
        ``sklearn.metrics.davies_bouldin_score`` from per-cluster sums of distances to
        the centre (equal to it when the centres are the clusters' means, i.e. at
        strict convergence).
    """

    inertia: float
    simplified_silhouette: float
    calinski_harabasz: float
    davies_bouldin: float


def quality(stats: FinalStats, r: int) -> tuple[ClusterQuality, dict[str, np.ndarray]]:
    """The quality of run ``r`` and its per-cluster arrays (count, centre, inertia...)."""
    k = int(stats.valid[r].sum())
    count = stats.count[r, :k]
    centres = stats.centres[r, :k]
    inertia_k = stats.inertia[r, :k]
    n_used = float(count.sum())
    nz = count > 0
    means = centres.copy()
    means[nz] = stats.total[r, :k][nz] / count[nz, None]
    grand = stats.total[r, :k].sum(axis=0) / max(n_used, 1.0)
    # within dispersion about the label means (parallel axes from the centres)
    within = float(inertia_k.sum() - (count * ((centres - means) ** 2).sum(axis=1)).sum())
    between = float((count * ((means - grand) ** 2).sum(axis=1)).sum())
    kk = int(nz.sum())
    ch = (
        between * (n_used - kk) / (within * (kk - 1))
        if kk > 1 and within > 0 and n_used > kk
        else float("nan")
    )
    s = np.where(nz, stats.dist[r, :k] / np.maximum(count, 1.0), 0.0)
    db = float("nan")
    if kk > 1:
        idx = np.flatnonzero(nz)
        sep = np.sqrt(((means[idx, None, :] - means[None, idx, :]) ** 2).sum(axis=2))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (s[idx, None] + s[None, idx]) / sep
        np.fill_diagonal(ratio, -np.inf)
        ratio[~np.isfinite(ratio)] = -np.inf
        db = float(np.mean(np.max(ratio, axis=1)))
    sil_k = stats.sil[r, :k]
    q = ClusterQuality(
        inertia=float(inertia_k.sum()),
        simplified_silhouette=float(sil_k.sum() / n_used) if n_used else float("nan"),
        calinski_harabasz=float(ch),
        davies_bouldin=db,
    )
    per = {
        "count": count,
        "centres": centres,
        "inertia": inertia_k,
        "silhouette": np.where(nz, sil_k / np.maximum(count, 1.0), np.nan),
    }
    return q, per


@dataclass(frozen=True)
class KMeansResult(Result):
    """Federated k-means subgroups (public: centres, sizes and quality; no labels).

    Attributes
    ----------
    centres
        ``n_clusters x d`` centres in the clustering space (PCA scores, or the
        standardised or raw features; see ``space``).
    counts
        Patients per cluster in the final assignment (suppressed ones excluded).
    inertia
        Sum of squared distances to the centres (scikit-learn's ``inertia_``).
    cluster_inertia, cluster_silhouette
        Per cluster: inertia and mean simplified silhouette.
    quality
        :class:`ClusterQuality` of the clustering.
    n_iter
        Lloyd iterations of the chosen run (scikit-learn's ``n_iter_``).
    converged
        Whether the chosen run converged (labels unchanged, or shift within ``tol``)
        before ``max_iter``.
    restart_inertia
        Final inertia of every candidate start (the chosen one is the least).
    space
        ``"pca"`` (scores on ``pca.components``), ``"standardized"`` or ``"features"``.
    pca
        The PCA that fixed the space (its mean and scale are the standardisation).
    n
        Patients over the sites.
    n_suppressed
        Patients left out of the final round by the per-site minimum cluster size.
    rounds
        Federated rounds used (PCA, summary, Lloyd and final).
    """

    centres: np.ndarray
    counts: np.ndarray
    inertia: float
    cluster_inertia: np.ndarray
    cluster_silhouette: np.ndarray
    quality: ClusterQuality
    n_iter: int
    converged: bool
    restart_inertia: np.ndarray
    space: str
    pca: PCAResult
    n: int
    n_suppressed: int
    rounds: int

    @property
    def n_clusters(self) -> int:
        """Number of clusters."""
        return int(self.centres.shape[0])

    @property
    def summary(self) -> pd.DataFrame:
        """One row per cluster: size, share, inertia, mean simplified silhouette."""
        return pd.DataFrame(
            {
                "count": self.counts,
                "share": self.counts / max(float(self.counts.sum()), 1.0),
                "inertia": self.cluster_inertia,
                "simplified_silhouette": self.cluster_silhouette,
            },
            index=pd.Index(np.arange(self.n_clusters), name="cluster"),
        )


def space_name(params: ClusterParams) -> str:
    """The name of the clustering space of a study's parameters."""
    if params.n_components is not None:
        return "pca"
    return "standardized" if params.standardize else "features"


def assign(result: KMeansResult, data: Dataset | pd.DataFrame) -> pd.Series:
    """Cluster labels of a site's own patients (a local helper; nothing is released).

    Parameters
    ----------
    result
        A :class:`KMeansResult` (public).
    data
        The site's dataset.

    Returns
    -------
    pandas.Series
        Cluster (0 .. k-1) by patient id (or row position), nearest centre in the
        clustering space.
    """
    if not isinstance(data, Dataset):
        data = Dataset(frame=data)
    pca = result.pca
    m = _feature_reader(pca).read_features(data)
    public = space_public(pca, result.space)
    y = to_space(m.x, public)
    k = result.n_clusters
    labels = _labels(y, result.centres[None], np.ones((1, k)))[0]
    return pd.Series(labels, index=pd.Index(m.index, name="patient"), name="cluster")


def space_public(pca: PCAResult, space: str) -> dict[str, np.ndarray]:
    """The public arrays defining a clustering space."""
    if space == "pca":
        return {"shift": pca.mean, "scale": pca.scale, "rotation": pca.components}
    if space == "standardized":
        return {"shift": pca.mean, "scale": pca.scale}
    return {"shift": np.zeros_like(pca.mean), "scale": np.ones_like(pca.mean)}


def build_result(
    space: Space, stats: FinalStats, name: str, rounds: int, runs: range | None = None
) -> KMeansResult:
    """The result of the best run (least inertia) of ``stats`` among ``runs`` (all)."""
    runs = range(stats.centres.shape[0]) if runs is None else runs
    qualities = [quality(stats, r) for r in runs]
    inertias = np.array([q.inertia for q, _ in qualities])
    pick = int(np.argmin(inertias))
    best = runs[pick]
    q, per = qualities[pick]
    return KMeansResult(
        centres=per["centres"],
        counts=per["count"],
        inertia=q.inertia,
        cluster_inertia=per["inertia"],
        cluster_silhouette=per["silhouette"],
        quality=q,
        n_iter=int(stats.n_iter[best]),
        converged=bool(stats.converged[best]),
        restart_inertia=inertias,
        space=name,
        pca=space.pca,
        n=space.n,
        n_suppressed=int(round(space.n - float(per["count"].sum()))),
        rounds=rounds,
    )


@register
@dataclass(frozen=True, kw_only=True)
class KMeans(Algorithm, ClusterParams):
    """Federated k-means (Lloyd) with a start that releases no patient row.

    Parameters
    ----------
    columns, expression, genes, transform, standardize, dropna
        The features (see :class:`~consortia.subgroups.PCA`).
    n_clusters
        Number of clusters ``k``.
    n_components
        Cluster on this many principal components (needed for expression); ``None``
        clusters the (standardised, or raw with ``standardize=False``) features.
    init
        Initial centres (``k`` tuples of coordinates in the clustering space); empty
        (default): ``n_init`` k-means++ starts on the public summary.
    n_init
        Candidate starts; the one of least final inertia is kept.
    max_iter, tol
        As scikit-learn: at most ``max_iter`` Lloyd iterations; stop when the summed
        squared centre shift is at most ``tol`` times the mean feature variance (or
        when no label changed).
    min_cluster_size
        Per-site minimum cluster size (see the module docs): smaller clusters
        contribute nothing from that site.
    max_depth
        Depth bound of the principal-direction tree (the public summary).
    seed
        Seed of the starts and of the iterative PCA (public).
    pca_method, pca_tol, pca_max_iter, pca_oversample
        The PCA's ``method``, ``tol``, ``max_iter`` and ``oversample``.
    """

    name = "subgroups.kmeans"
    n_clusters: int = 3
    init: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self) -> None:
        self._check_cluster()
        k = self.n_clusters
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise ValidationError("n_clusters must be an integer >= 2")
        if self.init:
            init = np.asarray(self.init, dtype=np.float64)
            if init.ndim != 2 or init.shape[0] != k or not np.all(np.isfinite(init)):
                raise ValidationError("init must hold n_clusters rows of finite coordinates")
            object.__setattr__(self, "init", tuple(tuple(float(v) for v in r) for r in init))

    def requirements(self, step: str) -> Requirements:
        """PCA steps as :class:`PCA`; clustering steps ``n_clusters x dimension``."""
        return self._cluster_requirements(step, self.n_clusters)

    def coordinate(self) -> Coordination:
        space, rounds = yield from self._space_rounds()
        given = np.asarray(self.init, dtype=np.float64) if self.init else None
        inits, r_init = yield from self._inits(space, (self.n_clusters,), given)
        stats, r_lloyd = yield from self._lloyd(space, inits)
        if not stats.count.any():
            raise AlgorithmError("every cluster was suppressed at every site")
        return build_result(space, stats, space_name(self), rounds + r_init + r_lloyd)

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        return self._cluster_local(step, public, data, self.n_clusters)
