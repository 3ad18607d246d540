"""Algorithms for tests and benchmarks, not for research.

Nothing here computes a statistic: :class:`VectorSum` (registered as
``testing.vector_sum``) sums deterministic vectors so that tests and benchmarks can
drive secure rounds of any size and number through the runtime, the hub and the
nodes.  A node's policy must allow ``testing.vector_sum`` explicitly to run it.
"""

from consortia.testing.vector_sum import VectorSum, VectorSumResult, site_vector

__all__ = ["VectorSum", "VectorSumResult", "site_vector"]
