"""How a node answers one task: approval, policy, compute, mask, post; or reveal.

:class:`TaskAnswerer` answers one task message from the hub through
:class:`consortia.runtime.SiteWorker` (the same policy, encoding and masking path
as the simulation).  Several tasks may be answered at once, each in its own
thread (see :class:`consortia.node.dispatch.Dispatcher`): the algorithm's local
step runs without any lock, while everything that reads or writes the node's
ledgers (policy checks, the release and its audit entry, the masking seed, a
reveal) runs under the worker's lock, in one transaction per task.  While a
task computes, a heartbeat (with the step's reported progress, see
:mod:`consortia.progress`) tells the hub that the node is alive.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from consortia import progress
from consortia.errors import (
    AlgorithmError,
    ConsortiaError,
    HubUnreachable,
    PolicyError,
    ProtocolError,
    ValidationError,
)
from consortia.messages import (
    ContributionHeader,
    RefusalKind,
    RefusalMessage,
    RevealMessage,
    ShareMessage,
    TaskKind,
    TaskMessage,
    refusal_kind,
)
from consortia.node._helpers import release_details
from consortia.node.approvals import study_digest
from consortia.runtime.task import Task
from consortia.transport.base import Reply, TaskKey
from consortia.transport.link import EXPECT_CONTINUE_MIN
from consortia.wire import DEFAULT_MAX_BYTES, pack_parts, unpack_arrays

if TYPE_CHECKING:
    from consortia.node.agent import NodeAgent
    from consortia.runtime.site import SiteWorker

__all__ = ["Holds", "TaskAnswerer", "key_of"]

log = logging.getLogger("consortia.node")

MAX_HOLD = 60.0
"""Longest a task whose post the hub refused is held back, in seconds."""
MAX_PUBLIC = DEFAULT_MAX_BYTES
"""Largest public arrays a node fetches, in bytes."""


def key_of(msg: Any) -> TaskKey | None:
    """The attempt a task message is about (None: not a task message)."""
    if not isinstance(msg, Mapping):
        return None
    try:
        return TaskKey(str(msg["study_id"]), int(msg["round_index"]), int(msg["attempt"]))
    except (KeyError, TypeError, ValueError):
        return None


def _key(task: Task) -> TaskKey:
    return TaskKey(task.study_id, task.round_index, task.attempt)


class Holds:
    """Tasks held back because the hub refused this node's last post for them (thread-safe).

    A task is held 1 s after a first refusal, then twice as long after each
    next one, up to :data:`MAX_HOLD`.
    """

    def __init__(self) -> None:
        self._held: dict[TaskKey, tuple[float, float]] = {}  # key -> (until, last delay)
        self._lock = threading.Lock()

    def holding(self, key: TaskKey | None) -> bool:
        """Whether ``key`` is held back now."""
        with self._lock:
            hold = self._held.get(key) if key is not None else None
            return hold is not None and hold[0] > time.monotonic()

    def left(self, default: float) -> float:
        """Seconds until the first hold ends (``default`` if none is held)."""
        now = time.monotonic()
        with self._lock:
            left = [until - now for until, _ in self._held.values() if until > now]
        return min([*left, default])

    def hold(self, key: TaskKey) -> float:
        """Hold ``key`` back (1 s, doubling to 60 s); return the delay."""
        now = time.monotonic()
        with self._lock:
            delay = min(max(1.0, 2 * self._held.get(key, (0.0, 0.0))[1]), MAX_HOLD)
            for k in [k for k, (until, _) in self._held.items() if until < now - MAX_HOLD]:
                del self._held[k]  # forgotten tasks
            self._held[key] = (now + delay, delay)
        return delay

    def clear(self, key: TaskKey) -> None:
        """The hub accepted a post for ``key``."""
        with self._lock:
            self._held.pop(key, None)


class TaskAnswerer:
    """Answers the hub's tasks for one node agent (thread-safe).

    Parameters
    ----------
    agent
        The node whose store, approvals, transport and datasets are used.
    """

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self.holds = Holds()
        self._trusted: dict[str, bytes] = {}
        self._pins: tuple[str, dict[str, str]] | None = None  # (study, pins read for it)
        self._computing: dict[TaskKey, float] = {}  # tasks in their local step -> since
        self._computing_lock = threading.Lock()

    def computing_age(self) -> float | None:
        """Seconds the longest-running local step has run (None: no step runs)."""
        with self._computing_lock:
            since = min(self._computing.values(), default=None)
        return None if since is None else time.monotonic() - since

    @contextlib.contextmanager
    def _computing_step(self, task: Task) -> Iterator[None]:
        key = _key(task)
        with self._computing_lock:
            self._computing[key] = time.monotonic()
        try:
            yield
        finally:
            with self._computing_lock:
                self._computing.pop(key, None)

    @property
    def _actor(self) -> str:
        return f"node:{self.agent.config.name}"

    # ------------------------------------------------------------------ posts' answers

    def answered(self, task: Task, what: str, r: Reply | None) -> list[dict[str, Any]]:
        """Note the hub's answer to a post; return the next tasks it carried.

        A 4xx holds the task back (1 s doubling to 60 s): the refusal is logged and
        written to the node's audit log, and the task is not answered again before
        its hold ends (a post the hub refuses is never retried in a loop).  A 2xx
        answer clears the hold.
        """
        key = _key(task)
        if r is None or r.status_code < 400:
            self.holds.clear(key)
            return r.tasks() if r is not None else []
        if r.status_code >= 500:
            log.warning("the hub failed on this node's %s (%s)", what, r.status_code)
            return []
        delay = self.holds.hold(key)
        log.warning(
            "the hub refused this node's %s (%s): %s; not retried for %.0fs",
            what,
            r.status_code,
            r.detail(),
            delay,
        )
        self.agent.store.audit.append(
            self._actor,
            "post.rejected",
            {
                "study": task.study_id,
                "round": task.round_index,
                "attempt": task.attempt,
                "post": what,
                "status": r.status_code,
                "retry_after": delay,
            },
        )
        return []

    # ------------------------------------------------------------------ one task

    def task(self, msg: Mapping[str, Any] | TaskMessage) -> Task:
        """Validate a task message and fetch its round's public arrays (by digest).

        A reveal, or a round without public arrays, needs no fetch; a fetched frame
        is checked against its digest and cached (:attr:`NodeAgent.blobs`).

        Raises
        ------
        pydantic.ValidationError
            The message is not a :class:`~consortia.messages.TaskMessage`.
        ProtocolError
            The public arrays could not be fetched or are not what the task announced
            (the task is then held back, as after a refused post).
        HubUnreachable
            The hub could not be reached.
        """
        m = msg if isinstance(msg, TaskMessage) else TaskMessage.model_validate(msg)
        if m.kind is TaskKind.REVEAL or m.public is None:
            return m.to_task({})
        blobs = self.agent.blobs
        try:
            raw = blobs.get(m.public.sha256)
            if raw is None:
                raw = self.agent.transport.fetch_blob(m.public, max_bytes=MAX_PUBLIC)
                blobs.put(m.public.sha256, raw)
            public = unpack_arrays(raw, max_bytes=MAX_PUBLIC, copy=True)
        except HubUnreachable:
            raise
        except ProtocolError:
            self.holds.hold(TaskKey(m.study_id, m.round_index, m.attempt))
            raise
        return m.to_task(public)

    def pins(self, study_id: str | None = None) -> dict[str, str]:
        """The peers this node's owner trusts: ``[peers]`` merged with the CLI's pins.

        Read from the database once per study (not on every round): a pin added or
        removed with ``consortia node peers`` applies from the next study on.
        """
        if study_id is not None and self._pins is not None and self._pins[0] == study_id:
            return self._pins[1]
        pins = {**self.agent.store.pins.all(), **dict(self.agent.config.peers)}
        if study_id is not None:
            self._pins = (study_id, pins)
        return pins

    def refuse(
        self,
        task: Task,
        rule: str,
        message: str,
        *,
        anonymous: bool = False,
        kind: RefusalKind | None = None,
    ) -> None:
        """Report a refusal to the hub (and the node's audit log).

        ``kind`` defaults to :func:`consortia.messages.refusal_kind` of the rule: a
        policy rule, a local failure (an error class of the local step) or a
        protocol error.
        """
        kind = refusal_kind(rule) if kind is None else kind
        self.agent.store.audit.append(
            self._actor,
            "refusal",
            {
                "study": task.study_id,
                "round": task.round_index,
                "attempt": task.attempt,
                "algorithm": task.algorithm.get("name"),
                "dataset": task.dataset,
                "researcher": task.researcher,
                "rule": rule,
                "kind": kind.value,
            },
        )
        refusal = RefusalMessage(
            rule=rule[:64] or "refused", message=message[:2000], anonymous=anonymous, kind=kind
        )
        self.answered(task, "refusal", self.agent.transport.refuse(_key(task), refusal))

    def _trust(self, worker: SiteWorker, task: Task) -> None:
        """Bind the participants' identities to this owner's pins (under the worker's lock)."""
        trusted = self.agent.store.check_peers(
            task.participants,
            self.pins(task.study_id),
            trust_on_first_use=self.agent.config.trust_on_first_use,
        )
        changed = False
        for p in task.participants:  # pins may change while the node runs
            want = trusted.get(p.site)
            if self._trusted.get(p.site) != want:
                changed = True
                if want is None:
                    self._trusted.pop(p.site, None)
                else:
                    self._trusted[p.site] = want
        if changed:
            worker.set_trusted(self._trusted)

    def handle(self, msg: Mapping[str, Any], *, follow: float | None = None) -> list[dict]:
        """Answer one task message from the hub (``contribute``, ``reveal`` or ``share``).

        The hub's answer carries this node's next tasks, waiting up to ``follow``
        seconds for one (default: half the poll wait); they are returned.
        """
        try:
            task = self.task(msg)
        except HubUnreachable as exc:
            log.warning("could not fetch a task's public arrays (%s); it will come again", exc)
            return []
        except (ConsortiaError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring a malformed task: %s", exc)
            return []
        agent = self.agent
        wait = agent.config.poll_wait / 2 if follow is None else follow
        worker = agent.worker()
        share = msg.get("kind") == "share"  # a reveal that also rebuilds lost seeds
        reveal = share or msg.get("kind") == "reveal"
        # owner approval (airlock): a study the owner has not approved is not computed
        if not reveal and agent.approvals.required and not self._approved(worker, task, msg):
            return []
        hb = None if reveal else msg.get("heartbeat")
        refusal: tuple[str, str] | None = None
        anonymous = False
        store = agent.store
        try:
            if reveal:
                # the reveal and its audit entry commit together, before the seed leaves
                with worker.lock, store.ledger.deferred(), store.releases.deferred():
                    self._trust(worker, task)
                    if share:
                        lost = [str(x) for x in msg.get("lost", ())]
                        cts = {
                            str(k): bytes.fromhex(v) for k, v in msg.get("ciphertexts", {}).items()
                        }
                        answer = worker.reveal_and_share(task, lost, cts)
                        seed, shares = answer.seed, answer.shares
                    else:
                        seed = worker.reveal(task)
                    where: dict[str, Any] = {"study": task.study_id, "round": task.round_index}
                    if share:  # which lost seeds this node helped rebuild (never the shares)
                        where["lost"] = sorted(shares)
                    store.record(self._actor, "reveal", {**where, "attempt": task.attempt})
            else:
                with self._computing_step(task), self._beating(task, hb) as tracker:
                    with worker.lock:
                        self._trust(worker, task)
                        prepared = worker.prepare(task)
                    with progress.tracking() as tracked:  # the long part: no lock held
                        tracker.append(tracked)
                        contribution = worker.run_local(prepared)
                # the release, its seed and its audit entry commit together, before it leaves
                with worker.lock, store.ledger.deferred(), store.releases.deferred():
                    worker.release(prepared, contribution)
                    masked = worker.mask(task, contribution)
                    store.record(self._actor, "release", release_details(worker, task, masked))
                del contribution
        except PolicyError as err:
            refusal = (err.rule, err.detail)
            anonymous = err.site is None  # a data-dependent rule: the site is not named
        except ConsortiaError as err:
            refusal = (type(err).__name__, str(err))
            # a bad column, a missing value, an empty group: may be a fact about this
            # site's data, so the researcher is not told which site (the log is)
            anonymous = isinstance(err, (ValidationError, AlgorithmError))
        except Exception as exc:  # out of memory, a defect: refused, never a dead node
            cause = "MemoryError" if isinstance(exc, MemoryError) else type(exc).__name__
            log.error("task of study %s failed: %s", task.study_id, cause)
            # the class only: the exception's message may hold patient values
            refusal = (cause, f"the node failed to answer the task ({cause})")
            anonymous = True
        if refusal is not None:
            self.refuse(task, *refusal, anonymous=anonymous)
            return []
        transport, key = agent.transport, _key(task)
        if share:
            hexed = {k: v.hex() for k, v in shares.items()}
            r = transport.share(key, ShareMessage(seed=seed.hex(), shares=hexed), wait=wait)
            return self.answered(task, "shares", r)
        if reveal:
            r = transport.reveal(key, RevealMessage(seed=seed.hex()), wait=wait)
            return self.answered(task, "reveal", r)
        self._report_budget(worker, task)
        # sent from the masked array's own buffer; heartbeats go on while the hub's upload
        # slots are busy, so that a node waiting its turn is never taken for a silent one
        # (a small body needs no slot: no heartbeat thread for it)
        header = ContributionHeader.of(
            masked.layout,
            # the audit head anchors this node's log at the hub (detects truncation, rewrites)
            store.audit.head(),
            masked.shares.to_json() if masked.shares is not None else None,
        )
        with self._beating(task, hb if masked.data.nbytes >= EXPECT_CONTINUE_MIN else None):
            r = transport.contribute(key, pack_parts({"masked": masked.data}), header, wait=wait)
        del masked
        return self.answered(task, "contribution", r)

    @contextlib.contextmanager
    def _beating(self, task: Task, interval: Any) -> Iterator[list[progress.Tracker]]:
        """While the body runs, tell the hub every ``interval`` s that this node is computing.

        A long local step (model training, a genome-wide screen) then never gets this
        site excluded for being slow; the hub's deadline is the step's own limit.  The
        body may append a :class:`~consortia.progress.Tracker` to the yielded list: the
        fraction it holds goes with each heartbeat.
        """
        trackers: list[progress.Tracker] = []
        try:
            every = float(interval)
        except (TypeError, ValueError):
            every = 0.0
        if not every > 0.0 or every != every:
            yield trackers
            return
        done = threading.Event()
        key, transport = _key(task), self.agent.transport

        def beat() -> None:
            while not done.wait(max(every, 0.05)):
                fraction = trackers[-1].fraction if trackers else None
                try:
                    r = transport.heartbeat(key, fraction)
                except HubUnreachable as exc:
                    log.warning("heartbeat not delivered (%s)", exc)
                    continue
                if r.status_code != 200:  # the attempt moved on: stop beating
                    log.info("the hub declined a heartbeat (%s): %s", r.status_code, r.detail())
                    return

        thread = threading.Thread(target=beat, daemon=True, name="node-heartbeat")
        thread.start()
        try:
            yield trackers
        finally:
            done.set()
            thread.join(timeout=max(every, 1.0) + 30.0)

    def _report_budget(self, worker: SiteWorker, task: Task) -> None:
        """Tell the hub what remains of the researcher's privacy budget (DP studies only)."""
        report = worker.budget(task) if task.round_index == 0 else None
        if report is None:
            return
        try:
            r = self.agent.transport.report_budget(report)
            if r.status_code != 200:
                log.warning("the hub refused a budget report (%s)", r.status_code)
        except HubUnreachable as exc:
            log.warning("could not report the privacy budget to the hub: %s", exc)

    def _approved(self, worker: SiteWorker, task: Task, msg: Mapping[str, Any]) -> bool:
        """Whether the owner approved ``task``'s study; else refuse (denied) or wait.

        A first request is recorded once (see :mod:`consortia.node.approvals`); while
        it is pending the hub is told that the study waits for this node's owner (again
        only when its task does not already say so, for example after a hub restart).
        """
        try:
            with worker.lock:
                status = self.agent.approvals.admit(task, worker, actor=self._actor)
        except ConsortiaError as err:
            self.refuse(task, type(err).__name__, str(err))
            return False
        if status == "approved":
            return True
        if status == "denied":
            self.refuse(task, "owner_denied", "the data owner did not approve this study")
        elif not msg.get("waiting"):
            digest = study_digest(task.algorithm, task.dataset, task.researcher)
            r = self.agent.transport.pending(_key(task), digest)
            if r is not None and r.status_code != 200:
                log.warning("the hub refused a pending notice (%s): %s", r.status_code, r.detail())
        return False
