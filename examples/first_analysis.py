"""A first federated analysis, in simulation, printed beside the pooled reference.

Three hospitals each hold their own patients (the synthetic oncology cohort that
ships with consortia).  We fit a logistic regression of death on age, stage and
treatment across the three sites -- each site releases only securely masked sums,
checked against its own disclosure policy -- and compare it with statsmodels on the
pooled data, which in real life nobody could assemble.

Run:  .venv/bin/python examples/first_analysis.py
"""

from __future__ import annotations

import numpy as np
import statsmodels.api as sm

from consortia import Simulation
from consortia.data import synthetic_cohort
from consortia.stats import LogisticRegression

COVARIATES = ("age", "stage_II", "stage_III", "stage_IV", "treated")


def main() -> None:
    cohort = synthetic_cohort(n_sites=3, patients_per_site=(180, 240, 300), seed=2)
    sites = cohort.sites()
    print("sites:", {name: ds.n_rows for name, ds in sites.items()})

    sim = Simulation(sites)
    fed = sim.run(LogisticRegression(outcome="event", covariates=COVARIATES))
    print(f"federated fit: {sim.last_study['rounds']} rounds of secure aggregation\n")

    pooled = cohort.pooled().frame
    ref = sm.Logit(pooled["event"], sm.add_constant(pooled[list(COVARIATES)])).fit(
        disp=0, method="newton", tol=1e-12
    )

    print(
        f"{'term':<12}{'federated':>14}{'pooled (statsmodels)':>24}{'SE fed':>12}{'SE pooled':>12}"
    )
    for i, term in enumerate(fed.terms):
        print(
            f"{term:<12}{fed.coef[i]:>14.8f}{ref.params.iloc[i]:>24.8f}"
            f"{fed.se[i]:>12.6f}{ref.bse.iloc[i]:>12.6f}"
        )
    err = np.max(np.abs(fed.coef - ref.params.to_numpy()) / np.abs(ref.params.to_numpy()))
    print(f"\nlargest relative difference of the coefficients: {err:.2e}")


if __name__ == "__main__":
    main()
