"""The demo's data: the synthetic cohort or Fed-TCGA-BRCA, split by site, and its policy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from consortia.privacy.policy import Policy


@dataclass(frozen=True)
class DemoData:
    """A data set split over sites, and the columns each demo study uses."""

    label: str
    dataset: str
    sites: dict[str, pd.DataFrame]
    schema: dict[str, Any]
    time: str
    event: str
    grid_stop: int
    group: str
    groups: tuple[str, ...]
    describe: tuple[str, ...]
    outcome: str
    logistic_covariates: tuple[str, ...]
    cox_covariates: tuple[str, ...]

    @property
    def pooled(self) -> pd.DataFrame:
        """Every site's rows in one frame (the pooled reference's input)."""
        return pd.concat(self.sites.values(), ignore_index=True)


def synthetic_data(*, n_sites: int = 3, seed: int = 0) -> DemoData:
    """The synthetic oncology cohort (clinical table only), 200-300 patients a site."""
    from consortia.data.synthetic import COVARIATES, synthetic_cohort

    sizes = [200 + 50 * (i % 3) for i in range(n_sites)]
    cohort = synthetic_cohort(
        n_sites=n_sites, patients_per_site=sizes, expression=False, tiles=False, seed=seed
    )
    return DemoData(
        label=f"synthetic colorectal cohort (seed {seed}), {n_sites} sites",
        dataset="cohort",
        sites={name: ds.frame for name, ds in cohort.sites().items()},
        schema=cohort.schema.to_mapping(),
        time="time",
        event="event",
        grid_stop=2920,  # administrative end of follow-up: 8 years
        group="arm",
        groups=("control", "treatment"),
        describe=("age", "time"),
        outcome="msi_high",
        logistic_covariates=("age", "grade_3", "stage_II", "stage_III", "stage_IV"),
        cox_covariates=COVARIATES,
    )


_TCGA_COX = (
    "age_at_index",
    "ajcc_pathologic_stage_Stage IIA",
    "ajcc_pathologic_stage_Stage IIB",
    "ajcc_pathologic_stage_Stage IIIA",
    "ajcc_pathologic_stage_Stage IIIC",
    "prior_malignancy_yes",
)


def tcga_data(folder: Path) -> DemoData:
    """Fed-TCGA-BRCA (train and test patients), one site per FLamby region."""
    from consortia.data.tcga import load_tcga_brca

    tcga = load_tcga_brca(folder)
    groups = ("under 60", "60 and over")
    sites = {}
    for region, frame in tcga.sites().items():
        frame = frame[["pid", *tcga.covariates, "T", "E"]].copy()
        frame["age_group"] = [groups[int(a >= 60)] for a in frame["age_at_index"]]
        sites[region.lower()] = frame
    covariates = {c: "float" if c == "age_at_index" else "int" for c in tcga.covariates}
    return DemoData(
        label=f"Fed-TCGA-BRCA from {folder}, 6 regions",
        dataset="tcga_brca",
        sites=sites,
        schema={
            "id": "pid",
            "time": "T",
            "event": "E",
            "group": {"name": "age_group", "type": "category", "levels": list(groups)},
            "covariates": covariates,
        },
        time="T",
        event="E",
        grid_stop=9000,
        group="age_group",
        groups=groups,
        describe=("age_at_index", "T"),
        outcome="E",
        logistic_covariates=_TCGA_COX[:1] + _TCGA_COX[3:5],
        cox_covariates=_TCGA_COX,
    )


def demo_policy() -> Policy:
    """The policy every demo node applies to its dataset."""
    return Policy(
        allowed_algorithms=("stats.*", "survival.*"),
        min_cohort_size=10,
        min_cell_count=1,
        min_sites=3,
    )


def policy_explanation(data: DemoData) -> str:
    """One paragraph: the node policy and why the demo chose it."""
    p = demo_policy()
    return (
        f"allowed_algorithms={list(p.allowed_algorithms)}, min_sites={p.min_sites}, "
        f"min_cohort_size={p.min_cohort_size}, max_params_per_sample="
        f"{p.max_params_per_sample}, min_cell_count={p.min_cell_count} (default 5). "
        f"Why min_cell_count=1: the survival studies declare a public day grid "
        f"(0..{data.grid_stop} days) so that Kaplan-Meier, log-rank and Cox equal lifelines "
        "on the raw pooled times exactly; their per-day event counts are mostly 1 or 2 "
        "patients, which the default rule (5) refuses. With real patients, keep 5 and "
        "coarsen the grid (regular_grid(stop, 60): exact for times rounded up to it) or "
        "fit a site-stratified Cox model (no grid, no per-time counts)."
    )


# ---------------------------------------------------------------------- studies


def load_data(data: str | Path | None, *, nodes: int = 3, seed: int = 0) -> DemoData:
    """The demo's data: the synthetic cohort over ``nodes`` sites, or TCGA-BRCA's 6 regions."""
    if data is None:
        return synthetic_data(n_sites=nodes, seed=seed)
    return tcga_data(Path(data))
