"""How nodes and researchers reach a hub: one interface, over HTTP or in memory.

* :class:`NodeTransport` / :class:`ResearcherTransport`: what a node agent and
  the SDK ask of a hub (:mod:`consortia.transport.base`).
* :class:`HttpNodeTransport` / :class:`HttpResearcherTransport`: over HTTP(S)
  (:mod:`consortia.transport.http`).
* :class:`~consortia.transport.memory.MemoryNodeTransport` /
  :class:`~consortia.transport.memory.MemoryResearcherTransport`: a hub's
  study engine in the same process, no HTTP (:mod:`consortia.transport.memory`).
"""

from consortia.transport.base import (
    NodeTransport,
    Reply,
    ResearcherTransport,
    TaskKey,
    raise_for_status,
)
from consortia.transport.http import HttpNodeTransport, HttpResearcherTransport

__all__ = [
    "HttpNodeTransport",
    "HttpResearcherTransport",
    "NodeTransport",
    "Reply",
    "ResearcherTransport",
    "TaskKey",
    "raise_for_status",
]
