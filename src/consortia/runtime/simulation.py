"""The in-process federation: every site in one process, the full privacy path.

There is no shortcut: each round, every site checks its policy, computes,
encodes and masks its contribution through :class:`SiteWorker`; a
:class:`~consortia.privacy.SecureAggregator` adds the masked vectors; the
sites reveal their self-mask seeds only once every vector is in.  The networked
hub and node run exactly the same code over HTTP.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from consortia.data.dataset import Dataset
from consortia.errors import PolicyError, SiteFailure, StudyFailed, ValidationError
from consortia.privacy.fixedpoint import FixedPoint
from consortia.privacy.policy import Policy
from consortia.privacy.recovery import SeedShares
from consortia.privacy.secagg import SecureAggregator
from consortia.protocol import Algorithm, Coordinator, Round
from consortia.runtime.rounds import (
    Phase,
    Refused,
    RevealReceived,
    RoundState,
    SharesReceived,
    SitesSilent,
    VectorReceived,
    apply,
)
from consortia.runtime.site import SiteWorker
from consortia.runtime.task import Task

__all__ = ["Simulation"]

FailureHook = Callable[[str, int, int], bool]
"""``(site, round_index, attempt) -> True`` to make that site fail that attempt."""


class Simulation:
    """Run federated studies in process, with secure aggregation and node policies.

    Parameters
    ----------
    sites
        Site name -> its private data (a DataFrame or a :class:`~consortia.data.Dataset`).
    policy
        The policy every site applies, or a mapping site name -> policy.
    dataset
        The name under which each site holds its data.
    precision
        The fixed-point codec (default 24 fractional bits).
    fail
        Optional fault injection: ``fail(site, round_index, attempt)`` returning
        True makes that site drop out of that attempt (and of the rest of the study).
    fail_at_reveal
        Optional fault injection at the reveal: ``fail_at_reveal(site, round_index,
        attempt)`` returning True makes that site fall silent after its vector
        reached the aggregator and before it revealed its seed.  The survivors then
        rebuild its seed from their shares (when at least the attempt's threshold
        of them remain, see :mod:`consortia.privacy.recovery`).
    recovery
        Seed-recovery setting of every attempt: None for a majority threshold, 0
        for none, else the threshold.
    progress
        Optional callback ``progress(round_index, step)`` called at every round.
    researcher
        Who asks (each site's memory of releases, privacy budget and refusals is
        kept per researcher, as at a node).

    Notes
    -----
    Each site remembers what it released across the studies of one
    ``Simulation`` (as a node does across studies): asking the same query over
    another set of sites, or over a cohort a few patients different, is refused
    (see :mod:`consortia.privacy.disclosure`).

    Examples
    --------
    >>> sim = Simulation({"a": df_a, "b": df_b, "c": df_c})  # doctest: +SKIP
    >>> result = sim.run(LinearRegression(outcome="y", covariates=("x",)))  # doctest: +SKIP
    """

    aggregator_cls: type[SecureAggregator] = SecureAggregator

    def __init__(
        self,
        sites: Mapping[str, Dataset | pd.DataFrame],
        *,
        policy: Policy | Mapping[str, Policy] | None = None,
        dataset: str = "data",
        precision: FixedPoint | None = None,
        fail: FailureHook | None = None,
        fail_at_reveal: FailureHook | None = None,
        recovery: int | None = None,
        progress: Callable[[int, str], None] | None = None,
        researcher: str = "local",
    ) -> None:
        if not sites:
            raise ValidationError("a Simulation needs at least one site")
        names = list(sites)
        if any(not isinstance(n, str) or not n for n in names):
            raise ValidationError("site names must be non-empty strings")
        self.dataset = dataset
        self.precision = precision or FixedPoint()
        self.fail = fail
        self.fail_at_reveal = fail_at_reveal
        self.recovery = recovery
        self.progress = progress
        self.researcher = researcher
        self.workers: dict[str, SiteWorker] = {}
        for name in names:
            site_policy = policy.get(name, Policy()) if isinstance(policy, Mapping) else policy
            self.workers[name] = SiteWorker(name, {dataset: sites[name]}, policies=site_policy)
        trusted = {n: w.identity.identity_public for n, w in self.workers.items()}
        for w in self.workers.values():
            w.set_trusted(trusted)
        self._counter = itertools.count()
        self.last_study: dict[str, Any] = {}

    @property
    def sites(self) -> list[str]:
        """Site names."""
        return list(self.workers)

    def run(self, algorithm: Algorithm) -> Any:
        """Run ``algorithm`` to completion across the sites and return its result.

        Raises
        ------
        PolicyError
            If a site's policy refused a round (the error names the rule and site).
        StudyFailed
            If every site dropped out.
        """
        if not isinstance(algorithm, Algorithm):
            raise ValidationError(
                f"run() needs a consortia Algorithm, not {type(algorithm).__name__}"
            )
        spec = algorithm.spec()
        study_id = f"sim-{next(self._counter)}-{uuid.uuid4().hex[:8]}"
        coord = Coordinator(algorithm)
        alive: tuple[str, ...] = tuple(self.workers)
        attempts = 0
        while not coord.done:
            rnd = coord.current
            assert rnd is not None
            if self.progress is not None:
                self.progress(coord.round_index, rnd.step)
            state = RoundState.open(coord.round_index, alive, recovery=self.recovery)
            while True:
                attempts += 1
                state, aggregator, task, bundles = self._collect(study_id, spec, rnd, state)
                if state.phase is Phase.REVEAL:
                    break
                if state.phase is Phase.FAILED:
                    raise StudyFailed(f"study {study_id}: {state.failure}")
            state, shares = self._reveal(task, state, bundles)
            alive = state.survivors
            sums = aggregator.finish(
                {s: bytes.fromhex(h) for s, h in state.seeds.items()},
                consume=True,
                shares=shares or None,
            )
            coord.advance(sums)
        self.last_study = {
            "study_id": study_id,
            "rounds": coord.round_index,
            "attempts": attempts,
            "sites": list(alive),
        }
        return coord.result

    def _task(self, study_id: str, spec: Mapping[str, Any], rnd: Round, state: RoundState) -> Task:
        return Task(
            study_id=study_id,
            round_index=state.index,
            attempt=state.attempt,
            algorithm=spec,
            dataset=self.dataset,
            step=rnd.step,
            public=rnd.public,
            participants=tuple(self.workers[s].peer_key for s in state.participants),
            frac_bits=self.precision.frac_bits,
            researcher=self.researcher,
            recovery_threshold=self.recovery if state.threshold is not None else 0,
        )

    def _collect(
        self, study_id: str, spec: Mapping[str, Any], rnd: Round, state: RoundState
    ) -> tuple[RoundState, SecureAggregator, Task, dict[str, SeedShares]]:
        """One attempt's collect phase: every participant's masked vector, or exclusions."""
        task = self._task(study_id, spec, rnd, state)
        aggregator = self.aggregator_cls(task.context)
        bundles: dict[str, SeedShares] = {}
        silent = []
        for site in state.participants:
            try:
                if self.fail is not None and self.fail(site, state.index, state.attempt):
                    raise SiteFailure(site, "simulated dropout")
                masked = self.workers[site].contribute(task)
            except SiteFailure:
                silent.append(site)
                continue
            except PolicyError as err:
                self._refused(state, site, err)
                raise
            aggregator.add(masked)
            if masked.shares is not None:
                bundles[site] = masked.shares
            digest = hashlib.sha256(np.ascontiguousarray(masked.data).data).hexdigest()
            state = apply(state, VectorReceived(site, state.attempt, digest)).state
        if silent:
            state = apply(state, SitesSilent(tuple(silent))).state
        return state, aggregator, task, bundles

    def _refused(self, state: RoundState, site: str, err: PolicyError) -> None:
        apply(state, Refused(site, state.attempt, err.rule, err.detail, anonymous=err.site is None))

    def _reveal(
        self, task: Task, state: RoundState, bundles: Mapping[str, SeedShares]
    ) -> tuple[RoundState, dict[str, dict[str, bytes]]]:
        """The reveal phase: every participant's self-mask seed (or recovery of lost ones).

        Returns the completed state and, for each lost site, its seed's shares by holder.
        """
        silent = []
        for site in state.participants:
            if self.fail_at_reveal is not None and self.fail_at_reveal(
                site, state.index, state.attempt
            ):
                silent.append(site)
                continue
            try:
                seed = self.workers[site].reveal(task)
            except PolicyError as err:
                self._refused(state, site, err)
                raise
            state = apply(state, RevealReceived(site, state.attempt, seed.hex())).state
        shares: dict[str, dict[str, bytes]] = {}
        if silent:
            state = apply(state, SitesSilent(tuple(silent))).state
            if state.phase is Phase.FAILED:
                raise StudyFailed(f"study {task.study_id}: {state.failure}")
            for site in state.survivors:
                asked = {lost: bundles[lost].ciphertexts[site] for lost in state.lost}
                try:
                    out = self.workers[site].reveal_and_share(task, state.lost, asked)
                except PolicyError as err:
                    self._refused(state, site, err)
                    raise
                for lost, share in out.shares.items():
                    shares.setdefault(lost, {})[site] = share
                digest = hashlib.sha256(b"".join(out.shares[x] for x in state.lost)).hexdigest()
                event = SharesReceived(site, state.attempt, out.seed.hex(), digest)
                state = apply(state, event).state
        if state.phase is not Phase.DONE:  # pragma: no cover - the machine's invariant
            raise StudyFailed(f"round {state.index} did not complete: {state.failure}")
        return state, shares
