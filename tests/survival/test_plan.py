"""Planned grids: parameters, the noisy plan round, the plan, its node-side check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from consortia.errors import AlgorithmError, PolicyError, ValidationError
from consortia.privacy.dp import sigma_for
from consortia.survival._plan import (
    Z_CELL,
    PlanSettings,
    cells_below,
    check_plan_params,
    make_plan,
    plan_contribution,
    planned_contribution,
    planned_counts,
    verify_plan,
    within_bin_weights,
)

PARAMS = {
    "time_grid": None,
    "horizon": 60.0,
    "plan_cells": 12,
    "plan_epsilon": 1.0,
    "plan_delta": 1e-6,
    "min_cell": 5,
}


def settings(**changes) -> PlanSettings:
    plan = check_plan_params(**{**PARAMS, **changes})
    assert plan is not None
    return plan


def cohort(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole-month times (many ties), two groups, some follow-up beyond the horizon."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 2, n)
    t = np.ceil(rng.exponential(np.where(group == 0, 30.0, 45.0)))
    c = np.ceil(rng.uniform(5, 90, n))
    return np.minimum(t, c), (t <= c).astype(np.int64), group


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"horizon": None}, "time_grid is required, or horizon"),
        ({"time_grid": (0.0, 1.0)}, "give either time_grid .* or horizon"),
        ({"horizon": -1.0}, "horizon must be a positive finite number"),
        ({"horizon": "60"}, "horizon must be a positive number"),
        ({"plan_cells": 0}, "plan_cells must lie between"),
        ({"plan_cells": True}, "plan_cells must be a positive integer"),
        ({"plan_epsilon": 0.0}, "plan_epsilon must be a positive finite number"),
        ({"plan_epsilon": float("inf")}, "plan_epsilon must be a positive finite number"),
        ({"plan_delta": 0.5}, "plan_delta must be below 0.01"),
        ({"plan_delta": None}, "plan_delta must be a positive number"),
        ({"min_cell": 0}, "min_cell must be a positive integer"),
        ({"min_cell": 5.0}, "min_cell must be a positive integer"),
    ],
)
def test_parameters_are_validated_naming_the_parameter(changes, message) -> None:
    with pytest.raises(ValidationError, match=message):
        check_plan_params(**{**PARAMS, **changes})


def test_explicit_grid_means_no_plan() -> None:
    assert check_plan_params(**{**PARAMS, "time_grid": (0.0, 1.0), "horizon": None}) is None


def test_plan_round_has_sensitivity_one_and_declares_calibrated_noise() -> None:
    s = settings()
    t, e, g = cohort(200)
    base = plan_contribution(t, e, g, 2, s)
    assert base.noise == {"plan_events": s.sigma, "plan_censored": s.sigma}
    assert s.sigma == pytest.approx(sigma_for(1.0, 1e-6))
    assert not base.count_arrays  # noisy arrays are protected by the noise
    ev, ce = base.arrays["plan_events"], base.arrays["plan_censored"]
    assert ev.shape == (2 * 12,) and ce.shape == (2 * 13,)
    assert ev.sum() + ce.sum() == t.size  # every patient in exactly one cell
    # one more patient (event or censored, any group, any time) moves one cell by 1
    for extra in ((3.0, 1, 0), (3.0, 0, 1), (75.0, 1, 1), (0.0, 1, 0)):
        more = plan_contribution(
            np.append(t, extra[0]), np.append(e, extra[1]), np.append(g, extra[2]), 2, s
        )
        diff = np.concatenate(
            [more.arrays[k] - base.arrays[k] for k in ("plan_events", "plan_censored")]
        )
        assert np.sum(diff**2) == 1.0


def noiseless_sums(t, e, g, n_groups, s) -> dict[str, np.ndarray]:
    c = plan_contribution(t, e, g, n_groups, s)
    return dict(c.arrays)


def test_plan_bins_respect_the_rule_and_the_grid_end() -> None:
    s = settings()
    t, e, g = cohort()
    ends, public = make_plan(noiseless_sums(t, e, g, 2, s), s, 2, shared=False)
    events = public["plan_events"].reshape(2, 12)
    for grp in range(2):
        starts = np.concatenate([[0], ends[grp][:-1]])
        for a, b in zip(starts, ends[grp], strict=True):
            assert events[grp, a:b].sum() >= 5 + Z_CELL * s.sigma * math.sqrt(b - a)
        grid = s.fine_edges[ends[grp]]
        d, n = planned_counts(t[g == grp], e[g == grp], None, [grid])
        assert cells_below(d, n, 5) == 0
        assert n[0, -1] >= 5  # patients followed beyond the grid's end
    shared, _ = make_plan(noiseless_sums(t, e, g, 2, s), s, 2, shared=True)
    assert np.array_equal(shared[0], shared[1])


def test_planned_counts_censor_at_the_grid_end() -> None:
    grid = np.array([10.0, 20.0])
    t = np.array([0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 99.0])
    e = np.array([1, 0, 1, 1, 0, 1, 1])
    d, n = planned_counts(t, e, None, [grid])
    assert d.tolist() == [[2.0, 1.0]]  # the events at 25 and 99 lie beyond the end
    assert n.tolist() == [[7.0, 4.0, 2.0]]  # at risk at 0, after 10, and beyond 20


def test_node_accepts_the_plan_and_refuses_a_tampered_one() -> None:
    s = settings()
    t, e, g = cohort()
    ends, public = make_plan(noiseless_sums(t, e, g, 2, s), s, 2, shared=True)
    grids = verify_plan(public, s, 2, shared=True)
    assert np.array_equal(grids[0], s.fine_edges[ends[0]])
    contribution = planned_contribution(t, e, g, grids, s, column="T")
    assert contribution.planned == {"events", "at_risk"} and contribution.planned_min == 5

    def refused(pub, match):
        with pytest.raises(PolicyError, match=match) as info:
            verify_plan(pub, s, 2, shared=True)
        assert info.value.rule == "planned_grid"

    not_the_plan = "not the plan of the noisy counts"
    every_cell = np.tile(np.arange(1.0, 13.0), (2, 1))  # a fine grid disguised as planned
    refused({**public, "plan_ends": every_cell}, not_the_plan)
    refused({**public, "plan_ends": public["plan_ends"][:, :1]}, not_the_plan)  # a sub-grid
    refused({**public, "plan_ends": np.array([[3.0, 12.0], [4.0, 12.0]])}, not_the_plan)
    refused({k: v for k, v in public.items() if k != "plan_censored"}, "missing or malformed")
    refused({**public, "plan_events": public["plan_events"] + 0.5}, "integers")
    # the grid may not run on where too few noisy patients remain at risk
    censored = public["plan_censored"].copy()
    censored[:, ends[0][-1] :] = 0
    events = public["plan_events"].copy()
    events[:, ends[0][-1] :] = 0
    refused({**public, "plan_censored": censored, "plan_events": events}, not_the_plan)
    # noisy counts that admit no plan at all
    refused({**public, "plan_events": np.zeros_like(events)}, "admit no plan")


def test_a_cohort_too_small_for_the_noise_is_a_clear_error() -> None:
    s = settings(plan_epsilon=0.05)
    t, e, _ = cohort(150)
    with pytest.raises(AlgorithmError, match="raise plan_epsilon"):
        make_plan(noiseless_sums(t, e, None, 1, s), s, 1, shared=False)


def test_within_bin_weights_are_shares_of_the_noisy_censorings() -> None:
    w = within_bin_weights(np.array([2, 5]), np.array([3.0, -1.0, 2.0, 2.0, 0.0, 9.0]))
    assert [x.tolist() for x in w] == [[1.0, 0.0], [0.5, 0.5, 0.0]]
    assert within_bin_weights(np.array([2]), np.array([-1.0, -2.0]))[0].tolist() == [0.5, 0.5]


def test_the_rule_uses_the_noise_actually_added() -> None:
    # each site's share of the noise has variance >= 1: with many sites and a large
    # epsilon the sum carries more noise than sigma, and the thresholds follow it
    s = settings(plan_epsilon=8.0)
    assert s.sigma < 1.0
    many = s.for_sites({"plan_sites": np.array([6.0])})
    assert many.noise_sd == pytest.approx(math.sqrt(6.0))
    assert many.bin_threshold(1) == pytest.approx(5 + Z_CELL * math.sqrt(6.0))
    assert settings().for_sites({"plan_sites": [3.0]}).noise_sd == settings().sigma
    with pytest.raises(PolicyError, match="number of sites"):
        s.for_sites({})


def test_one_cohort_one_plan_then_coarsenings_of_it():
    """KM, log-rank and Cox on one cohort share the first planned grid (default policy)."""
    from consortia import Simulation
    from consortia.data.synthetic import synthetic_cohort
    from consortia.survival import CoxPH, KaplanMeier, LogRank

    cohort = synthetic_cohort(n_sites=3, patients_per_site=300, expression=False, tiles=False)
    sim = Simulation({k: v.frame for k, v in cohort.sites().items()})
    groups = ("control", "treatment")
    km = sim.run(
        KaplanMeier(time="time", event="event", group="arm", groups=groups, horizon=2920.0)
    )
    grid = km.plan.grid
    assert km.cells_below_k == 0
    # a fresh plan on fresh noise would put its bin ends elsewhere: refused
    with pytest.raises(PolicyError, match="grid_differencing"):
        sim.run(LogRank(time="time", event="event", group="arm", groups=groups, horizon=2000.0))
    # planning within the released grid is a coarsening of it: allowed
    lr = sim.run(
        LogRank(
            time="time",
            event="event",
            group="arm",
            groups=groups,
            horizon=grid[-1],
            plan_cells=grid,
        )
    )
    assert set(lr.plan.grid) <= set(grid)
    cox = sim.run(
        CoxPH(time="time", event="event", covariates=("age",), horizon=grid[-1], plan_cells=grid)
    )
    assert set(cox.plan.grid) <= set(grid)
    with pytest.raises(ValidationError, match="must end at horizon"):
        KaplanMeier(time="time", event="event", horizon=grid[-1] + 1, plan_cells=grid)
