"""A node answers several tasks at once: at most ``max_tasks``, one per attempt.

While one study's local step runs for minutes, another study's rounds go on at
the same node: each task is answered in a thread of a bounded pool.  A task of
an attempt already being answered is not started again, nor is one that a list
made before its answer still shows (the hub lists a task until its answer
arrives, so a poll that crossed an answer would bring it back once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from consortia.node.tasks import Holds, key_of
from consortia.transport.base import TaskKey

__all__ = ["Dispatcher"]

log = logging.getLogger("consortia.node")

_FORGET_AFTER = 600.0  # seconds after which an answered task is forgotten


class Dispatcher:
    """Runs task answers in a bounded pool of threads.

    Parameters
    ----------
    handle
        Answers one task message; returns the node's next tasks.
    max_tasks
        Most tasks answered at once.
    holds
        Tasks held back after a refused post (not started while held).
    """

    def __init__(
        self,
        handle: Callable[[Mapping[str, Any]], list[dict[str, Any]]],
        max_tasks: int,
        holds: Holds,
    ) -> None:
        self._handle = handle
        self.max_tasks = int(max_tasks)
        self._holds = holds
        self._pool = ThreadPoolExecutor(max_workers=self.max_tasks, thread_name_prefix="node-task")
        self._cond = threading.Condition()
        self._running: set[TaskKey] = set()
        self._answered: dict[tuple[TaskKey, str], float] = {}  # (attempt, kind) -> when
        self._inbox: list[tuple[Mapping[str, Any], float]] = []

    @property
    def running(self) -> int:
        """How many tasks are being answered."""
        with self._cond:
            return len(self._running)

    def offer(self, tasks: list[Any], asked: float) -> tuple[int, int]:
        """Start the tasks of a list the hub made after ``asked`` (a monotonic time).

        The next tasks that answers brought back are offered too.  Returns how many
        were started and how many were held back.
        """
        started = held = 0
        with self._cond:
            items = [(t, asked) for t in tasks] + self._inbox
            self._inbox = []
            for msg, when in items:
                verdict = self._verdict(msg, when)
                if verdict == "held":
                    held += 1
                elif verdict == "start" and len(self._running) < self.max_tasks:
                    key = key_of(msg)
                    assert key is not None
                    self._running.add(key)
                    self._pool.submit(self._run, key, str(msg.get("kind")), msg)
                    started += 1
        return started, held

    def _verdict(self, msg: Any, when: float) -> str:
        """``start``, ``held`` or ``skip`` (malformed, running, or answered since ``when``)."""
        key = key_of(msg)
        if key is None:
            log.warning("ignoring a malformed task (not an attempt of a study)")
            return "skip"
        if key in self._running or self._answered.get((key, str(msg.get("kind"))), -1.0) >= when:
            return "skip"
        return "held" if self._holds.holding(key) else "start"

    def _run(self, key: TaskKey, kind: str, msg: Mapping[str, Any]) -> None:
        """Answer ``msg``, then, in the same thread, the first of the next tasks it brought."""
        while True:
            asked = time.monotonic()
            follow: list[dict[str, Any]] = []
            try:
                follow = self._handle(msg)
            except Exception:  # pragma: no cover - handle() reports its own failures
                log.exception("answering a task failed")
            with self._cond:
                self._running.discard(key)
                now = time.monotonic()
                self._answered[(key, kind)] = now
                for k in [k for k, t in self._answered.items() if t < now - _FORGET_AFTER]:
                    del self._answered[k]
                chained: Mapping[str, Any] | None = None
                for t in follow:
                    if chained is None and self._verdict(t, asked) == "start":
                        chained = t  # answered next, in this thread (no hand-over)
                    else:
                        self._inbox.append((t, asked))
                if chained is None or self._inbox:
                    self._cond.notify_all()
                if chained is None:
                    return
                next_key = key_of(chained)
                assert next_key is not None
                key, kind, msg = next_key, str(chained.get("kind")), chained
                self._running.add(key)

    def wait(self, timeout: float) -> bool:
        """Wait until a task's answer is done, at most ``timeout`` s (False: none was)."""
        with self._cond:
            if self._inbox:
                return True
            return self._cond.wait(max(timeout, 0.0))

    def pending(self) -> bool:
        """Whether next tasks wait to be offered."""
        with self._cond:
            return bool(self._inbox)

    def wake(self) -> None:
        """Wake :meth:`wait` (the node stops)."""
        with self._cond:
            self._cond.notify_all()

    def shutdown(self) -> None:
        """Wait for the tasks being answered, then release the threads."""
        self._pool.shutdown(wait=True)
