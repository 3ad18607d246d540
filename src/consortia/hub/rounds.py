"""The node-facing round service of the hub: vectors, seeds, shares, refusals, heartbeats.

:class:`RoundService` adds each masked vector into the open attempt's running sum in
memory (who sent which vector is persisted before the answer; the sum itself once
the last vector is in), collects the self-mask seeds once every vector is in, and
hands a complete round to the :class:`~consortia.hub.finishing.Finisher`.  Every
state change of a study runs under that study's own lock
(:meth:`Studies.hold <consortia.hub.studies.Studies.hold>`), never the hub-wide one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from consortia.errors import ConsortiaError, ProtocolError
from consortia.hub.context import HubContext
from consortia.hub.errors import HubError
from consortia.hub.finishing import Finisher
from consortia.hub.state import LiveStudy, round_state, shares_digest
from consortia.hub.studies import Studies
from consortia.privacy.recovery import SeedShares
from consortia.privacy.secagg import Layout, MaskedContribution
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
from consortia.wire import unpack_arrays

__all__ = ["RoundService"]

log = logging.getLogger("consortia.hub")


class RoundService:
    """Contribution, reveal, shares, refusal and heartbeat of a node for an open attempt.

    Parameters
    ----------
    ctx
        The engine's shared parts.
    studies
        Access to running studies (and failing one).
    finisher
        Finishes a round once its every seed is committed.
    """

    def __init__(self, ctx: HubContext, studies: Studies, finisher: Finisher) -> None:
        self.ctx = ctx
        self.studies = studies
        self.finisher = finisher

    def _transition(
        self, live: LiveStudy | None, study_id: str, round_index: int, event: Event
    ) -> Transition:
        """Apply ``event`` to the round it names: the open one, or a closed one (a retry).

        A retried post for a round that has since closed is checked against its
        persisted state, so that the very same vector or seed is acknowledged again.
        """
        if live is not None and round_index == live.round.index:
            try:
                return apply(live.round.state, event)
            except RoundRejected as exc:
                raise HubError(409 if exc.conflict else 400, str(exc)) from None
        row = self.ctx.store.round(study_id, round_index)
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
        """Add a node's masked vector into the attempt's running sum (persisted, then acked)."""
        ctx = self.ctx
        digest = hashlib.sha256(body).hexdigest()
        ack = {"status": "accepted", "round_index": round_index, "attempt": attempt}
        with self.studies.hold(node, study_id) as live:
            t = self._transition(live, study_id, round_index, VectorReceived(node, attempt, digest))
            if t.outcome is Outcome.DUPLICATE:
                return {**ack, "status": "duplicate"}
            assert live is not None
            rnd = live.round
            try:
                layout = Layout.from_json(layout_json)
                arrays = unpack_arrays(body, max_bytes=ctx.config.max_payload)
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
                    live.agg = self.finisher.restore(live)
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
                # the running sum is persisted once, with the last vector (the reveal
                # needs it); before, only who sent which vector is: a hub restarted
                # while collecting abandons the attempt (see Studies.refresh)
                masked_sum = live.agg.masked_sum if t.outcome is Outcome.REVEAL_OPENED else None
                ctx.store.record_vector(
                    study_id, new, node, layout_json, bundles if shares else None, masked_sum
                )
            except HubError:
                if node in (live.agg.received if live.agg else ()):
                    ctx.registry.invalidate(study_id)  # the sum holds an unpersisted vector
                raise
            except Exception:
                ctx.registry.invalidate(study_id)  # rebuilt from the database next time
                raise
            rnd.state, rnd.layout, rnd.bundles = new, layout_json, bundles
            live.waiting.pop(node, None)  # its owner approved
            if t.outcome is Outcome.REVEAL_OPENED:
                ctx.deadlines.arm(live)
                ctx.registry.bump(rnd.participants)
            return ack

    def reveal(
        self, node: str, study_id: str, round_index: int, attempt: int, seed_hex: str
    ) -> dict[str, Any]:
        """Record a node's self-mask seed; the last one hands the round to the finisher."""
        try:
            seed = bytes.fromhex(seed_hex)
        except (ValueError, TypeError):
            raise HubError(400, "a seed is hex-encoded") from None
        if len(seed) != 32:
            raise HubError(400, "a seed is 32 bytes")
        event = RevealReceived(node, attempt, seed_hex)
        return self._seed(node, study_id, round_index, event, None)

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
        event = SharesReceived(node, attempt, seed.hex(), shares_digest(given_hex))
        return self._seed(node, study_id, round_index, event, given_hex)

    def _seed(
        self,
        node: str,
        study_id: str,
        round_index: int,
        event: RevealReceived | SharesReceived,
        given: dict[str, str] | None,
    ) -> dict[str, Any]:
        """Record a seed (and shares): the common path of :meth:`reveal` and :meth:`share`."""
        ctx = self.ctx
        ack = {"status": "accepted", "round_index": round_index, "attempt": event.attempt}
        with self.studies.hold(node, study_id) as live:
            t = self._transition(live, study_id, round_index, event)
            if t.outcome is Outcome.DUPLICATE:
                return {**ack, "status": "duplicate"}
            assert live is not None
            shared = None
            if given is not None:
                if set(given) != set(t.state.lost):
                    raise HubError(400, "give exactly one share for every lost participant")
                shared = {**live.round.shares, node: given}
            try:
                ctx.store.record_seed(study_id, t.state, node, shared)
            except Exception:
                ctx.registry.invalidate(study_id)  # rebuilt from the database next time
                ctx.audit.discard()
                raise
            if shared is not None:
                live.round.shares = shared
            live.round.state = t.state
            complete = t.outcome is Outcome.ROUND_COMPLETE
            if complete:
                self.finisher.begin(live)
            ctx.audit.flush()
        if complete:  # the unmasking and coordinate() run without any request's lock
            self.finisher.submit(live)
        return ack

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
        ctx = self.ctx
        with self.studies.hold(node, study_id) as live:
            if live is None:
                return {"status": "not running"}
            if live.round.index != round_index:
                raise HubError(409, "this attempt is not open for this node")
            event = Refused(node, attempt, rule, message, anonymous=anonymous)
            try:
                t = apply(live.round.state, event)
            except RoundRejected as exc:
                raise HubError(409, str(exc)) from None
            site = None if anonymous else node
            self.studies.fail(
                study_id, t.state.failure or "refused", rule, site=site, detail=message
            )
            ctx.audit.later(
                f"node:{node}",
                "study.refused",
                {"study": study_id, "round": round_index, "rule": rule, "anonymous": anonymous},
            )
            ctx.audit.flush()
            return {"status": "failed"}

    def heartbeat(
        self,
        node: str,
        study_id: str,
        round_index: int,
        attempt: int,
        progress: float | None = None,
    ) -> dict[str, Any]:
        """A participant is alive and still computing its contribution (not persisted)."""
        ctx = self.ctx
        with self.studies.hold(node, study_id) as live:
            if live is None:
                return {"status": "not running"}
            rnd = live.round
            if (
                rnd.index != round_index
                or rnd.attempt != attempt
                or node not in rnd.state.awaiting
                or rnd.phase != "collect"
            ):
                raise HubError(409, "this attempt is not waiting for this node's contribution")
            live.beats[node] = ctx.clock()
            if progress is not None:
                live.progress[node] = min(max(float(progress), 0.0), 1.0)
            live.deadline = ctx.deadlines.phase(live)
            return {"status": "alive", "round_index": round_index, "attempt": attempt}
