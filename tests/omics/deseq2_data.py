"""Synthetic count data and site splits for the federated DESeq2 tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from consortia.data.dataset import Dataset
from consortia.data.schema import Schema
from consortia.privacy.policy import Policy

SCHEMA = Schema.from_mapping({"id": "pid"})

# 2 samples per site and design cells of one sample, as the airway split by donor:
# the tests state this relaxation of the default policy explicitly
SMALL_SITES = Policy(min_cohort_size=2, min_cell_count=1, min_sites=2, max_params_per_sample=5)


def synthetic_counts(
    n_genes: int, meta: pd.DataFrame, *, effect_column: str, seed: int
) -> pd.DataFrame:
    """Negative-binomial counts with a DESeq2-like mean-dispersion trend and planted effects."""
    rng = np.random.default_rng(seed)
    n = len(meta)
    base = np.exp(rng.normal(4.0, 2.0, n_genes))
    disp = 0.05 + 1.0 / base + np.exp(rng.normal(0, 0.5, n_genes)) * 0.02
    lfc = np.where(rng.random(n_genes) < 0.15, rng.normal(0, 1.5, n_genes), 0.0)
    levels = sorted(meta[effect_column].unique())
    treated = (meta[effect_column] == levels[-1]).to_numpy(float)
    sf = np.exp(rng.normal(0, 0.3, n))
    mu = sf[:, None] * base[None, :] * np.exp(treated[:, None] * lfc[None, :])
    r = 1.0 / disp
    counts = rng.negative_binomial(r[None, :], r[None, :] / (r[None, :] + mu))
    counts[:, 0] = 0  # an all-zero gene
    counts[0, 1] = 0  # a gene with one zero
    genes = [f"g{i:04d}" for i in range(n_genes)]
    return pd.DataFrame(counts.astype(np.int64), index=meta.index, columns=genes)


def split_sites(
    counts: pd.DataFrame, meta: pd.DataFrame, by: pd.Series | np.ndarray
) -> dict[str, Dataset]:
    """One :class:`Dataset` per value of ``by`` (samples x genes counts, meta columns)."""
    sites = {}
    by = pd.Series(np.asarray(by), index=meta.index)
    for key in sorted(by.unique()):
        ids = by.index[by == key]
        frame = meta.loc[ids].reset_index(names="pid")
        sites[f"site_{key}"] = Dataset(frame=frame, schema=SCHEMA, expression=counts.loc[ids])
    return sites
