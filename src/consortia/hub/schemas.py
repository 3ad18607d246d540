"""Pydantic models of the hub's control messages (arrays travel as consortia.wire frames).

The messages nodes and researchers exchange with the hub are in :mod:`consortia.messages`
(re-exported here under their former names); this module keeps the hub's own requests.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from consortia.messages import AlgorithmSpec, PeerKeyModel, RefusalMessage, RevealMessage

__all__ = [
    "AlgorithmSpec",
    "CatalogueRequest",
    "EnrolRequest",
    "EnrolResponse",
    "PeerKeyModel",
    "RefusalRequest",
    "RevealRequest",
    "StudyRequest",
    "TokenRequest",
    "TokenResponse",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnrolRequest(_Strict):
    """A node enrolling with a one-time enrolment token."""

    name: str = Field(pattern=_NAME)
    peer_key: PeerKeyModel


class EnrolResponse(BaseModel):
    """The node's credential (shown once) and its enrolled name."""

    name: str
    credential: str


class TokenRequest(_Strict):
    """Create a researcher, admin or enrolment token."""

    role: Literal["researcher", "admin", "enrolment"]
    name: str = Field(pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9_.\-]{0,63})$")
    expires_in: float | None = Field(
        default=None, gt=0, description="Seconds it lives; default: the role's default expiry"
    )


class TokenResponse(BaseModel):
    """A new token, shown once."""

    role: str
    name: str
    token: str
    id: int | None = None
    expires_at: float | None = None


class StudyRequest(_Strict):
    """A study: algorithm, dataset and (optionally) the nodes to include."""

    algorithm: AlgorithmSpec
    dataset: str = Field(pattern=_NAME)
    nodes: list[str] | None = None
    frac_bits: int = Field(default=24, ge=0, le=52)


RevealRequest = RevealMessage
"""A node's self-mask seed for one attempt (:class:`consortia.messages.RevealMessage`)."""


class HeartbeatRequest(_Strict):
    """A node still computing its contribution; ``progress`` is the fraction done, if known."""

    progress: float | None = Field(default=None, ge=0.0, le=1.0)


RefusalRequest = RefusalMessage
"""A node refused a task (:class:`consortia.messages.RefusalMessage`)."""


class CatalogueRequest(_Strict):
    """A node's catalogue: dataset name -> description (columns, types, rounded counts)."""

    datasets: dict[str, dict[str, Any]]
