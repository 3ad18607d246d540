"""Finishing a round off the request path: unmask its sum, run ``coordinate()``, store both.

Once the last seed (or share) of an attempt is committed, the node's request is
answered and the :class:`Finisher` takes over.  The unmasking and the algorithm's
``coordinate()`` hold only the study's ``finish_lock``: neither the hub-wide lock of
the registry nor the study's own state lock, so a heavy coordinator never delays
another study, a node's poll, or a status of its own study.  The result is then
committed under the study's lock in one transaction.  A hub that dies in between
finds the round with every seed committed and finishes it when it resumes
(:meth:`consortia.hub.studies.Studies.refresh`).

With ``background=True`` (the HTTP hub) each finishing runs on a thread of its own,
so that the request that completed the round returns at once; otherwise it runs in
the caller's thread (an engine driven directly, step by step).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from consortia.errors import ConsortiaError
from consortia.hub.context import HubContext
from consortia.hub.state import LiveRound, LiveStudy, restore_aggregator
from consortia.hub.store import RoundEnd
from consortia.hub.studies import Studies
from consortia.privacy.secagg import Layout, SecureAggregator
from consortia.runtime.rounds import RoundState
from consortia.wire import pack_arrays, pack_parts

__all__ = ["Finisher"]

log = logging.getLogger("consortia.hub")


class Finisher:
    """Finishes complete rounds: inline, or each on a thread of its own.

    Parameters
    ----------
    ctx
        The engine's shared parts.
    studies
        Ends a study that fails.
    background
        Whether :meth:`submit` returns at once (the round is finished on a thread).
    """

    def __init__(self, ctx: HubContext, studies: Studies, *, background: bool = False) -> None:
        self.ctx = ctx
        self.studies = studies
        self.background = background
        self._idle = threading.Condition()
        self._running = 0

    def restore(self, live: LiveStudy) -> SecureAggregator:
        """The open attempt's aggregator, rebuilt from its persisted running sum.

        The sum is persisted with the attempt's last vector; an attempt that lost its
        sum earlier was abandoned when the study was loaded.
        """
        rnd = live.round
        acc = None
        if rnd.received:
            acc = self.ctx.store.acc(live.id, rnd.index, rnd.attempt)
        agg = restore_aggregator(
            self.ctx.peers.ctx(live),
            Layout.from_json(rnd.layout) if rnd.layout is not None else None,
            acc,
            list(rnd.received),
            {n: b for n, b in rnd.bundles.items() if n in rnd.received},
        )
        live.agg_attempt = rnd.attempt
        return agg

    def begin(self, live: LiveStudy) -> None:
        """The round's last seed is committed: no deadline applies while it is finished."""
        live.finishing = True
        live.deadline = float("inf")

    def submit(self, live: LiveStudy) -> None:
        """Finish ``live``'s complete round: on a thread of its own, or now."""
        if not self.background:
            self.finish(live)
            return
        with self._idle:
            self._running += 1
        thread = threading.Thread(
            target=self._run, args=(live,), daemon=True, name=f"hub-finish-{live.id[:8]}"
        )
        thread.start()

    def _run(self, live: LiveStudy) -> None:
        try:
            self.finish(live)
        except Exception:
            log.exception("study %s: finishing round %d failed", live.id, live.round.index)
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no round is being finished in the background (True), or ``timeout``."""
        end = time.monotonic() + timeout
        with self._idle:
            while self._running:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
            return True

    def finish(self, live: LiveStudy) -> None:
        """Unmask the sum, advance the coordinator, store both and open the next round."""
        ctx = self.ctx
        with live.finish_lock:
            with live.lock:
                if ctx.registry.get(live.id) is not live or not live.finishing:
                    return  # cancelled, failed, or finished by another thread
                rnd = live.round
                agg = live.agg if live.agg is not None and live.agg_attempt == rnd.attempt else None
                if agg is None:
                    agg = self.restore(live)
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
                with live.lock:
                    self.studies.fail(live.id, f"round {rnd.index} could not be unmasked: {exc}")
                    live.finishing = False
                ctx.audit.flush()
                return
            del agg
            packed = pack_parts(sums)  # views of the sums (the coordinator gets them read-only)
            shapes = {k: list(np.shape(v)) for k, v in sums.items()}
            failure = None
            try:
                live.coord.advance(sums)  # the algorithm's coordinate(): no request waits on it
            except ConsortiaError as exc:
                failure = f"the algorithm failed after round {rnd.index}: {exc}"
            del sums
            end, nxt = self._end(live, rnd, failure)
            with live.lock:
                if ctx.registry.get(live.id) is not live:
                    return  # cancelled meanwhile: nothing is stored
                try:
                    digest = ctx.store.finish_round(live.id, rnd.state, packed, end)
                except Exception:
                    ctx.registry.invalidate(live.id)  # rebuilt from the database next time
                    ctx.audit.discard()
                    raise
                finally:
                    live.finishing = False
                self._after(live, rnd, shapes, end, nxt, digest)
            ctx.audit.flush()

    def _end(
        self, live: LiveStudy, rnd: LiveRound, failure: str | None
    ) -> tuple[RoundEnd, LiveRound | None]:
        """What follows the round: failure, the study's result, or its next round."""
        if failure is not None:
            return RoundEnd(failure=failure), None
        coord = live.coord
        if coord.done:
            return RoundEnd(finished=True, result=coord.result), None
        current = coord.current
        assert current is not None
        # content-addressed, in a transaction of its own: a blob no round names is harmless
        public = self.ctx.store.put_blob(pack_arrays(dict(current.public)))
        state = RoundState.open(
            coord.round_index, rnd.state.survivors, recovery=self.ctx.config.recovery
        )
        nxt = LiveRound(step=current.step, public=public, state=state)
        return RoundEnd(step=current.step, public=public, state=state), nxt

    def _after(
        self,
        live: LiveStudy,
        rnd: LiveRound,
        shapes: dict[str, list[int]],
        end: RoundEnd,
        nxt: LiveRound | None,
        digest: str | None,
    ) -> None:
        """The round is stored: update the mirror, queue the audit entries, wake polls."""
        ctx = self.ctx
        ctx.audit.later(
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
        if end.failure is not None:
            self.studies.ended(live.id, end.failure)
            return
        if end.finished:
            ctx.registry.remove(live.id)
            details = {"study": live.id, "rounds": rnd.index + 1, "result": digest}
            ctx.audit.later("hub", "study.finished", details)
        else:
            assert nxt is not None
            live.round = nxt
            ctx.deadlines.arm(live)
        ctx.registry.bump(live.members, live.id)
