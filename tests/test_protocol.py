from dataclasses import dataclass

import numpy as np
import pytest

from consortia import Contribution, Round
from consortia.errors import ProtocolError, UnknownAlgorithmError, ValidationError
from consortia.protocol import (
    Algorithm,
    Coordinator,
    algorithm_from_spec,
    get_algorithm,
    registered_algorithms,
)
from consortia.stats import Mean


@dataclass(frozen=True, kw_only=True)
class Doubling(Algorithm):
    name = "test.doubling"
    rounds: int = 3

    def coordinate(self):
        value = np.array([1.0])
        trail = []
        for _ in range(self.rounds):
            sums = yield Round("step", {"value": value})
            value = sums["value"] * 2
            trail.append(float(value[0]))
        return trail

    def local(self, step, public, data):
        return Contribution({"value": public["value"]}, cohort=10)


def test_coordinator_drives_and_replays():
    coord = Coordinator(Doubling())
    history = []
    while not coord.done:
        sums = {"value": coord.current.public["value"] + 1}
        history.append(sums)
        coord.advance(sums)
    assert coord.result == [4.0, 10.0, 22.0]
    again = Coordinator.replay(Doubling(), history)
    assert again.done and again.result == coord.result
    partial = Coordinator.replay(Doubling(), history[:2])
    assert not partial.done and partial.round_index == 2
    np.testing.assert_array_equal(partial.current.public["value"], [10.0])
    with pytest.raises(ProtocolError, match="already finished"):
        coord.advance({"value": [0.0]})


def test_coordinator_without_history_keeps_counting():
    coord = Coordinator(Doubling(), keep_history=False)
    while not coord.done:
        coord.advance({"value": coord.current.public["value"] + 1})
    assert coord.result == [4.0, 10.0, 22.0]
    assert coord.history == [] and coord.round_index == 3


def test_coordinator_bounds_rounds():
    with pytest.raises(ProtocolError, match="bound of 2 rounds"):
        Coordinator.replay(Doubling(rounds=5), [{"value": [1.0]}] * 3, max_rounds=2)


def test_registry_and_specs():
    assert get_algorithm("stats.mean") is Mean
    assert "stats.mean" in registered_algorithms()
    m = Mean(columns=["a", "b"])
    spec = m.spec()
    assert spec["name"] == "stats.mean" and spec["params"]["columns"] == ["a", "b"]
    assert algorithm_from_spec(spec) == m
    with pytest.raises(UnknownAlgorithmError, match="no algorithm is registered under 'nope'"):
        get_algorithm("nope")
    with pytest.raises(ValidationError, match="bad parameters for algorithm 'stats.mean'"):
        algorithm_from_spec({"name": "stats.mean", "params": {"colums": ["a"]}})


def test_round_and_contribution_validation():
    with pytest.raises(ValidationError, match="public array 'b' contains NaN"):
        Round("s", {"b": [np.nan]})
    with pytest.raises(ValidationError, match="non-empty identifier"):
        Round("s", {"a-b": [1.0]})
    with pytest.raises(ValidationError, match="contribution array 'x' is not numeric"):
        Contribution({"x": ["a"]}, cohort=3)
    with pytest.raises(ValidationError, match="count_arrays names arrays"):
        Contribution({"x": [1.0]}, cohort=3, count_arrays=frozenset({"y"}))
    with pytest.raises(ValidationError, match="cohort must be a non-negative integer"):
        Contribution({"x": [1.0]}, cohort=-1)
    c = Contribution({"x": [1, 2]}, cohort=2)
    assert c.arrays["x"].dtype == np.float64 and not c.arrays["x"].flags.writeable


def test_a_fresh_float_array_is_taken_over_read_only_and_anything_else_is_copied():
    """No payload-sized copy of a fresh result, and no silent aliasing of a writable one."""
    import pandas as pd

    fresh = np.arange(6, dtype=np.float64)
    c = Contribution({"v": fresh}, cohort=6)
    assert np.shares_memory(c.arrays["v"], fresh)  # taken over, not copied
    with pytest.raises(ValueError, match="read-only"):
        fresh[0] = 99.0  # the caller can no longer change what the node checks and sends
    assert not c.arrays["v"].flags.writeable
    base = np.arange(6, dtype=np.float64)
    frame = pd.DataFrame({"x": np.arange(4, dtype=np.float64)})
    column = frame["x"].to_numpy()
    for given in (base[:], base.reshape(2, 3).T, column, np.arange(3), [1.0, 2.0]):
        c = Contribution({"v": given}, cohort=6)
        assert not c.arrays["v"].flags.writeable
        if isinstance(given, np.ndarray):
            assert not np.shares_memory(c.arrays["v"], given)  # views are copied
            assert given.flags.writeable  # and left writable
    before = c.arrays["v"].copy()
    column[0] = -1.0  # writing to the caller's view changes nothing that was taken
    np.testing.assert_array_equal(c.arrays["v"], before)
    bad = np.array([1.0, np.nan])
    with pytest.raises(ValidationError, match="NaN"):
        Contribution({"v": bad}, cohort=2)
    assert bad.flags.writeable  # a refused array is not taken
