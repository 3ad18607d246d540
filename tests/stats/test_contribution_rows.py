"""Contribution.rows: the exact statistics declare which rows they used (node cohorts)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from consortia import Simulation
from consortia.data.dataset import as_dataset
from consortia.stats import (
    Count,
    CrossTab,
    Histogram,
    LinearRegression,
    LogisticRegression,
    Mean,
    Variance,
)
from consortia.stats._validate import numeric_rows, used_rows


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 40
    df = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "y": rng.normal(size=n),
            "event": rng.integers(0, 2, n),
            "stage": rng.choice(["I", "II"], n),
        }
    )
    df.loc[[2, 7], "x"] = np.nan
    df.loc[[7, 11], "y"] = np.nan
    df.loc[[5], "stage"] = None
    return df


def test_numeric_rows_returns_the_kept_mask(frame):
    x, kept = numeric_rows(frame, ("x", "y"), dropna=True, return_mask=True)
    assert kept.dtype == bool and kept.shape == (len(frame),)
    assert list(np.flatnonzero(~kept)) == [2, 7, 11]
    np.testing.assert_array_equal(x, frame[["x", "y"]].to_numpy()[kept])
    full, kept_all = numeric_rows(frame, ("event",), dropna=False, return_mask=True)
    assert kept_all.all() and len(full) == len(frame)
    assert used_rows(kept_all) is None
    np.testing.assert_array_equal(used_rows(kept), np.flatnonzero(kept))


CASES = [
    (Mean(columns=("x", "y"), dropna=True), ["moments"], [2, 7, 11]),
    (Variance(columns=("x",), dropna=True), ["moments", "centred"], [2, 7]),
    (Histogram(column="y", edges=(-9, 0, 9), dropna=True), ["histogram"], [7, 11]),
    (
        CrossTab(
            row="stage",
            column="event",
            row_categories=("I", "II"),
            column_categories=(0, 1),
            dropna=True,
        ),
        ["table"],
        [5],
    ),
    (LinearRegression(outcome="y", covariates=("x",), dropna=True), ["moments"], [2, 7, 11]),
    (
        LogisticRegression(outcome="event", covariates=("x",), dropna=True),
        ["moments"],
        [2, 7],
    ),
]


@pytest.mark.parametrize(("algo", "steps", "dropped"), CASES, ids=lambda c: getattr(c, "name", ""))
def test_exact_algorithms_declare_the_rows_they_used(frame, algo, steps, dropped):
    data = as_dataset(frame)
    public = {"centre": np.zeros(1)}
    for step in steps:
        c = algo.local(step, public, data)
        expected = np.setdiff1d(np.arange(len(frame)), dropped)
        np.testing.assert_array_equal(c.rows, expected)
        assert c.cohort == len(expected)


def test_rows_is_none_when_every_row_is_used(frame):
    data = as_dataset(frame.dropna())
    assert Count(columns=("x",)).local("count", {}, data).rows is None
    assert Mean(columns=("x",), dropna=True).local("moments", {}, data).rows is None
    algo = LinearRegression(outcome="y", covariates=("x",), dropna=True)
    assert algo.local("moments", {}, data).rows is None


def test_dropna_studies_still_run(toy_sites):
    sites = {k: v.copy() for k, v in toy_sites.items()}
    sites["site0"].loc[[0, 3], "x1"] = np.nan
    pooled = pd.concat(sites.values(), ignore_index=True).dropna()
    fit = Simulation(sites).run(LinearRegression(outcome="y", covariates=("x1",), dropna=True))
    assert fit.n == len(pooled)
