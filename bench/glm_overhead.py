"""Federated ridge logistic regression on TCGA-BRCA vs the pooled fit: accuracy and overhead.

Model: event ``E`` on the 39 covariates of Fed-TCGA-BRCA (all 1,088 patients of the
FLamby split, train and test), intercept unpenalised, ridge penalty ``PENALTY`` on
the coefficients (scikit-learn's ``C = 1 / PENALTY``).  Sites: the 6 regions.

* federated: :class:`consortia.Simulation` (policy, fixed-point encoding, pairwise
  masking and secure aggregation for every round) running
  :class:`consortia.stats.LogisticRegression`;
* pooled reference: scikit-learn ``LogisticRegression(solver="newton-cholesky",
  tol=1e-12)`` on the pooled DataFrame (the fastest of scikit-learn's solvers here,
  and the only one that reaches 1e-6 agreement at a tight tolerance).

``sim_over_pooled`` is the median wall time of ``Simulation.run`` over the median
wall time of the pooled ``fit``, timed alternately in the same process so that both
see the same machine load, each with one BLAS/OpenMP thread (``threadpoolctl``).  Key enrolment
(building the Simulation) is a one-time set-up and is reported apart.
``max_rel_err`` is the largest relative difference over the 40 coefficients and
their standard errors (inverse penalised Hessian, recomputed on the pooled data).

Run: ``python bench/glm_overhead.py`` (data from ``$CONSORTIA_SHARED_DATA`` or
``../shared/data`` beside the project root).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import statistics
import time
from pathlib import Path

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression as SkLogistic
from threadpoolctl import threadpool_limits

from consortia import Policy, Simulation
from consortia.data.tcga import load_tcga_brca
from consortia.errors import PolicyError
from consortia.stats import LogisticRegression

PENALTY = 1.0
REPEATS = 15


def data_dir() -> Path:
    env = os.environ.get("CONSORTIA_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def paired_medians(fn_a, fn_b, repeats: int = REPEATS) -> tuple[float, float]:
    """Median wall times of ``fn_a`` and ``fn_b``, measured alternately (same load)."""
    fn_a(), fn_b()  # warm-up
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times_a), statistics.median(times_b)


def main() -> None:
    brca = load_tcga_brca(data_dir() / "tcga_brca")
    sites = brca.sites()  # all 1,088 patients, 6 regions
    pooled = brca.pooled()
    covs = list(brca.covariates)
    algo = LogisticRegression(outcome="E", covariates=brca.covariates, penalty=PENALTY)
    sizes = ", ".join(f"{k} {len(v)}" for k, v in sites.items())
    print(f"TCGA-BRCA, all folds: {len(pooled)} patients, {len(covs)} covariates; sites: {sizes}")

    default = Policy()
    try:
        Simulation(sites, policy=default).run(algo)
        print("default policy: accepted")
    except PolicyError as err:
        print(f"default policy (max_params_per_sample={default.max_params_per_sample}): {err}")
    policy = Policy(max_params_per_sample=1.0)
    smallest = min(len(v) for v in sites.values())
    print(
        f"policy used: max_params_per_sample={policy.max_params_per_sample} "
        f"(40 parameters / {smallest} patients at the smallest site = "
        f"{40 / smallest:.2f}); other rules at their defaults "
        f"(min_cohort_size={policy.min_cohort_size}, min_cell_count={policy.min_cell_count}, "
        f"min_sites={policy.min_sites})"
    )

    t0 = time.perf_counter()
    sim = Simulation(sites, policy=policy)
    enrol = time.perf_counter() - t0
    result = sim.run(algo)

    def pooled_fit() -> SkLogistic:
        sk = SkLogistic(C=1.0 / PENALTY, tol=1e-12, max_iter=1000, solver="newton-cholesky")
        return sk.fit(pooled[covs], pooled["E"])

    sk = pooled_fit()
    coef = np.concatenate([sk.intercept_, sk.coef_[0]])
    design = np.column_stack([np.ones(len(pooled)), pooled[covs].to_numpy(float)])
    p = expit(design @ coef)
    hess = (design * (p * (1 - p))[:, None]).T @ design
    hess[1:, 1:] += PENALTY * np.eye(len(covs))
    se = np.sqrt(np.diag(np.linalg.inv(hess)))
    rel = np.abs(np.concatenate([result.coef - coef, result.se - se])) / np.abs(
        np.concatenate([coef, se])
    )
    max_rel = float(rel.max())

    # one BLAS/OpenMP thread on both sides: timings on a shared machine stay comparable
    with threadpool_limits(limits=1):
        t_sim, t_pooled = paired_medians(lambda: sim.run(algo), pooled_fit)
    ratio = t_sim / t_pooled
    print(
        f"federated: {result.rounds} rounds ({result.iterations} Newton steps), "
        f"converged={result.converged}, median {t_sim * 1e3:.2f} ms per fit "
        f"(key enrolment of the 6 sites, once: {enrol * 1e3:.1f} ms)"
    )
    print(f"pooled sklearn newton-cholesky tol=1e-12: median {t_pooled * 1e3:.2f} ms per fit")
    print(
        f"max relative error: coefficients {rel[:40].max():.2e}, standard errors "
        f"{rel[40:].max():.2e}"
    )
    profile(sim, algo, t_sim)
    print(
        f"logistic sites={len(sites)} rounds={result.rounds} max_rel_err={max_rel:.3e} "
        f"sim_over_pooled={ratio:.2f}"
    )


def profile(sim: Simulation, algo: LogisticRegression, t_sim: float) -> None:
    """Where a federated fit spends its time (cProfile, cumulative, per fit)."""
    runs = 20
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(runs):
        sim.run(algo)
    prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, func) -> (cc, nc, tt, ct, callers)
    total = sum(v[2] for v in stats.values())
    parts = {
        "site: algorithm local() (validation + maths)": ("logistic.py", "local"),
        "site: data validation (numeric_columns)": ("_validate.py", "numeric_columns"),
        "site: policy checks": ("policy.py", "check_contribution"),
        "site: encode + mask (SecureSite.mask)": ("secagg.py", "mask"),
        "site: AES-CTR streams (apply_masks)": ("masking.py", "apply_masks"),
        "site: X25519 + HKDF pair keys": ("secagg.py", "_pair_keys"),
        "site: peer key signatures (verify_peers)": ("", "verify_peers"),
        "hub: aggregation (SecureAggregator.add)": ("secagg.py", "add"),
        "hub: unmask + decode (SecureAggregator.finish)": ("secagg.py", "finish"),
        "hub: coordinator (Coordinator.advance)": ("protocol.py", "advance"),
    }
    print(f"profile of {runs} fits (cumulative share of profiled time; parts overlap):")
    for label, (fname, func) in parts.items():
        hits = [v[3] for k, v in stats.items() if k[0].endswith(fname) and k[2] == func]
        if not hits:
            print(f"  {label:<48}   n/a (not seen by the profiler)")
            continue
        cum = sum(hits)
        print(f"  {label:<48} {100 * cum / total:5.1f}%  {1e3 * cum / runs:6.2f} ms/fit")
    print(f"  (unprofiled median fit: {t_sim * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()
