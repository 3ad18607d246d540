"""AnnData (.h5ad) expression at the node: X or a layer, dense or sparse, joined by patient id."""

from __future__ import annotations

import json
import textwrap
import tracemalloc

import anndata
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from consortia import Simulation
from consortia.data import catalogue, load_dataset, load_expression, synthetic_cohort
from consortia.data.h5ad import read_h5ad_counts
from consortia.errors import SchemaError, ValidationError
from consortia.node import load_config
from consortia.node.agent import NodeAgent
from consortia.omics.screen import CoxScreen

SCHEMA = {"id": "pid", "time": "T", "event": "E"}
N, G = 40, 25


@pytest.fixture
def counts() -> np.ndarray:
    return np.random.default_rng(0).poisson(4, (N, G))


@pytest.fixture
def clinical() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "pid": [f"p{i:03d}" for i in range(N + 5)],  # 5 patients without a sample
            "T": rng.uniform(1, 100, N + 5),
            "E": rng.integers(0, 2, N + 5),
        }
    )


def write(path, x, *, layers=None, obs=None, var=None) -> str:
    obs = (
        pd.DataFrame(
            {
                "patient": [f"p{i:03d}" for i in range(N)][::-1],  # another order
                "batch": pd.Categorical(np.tile(["a", "b"], N // 2)),
            },
            index=[f"s{i}" for i in range(N)],
        )
        if obs is None
        else obs
    )
    var = (
        pd.DataFrame(
            {"symbol": [f"GENE{j}" for j in range(G)]}, index=[f"ENSG{j}" for j in range(G)]
        )
        if var is None
        else var
    )
    adata = anndata.AnnData(X=x, obs=obs, var=var)
    for name, m in (layers or {}).items():
        adata.layers[name] = m
    adata.write_h5ad(path)
    return str(path)


@pytest.mark.parametrize(
    ("make", "dtype"),
    [
        (lambda c: c.astype(np.float32), np.int32),  # dense float32 counts
        (lambda c: sparse.csr_matrix(c.astype(np.float64)), np.int64),
        (lambda c: sparse.csc_matrix(c.astype(np.int32)), np.int32),
        (lambda c: c.astype(np.uint16), np.uint16),
    ],
)
def test_counts_from_x_dense_or_sparse_join_the_clinical_table(
    tmp_path, counts, clinical, make, dtype
):
    path = write(tmp_path / "x.h5ad", make(counts))
    ds = load_dataset(
        clinical,
        schema=SCHEMA,
        expression=path,
        expression_patient_id="patient",
        expression_obs=["batch"],
    )
    expr = ds.expression
    assert expr.shape == (N, G) and set(expr.dtypes) == {np.dtype(dtype)}
    assert list(expr.columns) == [f"ENSG{j}" for j in range(G)]
    assert list(expr.index) == [f"p{i:03d}" for i in range(N)][::-1]
    np.testing.assert_array_equal(expr.to_numpy(), counts)
    # obs columns join the clinical table by patient id (missing without a sample)
    batch = ds.frame.set_index("pid")["batch"]
    assert batch.loc["p039"] == "a" and batch.loc["p000"] == "b"
    assert batch.isna().sum() == 5


def test_a_named_layer_and_gene_ids_from_a_var_column(tmp_path, counts, clinical):
    path = write(tmp_path / "x.h5ad", np.log1p(counts), layers={"counts": counts})
    expr = load_expression(path, layer="counts", patient_id="patient", gene_id="symbol")
    assert list(expr.columns[:2]) == ["GENE0", "GENE1"]
    np.testing.assert_array_equal(expr.to_numpy(), counts)
    with pytest.raises(SchemaError, match="non-integer values"):
        load_expression(path, patient_id="patient")  # X holds log counts


def test_integer_patient_ids_match_the_clinical_type(tmp_path, counts):
    obs = pd.DataFrame(index=[str(i) for i in range(N)])
    path = write(tmp_path / "x.h5ad", counts, obs=obs)
    clinical = pd.DataFrame({"pid": np.arange(N), "T": 1.0, "E": 1})
    ds = load_dataset(
        clinical, schema={**SCHEMA, "id": {"name": "pid", "type": "int"}}, expression=path
    )
    assert ds.expression.index.dtype == np.int64


def test_catalogue_shows_gene_and_sample_counts_never_values(tmp_path, counts, clinical):
    path = write(tmp_path / "x.h5ad", sparse.csr_matrix(counts))
    ds = load_dataset(clinical, schema=SCHEMA, expression=path, expression_patient_id="patient")
    card = catalogue(ds)
    assert card["modalities"]["expression"] == {"patients": 40, "genes": G}
    text = json.dumps(card)
    assert "ENSG" not in text and "p0" not in text and "s1" not in text


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda c: c + 0.5, r"modality 'expression' must hold raw counts: it has non-integer"),
        (lambda c: sparse.csr_matrix(c - 10.0 * (c > 5)), "it has negative values"),
        (lambda c: np.where(c > 6, np.nan, c), "it has missing or infinite values"),
        (lambda c: c > 3, "the matrix is boolean"),
    ],
)
def test_bad_counts_are_typed_errors_naming_the_rule(tmp_path, counts, clinical, change, pattern):
    path = write(tmp_path / "x.h5ad", change(counts))
    with pytest.raises(SchemaError, match=pattern):
        load_dataset(clinical, schema=SCHEMA, expression=path, expression_patient_id="patient")


def test_duplicated_ids_and_samples_missing_from_the_clinical_table(tmp_path, counts, clinical):
    var = pd.DataFrame(
        {"symbol": ["TP53", "KRAS"] * (G // 2) + ["MLH1"]}, index=[f"ENSG{j}" for j in range(G)]
    )
    path = write(tmp_path / "x.h5ad", counts, var=var)
    with pytest.raises(SchemaError, match="duplicate gene ids in var"):
        load_expression(path, gene_id="symbol")
    with pytest.raises(SchemaError, match="duplicate patient ids in obs"):
        load_expression(path, patient_id="batch")
    with pytest.raises(SchemaError, match="'expression' has patient ids absent from the clinical"):
        load_dataset(
            clinical.iloc[3:], schema=SCHEMA, expression=path, expression_patient_id="patient"
        )


def test_file_and_option_errors(tmp_path, counts, clinical):
    path = write(tmp_path / "x.h5ad", counts)
    with pytest.raises(ValidationError, match="has no layer 'raw'"):
        load_expression(path, layer="raw")
    with pytest.raises(ValidationError, match="obs has no column 'nope'"):
        load_expression(path, patient_id="nope")
    with pytest.raises(ValidationError, match=r"obs has no column\(s\) \['nope'\]"):
        read_h5ad_counts(path, obs_columns=["nope"])
    with pytest.raises(ValidationError, match="does not exist"):
        load_expression(tmp_path / "absent.h5ad")
    (tmp_path / "junk.h5ad").write_bytes(b"not hdf5")
    with pytest.raises(ValidationError, match="could not be read as h5ad"):
        load_expression(tmp_path / "junk.h5ad")
    with pytest.raises(ValidationError, match="options of .h5ad files only"):
        load_expression(tmp_path / "c.csv", layer="counts")
    with pytest.raises(ValidationError, match="need an expression file"):
        load_dataset(clinical, schema=SCHEMA, expression_layer="counts")
    with pytest.raises(SchemaError, match=r"column\(s\) \['T'\] are already columns"):
        obs = pd.DataFrame({"patient": [f"p{i:03d}" for i in range(N)], "T": 1.0})
        p2 = write(tmp_path / "y.h5ad", counts, obs=obs.set_axis([f"s{i}" for i in range(N)]))
        load_dataset(
            clinical,
            schema=SCHEMA,
            expression=p2,
            expression_patient_id="patient",
            expression_obs=["T"],
        )


def test_sparse_counts_load_in_bounded_memory(tmp_path):
    rng = np.random.default_rng(2)
    n, g = 300, 2000
    m = sparse.random(n, g, density=0.1, format="csr", random_state=rng, dtype=np.float32)
    m.data = np.ceil(m.data * 50)
    path = write(
        tmp_path / "big.h5ad",
        m,
        obs=pd.DataFrame(index=[f"s{i}" for i in range(n)]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(g)]),
    )
    tracemalloc.start()
    expr = load_expression(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    dense = n * g * expr.to_numpy().itemsize
    assert expr.to_numpy().dtype == np.int32
    assert peak < 1.6 * dense  # the dense result, the sparse arrays, nothing more


def test_node_config_registers_an_h5ad_dataset_and_the_screen_runs_on_it(tmp_path):
    cohort = synthetic_cohort(
        n_sites=3, patients_per_site=40, n_genes=30, n_de_genes=2, seed=4, tiles=False
    )
    genes = cohort.genes[:8]
    loaded = {}
    for site, ds in cohort.sites().items():
        folder = tmp_path / site
        folder.mkdir()
        ds.frame.to_parquet(folder / "clinical.parquet")
        expr = ds.expression
        obs = pd.DataFrame(
            {"patient": expr.index.astype(str)}, index=[f"sample{i}" for i in range(len(expr))]
        )
        write(
            folder / "counts.h5ad",
            sparse.csr_matrix(expr.to_numpy()),
            obs=obs,
            var=pd.DataFrame(index=list(expr.columns)),
        )
        toml = folder / "node.toml"
        toml.write_text(
            textwrap.dedent(f"""
            [node]
            name = "{site}"
            hub = "http://127.0.0.1:1"
            data_dir = "state"
            [datasets.crc]
            path = "clinical.parquet"
            expression = "counts.h5ad"
            expression_patient_id = "patient"
            [datasets.crc.schema]
            id = "pid"
            time = {{name = "time", type = "int"}}
            event = "event"
            """)
        )
        cfg = load_config(toml)
        d = cfg.datasets[0]
        assert d.expression == folder / "counts.h5ad" and d.expression_patient_id == "patient"
        assert load_config(cfg.write(folder / "again.toml")) == cfg
        agent = NodeAgent(cfg)  # how a node registers its datasets
        try:
            loaded[site] = agent.worker().datasets["crc"]
            assert not agent.unavailable
        finally:
            agent.close()
    alg = CoxScreen(time="time", event="event", genes=genes, stratify_by_site=True)
    from_files = Simulation(loaded).run(alg)
    in_memory = Simulation(cohort.sites()).run(alg)
    np.testing.assert_allclose(from_files.coef, in_memory.coef, rtol=1e-12)
    np.testing.assert_allclose(from_files.pvalue, in_memory.pvalue, rtol=1e-12)


def test_node_config_rejects_malformed_h5ad_options(tmp_path):
    toml = tmp_path / "node.toml"
    toml.write_text(
        textwrap.dedent("""
        [node]
        name = "a"
        hub = "http://127.0.0.1:1"
        data_dir = "state"
        [datasets.d]
        path = "d.csv"
        expression = "x.h5ad"
        expression_obs = "batch"
        """)
    )
    with pytest.raises(ValidationError, match=r"\[datasets\.d\] expression_obs: must be a list"):
        load_config(toml)
