"""Pydantic models of the hub's control messages (arrays travel as consortia.wire frames)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
_HEX32 = r"^[0-9a-f]{64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PeerKeyModel(_Strict):
    """A node's signed masking key (hex fields)."""

    site: str = Field(pattern=_NAME)
    mask_key: str = Field(pattern=_HEX32)
    identity_key: str = Field(pattern=_HEX32)
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")


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


class AlgorithmSpec(_Strict):
    """A registered algorithm and its JSON parameters."""

    name: str = Field(min_length=1, max_length=128)
    params: dict[str, Any] = Field(default_factory=dict)


class StudyRequest(_Strict):
    """A study: algorithm, dataset and (optionally) the nodes to include."""

    algorithm: AlgorithmSpec
    dataset: str = Field(pattern=_NAME)
    nodes: list[str] | None = None
    frac_bits: int = Field(default=24, ge=0, le=52)


class RevealRequest(_Strict):
    """A node's self-mask seed for one attempt."""

    seed: str = Field(pattern=_HEX32)


class RefusalRequest(_Strict):
    """A node refused a task: the policy rule (or error class) and a message without values."""

    rule: str = Field(min_length=1, max_length=64)
    message: str = Field(max_length=2000)
    anonymous: bool = False
    """True when the rule depends on the data: the researcher is not told which site refused."""


class CatalogueRequest(_Strict):
    """A node's catalogue: dataset name -> description (columns, types, rounded counts)."""

    datasets: dict[str, dict[str, Any]]
