"""Reach a hub in the same process: its study engine is called directly, no HTTP.

The hub's :class:`~consortia.hub.service.StudyEngine` answers exactly what its REST
API answers (the API's routes are thin wrappers of the same methods): a study run
through these transports gives the same rounds and the same result, bit for bit,
as one run over HTTP.  Answers go through JSON, as they would on the wire, and a
refusal of the engine (:class:`~consortia.hub.service.HubError`) becomes the reply
status a node sees, or the typed error a researcher sees, as over HTTP.

There is no authentication: the caller names the node (or researcher) it acts
for.  Use it for simulations, tests and tools that own the hub's process.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consortia.errors import KeyVerificationError, ProtocolError, ValidationError
from consortia.hub.anchors import anchor_head
from consortia.hub.auth import hash_token
from consortia.hub.budget import BudgetReport, budgets_of, create_budget_table, record_budget
from consortia.hub.db import NodeRow
from consortia.hub.payloads import read_blob
from consortia.hub.results import stored_result
from consortia.hub.schemas import StudyRequest
from consortia.hub.service import HubError, StudyEngine
from consortia.messages import (
    BlobRef,
    ContributionHeader,
    RefusalMessage,
    RevealMessage,
    ShareMessage,
)
from consortia.privacy.keys import PeerKey
from consortia.transport.base import (
    NodeTransport,
    Reply,
    ResearcherTransport,
    TaskKey,
    raise_for_status,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["MemoryNodeTransport", "MemoryResearcherTransport"]

T = TypeVar("T")


def _wire(value: Any) -> Any:
    """``value`` as it would arrive through JSON (tuples become lists, and so on)."""
    return json.loads(json.dumps(value))


def _replied(call: Callable[[], Any]) -> Reply:
    """The engine's answer as a node's :class:`Reply` (a HubError gives its status)."""
    try:
        return Reply.of(200, call())
    except HubError as exc:
        return Reply.of(exc.status, {"detail": exc.message})


def _answered(call: Callable[[], T]) -> T:
    """The engine's answer for a researcher (a HubError is raised as a typed error)."""
    try:
        return _wire(call())
    except HubError as exc:
        raise_for_status(exc.status, exc.message)


class MemoryNodeTransport(NodeTransport):
    """A node's transport to a hub's study engine in the same process.

    Parameters
    ----------
    hub
        The hub's study engine (started or not: :meth:`StudyEngine.start
        <consortia.hub.service.StudyEngine.start>` runs its timeout monitor).
    node
        The node this transport acts for (set by :meth:`enrol` otherwise).
    """

    def __init__(self, hub: StudyEngine, node: str | None = None) -> None:
        self.hub = hub
        self.node = node
        self.url = "memory:"

    def _name(self) -> str:
        if self.node is None:
            raise ValidationError("this in-memory transport acts for no node: enrol first")
        return self.node

    def _after(self, out: dict[str, Any], wait: float) -> dict[str, Any]:
        if wait > 0:
            out["tasks"] = self.hub.wait_tasks(self._name(), wait)
        return out

    def enrol(self, token: str, name: str, peer_key: Mapping[str, str]) -> str:
        """Enrol ``name`` with its signed key (``token`` is not checked in memory)."""
        try:
            peer = PeerKey.from_json(dict(peer_key))
            if peer.site != name:
                raise ValidationError("the signed key names another site")
            peer.verify()
        except (KeyVerificationError, ValidationError) as exc:
            raise ProtocolError(f"enrolment refused (422): {exc}") from None
        credential = "node_" + secrets.token_urlsafe(32)
        with Session(self.hub.engine) as s:
            s.add(
                NodeRow(
                    name=name,
                    identity_key=peer.identity_key.hex(),
                    mask_key=peer.mask_key.hex(),
                    signature=peer.signature.hex(),
                    credential_hash=hash_token(credential),
                )
            )
            try:
                s.commit()
            except IntegrityError:
                raise ProtocolError(
                    f"enrolment refused (409): a node named {name!r} is already enrolled"
                ) from None
        self.hub.audit.append(
            "enrolment:memory",
            "node.enrol",
            {"node": name, "identity_key": peer.identity_key.hex()},
        )
        self.node = name
        return credential

    def publish(self, datasets: Mapping[str, Any]) -> None:
        self.hub.publish(self._name(), _wire(dict(datasets)))

    def poll(self, wait: float) -> list[dict[str, Any]]:
        return _wire(self.hub.wait_tasks(self._name(), wait))

    def fetch_blob(self, ref: BlobRef, *, max_bytes: int) -> bytes:
        short = ref.sha256[:12]
        if ref.size > max_bytes:
            raise ProtocolError(f"public arrays {short} are larger than {max_bytes} bytes")
        try:
            data = read_blob(self.hub.engine, self._name(), ref.sha256)
        except HubError as exc:
            raise ProtocolError(
                f"the hub refused the public arrays {short} ({exc.status})"
            ) from None
        if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
            raise ProtocolError(f"public arrays {short} do not match their digest")
        return data

    def contribute(
        self,
        key: TaskKey,
        parts: Sequence[Buffer],
        header: ContributionHeader,
        *,
        wait: float = 0.0,
    ) -> Reply | None:
        views = [memoryview(p).cast("B") for p in parts]
        size = sum(v.nbytes for v in views)
        if size > self.hub.max_payload:
            return Reply.of(
                413, {"detail": f"contribution larger than {self.hub.max_payload} bytes"}
            )
        body = bytearray(size)  # the body as the hub's API reads it
        at = 0
        for v in views:
            body[at : at + v.nbytes] = v
            at += v.nbytes
        node = self._name()

        def call() -> dict[str, Any]:
            out = self.hub.contribute(
                node,
                key.study_id,
                key.round_index,
                key.attempt,
                header.layout_json(),
                body,
                header.seed_shares,
            )
            if header.audit_head is not None:
                anchor_head(self.hub.engine, self.hub.audit, node, header.audit_head)
            return self._after(out, wait)

        return _replied(call)

    def reveal(self, key: TaskKey, msg: RevealMessage, *, wait: float = 0.0) -> Reply | None:
        node = self._name()
        return _replied(
            lambda: self._after(
                self.hub.reveal(node, key.study_id, key.round_index, key.attempt, msg.seed), wait
            )
        )

    def share(self, key: TaskKey, msg: ShareMessage, *, wait: float = 0.0) -> Reply | None:
        node = self._name()
        return _replied(
            lambda: self._after(
                self.hub.share(
                    node, key.study_id, key.round_index, key.attempt, msg.seed, msg.shares
                ),
                wait,
            )
        )

    def refuse(self, key: TaskKey, msg: RefusalMessage) -> Reply | None:
        node = self._name()
        return _replied(
            lambda: self.hub.refuse(
                node,
                key.study_id,
                key.round_index,
                key.attempt,
                msg.rule,
                msg.message,
                anonymous=msg.anonymous,
            )
        )

    def pending(self, key: TaskKey, digest: str) -> Reply | None:
        node = self._name()
        return _replied(
            lambda: self.hub.await_approval(
                node, key.study_id, key.round_index, key.attempt, digest
            )
        )

    def heartbeat(self, key: TaskKey, progress: float | None = None) -> Reply:
        node = self._name()
        return _replied(
            lambda: self.hub.heartbeat(node, key.study_id, key.round_index, key.attempt, progress)
        )

    def report_budget(self, report: Mapping[str, Any]) -> Reply:
        try:
            body = BudgetReport.model_validate(dict(report))
        except PydanticValidationError:
            return Reply.of(422, {"detail": "invalid budget report"})
        create_budget_table(self.hub.engine)
        return _replied(lambda: record_budget(self.hub.engine, self._name(), body))

    def close(self) -> None:
        """Nothing to release (the hub is the caller's)."""


class MemoryResearcherTransport(ResearcherTransport):
    """The SDK's transport to a hub's study engine in the same process.

    Parameters
    ----------
    hub
        The hub's study engine.
    researcher
        Who submits and reads the studies.
    role
        ``researcher`` (own studies only) or ``admin`` (every study).
    """

    def __init__(self, hub: StudyEngine, researcher: str, *, role: str = "researcher") -> None:
        if role not in ("researcher", "admin"):
            raise ValidationError("role must be 'researcher' or 'admin'")
        self.hub = hub
        self.researcher = researcher
        self.role = role
        self.url = "memory:"

    @property
    def _scope(self) -> str | None:
        return None if self.role == "admin" else self.researcher

    def whoami(self) -> dict[str, str]:
        return {"role": self.role, "name": self.researcher}

    def catalogue(self) -> dict[str, dict[str, Any]]:
        return _answered(self.hub.catalogue)

    def budget(self) -> list[dict[str, Any]]:
        create_budget_table(self.hub.engine)
        return _answered(lambda: budgets_of(self.hub.engine, self.researcher))

    def nodes(self) -> list[dict[str, Any]]:
        from consortia.node.identity import fingerprint

        if self.role != "admin":
            raise_for_status(403, "this endpoint needs the role admin")
        with Session(self.hub.engine) as s:
            return [
                {
                    "name": n.name,
                    "fingerprint": fingerprint(bytes.fromhex(n.identity_key)),
                    "last_seen": n.last_seen,
                }
                for n in s.scalars(select(NodeRow).order_by(NodeRow.name))
            ]

    def submit(self, request: Mapping[str, Any]) -> dict[str, Any]:
        try:
            body = StudyRequest.model_validate(_wire(dict(request)))
        except PydanticValidationError as exc:
            fields = sorted({".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()})
            raise_for_status(422, f"invalid request fields: {fields}")

        def call() -> dict[str, Any]:
            sid = self.hub.submit(
                self.researcher,
                body.algorithm.model_dump(),
                body.dataset,
                nodes=body.nodes,
                frac_bits=body.frac_bits,
            )
            return self.hub.status(sid, self.researcher)

        return _answered(call)

    def status(
        self, study_id: str, *, version: int | None = None, wait: float = 0.0
    ) -> dict[str, Any]:
        wait = max(0.0, min(float(wait), 60.0))
        return _answered(lambda: self.hub.wait_status(study_id, self._scope, version, wait))

    def studies(self) -> list[dict[str, Any]]:
        return _answered(lambda: self.hub.list_studies(self._scope))

    def cancel(self, study_id: str) -> dict[str, Any]:
        actor = f"{self.role}:{self.researcher}"
        return _answered(lambda: self.hub.cancel(study_id, self._scope, actor))

    def rounds(self, study_id: str, start: int, limit: int) -> list[dict[str, Any]]:
        return _answered(lambda: self.hub.round_list(study_id, self._scope, start, limit))

    def round_sums(self, study_id: str, round_index: int) -> bytes:
        try:
            return self.hub.round_sums(study_id, self._scope, round_index)
        except HubError as exc:
            raise ProtocolError(f"the hub answered {exc.status} for round {round_index}") from None

    def result(self, study_id: str) -> tuple[bytes, str] | None:
        try:
            return stored_result(self.hub.engine, study_id, self._scope)
        except HubError as exc:
            if exc.status == 404:
                return None
            raise ProtocolError(
                f"the hub answered {exc.status} for the result of {study_id}"
            ) from None

    def close(self) -> None:
        """Nothing to release (the hub is the caller's)."""
