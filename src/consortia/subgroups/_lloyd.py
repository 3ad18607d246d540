"""Lloyd iterations from secure per-cluster sums, several runs side by side.

Every ``kmeans_lloyd`` round broadcasts the current centres of ``R`` runs (each run
is a restart, or a number of clusters for :class:`~consortia.subgroups.ChooseK`;
runs with fewer clusters are padded and their padding is never chosen) and, from
the second round on, the previous centres.  A site assigns each of its patients to
the nearest centre of every run and sends, per run and cluster, the number of its
patients and the sum of their coordinates; and per run a flag, 1 if any of its
patients changed cluster since the previous centres (the sum counts sites, not
patients).  The hub's new centres are the summed sums over the summed counts.

The hub follows scikit-learn's ``_kmeans_single_lloyd`` step for step: a run stops
when no site saw a change of label (strict convergence) or when the squared centre
shift is at most ``tol`` times the mean feature variance, or after ``max_iter``
iterations; then one ``kmeans_final`` round assigns every patient to the final
centres and returns the per-cluster counts, sums, inertia, sums of distances and of
simplified silhouettes.  Given the same initial centres the labels are those of
``KMeans(algorithm="lloyd", init=centres, n_init=1)`` on the pooled data and the
centres agree to about 1e-12.  Two differences: an empty cluster keeps its centre
(scikit-learn moves it to a far patient: that would release a row), and a cluster
holding fewer than ``min_cluster_size`` (but some) of a site's patients contributes
nothing from that site in that round (*suppression*; the number of patients left
out of the final round is reported).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass

import numpy as np

from consortia.precision import join, split
from consortia.protocol import Round, Sums

__all__ = ["FINAL_STEP", "LLOYD_STEP", "FinalStats", "lloyd_local", "lloyd_rounds", "pad"]

LLOYD_STEP = "kmeans_lloyd"
FINAL_STEP = "kmeans_final"


def pad(centres: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Centres of runs of different sizes as one ``R x kmax x d`` array and a validity mask."""
    kmax = max(len(c) for c in centres)
    d = centres[0].shape[1]
    out = np.zeros((len(centres), kmax, d))
    valid = np.zeros((len(centres), kmax))
    for r, c in enumerate(centres):
        out[r, : len(c)] = c
        valid[r, : len(c)] = 1.0
    return out, valid


def _labels(y: np.ndarray, centres: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Nearest valid centre of every run (``R x n``), scikit-learn's distance formula."""
    cc = np.einsum("rkd,rkd->rk", centres, centres)
    score = cc[:, None, :] - 2.0 * np.einsum("nd,rkd->rnk", y, centres)
    score = np.where(valid[:, None, :] > 0, score, np.inf)
    return np.argmin(score, axis=2)


def _cluster_sums(
    y: np.ndarray, labels: np.ndarray, kmax: int, min_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per run and cluster: counts, coordinate sums, and the mask of kept (not suppressed)."""
    r_n, _ = labels.shape
    counts = np.zeros((r_n, kmax))
    sums = np.zeros((r_n, kmax, y.shape[1]))
    for r in range(r_n):
        counts[r] = np.bincount(labels[r], minlength=kmax)
        np.add.at(sums[r], labels[r], y)
    kept = ~((counts > 0) & (counts < min_size))
    return counts * kept, sums * kept[:, :, None], kept


def lloyd_local(
    step: str, public: Mapping[str, np.ndarray], y: np.ndarray, min_size: int
) -> dict[str, np.ndarray]:
    """A site's arrays for a ``kmeans_lloyd`` or ``kmeans_final`` round."""
    centres, valid = public["centres"], public["valid"]
    kmax = centres.shape[1]
    labels = _labels(y, centres, valid)
    counts, sums, kept = _cluster_sums(y, labels, kmax, min_size)
    if step == LLOYD_STEP:
        prev = _labels(y, public["previous"], valid)
        changed = (prev != labels).any(axis=1) & (public["has_previous"] > 0)
        return {"count": counts, **split("sum", sums), "changed": changed.astype(np.float64)}
    # final statistics, per run and cluster, over the kept patients
    r_n = labels.shape[0]
    d2 = np.maximum(
        np.einsum("nd,nd->n", y, y)[None, :, None]
        - 2.0 * np.einsum("nd,rkd->rnk", y, centres)
        + np.einsum("rkd,rkd->rk", centres, centres)[:, None, :],
        0.0,
    )
    d2 = np.where(valid[:, None, :] > 0, d2, np.inf)
    own = np.take_along_axis(d2, labels[:, :, None], axis=2)[:, :, 0]
    inertia = np.zeros((r_n, kmax))
    dist = np.zeros((r_n, kmax))
    sil = np.zeros((r_n, kmax))
    for r in range(r_n):
        exact = ((y - centres[r][labels[r]]) ** 2).sum(axis=1)  # as scikit-learn's _inertia
        others = d2[r].copy()
        others[np.arange(len(y)), labels[r]] = np.inf
        a, b = np.sqrt(own[r]), np.sqrt(others.min(axis=1))
        den = np.maximum(a, b)
        s = np.where(np.isfinite(b) & (den > 0), (b - a) / np.where(den > 0, den, 1.0), 0.0)
        np.add.at(inertia[r], labels[r], exact)
        np.add.at(dist[r], labels[r], a)
        np.add.at(sil[r], labels[r], s)
    inertia, dist, sil = inertia * kept, dist * kept, sil * kept
    return {
        "count": counts,
        **split("sum", sums),
        **split("inertia", inertia),
        **split("dist", dist),
        **split("sil", sil),
    }


@dataclass(frozen=True)
class FinalStats:
    """The summed statistics of the final round, per run (padded to ``kmax`` clusters)."""

    centres: np.ndarray
    valid: np.ndarray
    count: np.ndarray
    total: np.ndarray
    inertia: np.ndarray
    dist: np.ndarray
    sil: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray


def lloyd_rounds(
    inits: list[np.ndarray], *, max_iter: int, tol: float
) -> Generator[Round, Sums, tuple[FinalStats, int]]:
    """Run every initial centre set to convergence; yield rounds, return the final stats."""
    centres, valid = pad(inits)
    previous = centres.copy()
    has_prev = np.zeros(len(inits))
    active = np.ones(len(inits), dtype=bool)
    n_iter = np.zeros(len(inits), dtype=np.int64)
    strict = np.zeros(len(inits), dtype=bool)
    rounds = 0
    for _ in range(max_iter):
        if not active.any():
            break
        public = {"centres": centres, "valid": valid, "previous": previous}
        sums = yield Round(LLOYD_STEP, public | {"has_previous": has_prev})
        rounds += 1
        counts = np.asarray(sums["count"])
        total = join(sums, "sum")
        changed = np.asarray(sums["changed"])
        for r in np.flatnonzero(active):
            nz = counts[r] > 0
            new = centres[r].copy()
            new[nz] = total[r][nz] / counts[r][nz, None]
            shift = float(((new - centres[r]) ** 2).sum())
            n_iter[r] += 1
            if has_prev[r] > 0 and changed[r] == 0:
                strict[r], active[r] = True, False
            elif shift <= tol:
                active[r] = False
            previous[r] = centres[r]
            has_prev[r] = 1.0
            centres[r] = new
    sums = yield Round(FINAL_STEP, {"centres": centres, "valid": valid})
    rounds += 1
    stats = FinalStats(
        centres=centres,
        valid=valid,
        count=np.asarray(sums["count"], dtype=np.float64).copy(),
        total=join(sums, "sum"),
        inertia=join(sums, "inertia"),
        dist=join(sums, "dist"),
        sil=join(sums, "sil"),
        n_iter=n_iter,
        converged=~active,
    )
    return stats, rounds
