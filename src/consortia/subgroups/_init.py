"""Initial centres for federated k-means that release no patient row.

The public summary is a *principal-direction tree* built from secure sums
(``kmeans_tree`` rounds).  Round ``l`` broadcasts the splits decided so far; every
site sends, for each node of depth ``l``, the count of its patients in the node, their
sum and their sum of outer products ``y y^T``.  The hub splits a node through its mean,
perpendicular to its leading principal direction, when the node holds at least
``4 * sites * min_cluster_size`` patients, and stops when no node splits or at
``max_depth``.  A node holding fewer than ``min_cluster_size`` (but some) of a site's
patients contributes nothing from that site, so every released cell sums at least
that many of a site's patients.  The leaves (count and mean) are a weighted coreset.

On the coreset the hub runs weighted k-means++ (greedy, ``2 + log k`` trials, as
scikit-learn) followed by weighted Lloyd iterations, once per restart with its own
seeded stream: these are the candidate initial centres.  The federated Lloyd
iterations (:mod:`~consortia.subgroups._lloyd`) then run every candidate on the real
data and keep the one of least securely summed inertia.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

import numpy as np

from consortia.errors import AlgorithmError
from consortia.protocol import Round, Sums

__all__ = ["TREE_STEP", "candidates", "tree_local", "tree_rounds"]

TREE_STEP = "kmeans_tree"


def _descend(y: np.ndarray, point: np.ndarray, direction: np.ndarray, depth: int) -> np.ndarray:
    """The node (index within its level) of every row at ``depth``."""
    node = np.zeros(len(y), dtype=np.int64)
    for level in range(depth):
        h = (1 << level) - 1 + node  # heap index of each row's node at this level
        t = np.einsum("ij,ij->i", y - point[h], direction[h])
        node = 2 * node + (t > 0)
    return node


def tree_local(
    public: Mapping[str, np.ndarray], y: np.ndarray, min_size: int
) -> dict[str, np.ndarray]:
    """A site's node counts, sums and second moments at the round's depth."""
    depth = int(public["depth"][0])
    d = y.shape[1]
    point = public["point"] if depth else np.zeros((0, d))
    direction = public["direction"] if depth else np.zeros((0, d))
    node = _descend(y, point, direction, depth)
    width = 1 << depth
    counts = np.bincount(node, minlength=width).astype(np.float64)
    sums = np.zeros((width, d))
    np.add.at(sums, node, y)
    m2 = np.zeros((width, d, d))
    np.add.at(m2, node, y[:, :, None] * y[:, None, :])
    small = (counts > 0) & (counts < min_size)
    counts[small], sums[small], m2[small] = 0.0, 0.0, 0.0
    return {"tree_count": counts, "tree_sum": sums, "tree_m2": m2}


def tree_rounds(
    d: int, n_sites: int, min_size: int, max_depth: int
) -> Generator[Round, Sums, tuple[np.ndarray, np.ndarray, int]]:
    """Yield the tree rounds; return the leaves' means, weights and the rounds used."""
    point = np.zeros((0, d))
    direction = np.zeros((0, d))
    threshold = 4 * max(n_sites, 1) * max(min_size, 1)
    for depth in range(max_depth + 1):
        public: dict[str, Any] = {"depth": [depth]}
        if depth:
            public |= {"point": point, "direction": direction}
        sums = yield Round(TREE_STEP, public)
        rounds = depth + 1
        counts = np.asarray(sums["tree_count"], dtype=np.float64)
        tot = np.asarray(sums["tree_sum"], dtype=np.float64)
        m2 = np.asarray(sums["tree_m2"], dtype=np.float64)
        safe = np.maximum(counts, 1.0)
        means = tot / safe[:, None]
        split = counts >= threshold
        if depth == max_depth or not split.any():
            keep = counts > 0
            return means[keep], counts[keep], rounds
        dirs = np.zeros_like(means)
        for j in np.flatnonzero(split):
            cov = m2[j] / counts[j] - np.outer(means[j], means[j])
            _, vecs = np.linalg.eigh((cov + cov.T) / 2)
            dirs[j] = vecs[:, -1]
        point = np.vstack([point, means])
        direction = np.vstack([direction, dirs])
    raise AssertionError("unreachable")  # pragma: no cover


def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    d2 = (x * x).sum(axis=1)[:, None] - 2.0 * x @ c.T + (c * c).sum(axis=1)[None, :]
    return np.maximum(d2, 0.0)


def _kmeans_pp(x: np.ndarray, w: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Weighted greedy k-means++ seeding (scikit-learn's, with weights)."""
    trials = 2 + int(np.log(k))
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.choice(len(x), p=w / w.sum())]
    closest = _sq_dist(x, centres[:1])[:, 0]
    for c in range(1, k):
        pot = float((w * closest).sum())
        if pot <= 0:  # fewer distinct points than clusters
            raise AlgorithmError(f"the public summary has fewer than {k} distinct points")
        cum = np.cumsum(w * closest)
        picks = np.searchsorted(cum, rng.random(trials) * pot)
        picks = np.clip(picks, 0, len(x) - 1)
        d2 = np.minimum(closest[None, :], _sq_dist(x, x[picks]).T)
        best = int(np.argmin((d2 * w[None, :]).sum(axis=1)))
        centres[c] = x[picks[best]]
        closest = d2[best]
    return centres


def _weighted_lloyd(x: np.ndarray, w: np.ndarray, c: np.ndarray, iters: int = 100) -> np.ndarray:
    for _ in range(iters):
        labels = np.argmin(_sq_dist(x, c), axis=1)
        new = c.copy()
        for j in range(len(c)):
            m = labels == j
            if w[m].sum() > 0:
                new[j] = (w[m, None] * x[m]).sum(axis=0) / w[m].sum()
        if np.array_equal(new, c):
            break
        c = new
    return c


def candidates(
    points: np.ndarray, weights: np.ndarray, k: int, n_init: int, seed: int
) -> list[np.ndarray]:
    """``n_init`` candidate centre sets from the public coreset (seeded, deterministic)."""
    if len(points) < k:
        raise AlgorithmError(
            f"the public summary has {len(points)} cells, fewer than n_clusters={k}: too few "
            "patients per site for this many clusters at this min_cluster_size"
        )
    streams = np.random.SeedSequence([seed, k]).spawn(n_init)
    return [
        _weighted_lloyd(points, weights, _kmeans_pp(points, weights, k, np.random.default_rng(s)))
        for s in streams
    ]
