"""Peak memory of loading a 20,000-gene x 1,000-sample AnnData file into a node's Dataset.

Writes two ``.h5ad`` files of the same negative-binomial counts (float32 ``X``,
as many pipelines store counts): one dense, one sparse (CSR; about a third of
the counts are zero).  Each is loaded with ``consortia.data.load_dataset``
(clinical table + ``expression``, joined by patient id and validated), and,
as the baseline in the same run, with ``anndata.read_h5ad(...).to_df()`` (what
a user would write by hand, unvalidated).  Peak memory is measured with
``tracemalloc`` (numpy's and h5py's array allocations) and reported over the
size of the dense integer result (``int32``: 4 bytes a count).

Usage: ``python bench/omics_load.py [--genes 20000] [--samples 1000]``.

Last line: ``omics_load genes=<int> samples=<int> dense_mb=<float>
peak_over_dense_x=<float> peak_over_dense_sparse=<float>
baseline_peak_over_dense=<float> load_s=<float>``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata
import numpy as np
import pandas as pd
from scipy import sparse

from consortia.data import load_dataset


def make_counts(n: int, g: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mu = np.exp2(rng.normal(2.0, 2.0, g)).astype(np.float32)
    out = np.empty((n, g), dtype=np.float32)
    for lo in range(0, n, 100):
        hi = min(lo + 100, n)
        lam = rng.gamma(2.0, mu / 2.0, (hi - lo, g))  # negative binomial: gamma-Poisson
        out[lo:hi] = rng.poisson(lam)
    return out


def peak(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - t0
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, top, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=1_000)
    args = parser.parse_args()
    n, g = args.samples, args.genes
    counts = make_counts(n, g)
    zeros = float((counts == 0).mean())
    obs = pd.DataFrame(
        {"patient": [f"P{i:05d}" for i in range(n)]}, index=[f"S{i}" for i in range(n)]
    )
    var = pd.DataFrame(index=[f"ENSG{j:011d}" for j in range(g)])
    rng = np.random.default_rng(1)
    clinical = pd.DataFrame(
        {"pid": obs["patient"].to_numpy(), "T": rng.uniform(1, 3000, n), "E": rng.integers(0, 2, n)}
    )
    schema = {"id": "pid", "time": "T", "event": "E"}
    dense_bytes = n * g * 4
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"dense": Path(tmp) / "dense.h5ad", "sparse": Path(tmp) / "sparse.h5ad"}
        anndata.AnnData(X=counts, obs=obs, var=var).write_h5ad(paths["dense"])
        anndata.AnnData(X=sparse.csr_matrix(counts), obs=obs, var=var).write_h5ad(paths["sparse"])
        del counts
        ratios, times = {}, {}
        for kind, path in paths.items():
            ds, top, elapsed = peak(
                lambda path=path: load_dataset(
                    clinical, schema=schema, expression=path, expression_patient_id="patient"
                )
            )
            assert ds.expression.shape == (n, g)
            ratios[kind], times[kind] = top / dense_bytes, elapsed
            print(
                f"{kind:>6} X: peak {top / 2**20:8.1f} MB = {ratios[kind]:.2f} x the dense int32 "
                f"matrix ({dense_bytes / 2**20:.1f} MB), {elapsed:.2f} s, "
                f"dtype {ds.expression.dtypes.iloc[0]}"
            )
            del ds
        _, base, t_base = peak(lambda: anndata.read_h5ad(paths["sparse"]).to_df())
        print(
            f"baseline anndata.read_h5ad(sparse).to_df(): peak {base / 2**20:8.1f} MB = "
            f"{base / dense_bytes:.2f} x, {t_base:.2f} s (float32, unvalidated)"
        )
    print(f"zero fraction of the counts: {zeros:.2f}")
    print(
        f"omics_load genes={g} samples={n} dense_mb={dense_bytes / 2**20:.1f} "
        f"peak_over_dense_x={ratios['dense']:.3f} peak_over_dense_sparse={ratios['sparse']:.3f} "
        f"baseline_peak_over_dense={base / dense_bytes:.3f} load_s={times['sparse']:.2f}"
    )


if __name__ == "__main__":
    main()
