"""The site side of every runtime: policy first, then compute, encode and mask."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TypeVar

import numpy as np
import pandas as pd

from consortia.data.dataset import Dataset, as_dataset
from consortia.errors import (
    AlgorithmError,
    ConsortiaError,
    LocalStepError,
    PolicyError,
    SchemaError,
    ValidationError,
)
from consortia.privacy.disclosure import (
    DATA_DEPENDENT_RULES,
    DisclosureControl,
    ReleaseLedger,
    cohort_identities,
    content_digest,
    query_digest,
)
from consortia.privacy.dp import add_noise
from consortia.privacy.keys import PeerKey, SiteIdentity
from consortia.privacy.policy import Policy
from consortia.privacy.secagg import Ledger, MaskedContribution, Reveal, SecureSite
from consortia.protocol import Algorithm, Contribution, Requirements, algorithm_from_spec
from consortia.runtime.task import Task

__all__ = ["Prepared", "SiteWorker"]

log = logging.getLogger("consortia.site")

_ALGORITHM_CACHE = 64
_MISSING_SHOWN = 20  # missing columns named in an error, at most

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A task that passed every rule decidable before compute (:meth:`SiteWorker.prepare`)."""

    task: Task
    algo: Algorithm
    policy: Policy
    data: Dataset
    cost: tuple[float, float]
    admitted: bool
    """The study had already passed the budget and rate rules on this dataset."""
    epoch: int
    """How many releases and refusals the site had made when the task was judged."""


def _who(task: Task) -> dict[str, str]:
    return {"dataset": task.dataset, "study_id": task.study_id, "researcher": task.researcher}


def _guarded(algo: Algorithm, step: str, call: Callable[[], T]) -> T:
    """Run algorithm code; an unexpected failure becomes a :class:`LocalStepError`.

    consortia's own errors pass unchanged.  Anything else (numpy's out-of-memory
    error, a defect, public arrays of the wrong shape) is raised as a typed error
    naming the step and the exception's class only: its message may hold patient
    values.  It is raised outside the ``except`` block, so that it carries no
    reference to the original exception (whose frames may hold large arrays).
    """
    try:
        return call()
    except ConsortiaError:
        raise
    except Exception as exc:  # MemoryError included: the site lives on
        cause = "MemoryError" if isinstance(exc, MemoryError) else type(exc).__name__
        # the traceback only in this site's own debug log (it may show values)
        log.debug("local step %r of %s failed", step, algo.name, exc_info=True)
    raise LocalStepError(step, cause, algorithm=algo.name)


class SiteWorker:
    """One site: its datasets, its policy and its keys.

    The in-process simulation and the networked node both answer tasks through
    this class, so the policy, encoding and masking path is the same everywhere.

    Parameters
    ----------
    name
        The site's name in the federation.
    datasets
        Dataset name -> :class:`~consortia.data.Dataset` (or DataFrame).
    policies
        One :class:`~consortia.privacy.Policy` for every dataset, or a mapping
        dataset name -> policy (datasets not named get the default ``Policy()``).
    identity
        The site's private keys (generated if omitted).
    trusted
        Identity keys of the peers that this site's owner trusts, by site name.  A
        trusted peer must present exactly that identity; other peers may take part
        in a round (their keys are checked against their own signature) but do not
        count towards the policy's ``min_sites``.
    ledger
        Secure-aggregation records (in memory if omitted; a node persists them).
    releases
        The memory of past releases, privacy spend and refusals (in memory if
        omitted; a node persists it).  See :mod:`consortia.privacy.disclosure`.
    """

    def __init__(
        self,
        name: str,
        datasets: Mapping[str, Dataset | pd.DataFrame],
        *,
        policies: Policy | Mapping[str, Policy] | None = None,
        identity: SiteIdentity | None = None,
        trusted: Mapping[str, bytes] | None = None,
        ledger: Ledger | None = None,
        releases: ReleaseLedger | None = None,
    ) -> None:
        self.name = name
        self.datasets = {
            k: dataclasses.replace(as_dataset(v, name=k), site=name) for k, v in datasets.items()
        }
        self._policies = policies if policies is not None else Policy()
        self.identity = identity if identity is not None else SiteIdentity.generate()
        self.secure = SecureSite(
            name, self.identity, trusted=trusted or {}, ledger=ledger, allow_unknown=True
        )
        self.disclosure = DisclosureControl(releases)
        self._algorithms: dict[str, Algorithm] = {}
        self._identities: dict[str, np.ndarray] = {}
        self.lock = threading.RLock()
        """Held while the site's ledgers are read and written (never while a step computes)."""
        self._epoch = 0  # releases and refusals so far (see release())

    @property
    def peer_key(self) -> PeerKey:
        """This site's signed public masking key."""
        return self.identity.peer_key(self.name)

    def set_trusted(self, trusted: Mapping[str, bytes]) -> None:
        """Replace the identity keys of the peers this site's owner trusts."""
        self.secure.trusted = dict(trusted)

    def trusted_sites(self, participants: tuple[PeerKey, ...]) -> frozenset[str]:
        """The participants that count as trusted sites (this one included)."""
        trusted = self.secure.trusted or {}
        return frozenset(
            p.site
            for p in participants
            if (p.site == self.name and p.identity_key == self.identity.identity_public)
            or trusted.get(p.site) == p.identity_key
        )

    def _cohort(self, dataset: str, rows: np.ndarray | None) -> np.ndarray:
        ids = self._identities.get(dataset)
        if ids is None:
            ds = self.datasets[dataset]
            ids = self._identities[dataset] = cohort_identities(ds.frame, ds.id_column)
        if rows is None:
            return ids
        if rows.dtype == bool:
            if rows.size != ids.size:
                raise AlgorithmError("Contribution.rows: the boolean mask has the wrong length")
            return ids[rows]
        if rows.size and (rows.min() < 0 or rows.max() >= ids.size):
            raise AlgorithmError("Contribution.rows holds a position outside the dataset")
        return ids[rows]

    def _attribute(self, err: PolicyError) -> PolicyError:
        # a rule that depends on the data refuses without saying which site refused
        if err.rule in DATA_DEPENDENT_RULES:
            return PolicyError(err.rule, err.detail)
        return err.with_site(self.name)

    def policy_for(self, dataset: str) -> Policy:
        """The policy that governs ``dataset``."""
        if isinstance(self._policies, Policy):
            return self._policies
        return self._policies.get(dataset, Policy())

    def _algorithm(self, task: Task) -> Algorithm:
        # A study's algorithm never changes between its rounds: build it once per study
        # (specs can hold long public grids; re-parsing them every round is wasted work).
        algo = self._algorithms.pop(task.study_id, None)
        if algo is None:
            algo = algorithm_from_spec(task.algorithm)
        self._algorithms[task.study_id] = algo  # most recently used last
        while len(self._algorithms) > _ALGORITHM_CACHE:
            self._algorithms.pop(next(iter(self._algorithms)))
        return algo

    @staticmethod
    def _before_local(algo: Algorithm, step: str, policy: Policy, data: Dataset) -> None:
        """Judge what the algorithm declared of ``step`` before it computes anything.

        The dataset's row count bounds every cohort: a refusal here is certain, and
        a step that could never be released allocates nothing.
        """
        needs = _guarded(algo, step, lambda: algo.requirements(step))
        if needs is None:
            return
        if not isinstance(needs, Requirements):
            raise ValidationError(
                f"{type(algo).__name__}.requirements() returned {type(needs).__name__}, "
                "expected Requirements or None"
            )
        policy.check_requirements(needs, data.n_rows)
        columns = data.frame.columns
        missing = [c for c in needs.columns if c not in columns]
        if missing:
            more = len(missing) - _MISSING_SHOWN
            tail = f" and {more} more" if more > 0 else ""
            raise SchemaError(
                f"column(s) {missing[:_MISSING_SHOWN]}{tail} not found in the site's data"
            )

    def prepare(self, task: Task) -> Prepared:
        """Judge everything the policy can decide from the task alone; nothing is computed.

        The first of the three steps of :meth:`compute` (then :meth:`run_local` and
        :meth:`release`): the algorithm is allowed, the peers trusted, the declared
        parameters and columns fit the dataset, the researcher's budget and rates
        allow the study.  Judged under :attr:`lock`.

        Raises
        ------
        PolicyError
            A rule of the dataset's policy refused.
        LocalStepError
            The algorithm's declared requirements could not be read.
        """
        with self.lock:
            if task.dataset not in self.datasets:
                raise ValidationError(
                    f"site {self.name!r} has no dataset {task.dataset!r} "
                    f"(it has: {sorted(self.datasets)})"
                )
            self.secure.verify(task.participants)
            policy = self.policy_for(task.dataset)
            algo = self._algorithm(task)
            data = self.datasets[task.dataset]
            prepared = Prepared(
                task=task,
                algo=algo,
                policy=policy,
                data=data,
                cost=algo.privacy_cost(),
                admitted=self.disclosure.admitted(task.dataset, task.study_id, task.researcher),
                epoch=self._epoch,
            )
            with self._refusing(prepared):
                policy.check_round(algo.name, len(self.trusted_sites(task.participants)))
                self.disclosure.before_compute(
                    policy=policy,
                    cost=prepared.cost,
                    dataset=task.dataset,
                    study_id=task.study_id,
                    researcher=task.researcher,
                )
                self._before_local(algo, task.step, policy, data)
        return prepared

    def run_local(self, prepared: Prepared) -> Contribution:
        """Run the algorithm's :meth:`~consortia.protocol.Algorithm.local` step (no lock held).

        This is the long part of a task (model training, a genome-wide screen): a
        node runs several at once, each between its :meth:`prepare` and its
        :meth:`release`.

        Raises
        ------
        LocalStepError
            The local step failed unexpectedly (out of memory, for example); the
            message names the step and the exception's class, never its message.
        """
        task, algo = prepared.task, prepared.algo
        try:
            contribution = _guarded(
                algo, task.step, lambda: algo.local(task.step, task.public, prepared.data)
            )
        except LocalStepError:
            # whether a step fails may depend on the data: it counts like a refusal
            with self.lock:
                self._refused("LocalStepError", task)
            raise
        if not isinstance(contribution, Contribution):
            raise ValidationError(
                f"{type(algo).__name__}.local() returned {type(contribution).__name__}, "
                "expected a Contribution"
            )
        return contribution

    def release(self, prepared: Prepared, contribution: Contribution) -> Contribution:
        """Judge the computed contribution and remember its release (under :attr:`lock`).

        When another task of this site was released or refused since ``prepared``
        was judged (tasks computed at once), the budget and rate rules of a study
        not yet admitted are judged again, against what was released meanwhile.

        Raises
        ------
        PolicyError
            A rule of the dataset's policy refused (nothing was released).
        """
        task, policy = prepared.task, prepared.policy
        with self.lock:
            with self._refusing(prepared):
                if not prepared.admitted and prepared.epoch != self._epoch:
                    self.disclosure.before_compute(
                        policy=policy,
                        cost=prepared.cost,
                        again=True,
                        dataset=task.dataset,
                        study_id=task.study_id,
                        researcher=task.researcher,
                    )
                policy.check_contribution(contribution)
                # exact binned counts are tied to their grid; noisy ones are not
                exact = contribution.count_arrays - frozenset(
                    k for k, v in contribution.noise.items() if v > 0
                )
                bins = dict(contribution.bins) if exact else {}
                cohort = self.disclosure.check_release(
                    policy=policy,
                    dataset=task.dataset,
                    cohort=self._cohort(task.dataset, contribution.rows),
                    bins=bins,
                )
            self.disclosure.released(
                query=query_digest(task.algorithm, task.dataset),
                content=content_digest(contribution.arrays),
                participants=frozenset(p.site for p in task.participants),
                cohort=cohort,
                cost=prepared.cost,
                bins=bins,
                round_index=task.round_index,
                attempt=task.attempt,
                **_who(task),
            )
            self._epoch += 1
        return contribution

    @contextlib.contextmanager
    def _refusing(self, prepared: Prepared) -> Iterator[None]:
        """A policy refusal (or a failed requirements step) is remembered, then raised."""
        try:
            yield
        except PolicyError as err:
            self._refused(err.rule, prepared.task)
            raise self._attribute(err) from None
        except LocalStepError:
            self._refused("LocalStepError", prepared.task)
            raise

    def _refused(self, rule: str, task: Task) -> None:
        self.disclosure.refused(rule=rule, **_who(task))
        self._epoch += 1

    def compute(self, task: Task) -> Contribution:
        """Check the policy and compute the (unmasked) contribution; nothing leaves.

        Everything the policy can judge from the task (algorithm, trusted peers,
        declared parameters and columns against the dataset) is judged before the
        algorithm's :meth:`~consortia.protocol.Algorithm.local` runs; the
        contribution is judged after (:meth:`prepare`, :meth:`run_local`,
        :meth:`release`).

        Raises
        ------
        PolicyError
            A rule of the dataset's policy refused (nothing was released).
        LocalStepError
            The local step failed unexpectedly (out of memory, for example); the
            message names the step and the exception's class, never its message.
        """
        prepared = self.prepare(task)
        return self.release(prepared, self.run_local(prepared))

    def budget(self, task: Task) -> dict[str, float | str] | None:
        """The researcher's privacy spend and caps on the task's dataset (None: exact study)."""
        with self.lock:
            if self._algorithm(task).privacy_cost() == (0.0, 0.0):
                return None
            policy = self.policy_for(task.dataset)
            eps, dlt = self.disclosure.ledger.spent(task.researcher, task.dataset)
        return {
            "researcher": task.researcher,
            "dataset": task.dataset,
            "epsilon_spent": eps,
            "epsilon_cap": float(policy.epsilon_budget),
            "delta_spent": dlt,
            "delta_cap": float(policy.delta_budget),
        }

    def contribute(self, task: Task) -> MaskedContribution:
        """Answer a task: policy, compute, encode and mask.  Only the masked vector leaves.

        In an attempt that shares seeds (3 or more participants, see
        :mod:`consortia.privacy.recovery`) the contribution carries this site's seed
        shares, encrypted to its peers.
        """
        return self.mask(task, self.compute(task))

    def mask(self, task: Task, contribution: Contribution) -> MaskedContribution:
        """Encode and mask a released contribution (its seed recorded in the ledger)."""
        arrays = contribution.arrays
        if contribution.noise:  # this site's share of the sum's DP noise, before masking
            arrays = add_noise(arrays, contribution.noise, len(task.participants))
        with self.lock:
            return self.secure.mask(task.context, arrays)

    def reveal(self, task: Task) -> bytes:
        """Release the self-mask seed of the task's attempt (once every vector is in).

        This is when the attempt's sum becomes computable: the release is judged
        against what this dataset revealed before over other sets of sites.
        """
        with self.lock:
            try:
                self.disclosure.before_reveal(task.study_id, task.round_index, task.attempt)
            except PolicyError as err:
                raise self._attribute(err) from None
            return self.secure.reveal(task.context)

    def reveal_and_share(
        self,
        task: Task,
        missing: Collection[str] = (),
        shares: Mapping[str, bytes] | None = None,
    ) -> Reveal:
        """Release the task attempt's seed, and this site's shares of the missing seeds.

        Parameters
        ----------
        task
            The attempt whose every vector is in the sum.
        missing
            Participants whose vector is in the sum but whose seed the hub lacks.
        shares
            Missing peer -> the ciphertext it sent with its vector, addressed to
            this site (``SeedShares.ciphertexts[this site]``).

        The request is checked in full (:meth:`SecureSite.reveal_and_share
        <consortia.privacy.secagg.SecureSite.reveal_and_share>`) before the
        disclosure rules run and anything is released.
        """
        ctx = task.context
        with self.lock:
            if missing:  # refuse a bad request before the disclosure ledger is touched
                self.secure.check_share_request(ctx, missing, shares)
            try:
                self.disclosure.before_reveal(task.study_id, task.round_index, task.attempt)
            except PolicyError as err:
                raise self._attribute(err) from None
            return self.secure.reveal_and_share(ctx, missing, shares)
