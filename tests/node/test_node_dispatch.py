"""The node's dispatcher: bounded, one task per attempt, no task started twice."""

from __future__ import annotations

import threading
import time

from consortia.node.dispatch import Dispatcher
from consortia.node.tasks import Holds
from consortia.transport.base import TaskKey

PATIENCE = 60.0


def _msg(study: str, kind: str = "contribute", attempt: int = 0) -> dict:
    return {"kind": kind, "study_id": study, "round_index": 0, "attempt": attempt}


class _Handler:
    """Answers block until released; records what was started."""

    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.follow: dict[tuple[str, str], list[dict]] = {}

    def __call__(self, msg):
        self.started.append((msg["study_id"], msg["kind"]))
        self.entered.release()
        assert self.release.wait(PATIENCE)
        return self.follow.pop((msg["study_id"], msg["kind"]), [])


def test_at_most_max_tasks_run_and_one_per_attempt():
    handle = _Handler()
    d = Dispatcher(handle, 2, Holds())
    try:
        asked = time.monotonic()
        started, held = d.offer([_msg("a"), _msg("a"), _msg("b"), _msg("c")], asked)
        assert (started, held) == (2, 0)  # "a" once, "b"; "c" waits for a free slot
        for _ in range(2):
            assert handle.entered.acquire(timeout=PATIENCE)
        assert d.running == 2
        assert d.offer([_msg("a"), _msg("b"), _msg("c")], time.monotonic()) == (0, 0)
        # a's answer brings its next task back, and "b" again (answered since): the
        # next task is answered in the same thread, "b" is not started again
        handle.follow[("a", "contribute")] = [_msg("a", "reveal"), _msg("b")]
        handle.release.set()
        d.shutdown()
        assert d.running == 0
        assert sorted(handle.started) == [("a", "contribute"), ("a", "reveal"), ("b", "contribute")]
        assert d.offer([], time.monotonic()) == (0, 0)  # "b" was left for the loop: stale
    finally:
        handle.release.set()
        d.shutdown()


def test_a_list_made_before_an_answer_does_not_start_the_task_again():
    handle = _Handler()
    handle.release.set()
    d = Dispatcher(handle, 4, Holds())
    try:
        before = time.monotonic()  # a poll sent now...
        assert d.offer([_msg("a")], before) == (1, 0)
        while d.running:
            d.wait(1.0)
        # ...whose answer crossed the task's answer: it still lists "a"
        assert d.offer([_msg("a")], before) == (0, 0)
        assert d.offer([_msg("a")], time.monotonic()) == (1, 0)  # the hub asks again
        d.shutdown()
        assert handle.started == [("a", "contribute")] * 2
    finally:
        d.shutdown()


def test_held_tasks_are_not_started():
    holds = Holds()
    holds.hold(TaskKey("a", 0, 0))
    handle = _Handler()
    handle.release.set()
    d = Dispatcher(handle, 4, holds)
    try:
        assert d.offer([_msg("a"), _msg("b")], time.monotonic()) == (1, 1)
    finally:
        d.shutdown()
    assert handle.started == [("b", "contribute")]
