import numpy as np
import pytest

from consortia import Contribution, Policy, PolicyError
from consortia.errors import ValidationError


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
