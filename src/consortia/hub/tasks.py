"""The node-facing task board of the hub: a node's open tasks, and its long-poll.

A poll reads each running study's mirror without taking the study's lock: the
round's state (:class:`~consortia.runtime.rounds.RoundState`) is immutable and
replaced whole, so one read of ``live.round`` and its ``state`` is a consistent
snapshot.  A poll therefore never waits for a study's upload, unmasking or
``coordinate()``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from consortia.hub.checks import to_json
from consortia.hub.context import HubContext
from consortia.hub.errors import HubError
from consortia.hub.payloads import task_message
from consortia.hub.studies import Studies
from consortia.messages import TaskKind

__all__ = ["TaskBoard"]

log = logging.getLogger("consortia.hub")


class TaskBoard:
    """What each node is asked to do now, and the wait for it to change.

    Parameters
    ----------
    ctx
        The engine's shared parts.
    studies
        Rebuilds stale studies, fails one whose task cannot be sent.
    """

    def __init__(self, ctx: HubContext, studies: Studies) -> None:
        self.ctx = ctx
        self.studies = studies

    def tasks_for(self, node: str) -> list[dict[str, Any]]:
        """The node's open tasks: ``contribute`` (collect phase), ``reveal`` or ``share``.

        Each is the JSON of a :class:`~consortia.messages.TaskMessage`; the round's
        public arrays travel by reference (``GET /v1/node/blobs/{sha256}``).
        """
        ctx = self.ctx
        self.studies.refresh(blocking=False)  # another thread may be rebuilding: not waited for
        out = []
        broken: list[str] = []
        for live in ctx.registry.running():
            rnd = live.round  # one snapshot (see the module's note)
            state = rnd.state
            if node not in state.participants:
                continue
            extra: dict[str, Any] = {}
            if state.phase == "collect" and node not in state.received:
                kind = TaskKind.CONTRIBUTE
            elif state.phase == "reveal" and node in state.received and node not in state.seeds:
                kind = TaskKind.REVEAL
            elif state.phase == "recover" and node in state.awaiting:
                kind = TaskKind.SHARE  # its seed, and its shares of the lost seeds
                bundles = rnd.bundles
                extra = {
                    "lost": list(state.lost),
                    "ciphertexts": {x: bundles[x]["ciphertexts"][node] for x in state.lost},
                }
            else:
                continue
            try:  # a spec that is not strict JSON must not break every node's poll
                to_json(live.spec, "spec")
            except HubError:
                broken.append(live.id)
                continue
            peers = [ctx.peers.json(n) for n in state.participants]
            out.append(
                task_message(
                    ctx.store.blob_size,
                    live,
                    kind,
                    peers,
                    waiting=node in live.waiting,  # for its owner's approval
                    # seconds between the heartbeats of a node still computing
                    heartbeat=ctx.config.node_timeout / 3 or None,
                    rnd=rnd,
                )
                | extra
            )
        for sid in broken:
            self._fail_unsendable(sid)
        return out

    def _fail_unsendable(self, study_id: str) -> None:
        """Fail a study whose task cannot be serialised (its spec holds NaN or infinity)."""
        log.error("study %s: its parameters are not strict JSON; the study fails", study_id)
        live = self.ctx.registry.get(study_id)
        if live is None:
            return
        with live.lock:
            self.studies.fail(study_id, "the study's parameters cannot be sent to nodes")
        self.ctx.audit.flush()

    def wait_tasks(self, node: str, timeout: float) -> list[dict[str, Any]]:
        """Long-poll for the node's tasks, at most ``timeout`` seconds."""
        registry = self.ctx.registry
        end = time.monotonic() + max(0.0, min(timeout, 60.0))
        while True:
            version = registry.node_version(node)  # read first: no change is missed
            tasks = self.tasks_for(node)
            # a task waiting for the node's owner comes back at the end of each poll
            if not all(t["waiting"] for t in tasks):
                return tasks
            if not registry.wait_node(node, version, end):
                return [] if registry.stopped.is_set() else tasks
