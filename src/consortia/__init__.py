"""consortia: federated medical research with exact, securely aggregated statistics."""

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
    "SchemaError",
    "Simulation",
    "ValidationError",
    "__version__",
    "get_algorithm",
    "register",
    "registered_algorithms",
]
