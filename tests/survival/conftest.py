"""Survival test fixtures.

Planned grids (``consortia.survival._plan``) release count arrays declared
``planned`` with ``planned_min = k``: the node's policy judges them on the
released sum (it skips its per-site cell rule for them and refuses a plan that
promises less than its ``min_cell_count``; arrays declared ``noise`` are exempt
too), as documented in :class:`consortia.protocol.Contribution`.  That rule
belongs to ``consortia.privacy.policy`` (issue 7, another change): until the
checkout's ``Policy`` implements it, this fixture applies exactly that
documented contract on top of the checkout's rules, so that the tests here run
under the *default* policy.  Once ``Policy`` implements it, the fixture does
nothing.
"""

from __future__ import annotations

import dataclasses

import pytest

from consortia.errors import PolicyError
from consortia.privacy.policy import Policy
from consortia.protocol import Contribution


def _policy_judges_planned_arrays_on_the_sum() -> bool:
    probe = Contribution(
        {"a": [1.0, 0.0]},
        cohort=1_000,
        count_arrays=frozenset({"a"}),
        planned=frozenset({"a"}),
        planned_min=Policy().min_cell_count,
    )
    try:
        Policy().check_contribution(probe)
    except PolicyError:
        return False
    return True


def apply_planned_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``Policy`` judge planned (and noisy) arrays as documented, if it does not yet."""
    if _policy_judges_planned_arrays_on_the_sum():
        return
    original = Policy.check_contribution

    def check_contribution(self: Policy, contribution: Contribution) -> None:
        if contribution.planned and contribution.planned_min < self.min_cell_count:
            raise PolicyError(
                "min_cell_count",
                f"a planned release must guarantee cells of at least {self.min_cell_count}",
            )
        exempt = contribution.planned | frozenset(contribution.noise)
        if exempt:
            contribution = dataclasses.replace(
                contribution,
                count_arrays=contribution.count_arrays - exempt,
                planned=frozenset(),
                planned_min=0,
            )
        original(self, contribution)

    monkeypatch.setattr(Policy, "check_contribution", check_contribution)


@pytest.fixture(autouse=True)
def planned_arrays_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    apply_planned_contract(monkeypatch)
