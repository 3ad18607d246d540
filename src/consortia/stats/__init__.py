"""Federated statistics.

Algorithms in this package register themselves on import; the registry imports
every public submodule, so adding a module is enough to make its algorithms
available by name.
"""

from consortia.stats.descriptive import Mean, MeanResult

__all__ = ["Mean", "MeanResult"]
