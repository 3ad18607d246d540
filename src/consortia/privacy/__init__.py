"""The privacy layer: fixed-point encoding, pairwise masking, secure aggregation, policy.

Used by the runtime, invisible to algorithms.
"""

from consortia.privacy.fixedpoint import FixedPoint
from consortia.privacy.keys import PeerKey, SiteIdentity, verify_peers
from consortia.privacy.policy import Policy
from consortia.privacy.secagg import (
    Layout,
    Ledger,
    MaskedContribution,
    MemoryLedger,
    Reveal,
    RoundContext,
    SecureAggregator,
    SecureSite,
    SeedShares,
)

__all__ = [
    "FixedPoint",
    "Layout",
    "Ledger",
    "MaskedContribution",
    "MemoryLedger",
    "PeerKey",
    "Policy",
    "Reveal",
    "RoundContext",
    "SecureAggregator",
    "SecureSite",
    "SeedShares",
    "SiteIdentity",
    "verify_peers",
]
