"""Progress of a long local step: reported by the algorithm, read by the runtime.

An algorithm's :meth:`~consortia.protocol.Algorithm.local` step that runs for
minutes (model training, a genome-wide screen) may say how far it got::

    from consortia.progress import report

    def local(self, step, public, data):
        for epoch in range(self.epochs):
            ...
            report((epoch + 1) / self.epochs)

:func:`report` knows nothing of hubs or nodes: outside a :func:`tracking` block it
does nothing (the simulation, a unit test).  A node runs each task inside one and
sends the last fraction with its heartbeats, so the researcher sees how far each
site got.  The fraction is a number in [0, 1]; it never carries data.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

__all__ = ["Tracker", "report", "tracking"]


class Tracker:
    """The last fraction reported in a :func:`tracking` block (None: none reported)."""

    __slots__ = ("fraction",)

    def __init__(self) -> None:
        self.fraction: float | None = None


_current: contextvars.ContextVar[Tracker | None] = contextvars.ContextVar(
    "consortia_progress", default=None
)


def report(fraction: float) -> None:
    """Report that the running local step is ``fraction`` done (clipped to [0, 1]).

    A value that is not a finite number is ignored; outside :func:`tracking`, so is
    every value.
    """
    tracker = _current.get()
    if tracker is None:
        return
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        return
    if math.isfinite(value):
        tracker.fraction = min(max(value, 0.0), 1.0)


@contextlib.contextmanager
def tracking() -> Iterator[Tracker]:
    """Collect the fractions :func:`report` is given in this block (this thread or task)."""
    tracker = Tracker()
    token = _current.set(tracker)
    try:
        yield tracker
    finally:
        _current.reset(token)
