"""Federated model training: registered models, strategies, and the ``learn.train`` algorithm.

PyTorch is an optional extra (``pip install consortia[learn]``): only a site's local
step imports it.  The hub side (strategies, metrics, initial weights) is numpy.

Modules: :mod:`~consortia.learn.models` (the model registry and the parameter
vector's order), :mod:`~consortia.learn.strategies` (FedAvg, FedProx, Scaffold,
FedAdam, FedYogi, FedAdagrad), :mod:`~consortia.learn.train` (the algorithm),
:mod:`~consortia.learn.evaluation` (splits, AUC and C-index from sums) and
:mod:`~consortia.learn.result`.
"""

from __future__ import annotations

from consortia.learn.models import get_model, register_model, registered_models
from consortia.learn.result import TrainingResult
from consortia.learn.strategies import STRATEGIES, Strategy, make_strategy
from consortia.learn.train import Training

__all__ = [
    "STRATEGIES",
    "Strategy",
    "Training",
    "TrainingResult",
    "get_model",
    "make_strategy",
    "register_model",
    "registered_models",
]
