"""A node's disclosure policy, enforced before anything leaves the node.

The policy is checked twice for every round: before the algorithm runs
(:meth:`Policy.check_round`: is the algorithm allowed, are there enough peers;
:meth:`Policy.check_requirements`: what the algorithm declared of the step
against the dataset's size, so that a doomed step never computes) and on the
contribution it produced (:meth:`Policy.check_contribution`: cohort size,
small cells, parameters per sample).  A breach raises
:class:`~consortia.errors.PolicyError` naming the rule and its threshold, never
the offending value, and nothing is released.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from consortia.errors import PolicyError, ValidationError
from consortia.protocol import Contribution, Requirements, TrainingPlan

__all__ = ["Policy"]


@dataclass(frozen=True, kw_only=True)
class Policy:
    """Disclosure rules of one node for one dataset.

    Parameters
    ----------
    allowed_algorithms
        Algorithm names (shell-style patterns such as ``"stats.*"`` allowed) this
        dataset may be used by; ``("*",)`` allows every registered algorithm.
    min_cohort_size
        Smallest number of patients a contribution may be computed from.
    min_cell_count
        Smallest non-zero value allowed in an array declared as counts.
        Smallest non-zero cell of a count array.  Judged on the released *sum*:
        a count array that carries differential-privacy noise, or whose cells the
        algorithm planned at the level of the sum (``Contribution.planned``), is
        exempt from the per-site check; any other count array is checked at the
        site (the strict, conservative reading).
    min_sites
        Smallest number of *trusted* sites (this one included) a round may have.
        Only peers whose identity this node's owner pinned (or, if the owner turned
        trust on first use on, first saw) count; the hub cannot enrol sites that
        count.
    max_params_per_sample
        Largest ratio of model parameters to the contribution's cohort.
    max_refusals
        Refusals by data-dependent rules one researcher may receive on the
        dataset; beyond it, every study of theirs on it is refused.
    max_studies_per_day
        New studies one researcher may run on the dataset in any 24 hours.
    epsilon_budget, delta_budget
        The differential-privacy budget of each researcher on the dataset
        (basic composition over studies).
    allow_per_site
        Whether releases that put this site's values in a slot of their own (for
        example per-site concordance) are allowed.
    min_samples_per_round
        Training rules (judged on what a training step declares,
        :class:`~consortia.protocol.TrainingPlan`, before it runs): the fewest rows
        each local gradient step may average over (the declared batch size; the
        dataset's rows for a whole-split step; ``sample_rate`` times the rows for
        Poisson-sampled DP batches).  0: no minimum.
    require_clipping
        Whether a training study must bound each contribution to an update (a
        declared ``clip_norm``).
    require_dp
        Whether a training study must carry calibrated differential-privacy noise.
    max_rounds
        Most training rounds a study may declare; 0: no limit.
    """

    allowed_algorithms: tuple[str, ...] = ("*",)
    min_cohort_size: int = 10
    min_cell_count: int = 5
    min_sites: int = 3
    max_params_per_sample: float = 0.33
    max_refusals: int = 25
    max_studies_per_day: int = 1000
    epsilon_budget: float = 10.0
    delta_budget: float = 1e-4
    allow_per_site: bool = False
    min_samples_per_round: int = 0
    require_clipping: bool = False
    require_dp: bool = False
    max_rounds: int = 0

    def __post_init__(self) -> None:
        algos = self.allowed_algorithms
        if isinstance(algos, str):
            algos = (algos,)
        if not all(isinstance(a, str) and a for a in algos):
            raise ValidationError("Policy.allowed_algorithms must be a list of names")
        object.__setattr__(self, "allowed_algorithms", tuple(algos))
        for name in (
            "min_cohort_size",
            "min_cell_count",
            "min_sites",
            "max_refusals",
            "max_studies_per_day",
            "min_samples_per_round",
            "max_rounds",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError(f"Policy.{name} must be a non-negative integer")
        ratio = self.max_params_per_sample
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
            raise ValidationError("Policy.max_params_per_sample must be a positive number")
        for name in ("epsilon_budget", "delta_budget"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not np.isfinite(value)
                or value < 0
            ):
                raise ValidationError(f"Policy.{name} must be a finite number >= 0")
        if self.delta_budget >= 1:
            raise ValidationError("Policy.delta_budget must be below 1")
        for name in ("allow_per_site", "require_clipping", "require_dp"):
            if not isinstance(getattr(self, name), bool):
                raise ValidationError(f"Policy.{name} must be true or false")

    @classmethod
    def from_mapping(cls, obj: Mapping[str, Any]) -> Policy:
        """Build a policy from a mapping (for example a TOML table); unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        unknown = set(obj) - known
        if unknown:
            raise ValidationError(
                f"unknown policy setting(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**dict(obj))

    def to_mapping(self) -> dict[str, Any]:
        """Inverse of :meth:`from_mapping`."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["allowed_algorithms"] = list(self.allowed_algorithms)
        return out

    def allows(self, algorithm: str) -> bool:
        """Whether ``algorithm`` matches one of the allowed patterns."""
        return any(fnmatch.fnmatchcase(algorithm, pat) for pat in self.allowed_algorithms)

    def check_round(self, algorithm: str, n_sites: int) -> None:
        """Refuse a round of a disallowed algorithm or with too few (trusted) sites."""
        if not self.allows(algorithm):
            raise PolicyError(
                "allowed_algorithms",
                f"algorithm {algorithm!r} is not allowed on this dataset",
            )
        if n_sites < self.min_sites:
            raise PolicyError(
                "min_sites",
                f"a round needs at least {self.min_sites} participating sites that this "
                "node's owner trusts (pinned identities)",
            )

    def _cohort_error(self) -> PolicyError:
        return PolicyError(
            "min_cohort_size",
            f"a contribution must come from at least {self.min_cohort_size} patients",
        )

    def _parameters_error(self) -> PolicyError:
        return PolicyError(
            "max_params_per_sample",
            f"a model may have at most {self.max_params_per_sample} parameters per patient "
            "in this site's cohort",
        )

    def check_requirements(self, requirements: Requirements, n_rows: int) -> None:
        """Refuse, before anything is computed, a step that no cohort of the dataset can pass.

        Parameters
        ----------
        requirements
            What the algorithm declared of the step
            (:meth:`~consortia.protocol.Algorithm.requirements`).
        n_rows
            The dataset's row count: an upper bound on the cohort of any
            contribution, so every refusal here is one that
            :meth:`check_contribution` would make on the contribution (with the
            same rule and message).
        """
        if n_rows < self.min_cohort_size:
            raise self._cohort_error()
        n = requirements.n_parameters
        if n and n > self.max_params_per_sample * n_rows:
            raise self._parameters_error()
        if requirements.training is not None:
            self.check_training(requirements.training, n_rows)

    def check_training(self, plan: TrainingPlan, n_rows: int) -> None:
        """Refuse, before it runs, a training step that breaks a training rule.

        ``n_rows`` (the dataset's rows) bounds the rows of a whole-split step and of a
        Poisson-sampled batch, so a ``min_samples_per_round`` refusal here is certain.
        """
        if self.max_rounds and plan.rounds > self.max_rounds:
            raise PolicyError(
                "max_rounds",
                f"a training study may declare at most {self.max_rounds} rounds on this dataset",
            )
        if self.require_dp and not plan.dp:
            raise PolicyError(
                "require_dp",
                "training on this dataset must carry differential-privacy noise (a 'dp' option)",
            )
        if self.require_clipping and plan.clip_norm is None:
            raise PolicyError(
                "require_clipping",
                "training on this dataset must clip every contribution to an update (clip_norm)",
            )
        if self.min_samples_per_round:
            if plan.sample_rate is not None:
                rows = plan.sample_rate * n_rows
            elif plan.batch_rows is not None:
                rows = min(plan.batch_rows, n_rows)
            else:
                rows = n_rows
            if rows < self.min_samples_per_round:
                raise PolicyError(
                    "min_samples_per_round",
                    f"each local training step must average over at least "
                    f"{self.min_samples_per_round} rows",
                )

    def check_contribution(self, contribution: Contribution) -> None:
        """Refuse a contribution that breaks a cohort, cell or parameter rule."""
        cohort = contribution.cohort
        if cohort < self.min_cohort_size:
            raise self._cohort_error()
        if contribution.per_site and not self.allow_per_site:
            raise PolicyError(
                "allow_per_site",
                "this release would put the site's own values in a slot of their own; "
                "the data owner does not allow per-site releases",
            )
        if contribution.planned and contribution.planned_min < self.min_cell_count:
            raise PolicyError(
                "min_cell_count",
                f"the planned release promises cells of {contribution.planned_min}, "
                f"below this node's minimum of {self.min_cell_count}",
            )
        exempt = contribution.planned | frozenset(k for k, v in contribution.noise.items() if v > 0)
        for name in sorted(contribution.count_arrays - exempt):
            arr = contribution.arrays[name]
            small = (arr != 0) & (np.abs(arr) < self.min_cell_count)
            if np.any(small):
                raise PolicyError(
                    "min_cell_count",
                    f"count array {name!r} has non-zero cells below {self.min_cell_count}",
                )
        if contribution.n_parameters and (
            contribution.n_parameters > self.max_params_per_sample * cohort
        ):
            raise self._parameters_error()
