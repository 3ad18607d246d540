"""Public time grids: validation, mapping of times, counts per grid point."""

from __future__ import annotations

import numpy as np
import pytest

from consortia.errors import SchemaError, ValidationError
from consortia.survival._grid import (
    Grid,
    administrative_censoring,
    day_grid,
    grid_counts,
    grid_index,
    grid_map,
    grid_param,
    quantile_grid,
    regular_grid,
    round_up_to_grid,
    validate_grid,
)


def test_validate_grid_accepts_increasing_non_negative_times() -> None:
    g = validate_grid([0, 1.5, 3])
    assert g.dtype == np.float64 and list(g) == [0.0, 1.5, 3.0]
    assert not g.flags.writeable


@pytest.mark.parametrize(
    ("grid", "rule"),
    [
        ([], "non-empty"),
        ([[0, 1]], "one-dimensional"),
        ([0, np.nan], "finite"),
        ([0, np.inf], "finite"),
        ([-1, 0], "non-negative"),
        ([0, 2, 2], "strictly increasing"),
        ([3, 1], "strictly increasing"),
        ("0,1", "sequence of numbers"),
        (["a", "b"], "sequence of numbers"),
    ],
)
def test_validate_grid_rejects_bad_grids(grid: object, rule: str) -> None:
    with pytest.raises(ValidationError, match=rf"time_grid.*{rule}"):
        validate_grid(grid)  # type: ignore[arg-type]


def test_grid_index_rounds_up() -> None:
    g = validate_grid([0, 10, 20])
    idx = grid_index([0, 0.5, 10, 10.01, 20], g)
    assert idx.tolist() == [0, 1, 1, 2, 2]
    assert round_up_to_grid([0.5, 19], g).tolist() == [10.0, 20.0]


def test_time_beyond_grid_is_censored_at_its_end_not_refused() -> None:
    # a refusal would be an oracle: one-point grids would binary-search a follow-up
    assert grid_index([3.0, 20.5], [0, 10, 20], column="T").tolist() == [1, 2]
    idx, e = grid_map([3.0, 20.0, 20.5, 99.0], [1, 1, 1, 0], [0, 10, 20])
    assert idx.tolist() == [1, 2, 2, 2]
    assert e.tolist() == [1, 1, 0, 0]  # the event beyond the grid becomes a censoring
    t, e = administrative_censoring([3.0, 20.0, 20.5], [1, 1, 1], 20.0)
    assert t.tolist() == [3.0, 20.0, 20.0] and e.tolist() == [1, 1, 0]
    # exact mode: times beyond the grid are censored, not "off the grid"
    assert grid_index([2, 7.5], [0, 1, 2], exact=True).tolist() == [2, 2]


def test_grid_index_exact_mode_refuses_off_grid_times() -> None:
    assert grid_index([1, 2], [0, 1, 2], exact=True).tolist() == [1, 2]
    with pytest.raises(SchemaError, match=r"column 'days' has times that are not points"):
        grid_index([1.5], [0, 1, 2], column="days", exact=True)


def test_grid_index_refuses_nan() -> None:
    with pytest.raises(SchemaError, match=r"column 'T' contains missing"):
        grid_index([np.nan], [0, 1], column="T")


def test_grid_counts_events_and_at_risk_per_code() -> None:
    idx = np.array([0, 1, 1, 2, 2, 2])
    ev = np.array([1, 0, 1, 1, 1, 0])
    codes = np.array([0, 0, 1, 1, 0, 1])
    events, at_risk = grid_counts(idx, ev, 3, codes, 2)
    assert events.tolist() == [[1, 0, 1], [0, 1, 1]]
    assert at_risk.tolist() == [[3, 2, 1], [3, 3, 2]]


def test_regular_day_and_quantile_grids() -> None:
    assert regular_grid(100, 30) == (0.0, 30.0, 60.0, 90.0, 120.0)
    assert regular_grid(90, 30) == (0.0, 30.0, 60.0, 90.0)
    assert day_grid(3.2) == (0.0, 1.0, 2.0, 3.0, 4.0)
    q = quantile_grid(np.arange(1, 101), 4, stop=150, decimals=0)
    assert q == (26.0, 51.0, 76.0, 100.0, 150.0)
    with pytest.raises(ValidationError, match="width must be positive"):
        regular_grid(10, 0)
    with pytest.raises(ValidationError, match="n_points"):
        quantile_grid([1.0, 2.0], 0)


def test_exact_counts_declare_their_grid_where_the_protocol_can() -> None:
    import dataclasses

    from consortia.protocol import Contribution
    from consortia.survival._grid import binned_on

    kwargs = binned_on("T", np.array([0, 10, 20]))
    if "bins" in {f.name for f in dataclasses.fields(Contribution)}:
        assert kwargs == {"bins": {"T": (0.0, 10.0, 20.0)}}
        declared = Contribution({"a": [5.0]}, cohort=20, **kwargs).bins["T"]
        np.testing.assert_array_equal(declared, [0.0, 10.0, 20.0])
    else:  # a protocol without Contribution.bins: nothing to declare
        assert kwargs == {}


@pytest.mark.parametrize(
    ("start", "stop", "step", "explicit"),
    [
        (0, 200_000, 1, np.arange(0, 200_001, 1.0)),
        (0, 3650, 30, np.arange(0, 3651, 30.0)),  # 3650 is not on the grid: 3630 ends it
        (1, 10, 0.5, np.arange(1, 10.5, 0.5)),
        (0, 0.3, 0.1, np.arange(0, 0.35, 0.1)),  # numpy's 0.30000000000000004 ends it
        (0.5, 0.5, 1, np.array([0.5])),
        (0, 10, 3, np.arange(0, 11, 3.0)),
    ],
)
def test_a_regular_grid_is_the_explicit_numpy_arange_grid(start, stop, step, explicit) -> None:
    grid = Grid(start, stop, step)
    assert grid == tuple(explicit.tolist())  # numpy.arange's own values, bit for bit
    assert grid_param(grid) is grid
    assert grid_param(grid.to_params()) == grid_param(explicit) == grid
    assert grid_param(explicit) == tuple(explicit.tolist())
    assert grid[-1] <= stop + 1e-9 * step and grid[0] == start
    assert len(Grid(0, 200_000, 1)) == 200_001


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"start": 0, "stop": 10}, "exactly the keys start, stop, step"),
        ({"start": 0, "stop": 10, "step": 1, "n": 3}, "exactly the keys"),
        ({"start": -1, "stop": 10, "step": 1}, "0 <= start <= stop"),
        ({"start": 5, "stop": 1, "step": 1}, "0 <= start <= stop"),
        ({"start": 0, "stop": 10, "step": 0}, "step must be positive"),
        ({"start": 0, "stop": 10, "step": "1"}, "step must be a number"),
        ({"start": 0, "stop": 10, "step": True}, "step must be a number"),
        ({"start": 0, "stop": 1e300, "step": 1}, "more than"),
        ({"start": 0, "stop": 2e6, "step": 1}, "more than"),
        ({"start": 1e300, "stop": 1e300, "step": 1e-300}, "too small"),
    ],
)
def test_a_malformed_regular_grid_is_refused_naming_the_parameter(params, words) -> None:
    with pytest.raises(ValidationError, match=words) as e:
        grid_param(params, name="time_grid")
    assert "time_grid" in str(e.value)


def test_a_regular_grid_gives_the_same_estimates_and_a_three_number_spec() -> None:
    import pickle

    import pandas as pd

    from consortia import Policy, Simulation
    from consortia.protocol import algorithm_from_spec
    from consortia.survival import KaplanMeier, LogRank

    rng = np.random.default_rng(3)
    sites = {}
    for i in range(3):
        t = np.ceil(rng.exponential(200.0, 80))
        c = np.ceil(rng.uniform(1, 400, 80))
        arm = rng.choice(["a", "b"], 80)
        sites[f"s{i}"] = pd.DataFrame(
            {"T": np.minimum(t, c), "E": (t <= c).astype(int), "arm": arm}
        )
    open_policy = Policy(min_cell_count=1)
    for make in (
        lambda g: KaplanMeier(time="T", event="E", time_grid=g),
        lambda g: LogRank(time="T", event="E", group="arm", groups=("a", "b"), time_grid=g),
    ):
        regular, explicit = make(Grid(0, 400, 5)), make(list(np.arange(0, 401, 5.0)))
        assert regular == explicit
        spec = regular.spec()
        assert spec["params"]["time_grid"] == {"start": 0.0, "stop": 400.0, "step": 5.0}
        assert algorithm_from_spec(spec) == explicit
        assert pickle.loads(pickle.dumps(regular)) == regular
        a = Simulation(sites, policy=open_policy).run(regular)
        b = Simulation(sites, policy=open_policy).run(explicit)
        if isinstance(regular, KaplanMeier):
            np.testing.assert_array_equal(a["all"].survival, b["all"].survival)
            np.testing.assert_array_equal(a["all"].timeline, b["all"].timeline)
        else:
            for field in ("observed", "expected", "variance"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
