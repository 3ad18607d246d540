"""Runtimes: the in-process federation and the networked hub and node.

Both call the same algorithm code (:mod:`consortia.protocol`) and the same
privacy layer (:mod:`consortia.privacy`) through :class:`SiteWorker`.
"""

from consortia.runtime.simulation import Simulation
from consortia.runtime.site import SiteWorker
from consortia.runtime.task import Task

__all__ = ["Simulation", "SiteWorker", "Task"]
