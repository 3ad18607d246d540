"""The subgroups workflow (k-means, survival, cross-tabs, markers) against the pooled workflow.

* The synthetic cohort with 3 planted subtypes over 3 sites (``--patients`` per site,
  ``--genes`` genes).  Clustering: standardised log2 CPM of the subtypes' signature
  genes, from initial centres shared with the pooled reference (one patient of each
  planted subtype).  Survival on a day grid; cross-tabs of stage and MSI status;
  markers: moderated t of every gene, each subgroup against the rest.
* Federated: ``Subgroups`` in simulation (secure aggregation included).  Pooled: the
  same workflow with scikit-learn (Lloyd), lifelines (Kaplan-Meier,
  multivariate log-rank, CoxPHFitter), pandas' crosstab and numpy least squares +
  limma's moderation from consortia (the maths of the moderated t are tested against
  InMoose elsewhere; here only the least-squares part is pooled).
* Figures: same labels (0/1), the largest relative difference of the Kaplan-Meier
  curves, of the log-rank statistic and of the Cox coefficients, the rounds of the
  study, and the federated over pooled wall time.

On a shared machine, run with ``OPENBLAS_NUM_THREADS=1``.

Last line: ``subgroups_workflow sites=3 patients=<int> genes=<int> same_labels=<0|1>
km_rel=<float> logrank_rel=<float> cox_rel=<float> rounds=<int>
fed_over_pooled_time=<float>``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test
from sklearn.cluster import KMeans as SKKMeans
from sklearn.preprocessing import StandardScaler

from consortia import Policy, Simulation
from consortia.data.synthetic import synthetic_cohort
from consortia.subgroups import Subgroups, assign

TIGHT = {"precision": 1e-18, "r_precision": 0.0, "max_steps": 200}


def _log2cpm(frames, exprs, genes, own: bool) -> np.ndarray:
    out = []
    for f, e in zip(frames, exprs, strict=True):
        e = e.loc[f["pid"]]
        lib = (e[list(genes)] if own else e).sum(axis=1).to_numpy(float)
        out.append(np.log2(1 + e[list(genes)].to_numpy(float) / lib[:, None] * 1e6))
    return np.vstack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=300, help="patients per site")
    ap.add_argument("--genes", type=int, default=1000)
    args = ap.parse_args()
    cohort = synthetic_cohort(
        n_sites=3,
        patients_per_site=args.patients,
        n_genes=args.genes,
        n_subtypes=3,
        subtype_genes=10,
        subtype_log2fc=1.5,
        tiles=False,
        seed=11,
    )
    sites = cohort.sites()
    frames = [d.frame for d in sites.values()]
    exprs = [d.expression for d in sites.values()]
    sig = tuple(
        g for j in sorted(cohort.truth.subtype_genes) for g in cohort.truth.subtype_genes[j]
    )
    pooled = pd.concat(frames, ignore_index=True)
    truth = cohort.truth.subtype.loc[pooled["pid"]].to_numpy()
    first = [int(np.flatnonzero(truth == j)[0]) for j in range(3)]

    t0 = time.perf_counter()
    x = StandardScaler().fit_transform(_log2cpm(frames, exprs, sig, own=True))
    init = x[first]
    ref = SKKMeans(3, algorithm="lloyd", init=init, n_init=1).fit(x)
    g = ref.labels_
    curves = {
        j: KaplanMeierFitter().fit(pooled["time"][g == j], pooled["event"][g == j])
        for j in range(3)
    }
    lr = multivariate_logrank_test(pooled["time"], g, pooled["event"])
    design = pd.get_dummies(g, prefix="subgroup").astype(float)[["subgroup_1", "subgroup_2"]]
    cph = CoxPHFitter().fit(
        design.join(pooled[["time", "event"]]), "time", "event", fit_options=TIGHT
    )
    for col in ("stage", "msi"):
        pd.crosstab(g, pooled[col])
    y = _log2cpm(frames, exprs, cohort.genes, own=False)
    for j in range(3):
        xd = np.column_stack([np.ones(len(y)), g == j])
        np.linalg.lstsq(xd, y, rcond=None)
    pooled_time = time.perf_counter() - t0

    algo = Subgroups(
        expression=True,
        genes=sig,
        n_clusters=3,
        init=tuple(map(tuple, init)),
        time="time",
        event="event",
        time_grid={"start": 0, "stop": 3000, "step": 1},
        crosstab=("stage", "msi"),
        crosstab_levels=(("I", "II", "III", "IV"), ("MSS", "MSI-H")),
        marker_genes=cohort.genes,
    )
    t0 = time.perf_counter()
    res = Simulation(sites, policy=Policy(min_cell_count=1)).run(algo)
    fed_time = time.perf_counter() - t0

    labels = np.concatenate([assign(res.kmeans, d).to_numpy() for d in sites.values()])
    km_rel = 0.0
    for j, kmf in curves.items():
        tl = kmf.survival_function_.index.to_numpy()
        ref_s = kmf.survival_function_.iloc[:, 0].to_numpy()
        fed_s = res.kaplan_meier[str(j)].survival_at(tl)
        ok = ref_s > 0
        km_rel = max(km_rel, float(np.max(np.abs(fed_s[ok] / ref_s[ok] - 1))))
    lr_rel = abs(res.logrank.chi2 / lr.test_statistic - 1)
    cox_rel = float(np.max(np.abs(res.cox.coef / cph.params_.to_numpy() - 1)))
    print(res.summary.round(3).to_string())
    print(
        f"subgroups_workflow sites=3 patients={3 * args.patients} genes={args.genes} "
        f"same_labels={int(np.array_equal(labels, g))} km_rel={km_rel:.3g} "
        f"logrank_rel={lr_rel:.3g} cox_rel={cox_rel:.3g} rounds={res.rounds} "
        f"fed_over_pooled_time={fed_time / pooled_time:.3g}"
    )


if __name__ == "__main__":
    main()
