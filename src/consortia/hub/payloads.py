"""Payloads by reference: rounds' public arrays stored once, named by their SHA-256.

A round's public arrays are packed into one :mod:`consortia.wire` frame and stored
once in the ``blobs`` table under the SHA-256 (hex) of the frame's bytes; the round
keeps only the digest, and a task names the frame by digest and size
(:class:`~consortia.messages.BlobRef`).  A node fetches it once with
``GET /v1/node/blobs/{sha256}`` (:func:`read_blob`: only blobs of the studies the
node takes part in), checks the digest and caches it.  A round without public
arrays (:data:`~consortia.messages.EMPTY_PUBLIC`) needs no fetch.

The audit log records digests, never arrays: :func:`submit_details` summarises an
algorithm's spec by its name, the SHA-256 of its canonical JSON and its small
parameters only.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import exists, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from consortia.audit import canonical_json
from consortia.hub.blobs import put_blob
from consortia.hub.db import BlobRefRow, BlobRow, TaskRow
from consortia.hub.errors import HubError
from consortia.messages import (
    EMPTY_PUBLIC,
    AlgorithmSpec,
    BlobRef,
    PeerKeyModel,
    TaskKind,
    TaskMessage,
)
from consortia.wire import MAGIC, pack_arrays

if TYPE_CHECKING:
    from consortia.hub.state import LiveRound, LiveStudy

__all__ = [
    "SMALL_PARAM",
    "allowed_blob",
    "public_ref",
    "read_blob",
    "round_public",
    "spec_digest",
    "store_blob",
    "store_blob_once",
    "store_public",
    "submit_details",
    "task_message",
    "use_blob",
]

SMALL_PARAM = 1024
"""Parameters whose canonical JSON is longer than this are audited by digest and size."""

_SIZES: OrderedDict[str, int] = OrderedDict()  # digest -> size (a bounded cache)
_SIZES_MAX = 4096
_SIZES_LOCK = threading.Lock()


def _refused(status: int, message: str) -> Exception:
    return HubError(status, message)


def _remember(digest: str, size: int) -> None:
    with _SIZES_LOCK:
        _SIZES[digest] = size
        _SIZES.move_to_end(digest)
        while len(_SIZES) > _SIZES_MAX:
            _SIZES.popitem(last=False)


def store_blob_once(s: Session, data: bytes) -> str:
    """Store ``data`` once (if new) in the caller's transaction; return its SHA-256.

    The caller serialises writers of blobs (a check, then an insert).
    """
    digest = hashlib.sha256(data).hexdigest()
    if not s.scalar(select(exists().where(BlobRow.sha256 == digest))):
        put_blob(s, digest, data)
    _remember(digest, len(data))
    return digest


def use_blob(s: Session, study_id: str, digest: str) -> None:
    """Mark blob ``digest`` used by ``study_id`` (its nodes may fetch it), in ``s``."""
    used = exists().where(BlobRefRow.sha256 == digest, BlobRefRow.study_id == study_id)
    if not s.scalar(select(used)):
        s.execute(insert(BlobRefRow).values(sha256=digest, study_id=study_id))


def store_blob(s: Session, study_id: str, data: bytes) -> str:
    """Store ``data`` once (if new) and mark it used by ``study_id``; return its SHA-256.

    Runs in the caller's transaction.
    """
    digest = store_blob_once(s, data)
    use_blob(s, study_id, digest)
    return digest


def store_public(s: Session, study_id: str, public: Mapping[str, np.ndarray]) -> str:
    """Pack a round's public arrays, store them once and return their SHA-256 (hex).

    What :class:`~consortia.hub.state.LiveRound` and the ``rounds`` row keep.
    """
    return store_blob(s, study_id, pack_arrays(dict(public)))


def round_public(s: Session, study_id: str, stored: str | bytes) -> str:
    """The digest of a round's public arrays as read from its ``rounds`` row.

    A row written by an older hub holds the packed arrays themselves: they are
    stored as a blob (committed at once, in a transaction of their own: the caller
    may only be reading) and their digest returned.
    """
    if isinstance(stored, bytes | bytearray | memoryview):
        raw = bytes(stored)
        if not raw.startswith(MAGIC):
            return raw.decode("ascii")
        with Session(s.get_bind()) as w:
            digest = store_blob(w, study_id, raw)
            w.commit()
        return digest
    return stored


def public_ref(size_of: Callable[[str], int | None], digest: str) -> BlobRef | None:
    """The reference a task carries for the public arrays ``digest`` (None: no arrays).

    ``size_of`` reads a stored blob's size (:meth:`consortia.hub.store.StudyStore.blob_size`)
    when it is not cached.
    """
    if digest == EMPTY_PUBLIC.sha256:
        return None
    with _SIZES_LOCK:
        size = _SIZES.get(digest)
    if size is None:
        size = size_of(digest)
        if size is None:
            raise _refused(500, "a round's public arrays are missing from the hub's blobs")
        _remember(digest, int(size))
    return BlobRef(sha256=digest, size=int(size))


def allowed_blob(engine: Engine, node: str, digest: str) -> bytes | None:
    """The blob ``digest`` if ``node`` takes part in a study that uses it, else None."""
    allowed = (
        select(BlobRow.data)
        .where(
            BlobRow.sha256 == digest,
            exists().where(
                BlobRefRow.sha256 == digest,
                TaskRow.study_id == BlobRefRow.study_id,
                TaskRow.node == node,
            ),
        )
        .limit(1)
    )
    with Session(engine) as s:
        data = s.scalar(allowed)
    return None if data is None else bytes(data)


def read_blob(engine: Engine, node: str, digest: str) -> bytes:
    """The blob ``digest`` if ``node`` takes part in a study that uses it.

    Raises
    ------
    HubError
        404 when there is no such blob or none of the node's studies uses it (the
        answer is the same: a node learns nothing of other studies' payloads).
    """
    data = allowed_blob(engine, node, digest)
    if data is None:
        raise _refused(404, "no blob with this digest in this node's studies")
    return data


def spec_digest(spec: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of an algorithm spec's canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(canonical_json(dict(spec)).encode()).hexdigest()


def _small(value: Any) -> Any:
    text = canonical_json(value)
    if len(text) <= SMALL_PARAM:
        return value
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "size": len(text)}


def submit_details(
    study_id: str, spec: Mapping[str, Any], dataset: str, nodes: list[str]
) -> dict[str, Any]:
    """The details of a ``study.submit`` audit entry: digests, never arrays.

    The algorithm's name, the SHA-256 of its canonical spec JSON
    (:func:`spec_digest`) and its parameters, each one whose canonical JSON is longer
    than :data:`SMALL_PARAM` bytes replaced by ``{"sha256": ..., "size": ...}`` of
    that JSON (so a 200,001-point grid is recorded in 90 bytes, and can be checked
    against the study's stored spec).
    """
    params = spec.get("params") or {}
    return {
        "study": study_id,
        "algorithm": {
            "name": spec.get("name"),
            "sha256": spec_digest(spec),
            "params": {str(k): _small(v) for k, v in dict(params).items()},
        },
        "dataset": dataset,
        "nodes": list(nodes),
    }


_TASKS: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()  # validated, dumped
_TASKS_MAX = 1024


def task_message(
    size_of: Callable[[str], int | None],
    live: LiveStudy,
    kind: TaskKind,
    participants: list[dict[str, str]],
    *,
    waiting: bool,
    heartbeat: float | None = None,
    rnd: LiveRound | None = None,
) -> dict[str, Any]:
    """The JSON of the :class:`~consortia.messages.TaskMessage` of ``live``'s open attempt.

    ``rnd`` is the round the caller read (``live.round`` by default: a round that
    moved on meanwhile must not be mixed with the task kind decided from the one
    read).  ``size_of`` reads a stored blob's size (see :func:`public_ref`).  Built and
    validated once per attempt and kind (every participant gets the same
    message but for ``waiting``), then copied.

    Raises
    ------
    pydantic.ValidationError
        The hub's own state does not make a valid task (a bug, or a database edited
        by hand).
    """
    if rnd is None:
        rnd = live.round
    key = (live.id, rnd.index, rnd.attempt, kind, rnd.public)
    with _SIZES_LOCK:
        cached = _TASKS.get(key)
        if cached is not None:
            _TASKS.move_to_end(key)
    if cached is None:
        cached = TaskMessage(
            kind=kind,
            study_id=live.id,
            round_index=rnd.index,
            attempt=rnd.attempt,
            algorithm=AlgorithmSpec.model_validate(live.spec),
            dataset=live.dataset,
            step=rnd.step,
            public=public_ref(size_of, rnd.public),
            participants=[PeerKeyModel.model_validate(p) for p in participants],
            frac_bits=live.frac_bits,
            researcher=live.researcher,
            heartbeat=heartbeat,
            recovery_threshold=rnd.state.recovery,
        ).model_dump(mode="json")
        with _SIZES_LOCK:
            _TASKS[key] = cached
            while len(_TASKS) > _TASKS_MAX:
                _TASKS.popitem(last=False)
    return {**cached, "waiting": waiting}
