"""Federated statistics.  Importing this package registers the built-in algorithms."""

from consortia.stats.descriptive import Mean, MeanResult

__all__ = ["Mean", "MeanResult"]
