"""The distributed discrete Gaussian mechanism and its calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from consortia.errors import ValidationError
from consortia.privacy.dp import (
    add_noise,
    discrete_gaussian,
    epsilon_for,
    noise_share,
    sigma_for,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(seed))


@pytest.mark.parametrize("sigma", [0.7, 1.0, 3.0, 25.0])
def test_discrete_gaussian_matches_its_pmf(sigma):
    x = discrete_gaussian(sigma, 200_000, rng=_rng(1))
    assert x.dtype == np.int64
    support = np.arange(-int(10 * sigma) - 2, int(10 * sigma) + 3)
    pmf = np.exp(-(support**2) / (2 * sigma**2))
    pmf /= pmf.sum()
    var = float((support**2 * pmf).sum())
    # mean and variance within 5 standard errors
    assert abs(x.mean()) < 5 * math.sqrt(var / x.size)
    assert abs(x.var() - var) < 5 * var * math.sqrt(2 / x.size) + 1e-3


def test_shares_sum_to_the_declared_variance():
    sigma, n = 12.0, 6
    total = sum(noise_share(sigma, n, (100_000,), rng=_rng(i)) for i in range(n))
    assert abs(total.var() / sigma**2 - 1) < 0.03


def test_add_noise_only_touches_declared_arrays():
    arrays = {"a": np.zeros(5), "b": np.ones(3)}
    out = add_noise(arrays, {"a": 10.0}, 3, rng=_rng(2))
    assert np.array_equal(out["b"], arrays["b"])
    assert not np.array_equal(out["a"], arrays["a"])
    assert np.array_equal(out["a"], np.rint(out["a"]))


def test_calibration_round_trips_through_dp_accounting():
    for eps in (0.1, 0.5, 1.0, 4.0):
        s = sigma_for(eps, 1e-6)
        assert epsilon_for(s, 1e-6) == pytest.approx(eps, rel=1e-3)
    # k releases at the same scale cost what one release at sigma / sqrt(k) costs
    s4 = sigma_for(1.0, 1e-6, releases=4)
    assert s4 == pytest.approx(2 * sigma_for(1.0, 1e-6))
    assert sigma_for(1.0, 1e-6, sensitivity=3.0) == pytest.approx(3 * sigma_for(1.0, 1e-6))
    assert sigma_for(1.0, 1e-6, colluders=1, n_sites=4) > sigma_for(1.0, 1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0.0, "delta": 1e-6}, "epsilon must be positive"),
        ({"epsilon": 1.0, "delta": 1.5}, "delta must be below 1"),
        ({"epsilon": float("nan"), "delta": 1e-6}, "epsilon must be a finite"),
        ({"epsilon": 1.0, "delta": 1e-6, "releases": 0}, "releases"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        sigma_for(**kwargs)
