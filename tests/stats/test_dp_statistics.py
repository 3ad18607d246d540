"""Differentially private descriptive statistics: noise, sensitivity, parameters, edge cases.

The statistical tests run each study many times on a tiny federation (a fresh
``Simulation`` per study, since nodes remember releases and budgets) and check that
the noisy releases are centred on the pooled exact value with the declared noise
standard deviation.  The runtime's noise generator is seeded (``seeded_noise``) so
the tests are reproducible; their bounds (4 standard errors, a variance ratio
within 4 of its standard deviations) fail for a noise off by a factor sqrt(2).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import consortia.privacy.dp as dp_mod
from consortia import Policy, Simulation
from consortia.data.dataset import as_dataset
from consortia.errors import AlgorithmError, PolicyError, SchemaError, ValidationError
from consortia.privacy.dp import sigma_for
from consortia.protocol import Coordinator, algorithm_from_spec, get_algorithm
from consortia.stats import DPCount, DPCrossTab, DPHistogram, DPMean
from consortia.stats.dp import MEAN_LEVELS

EPS, DELTA = 1.0, 1e-6
REPEATS = 200
EDGES = (0.0, 40.0, 55.0, 70.0, 120.0)
STAGES = ("I", "II", "III", "IV")  # "IV" is declared but never observed
SEXES = ("F", "M")


@pytest.fixture
def seeded_noise(monkeypatch):
    """Make the runtime's noise shares reproducible (a fresh child seed per share draw)."""
    seq = np.random.SeedSequence(20261130)
    monkeypatch.setattr(dp_mod, "_rng", lambda: np.random.default_rng(seq.spawn(1)[0]))


@pytest.fixture
def tiny_sites() -> dict[str, pd.DataFrame]:
    """Three sites of 12 patients; some missing values, ages outside [20, 90]."""
    rng = np.random.default_rng(11)
    sites = {}
    for i in range(3):
        age = rng.normal(58 + 4 * i, 18, 12).round()
        age[0] = 5.0 + i  # below the clipping bound of DPMean and the first edge
        age[1] = 130.0  # above the clipping bound and the last edge
        bmi = rng.normal(26, 4, 12)
        bmi[2 + i] = np.nan
        sex = rng.choice(SEXES, 12).astype(object)
        sex[5] = None
        sites[f"s{i}"] = pd.DataFrame(
            {"age": age, "bmi": bmi, "stage": rng.choice(STAGES[:3], 12), "sex": sex}
        )
    return sites


def _pooled(sites):
    return pd.concat(sites.values(), ignore_index=True)


RICH = Policy(epsilon_budget=1e6)  # the owner of these toy data allows large budgets


def _repeat(sites, algo, repeats=REPEATS, policy=RICH):
    return [Simulation(sites, policy=policy).run(algo) for _ in range(repeats)]


def _check_noise(draws, exact, sd):
    """Draws (repeats x cells) centred on ``exact`` with noise ``sd`` (scalar or per cell)."""
    draws = np.asarray(draws, dtype=float).reshape(len(draws), -1)
    exact = np.broadcast_to(np.asarray(exact, dtype=float).ravel(), draws.shape[1:])
    sd = np.broadcast_to(np.asarray(sd, dtype=float).ravel(), draws.shape[1:])
    err = draws - exact
    r = len(draws)
    assert np.all(np.abs(err.mean(axis=0)) <= 4 * sd / math.sqrt(r)), (err.mean(axis=0), sd)
    ratio = float(np.mean((err / sd) ** 2))
    tol = 4 * math.sqrt(2 / err.size)
    assert 1 - tol <= ratio <= 1 + tol, ratio


# --------------------------------------------------------------------------- noise


@pytest.mark.parametrize("epsilon", [EPS, 20.0])
def test_dp_count_is_centred_on_the_pooled_count_with_the_declared_sd(
    tiny_sites, seeded_noise, epsilon
):
    algo = DPCount(columns=("bmi", "sex"), epsilon=epsilon, delta=DELTA)
    pooled = _pooled(tiny_sites)
    res = _repeat(tiny_sites, algo)
    # eps=20: sigma < sqrt(3), each site's share has the floor variance 1
    expected_sd = max(algo.sigma, math.sqrt(3))
    assert all(r.noise_sd == pytest.approx(expected_sd) for r in res)
    exact = [len(pooled), *pooled[["bmi", "sex"]].notna().sum()]
    _check_noise([[r.n_raw, *r.non_missing_raw] for r in res], exact, expected_sd)
    assert all(r.n >= 0 and np.all(r.non_missing >= 0) for r in res)
    assert list(res[0].summary.index) == ["rows", "bmi", "sex"]


def test_dp_histogram_is_centred_on_numpy_histogram(tiny_sites, seeded_noise):
    algo = DPHistogram(
        column="bmi", edges=(0, 22, 26, 30, 34), dropna=True, epsilon=EPS, delta=DELTA
    )
    x = _pooled(tiny_sites)["bmi"].dropna().to_numpy()
    counts, _ = np.histogram(x, bins=algo.edges)
    exact = [*counts, np.sum(x < 0), np.sum(x > 34)]
    res = _repeat(tiny_sites, algo)
    assert algo.sigma == pytest.approx(sigma_for(EPS, DELTA, sensitivity=1.0))
    draws = [[*r.counts_raw, r.underflow_raw, r.overflow_raw] for r in res]
    _check_noise(draws, exact, algo.sigma)
    r = res[0]
    assert np.all(r.counts >= 0) and r.underflow >= 0 and r.overflow >= 0
    assert np.all(r.ci_low <= np.maximum(r.counts_raw, 0)) and np.all(r.counts_raw <= r.ci_high)
    assert r.margin == pytest.approx(1.959964 * algo.sigma)


def test_dp_crosstab_is_centred_on_pandas_crosstab_including_empty_levels(tiny_sites, seeded_noise):
    algo = DPCrossTab(
        row="stage",
        column="sex",
        row_categories=STAGES,
        column_categories=SEXES,
        dropna=True,
        epsilon=EPS,
        delta=DELTA,
    )
    pooled = _pooled(tiny_sites).dropna(subset=["sex"])
    exact = pd.crosstab(pooled["stage"], pooled["sex"]).reindex(
        index=list(STAGES), columns=list(SEXES), fill_value=0
    )
    assert exact.loc["IV"].sum() == 0
    res = _repeat(tiny_sites, algo)
    _check_noise([r.counts_raw for r in res], exact.to_numpy(), algo.sigma)
    assert res[0].table.shape == (4, 2) and (res[0].table.to_numpy() >= 0).all()
    # the empty level is released as noise around 0, clamped at 0
    assert np.mean([r.counts_raw[3].sum() for r in res]) == pytest.approx(
        0, abs=4 * math.sqrt(2) * algo.sigma / math.sqrt(REPEATS)
    )


def test_dp_mean_releases_the_clipped_sums_with_the_declared_sd(tiny_sites, seeded_noise):
    lower, upper = (20.0, 15.0), (90.0, 40.0)
    algo = DPMean(
        columns=("age", "bmi"), lower=lower, upper=upper, dropna=True, epsilon=EPS, delta=DELTA
    )
    pooled = _pooled(tiny_sites)[["age", "bmi"]].dropna()
    clipped = pooled.clip(lower=list(lower), upper=list(upper), axis=1)
    assert (pooled["age"] < 20).any() and (pooled["age"] > 90).any()
    centre = (np.array(lower) + np.array(upper)) / 2
    step = (np.array(upper) - np.array(lower)) / (2 * MEAN_LEVELS)
    exact_total = np.rint((clipped.to_numpy() - centre) / step).sum(axis=0) * step
    assert np.allclose(exact_total, (clipped - centre).sum(), atol=len(clipped) * step / 2)
    res = _repeat(tiny_sites, algo)
    _check_noise([r.n_raw for r in res], len(pooled), algo.sigma)
    _check_noise([r.centred_total for r in res], exact_total, res[0].total_noise_sd)
    assert algo.sigma == pytest.approx(sigma_for(EPS, DELTA, sensitivity=math.sqrt(3)))
    np.testing.assert_allclose(res[0].total_noise_sd, algo.sigma * MEAN_LEVELS * step)
    means = np.array([r.mean for r in res])
    assert np.all((means >= lower) & (means <= upper))
    # the means' spread matches their stated sd (delta method: within 30%)
    sd = np.mean([r.noise_sd for r in res], axis=0)
    assert np.all(np.abs(means.std(axis=0) / sd - 1) < 0.3), (means.std(axis=0), sd)
    assert np.all(np.abs(means.mean(axis=0) - clipped.mean()) <= 4 * sd / math.sqrt(REPEATS))
    inside = np.mean([(r.ci_low <= clipped.mean()) & (clipped.mean() <= r.ci_high) for r in res])
    assert inside >= 0.9


def test_dp_mean_is_accurate_with_a_large_budget(toy_sites):
    pooled = pd.concat(toy_sites.values(), ignore_index=True)
    algo = DPMean(columns=("x1", "x2"), lower=-10, upper=10, epsilon=1e4, delta=1e-6)
    res = Simulation(toy_sites, policy=RICH).run(algo)
    assert res.lower.tolist() == [-10, -10]
    assert np.all(np.abs(res.mean - pooled[["x1", "x2"]].mean()) <= 5 * res.noise_sd + 1e-3)
    assert np.all(res.noise_sd < 0.01)
    assert list(res.summary.columns) == ["mean", "noise_sd", "ci_low", "ci_high", "lower", "upper"]


# --------------------------------------------------------------------------- sensitivity


def _release(algo, frame):
    c = algo.local(STEPS[algo.name], {}, as_dataset(frame))
    scale = algo.cell_sensitivity()
    assert set(c.noise) == set(scale) and not c.count_arrays
    for a, s in scale.items():
        assert c.noise[a] == pytest.approx(algo.sigma * s)
    assert c.arrays["sites"].tolist() == [1.0] and "sites" not in c.noise
    return np.concatenate([np.ravel(c.arrays[a]) / s for a, s in scale.items()])


STEPS = {
    "stats.dp_count": "count",
    "stats.dp_histogram": "histogram",
    "stats.dp_mean": "sums",
    "stats.dp_crosstab": "table",
}


SENS_ALGOS = [
    DPCount(columns=("a", "b", "c"), epsilon=EPS, delta=DELTA),
    DPHistogram(column="a", edges=(-5, 0, 5), dropna=True, epsilon=EPS, delta=DELTA),
    DPMean(
        columns=("a", "b", "c"),
        lower=(-5, 0, -1),
        upper=(5, 2, 1),
        dropna=True,
        epsilon=EPS,
        delta=DELTA,
    ),
    DPCrossTab(
        row="g",
        column="h",
        row_categories=("u", "v"),
        column_categories=(0, 1, 2),
        dropna=True,
        epsilon=EPS,
        delta=DELTA,
    ),
]

values = st.one_of(st.floats(-20, 20), st.just(float("nan")))
patients = st.fixed_dictionaries(
    {
        "a": values,
        "b": values,
        "c": values,
        "g": st.sampled_from(["u", "v", None]),
        "h": st.sampled_from([0.0, 1.0, 2.0, float("nan")]),
    }
)


def _frame(rows):
    frame = pd.DataFrame(rows, columns=list("abcgh"))
    return frame.astype({"a": float, "b": float, "c": float, "g": object, "h": float})


@pytest.mark.parametrize("algo", SENS_ALGOS, ids=lambda a: a.name)
@settings(max_examples=60, deadline=None)
@given(rows=st.lists(patients, max_size=15), extra=patients, at=st.integers(0, 15))
def test_one_patient_moves_the_release_by_at_most_the_sensitivity(algo, rows, extra, at):
    frame = _frame(rows)
    at = min(at, len(rows))
    bigger = _frame([*rows[:at], extra, *rows[at:]])
    moved = np.linalg.norm(_release(algo, bigger) - _release(algo, frame))
    assert moved <= algo.sensitivity + 1e-9


@pytest.mark.parametrize("algo", SENS_ALGOS, ids=lambda a: a.name)
def test_the_declared_sensitivity_is_reached(algo):
    frame = pd.DataFrame({"a": [1.0], "b": [1.0], "c": [0.0], "g": ["u"], "h": [1.0]})
    extreme = pd.DataFrame({"a": [50.0], "b": [-3.0], "c": [7.0], "g": ["v"], "h": [2.0]})
    moved = np.linalg.norm(
        _release(algo, pd.concat([frame, extreme], ignore_index=True)) - _release(algo, frame)
    )
    assert moved == pytest.approx(algo.sensitivity)


def test_sigma_is_calibrated_to_the_exact_sensitivity():
    assert DPCount(epsilon=2, delta=1e-5).sigma == pytest.approx(sigma_for(2, 1e-5))
    algo = DPCount(columns=("a", "b", "c"), epsilon=2, delta=1e-5)
    assert algo.sigma == pytest.approx(sigma_for(2, 1e-5, sensitivity=2.0))
    mean = DPMean(columns=("a",), lower=0, upper=1, epsilon=2, delta=1e-5)
    assert mean.noise() == pytest.approx(
        {
            "n": sigma_for(2, 1e-5, sensitivity=math.sqrt(2)),
            "total": MEAN_LEVELS * sigma_for(2, 1e-5, sensitivity=math.sqrt(2)),
        }
    )
    for a in SENS_ALGOS:
        assert a.privacy_cost() == (EPS, DELTA)
        assert algorithm_from_spec(a.spec()) == a
        assert get_algorithm(a.name) is type(a)


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0, "delta": DELTA}, "epsilon must be positive"),
        ({"epsilon": -1.0, "delta": DELTA}, "epsilon must be positive"),
        ({"epsilon": float("nan"), "delta": DELTA}, "epsilon must be a finite number"),
        ({"epsilon": float("inf"), "delta": DELTA}, "epsilon must be a finite number"),
        ({"epsilon": True, "delta": DELTA}, "epsilon must be a finite number"),
        ({"epsilon": "1", "delta": DELTA}, "epsilon must be a finite number"),
        ({"epsilon": EPS, "delta": 0.0}, "delta must be positive"),
        ({"epsilon": EPS, "delta": 1.0}, "delta must be below 1"),
        ({"epsilon": EPS, "delta": 2}, "delta must be below 1"),
        ({"epsilon": EPS, "delta": None}, "delta must be a finite number"),
    ],
)
@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: DPCount(**kw),
        lambda **kw: DPHistogram(column="a", edges=(0, 1), **kw),
        lambda **kw: DPMean(columns=("a",), lower=0, upper=1, **kw),
        lambda **kw: DPCrossTab(
            row="a", column="b", row_categories=(1,), column_categories=(2,), **kw
        ),
    ],
    ids=["count", "histogram", "mean", "crosstab"],
)
def test_bad_privacy_parameters_are_refused(make, kwargs, match):
    with pytest.raises(ValidationError, match=match):
        make(**kwargs)


def test_privacy_parameters_are_required_and_keyword_only():
    with pytest.raises(TypeError):
        DPCount(columns=("a",))  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        DPCount(("a",), EPS, DELTA)  # type: ignore[misc]


P = {"epsilon": EPS, "delta": DELTA}


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: DPCount(columns="age", **P), "columns must be a sequence"),
        (
            lambda: DPMean(columns=("a", "b"), lower=(0,), upper=(1, 1), **P),
            "lower must give one bound per column",
        ),
        (lambda: DPMean(columns=("a",), lower=2, upper=1, **P), "lower must be below upper"),
        (
            lambda: DPMean(columns=("a",), lower=0, upper=float("inf"), **P),
            "upper must hold finite",
        ),
        (lambda: DPMean(columns=(), lower=0, upper=1, **P), "columns must name at least one"),
        (
            lambda: DPMean(columns=("a",), lower=0, upper=1, dropna=1, **P),
            "dropna must be True or False",
        ),
        (lambda: DPHistogram(column="a", edges=(1, 1), **P), "edges must be strictly increasing"),
        (lambda: DPHistogram(column="", edges=(0, 1), **P), "column must be a column name"),
        (
            lambda: DPCrossTab(row="a", column="b", row_categories=(), column_categories=(1,), **P),
            "row_categories must declare at least one",
        ),
        (
            lambda: DPCrossTab(
                row="a", column="a", row_categories=(1,), column_categories=(1,), **P
            ),
            "two different columns",
        ),
    ],
)
def test_bad_statistic_parameters_are_refused(make, match):
    with pytest.raises(ValidationError, match=match):
        make()


# --------------------------------------------------------------------------- edge cases


def _coordinate(algo, sums):
    coord = Coordinator(algo)
    coord.advance({k: np.asarray(v, dtype=float) for k, v in sums.items()})
    assert coord.done
    return coord.result


def test_negative_noisy_counts_are_clamped_and_kept_raw():
    hist = DPHistogram(column="a", edges=(0, 1, 2), epsilon=EPS, delta=DELTA)
    r = _coordinate(hist, {"counts": [-3, 7], "underflow": [-1], "overflow": [2], "sites": [3]})
    assert r.counts.tolist() == [0, 7] and r.counts_raw.tolist() == [-3, 7]
    assert (r.underflow, r.underflow_raw, r.overflow, r.n) == (0, -1, 2, 5)
    assert r.ci_low[0] == 0.0
    count = DPCount(columns=("a",), epsilon=EPS, delta=DELTA)
    r = _coordinate(count, {"n": [-2], "non_missing": [-4], "sites": [3]})
    assert (r.n, r.n_raw, r.non_missing.tolist()) == (0, -2, [0])
    tab = DPCrossTab(row="a", column="b", row_categories=(1, 2), column_categories=(3,), **P)
    r = _coordinate(tab, {"counts": [[-5], [4]], "sites": [3]})
    assert r.counts.tolist() == [[0], [4]] and r.n == 0


def test_noise_sd_states_the_share_floor():
    algo = DPCount(epsilon=50.0, delta=DELTA)  # sigma ~ 0.16
    r = _coordinate(algo, {"n": [40], "sites": [9]})
    assert r.noise_sd == pytest.approx(3.0)
    r = _coordinate(DPCount(epsilon=EPS, delta=DELTA), {"n": [40], "sites": [9]})
    assert r.noise_sd == pytest.approx(sigma_for(EPS, DELTA))


def test_dp_mean_without_rows_is_nan_and_means_are_clamped():
    algo = DPMean(columns=("a",), lower=0, upper=10, epsilon=EPS, delta=DELTA)
    r = _coordinate(algo, {"n": [0], "total": [15], "sites": [3]})
    assert np.isnan(r.mean).all() and np.isnan(r.ci_low).all() and r.n == 0
    r = _coordinate(algo, {"n": [2], "total": [3 * MEAN_LEVELS], "sites": [3]})
    assert r.mean.tolist() == [10.0] and r.ci_high.tolist() == [10.0]


def test_a_site_with_no_rows_after_dropna(tiny_sites, seeded_noise):
    sites = {k: v.copy() for k, v in tiny_sites.items()}
    sites["s2"]["bmi"] = np.nan
    algo = DPMean(columns=("bmi",), lower=15, upper=40, dropna=True, epsilon=EPS, delta=DELTA)
    c = algo.local("sums", {}, as_dataset(sites["s2"]))
    assert c.cohort == 0 and c.rows.tolist() == [] and c.arrays["total"].tolist() == [0.0]
    with pytest.raises(PolicyError) as err:  # the node's cohort rule still applies
        Simulation(sites).run(algo)
    assert err.value.rule == "min_cohort_size"
    relaxed = Policy(min_cohort_size=0, epsilon_budget=1e6)
    pooled = _pooled(sites)["bmi"].dropna()
    res = _repeat(sites, algo, repeats=100, policy=relaxed)
    _check_noise([r.n_raw for r in res], len(pooled), algo.sigma)


def test_dp_algorithms_declare_the_rows_they_used(tiny_sites):
    frame = tiny_sites["s0"]
    data = as_dataset(frame)
    hist = DPHistogram(column="bmi", edges=(0, 50), dropna=True, **P)
    assert hist.local("histogram", {}, data).rows.tolist() == [i for i in range(12) if i != 2]
    tab = DPCrossTab(
        row="stage", column="sex", row_categories=STAGES, column_categories=SEXES, dropna=True, **P
    )
    assert tab.local("table", {}, data).rows.tolist() == [i for i in range(12) if i != 5]
    mean = DPMean(columns=("age",), lower=0, upper=100, **P)
    assert mean.local("sums", {}, data).rows is None
    assert DPCount(columns=("bmi",), **P).local("count", {}, data).rows is None


def test_missing_values_and_unknown_levels_are_refused_without_dropna(tiny_sites):
    data = as_dataset(tiny_sites["s0"])
    with pytest.raises(SchemaError, match="'bmi' contains missing"):
        DPMean(columns=("bmi",), lower=0, upper=1, **P).local("sums", {}, data)
    with pytest.raises(SchemaError, match="'bmi' contains missing"):
        DPHistogram(column="bmi", edges=(0, 1), **P).local("histogram", {}, data)
    tab = DPCrossTab(
        row="stage", column="sex", row_categories=("I",), column_categories=SEXES, dropna=True, **P
    )
    with pytest.raises(SchemaError, match="outside its declared categories"):
        tab.local("table", {}, data)
    with pytest.raises(SchemaError, match="not found"):
        DPCount(columns=("nope",), **P).local("count", {}, data)
    with pytest.raises(AlgorithmError, match="unknown step"):
        DPCount(**P).local("moments", {}, data)
