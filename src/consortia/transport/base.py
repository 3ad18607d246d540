"""What nodes and researchers ask of a hub, independent of how it is reached.

:class:`NodeTransport` is everything a node agent asks (poll, fetch a round's
public arrays, post a masked vector, a seed, shares, a refusal, a heartbeat...);
:class:`ResearcherTransport` everything the SDK asks (submit, follow, fetch a
result...).  :mod:`consortia.transport.http` reaches a hub over HTTP(S);
:mod:`consortia.transport.memory` calls a hub's
:class:`~consortia.hub.service.StudyEngine` in the same process.  Both give the
same answers, so a study gives bit-identical results through either.

Failures are consortia's typed errors, decided here in one place
(:func:`raise_for_status`): :class:`~consortia.errors.HubUnreachable` when the hub
cannot be reached, :class:`~consortia.errors.ValidationError` for a request the hub
found invalid (422), :class:`~consortia.errors.ProtocolError` for any other refusal.
A node's posts return the hub's :class:`Reply` instead (its status decides whether
the node holds the task back or tries again).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from consortia.errors import ProtocolError, ValidationError
from consortia.messages import (
    BlobRef,
    ContributionHeader,
    RefusalMessage,
    RevealMessage,
    ShareMessage,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "NodeTransport",
    "Reply",
    "ResearcherTransport",
    "TaskKey",
    "raise_for_status",
]


@dataclass(frozen=True)
class TaskKey:
    """One attempt of one round of one study: what a node's post is about."""

    study_id: str
    round_index: int
    attempt: int


class Reply:
    """The hub's answer to a node's post: a status code and a JSON body."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(
        self, status_code: int, content: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        self.status_code = status_code
        self.content = content
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in (headers or {}).items()}

    @classmethod
    def of(cls, status_code: int, body: Any) -> Reply:
        """A reply whose body is ``body`` as JSON."""
        return cls(status_code, json.dumps(body).encode(), {"content-type": "application/json"})

    def retry_after(self) -> float | None:
        """The ``Retry-After`` header in seconds (None: absent or not a number of seconds)."""
        value = self.headers.get("retry-after")
        try:
            seconds = float(value) if value is not None else None
        except ValueError:
            return None
        return seconds if seconds is not None and 0 <= seconds < float("inf") else None

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.content)

    @property
    def text(self) -> str:
        """The body as text."""
        return self.content.decode("utf-8", "replace")

    def detail(self) -> str:
        """The hub's reason (``detail``) or the start of the body."""
        try:
            return str(self.json().get("detail"))
        except (ValueError, AttributeError):
            return self.text[:200]

    def tasks(self) -> list[dict[str, Any]]:
        """The node's next tasks that came with a successful answer."""
        if self.status_code != 200:
            return []
        try:
            tasks = self.json().get("tasks", [])
        except (ValueError, AttributeError):
            return []
        return tasks if isinstance(tasks, list) else []


def raise_for_status(status: int, detail: str) -> NoReturn:
    """Raise the typed error of a hub's refusal (the one place where codes become errors).

    Raises
    ------
    ValidationError
        ``422``: the hub found the request invalid.
    ProtocolError
        Any other status.
    """
    if status == 422:
        raise ValidationError(f"the hub refused the request: {detail}")
    raise ProtocolError(f"the hub answered {status}: {detail}")


class NodeTransport(ABC):
    """How a node agent reaches its hub.

    Every method may raise :class:`~consortia.errors.HubUnreachable`.  Methods are
    called from several threads at once (a node answers several tasks at a time).
    """

    @abstractmethod
    def enrol(self, token: str, name: str, peer_key: Mapping[str, str]) -> str:
        """Enrol with a one-time token; return the node's credential.

        Raises
        ------
        ProtocolError
            The hub refused the enrolment.
        """

    @abstractmethod
    def publish(self, datasets: Mapping[str, Any]) -> None:
        """Replace this node's published catalogue (raises ProtocolError if refused)."""

    @abstractmethod
    def poll(self, wait: float) -> list[dict[str, Any]]:
        """This node's open tasks (JSON of :class:`~consortia.messages.TaskMessage`).

        Waits up to ``wait`` seconds for one.  Raises ProtocolError if refused.
        """

    @abstractmethod
    def fetch_blob(self, ref: BlobRef, *, max_bytes: int) -> bytes:
        """The payload ``ref`` (a round's public arrays), checked against its digest.

        Raises
        ------
        ProtocolError
            Larger than ``max_bytes`` or announced, refused, or not matching its digest.
        """

    @abstractmethod
    def contribute(
        self,
        key: TaskKey,
        parts: Sequence[Buffer],
        header: ContributionHeader,
        *,
        wait: float = 0.0,
    ) -> Reply | None:
        """Post a masked vector (a :mod:`consortia.wire` frame given as parts).

        The reply carries the node's next tasks (waiting up to ``wait`` s).  None:
        the hub could not be reached after retries (the task comes again).
        """

    @abstractmethod
    def reveal(self, key: TaskKey, msg: RevealMessage, *, wait: float = 0.0) -> Reply | None:
        """Reveal the attempt's self-mask seed (None: unreachable after retries)."""

    @abstractmethod
    def share(self, key: TaskKey, msg: ShareMessage, *, wait: float = 0.0) -> Reply | None:
        """Reveal the seed with shares of the lost participants' seeds."""

    @abstractmethod
    def refuse(self, key: TaskKey, msg: RefusalMessage) -> Reply | None:
        """Report that this node refused the task."""

    @abstractmethod
    def pending(self, key: TaskKey, digest: str) -> Reply | None:
        """Report that this node's owner has not yet approved the study."""

    @abstractmethod
    def heartbeat(self, key: TaskKey, progress: float | None = None) -> Reply:
        """This node is alive and computing the attempt (``progress``: fraction done)."""

    @abstractmethod
    def report_budget(self, report: Mapping[str, Any]) -> Reply:
        """Report what remains of a researcher's privacy budget on a dataset."""

    def stop(self) -> None:  # noqa: B027 - optional
        """Stop retrying: the node is shutting down (posts give up at once)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


class ResearcherTransport(ABC):
    """How the SDK (:class:`~consortia.sdk.RemoteFederation`) reaches a hub.

    Answers are JSON values (dicts and lists) as the hub's REST API gives them.
    Every method may raise :class:`~consortia.errors.HubUnreachable`,
    :class:`~consortia.errors.ValidationError` or :class:`~consortia.errors.ProtocolError`.
    """

    url: str
    """Where the hub is (for messages)."""

    @abstractmethod
    def whoami(self) -> dict[str, str]:
        """The role and name of this client's token."""

    @abstractmethod
    def catalogue(self) -> dict[str, dict[str, Any]]:
        """Node -> dataset -> description."""

    @abstractmethod
    def budget(self) -> list[dict[str, Any]]:
        """The caller's remaining privacy budget per node and dataset."""

    @abstractmethod
    def nodes(self) -> list[dict[str, Any]]:
        """Enrolled nodes (admin)."""

    @abstractmethod
    def submit(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Submit a study (a :class:`~consortia.hub.schemas.StudyRequest`); its status."""

    @abstractmethod
    def status(
        self, study_id: str, *, version: int | None = None, wait: float = 0.0
    ) -> dict[str, Any]:
        """A study's status; with ``version`` and ``wait``, waits for a change."""

    @abstractmethod
    def studies(self) -> list[dict[str, Any]]:
        """The caller's studies."""

    @abstractmethod
    def cancel(self, study_id: str) -> dict[str, Any]:
        """Cancel a study; its status."""

    @abstractmethod
    def rounds(self, study_id: str, start: int, limit: int) -> list[dict[str, Any]]:
        """Finished rounds of a study (no sums)."""

    @abstractmethod
    def round_sums(self, study_id: str, round_index: int) -> bytes:
        """One finished round's sums (a :mod:`consortia.wire` frame)."""

    @abstractmethod
    def result(self, study_id: str) -> tuple[bytes, str] | None:
        """A finished study's stored result frame and its sha256 (None: none stored)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""
