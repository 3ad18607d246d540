"""Federated PCA (iterative) and k-means against scikit-learn on the pooled data.

* The synthetic cohort (``consortia.data.synthetic_cohort``) with 4 planted molecular
  subtypes (1% of the genes each, log2 fold change 1) and a mild per-site batch
  shift (``--batch-sd 0.05``; at the generator's default of 0.3 over 20,000 genes the
  sites, not the subtypes, are the dominant clusters for pooled and federated k-means
  alike): 5 sites x 400 patients, 20,000 genes by default.  Features: log2(1 + CPM) of
  every gene, standardised from secure sums.
* Federated PCA, 10 components, randomised subspace iteration (``p x 20`` secure sums a
  round, never a ``p x p`` matrix), against scikit-learn's exact ``PCA(svd_solver=
  "arpack", tol=0)`` on the pooled, standardised data: the largest principal angle
  between the subspaces and the number of federated rounds.
* Federated k-means (k = 4) in that PCA space from shared initial centres, against
  scikit-learn's Lloyd from the same centres on the pooled scores: identical labels?
* Federated k-means from the public summary (10 starts, no patient row released)
  against scikit-learn's ``KMeans(n_init=10)`` on the pooled scores: inertia ratio,
  and the adjusted Rand index to the planted subtypes of the federated labels and of
  the pooled pipeline (scikit-learn ``PCA`` + ``KMeans`` on the pooled data).
* ``fed_over_pooled_time``: wall time of the federated k-means study (its PCA rounds
  included; in-process simulation with secure aggregation) over that of the pooled
  scikit-learn pipeline (standardise, PCA with its default solver, KMeans n_init=10).

On a shared machine, run with ``OPENBLAS_NUM_THREADS=1``: oversubscribed BLAS threads
slow small dense products down many times, for both sides.

Last line: ``pca_kmeans sites=5 genes=20000 max_angle=<float> pca_rounds=<int>
same_labels=<0|1> ari_fed=<float> ari_pooled=<float> fed_over_pooled_time=<float>
inertia_ratio=<float> kmeans_rounds=<int>``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans as SKKMeans
from sklearn.decomposition import PCA as SKPCA
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler

from consortia import Simulation
from consortia.data.synthetic import synthetic_cohort
from consortia.subgroups import PCA, KMeans, assign, principal_angles, project


def _pooled_features(sites: dict) -> pd.DataFrame:
    parts = []
    for d in sites.values():
        counts = d.expression[sorted(d.expression.columns)]
        x = counts.to_numpy(np.float64)
        parts.append(
            pd.DataFrame(np.log2(1 + x * (1e6 / x.sum(axis=1, keepdims=True))), index=counts.index)
        )
    return pd.concat(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--patients", type=int, default=2000, help="patients over all sites")
    ap.add_argument("--genes", type=int, default=20000)
    ap.add_argument("--components", type=int, default=10)
    ap.add_argument("--clusters", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-sd", type=float, default=0.05, help="per-site log2 batch shift sd")
    args = ap.parse_args()
    k, q = args.clusters, args.components

    t = time.perf_counter()
    cohort = synthetic_cohort(
        n_sites=args.sites,
        patients_per_site=args.patients // args.sites,
        n_genes=args.genes,
        n_subtypes=k,
        subtype_genes=max(5, args.genes // 100),
        subtype_log2fc=1.0,
        batch_sd=args.batch_sd,
        tiles=False,
        seed=args.seed,
    )
    sites = cohort.sites()
    print(f"cohort: {args.patients} patients, {args.genes} genes ({time.perf_counter() - t:.1f} s)")
    truth = cohort.truth.subtype

    # ---- federated PCA (iterative) against an exact pooled reference
    t = time.perf_counter()
    pca = Simulation(sites).run(PCA(expression=True, n_components=q, method="iterative"))
    t_pca = time.perf_counter() - t
    x = _pooled_features(sites)
    z = StandardScaler().fit_transform(x.to_numpy())
    ref = SKPCA(n_components=q, svd_solver="arpack", tol=0.0, random_state=0).fit(z)
    max_angle = float(principal_angles(pca.components.T, ref.components_.T).max())
    ev = float(np.max(np.abs(pca.explained_variance / ref.explained_variance_ - 1)))
    print(
        f"PCA: {pca.rounds} rounds ({pca.iterations} iterations), {t_pca:.1f} s; "
        f"max principal angle {max_angle:.2e}; explained variance rel. error {ev:.1e}"
    )

    # ---- k-means from shared initial centres: identical labels?
    scores = pd.concat([project(pca, d) for d in sites.values()])
    rng = np.random.default_rng(args.seed)
    init = scores.to_numpy()[rng.choice(len(scores), k, replace=False)]
    shared = Simulation(sites).run(
        KMeans(
            expression=True,
            n_components=q,
            n_clusters=k,
            init=tuple(map(tuple, init)),
            pca_method="iterative",
        )
    )
    fed_labels = pd.concat([assign(shared, d) for d in sites.values()])
    sk_shared = SKKMeans(k, algorithm="lloyd", init=init, n_init=1).fit(scores.to_numpy())
    same = int(np.array_equal(fed_labels.to_numpy(), sk_shared.labels_))
    shift = float(np.max(np.abs(shared.centres - sk_shared.cluster_centers_)))
    print(f"k-means, shared start: same labels {same}, max centre difference {shift:.1e}")

    # ---- k-means from the public summary vs the pooled pipeline
    t = time.perf_counter()
    fed = Simulation(sites).run(
        KMeans(expression=True, n_components=q, n_clusters=k, pca_method="iterative")
    )
    t_fed = time.perf_counter() - t
    labels = pd.concat([assign(fed, d) for d in sites.values()])
    ari_fed = adjusted_rand_score(truth.loc[labels.index], labels)
    best_on_fed_scores = SKKMeans(k, n_init=10, random_state=0).fit(scores.to_numpy())
    ratio = fed.inertia / best_on_fed_scores.inertia_

    t = time.perf_counter()
    zz = StandardScaler().fit_transform(x.to_numpy())
    pooled_scores = SKPCA(n_components=q, random_state=0).fit_transform(zz)
    pooled = SKKMeans(k, n_init=10, random_state=0).fit(pooled_scores)
    t_pooled = time.perf_counter() - t
    ari_pooled = adjusted_rand_score(truth.loc[x.index], pooled.labels_)
    print(
        f"k-means, public summary: {fed.rounds} rounds, inertia / scikit-learn best of 10 = "
        f"{ratio:.6f}; ARI federated {ari_fed:.4f}, pooled {ari_pooled:.4f}; "
        f"time federated {t_fed:.1f} s, pooled {t_pooled:.1f} s"
    )
    print(
        f"pca_kmeans sites={args.sites} genes={args.genes} max_angle={max_angle:.3e} "
        f"pca_rounds={pca.rounds} same_labels={same} ari_fed={ari_fed:.4f} "
        f"ari_pooled={ari_pooled:.4f} fed_over_pooled_time={t_fed / t_pooled:.2f} "
        f"inertia_ratio={ratio:.6f} kmeans_rounds={fed.rounds}"
    )


if __name__ == "__main__":
    main()
