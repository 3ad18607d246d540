"""Federated survival analysis: Kaplan-Meier, log-rank, Cox, concordance.

Algorithms in this package register themselves on import; the registry imports
every public submodule, so adding a module is enough to make its algorithms
available by name.  Time grids: ``day_grid``, ``regular_grid``, ``quantile_grid``
(explicit), ``Grid(start, stop, step)`` (a regular grid that travels as three
numbers; also ``{"start": .., "stop": .., "step": ..}`` in JSON), or ``horizon=...``
to plan one from differentially private counts (``consortia.survival._plan``).
"""

from consortia.survival._cox_result import CoxPHResult
from consortia.survival._grid import (
    Grid,
    administrative_censoring,
    day_grid,
    quantile_grid,
    regular_grid,
    round_up_to_grid,
)
from consortia.survival.concordance import Concordance, ConcordanceResult
from consortia.survival.cox import CoxPH
from consortia.survival.dp_kaplan_meier import DPKaplanMeier, DPKaplanMeierResult
from consortia.survival.kaplan_meier import KaplanMeier, KaplanMeierCurve, KaplanMeierResult
from consortia.survival.logrank import LogRank, LogRankResult

__all__ = [
    "Concordance",
    "ConcordanceResult",
    "CoxPH",
    "CoxPHResult",
    "DPKaplanMeier",
    "DPKaplanMeierResult",
    "Grid",
    "KaplanMeier",
    "KaplanMeierCurve",
    "KaplanMeierResult",
    "LogRank",
    "LogRankResult",
    "administrative_censoring",
    "day_grid",
    "quantile_grid",
    "regular_grid",
    "round_up_to_grid",
]
