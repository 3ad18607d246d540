"""The lifecycle of the hub's studies: submit, cancel, fail, and rebuild after a restart.

:class:`Studies` creates a study (its record, first round and audit entry in one
transaction), ends one (cancelled or failed), and rebuilds the in-memory mirror of a
running study from the store (:func:`consortia.hub.state.load_live`) after a restart
or an error.  :meth:`Studies.hold` gives a request the study it names, under that
study's own lock.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from consortia.errors import ConsortiaError
from consortia.hub.checks import check_params, to_json
from consortia.hub.context import HubContext
from consortia.hub.errors import HubError
from consortia.hub.payloads import submit_details
from consortia.hub.state import LiveRound, LiveStudy, interrupted, load_live
from consortia.hub.store import NewStudy, StudyRecord
from consortia.protocol import Coordinator, algorithm_from_spec
from consortia.runtime.rounds import AttemptAbandoned, RoundState, apply
from consortia.wire import pack_arrays

__all__ = ["Studies"]

log = logging.getLogger("consortia.hub")


class Studies:
    """Creating, ending and rebuilding running studies.

    Parameters
    ----------
    ctx
        The engine's shared parts.
    """

    def __init__(self, ctx: HubContext) -> None:
        self.ctx = ctx
        self._load_lock = threading.Lock()  # one rebuild at a time (restarts, errors)
        # called with each study whose every seed was committed before a restart: it
        # finishes the round (set by the engine to the finisher's submit)
        self.resume_finish: Callable[[LiveStudy], None] = lambda live: None

    # ------------------------------------------------------------------ rebuild

    def refresh(self, *, blocking: bool = True) -> None:
        """Rebuild the mirrors of stale studies (after a restart or an error).

        With ``blocking=False``, returns at once if another thread is rebuilding (the
        studies it rebuilds wake their nodes' polls when they are ready).
        """
        ctx = self.ctx
        if not ctx.registry.stale():
            return
        if not self._load_lock.acquire(blocking=blocking):
            return
        finish: list[LiveStudy] = []
        try:
            for sid in ctx.registry.stale():
                live = self._load(sid)
                phase = live.round.phase if live is not None else None
                # a round whose every seed was committed before a restart is finished now
                if (
                    live is not None
                    and phase in ("reveal", "recover")
                    and not live.round.state.awaiting
                ):
                    finish.append(live)
        finally:
            self._load_lock.release()
        for live in finish:
            self.resume_finish(live)

    def _load(self, sid: str) -> LiveStudy | None:
        ctx = self.ctx
        study = ctx.store.study(sid)
        if study is None or study.status != "running":
            ctx.registry.drop_stale(sid)
            return None
        try:
            live = load_live(
                ctx.store,
                study,
                node_timeout=ctx.config.node_timeout,
                reveal_timeout=ctx.config.reveal_timeout,
                recovery=ctx.config.recovery,
            )
            with live.lock:
                if interrupted(ctx.store, live):
                    self._abandon(live)
                ctx.deadlines.arm(live)  # a resumed phase gets its full deadlines again
                ctx.registry.add(live)
        except ConsortiaError as exc:
            ctx.registry.drop_stale(sid)
            self.fail(sid, f"could not resume: {exc}")
            ctx.audit.flush()
            return None
        ctx.audit.flush()
        ctx.registry.bump(live.members, sid)
        return live

    def _abandon(self, live: LiveStudy) -> None:
        """Give up an attempt whose running sum was lost while collecting.

        Nothing of it was revealed: the round re-runs among the same participants with
        fresh masks (:class:`~consortia.runtime.rounds.AttemptAbandoned`).
        """
        rnd = live.round
        new = apply(rnd.state, AttemptAbandoned(rnd.attempt)).state
        self.ctx.store.new_attempt(live.id, rnd.state, new, ())
        live.round = LiveRound(step=rnd.step, public=rnd.public, state=new)
        live.agg, live.agg_attempt = None, -1
        self.ctx.audit.later(
            "hub",
            "attempt.abandoned",
            {
                "study": live.id,
                "round": rnd.index,
                "attempt": rnd.attempt,
                "received": sorted(rnd.received),
                "new_attempt": new.attempt,
                "reason": "the hub restarted while the attempt collected vectors",
            },
        )

    # ------------------------------------------------------------------ access

    def live_for(self, node: str, study_id: str) -> LiveStudy | None:
        """The running study ``node`` may post to, or None (not running); 404 if not its own."""
        ctx = self.ctx
        if ctx.registry.is_stale(study_id):
            self.refresh()
        live = ctx.registry.get(study_id)
        if live is not None:
            if node not in live.members:
                raise HubError(404, f"no task of this node in study {study_id!r}")
            return live
        if not ctx.store.has_task(study_id, node):
            raise HubError(404, f"no task of this node in study {study_id!r}")
        return None

    @contextmanager
    def hold(self, node: str, study_id: str) -> Iterator[LiveStudy | None]:
        """The running study ``node`` posts to, its lock held (None: not running)."""
        while True:
            live = self.live_for(node, study_id)
            if live is None:
                yield None
                return
            with live.lock:
                if self.ctx.registry.get(study_id) is live:  # not ended or rebuilt meanwhile
                    yield live
                    return

    # ------------------------------------------------------------------ create and end

    def submit(
        self,
        researcher: str,
        algorithm: Mapping[str, Any],
        dataset: str,
        *,
        nodes: list[str] | None = None,
        frac_bits: int = 24,
    ) -> str:
        """Create a study over every node publishing ``dataset`` (or the named ``nodes``)."""
        ctx = self.ctx
        check_params(algorithm.get("params", {}) if isinstance(algorithm, Mapping) else None)
        try:
            algo = algorithm_from_spec(algorithm)
            spec = algo.spec()
            coord = Coordinator(algo, keep_history=False)
        except ConsortiaError as exc:
            raise HubError(422, f"the algorithm could not start: {exc}") from None
        except (MemoryError, OverflowError):
            raise HubError(422, "the algorithm's parameters ask for too much memory") from None
        to_json(spec, "the algorithm's parameters")
        if not 0 <= int(frac_bits) <= 52:
            raise HubError(422, "frac_bits must be an integer in [0, 52]")
        holders = ctx.store.holders(dataset)
        if nodes is not None:
            unknown = sorted(set(nodes) - set(holders))
            if unknown:
                raise HubError(422, f"nodes {unknown} do not publish a dataset named {dataset!r}")
            holders = sorted(set(nodes))
        if not holders:
            raise HubError(422, f"no enrolled node publishes a dataset named {dataset!r}")
        record = StudyRecord(
            id=uuid.uuid4().hex,
            researcher=researcher,
            algorithm=spec,
            dataset=dataset,
            frac_bits=int(frac_bits),
            status="finished" if coord.done else "running",
            participants=holders,
        )
        new = NewStudy(record)
        live = None
        if not coord.done:
            rnd = coord.current
            assert rnd is not None
            public = ctx.store.put_blob(pack_arrays(dict(rnd.public)))
            state = RoundState.open(coord.round_index, holders, recovery=ctx.config.recovery)
            new = NewStudy(record, step=rnd.step, public=public, state=state)
            live = LiveStudy(
                id=record.id,
                researcher=researcher,
                spec=spec,
                dataset=dataset,
                frac_bits=int(frac_bits),
                members=set(holders),
                coord=coord,
                round=LiveRound(step=rnd.step, public=public, state=state),
                deadline=0.0,
            )
            ctx.deadlines.arm(live)
        # the audit entry (digests, never arrays) commits with the study, or neither does
        details = submit_details(record.id, spec, dataset, holders)
        ctx.store.create_study(new, ("researcher:" + researcher, "study.submit", details))
        if live is not None:
            ctx.registry.add(live)
        ctx.registry.bump(holders, record.id)
        return record.id

    def owned(self, study_id: str, researcher: str | None) -> StudyRecord:
        """The study, if ``researcher`` owns it (any study for None); else 404."""
        study = self.ctx.store.study(study_id)
        if study is None or (researcher is not None and study.researcher != researcher):
            raise HubError(404, f"no study {study_id!r}")
        return study

    def cancel(self, study_id: str, researcher: str | None, actor: str) -> None:
        """Cancel a running study (idempotent; a finished study stays finished)."""
        ctx = self.ctx
        study = self.owned(study_id, researcher)
        if study.status != "running":
            return
        live = ctx.registry.get(study_id)
        lock = live.lock if live is not None else threading.RLock()
        with lock:
            if ctx.store.cancel(study_id, actor):
                gone = ctx.registry.remove(study_id)
                ctx.registry.bump(gone.members if gone else study.participants, study_id)
                ctx.audit.log.append(actor, "study.cancel", {"study": study_id})

    def fail(
        self,
        study_id: str,
        reason: str,
        rule: str | None = None,
        *,
        site: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Fail a running study (its audit entry is queued: the caller flushes)."""
        if self.ctx.store.fail(study_id, reason, rule, site=site, detail=detail):
            self.ended(study_id, reason, rule)

    def ended(self, study_id: str, reason: str, rule: str | None = None) -> None:
        """A study was stored as failed: forget it and tell its nodes and researcher."""
        ctx = self.ctx
        live = ctx.registry.remove(study_id)
        if live is not None:
            members: Sequence[str] = sorted(live.members)
        else:
            study = ctx.store.study(study_id)
            members = study.participants if study is not None else []
        ctx.registry.bump(members, study_id)
        ctx.audit.later("hub", "study.failed", {"study": study_id, "reason": reason, "rule": rule})
