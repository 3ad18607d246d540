"""Federated DESeq2 step by step against PyDESeq2 0.5.4's own steps, on synthetic counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from deseq2_data import SMALL_SITES, split_sites, synthetic_counts

from consortia import Simulation
from consortia.omics import DESeq2
from consortia.omics.deseq2._irls import fit_irls, site_irls_sums
from consortia.omics.deseq2._lbfgsb import BatchLBFGSB
from consortia.protocol import Coordinator

pydeseq2 = pytest.importorskip("pydeseq2")
from pydeseq2.dds import DeseqDataSet  # noqa: E402
from pydeseq2.default_inference import DefaultInference  # noqa: E402
from pydeseq2.ds import DeseqStats  # noqa: E402
from pydeseq2.preprocessing import deseq2_norm  # noqa: E402
from pydeseq2.utils import irls_solver  # noqa: E402

N_GENES = 300


def _rel(a, b) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a == b, 0.0, np.abs(a - b) / np.abs(b))


@pytest.fixture(scope="module")
def batch_design():
    """16 samples: 8 batches x 2 conditions (cells of one sample, as airway); 4 sites."""
    batch = np.repeat([f"b{i}" for i in range(8)], 2)
    cond = np.tile(["A", "B"], 8)
    meta = pd.DataFrame({"batch": batch, "cond": cond}, index=[f"s{i:02d}" for i in range(16)])
    counts = synthetic_counts(N_GENES, meta, effect_column="cond", seed=7)
    sites = split_sites(counts, meta, np.repeat(np.arange(4), 4))
    algo = DESeq2(
        design="~batch + cond",
        levels={"batch": tuple(sorted(set(batch))), "cond": ("A", "B")},
        contrast=("cond", "B", "A"),
        genes=tuple(counts.columns),
    )
    return counts, meta, sites, algo


def _pooled(counts, meta, design, contrast, **kw):
    dds = DeseqDataSet(
        counts=counts,
        metadata=meta,
        design=design,
        quiet=True,
        inference=DefaultInference(n_cpus=1),
        refit_cooks=kw.get("refit_cooks", True),
    )
    dds.deseq2()
    ds = DeseqStats(
        dds,
        contrast=list(contrast),
        quiet=True,
        inference=DefaultInference(n_cpus=1),
        cooks_filter=kw.get("cooks_filter", True),
    )
    ds.summary()
    return dds, ds


@pytest.fixture(scope="module")
def batch_run(batch_design):
    counts, meta, sites, algo = batch_design
    dds, ds = _pooled(counts, meta, "~batch + cond", algo.contrast)
    res = Simulation(sites, policy=SMALL_SITES).run(algo)
    return dds, ds, res


def _hub_round(coord, sites, algo):
    """Advance ``coord`` by one round computed from every site; return the round's public."""
    rnd = coord.current
    total: dict[str, np.ndarray] = {}
    for data in sites.values():
        c = algo.local(rnd.step, rnd.public, data)
        for k, v in c.arrays.items():
            total[k] = total.get(k, 0.0) + v
    coord.advance(total)
    return coord.current


def test_size_factors_match_median_of_ratios(batch_design):
    counts, _, sites, algo = batch_design
    coord = Coordinator(algo)
    nxt = _hub_round(coord, sites, algo)
    assert nxt.step == "moments"
    _, ref_sf = deseq2_norm(counts.to_numpy())
    fed = np.concatenate([algo._site(d).normalised(nxt.public)[1] for d in sites.values()])
    assert np.max(_rel(fed, ref_sf)) <= 1e-10


def test_irls_with_given_dispersions_matches_irls_solver(batch_design):
    counts, meta, _sites, _algo = batch_design
    dds = DeseqDataSet(counts=counts, metadata=meta, design="~batch + cond", quiet=True)
    x = dds.obsm["design_matrix"].to_numpy(float)
    y = counts.to_numpy(float)[:, 1:]  # drop the all-zero gene
    _, sf = deseq2_norm(counts.to_numpy())
    disp = np.exp(np.random.default_rng(1).normal(-2.5, 1.0, y.shape[1]))
    ref = np.array([irls_solver(y[:, g], sf, x, disp[g], 0.5, 1e-8)[0] for g in range(y.shape[1])])
    beta_init = np.linalg.lstsq(x, np.log(y / sf[:, None] + 0.1), rcond=None)[0].T
    parts = np.array_split(np.arange(len(y)), 3)  # three "sites"

    def ask(step, idx, beta, disp):
        sums = [site_irls_sums(y[r][:, idx], x[r], sf[r], beta, disp, 0.5) for r in parts]
        return {k: sum(s[k] for s in sums) for k in sums[0]}

    gen = fit_irls(lambda step, **a: a, beta_init, disp, beta_tol=1e-8)
    req = next(gen)
    try:
        while True:
            req = gen.send(ask("irls", **req))
    except StopIteration as stop:
        beta, converged = stop.value
    assert converged.all()
    assert np.median(_rel(beta, ref)) <= 1e-9 and np.max(_rel(beta, ref)) <= 1e-6


def test_batch_lbfgsb_follows_scipy_exactly():
    from scipy.optimize import minimize

    rng = np.random.default_rng(3)
    a, c, x0 = rng.uniform(0.5, 3, 40), rng.normal(0, 2, 40), rng.normal(0, 3, 40)

    def f(x, a, c):
        return a * (x - c) ** 2 + np.cosh(x)

    def g(x, a, c):
        return 2 * a * (x - c) + np.sinh(x)

    ref = [
        minimize(
            lambda x, i=i: f(x[0], a[i], c[i]),
            x0=[x0[i]],
            jac=lambda x, i=i: np.array([g(x[0], a[i], c[i])]),
            method="L-BFGS-B",
            bounds=[(-2.0, 2.5)],
        ).x[0]
        for i in range(40)
    ]
    opt = BatchLBFGSB(x0[:, None], -2.0, 2.5)
    while opt.pending.size:
        p, x = opt.pending, opt.points()[:, 0]
        opt.tell(f(x, a[p], c[p]), g(x, a[p], c[p]))
    np.testing.assert_array_equal(opt.x[:, 0], ref)
    assert opt.success.all()


def test_dispersions_trend_and_prior_match(batch_run):
    dds, _, res = batch_run
    v = dds.var
    nz = v["non_zero"].to_numpy(bool)
    for ours, theirs in (
        (res.genewise_dispersions, v["genewise_dispersions"]),
        (res.fitted_dispersions, v["fitted_dispersions"]),
        (res.dispersions, v["dispersions"]),
    ):
        r = _rel(ours[nz], theirs.to_numpy(float)[nz])
        assert np.median(r) <= 1e-9 and np.quantile(r, 0.99) <= 1e-5
    assert res.trend_type == "parametric"
    assert np.max(_rel(res.trend_coeffs, dds.uns["trend_coeffs"].to_numpy())) <= 1e-6
    assert abs(res.prior_disp_var - float(dds.uns["prior_disp_var"])) <= 1e-8


def test_lfc_wald_and_padj_match(batch_run):
    _, ds, res = batch_run
    ref = ds.results_df
    got = res.results_df
    assert list(got.columns) == list(ref.columns)
    assert got.index.equals(ref.index)
    np.testing.assert_allclose(got["baseMean"], ref["baseMean"], rtol=1e-12)
    ok = ref["log2FoldChange"].notna()
    assert np.isnan(got.loc[~ok, "log2FoldChange"]).all()
    for col in ("log2FoldChange", "lfcSE", "stat", "pvalue"):
        r = _rel(got.loc[ok, col], ref.loc[ok, col])
        assert np.median(r) <= 1e-8 and np.quantile(r, 0.99) <= 1e-4, col
    sig_ref = set(ref.index[ref["padj"] < 0.1])
    assert set(got.index[got["padj"] < 0.1]) == sig_ref and len(sig_ref) > 10
    assert res.rounds > 10 and res.n_samples == 16


def test_linear_mu_path_without_cooks():
    """``~cond`` with 6 samples per condition: PyDESeq2 takes linear-regression means."""
    cond = np.repeat(["A", "B"], 6)
    meta = pd.DataFrame({"cond": cond}, index=[f"s{i:02d}" for i in range(12)])
    counts = synthetic_counts(120, meta, effect_column="cond", seed=11)
    sites = split_sites(counts, meta, np.tile([0, 1, 2], 4))
    algo = DESeq2(
        design="~cond",
        levels={"cond": ("A", "B")},
        contrast=("cond", "B", "A"),
        cooks_filter=False,
        refit_cooks=False,
    )
    res = Simulation(sites, policy=SMALL_SITES).run(algo)
    _, ds = _pooled(counts, meta, "~cond", algo.contrast, cooks_filter=False, refit_cooks=False)
    ref = ds.results_df
    ok = ref["log2FoldChange"].notna().to_numpy()
    r = _rel(res.log2_fold_change[ok], ref["log2FoldChange"].to_numpy()[ok])
    assert np.median(r) <= 1e-8 and np.quantile(r, 0.99) <= 1e-4
    np.testing.assert_array_equal(res.padj < 0.1, ref["padj"].to_numpy() < 0.1)
