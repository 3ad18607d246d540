"""Federated DESeq2: edge cases, errors, policy, parameters and result export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from deseq2_data import SCHEMA, SMALL_SITES, split_sites, synthetic_counts

from consortia import Simulation
from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, PolicyError, SchemaError, ValidationError
from consortia.omics import DESeq2, DESeq2Result
from consortia.protocol import algorithm_from_spec
from consortia.resultcodec import decode_result, encode_result

LEVELS = {"batch": ("b0", "b1", "b2", "b3"), "cond": ("A", "B")}


@pytest.fixture(scope="module")
def data():
    """8 samples: 4 batches x 2 conditions, 40 genes (gene 0 all zero)."""
    batch = np.repeat(["b0", "b1", "b2", "b3"], 2)
    cond = np.tile(["A", "B"], 4)
    meta = pd.DataFrame({"batch": batch, "cond": cond}, index=[f"s{i}" for i in range(8)])
    return synthetic_counts(40, meta, effect_column="cond", seed=3), meta


def _algo(**kw) -> DESeq2:
    base = dict(design="~batch + cond", levels=LEVELS, contrast=("cond", "B", "A"))
    return DESeq2(**{**base, **kw})


@pytest.fixture(scope="module")
def by_batch(data):
    counts, meta = data
    return Simulation(split_sites(counts, meta, meta["batch"]), policy=SMALL_SITES).run(_algo())


def test_all_zero_gene_and_result_table(data, by_batch, tmp_path):
    counts, _ = data
    res = by_batch
    assert isinstance(res, DESeq2Result)
    df = res.results_df
    assert list(df.columns) == ["baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj"]
    assert df.index[0] == "0" and df.iloc[0]["baseMean"] == 0.0  # labelled by position
    zero = (counts == 0).all(axis=0).to_numpy()
    assert zero[0] and df.loc[zero, "baseMean"].eq(0).all()
    assert df.loc[zero].iloc[:, 1:].isna().all().all()  # all-zero genes: no test
    assert df.loc[~zero].iloc[:, :5].notna().all().all()
    res.to_csv(tmp_path / "r.csv")
    back_csv = pd.read_csv(tmp_path / "r.csv", index_col="gene", dtype={"gene": str})
    pd.testing.assert_frame_equal(back_csv, df, check_exact=False, rtol=1e-15)
    res.to_parquet(tmp_path / "r.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "r.parquet"), df)
    back = decode_result(encode_result(res))
    pd.testing.assert_frame_equal(back.results_df, df)


def test_sites_holding_one_condition_give_the_same_answer(data, by_batch):
    counts, meta = data
    # two sites, each with only one level of the tested factor
    res = Simulation(split_sites(counts, meta, meta["cond"]), policy=SMALL_SITES).run(_algo())
    # the sums differ in their last bits between splits, and L-BFGS-B may stop one
    # step apart on a dispersion: agreement to about 1e-7, not to the last bit
    ok = ~np.isnan(by_batch.log2_fold_change)
    np.testing.assert_allclose(res.log2_fold_change[ok], by_batch.log2_fold_change[ok], rtol=1e-6)
    np.testing.assert_allclose(res.pvalue[ok], by_batch.pvalue[ok], rtol=1e-5)
    np.testing.assert_array_equal(res.padj < 0.1, by_batch.padj < 0.1)


def test_non_integer_counts_are_refused(data):
    counts, meta = data
    with pytest.raises(SchemaError, match="raw counts: it has non-integer values"):
        Dataset(frame=meta.reset_index(names="pid"), schema=SCHEMA, expression=counts + 0.5)
    sites = split_sites(counts, meta, meta["batch"])
    first = next(iter(sites.values()))
    first.expression = first.expression.astype(float) + 0.25  # changed after its checks
    with pytest.raises(SchemaError, match="'expression' must hold raw counts.*non-integer"):
        Simulation(sites, policy=SMALL_SITES).run(_algo())


def test_level_not_declared_is_refused(data):
    counts, meta = data
    meta = meta.assign(cond=meta["cond"].replace({"B": "C"}))
    with pytest.raises(SchemaError, match="'cond' holds a level that is not among"):
        Simulation(split_sites(counts, meta, meta["batch"]), policy=SMALL_SITES).run(_algo())


def test_level_absent_everywhere_makes_the_design_singular(data):
    counts, meta = data
    levels = {**LEVELS, "batch": (*LEVELS["batch"], "b9")}
    with pytest.raises(AlgorithmError, match="not of full rank"):
        Simulation(split_sites(counts, meta, meta["batch"]), policy=SMALL_SITES).run(
            _algo(levels=levels)
        )


def test_gene_order_must_agree_without_a_gene_list(data):
    counts, meta = data
    sites = split_sites(counts, meta, meta["batch"])
    first = next(iter(sites.values()))
    first.expression = first.expression.iloc[:, ::-1]
    with pytest.raises(AlgorithmError, match="same genes in the same order"):
        Simulation(sites, policy=SMALL_SITES).run(_algo())
    with pytest.raises(SchemaError, match="lacks 1 of the study's genes"):
        Simulation(sites, policy=SMALL_SITES).run(_algo(genes=(*counts.columns[:5], "unknown")))


def test_default_policy_refuses_two_samples_per_site(data):
    counts, meta = data
    with pytest.raises(PolicyError, match="max_params_per_sample|min_cohort_size"):
        Simulation(split_sites(counts, meta, meta["batch"])).run(_algo())


def test_cooks_filtering_of_replicated_cells_is_not_silently_skipped(data):
    counts, meta = data
    algo = DESeq2(design="~cond", levels={"cond": ("A", "B")}, contrast=("cond", "B", "A"))
    sites = split_sites(counts, meta, meta["batch"])
    with pytest.raises(AlgorithmError, match="cooks_filter=False"):
        Simulation(sites, policy=SMALL_SITES).run(algo)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"design": "~batch * cond"}, "only main effects"),
        ({"contrast": ("cond", "B", "Z")}, "contrast reference level 'Z'"),
        ({"contrast": ("age", "B", "A")}, "not a factor of the design"),
        ({"levels": {"cond": ("A",)}}, "at least 2 distinct"),
        ({"levels": {"site": ("A", "B")}}, "not in the design"),
        ({"alpha": 1.5}, "alpha must be in"),
        ({"beta_tol": 0}, "beta_tol must be a positive"),
    ],
)
def test_bad_parameters(kw, match):
    with pytest.raises(ValidationError, match=match):
        _algo(**kw)


def test_spec_round_trip():
    algo = _algo(genes=("g1", "g2"), beta_tol=1e-12)
    back = algorithm_from_spec(algo.spec())
    assert back == algo and back.design_columns == (
        "Intercept",
        "batch[T.b1]",
        "batch[T.b2]",
        "batch[T.b3]",
        "cond[T.B]",
    )
