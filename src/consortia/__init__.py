"""consortia: federated medical research with exact, securely aggregated statistics."""

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
