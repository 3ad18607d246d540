"""Federated statistics.

Algorithms in this package register themselves on import; the registry imports
every public submodule, so adding a module is enough to make its algorithms
available by name.
"""

from consortia.stats.descriptive import (
    Count,
    CountResult,
    CrossTab,
    CrossTabResult,
    Histogram,
    HistogramResult,
    Mean,
    MeanResult,
    Variance,
    VarianceResult,
)
from consortia.stats.dp import (
    DPCount,
    DPCountResult,
    DPCrossTab,
    DPCrossTabResult,
    DPHistogram,
    DPHistogramResult,
    DPMean,
    DPMeanResult,
)
from consortia.stats.linear import LinearRegression, LinearRegressionResult
from consortia.stats.logistic import LogisticRegression, LogisticRegressionResult

__all__ = [
    "Count",
    "CountResult",
    "CrossTab",
    "CrossTabResult",
    "DPCount",
    "DPCountResult",
    "DPCrossTab",
    "DPCrossTabResult",
    "DPHistogram",
    "DPHistogramResult",
    "DPMean",
    "DPMeanResult",
    "Histogram",
    "HistogramResult",
    "LinearRegression",
    "LinearRegressionResult",
    "LogisticRegression",
    "LogisticRegressionResult",
    "Mean",
    "MeanResult",
    "Variance",
    "VarianceResult",
]
