"""The messages between hub, nodes and researchers: one pydantic model per message.

Shared by the hub (which builds and validates them), the node agent and the SDK
(which parse them) and the tests.  JSON field names are those the hub always used.

=====================  =======================================================
Model                  Travels
=====================  =======================================================
:class:`TaskMessage`   hub -> node: ``GET /v1/node/tasks`` (and the ``tasks`` of
                       every answer to a contribution or a reveal)
:class:`ContributionHeader`
                       node -> hub: the headers ``X-Consortia-Layout`` and
                       ``X-Consortia-Audit-Head`` of a contribution (whose body is a
                       :mod:`consortia.wire` frame)
:class:`RevealMessage` node -> hub: the body of ``.../reveal``
:class:`RefusalMessage`
                       node -> hub: the body of ``.../refusal``
:class:`StudyStatusMessage`
                       hub -> researcher: ``GET /v1/studies/{id}`` (and the answer
                       to a submission)
=====================  =======================================================

Arrays never travel in these messages: a task names its round's public arrays by
reference (:class:`BlobRef`, the SHA-256 digest and size of their packed frame),
and the node fetches the frame once from ``GET /v1/node/blobs/{sha256}``.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from consortia import errors
from consortia.errors import ProtocolError, ValidationError
from consortia.privacy.keys import PeerKey
from consortia.privacy.secagg import Layout
from consortia.runtime.task import Task
from consortia.wire import pack_arrays

__all__ = [
    "AUDIT_HEAD_HEADER",
    "EMPTY_PUBLIC",
    "LAYOUT_HEADER",
    "SEED_SHARES_HEADER",
    "AlgorithmSpec",
    "BlobRef",
    "ContributionHeader",
    "CurrentRound",
    "PeerKeyModel",
    "RefusalKind",
    "RefusalMessage",
    "RevealMessage",
    "ShareMessage",
    "StudyState",
    "StudyStatusMessage",
    "TaskKind",
    "TaskMessage",
    "refusal_kind",
]

LAYOUT_HEADER = "X-Consortia-Layout"
"""The header of a contribution naming its arrays and shapes (JSON, see :class:`Layout`)."""

AUDIT_HEAD_HEADER = "X-Consortia-Audit-Head"
"""The header of a contribution carrying the node's audit head (``<seq>:<64 hex>``)."""

SEED_SHARES_HEADER = "X-Consortia-Seed-Shares"
"""The header of a contribution carrying its encrypted seed shares (JSON,
:meth:`consortia.privacy.recovery.SeedShares.to_json`), when the attempt shares seeds."""

MAX_SEED_SHARES_HEADER = 64 * 1024
"""The longest seed-shares header accepted (about 300 participants)."""

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_HEX32 = r"^[0-9a-f]{64}$"
_HEAD = re.compile(r"([0-9]{1,18}):([0-9a-f]{64})")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- parts


class PeerKeyModel(_Strict):
    """A node's signed masking key (hex fields), as :meth:`PeerKey.to_json` writes it."""

    site: str = Field(pattern=_NAME)
    mask_key: str = Field(pattern=_HEX32)
    identity_key: str = Field(pattern=_HEX32)
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")

    def to_peer(self) -> PeerKey:
        """The :class:`~consortia.privacy.keys.PeerKey` (its signature is not checked here)."""
        return PeerKey.from_json(self.model_dump())


class AlgorithmSpec(_Strict):
    """A registered algorithm and its JSON parameters (:meth:`Algorithm.spec`)."""

    name: str = Field(min_length=1, max_length=128)
    params: dict[str, Any] = Field(default_factory=dict)


class BlobRef(_Strict):
    """A payload stored once at the hub, named by the SHA-256 of its bytes."""

    sha256: str = Field(pattern=_HEX32)
    size: int = Field(ge=0)

    @classmethod
    def of(cls, data: bytes | bytearray | memoryview) -> BlobRef:
        """The reference of ``data``."""
        return cls(sha256=hashlib.sha256(data).hexdigest(), size=memoryview(data).nbytes)


EMPTY_PUBLIC = BlobRef.of(pack_arrays({}))
"""The reference of a round without public arrays (a task then carries ``public: null``)."""


# ----------------------------------------------------------------------------- tasks


class TaskKind(StrEnum):
    """What a task asks of a node."""

    CONTRIBUTE = "contribute"
    """Compute, mask and post this node's vector of the attempt."""
    REVEAL = "reveal"
    """Reveal this node's self-mask seed (every vector of the attempt is in)."""
    SHARE = "share"
    """Reveal this node's seed with its shares of the seeds of sites lost at the reveal."""


class TaskMessage(_Strict):
    """One open task of a node: an attempt of a round of a study.

    Attributes
    ----------
    kind
        :class:`TaskKind`.
    study_id, round_index, attempt
        The attempt.
    algorithm, dataset, step
        The study's algorithm (spec), the dataset it reads, the round's step.
    public
        The round's public arrays by reference (``None``: the round has none).  The
        frame is fetched from ``GET /v1/node/blobs/{sha256}`` and checked against
        the digest.
    participants
        The signed masking keys of every participant of the attempt.
    frac_bits
        Fixed-point resolution of the study.
    researcher
        Who submitted the study.
    waiting
        The hub knows the study waits for this node's owner's approval.
    heartbeat
        Seconds between the heartbeats of a node still computing its contribution
        (``None``: none expected).
    recovery_threshold
        The attempt's seed-sharing setting (``RoundContext.recovery_threshold``:
        None for a majority, 0 for no sharing).
    lost, ciphertexts
        A ``share`` task: the participants lost at the reveal, and for each the
        ciphertext of its seed's share addressed to this node (hex).
    """

    kind: TaskKind
    study_id: str = Field(min_length=1, max_length=64)
    round_index: int = Field(ge=0, le=2**31 - 1)
    attempt: int = Field(ge=0, le=2**31 - 1)
    algorithm: AlgorithmSpec
    dataset: str = Field(min_length=1, max_length=128)
    step: str = Field(max_length=128)
    public: BlobRef | None = None
    participants: list[PeerKeyModel] = Field(min_length=1)
    frac_bits: int = Field(ge=0, le=52)
    researcher: str = Field(default="", max_length=128)
    waiting: bool = False
    heartbeat: float | None = Field(default=None, ge=0, le=86400)
    recovery_threshold: int | None = Field(default=None, ge=0, le=2**16)
    lost: list[str] = Field(default_factory=list, max_length=2**16)
    ciphertexts: dict[str, str] = Field(default_factory=dict, max_length=2**16)

    def to_task(self, public: Mapping[str, np.ndarray]) -> Task:
        """The :class:`~consortia.runtime.task.Task` of this message, with its public arrays.

        Raises
        ------
        ValidationError
            A participant's key is not hex (never the case after validation).
        """
        return Task(
            study_id=self.study_id,
            round_index=self.round_index,
            attempt=self.attempt,
            algorithm=self.algorithm.model_dump(),
            dataset=self.dataset,
            step=self.step,
            public=public,
            participants=tuple(p.to_peer() for p in self.participants),
            frac_bits=self.frac_bits,
            researcher=self.researcher,
            recovery_threshold=self.recovery_threshold,
        )


# ----------------------------------------------------------------------------- node posts


class ContributionHeader(_Strict):
    """The headers of a contribution: the masked vector's layout and the node's audit head.

    They stay HTTP headers (``X-Consortia-Layout``: JSON ``[[name, [dims...]], ...]``;
    ``X-Consortia-Audit-Head``: ``<seq>:<64 hex>``, optional) so that the body is the
    bare :mod:`consortia.wire` frame; :meth:`from_headers` validates both.
    """

    layout: list[tuple[str, tuple[int, ...]]]
    audit_head: tuple[int, str] | None = None
    seed_shares: dict[str, Any] | None = None

    @field_validator("layout", mode="before")
    @classmethod
    def _layout(cls, value: Any) -> Any:
        if isinstance(value, Layout):
            return value.to_json()
        return Layout.from_json(value).to_json()  # ValidationError names the field at fault

    @field_validator("audit_head")
    @classmethod
    def _head(cls, value: tuple[int, str] | None) -> tuple[int, str] | None:
        if value is not None and (
            not 0 <= value[0] < 10**18 or re.fullmatch(_HEX32, value[1]) is None
        ):
            raise ValueError("an audit head is <seq>:<64 hex digits>")
        return value

    @classmethod
    def of(
        cls,
        layout: Layout,
        audit_head: tuple[int, str] | None = None,
        seed_shares: dict[str, Any] | None = None,
    ) -> ContributionHeader:
        """The headers of a contribution of ``layout`` (the node's audit head, its shares)."""
        return cls(layout=list(layout.entries), audit_head=audit_head, seed_shares=seed_shares)

    def to_layout(self) -> Layout:
        """The layout as a :class:`~consortia.privacy.secagg.Layout`."""
        return Layout(tuple(self.layout))

    def layout_json(self) -> list[list[Any]]:
        """The layout's JSON form (:meth:`Layout.to_json`)."""
        return [[name, list(dims)] for name, dims in self.layout]

    def to_headers(self) -> dict[str, str]:
        """The HTTP headers carrying this message."""
        out = {LAYOUT_HEADER: json.dumps(self.layout_json(), separators=(",", ":"))}
        if self.audit_head is not None:
            out[AUDIT_HEAD_HEADER] = "{}:{}".format(*self.audit_head)
        if self.seed_shares is not None:
            out[SEED_SHARES_HEADER] = json.dumps(self.seed_shares, separators=(",", ":"))
        return out

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> ContributionHeader:
        """Parse and validate the headers of a contribution (case-insensitive names).

        Raises
        ------
        ProtocolError
            A header is missing, not JSON, nested too deeply or malformed; the message
            names the header (and the layout's field at fault), never a value.
        """
        lower = {k.lower(): v for k, v in headers.items()}
        raw = lower.get(LAYOUT_HEADER.lower(), "")
        try:
            layout = json.loads(raw)
        except ValueError:
            raise ProtocolError(f"the {LAYOUT_HEADER} header is not JSON") from None
        except RecursionError:
            raise ProtocolError(f"the {LAYOUT_HEADER} header is nested too deeply") from None
        head: tuple[int, str] | None = None
        value = lower.get(AUDIT_HEAD_HEADER.lower())
        if value is not None:
            m = _HEAD.fullmatch(value.strip())
            if m is None:
                raise ProtocolError(f"the {AUDIT_HEAD_HEADER} header must be <seq>:<64 hex digits>")
            head = (int(m[1]), m[2])
        shares = None
        raw_shares = lower.get(SEED_SHARES_HEADER.lower())
        if raw_shares is not None:
            if len(raw_shares) > MAX_SEED_SHARES_HEADER:
                raise ProtocolError(f"the {SEED_SHARES_HEADER} header is too long")
            try:
                shares = json.loads(raw_shares)
            except (ValueError, RecursionError):
                raise ProtocolError(f"the {SEED_SHARES_HEADER} header is not JSON") from None
            if not isinstance(shares, dict):
                raise ProtocolError(f"the {SEED_SHARES_HEADER} header is not a JSON object")
        try:
            return cls(layout=layout, audit_head=head, seed_shares=shares)
        except (ValidationError, PydanticValidationError) as exc:
            raise ProtocolError(f"the {LAYOUT_HEADER} header: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, PydanticValidationError):
        err = exc.errors(include_url=False, include_input=False)[0]
        ctx = err.get("ctx") or {}
        inner = ctx.get("error")
        return str(inner) if inner is not None else str(err.get("msg", "invalid"))
    return str(exc)


class RevealMessage(_Strict):
    """A node's self-mask seed for one attempt (hex)."""

    seed: str = Field(pattern=_HEX32)


class ShareMessage(_Strict):
    """A node's answer to a ``share`` task: its own seed and its shares of the lost seeds.

    ``shares`` maps each lost participant to this node's share of its seed (hex).
    """

    seed: str = Field(pattern=_HEX32)
    shares: dict[str, str] = Field(max_length=2**16)


class RefusalKind(StrEnum):
    """Why a node refused a task."""

    POLICY = "policy"
    """A rule of the node's disclosure policy (or its owner) refused the release."""
    LOCAL_FAILURE = "local_failure"
    """The local step failed on this site's data (bad column, empty group, no memory...)."""
    PROTOCOL = "protocol"
    """The task broke the protocol: a forged peer key, a second reveal, a malformed task."""


_PROTOCOL_ERRORS = (
    errors.ProtocolError,
    errors.KeyVerificationError,
    errors.SecureAggregationError,
)


def refusal_kind(rule: str) -> RefusalKind:
    """The kind of a refusal from its ``rule``, as the node agent reports them.

    A refusal's rule is a policy rule's name (``min_cohort``, ``owner_denied``...)
    or, for an error, the error's class name: errors of the protocol
    (:class:`~consortia.errors.ProtocolError`, a peer key that does not verify, a
    second reveal) are :attr:`RefusalKind.PROTOCOL`, any other error class (of
    :mod:`consortia.errors` or a built-in one such as ``MemoryError``) is a
    :attr:`RefusalKind.LOCAL_FAILURE`, and anything else a :attr:`RefusalKind.POLICY`.
    """
    cls = getattr(errors, rule, None) or getattr(builtins, rule, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return RefusalKind.POLICY
    if issubclass(cls, _PROTOCOL_ERRORS):
        return RefusalKind.PROTOCOL
    if issubclass(cls, errors.PolicyError):
        return RefusalKind.POLICY
    return RefusalKind.LOCAL_FAILURE


class RefusalMessage(_Strict):
    """A node refused a task: the rule (or error class) and a message without values."""

    rule: str = Field(min_length=1, max_length=64)
    message: str = Field(max_length=2000)
    anonymous: bool = False
    """True when the rule depends on the data: the researcher is not told which site refused."""
    kind: RefusalKind = RefusalKind.POLICY
    """:class:`RefusalKind` (a node of an older release sends none: ``policy``)."""


# ----------------------------------------------------------------------------- studies


class StudyState(StrEnum):
    """The state of a study at the hub."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CurrentRound(BaseModel):
    """The open round of a running study.

    ``progress`` holds the fraction of its local step that a participant reported
    in its heartbeats (only those that reported one).
    """

    round_index: int
    step: str
    attempt: int
    phase: str
    received: list[str] = Field(default_factory=list)
    progress: dict[str, float] = Field(default_factory=dict)
    waiting_approval: list[str] = Field(default_factory=list)


class StudyStatusMessage(BaseModel):
    """A study's public state at the hub (what a researcher reads).

    ``version`` is set by the long-poll (``GET /v1/studies/{id}?version=...&wait=...``):
    it changes when a round finishes, an attempt is re-run or the study ends.
    """

    id: str
    researcher: str
    algorithm: dict[str, Any]
    dataset: str
    frac_bits: int
    status: StudyState
    participants: list[str]
    rounds_done: int = 0
    error: str | None = None
    error_rule: str | None = None
    error_site: str | None = None
    error_detail: str | None = None
    current: CurrentRound | None = None
    version: int | None = None

    @property
    def done(self) -> bool:
        """Whether the study reached a final state."""
        return self.status is not StudyState.RUNNING
