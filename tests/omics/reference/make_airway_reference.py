"""Make the pooled PyDESeq2 references of the airway test (run once; takes minutes).

Usage, from the project root::

    pip install pydeseq2==0.5.4 anndata
    python tests/omics/reference/make_airway_reference.py ../shared/data/airway/airway.h5ad

Writes ``airway_pydeseq2_tight.csv.gz`` (``beta_tol=1e-12``) and
``airway_pydeseq2_default.csv.gz`` (``beta_tol=1e-8``, PyDESeq2's default) beside
this script: one row per gene with a non-zero count, columns ``gene``,
``log2FoldChange`` and ``padj`` printed with 17 significant digits.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from pydeseq2.dds import DeseqDataSet
from pydeseq2.default_inference import DefaultInference
from pydeseq2.ds import DeseqStats

HERE = Path(__file__).resolve().parent


def airway_counts(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts (samples x genes with a non-zero count) and the samples' cell and dex."""
    a = ad.read_h5ad(path)
    counts = pd.DataFrame(np.asarray(a.X).astype(np.int64), index=a.obs_names, columns=a.var_names)
    counts = counts.loc[:, counts.sum(axis=0) > 0]
    return counts, a.obs[["cell", "dex"]].astype(str)


def main(path: Path) -> None:
    counts, meta = airway_counts(path)
    for label, tol in (("tight", 1e-12), ("default", 1e-8)):
        dds = DeseqDataSet(
            counts=counts,
            metadata=meta,
            design="~cell + dex",
            beta_tol=tol,
            quiet=True,
            inference=DefaultInference(n_cpus=1),
        )
        dds.deseq2()
        ds = DeseqStats(
            dds, contrast=["dex", "trt", "untrt"], quiet=True, inference=DefaultInference(n_cpus=1)
        )
        ds.summary()
        out = ds.results_df[["log2FoldChange", "padj"]]
        out.index.name = "gene"
        out.to_csv(HERE / f"airway_pydeseq2_{label}.csv.gz", float_format="%.17g")
        print(label, int((out["padj"] < 0.1).sum()), "genes at padj < 0.1")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
