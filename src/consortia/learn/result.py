"""The result of a federated training study."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from consortia.learn.dp import NO_PRIVACY
from consortia.results import Result

__all__ = ["TrainingResult"]


@dataclass(frozen=True)
class TrainingResult(Result):
    """A federated model: final weights, per-round metrics and how it was trained.

    Attributes
    ----------
    model
        The registered model name.
    hyperparameters
        Its hyperparameters (defaults filled in).
    features
        The feature columns, in the order of the model's inputs.
    task
        ``"binary"``, ``"regression"`` or ``"cox"``.
    weights
        The final parameter vector (float64, the order of
        :mod:`consortia.learn.models`): the last round's, or with early stopping the
        one of lowest federated validation loss.
    strategy
        The strategy's name.
    strategy_params
        Its parameters (``server_lr``, ``mu``, ``beta1``, ...).
    rounds
        Training rounds run.
    best_round
        The round whose broadcast weights are ``weights`` (``rounds`` when they are
        the weights after the last round).
    stopped_early
        True when early stopping ended training before ``rounds`` reached its limit.
    history
        Per-round metrics of the weights broadcast at that round (before its local
        training): ``round``, ``{split}_loss`` and ``{split}_accuracy`` (binary) for the
        splits present, ``update_norm`` (norm of the mean update) and ``clipped_sites``.
    metrics
        Metrics of the final weights: ``{split}_loss``, ``{split}_accuracy``,
        ``{split}_auc`` and ``{split}_auc_bound`` (binary), ``c_index`` and
        ``c_index_bound`` (cox with a time grid, on ``c_index_split``).
    n
        Patients per split, pooled over sites.
    c_index_split
        The split the C-index was computed on (``""`` when none).
    privacy
        The privacy spent at each site's dataset: ``epsilon_spent``, ``delta_spent``,
        ``mechanism`` and, with differential privacy, the accountant, noise
        multiplier, sampling rate, steps and clipping bound.
    """

    model: str
    hyperparameters: Mapping[str, Any]
    features: tuple[str, ...]
    task: str
    weights: np.ndarray
    strategy: str
    strategy_params: Mapping[str, float]
    rounds: int
    best_round: int
    stopped_early: bool
    history: Mapping[str, np.ndarray]
    metrics: Mapping[str, float]
    n: Mapping[str, int]
    c_index_split: str = ""
    privacy: Mapping[str, Any] = field(default_factory=lambda: dict(NO_PRIVACY))

    @property
    def summary(self) -> pd.DataFrame:
        """The per-round history as a table, one row per round."""
        return pd.DataFrame({k: np.asarray(v) for k, v in self.history.items()}).set_index("round")
