"""Deadlines of the hub's running studies: silent nodes are excluded, the round re-runs.

:class:`Timeouts` is driven by the engine's monitor thread (or a test, with a clock
of its own).  Each study is timed out under its own lock: a study whose round is
being finished (its deadline is infinite meanwhile) or whose lock a long upload holds
delays no other study's deadlines beyond that upload.
"""

from __future__ import annotations

from consortia.hub.approvals import Approvals
from consortia.hub.context import HubContext
from consortia.hub.state import LiveRound, LiveStudy
from consortia.hub.studies import Studies
from consortia.runtime.rounds import Outcome, SitesSilent, apply

__all__ = ["Timeouts"]


class Timeouts:
    """Excludes silent participants and re-runs their round among the survivors.

    Parameters
    ----------
    ctx
        The engine's shared parts.
    studies
        Access to running studies (and failing one).
    approvals
        Which missing nodes wait for their owner (not excluded).
    """

    def __init__(self, ctx: HubContext, studies: Studies, approvals: Approvals) -> None:
        self.ctx = ctx
        self.studies = studies
        self.approvals = approvals

    def check(self) -> None:
        """Exclude nodes that missed their deadline; re-run the round among the survivors."""
        ctx = self.ctx
        now = ctx.clock()
        for live in ctx.registry.running():
            if live.deadline >= now:
                continue
            with live.lock:
                if ctx.registry.get(live.id) is not live or live.deadline >= now:
                    continue
                try:
                    self._time_out(live)
                except Exception:
                    ctx.registry.invalidate(live.id)
                    ctx.audit.discard()
                    raise
            ctx.audit.flush()

    def _time_out(self, live: LiveStudy) -> None:
        """The open attempt's deadline passed: the silent nodes, through the state machine."""
        ctx = self.ctx
        rnd = live.round
        silent = list(rnd.state.awaiting)
        if rnd.phase == "collect":  # a node that heartbeats within its limits is not silent
            now = ctx.clock()
            silent = [n for n in silent if n in live.waiting or ctx.deadlines.node(live, n) <= now]
            if not silent:
                live.deadline = ctx.deadlines.phase(live)
                return
            held = self.approvals.hold(live, silent)
            if held is None:  # nodes wait for their owners (or the study failed)
                return
            silent = held
        t = apply(rnd.state, SitesSilent(tuple(silent)))
        if t.outcome is Outcome.NOTHING:
            return
        if t.outcome is Outcome.FAILED:
            self.studies.fail(live.id, t.state.failure or "the round failed")
            return
        if t.outcome is Outcome.RECOVERY_OPENED:  # lost after their vector: rebuild
            ctx.store.open_recovery(live.id, t.state)
            rnd.state = t.state
            ctx.deadlines.arm(live)
            ctx.registry.bump(rnd.participants, live.id)
            ctx.audit.later(
                "hub",
                "nodes.lost",
                {"study": live.id, "round": rnd.index, "lost": list(t.excluded)},
            )
            return
        new = t.state
        ctx.store.new_attempt(live.id, rnd.state, new, t.excluded)
        live.round = LiveRound(step=rnd.step, public=rnd.public, state=new)
        live.agg, live.agg_attempt = None, -1
        ctx.deadlines.arm(live)
        ctx.registry.bump([*new.participants, *t.excluded], live.id)
        ctx.audit.later(
            "hub",
            "nodes.excluded",
            {
                "study": live.id,
                "round": rnd.index,
                "excluded": list(t.excluded),
                "new_attempt": new.attempt,
            },
        )
