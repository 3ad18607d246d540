"""Study results at the hub: stored once when a study finishes, served to its researcher.

When a study's coordinator is done, :func:`store_result` encodes its result with
:func:`consortia.resultcodec.encode_result` and stores the frame in
``study_results`` in the transaction that marks the study finished; the audit
entry ``study.finished`` records the frame's sha256 digest (never the arrays).
A result that cannot be encoded is not stored (a warning is logged): the SDK
then rebuilds it from the round sums, as it always can (``verify=True``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from consortia.errors import ResultCodecError
from consortia.hub.blobs import put_result
from consortia.hub.db import StudyResultRow, StudyRow
from consortia.hub.errors import HubError
from consortia.resultcodec import encode_result_parts

__all__ = ["DIGEST_HEADER", "store_result", "stored_result"]

DIGEST_HEADER = "X-Consortia-Digest"
"""The HTTP header carrying the sha256 hex digest of a served result frame."""

log = logging.getLogger("consortia.hub")

# ``__table__`` is typed as a FromClause: a declarative class's is a Table
RESULTS = cast(Table, StudyResultRow.__table__)


def store_result(s: Session, study_id: str, result: Any) -> str | None:
    """Encode ``result`` and add it to the caller's transaction; return its digest.

    Returns ``None`` (and logs a warning) when the result cannot be encoded: the
    study still finishes, and its result stays available by replaying its sums.
    """
    try:
        parts = encode_result_parts(result)  # views of the result's arrays: no copy
    except ResultCodecError as exc:
        log.warning("study %s: its result is not stored (%s); replay its sums", study_id, exc)
        return None
    except Exception as exc:  # never let a result's oddity fail the round that finished it
        log.warning(
            "study %s: its result is not stored (%s); replay its sums",
            study_id,
            type(exc).__name__,
        )
        return None
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    digest = h.hexdigest()  # result_digest() of the joined frame
    put_result(s, study_id, parts, digest, time.time())
    return digest


def stored_result(engine: Engine, study_id: str, researcher: str | None) -> tuple[bytes, str]:
    """The stored result frame of a study and its digest.

    Parameters
    ----------
    engine
        The hub's database.
    study_id
        The study.
    researcher
        The caller; ``None`` for an admin (any study).

    Raises
    ------
    HubError
        404 if the study is not the researcher's (or does not exist), or has no
        stored result (not finished, finished by an older hub, or its result
        could not be encoded: the round sums still rebuild it).
    """
    with Session(engine) as s:
        study = s.get(StudyRow, study_id)
        if study is None or (researcher is not None and study.researcher != researcher):
            raise HubError(404, f"no study {study_id!r}")
        row = s.execute(
            select(RESULTS.c.result, RESULTS.c.digest).where(RESULTS.c.study_id == study_id)
        ).first()
        if row is None:
            if study.status != "finished":
                raise HubError(404, f"study {study_id!r} is {study.status}: it has no result")
            raise HubError(
                404,
                f"the hub holds no stored result for study {study_id!r}: "
                "rebuild it from the round sums (result(..., verify=True))",
            )
        return bytes(row.result), str(row.digest)
