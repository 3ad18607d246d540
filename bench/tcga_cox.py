"""Federated ridge Cox on Fed-TCGA-BRCA (6 regions as sites) against pooled lifelines.

* Train set (FLamby split), 6 regions as sites: ``consortia.survival.cox.CoxPH``
  (Efron ties, ridge penalty 0.01 in lifelines' convention, integer-day public
  grid) through the full secure-aggregation path of ``consortia.Simulation``,
  against ``lifelines.CoxPHFitter(penalizer=0.01)`` on the pooled train set,
  both timed in this run (lifelines with tight tolerances so that the
  comparison measures our error, not lifelines' stopping rule; its default fit
  is timed too).
* Test set, 6 regions as sites: Harrell's C of the federated model per site
  and pooled across sites, by the federated ``consortia.survival.concordance``
  algorithm (16384 score bins: its error bound, printed, is 0 here), beside
  lifelines' ``concordance_index`` of the pooled fit on the
  pooled test set and FLamby's published figures.
* Also: the site-stratified model (each region its own baseline hazard; only
  sums of per-site likelihoods, gradients and Hessians travel) against
  lifelines with ``strata=["region"]``.

Policy: every site runs ``Policy(min_cell_count=1, max_params_per_sample=1.0)``
(defaults otherwise: min_cohort_size=10, min_sites=3).  The exact unstratified
model releases per-day event counts (count arrays), which the default minimum
cell count of 5 refuses: the data owners must allow small cells (or the study
must use a coarser grid, exact for the times rounded up to it).  39 covariates
for the 40 training patients of Canada need ``max_params_per_sample >= 0.975``.

Data: ``$CONSORTIA_SHARED_DATA/tcga_brca`` or ``../shared/data/tcga_brca``
beside the project root.

Last line: ``tcga_cox rounds=<int> max_rel_err_coef=<float>
c_index_pooled_test=<float> fed_over_pooled_time=<float>``.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index

from consortia import Policy, Simulation
from consortia.data.tcga import load_tcga_brca
from consortia.survival._grid import day_grid
from consortia.survival.concordance import Concordance
from consortia.survival.cox import CoxPH

PENALIZER = 0.01
POLICY = Policy(min_cell_count=1, max_params_per_sample=1.0)
FLAMBY = {"pooled training": 0.704, "FedAvg": 0.735, "FedAdam": 0.842}
FLAMBY_LOCAL = (0.695, 0.728, 0.604, 0.565, 0.725, 0.710)
SCORE_BINS = 16384  # fine enough that no cross-site pair shares a bin here: exact
TIGHT = {"precision": 1e-18, "r_precision": 0.0, "max_steps": 200}


def data_dir() -> Path:
    env = os.environ.get("CONSORTIA_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return root / "tcga_brca"


def lifelines_fit(df, cols, **fit_kwargs) -> tuple[CoxPHFitter, float]:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cph = CoxPHFitter(penalizer=PENALIZER).fit(df, "T", "E", **fit_kwargs)
    return cph, time.perf_counter() - t0


def main() -> None:
    data = load_tcga_brca(data_dir())
    cols = data.covariates
    train_sites, test_sites = data.sites("train"), data.sites("test")
    train, test = data.pooled("train"), data.pooled("test")
    # public grid: whole days up to the longest follow-up of the cohort (8605 days)
    grid = day_grid(data.frame["T"].max())
    print(
        f"TCGA-BRCA: {len(train)} train / {len(test)} test patients, {len(cols)} covariates, "
        f"6 regions as sites; day grid of {len(grid)} points; penalizer {PENALIZER}"
    )
    print(f"policy at every site: {POLICY}")

    # ---- federated unstratified ridge Cox vs pooled lifelines
    algo = CoxPH(time="T", event="E", covariates=cols, time_grid=grid, penalizer=PENALIZER)
    sim = Simulation(train_sites, policy=POLICY)  # site keys: set-up, not timed
    t0 = time.perf_counter()
    fed = sim.run(algo)
    t_fed = time.perf_counter() - t0
    frame = train[[*cols, "T", "E"]]
    ref, t_ref = lifelines_fit(frame, cols, fit_options=TIGHT)
    ref_default, t_default = lifelines_fit(frame, cols)
    coef_err = float(np.max(np.abs(fed.coef / ref.params_.to_numpy() - 1)))
    se_err = float(np.max(np.abs(fed.se / ref.standard_errors_.to_numpy() - 1)))
    default_err = float(np.max(np.abs(fed.coef / ref_default.params_.to_numpy() - 1)))
    print("\nfederated ridge Cox (Efron), train set")
    print(f"  rounds                      {fed.rounds} ({fed.iterations} Newton-Raphson)")
    print(
        f"  log-likelihood              {fed.log_likelihood:.10f} "
        f"(lifelines {ref.log_likelihood_:.10f})"
    )
    print(
        f"  max rel err coef / se       {coef_err:.2e} / {se_err:.2e}  "
        "(lifelines, tight tolerances)"
    )
    print(f"  max rel err coef            {default_err:.2e}  (lifelines, default tolerances)")
    print(f"  time federated              {t_fed:.3f} s (in-process, secure aggregation)")
    print(f"  time lifelines pooled       {t_ref:.3f} s tight, {t_default:.3f} s default")
    top = fed.summary.reindex(fed.summary["p"].sort_values().index).head(5)
    print("  five smallest p-values:")
    print(top[["coef", "exp(coef)", "se(coef)", "p"]].to_string(float_format=lambda v: f"{v:.4g}"))

    # ---- C-index on the test set, federated, per site and pooled
    cidx = Simulation(test_sites, policy=POLICY).run(
        Concordance(
            time="T",
            event="E",
            covariates=cols,
            coefficients=tuple(float(b) for b in fed.coef),
            time_grid=grid,
            sites=tuple(test_sites),
            score_bins=SCORE_BINS,
        )
    )
    pooled_c = concordance_index(
        test["T"], -ref.predict_partial_hazard(test[list(cols)]), test["E"]
    )
    print("\nHarrell's C on the test set (federated, consortia.survival.concordance)")
    for site, c in cidx.per_site.items():
        df = test_sites[site]
        own = concordance_index(df["T"], -ref.predict_partial_hazard(df[list(cols)]), df["E"])
        print(f"  {site:<10} n={len(df):>3}  federated {c:.4f}  pooled fit {own:.4f}")
    print(
        f"  pooled     n={len(test):>3}  federated {cidx.c_index:.4f} "
        f"(bound +-{cidx.error_bound:.1e})"
        f"  pooled fit {pooled_c:.4f}"
    )
    print(
        "  FLamby (published, linear Cox by SGD, pooled test set): "
        + ", ".join(f"{k} {v}" for k, v in FLAMBY.items())
    )
    print(
        "  FLamby local training per centre (pooled test set): "
        + ", ".join(f"{v:.3f}" for v in FLAMBY_LOCAL)
    )

    # ---- site-stratified model: no grid, no per-time counts
    strat = CoxPH(time="T", event="E", covariates=cols, stratify_by_site=True, penalizer=PENALIZER)
    sim_s = Simulation(train_sites, policy=Policy(max_params_per_sample=1.0))
    t0 = time.perf_counter()
    fed_s = sim_s.run(strat)
    t_s = time.perf_counter() - t0
    ref_s, _ = lifelines_fit(
        train[[*cols, "region", "T", "E"]], cols, fit_options=TIGHT, strata=["region"]
    )
    err_s = float(np.max(np.abs(fed_s.coef / ref_s.params_.to_numpy() - 1)))
    print(
        f"\nsite-stratified ridge Cox (default min_cell_count=5): rounds {fed_s.rounds}, "
        f"max rel err coef {err_s:.2e} vs lifelines strata=['region'], {t_s:.3f} s"
    )
    print(
        f"tcga_cox rounds={fed.rounds} max_rel_err_coef={coef_err:.3e} "
        f"c_index_pooled_test={cidx.c_index:.4f} fed_over_pooled_time={t_fed / t_ref:.2f}"
    )


if __name__ == "__main__":
    main()
