"""The differentially private Kaplan-Meier curve against lifelines on the pooled data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter

from consortia import Policy, Simulation
from consortia.errors import AlgorithmError, PolicyError, ValidationError
from consortia.privacy.dp import sigma_for
from consortia.survival import DPKaplanMeier

GRID = tuple(float(x) for x in range(90, 1801, 90))


def _sites(n: int = 1500, seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(3):
        arm = rng.integers(0, 2, n)
        t = np.ceil(rng.exponential(900 / (1 + 0.6 * arm)))
        c = np.ceil(rng.uniform(200, 2500, n))
        out[f"h{i}"] = pd.DataFrame(
            {"T": np.minimum(t, c), "E": (t <= c).astype(int), "arm": np.where(arm, "b", "a")}
        )
    return out


def _reference(frame: pd.DataFrame, times) -> np.ndarray:
    return KaplanMeierFitter().fit(frame["T"], frame["E"]).survival_function_at_times(times)


def test_close_to_the_pooled_curve_with_a_stated_noise():
    sites = _sites()
    res = Simulation(sites).run(
        DPKaplanMeier(time="T", event="E", time_grid=GRID, epsilon=1.0, delta=1e-6)
    )
    pooled = pd.concat(sites.values())
    ok = ~np.isnan(res.survival["all"])
    ref = _reference(pooled, np.asarray(GRID)[ok]).to_numpy()
    assert ok.sum() >= 15
    # the grid coarsens the curve (actuarial within a cell) and the noise moves it
    assert np.max(np.abs(res.survival["all"][ok] - ref)) < 0.02
    assert res.noise_sd == pytest.approx(sigma_for(1.0, 1e-6))
    assert np.all(np.diff(res.survival["all"][ok]) <= 1e-12)  # monotone


def test_by_group_and_budget_spent():
    sites = _sites(seed=1)
    algo = DPKaplanMeier(
        time="T", event="E", time_grid=GRID, group="arm", groups=("a", "b"), epsilon=2.0, delta=1e-6
    )
    sim = Simulation(sites, policy=Policy(epsilon_budget=3.0))
    res = sim.run(algo)
    pooled = pd.concat(sites.values())
    for g in ("a", "b"):
        ok = ~np.isnan(res.survival[g])
        ref = _reference(pooled[pooled.arm == g], np.asarray(GRID)[ok]).to_numpy()
        assert np.max(np.abs(res.survival[g][ok] - ref)) < 0.03
    assert res.survival_at("a", 0.0)[0] == 1.0
    with pytest.raises(PolicyError, match="privacy_budget"):  # 2 + 2 > 3
        sim.run(algo)


def test_no_small_cell_rule_applies_to_noisy_cells():
    """A one-point grid is fine here: the noise protects the cell (no oracle)."""
    sites = _sites(n=300)
    sim = Simulation(sites)
    for g in (100.0, 1000.0):
        sim.run(DPKaplanMeier(time="T", event="E", time_grid=(g,), epsilon=0.5, delta=1e-6))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0}, "epsilon must be a positive"),
        ({"delta": 0.5}, "delta must be below"),
        ({"time_grid": (0.0, 5.0)}, "positive times"),
        ({"groups": ("a",)}, "no group column"),
        ({"min_at_risk": -1}, "min_at_risk"),
    ],
)
def test_bad_parameters(kwargs, match):
    params = {"time": "T", "event": "E", "time_grid": GRID, "epsilon": 1.0, "delta": 1e-6}
    with pytest.raises(ValidationError, match=match):
        DPKaplanMeier(**{**params, **kwargs})


def test_too_few_patients_for_the_noise_is_a_clear_error():
    sites = {k: v.head(12) for k, v in _sites().items()}
    with pytest.raises(AlgorithmError, match="too few patients at risk"):
        Simulation(sites).run(
            DPKaplanMeier(time="T", event="E", time_grid=GRID, epsilon=0.1, delta=1e-6)
        )
