"""The node-facing half of the hub's study engine: vectors, seeds and refusals.

:class:`RoundHandling` is mixed into :class:`~consortia.hub.service.StudyEngine`;
it adds each masked vector into the open attempt's running sum in memory (who sent
which vector is persisted before the answer; the sum itself once the last vector
is in), collects the self-mask seeds once every vector is in, and finishes the
round.  It relies on the engine's state (``_live``, ``engine``, ``audit``)
and helpers (``_refresh``, ``_fail``, ``_new_round``, ``_update_round``, ...).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from consortia.audit import AuditLog
from consortia.errors import ConsortiaError, ProtocolError
from consortia.hub.blobs import put_acc, put_sums
from consortia.hub.db import (
    RoundRow,
    StudyRow,
    TaskRow,
)
from consortia.hub.queries import HubError
from consortia.hub.results import store_result
from consortia.hub.state import (
    LiveRound,
    LiveStudy,
    restore_aggregator,
    round_state,
    shares_digest,
)
from consortia.hub.statements import ACC, STUDIES
from consortia.privacy.recovery import SeedShares
from consortia.privacy.secagg import (
    Layout,
    MaskedContribution,
    RoundContext,
    SecureAggregator,
)
from consortia.runtime.rounds import (
    Event,
    Outcome,
    Refused,
    RevealReceived,
    RoundRejected,
    SharesReceived,
    Transition,
    VectorReceived,
    apply,
)
from consortia.wire import pack_parts, unpack_arrays

log = logging.getLogger("consortia.hub")


class RoundHandling:
    """Contribution, reveal and refusal of a node for the open attempt of a round."""

    # the engine's state and helpers this mixin relies on (see StudyEngine)
    engine: Engine
    audit: AuditLog
    lock: threading.RLock
    max_payload: int
    node_timeout: float
    reveal_timeout: float
    _live: dict[str, LiveStudy]
    _audit_queue: list[tuple[str, str, dict[str, Any]]]

    if TYPE_CHECKING:

        def _refresh(self) -> None: ...
        def _invalidate(self, study_id: str) -> None: ...
        def _later(self, actor: str, action: str, details: dict[str, Any]) -> None: ...
        def _flush_audit(self) -> None: ...
        def _bump(
            self, nodes: list[str] | tuple[str, ...] | set[str], study_id: str | None = None
        ) -> None: ...
        def _ctx(self, live: LiveStudy) -> RoundContext: ...
        def _new_round(
            self, s: Session, live: LiveStudy, participants: Sequence[str]
        ) -> LiveRound: ...
        def _fail(
            self, s: Session, study: StudyRow, reason: str, rule: str | None = None
        ) -> None: ...
        def _set_task(self, s: Session, live: LiveStudy, node: str, state: str) -> None: ...
        def _update_round(self, s: Session, live: LiveStudy, **values: Any) -> None: ...
        def _arm(self, live: LiveStudy) -> None: ...

    def _live_for(self, node: str, study_id: str) -> LiveStudy | None:
        """The running study ``node`` may post to, or None (not running); 404 if not its own."""
        self._refresh()
        live = self._live.get(study_id)
        if live is not None:
            if node not in live.members:
                raise HubError(404, f"no task of this node in study {study_id!r}")
            return live
        with Session(self.engine) as s:
            hit = s.scalar(
                select(TaskRow.node)
                .where(TaskRow.study_id == study_id, TaskRow.node == node)
                .limit(1)
            )
            if hit is None:
                raise HubError(404, f"no task of this node in study {study_id!r}")
        return None

    def _transition(
        self, live: LiveStudy | None, study_id: str, round_index: int, event: Event
    ) -> Transition:
        """Apply ``event`` to the round it names: the open one, or a closed one (a retry).

        A retried post for a round that has since closed is checked against its
        persisted state, so that the very same vector or seed is acknowledged again.
        """
        if live is not None and round_index == live.round.index:
            state = live.round.state
            try:
                return apply(state, event)
            except RoundRejected as exc:
                raise HubError(409 if exc.conflict else 400, str(exc)) from None
        with Session(self.engine) as s:
            row = s.get(RoundRow, (study_id, round_index))
            closed = round_state(row) if row is not None else None
        if closed is not None and not closed.open_for_messages:
            try:
                t = apply(closed, event)
            except RoundRejected:
                t = None
            if t is not None and t.outcome is Outcome.DUPLICATE:
                return t
        if live is None:
            raise HubError(409, f"study {study_id!r} is not running")
        raise HubError(409, f"round {round_index} of study {study_id!r} is not open")

    def contribute(
        self,
        node: str,
        study_id: str,
        round_index: int,
        attempt: int,
        layout_json: Any,
        body: bytes | bytearray,
        bundle: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Add a node's masked vector into the attempt's running sum (persisted, then acked).

        ``bundle`` is the encrypted shares of the node's self-mask seed
        (:meth:`SeedShares.to_json <consortia.privacy.recovery.SeedShares.to_json>`),
        required when the attempt shares seeds; the hub keeps and forwards it but
        cannot read it.
        """
        digest = hashlib.sha256(body).hexdigest()
        ack = {"status": "accepted", "round_index": round_index, "attempt": attempt}
        with self.lock:
            live = self._live_for(node, study_id)
            t = self._transition(live, study_id, round_index, VectorReceived(node, attempt, digest))
            if t.outcome is Outcome.DUPLICATE:
                return {**ack, "status": "duplicate"}
            assert live is not None
            rnd = live.round
            try:
                layout = Layout.from_json(layout_json)
                arrays = unpack_arrays(body, max_bytes=self.max_payload)
            except ConsortiaError as exc:
                raise HubError(400, f"malformed contribution: {exc}") from None
            data = arrays.get("masked")
            if set(arrays) != {"masked"} or data is None:
                raise HubError(400, "a contribution holds exactly one array named 'masked'")
            if data.dtype != np.uint64 or data.ndim != 1 or data.size != layout.size:
                raise HubError(400, "the masked vector is not a uint64 vector of its layout's size")
            shares = None
            if rnd.state.threshold is not None:
                if bundle is None:
                    raise HubError(400, "this attempt shares seeds: the seed shares are missing")
                try:
                    shares = SeedShares.from_json(bundle)
                except ConsortiaError as exc:
                    raise HubError(400, f"malformed seed shares: {exc}") from None
            elif bundle is not None:
                raise HubError(400, "this attempt shares no seeds")
            try:
                if live.agg is None or live.agg_attempt != attempt:
                    live.agg = self._restore(live)
                try:
                    live.agg.add(
                        MaskedContribution(
                            study_id, round_index, attempt, node, layout, data, shares=shares
                        )
                    )
                except ProtocolError as exc:
                    raise HubError(400, f"malformed contribution: {exc}") from None
                del data, arrays  # views into the request body
                new = t.state
                layout_json = layout.to_json()
                bundles = {**rnd.bundles, node: shares.to_json()} if shares else rnd.bundles
                with Session(self.engine) as s:
                    self._update_round(
                        s,
                        live,
                        layout=layout_json,
                        received=dict(new.received),
                        phase=str(new.phase),
                        **({"bundles": bundles} if shares else {}),
                    )
                    if t.outcome is Outcome.REVEAL_OPENED:
                        # the running sum is persisted once, with the last vector (the
                        # reveal needs it); before, only who sent which vector is: a hub
                        # restarted while collecting abandons the attempt (load path)
                        masked_sum = live.agg.masked_sum  # written from the array, no copy
                        assert masked_sum is not None  # it holds the vector just added
                        put_acc(s, study_id, rnd.index, attempt, masked_sum, first=True)
                    self._set_task(s, live, node, "contributed")
                    s.commit()
            except HubError:
                if node in (live.agg.received if live.agg else ()):
                    self._invalidate(study_id)  # the sum holds an unpersisted vector
                raise
            except Exception:
                self._invalidate(study_id)  # rebuilt from the database next time
                raise
            rnd.state, rnd.layout, rnd.bundles = new, layout_json, bundles
            live.waiting.pop(node, None)  # its owner approved
            if t.outcome is Outcome.REVEAL_OPENED:
                self._arm(live)
                self._bump(rnd.participants)
            return ack

    def _restore(self, live: LiveStudy) -> SecureAggregator:
        """The open attempt's aggregator, rebuilt from its persisted running sum.

        The sum is persisted with the attempt's last vector; an attempt that lost its
        sum earlier was abandoned when the study was loaded (see ``StudyEngine._refresh``).
        """
        rnd = live.round
        acc = None
        if rnd.received:
            with Session(self.engine) as s:
                acc = s.scalar(
                    select(ACC.c.acc).where(
                        ACC.c.study_id == live.id,
                        ACC.c.round_index == rnd.index,
                        ACC.c.attempt == rnd.attempt,
                    )
                )
        agg = restore_aggregator(
            self._ctx(live),
            Layout.from_json(rnd.layout) if rnd.layout is not None else None,
            acc,
            list(rnd.received),
            {n: b for n, b in rnd.bundles.items() if n in rnd.received},
        )
        live.agg_attempt = rnd.attempt
        return agg

    def reveal(
        self, node: str, study_id: str, round_index: int, attempt: int, seed_hex: str
    ) -> dict[str, Any]:
        """Record a node's self-mask seed; the last one finishes the round."""
        try:
            seed = bytes.fromhex(seed_hex)
        except (ValueError, TypeError):
            raise HubError(400, "a seed is hex-encoded") from None
        if len(seed) != 32:
            raise HubError(400, "a seed is 32 bytes")
        ack = {"status": "accepted", "round_index": round_index, "attempt": attempt}
        with self.lock:
            live = self._live_for(node, study_id)
            t = self._transition(
                live, study_id, round_index, RevealReceived(node, attempt, seed_hex)
            )
            if t.outcome is Outcome.DUPLICATE:
                return {**ack, "status": "duplicate"}
            assert live is not None
            try:
                with Session(self.engine) as s:
                    self._update_round(s, live, seeds=dict(t.state.seeds))
                    self._set_task(s, live, node, "revealed")
                    s.commit()
            except Exception:
                self._invalidate(study_id)  # rebuilt from the database next time
                self._audit_queue.clear()
                raise
            live.round.state = t.state
            complete = t.outcome is Outcome.ROUND_COMPLETE
            if complete:
                self._begin_finish(live)
            self._flush_audit()
        if complete:  # the unmasking and coordinate() run without the hub-wide lock
            self._finish_round(live)
        return ack

    def share(
        self,
        node: str,
        study_id: str,
        round_index: int,
        attempt: int,
        seed_hex: str,
        shares: Mapping[str, str],
    ) -> dict[str, Any]:
        """Record a survivor's seed and its shares of the lost seeds; the last one finishes.

        Only in the ``recover`` phase of an attempt (a participant fell silent after its
        vector): the shares must be exactly one per lost participant.
        """
        try:
            seed = bytes.fromhex(seed_hex)
            given = {k: bytes.fromhex(v) for k, v in shares.items()}
        except (ValueError, TypeError, AttributeError):
            raise HubError(400, "a seed and its shares are hex-encoded") from None
        if len(seed) != 32:
            raise HubError(400, "a seed is 32 bytes")
        given_hex = {k: v.hex() for k, v in sorted(given.items())}
        ack = {"status": "accepted", "round_index": round_index, "attempt": attempt}
        with self.lock:
            live = self._live_for(node, study_id)
            event = SharesReceived(node, attempt, seed.hex(), shares_digest(given_hex))
            t = self._transition(live, study_id, round_index, event)
            if t.outcome is Outcome.DUPLICATE:
                return {**ack, "status": "duplicate"}
            assert live is not None
            if set(given_hex) != set(t.state.lost):
                raise HubError(400, "give exactly one share for every lost participant")
            shared = {**live.round.shares, node: given_hex}
            try:
                with Session(self.engine) as s:
                    self._update_round(s, live, seeds=dict(t.state.seeds), shares=shared)
                    self._set_task(s, live, node, "revealed")
                    s.commit()
            except Exception:
                self._invalidate(study_id)  # rebuilt from the database next time
                self._audit_queue.clear()
                raise
            live.round.shares, live.round.state = shared, t.state
            complete = t.outcome is Outcome.ROUND_COMPLETE
            if complete:
                self._begin_finish(live)
            self._flush_audit()
        if complete:  # the unmasking and coordinate() run without the hub-wide lock
            self._finish_round(live)
        return ack

    def _begin_finish(self, live: LiveStudy) -> None:
        """The round's last seed is committed: no deadline applies while it is finished."""
        live.finishing = True
        live.deadline = float("inf")

    def _finish_round(self, live: LiveStudy) -> None:
        """Unmask the sum, advance the coordinator, store both and open the next round.

        Called once the attempt's every seed (or share) is committed, *without* the
        hub-wide lock: the unmasking and the algorithm's ``coordinate()`` run under the
        study's own lock only, so a heavy study never delays another study or a node's
        poll.  The results are then committed under the hub-wide lock in one
        transaction.  A hub that dies in between finds the round with every seed
        committed and finishes it when it resumes (:meth:`_refresh`).
        """
        with live.finish_lock:
            with self.lock:
                if self._live.get(live.id) is not live or not live.finishing:
                    return  # cancelled, failed, or finished by another thread
                rnd = live.round
                agg = live.agg if live.agg is not None and live.agg_attempt == rnd.attempt else None
                if agg is None:
                    agg = self._restore(live)
                # the running sum is not needed past this point (on a failed commit the
                # study is rebuilt from the database): drop it before the sums are packed
                live.agg, live.agg_attempt = None, -1
            seeds = dict(rnd.seeds)
            lost: dict[str, dict[str, bytes]] = {}
            for holder, given in rnd.shares.items():  # the survivors' shares of the lost seeds
                for site, share in given.items():
                    lost.setdefault(site, {})[holder] = bytes.fromhex(share)
            try:
                sums = agg.finish(
                    {n: bytes.fromhex(h) for n, h in seeds.items()},
                    consume=True,
                    shares=lost or None,
                )
            except ConsortiaError as exc:
                with self.lock:
                    self._fail_finishing(live, f"round {rnd.index} could not be unmasked: {exc}")
                return
            del agg
            packed = pack_parts(sums)  # views of the sums (the coordinator gets them read-only)
            shapes = {k: list(np.shape(v)) for k, v in sums.items()}
            failure = None
            try:
                live.coord.advance(sums)  # the algorithm's coordinate(): off the hub-wide lock
            except ConsortiaError as exc:
                failure = f"the algorithm failed after round {rnd.index}: {exc}"
            del sums
            with self.lock:
                if self._live.get(live.id) is not live:
                    return  # cancelled meanwhile: nothing is stored
                try:
                    with Session(self.engine) as s:
                        self._store_round(s, live, packed, shapes, failure)
                        s.commit()
                except Exception:
                    self._invalidate(live.id)  # rebuilt from the database next time
                    self._audit_queue.clear()
                    raise
                finally:
                    live.finishing = False
                self._flush_audit()

    def _fail_finishing(self, live: LiveStudy, reason: str) -> None:
        with Session(self.engine) as s:
            study = s.get(StudyRow, live.id)
            assert study is not None
            self._fail(s, study, reason)
            s.commit()
        live.finishing = False
        self._flush_audit()

    def _store_round(
        self,
        s: Session,
        live: LiveStudy,
        packed: Sequence[bytes | memoryview],
        shapes: dict[str, list[int]],
        failure: str | None,
    ) -> None:
        """Commit a finished round: its sums, the study's progress and what comes next."""
        rnd = live.round
        now = time.time()
        # stored from the sums' own memory (the running sum's, decoded in place): no copy
        put_sums(s, live.id, rnd.index, packed)
        self._update_round(s, live, seeds=dict(rnd.seeds), done=True, phase="done", finished_at=now)
        n_rounds = rnd.index + 1
        s.execute(
            update(STUDIES).where(STUDIES.c.id == live.id).values(n_rounds=n_rounds, updated_at=now)
        )
        self._later(
            "hub",
            "round.finished",
            {
                "study": live.id,
                "round": rnd.index,
                "attempt": rnd.attempt,
                "step": rnd.step,
                "participants": list(rnd.participants),
                "arrays": shapes,
                "digests": dict(rnd.received),
            },
        )
        if failure is not None:
            study = s.get(StudyRow, live.id)
            assert study is not None
            self._fail(s, study, failure)
            return
        if live.coord.done:
            s.execute(update(STUDIES).where(STUDIES.c.id == live.id).values(status="finished"))
            self._live.pop(live.id, None)
            digest = store_result(s, live.id, live.coord.result)  # None: not encodable
            self._later(
                "hub", "study.finished", {"study": live.id, "rounds": n_rounds, "result": digest}
            )
        else:
            if rnd.state.lost:  # nodes lost at the reveal take no part in later rounds
                s.execute(
                    update(STUDIES)
                    .where(STUDIES.c.id == live.id)
                    .values(participants=list(rnd.state.survivors))
                )
            live.round = self._new_round(s, live, rnd.state.survivors)
            self._arm(live)
        self._bump(live.members, live.id)

    def refuse(
        self,
        node: str,
        study_id: str,
        round_index: int,
        attempt: int,
        rule: str,
        message: str,
        *,
        anonymous: bool = False,
    ) -> dict[str, Any]:
        """A node's policy (or privacy layer) refused the task: the study fails naming the rule.

        With ``anonymous`` (a rule that depends on the data), the study's reason does not
        name the site; the hub's audit log keeps it.
        """
        with self.lock:
            live = self._live_for(node, study_id)
            if live is None:
                return {"status": "not running"}
            if live.round.index != round_index:
                raise HubError(409, "this attempt is not open for this node")
            event = Refused(node, attempt, rule, message, anonymous=anonymous)
            try:
                t = apply(live.round.state, event)
            except RoundRejected as exc:
                raise HubError(409, str(exc)) from None
            with Session(self.engine) as s:
                study = s.get(StudyRow, study_id)
                assert study is not None
                study.error_site, study.error_detail = (None if anonymous else node), message
                self._fail(s, study, t.state.failure or "refused", rule)
                s.commit()
            self._later(
                f"node:{node}",
                "study.refused",
                {"study": study_id, "round": round_index, "rule": rule, "anonymous": anonymous},
            )
            self._flush_audit()
            return {"status": "failed"}

    # ------------------------------------------------------------------ timeouts
