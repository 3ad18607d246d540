"""Federated DESeq2 on airway (4 sites by donor) against pooled PyDESeq2, in one process.

    python bench/deseq2_airway.py [--tight] [path/to/airway.h5ad]

Runs the federated study (in-process simulation, PyDESeq2's default ``beta_tol``;
``--tight`` for ``1e-12``), PyDESeq2 0.5.4
with its defaults and PyDESeq2 with ``beta_tol=1e-12`` (the tight reference), all on
the genes with a non-zero count, design ``~cell + dex``, contrast dex trt vs untrt.
``set_diff`` and the lfc figures compare the federated run with the tight reference;
``ref_set_diff`` and ``ref_lfc_p99`` compare default PyDESeq2 with it.
``fed_over_pooled_time`` is the federated wall time over default PyDESeq2's (one CPU).
Last line::

    deseq2_airway sites=4 genes_tested=<int> same_calls=<int> set_diff=<int>
    ref_set_diff=<int> lfc_median=<float> lfc_p99=<float> ref_lfc_p99=<float>
    rounds=<int> fed_over_pooled_time=<float>
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "omics")]

from deseq2_data import SMALL_SITES  # noqa: E402
from pydeseq2.dds import DeseqDataSet  # noqa: E402
from pydeseq2.default_inference import DefaultInference  # noqa: E402
from pydeseq2.ds import DeseqStats  # noqa: E402
from test_deseq2_airway import airway_sites, compare  # noqa: E402

from consortia import Simulation  # noqa: E402
from consortia.omics import DESeq2  # noqa: E402


def pooled(sites: dict, beta_tol: float) -> pd.DataFrame:
    counts = pd.concat([d.expression for d in sites.values()])
    meta = pd.concat([d.frame.set_index("pid")[["cell", "dex"]] for d in sites.values()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dds = DeseqDataSet(
            counts=counts,
            metadata=meta,
            design="~cell + dex",
            beta_tol=beta_tol,
            quiet=True,
            inference=DefaultInference(n_cpus=1),
        )
        dds.deseq2()
        ds = DeseqStats(
            dds, contrast=["dex", "trt", "untrt"], quiet=True, inference=DefaultInference(n_cpus=1)
        )
        ds.summary()
    return ds.results_df


def main() -> None:
    default_path = Path(os.environ.get("CONSORTIA_SHARED_DATA", ROOT.parent / "shared" / "data"))
    args = [a for a in sys.argv[1:] if a != "--tight"]
    path = Path(args[0]) if args else default_path / "airway" / "airway.h5ad"
    sites, genes, cells = airway_sites(path)
    algo = DESeq2(
        design="~cell + dex",
        levels={"cell": cells, "dex": ("trt", "untrt")},
        contrast=("dex", "trt", "untrt"),
        genes=genes,
        beta_tol=1e-12 if "--tight" in sys.argv else 1e-8,
    )
    t0 = time.perf_counter()
    res = Simulation(sites, policy=SMALL_SITES).run(algo)
    t_fed = time.perf_counter() - t0
    t0 = time.perf_counter()
    default = pooled(sites, 1e-8)
    t_pooled = time.perf_counter() - t0
    tight = pooled(sites, 1e-12)
    df = res.results_df
    set_diff, median, p99 = compare(df["log2FoldChange"], df["padj"], tight)
    ref_set_diff, ref_median, ref_p99 = compare(default["log2FoldChange"], default["padj"], tight)
    tested = int(df["pvalue"].notna().sum())
    same = int(((df["padj"] < 0.1) == (tight["padj"] < 0.1)).sum())
    print(f"federated: {res.rounds} rounds, {t_fed:.1f} s; default PyDESeq2 {t_pooled:.1f} s")
    print(f"default PyDESeq2 vs tight: median relative LFC error {ref_median:.3g}")
    print(
        f"deseq2_airway sites={len(sites)} genes_tested={tested} same_calls={same} "
        f"set_diff={set_diff} ref_set_diff={ref_set_diff} lfc_median={median:.3g} "
        f"lfc_p99={p99:.3g} ref_lfc_p99={ref_p99:.3g} rounds={res.rounds} "
        f"fed_over_pooled_time={t_fed / t_pooled:.3g}"
    )


if __name__ == "__main__":
    main()
