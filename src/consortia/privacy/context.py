"""The public facts of one attempt of one round of secure aggregation."""

from __future__ import annotations

from dataclasses import dataclass

from consortia.errors import ValidationError
from consortia.precision import DEFAULT_FRAC_BITS
from consortia.privacy.fixedpoint import FixedPoint
from consortia.privacy.keys import PeerKey

__all__ = ["RoundContext"]


@dataclass(frozen=True)
class RoundContext:
    """Public facts of one attempt of one round, known to every participant.

    Attributes
    ----------
    study_id, round_index, attempt
        Identify the attempt; they salt the masks.
    participants
        Signed masking keys of every participant, sorted by site name.
    frac_bits
        Fixed-point resolution agreed for the study.
    recovery_threshold
        How many participants' shares rebuild the seed of a site that dies between
        its vector and its reveal (see :attr:`threshold`): ``None`` for the default
        (a majority), ``0`` to share no seeds, else 2..n-1 for n participants.
    """

    study_id: str
    round_index: int
    attempt: int
    participants: tuple[PeerKey, ...]
    frac_bits: int = DEFAULT_FRAC_BITS
    recovery_threshold: int | None = None

    def __post_init__(self) -> None:
        peers = tuple(sorted(self.participants, key=lambda p: p.site))
        object.__setattr__(self, "participants", peers)
        if self.round_index < 0 or self.attempt < 0:
            raise ValidationError("round_index and attempt must be non-negative")
        t, n = self.recovery_threshold, len(peers)
        if t is None or t == 0:
            return
        if n < 3:
            raise ValidationError(
                f"recovery_threshold must be 0 or None: a round of {n} participant(s) cannot "
                "recover a lost seed (its shares would need two other holders at least)"
            )
        if isinstance(t, bool) or not isinstance(t, int) or not 2 <= t <= n - 1:
            raise ValidationError(
                f"recovery_threshold must be 0 (off), None (a majority) or 2..{n - 1} for "
                f"{n} participants"
            )

    @property
    def threshold(self) -> int | None:
        """Shares needed to rebuild a lost seed; None when seeds are not shared.

        The default is a majority of the participants, ``n // 2 + 1``.  Rounds of one
        or two participants cannot recover: their threshold is None.
        """
        return seed_threshold(len(self.participants), self.recovery_threshold)

    @property
    def sites(self) -> tuple[str, ...]:
        """Participant names in canonical (sorted) order."""
        return tuple(p.site for p in self.participants)

    @property
    def codec(self) -> FixedPoint:
        """The fixed-point codec of this round."""
        return FixedPoint(self.frac_bits)

    def context_bytes(self) -> bytes:
        """Bytes that bind masks to this study, round, attempt and participant set."""
        parts = [
            b"consortia/round/v1",
            self.study_id.encode(),
            str(self.round_index).encode(),
            str(self.attempt).encode(),
            b",".join(s.encode() for s in self.sites),
        ]
        return b"\x00".join(parts)


def seed_threshold(n: int, configured: int | None = None) -> int | None:
    """Shares that rebuild a lost seed among ``n`` participants (None: no recovery).

    ``configured`` is None for the default (a majority, ``n // 2 + 1``), 0 for no
    recovery, else the threshold itself (no recovery when ``n`` cannot reach it).
    """
    if configured == 0 or n < 3:
        return None
    if configured is None:
        return n // 2 + 1
    return configured if 2 <= configured <= n - 1 else None
