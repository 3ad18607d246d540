"""Descriptive statistics through the full Simulation path, against pandas/numpy on pooled data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from consortia import Policy, Simulation
from consortia.data.tcga import load_tcga_brca
from consortia.errors import AlgorithmError, PolicyError, SchemaError, ValidationError
from consortia.protocol import algorithm_from_spec, get_algorithm
from consortia.stats import Count, CrossTab, Histogram, Mean, Variance


def _pooled(sites: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(sites.values(), ignore_index=True)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = np.abs(a - b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.max(np.where(diff == 0, 0.0, diff / np.abs(b))))


@pytest.fixture(scope="module")
def tcga(shared_data):
    return load_tcga_brca(shared_data / "tcga_brca")


@pytest.fixture
def clinic_sites() -> dict[str, pd.DataFrame]:
    """Three sites with realistic magnitudes and categorical columns (cells 0 or >= 5)."""
    rng = np.random.default_rng(7)
    sites = {}
    for i, n in enumerate((120, 90, 150)):
        sites[f"h{i}"] = pd.DataFrame(
            {
                "age": rng.normal(61 + i, 11, n).round(1),
                "days": rng.exponential(900, n) + 30,
                "year": rng.integers(1998, 2020, n).astype(float),
                "stage": rng.choice(["I", "II", "III"], n, p=[0.4, 0.4, 0.2]),
                "sex": rng.choice(["F", "M"], n),
            }
        )
    return sites


# --------------------------------------------------------------------------- moments


def test_mean_and_variance_match_pandas(toy_sites):
    pooled = _pooled(toy_sites)
    sim = Simulation(toy_sites)
    mean = sim.run(Mean(columns=("x1", "y")))
    assert mean.n == len(pooled)
    assert _rel(mean.mean, pooled[["x1", "y"]].mean()) <= 1e-12
    var = sim.run(Variance(columns=("x1", "x2", "y")))
    ref = pooled[["x1", "x2", "y"]]
    assert var.n == len(pooled) and var.ddof == 1
    assert _rel(var.mean, ref.mean()) <= 1e-12
    assert _rel(var.variance, ref.var()) <= 1e-12
    assert _rel(var.std, ref.std()) <= 1e-12
    assert list(var.summary.index) == ["x1", "x2", "y"]
    pop = sim.run(Variance(columns=("x2",), ddof=0))
    assert _rel(pop.variance, ref[["x2"]].var(ddof=0)) <= 1e-12


def test_variance_exact_at_realistic_magnitudes(clinic_sites):
    # days ~ 1e3 and calendar years ~ 2e3 with a small spread: sum(x^2) - n mean^2
    # would lose ~7 digits; the centred second round does not.
    pooled = _pooled(clinic_sites)
    cols = ("age", "days", "year")
    res = Simulation(clinic_sites).run(Variance(columns=cols))
    assert _rel(res.mean, pooled[list(cols)].mean()) <= 1e-12
    assert _rel(res.variance, pooled[list(cols)].var()) <= 1e-10


def test_variance_on_tcga_regions(tcga):
    sites = tcga.sites()
    cols = ["age_at_index", "T"]
    res = Simulation(sites).run(Variance(columns=tuple(cols)))
    pooled = tcga.pooled()
    assert res.n == 1088
    assert _rel(res.mean, pooled[cols].mean()) <= 1e-12
    assert _rel(res.variance, pooled[cols].var()) <= 1e-10


def test_dropna_is_complete_case(clinic_sites):
    clinic_sites["h1"].loc[3:9, "age"] = np.nan
    with pytest.raises(SchemaError, match="'age' contains missing"):
        Simulation(clinic_sites).run(Variance(columns=("age", "days")))
    res = Simulation(clinic_sites).run(Variance(columns=("age", "days"), dropna=True))
    ref = _pooled(clinic_sites)[["age", "days"]].dropna()
    assert res.n == len(ref)
    assert _rel(res.variance, ref.var()) <= 1e-10


# --------------------------------------------------------------------------- counts


def test_count_rows_and_missing(clinic_sites):
    clinic_sites["h0"].loc[0:5, "age"] = np.nan  # 6 missing: allowed (>= 5)
    res = Simulation(clinic_sites).run(Count(columns=("age", "days")))
    assert res.n == 360
    np.testing.assert_array_equal(res.missing, [6, 0])
    np.testing.assert_array_equal(res.non_missing, [354, 360])
    assert Simulation(clinic_sites).run(Count()).n == 360


def test_count_small_missing_cell_is_refused(clinic_sites):
    clinic_sites["h2"].loc[0:1, "age"] = np.nan  # 2 missing at one site
    with pytest.raises(PolicyError, match="min_cell_count") as err:
        Simulation(clinic_sites).run(Count(columns=("age",)))
    assert (
        err.value.rule == "min_cell_count" and err.value.site is None
    )  # data-dependent: the site is not named


# --------------------------------------------------------------------------- histogram


def test_histogram_matches_numpy(clinic_sites):
    pooled = _pooled(clinic_sites)
    edges = (40.0, 55.0, 65.0, 75.0)
    res = Simulation(clinic_sites, policy=Policy(min_cell_count=1)).run(
        Histogram(column="age", edges=edges, suppress_below=0)
    )
    ref, _ = np.histogram(pooled["age"], bins=edges)
    np.testing.assert_array_equal(res.counts, ref)
    assert res.underflow == (pooled["age"] < 40).sum()
    assert res.overflow == (pooled["age"] > 75).sum()
    assert res.n == len(pooled) and not res.suppressed.any()


def test_histogram_site_with_small_bin_is_refused(clinic_sites):
    clinic_sites["h1"].loc[0:2, "age"] = 101.0  # 3 patients in the top bin at h1 only
    algo = Histogram(column="age", edges=(0.0, 60.0, 100.0, 120.0), suppress_below=0)
    with pytest.raises(PolicyError, match="min_cell_count") as err:
        Simulation(clinic_sites).run(algo)
    assert (
        err.value.rule == "min_cell_count" and err.value.site is None
    )  # data-dependent: the site is not named
    # the same study passes where the nodes allow cells of 1
    res = Simulation(clinic_sites, policy=Policy(min_cell_count=1)).run(algo)
    assert res.counts[2] == 3


def test_histogram_pooled_suppression(clinic_sites):
    clinic_sites["h1"].loc[0:2, "age"] = 101.0
    algo = Histogram(column="age", edges=(0.0, 60.0, 100.0, 120.0), suppress_below=5)
    res = Simulation(clinic_sites, policy=Policy(min_cell_count=1)).run(algo)
    assert np.isnan(res.counts[2]) and res.suppressed.tolist() == [False, False, True]
    assert res.overflow == 0 and not np.isnan(res.overflow)  # zero is never suppressed


def test_histogram_on_tcga_age(tcga):
    edges = (0.0, 45.0, 55.0, 65.0, 100.0)
    res = Simulation(tcga.sites()).run(Histogram(column="age_at_index", edges=edges))
    ref, _ = np.histogram(tcga.pooled()["age_at_index"], bins=edges)
    np.testing.assert_array_equal(res.counts, ref)
    # finer decades put a small non-zero cell at some region: refused there
    with pytest.raises(PolicyError) as err:
        Simulation(tcga.sites()).run(
            Histogram(column="age_at_index", edges=(0, 40, 50, 60, 70, 100))
        )
    assert err.value.rule == "min_cell_count"


# --------------------------------------------------------------------------- cross-tab


def test_crosstab_matches_pandas(clinic_sites):
    pooled = _pooled(clinic_sites)
    algo = CrossTab(
        row="stage",
        column="sex",
        row_categories=("I", "II", "III", "IV"),
        column_categories=("F", "M"),
    )
    res = Simulation(clinic_sites).run(algo)
    ref = pd.crosstab(pooled["stage"], pooled["sex"]).reindex(["I", "II", "III", "IV"])
    np.testing.assert_array_equal(res.counts, ref.fillna(0).to_numpy())
    assert res.counts[3].tolist() == [0, 0] and not res.suppressed.any()  # declared, unseen
    assert res.table.loc["II", "M"] == ref.loc["II", "M"]


def test_crosstab_suppresses_small_pooled_cells(clinic_sites):
    for df in clinic_sites.values():
        df["stage"] = "I"
    clinic_sites["h0"].loc[0:2, "stage"] = "IV"  # a pooled cell of at most 3
    algo = CrossTab(
        row="stage",
        column="sex",
        row_categories=("I", "IV"),
        column_categories=("F", "M"),
        suppress_below=5,
    )
    with pytest.raises(PolicyError, match="min_cell_count") as err:
        Simulation(clinic_sites).run(algo)
    assert (
        err.value.rule == "min_cell_count" and err.value.site is None
    )  # data-dependent: the site is not named
    res = Simulation(clinic_sites, policy=Policy(min_cell_count=1)).run(algo)
    small = res.suppressed[1]
    assert small.any() and np.isnan(res.counts[1][small]).all()
    assert not np.isnan(res.counts[0]).any()
    assert res.threshold == 5


def test_crosstab_on_tcga(tcga):
    row, col = "race_black or african american", "ajcc_pathologic_stage_Stage IIA"
    res = Simulation(tcga.sites()).run(
        CrossTab(row=row, column=col, row_categories=(0, 1), column_categories=(0, 1))
    )
    pooled = tcga.pooled()
    np.testing.assert_array_equal(res.counts, pd.crosstab(pooled[row], pooled[col]).to_numpy())
    with pytest.raises(PolicyError) as err:
        Simulation(tcga.sites()).run(
            CrossTab(row="E", column="race_white", row_categories=(0, 1), column_categories=(0, 1))
        )
    assert err.value.rule == "min_cell_count"


def test_crosstab_bad_values(clinic_sites):
    algo = CrossTab(
        row="stage", column="sex", row_categories=("I", "II"), column_categories=("F", "M")
    )
    with pytest.raises(SchemaError, match="'stage' holds values outside its declared categories"):
        Simulation(clinic_sites).run(algo)
    clinic_sites["h0"].loc[0:6, "sex"] = None
    full = CrossTab(
        row="stage", column="sex", row_categories=("I", "II", "III"), column_categories=("F", "M")
    )
    with pytest.raises(SchemaError, match="'sex' contains missing values"):
        Simulation(clinic_sites).run(full)
    res = Simulation(clinic_sites).run(
        CrossTab(
            row="stage",
            column="sex",
            row_categories=("I", "II", "III"),
            column_categories=("F", "M"),
            dropna=True,
        )
    )
    assert np.nansum(res.counts) == 360 - 7
    with pytest.raises(SchemaError, match=r"\['grade'\] not found"):
        Simulation(clinic_sites).run(
            CrossTab(row="grade", column="sex", row_categories=(1,), column_categories=("F",))
        )


# --------------------------------------------------------------------------- bad input


def test_bad_columns(clinic_sites):
    sim = Simulation(clinic_sites)
    with pytest.raises(SchemaError, match=r"\['weight'\] not found"):
        sim.run(Mean(columns=("age", "weight")))
    with pytest.raises(SchemaError, match="'stage' must be numeric"):
        sim.run(Variance(columns=("stage",)))
    with pytest.raises(SchemaError, match="'sex' must be numeric"):
        sim.run(Histogram(column="sex", edges=(0, 1)))
    clinic_sites["h2"].loc[4, "days"] = np.inf
    with pytest.raises(SchemaError, match="'days' contains infinite"):
        Simulation(clinic_sites).run(Mean(columns=("days",), dropna=True))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Mean(columns=()), "columns must name at least one column"),
        (lambda: Mean(columns="age"), "not one string"),
        (lambda: Variance(columns=("a", "a")), "more than once"),
        (lambda: Variance(columns=("a",), ddof=-1), "ddof"),
        (lambda: Histogram(column="a", edges=(1.0,)), "at least two"),
        (lambda: Histogram(column="a", edges=(0, 2, 1)), "strictly increasing"),
        (lambda: Histogram(column="a", edges=(0, np.inf)), "finite"),
        (lambda: Histogram(column="a", edges=(0, 1), suppress_below=-1), "suppress_below"),
        (
            lambda: CrossTab(row="a", column="a", row_categories=(1,), column_categories=(1,)),
            "two different",
        ),
        (
            lambda: CrossTab(row="a", column="b", row_categories=(), column_categories=(1,)),
            "at least one",
        ),
        (
            lambda: CrossTab(row="a", column="b", row_categories=(1, 1), column_categories=(1,)),
            "more than once",
        ),
        (
            lambda: CrossTab(row="a", column="b", row_categories=(None,), column_categories=(1,)),
            "strings, numbers",
        ),
        (lambda: Mean(columns=("a",), dropna="yes"), "dropna"),
    ],
)
def test_bad_parameters(make, match):
    with pytest.raises(ValidationError, match=match):
        make()


def test_variance_needs_rows():
    sites = {f"s{i}": pd.DataFrame({"x": np.arange(10.0)}) for i in range(3)}
    with pytest.raises(AlgorithmError, match="ddof=40"):
        Simulation(sites).run(Variance(columns=("x",), ddof=40))


def test_specs_round_trip():
    algos = [
        Count(columns=("a",)),
        Mean(columns=("a",)),
        Variance(columns=("a", "b"), ddof=0, dropna=True),
        Histogram(column="a", edges=(0, 1.5, 3)),
        CrossTab(row="a", column="b", row_categories=("x", "y"), column_categories=(0, 1)),
    ]
    for algo in algos:
        assert get_algorithm(algo.name) is type(algo)
        assert algorithm_from_spec(algo.spec()) == algo
