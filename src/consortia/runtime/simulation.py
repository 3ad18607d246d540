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
from consortia.privacy.secagg import SecureAggregator
from consortia.protocol import Algorithm, Coordinator, Round
from consortia.runtime.rounds import (
    Phase,
    Refused,
    RevealReceived,
    RoundState,
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
            state = RoundState.open(coord.round_index, alive)
            while True:
                attempts += 1
                state, aggregator, task = self._collect(study_id, spec, rnd, state)
                if state.phase is Phase.REVEAL:
                    break
                if state.phase is Phase.FAILED:
                    raise StudyFailed(f"study {study_id}: {state.failure}")
            state = self._reveal(task, state)
            alive = state.participants
            sums = aggregator.finish(
                {s: bytes.fromhex(h) for s, h in state.seeds.items()}, consume=True
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
        )

    def _collect(
        self, study_id: str, spec: Mapping[str, Any], rnd: Round, state: RoundState
    ) -> tuple[RoundState, SecureAggregator, Task]:
        """One attempt's collect phase: every participant's masked vector, or exclusions."""
        task = self._task(study_id, spec, rnd, state)
        aggregator = self.aggregator_cls(task.context)
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
                apply(
                    state,
                    Refused(site, state.attempt, err.rule, err.detail, anonymous=err.site is None),
                )
                raise
            aggregator.add(masked)
            digest = hashlib.sha256(np.ascontiguousarray(masked.data).data).hexdigest()
            state = apply(state, VectorReceived(site, state.attempt, digest)).state
        if silent:
            state = apply(state, SitesSilent(tuple(silent))).state
        return state, aggregator, task

    def _reveal(self, task: Task, state: RoundState) -> RoundState:
        """The reveal phase: every participant's self-mask seed."""
        for site in state.participants:
            try:
                seed = self.workers[site].reveal(task)
            except PolicyError as err:
                apply(
                    state,
                    Refused(site, state.attempt, err.rule, err.detail, anonymous=err.site is None),
                )
                raise
            state = apply(state, RevealReceived(site, state.attempt, seed.hex())).state
        if state.phase is not Phase.DONE:  # pragma: no cover - the machine's invariant
            raise StudyFailed(f"round {state.index} did not complete: {state.failure}")
        return state
