import itertools

import numpy as np
import pandas as pd
import pytest

from consortia import Contribution, Policy, PolicyError, Simulation
from consortia.errors import ValidationError
from consortia.protocol import Requirements
from consortia.stats import LinearRegression


def test_defaults_match_the_documented_rules():
    p = Policy()
    assert (p.min_cohort_size, p.min_cell_count, p.min_sites) == (10, 5, 3)
    assert p.max_params_per_sample == 0.33
    assert p.allowed_algorithms == ("*",)


@pytest.mark.parametrize(
    ("contribution", "rule", "value"),
    [
        (Contribution({"n": [9]}, cohort=9), "min_cohort_size", "9"),
        (
            Contribution({"c": [0, 7, 3]}, cohort=50, count_arrays=frozenset({"c"})),
            "min_cell_count",
            "3",
        ),
        (
            Contribution({"beta": np.zeros(20)}, cohort=50, n_parameters=20),
            "max_params_per_sample",
            "20",
        ),
    ],
)
def test_contribution_rules_name_the_rule_not_the_value(contribution, rule, value):
    with pytest.raises(PolicyError, match=f"policy rule '{rule}'") as info:
        Policy().check_contribution(contribution)
    assert info.value.rule == rule
    assert value not in str(info.value)  # the message never carries the offending value


def test_cells_at_threshold_and_zero_pass():
    Policy().check_contribution(
        Contribution({"c": [0, 5, 12]}, cohort=17, count_arrays=frozenset({"c"}))
    )
    Policy().check_contribution(Contribution({"b": np.zeros(3)}, cohort=10, n_parameters=3))


def test_round_rules():
    p = Policy(allowed_algorithms=("stats.*",), min_sites=4)
    p.check_round("stats.mean", 4)
    with pytest.raises(PolicyError, match="'allowed_algorithms'.*survival.cox") as info:
        p.check_round("survival.cox", 5)
    assert info.value.rule == "allowed_algorithms"
    with pytest.raises(PolicyError, match="min_sites.*at least 4"):
        p.check_round("stats.mean", 3)


def test_policy_from_mapping_validates():
    p = Policy.from_mapping({"min_cohort_size": 20, "allowed_algorithms": ["stats.mean"]})
    assert p.min_cohort_size == 20 and p.allowed_algorithms == ("stats.mean",)
    assert Policy.from_mapping(p.to_mapping()) == p
    with pytest.raises(ValidationError, match="unknown policy setting"):
        Policy.from_mapping({"min_cohort": 3})
    with pytest.raises(ValidationError, match="min_sites must be a non-negative integer"):
        Policy(min_sites=-1)
    with pytest.raises(ValidationError, match="max_params_per_sample"):
        Policy(max_params_per_sample=0)


def _refusal(check, *args) -> tuple[str, str] | None:
    try:
        check(*args)
    except PolicyError as err:
        return (err.rule, str(err))
    return None


@pytest.mark.parametrize(
    "policy", [Policy(), Policy(min_cohort_size=25, max_params_per_sample=0.1)]
)
def test_a_refusal_before_compute_is_one_the_contribution_would_get(policy):
    """The rows bound every cohort: the pre-check refuses exactly what the contribution
    on every row of the dataset (the largest cohort possible) would be refused, with the
    same rule and message; a smaller cohort can only be refused more often."""
    messages: dict[str, set[str]] = {}
    for n_rows, n_params in itertools.product(range(0, 80), range(0, 30)):
        largest = Contribution({"b": [0.0]}, cohort=n_rows, n_parameters=n_params)
        early = _refusal(policy.check_requirements, Requirements(n_params), n_rows)
        assert early == _refusal(policy.check_contribution, largest)
        if early is not None:
            messages.setdefault(early[0], set()).add(early[1])
    assert set(messages) == {"min_cohort_size", "max_params_per_sample"}
    # one message per rule, whatever the rows and parameters: it carries neither
    assert all(len(m) == 1 for m in messages.values())


def test_probing_the_row_count_through_parameter_counts_is_bounded_by_max_refusals():
    """An attacker bisecting a site's row count with ever wider models: each early refusal
    counts as a data-dependent refusal, so the probing stops at ``max_refusals``."""
    rng = np.random.default_rng(3)
    sites = {
        f"s{i}": pd.DataFrame(rng.normal(size=(n, 40)), columns=[f"c{j}" for j in range(40)])
        for i, n in enumerate((30, 45, 50))
    }
    sim = Simulation(sites, policy=Policy(max_refusals=2))

    def probe(k: int) -> str:
        cols = tuple(f"c{j}" for j in range(1, k + 1))
        try:
            sim.run(LinearRegression(outcome="c0", covariates=cols))
        except PolicyError as err:
            return err.rule
        return "released"

    assert probe(20) == "max_params_per_sample"  # 21 > 0.33 * 30 rows
    assert probe(12) == "max_params_per_sample"
    # the oracle is closed: a model the rows would support is refused too
    assert probe(2) == "max_refusals"
    assert probe(2) == "max_refusals"
