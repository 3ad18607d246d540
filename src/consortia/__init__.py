"""consortia: federated medical research with exact, securely aggregated statistics.

The names below are imported on first use (PEP 562), so ``import consortia`` and
every ``consortia`` command start without loading pandas, SQLAlchemy or the web stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consortia.data import Schema, catalogue, load_dataset, synthetic_cohort
    from consortia.data.dataset import Dataset
    from consortia.errors import (
        ConsortiaError,
        PolicyError,
        PrivacyError,
        SchemaError,
        ValidationError,
    )
    from consortia.privacy.policy import Policy
    from consortia.protocol import (
        Algorithm,
        Contribution,
        Round,
        get_algorithm,
        register,
        registered_algorithms,
    )
    from consortia.runtime.simulation import Simulation
    from consortia.sdk import connect

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Algorithm": "consortia.protocol",
    "ConsortiaError": "consortia.errors",
    "Contribution": "consortia.protocol",
    "Dataset": "consortia.data.dataset",
    "Policy": "consortia.privacy.policy",
    "PolicyError": "consortia.errors",
    "PrivacyError": "consortia.errors",
    "Round": "consortia.protocol",
    "Schema": "consortia.data",
    "SchemaError": "consortia.errors",
    "Simulation": "consortia.runtime.simulation",
    "ValidationError": "consortia.errors",
    "catalogue": "consortia.data",
    "connect": "consortia.sdk",
    "get_algorithm": "consortia.protocol",
    "load_dataset": "consortia.data",
    "register": "consortia.protocol",
    "registered_algorithms": "consortia.protocol",
    "synthetic_cohort": "consortia.data",
}

__all__ = [
    "Algorithm",
    "ConsortiaError",
    "Contribution",
    "Dataset",
    "Policy",
    "PolicyError",
    "PrivacyError",
    "Round",
    "Schema",
    "SchemaError",
    "Simulation",
    "ValidationError",
    "__version__",
    "catalogue",
    "connect",
    "get_algorithm",
    "load_dataset",
    "register",
    "registered_algorithms",
    "synthetic_cohort",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'consortia' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
