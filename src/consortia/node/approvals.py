"""Owner approvals (the airlock): each new study waits for the data owner's decision.

With ``approval = "manual"`` in the node's ``[node]`` table, the first task of a
study that the node has not seen is not computed: the node records an *approval
request* describing what would leave (algorithm and parameters, dataset,
researcher, the array names and shapes of the first round's contribution, the
policy that applies and the study's privacy cost), tells the hub that the study
waits for its owner, and computes nothing until the owner decides with
``consortia node approvals approve|deny``.

A request is bound to the SHA-256 digest of the study's specification
(algorithm spec + dataset + researcher, :func:`study_digest`): an approval of one
digest never approves another, so a study whose specification changes (the same
study id with other parameters) waits again.  Algorithms whose name matches one
of the ``auto_approve`` shell patterns are approved at once (and recorded as
such).  Every request and decision is written to the node's audit log in the
same transaction as the request's row.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import sqlalchemy as sa

from consortia.audit import AuditLog, canonical_json
from consortia.errors import ConsortiaError, PolicyError, ValidationError
from consortia.node.config import APPROVAL_MODES
from consortia.protocol import algorithm_from_spec
from consortia.runtime.site import SiteWorker
from consortia.runtime.task import Task

__all__ = [
    "APPROVAL_MODES",
    "ApprovalRequest",
    "Approvals",
    "describe_task",
    "study_digest",
]

Status = Literal["pending", "approved", "denied"]

_meta = sa.MetaData()
_approvals = sa.Table(
    "approvals",
    _meta,
    sa.Column("study_id", sa.String(64), primary_key=True),
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("algorithm", sa.JSON, nullable=False),
    sa.Column("dataset", sa.String(128), nullable=False),
    sa.Column("researcher", sa.String(128), nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("decided_at", sa.Float, nullable=True),
    sa.Column("decided_by", sa.String(128), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
)


def study_digest(algorithm: Mapping[str, Any], dataset: str, researcher: str) -> str:
    """SHA-256 (hex) of a study's specification: algorithm spec, dataset and researcher.

    The specification is serialised as canonical JSON (sorted keys, no spaces), so
    the same study always has the same digest and any change of a parameter, the
    dataset or the researcher gives another one.
    """
    spec = {"algorithm": dict(algorithm), "dataset": dataset, "researcher": researcher}
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


@dataclass(frozen=True)
class ApprovalRequest:
    """One study waiting for (or decided by) the data owner.

    Attributes
    ----------
    study_id, digest
        The study and the SHA-256 digest of its specification (the decision's binding).
    status
        ``pending``, ``approved`` or ``denied``.
    algorithm, dataset, researcher
        The study's specification.
    details
        What would leave: ``round``, ``step``, ``participants``, ``arrays`` (name ->
        shape, or None with ``arrays_note`` saying why), ``policy`` and
        ``privacy_cost`` (``epsilon``, ``delta``).
    created_at, decided_at, decided_by, reason
        When it was requested and decided, by whom, and the owner's reason (deny).
    """

    study_id: str
    digest: str
    status: Status
    algorithm: Mapping[str, Any]
    dataset: str
    researcher: str
    details: Mapping[str, Any]
    created_at: float
    decided_at: float | None = None
    decided_by: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable mapping of every field."""
        return {
            "study_id": self.study_id,
            "digest": self.digest,
            "status": self.status,
            "algorithm": dict(self.algorithm),
            "dataset": self.dataset,
            "researcher": self.researcher,
            "details": dict(self.details),
            "created_at": self.created_at,
            "decided_at": self.decided_at,
            "decided_by": self.decided_by,
            "reason": self.reason,
        }


def describe_task(worker: SiteWorker, task: Task) -> dict[str, Any]:
    """What answering ``task`` would release, computed locally (nothing leaves the node).

    The contribution is computed (not masked, not sent, no budget charged) for the
    first round only, where it depends on nothing but the public specification;
    its array names and shapes are recorded, never its values.  When it cannot be
    computed (a later round, or the algorithm or the policy refuses), ``arrays`` is
    None and ``arrays_note`` names why (an error class or a policy rule).
    """
    out: dict[str, Any] = {
        "round": task.round_index,
        "step": task.step,
        "participants": sorted(p.site for p in task.participants),
        "arrays": None,
        "arrays_note": None,
        "policy": worker.policy_for(task.dataset).to_mapping(),
        "privacy_cost": None,
    }
    try:
        algo = algorithm_from_spec(task.algorithm)
        epsilon, delta = algo.privacy_cost()
        out["privacy_cost"] = {"epsilon": float(epsilon), "delta": float(delta)}
    except ConsortiaError as err:
        out["arrays_note"] = f"the algorithm cannot be built ({type(err).__name__})"
        return out
    if task.round_index != 0:
        out["arrays_note"] = "only the first round's contribution is computed before approval"
        return out
    data = worker.datasets.get(task.dataset)
    if data is None:
        out["arrays_note"] = f"this node has no dataset {task.dataset!r}"
        return out
    try:
        contribution = algo.local(task.step, task.public, data)
        out["arrays"] = {k: list(np.shape(v)) for k, v in contribution.arrays.items()}
    except PolicyError as err:
        out["arrays_note"] = f"not computed: policy rule {err.rule!r} would refuse"
    except Exception as err:  # the owner sees the error's class only, never a value
        out["arrays_note"] = f"not computed: {type(err).__name__}"
    return out


class Approvals:
    """The node's approval requests, in its own table on the node's database.

    Parameters
    ----------
    engine
        The node's database (:attr:`consortia.node.store.NodeStore.engine`), whose
        tables the node's migrations made.
    audit
        The node's audit log (on the same database).
    mode
        ``"auto"`` (no airlock: every study runs at once) or ``"manual"``.
    auto_approve
        Shell-style patterns on the algorithm name (``"stats.*"``) that are approved
        without the owner in ``manual`` mode.

    Examples
    --------
    >>> approvals = Approvals(store.engine, store.audit, mode="manual")  # doctest: +SKIP
    >>> [r.study_id for r in approvals.list("pending")]                  # doctest: +SKIP
    >>> approvals.approve("3f2a", actor="owner:alice")                   # doctest: +SKIP
    """

    def __init__(
        self,
        engine: sa.Engine,
        audit: AuditLog,
        *,
        mode: str = "auto",
        auto_approve: Sequence[str] = (),
    ) -> None:
        if mode not in APPROVAL_MODES:
            raise ValidationError(f"approval must be one of {list(APPROVAL_MODES)}, not {mode!r}")
        self.engine = engine
        self.audit = audit
        self.mode = mode
        self.auto_approve = tuple(auto_approve)
        self._final: dict[tuple[str, str], Status] = {}  # decisions are final: cached

    @property
    def required(self) -> bool:
        """Whether studies wait for the owner (``manual`` mode)."""
        return self.mode == "manual"

    # ------------------------------------------------------------------ node side

    def status(self, study_id: str, digest: str) -> Status | None:
        """The decision for exactly this study and digest (None: never requested)."""
        key = (study_id, digest)
        cached = self._final.get(key)
        if cached is not None:
            return cached
        with self.engine.connect() as c:
            status = c.scalar(
                sa.select(_approvals.c.status).where(
                    _approvals.c.study_id == study_id, _approvals.c.digest == digest
                )
            )
        if status in ("approved", "denied"):
            self._final[key] = status
        return status

    def admit(self, task: Task, worker: SiteWorker, *, actor: str) -> Status:
        """The owner's decision for ``task``'s study; a first request is recorded once.

        ``approved`` (compute), ``denied`` (refuse with rule ``owner_denied``) or
        ``pending`` (wait).  Always ``approved`` in ``auto`` mode.
        """
        if not self.required:
            return "approved"
        digest = study_digest(task.algorithm, task.dataset, task.researcher)
        status = self.status(task.study_id, digest)
        if status is not None:
            return status
        return self.request(
            task.study_id,
            digest,
            algorithm=task.algorithm,
            dataset=task.dataset,
            researcher=task.researcher,
            details=describe_task(worker, task),
            actor=actor,
        ).status

    def request(
        self,
        study_id: str,
        digest: str,
        *,
        algorithm: Mapping[str, Any],
        dataset: str,
        researcher: str,
        details: Mapping[str, Any],
        actor: str,
    ) -> ApprovalRequest:
        """Record a request (once; an existing one is returned unchanged).

        An algorithm whose name matches an ``auto_approve`` pattern is approved at
        once, by ``auto:<pattern>``.
        """
        name = str(algorithm.get("name", ""))
        pattern = next(
            (p for p in self.auto_approve if fnmatch.fnmatchcase(name, p)),
            None,
        )
        now = time.time()
        row = {
            "study_id": study_id,
            "digest": digest,
            "status": "pending" if pattern is None else "approved",
            "algorithm": dict(algorithm),
            "dataset": dataset,
            "researcher": researcher,
            "details": dict(details),
            "created_at": now,
            "decided_at": None if pattern is None else now,
            "decided_by": None if pattern is None else f"auto:{pattern}",
            "reason": None,
        }
        audit = {
            "study": study_id,
            "digest": digest,
            "algorithm": name,
            "dataset": dataset,
            "researcher": researcher,
            "arrays": details.get("arrays"),
            "privacy_cost": details.get("privacy_cost"),
        }
        with self.engine.begin() as c:
            existing = self._row(c, study_id, digest)
            if existing is not None:
                return existing
            c.execute(_approvals.insert().values(**row))
            self.audit.append(actor, "approval.request", audit, connection=c)
            if pattern is not None:
                self.audit.append(
                    f"auto:{pattern}",
                    "approval.approve",
                    {"study": study_id, "digest": digest, "pattern": pattern},
                    connection=c,
                )
        return _from_row(row)

    # ------------------------------------------------------------------ owner side

    def list(self, status: Status | None = None) -> list[ApprovalRequest]:
        """Every request (or those with ``status``), oldest first."""
        q = sa.select(_approvals).order_by(_approvals.c.created_at)
        if status is not None:
            q = q.where(_approvals.c.status == status)
        with self.engine.connect() as c:
            return [_from_row(r._mapping) for r in c.execute(q)]

    def find(self, ref: str, digest: str | None = None) -> ApprovalRequest:
        """The one request whose study id starts with ``ref`` (and digest with ``digest``).

        Raises
        ------
        ValidationError
            No request, or more than one, matches (give more of the study id or a digest).
        """
        if not ref:
            raise ValidationError("give a study id (or a unique prefix of one)")
        like = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        q = sa.select(_approvals).where(_approvals.c.study_id.like(like, escape="\\"))
        if digest:
            q = q.where(_approvals.c.digest.startswith(digest.lower(), autoescape=True))
        with self.engine.connect() as c:
            rows = [_from_row(r._mapping) for r in c.execute(q)]
        if not rows:
            what = f" with digest {digest!r}" if digest else ""
            raise ValidationError(f"no approval request for study {ref!r}{what}")
        if len(rows) > 1:
            pending = [r for r in rows if r.status == "pending"]
            if len(pending) == 1 and len({r.study_id for r in rows}) == 1 and not digest:
                return pending[0]
            raise ValidationError(
                f"{len(rows)} approval requests match {ref!r}: give more of the study id "
                "or --digest"
            )
        return rows[0]

    def approve(self, ref: str, *, actor: str, digest: str | None = None) -> ApprovalRequest:
        """Approve the pending request ``ref`` (bound to its digest); see :meth:`find`."""
        return self._decide(ref, "approved", actor=actor, digest=digest, reason=None)

    def deny(
        self, ref: str, *, actor: str, digest: str | None = None, reason: str | None = None
    ) -> ApprovalRequest:
        """Deny the pending request ``ref``: the node refuses with rule ``owner_denied``."""
        return self._decide(ref, "denied", actor=actor, digest=digest, reason=reason)

    def _decide(
        self, ref: str, status: Status, *, actor: str, digest: str | None, reason: str | None
    ) -> ApprovalRequest:
        req = self.find(ref, digest)
        if req.status != "pending":
            raise ValidationError(
                f"the approval request of study {req.study_id} is already {req.status}"
            )
        now = time.time()
        where = (_approvals.c.study_id == req.study_id, _approvals.c.digest == req.digest)
        with self.engine.begin() as c:
            done = c.execute(
                _approvals.update()
                .where(*where, _approvals.c.status == "pending")
                .values(status=status, decided_at=now, decided_by=actor, reason=reason)
            ).rowcount
            if done != 1:  # decided meanwhile by another process
                raise ValidationError(
                    f"the approval request of study {req.study_id} was decided meanwhile"
                )
            action = "approval.approve" if status == "approved" else "approval.deny"
            details = {"study": req.study_id, "digest": req.digest}
            if reason:
                details["reason"] = reason[:500]
            self.audit.append(actor, action, details, connection=c)
            decided = self._row(c, req.study_id, req.digest)
        assert decided is not None
        return decided

    @staticmethod
    def _row(c: sa.Connection, study_id: str, digest: str) -> ApprovalRequest | None:
        row = c.execute(
            sa.select(_approvals).where(
                _approvals.c.study_id == study_id, _approvals.c.digest == digest
            )
        ).first()
        return None if row is None else _from_row(row._mapping)


def _from_row(row: Any) -> ApprovalRequest:  # a RowMapping or a dict
    return ApprovalRequest(
        study_id=row["study_id"],
        digest=row["digest"],
        status=row["status"],
        algorithm=dict(row["algorithm"]),
        dataset=row["dataset"],
        researcher=row["researcher"],
        details=dict(row["details"]),
        created_at=float(row["created_at"]),
        decided_at=row["decided_at"],
        decided_by=row["decided_by"],
        reason=row["reason"],
    )
