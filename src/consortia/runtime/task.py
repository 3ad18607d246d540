"""The one message a hub sends a site for one attempt of one round."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from consortia.precision import DEFAULT_FRAC_BITS
from consortia.privacy.keys import PeerKey
from consortia.privacy.secagg import RoundContext

__all__ = ["Task"]


@dataclass(frozen=True)
class Task:
    """Everything a site needs to compute and mask its share of one round attempt.

    Attributes
    ----------
    study_id, round_index, attempt
        Identify the attempt.
    algorithm
        The algorithm's spec (``{"name": ..., "params": {...}}``).
    dataset
        Which of the site's datasets the study uses.
    step, public
        The round decided by the hub side.
    participants
        Signed masking keys of every participant of this attempt.
    frac_bits
        Fixed-point resolution of the study.
    researcher
        Who submitted the study (for the node's audit and budget).
    recovery_threshold
        Seed-sharing threshold of the attempt (``RoundContext.recovery_threshold``:
        None for a majority, 0 for no sharing).
    """

    study_id: str
    round_index: int
    attempt: int
    algorithm: Mapping[str, Any]
    dataset: str
    step: str
    public: Mapping[str, np.ndarray]
    participants: tuple[PeerKey, ...]
    frac_bits: int = DEFAULT_FRAC_BITS
    researcher: str = "local"
    extra: Mapping[str, Any] = field(default_factory=dict)
    recovery_threshold: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "public", MappingProxyType(dict(self.public)))

    @property
    def context(self) -> RoundContext:
        """The secure-aggregation context of this attempt."""
        return RoundContext(
            study_id=self.study_id,
            round_index=self.round_index,
            attempt=self.attempt,
            participants=self.participants,
            frac_bits=self.frac_bits,
            recovery_threshold=self.recovery_threshold,
        )
